// SPDX-License-Identifier: GPL-2.0

//! rkvm's debugfs files (see module/trace.rs), read by `rkvm stat`,
//! `rkvm trace` and `rkvm run --trace-exits`:
//!
//! ```text
//! /sys/kernel/debug/rkvm-<pid>-<vm fd>/stats          "name value" lines
//! /sys/kernel/debug/rkvm-<pid>-<vm fd>/vcpu<N>/stats
//! /sys/kernel/debug/rkvm-<pid>-<vm fd>/vcpu<N>/exits  the exit ring
//! ```

use std::path::{Path, PathBuf};

use rkvm_pure::trace::{self, ExitRecord};

use crate::error::{Error, Result};

/// Where debugfs is mounted.
pub const ROOT: &str = "/sys/kernel/debug";

/// The VM directories there, sorted.
pub fn vms(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("rkvm-"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

/// The directory of the VM behind fd `vm_fd` of this process, if debugfs
/// is mounted and readable.
pub fn own_vm(root: &Path, vm_fd: i32) -> Option<PathBuf> {
    let dir = root.join(format!("rkvm-{}-{vm_fd}", std::process::id()));
    dir.is_dir().then_some(dir)
}

/// The vCPU directories of a VM, sorted by id.
pub fn vcpus(vm: &Path) -> Vec<(u32, PathBuf)> {
    let mut v: Vec<(u32, PathBuf)> = std::fs::read_dir(vm)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let id = e
                        .file_name()
                        .to_string_lossy()
                        .strip_prefix("vcpu")?
                        .parse()
                        .ok()?;
                    Some((id, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A `stats` file: (name, value) per line.
pub fn parse_stats(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A vCPU's `exit_reasons` file ("name code count" lines), as counters
/// named `exit:<name>(<code>)`.
pub fn parse_exit_reasons(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (name, code, count) = (f.next()?, f.next()?, f.next()?.parse().ok()?);
            Some((format!("exit:{name}({code})"), count))
        })
        .collect()
}

/// Reads a vCPU's `exit_reasons` (empty if there is none).
pub fn exit_reasons(dir: &Path) -> Vec<(String, u64)> {
    std::fs::read_to_string(dir.join("exit_reasons"))
        .map(|t| parse_exit_reasons(&t))
        .unwrap_or_default()
}

/// Reads `dir/stats`.
pub fn stats(dir: &Path) -> Result<Vec<(String, u64)>> {
    let path = dir.join("stats");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(parse_stats(&text)),
        Err(source) => Err(Error::File { path, source }),
    }
}

/// Follows a vCPU's exit ring: each call returns the records added since
/// the last one (and notes if the ring overflowed in between).
pub struct TraceReader {
    path: PathBuf,
    last_seq: u64,
}

impl TraceReader {
    pub fn new(vcpu_dir: &Path) -> TraceReader {
        TraceReader {
            path: vcpu_dir.join("exits"),
            last_seq: 0,
        }
    }

    /// The new records, oldest first, and how many were lost (overwritten
    /// before they were read).
    pub fn read_new(&mut self) -> Result<(Vec<ExitRecord>, u64)> {
        // One read of the whole ring: the kernel copies all of it for every
        // read() call, and std::fs::read would make several (a debugfs file
        // has no size), which under Bochs took most of an exit's time.
        let err = |source| Error::File {
            path: self.path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&self.path).map_err(err)?;
        let mut bytes = vec![0u8; trace::RING_RECORDS * trace::RECORD_SIZE];
        let mut filled = 0;
        while filled < bytes.len() {
            match std::io::Read::read(&mut file, &mut bytes[filled..]).map_err(err)? {
                0 => break,
                n => filled += n,
            }
        }
        bytes.truncate(filled);
        let records: Vec<ExitRecord> = trace::newer(&bytes, self.last_seq).collect();
        let lost = records.first().map_or(0, |r| r.seq - self.last_seq - 1);
        if let Some(last) = records.last() {
            self.last_seq = last.seq;
        }
        Ok((records, lost))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reason_lines() {
        assert_eq!(
            parse_exit_reasons("cpuid 0x72 20000\nnpf 0x400 1\nother - 3\nbad\n"),
            [
                ("exit:cpuid(0x72)".to_string(), 20000),
                ("exit:npf(0x400)".to_string(), 1),
                ("exit:other(-)".to_string(), 3)
            ]
        );
    }

    #[test]
    fn stats_lines() {
        assert_eq!(
            parse_stats("exits 12\nio_exits 3\nbroken\nx notanumber\n"),
            [("exits".to_string(), 12), ("io_exits".to_string(), 3)]
        );
    }

    #[test]
    fn trace_reader_reports_new_records_and_losses() {
        let dir = std::env::temp_dir().join(format!("rkvm-debugfs-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("vcpu0")).unwrap();
        let write = |seqs: &[u64]| {
            let mut ring = [ExitRecord::default(); 4];
            for &s in seqs {
                trace::store(
                    &mut ring,
                    s,
                    ExitRecord {
                        code: s,
                        ..Default::default()
                    },
                );
            }
            let bytes: Vec<u8> = ring.iter().flat_map(|r| r.to_bytes()).collect();
            std::fs::write(dir.join("vcpu0/exits"), bytes).unwrap();
        };
        let mut reader = TraceReader::new(&dir.join("vcpu0"));
        write(&[1, 2]);
        let (r, lost) = reader.read_new().unwrap();
        assert_eq!((r.len(), lost), (2, 0));
        write(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let (r, lost) = reader.read_new().unwrap();
        assert_eq!(r.iter().map(|r| r.seq).collect::<Vec<_>>(), [6, 7, 8, 9]);
        assert_eq!(lost, 3, "3, 4 and 5 were overwritten");
        assert_eq!(vcpus(&dir), [(0, dir.join("vcpu0"))]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

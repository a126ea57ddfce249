// SPDX-License-Identifier: GPL-2.0

//! Reading KVM's binary statistics (`KVM_GET_STATS_FD`, api.rst): the same
//! reader serves /dev/kvm and /dev/rkvm. The header and descriptors are read
//! once; each [`StatsFile::read`] reads the data block again, live.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};

nix::ioctl_none!(kvm_get_stats_fd, kvm_bindings::KVMIO, 0xce);

/// One statistics file and its descriptors.
pub struct StatsFile {
    file: File,
    /// Name and byte offset in the data block of each (first) value.
    descs: Vec<(String, u64)>,
    data_offset: u64,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl StatsFile {
    /// `KVM_GET_STATS_FD` on a VM or vCPU fd.
    pub fn open(owner: &impl AsRawFd) -> Result<StatsFile> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd.
        let fd = unsafe { kvm_get_stats_fd(owner.as_raw_fd()) }
            .map_err(Error::sys("KVM_GET_STATS_FD"))?;
        // SAFETY: the fd is new and ours alone.
        StatsFile::parse(unsafe { File::from_raw_fd(fd) })
    }

    /// Reads the header and the descriptors of `file`.
    pub fn parse(file: File) -> Result<StatsFile> {
        let mut header = [0u8; 24];
        file.read_exact_at(&mut header, 0)
            .map_err(Error::StatsRead)?;
        let field = |i: usize| u32_at(&header, 4 * i).unwrap_or(0);
        let (name_size, num_desc, desc_offset, data_offset) =
            (field(1), field(2), field(4), field(5));
        if name_size == 0 || name_size > 4096 || num_desc > 65536 {
            return Err(Error::StatsHeader);
        }
        let desc_size = 16 + name_size as usize;
        let mut raw = vec![0u8; desc_size * num_desc as usize];
        file.read_exact_at(&mut raw, u64::from(desc_offset))
            .map_err(Error::StatsRead)?;
        let descs = raw
            .chunks_exact(desc_size)
            .map(|d| {
                let name = &d[16..];
                let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                let offset = u32_at(d, 8).unwrap_or(0);
                (
                    String::from_utf8_lossy(&name[..end]).into_owned(),
                    u64::from(offset),
                )
            })
            .collect();
        Ok(StatsFile {
            file,
            descs,
            data_offset: u64::from(data_offset),
        })
    }

    /// The current value of every statistic (the first u64 of each).
    pub fn read(&self) -> Vec<(&str, u64)> {
        self.descs
            .iter()
            .filter_map(|(name, offset)| {
                let mut v = [0u8; 8];
                self.file
                    .read_exact_at(&mut v, self.data_offset + offset)
                    .ok()?;
                Some((name.as_str(), u64::from_ne_bytes(v)))
            })
            .collect()
    }
}

/// "label value, ..." for the statistics in `wanted` (name, label) that the
/// file has, in that order.
pub fn summary(values: &[(&str, u64)], wanted: &[(&str, &str)]) -> String {
    wanted
        .iter()
        .filter_map(|(name, label)| {
            values
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| format!("{label} {v}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkvm_pure::stats::{file_size, render, Desc};
    use std::io::Write;

    #[test]
    fn reads_what_the_module_writes() {
        let descs = [
            Desc::counter("exits"),
            Desc::instant("pages_2m"),
            Desc::counter("io_exits"),
        ];
        let mut bytes = vec![0u8; file_size(descs.len())];
        render(b"kvm-1", &descs, &[10, 2, 7], &mut bytes);
        let mut file = tempfile();
        file.write_all(&bytes).unwrap();
        let stats = StatsFile::parse(file).unwrap();
        let values = stats.read();
        assert_eq!(values, [("exits", 10), ("pages_2m", 2), ("io_exits", 7)]);
        assert_eq!(
            summary(
                &values,
                &[("io_exits", "io"), ("nothing", "x"), ("exits", "all")]
            ),
            "io 7, all 10"
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut file = tempfile();
        file.write_all(&[0xff; 30]).unwrap();
        assert!(StatsFile::parse(file).is_err());
        assert!(StatsFile::parse(tempfile()).is_err(), "empty file");
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!(
            "rkvm-stats-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }
}

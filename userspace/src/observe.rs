// SPDX-License-Identifier: GPL-2.0

//! `rkvm stat` and `rkvm trace`: watching running VMs from another process
//! through rkvm's debugfs files (root only, as debugfs is).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rkvm_pure::trace;

use crate::debugfs::{self, TraceReader};
use crate::error::{Error, Result};

/// The VM directories matching `which` ("rkvm-<pid>-<fd>", or a pid), or all.
fn select(root: &Path, which: Option<&str>) -> Result<Vec<PathBuf>> {
    let all = debugfs::vms(root);
    if all.is_empty() {
        return Err(Error::NoVms(root.into()));
    }
    let Some(which) = which else { return Ok(all) };
    let chosen: Vec<PathBuf> = all
        .into_iter()
        .filter(|d| {
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name == which || name.split('-').nth(1) == Some(which)
        })
        .collect();
    if chosen.is_empty() {
        return Err(Error::NoSuchVm {
            which: which.into(),
            root: root.into(),
        });
    }
    Ok(chosen)
}

/// Every counter of the VMs and their vCPUs: "path name value".
fn snapshot(vms: &[PathBuf]) -> Vec<(String, String, u64)> {
    let mut out = Vec::new();
    for vm in vms {
        let vm_name = vm
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut dirs = vec![(vm_name.clone(), vm.clone())];
        dirs.extend(
            debugfs::vcpus(vm)
                .into_iter()
                .map(|(id, d)| (format!("{vm_name}/vcpu{id}"), d)),
        );
        for (label, dir) in dirs {
            // A VM that exits meanwhile just drops out.
            let counters = debugfs::stats(&dir)
                .unwrap_or_default()
                .into_iter()
                .chain(debugfs::exit_reasons(&dir));
            for (name, value) in counters {
                out.push((label.clone(), name, value));
            }
        }
    }
    out
}

/// `rkvm stat`.
pub fn stat(root: &Path, which: Option<&str>, interval: Option<f64>, count: u64) -> Result<()> {
    let vms = select(root, which)?;
    let Some(secs) = interval else {
        for (label, name, value) in snapshot(&vms) {
            println!("{label:<28} {name:<24} {value:>14}");
        }
        return Ok(());
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(Error::BadInterval);
    }
    let mut before = snapshot(&vms);
    let mut t0 = Instant::now();
    let mut reports = 0;
    loop {
        std::thread::sleep(Duration::from_secs_f64(secs));
        let now = snapshot(&vms);
        let dt = t0.elapsed().as_secs_f64();
        t0 = Instant::now();
        println!("{:<28} {:<24} {:>14} {:>12}", "", "", "total", "per second");
        for (label, name, value) in &now {
            let old = before
                .iter()
                .find(|(l, n, _)| l == label && n == name)
                .map_or(0, |e| e.2);
            let rate = value.saturating_sub(old) as f64 / dt;
            println!("{label:<28} {name:<24} {value:>14} {rate:>12.0}");
        }
        before = now;
        reports += 1;
        if count != 0 && reports >= count {
            return Ok(());
        }
    }
}

/// `rkvm trace`.
pub fn trace(root: &Path, which: Option<&str>, vcpu: u32, follow: bool) -> Result<()> {
    let vms = select(root, which)?;
    let [vm] = vms.as_slice() else {
        return Err(Error::ManyVms(vms.len()));
    };
    let dir = vm.join(format!("vcpu{vcpu}"));
    if !dir.is_dir() {
        return Err(Error::NoSuchVcpu {
            vm: vm.clone(),
            vcpu,
        });
    }
    let mut reader = TraceReader::new(&dir);
    loop {
        let (records, lost) = reader.read_new()?;
        if lost > 0 {
            println!(
                "... {lost} exits not shown (the ring holds the last {})",
                trace::RING_RECORDS
            );
        }
        for r in &records {
            println!("{:>10} {:>16} {}", r.seq, r.time_ns, trace::describe(r));
        }
        if !follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
        if !dir.is_dir() {
            return Ok(()); // the VM is gone
        }
    }
}

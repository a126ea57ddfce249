// SPDX-License-Identifier: GPL-2.0

//! The per-vCPU exit trace (record format and ring logic in `pure::trace`)
//! and rkvm's debugfs files, which show it and the statistics to any root
//! process while the VM runs:
//!
//! ```text
//! /sys/kernel/debug/rkvm-<pid>-<vm fd>/stats          "name value" lines
//! /sys/kernel/debug/rkvm-<pid>-<vm fd>/vcpu<N>/stats
//! /sys/kernel/debug/rkvm-<pid>-<vm fd>/vcpu<N>/exit_reasons  "name code count"
//! /sys/kernel/debug/rkvm-<pid>-<vm fd>/vcpu<N>/exits  the ring, binary records
//! ```
//!
//! Recording an exit takes an uncontended spinlock and stores 64 bytes; a
//! reader copies the ring under the same lock. With nobody reading, the
//! cost stays with the vCPU thread and is small (measured in the tests:
//! `exit_trace_overhead`); the `exit_trace` module parameter turns it off.

use core::fmt;

use kernel::{
    debugfs::{BinaryWriter, Dir, File, Scope},
    fs::file::Offset,
    new_spinlock,
    prelude::*,
    str::CString,
    sync::{Arc, SpinLock},
    uaccess::UserSliceWriter,
};

use crate::{
    mmu::MmuStats,
    pure::trace::{self, ExitRecord, RECORD_SIZE, RING_RECORDS},
    stats::{self, VcpuStats},
};

struct Ring {
    records: KVVec<ExitRecord>,
    /// Exits recorded so far (the last record's sequence number).
    seq: u64,
}

/// One vCPU's exit ring.
#[pin_data]
pub(crate) struct ExitTrace {
    #[pin]
    ring: SpinLock<Ring>,
}

impl ExitTrace {
    pub(crate) fn new() -> Result<Arc<Self>> {
        let mut records = KVVec::with_capacity(RING_RECORDS, GFP_KERNEL)?;
        records.resize(RING_RECORDS, ExitRecord::default(), GFP_KERNEL)?;
        Arc::pin_init(pin_init!(ExitTrace { ring <- new_spinlock!(Ring { records, seq: 0 }) }), GFP_KERNEL)
    }

    /// Records one exit (its `seq` is assigned here).
    pub(crate) fn record(&self, record: ExitRecord) {
        let mut ring = self.ring.lock();
        ring.seq += 1;
        let seq = ring.seq;
        trace::store(&mut ring.records, seq, record);
    }
}

impl BinaryWriter for ExitTrace {
    fn write_to_slice(&self, writer: &mut UserSliceWriter, offset: &mut Offset) -> Result<usize> {
        // Copied out under the lock (no allocation there), then to the user.
        let mut bytes = KVVec::with_capacity(RING_RECORDS * RECORD_SIZE, GFP_KERNEL)?;
        bytes.resize(RING_RECORDS * RECORD_SIZE, 0, GFP_KERNEL)?;
        {
            let ring = self.ring.lock();
            for (chunk, r) in bytes.chunks_exact_mut(RECORD_SIZE).zip(ring.records.iter()) {
                chunk.copy_from_slice(&r.to_bytes());
            }
        }
        writer.write_slice_file(&bytes, offset)
    }
}

/// `name-<a>-<b>` or `name<a>` as a C string for a debugfs name.
fn name(args: fmt::Arguments<'_>) -> Result<CString> {
    CString::try_from_fmt(args)
}

/// A VM's debugfs directory and its `stats` file; removed when dropped
/// (after the vCPUs' directories, which hold references to it).
pub(crate) struct VmDebugfs {
    dir: Dir,
    _stats: Pin<KBox<File<Arc<MmuStats>>>>,
}

impl VmDebugfs {
    /// `rkvm-<pid>-<fd>`, as KVM names its `kvm/<pid>-<fd>`. As with KVM,
    /// a VM whose fd number was reused while the first VM still lives (on
    /// through a vCPU or statistics fd) gets no directory: debugfs logs
    /// that the name exists, and the VM works all the same.
    pub(crate) fn new(pid: i32, fd: i32, mmu: Arc<MmuStats>) -> Result<Self> {
        let dir = Dir::new(&name(fmt!("rkvm-{pid}-{fd}"))?);
        let stats = KBox::pin_init(dir.read_callback_file(c"stats", mmu, &show_vm_stats), GFP_KERNEL)?;
        Ok(VmDebugfs { dir, _stats: stats })
    }

    /// `vcpu<id>/` with the vCPU's `stats` and `exits`.
    pub(crate) fn vcpu(&self, id: u32, stats: Arc<VcpuStats>, trace: Arc<ExitTrace>) -> Result<VcpuDebugfs> {
        let dirname = name(fmt!("vcpu{id}"))?;
        let scope = KBox::pin_init(
            self.dir.scope(VcpuFiles { stats, trace }, &dirname, |files, dir| {
                dir.read_callback_file(c"stats", files, &show_vcpu_stats);
                dir.read_callback_file(c"exit_reasons", files, &show_exit_reasons);
                dir.read_binary_file(c"exits", &*files.trace);
            }),
            GFP_KERNEL,
        )?;
        Ok(VcpuDebugfs(scope))
    }
}

fn show_vm_stats(mmu: &Arc<MmuStats>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    stats::vm_values(mmu).iter().try_for_each(|(name, v)| writeln!(f, "{name} {v}"))
}

struct VcpuFiles {
    stats: Arc<VcpuStats>,
    trace: Arc<ExitTrace>,
}

fn show_vcpu_stats(files: &VcpuFiles, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    files.stats.values().iter().try_for_each(|(name, v)| writeln!(f, "{name} {v}"))
}

/// "name code count" for each hardware exit code seen.
fn show_exit_reasons(files: &VcpuFiles, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    files.stats.for_each_exit_code(|bucket, n| match trace::bucket_code(bucket) {
        Some(code) => writeln!(f, "{} {code:#x} {n}", trace::svm_exit_name(code)),
        None => writeln!(f, "other - {n}"),
    })
}

/// A vCPU's debugfs directory; removed when dropped.
pub(crate) struct VcpuDebugfs(#[allow(dead_code)] Pin<KBox<Scope<VcpuFiles>>>);

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
//! Recording an exit is eight plain stores and no lock: only the vCPU
//! thread writes its ring (it holds the vCPU for the whole `KVM_RUN`), and
//! each slot works as a sequence lock: its sequence word is zeroed before
//! the other words are written and set after, so a reader that sees the
//! same non-zero sequence before and after copying a slot has a whole
//! record, and skips the slot otherwise. With nobody reading, the guest
//! pays only the stores (measured in the tests: `exit_trace_overhead`);
//! the `exit_trace` module parameter turns recording off.

use core::{
    fmt,
    sync::atomic::{
        fence,
        AtomicU64,
        Ordering, //
    }, //
};

use kernel::{
    debugfs::{
        BinaryWriter,
        Dir,
        File,
        Scope, //
    },
    fs::file::Offset,
    prelude::*,
    str::CString,
    sync::Arc,
    uaccess::UserSliceWriter, //
};

use crate::{
    mmu::MmuStats,
    pure::trace::{
        self,
        ExitRecord,
        RECORD_SIZE,
        RING_RECORDS, //
    },
    stats::{
        self,
        VcpuStats, //
    }, //
};

/// One record slot: the words of an `ExitRecord` (`seq` first).
type Slot = [AtomicU64; 8];

/// One vCPU's exit ring.
pub(crate) struct ExitTrace {
    slots: KVVec<Slot>,
    /// Exits recorded so far (the last record's sequence number). Written
    /// by the vCPU thread only.
    seq: AtomicU64,
}

impl ExitTrace {
    pub(crate) fn new() -> Result<Arc<Self>> {
        let mut slots = KVVec::with_capacity(RING_RECORDS, GFP_KERNEL)?;
        for _ in 0..RING_RECORDS {
            slots.push([const { AtomicU64::new(0) }; 8], GFP_KERNEL)?;
        }
        Ok(Arc::new(
            ExitTrace {
                slots,
                seq: AtomicU64::new(0),
            },
            GFP_KERNEL,
        )?)
    }

    /// Records one exit (its `seq` is assigned here). Called by the vCPU
    /// thread only, while it holds the vCPU.
    pub(crate) fn record(&self, r: ExitRecord) {
        let seq = self.seq.load(Ordering::Relaxed) + 1;
        self.seq.store(seq, Ordering::Relaxed);
        let Some(slot) = self.slots.get(trace::slot_of(seq, RING_RECORDS)) else {
            return;
        };
        // Invalidate, then the body, then the sequence: see the module doc.
        slot[0].store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        let words = [
            r.time_ns, r.code, r.info1, r.info2, r.rip, r.guest_ns, r.outcome,
        ];
        for (w, v) in slot[1..].iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
        slot[0].store(seq, Ordering::Release);
    }

    /// A consistent copy of slot `i`, or an empty record if it was being
    /// written meanwhile.
    fn read_slot(slot: &Slot) -> ExitRecord {
        let seq = slot[0].load(Ordering::Acquire);
        let w: [u64; 8] = core::array::from_fn(|i| slot[i].load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        if seq == 0 || slot[0].load(Ordering::Relaxed) != seq {
            return ExitRecord::default();
        }
        ExitRecord {
            seq,
            time_ns: w[1],
            code: w[2],
            info1: w[3],
            info2: w[4],
            rip: w[5],
            guest_ns: w[6],
            outcome: w[7],
        }
    }
}

impl BinaryWriter for ExitTrace {
    fn write_to_slice(&self, writer: &mut UserSliceWriter, offset: &mut Offset) -> Result<usize> {
        // At the end: nothing to copy (readers read until a 0).
        if usize::try_from(*offset).map_or(true, |o| o >= RING_RECORDS * RECORD_SIZE) {
            return Ok(0);
        }
        let mut bytes = KVVec::with_capacity(RING_RECORDS * RECORD_SIZE, GFP_KERNEL)?;
        bytes.resize(RING_RECORDS * RECORD_SIZE, 0, GFP_KERNEL)?;
        for (chunk, slot) in bytes.chunks_exact_mut(RECORD_SIZE).zip(self.slots.iter()) {
            chunk.copy_from_slice(&Self::read_slot(slot).to_bytes());
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
        let stats = KBox::pin_init(
            dir.read_callback_file(c"stats", mmu, &show_vm_stats),
            GFP_KERNEL,
        )?;
        Ok(VmDebugfs { dir, _stats: stats })
    }

    /// `vcpu<id>/` with the vCPU's `stats` and `exits`.
    pub(crate) fn vcpu(
        &self,
        id: u32,
        stats: Arc<VcpuStats>,
        trace: Arc<ExitTrace>,
    ) -> Result<VcpuDebugfs> {
        let dirname = name(fmt!("vcpu{id}"))?;
        let scope = KBox::pin_init(
            self.dir
                .scope(VcpuFiles { stats, trace }, &dirname, |files, dir| {
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
    stats::write_lines(&**mmu, f)
}

struct VcpuFiles {
    stats: Arc<VcpuStats>,
    trace: Arc<ExitTrace>,
}

fn show_vcpu_stats(files: &VcpuFiles, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    stats::write_lines(&*files.stats, f)
}

/// "name code count" for each hardware exit code seen.
fn show_exit_reasons(files: &VcpuFiles, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    files
        .stats
        .for_each_exit_code(|bucket, n| match trace::bucket_code(bucket) {
            Some(code) => writeln!(
                f,
                "{} {:#x} {n}",
                trace::exit_name(code),
                trace::manual_code(code)
            ),
            None => writeln!(f, "other - {n}"),
        })
}

/// A vCPU's debugfs directory; removed when dropped.
pub(crate) struct VcpuDebugfs(#[allow(dead_code)] Pin<KBox<Scope<VcpuFiles>>>);

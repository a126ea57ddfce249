// SPDX-License-Identifier: GPL-2.0

//! `KVM_GET_STATS_FD`: a VM's and a vCPU's statistics as KVM's binary
//! statistics files (layout in `pure::stats`), read with `read()`/`pread()`;
//! values are atomics read live, without any lock a running vCPU holds.

use core::sync::atomic::{
    AtomicU64,
    Ordering::Relaxed, //
};

use kernel::{
    prelude::*,
    sync::Arc,
    sync::ArcBorrow,
    uaccess::UserSliceWriter, //
};

use crate::{
    fd::{
        self,
        FdOps, //
    },
    mmu::MmuStats,
    pure::{
        stats::{
            self,
            Desc,
            NAME_SIZE, //
        },
        trace::{
            exit_bucket,
            EXIT_BUCKETS, //
        }, //
    },
    sys, //
};

/// The VM statistics rkvm keeps, under KVM's names and types.
const VM_STATS: [Desc; 5] = [
    // Leaves of the nested page table now, by size (KVM: kvm_vm_stat.pages).
    Desc::instant("pages_4k"),
    Desc::instant("pages_2m"),
    Desc::instant("pages_1g"),
    // Unmappings that vCPUs must not outlive, and those that interrupted
    // vCPUs in guest mode (KVM: kvm_vm_stat_generic).
    Desc::counter("remote_tlb_flush_requests"),
    Desc::counter("remote_tlb_flush"),
];

/// Copies bytes `pos..` of the statistics file to `out`; returns how many.
fn read_file(
    id: &[u8],
    descs: &[Desc],
    values: &[u64],
    out: &mut UserSliceWriter,
    pos: u64,
) -> Result<usize> {
    let size = stats::file_size(descs.len());
    let mut file = KVec::with_capacity(size, GFP_KERNEL)?;
    file.resize(size, 0, GFP_KERNEL)?;
    stats::render(id, descs, values, &mut file);
    let start = usize::try_from(pos).unwrap_or(usize::MAX).min(size);
    let end = start.saturating_add(out.len()).min(size);
    let bytes = file.get(start..end).ok_or(EINVAL)?;
    out.write_slice(bytes)?;
    Ok(bytes.len())
}

/// A vCPU statistic: the index of its counter, in the order of [`VCPU_STATS`].
#[derive(Clone, Copy)]
pub(crate) enum VcpuStat {
    /// Every exit from guest mode.
    Exits,
    /// Port I/O exits.
    IoExits,
    /// Accesses to guest physical addresses without RAM, returned as MMIO.
    MmioExits,
    /// HLT.
    HaltExits,
    /// A host interrupt ended guest mode.
    IrqExits,
    /// The interrupt window userspace asked for opened.
    IrqWindowExits,
    /// `KVM_RUN` returned `EINTR` for a pending signal.
    SignalExits,
    /// Interrupts injected (`KVM_INTERRUPT` vectors delivered).
    IrqInjections,
    /// NMIs injected (`KVM_NMI`).
    NmiInjections,
    /// Exits that let a waiting NMI in (see `Exit::NmiWindow`).
    NmiWindowExits,
    /// Instructions emulated in the kernel (MMIO accesses, `mov` to and
    /// from debug registers).
    InsnEmulation,
    /// Nested page faults, or shadow page faults, fixed by mapping RAM.
    PfFixed,
    /// Page faults that were the guest's own, reflected to it (shadow paging).
    PfGuest,
    /// INVLPG executed by the guest (shadow paging).
    Invlpg,
    /// Shadow page tables emptied (wholly or of what is not global): the
    /// guest flushed its TLB (CR3 write, paging mode change) or the table
    /// reached its size bound.
    TlbFlush,
    /// VMMCALL.
    Hypercalls,
    /// Exits returned to user mode (the others were handled in the kernel).
    ExitsToUser,
    /// Nanoseconds spent in guest mode.
    GuestTimeNs,
    /// Nanoseconds spent in `KVM_RUN` outside guest mode: handling exits
    /// in the kernel, entering and leaving.
    HostTimeNs,
}

/// The vCPU statistics, under KVM's names (`struct kvm_vcpu_stat`).
const VCPU_STATS: [Desc; 19] = [
    Desc::counter("exits"),
    Desc::counter("io_exits"),
    Desc::counter("mmio_exits"),
    Desc::counter("halt_exits"),
    Desc::counter("irq_exits"),
    Desc::counter("irq_window_exits"),
    Desc::counter("signal_exits"),
    Desc::counter("irq_injections"),
    Desc::counter("nmi_injections"),
    Desc::counter("nmi_window_exits"),
    Desc::counter("insn_emulation"),
    Desc::counter("pf_fixed"),
    Desc::counter("pf_guest"),
    Desc::counter("invlpg"),
    Desc::counter("tlb_flush"),
    Desc::counter("hypercalls"),
    // rkvm's own: KVM has no such counters.
    Desc::counter("exits_to_user"),
    Desc::nanoseconds("guest_time_ns"),
    Desc::nanoseconds("host_time_ns"),
];

/// A vCPU's counters, and its exits by hardware exit code.
pub(crate) struct VcpuStats([AtomicU64; VCPU_STATS.len()], [AtomicU64; EXIT_BUCKETS]);

impl VcpuStats {
    pub(crate) fn new() -> Result<Arc<Self>> {
        let counters = VcpuStats(
            [const { AtomicU64::new(0) }; VCPU_STATS.len()],
            [const { AtomicU64::new(0) }; EXIT_BUCKETS],
        );
        Ok(Arc::new(counters, GFP_KERNEL)?)
    }

    /// Counts an exit with hardware exit code `code`.
    pub(crate) fn exit_code(&self, code: u64) {
        if let Some(counter) = self.1.get(exit_bucket(code)) {
            counter.fetch_add(1, Relaxed);
        }
    }

    /// Calls `f(bucket, count)` for each exit code counter that is not 0.
    pub(crate) fn for_each_exit_code(
        &self,
        mut f: impl FnMut(usize, u64) -> core::fmt::Result,
    ) -> core::fmt::Result {
        for (bucket, counter) in self.1.iter().enumerate() {
            let n = counter.load(Relaxed);
            if n != 0 {
                f(bucket, n)?;
            }
        }
        Ok(())
    }

    /// Counts one more `stat`.
    pub(crate) fn inc(&self, stat: VcpuStat) {
        self.add(stat, 1);
    }

    /// Adds `n` to `stat`.
    pub(crate) fn add(&self, stat: VcpuStat, n: u64) {
        if let Some(counter) = self.0.get(stat as usize) {
            counter.fetch_add(n, Relaxed);
        }
    }
}

/// The counters behind a statistics file: a VM's or a vCPU's.
pub(crate) trait StatsSource: Send + Sync + 'static {
    /// The name of the file's anonymous inode.
    const FILE_NAME: &'static CStr;
    /// The statistics, in the order of the file.
    const DESCS: &'static [Desc];
    /// The value of statistic `i` of [`Self::DESCS`] now.
    fn value(&self, i: usize) -> u64;
}

impl StatsSource for MmuStats {
    const FILE_NAME: &'static CStr = c"kvm-vm-stats";
    const DESCS: &'static [Desc] = &VM_STATS;

    fn value(&self, i: usize) -> u64 {
        match i {
            0 => self.pages_4k.load(Relaxed),
            1 => self.pages_2m.load(Relaxed),
            3 => self.remote_tlb_flush_requests.load(Relaxed),
            4 => self.remote_tlb_flush.load(Relaxed),
            _ => 0, // pages_1g: rkvm maps no 1 GiB leaves
        }
    }
}

impl StatsSource for VcpuStats {
    const FILE_NAME: &'static CStr = c"kvm-vcpu-stats";
    const DESCS: &'static [Desc] = &VCPU_STATS;

    fn value(&self, i: usize) -> u64 {
        self.0.get(i).map_or(0, |counter| counter.load(Relaxed))
    }
}

/// "name value" lines for every statistic of `source` (debugfs `stats`).
pub(crate) fn write_lines<S: StatsSource>(
    source: &S,
    f: &mut core::fmt::Formatter<'_>,
) -> core::fmt::Result {
    S::DESCS
        .iter()
        .enumerate()
        .try_for_each(|(i, d)| writeln!(f, "{} {}", d.name, source.value(i)))
}

/// The file behind a statistics fd of a VM (`MmuStats`) or a vCPU.
pub(crate) struct StatsFile<S: StatsSource> {
    id: [u8; NAME_SIZE],
    source: Arc<S>,
}

impl<S: StatsSource> StatsFile<S> {
    /// `KVM_GET_STATS_FD`: a new read-only fd, its id as KVM writes it:
    /// "kvm-<pid>" of the caller, with "/vcpu-<id>" for a vCPU.
    pub(crate) fn create(source: Arc<S>, vcpu: Option<u32>) -> Result<isize> {
        let mut id = [0u8; NAME_SIZE];
        let pid = u32::try_from(sys::current_pid()).unwrap_or(0);
        let end = stats::write_id(&mut id, 0, b"kvm-", pid);
        if let Some(vcpu) = vcpu {
            stats::write_id(&mut id, end, b"/vcpu-", vcpu);
        }
        Ok(fd::create(Arc::new(StatsFile { id, source }, GFP_KERNEL)?)? as isize)
    }
}

impl<S: StatsSource> FdOps for StatsFile<S> {
    const NAME: &'static CStr = S::FILE_NAME;
    const HAS_READ: bool = true;

    fn ioctl(
        _this: ArcBorrow<'_, Self>,
        _file: &kernel::fs::File,
        _cmd: u32,
        _arg: usize,
    ) -> Result<isize> {
        Err(ENOTTY)
    }

    fn read(this: ArcBorrow<'_, Self>, out: &mut UserSliceWriter, pos: u64) -> Result<usize> {
        let mut values = KVec::with_capacity(S::DESCS.len(), GFP_KERNEL)?;
        for i in 0..S::DESCS.len() {
            values.push(this.source.value(i), GFP_KERNEL)?;
        }
        read_file(&this.id, S::DESCS, &values, out, pos)
    }
}

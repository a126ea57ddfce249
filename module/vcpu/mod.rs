// SPDX-License-Identifier: GPL-2.0

//! A vCPU: the file behind the fd `KVM_CREATE_VCPU` returns, and its
//! `kvm_run` mmap.
//!
//! - [`run_page`]: the pages userspace maps, `struct kvm_run` and PIO data;
//! - [`run`]: `KVM_RUN`, the run loop (user mode -> `KVM_RUN` -> guest mode
//!   -> exit -> handled here, or returned to user mode);
//! - [`exits`]: one handler per kind of exit;
//! - [`ioctl`]: the vCPU ioctls.
//!
//! Here: the vCPU and its state, the fd, and what exits and ioctls share
//! (MSR access, the PDPTE reload).

use kernel::{
    fs::File,
    mm::virt::VmaNew,
    new_mutex,
    page::{
        Page,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{
        Arc,
        ArcBorrow,
        Mutex, //
    }, //
};

use crate::{
    abi::{
        self,
        uapi, //
    },
    apic::VcpuApic,
    backend::ArchVcpu,
    emulate::{
        PendingLoad,
        StringIo, //
    },
    fd::FdOps,
    memory::GuestMemory,
    mmu::VcpuMmu,
    pure::{
        cpuid,
        debug,
        msr,
        paging::GuestPhys, //
    },
    stats::VcpuStats,
    sys,
    trace::{
        ExitTrace,
        VcpuDebugfs, //
    },
    vm::Vm, //
};

mod apic;
mod clock;
mod exits;
mod ioctl;
mod run;
mod run_page;

/// An I/O exit that userspace completes: the next `KVM_RUN` stores the
/// data of an IN and moves RIP past the instruction, as KVM's
/// `complete_fast_pio_*` do (so between the exit and the next `KVM_RUN`,
/// RIP still points at the IN/OUT).
struct PendingIo {
    rip: u64,
    next_rip: u64,
    /// Size of an IN's data, `None` for an OUT.
    input: Option<u8>,
}

struct VcpuState {
    arch: KBox<dyn ArchVcpu>,
    pending_io: Option<PendingIo>,
    pending_mmio: Option<PendingLoad>,
    /// An interrupt from `KVM_INTERRUPT` not yet injected (KVM's
    /// `vcpu->arch.interrupt`): rkvm has no in-kernel interrupt controller,
    /// userspace's PIC decides what to inject.
    pending_irq: Option<u8>,
    /// The CPUID table from `KVM_SET_CPUID2`.
    cpuid: KVec<cpuid::Entry>,
    /// Whether the vCPU has entered the guest (then CPUID is frozen).
    has_run: bool,
    /// An INS/OUTS round userspace is handling.
    pending_string: Option<StringIo>,
    /// One page, for string I/O data between guest memory and the PIO page.
    io_buf: KVec<u8>,
    /// Since when (`ktime_ns`) this `KVM_RUN` has been outside guest mode.
    host_since: u64,
    /// Nested paging, or this vCPU's shadow page table.
    mmu: VcpuMmu,
    /// The MSRs kept above the vendors (MTRRs, machine check, ...).
    msrs: msr::CommonMsrs,
    /// `MSR_KVM_SYSTEM_TIME(_NEW)`: the guest's clock page, bit 0 enabling it.
    system_time_msr: u64,
    /// `KVM_SET_VAPIC_ADDR`: where the APIC's TPR, highest ISR and IRR are
    /// mirrored for QEMU's TPR-patching option ROM (0: nowhere).
    vapic_addr: u64,
    /// The clock page must be written again before the next entry.
    clock_stale: bool,
    /// The VM clock's generation the page was last written for.
    clock_generation: u64,
    /// NMIs from `KVM_NMI` not yet injected (at most two, as KVM keeps:
    /// one being handled and one latched behind it).
    nmi_pending: u8,
    /// A shutdown the next entry reports instead of entering (KVM's
    /// `KVM_REQ_TRIPLE_FAULT`: a machine check during a machine check).
    shutdown_pending: bool,
    /// The last entry was abandoned because the VM's mappings changed
    /// meanwhile (`mmu::EntryGate`): the next one is made with them held.
    entry_cancelled: bool,
    /// SVM's global interrupt flag, as `KVM_SET_NESTED_STATE` may clear it
    /// (the guest, without SVM, cannot set it again): while clear, no
    /// interrupt or NMI is injected, as with KVM. Always set on VMX.
    gif: bool,
    /// The in-kernel APIC's armed timer (dropping it cancels the timer).
    apic_timer: Option<crate::apic::TimerHandle>,
}

impl VcpuState {
    /// RDMSR (`host` false) and `KVM_GET_MSRS`: the backend's MSRs, those
    /// kept above the vendors, then the machine configuration MSRs every
    /// KVM answers with fixed values. `None`: #GP (or a short count).
    fn read_msr(&self, index: u32, host: bool) -> Option<u64> {
        self.arch
            .get_msr(index)
            .or_else(|| self.msrs.get(index, host))
            .or_else(|| msr::fixed_read(index))
    }

    /// WRMSR (`host` false) and `KVM_SET_MSRS`: false means #GP (or a short count).
    fn write_msr(&mut self, index: u32, value: u64, host: bool) -> bool {
        let maxphyaddr = cpuid::maxphyaddr(&self.cpuid);
        if let Some(done) = self.msrs.set(index, value, host, maxphyaddr) {
            return done;
        }
        self.arch.set_msr(index, value, host) || msr::write_ignored(index)
    }

    /// The vCPU state CPUID reflects: CR4.OSXSAVE and XCR0.
    fn cpuid_runtime(&self) -> cpuid::Runtime {
        cpuid::Runtime {
            osxsave: self.arch.paging().cr4 & crate::pure::x86::cr4::OSXSAVE != 0,
            xcr0: self.arch.guest_fpu().xcr0(),
        }
    }

    /// `kvm_vcpu_ready_for_interrupt_injection()` with a userspace irqchip.
    fn ready_for_interrupt(&self) -> bool {
        self.gif && self.pending_irq.is_none() && self.arch.interrupt_allowed()
    }

    /// `KVM_GUESTDBG_SINGLESTEP` is on.
    fn single_step(&self) -> bool {
        self.arch.debug_regs().guest_debug().single_step
    }

    /// `KVM_EXIT_DEBUG` for a step rkvm completed itself (an instruction it
    /// emulated, or one userspace completed), as KVM's
    /// `kvm_vcpu_do_singlestep`.
    fn step_exit(&self) -> uapi::kvm_debug_exit_arch {
        uapi::kvm_debug_exit_arch {
            exception: u32::from(debug::DB_VECTOR),
            pad: 0,
            pc: self.arch.linear_rip(),
            dr6: debug::DR6_BS | debug::DR6_ACTIVE_LOW,
            dr7: self.arch.debug_regs().armed().dr7,
        }
    }
}

#[pin_data]
pub(crate) struct Vcpu {
    vm: Arc<Vm>,
    id: u32,
    run_page: Page,
    pio_page: Page,
    /// Counters for `KVM_GET_STATS_FD`, updated without the state lock.
    stats: Arc<VcpuStats>,
    /// The last exits, for debugfs.
    trace: Arc<ExitTrace>,
    /// `vcpu<id>/` in the VM's debugfs directory.
    _debugfs: Option<VcpuDebugfs>,
    /// The in-kernel local APIC (with either in-kernel irqchip), which
    /// other vCPUs and MSIs reach without the state lock.
    apic: Option<Arc<VcpuApic>>,
    /// The VM has the PIC and IOAPIC in the kernel (`KVM_CREATE_IRQCHIP`,
    /// which comes before any vCPU, so this never changes).
    full_irqchip: bool,
    /// Held for the whole of `KVM_RUN`, as KVM's `vcpu->mutex`.
    #[pin]
    state: Mutex<VcpuState>,
}

impl Vcpu {
    pub(crate) fn new(vm: Arc<Vm>, id: u32) -> Result<Arc<Self>> {
        let shadow_paging = vm.shadow_paging();
        let arch = vm.new_arch_vcpu(id == 0, shadow_paging)?;
        let mmu = VcpuMmu::new(shadow_paging)?;
        let stats = VcpuStats::new()?;
        let trace = ExitTrace::new()?;
        // Without debugfs (or its memory) the vCPU works all the same.
        let debugfs = vm.debugfs_vcpu(id, stats.clone(), trace.clone());
        let mut io_buf = KVec::with_capacity(PAGE_SIZE, GFP_KERNEL)?;
        io_buf.resize(PAGE_SIZE, 0, GFP_KERNEL)?;
        let full_irqchip = vm.full_irqchip();
        let apic = if vm.irqchip_mode().is_some() {
            let apic = VcpuApic::new(crate::pure::lapic::Config::new(id))?;
            vm.add_apic(apic.clone())?;
            Some(apic)
        } else {
            None
        };
        Arc::pin_init(
            try_pin_init!(Vcpu {
                vm,
                id,
                run_page: Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?,
                pio_page: Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?,
                stats,
                trace,
                _debugfs: debugfs,
                apic,
                full_irqchip,
                state <- new_mutex!(VcpuState {
                    arch,
                    pending_io: None,
                    pending_mmio: None,
                    pending_irq: None,
                    cpuid: KVec::new(),
                    has_run: false,
                    pending_string: None,
                    io_buf,
                    host_since: 0,
                    mmu,
                    msrs: msr::CommonMsrs::new(),
                    system_time_msr: 0,
                    vapic_addr: 0,
                    clock_stale: false,
                    clock_generation: 0,
                    nmi_pending: 0,
                    shutdown_pending: false,
                    entry_cancelled: false,
                    gif: true,
                    apic_timer: None,
                }),
            }),
            GFP_KERNEL,
        )
    }
}

impl Vcpu {
    /// RDMSR (`host` false) and `KVM_GET_MSRS`: kvmclock's, then the
    /// others (`VcpuState::read_msr`). `None`: #GP (or a short count).
    fn read_msr(&self, st: &VcpuState, index: u32, host: bool) -> Option<u64> {
        if let Some(value) = self.apic.as_ref().and_then(|a| self.apic_rdmsr(a, index)) {
            return value;
        }
        self.read_clock_msr(st, index)
            .or_else(|| st.read_msr(index, host))
    }

    /// WRMSR (`host` false) and `KVM_SET_MSRS`: false means #GP (or a
    /// short count). A new guest TSC makes the clock page stale.
    fn write_msr(&self, st: &mut VcpuState, index: u32, value: u64, host: bool) -> bool {
        if let Some(apic) = self.apic.clone() {
            if let Some((done, _)) = self.apic_wrmsr(st, &apic, index, value, host, None) {
                return done;
            }
        }
        if self.write_clock_msr(st, index, value) {
            return true;
        }
        let done = st.write_msr(index, value, host);
        if done && index == msr::TSC {
            st.clock_stale = true;
        }
        done
    }
}

impl FdOps for Vcpu {
    const NAME: &'static CStr = c"kvm-vcpu";
    const HAS_MMAP: bool = true;

    fn ioctl(this: ArcBorrow<'_, Self>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        this.handle_ioctl(cmd, arg)
    }

    /// Page 0 is `struct kvm_run`, page 1 the PIO data, page 2 the VM's
    /// coalesced MMIO ring (`KVM_COALESCED_MMIO_PAGE_OFFSET`).
    fn mmap(this: ArcBorrow<'_, Self>, vma: &VmaNew) -> Result {
        let pgoff = sys::vma_pgoff(vma);
        let pages = (vma.end() - vma.start()) / PAGE_SIZE;
        if pgoff
            .checked_add(pages)
            .is_none_or(|end| end > abi::VCPU_MMAP_PAGES)
        {
            return Err(EINVAL);
        }
        let vma = vma.set_mixedmap();
        for i in 0..pages {
            let addr = vma.start() + i * PAGE_SIZE;
            match pgoff + i {
                0 => vma.vm_insert_page(addr, &this.run_page)?,
                abi::PIO_PAGE_OFFSET => vma.vm_insert_page(addr, &this.pio_page)?,
                _ => this
                    .vm
                    .with_coalesced_ring(|ring| vma.vm_insert_page(addr, ring))?,
            }
        }
        Ok(())
    }
}

/// After rkvm itself changed the paging registers (an emulated MOV to a
/// control register, `KVM_SET_SREGS`) in PAE paging: the four PDPTEs, read
/// from guest memory as the processor reads them on such a write (see
/// `ArchVcpu::holds_pdptes`). A CR3 outside guest memory leaves them as they
/// were; the guest's next access through them faults.
fn reload_pdptes(arch: &mut dyn ArchVcpu, mem: &GuestMemory) {
    let p = arch.paging();
    if !arch.holds_pdptes() || p.mode() != crate::pure::walk::Paging::Pae {
        return;
    }
    let mut table = [0u8; 32];
    if mem
        .read(GuestPhys(p.cr3 & 0xffff_ffe0), &mut table)
        .is_err()
    {
        return;
    }
    let mut pdptes = [0u64; 4];
    for (pdpte, bytes) in pdptes.iter_mut().zip(table.chunks_exact(8)) {
        *pdpte = u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
    }
    arch.set_pdptes(pdptes);
}

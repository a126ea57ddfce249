// SPDX-License-Identifier: GPL-2.0

//! The interface between the generic vCPU (`vcpu/`, which speaks the KVM
//! ABI) and a hardware backend (`svm/` or `vmx/`).
//!
//! A backend owns the hardware state of one vCPU (VMCB or VMCS, guest GPRs,
//! FPU), enters guest mode, and reports each exit as an [`Exit`] in terms
//! that do not depend on the vendor. What to do with an exit (return it to
//! userspace, emulate it, map memory) is decided above, once for all backends.

use core::sync::atomic::{
    AtomicU8,
    Ordering, //
};

use kernel::prelude::*;

use crate::{
    abi::uapi,
    guest_state::{
        DebugRegs,
        GuestFpu, //
    },
    mmu::Entry,
    pure::{
        decode::PortIo,
        paging::{
            GuestPhys,
            TdpFormat, //
        },
        shadow::GuestPaging, //
    },
    svm,
    vmx, //
};

/// The vendor whose backend runs guests here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vendor {
    /// AMD SVM.
    Svm = 1,
    /// Intel VMX.
    Vmx = 2,
}

/// The usable backend, set once at module load (0: none).
static USABLE: AtomicU8 = AtomicU8::new(0);

/// Records what the CPU offers (from the module initializer).
pub(crate) fn set_usable(vendor: Option<Vendor>) {
    USABLE.store(vendor.map_or(0, |v| v as u8), Ordering::Relaxed);
}

/// The backend VMs are created with, if the CPU has one rkvm can use.
pub(crate) fn usable() -> Option<Vendor> {
    match USABLE.load(Ordering::Relaxed) {
        1 => Some(Vendor::Svm),
        2 => Some(Vendor::Vmx),
        _ => None,
    }
}

/// A VM's hold on the hardware: what its vCPUs are created from.
pub(crate) enum Hardware {
    /// SVM, enabled on every CPU while this lives.
    Svm(svm::HardwareRef),
    /// VMX, with the controls read from the processor.
    Vmx(vmx::HardwareRef),
}

impl Hardware {
    /// For a new VM: ENODEV without a usable backend, EBUSY if another
    /// hypervisor holds the hardware.
    pub(crate) fn get() -> Result<Self> {
        match usable() {
            Some(Vendor::Svm) => Ok(Hardware::Svm(svm::HardwareRef::get()?)),
            Some(Vendor::Vmx) => Ok(Hardware::Vmx(vmx::HardwareRef::get()?)),
            None => Err(ENODEV),
        }
    }

    /// Whether shadow paging is available (both backends have it).
    pub(crate) fn supports_shadow(&self) -> bool {
        true
    }

    /// The format of the two-dimensional page table (NPT or EPT).
    pub(crate) fn tdp_format(&self) -> TdpFormat {
        match self {
            Hardware::Svm(_) => TdpFormat::Npt,
            Hardware::Vmx(_) => TdpFormat::Ept,
        }
    }

    /// A new vCPU's hardware state.
    pub(crate) fn new_vcpu(&self, bsp: bool, shadow: bool) -> Result<KBox<dyn ArchVcpu>> {
        match self {
            Hardware::Svm(hw) => Ok(svm::SvmVcpu::new(bsp, hw.asids(), shadow)?),
            Hardware::Vmx(hw) => Ok(vmx::VmxVcpu::new(bsp, hw.caps(), shadow)?),
        }
    }
}

/// Why guest mode ended, vendor-neutral.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Exit {
    /// A host interrupt, NMI or the like: nothing for rkvm to do.
    Host,
    /// IN/OUT (or INS/OUTS).
    Io {
        /// The instruction.
        io: PortIo,
        /// RIP of the next instruction.
        next_rip: u64,
    },
    /// HLT.
    Hlt,
    /// The guest can take an interrupt now (the window rkvm asked for opened).
    IrqWindow,
    /// NMIs can be injected again, or soon will be: VMX's NMI window opened,
    /// or on SVM the guest reached the IRET that ends its NMI handler (NMIs
    /// are unblocked once it has executed: at the next exit after it).
    NmiWindow,
    /// A debug exception (#DB): every one is intercepted, as in KVM.
    Debug {
        /// Its cause: B0-B3, BD, BS as they are set (the layout of VMX's
        /// exit qualification; `pure::debug::dr6_after_db`).
        payload: u64,
    },
    /// A breakpoint exception (#BP, INT3), intercepted while userspace
    /// uses software breakpoints (`KVM_GUESTDBG_USE_SW_BP`). RIP is the
    /// INT3's.
    Breakpoint,
    /// An INT n, INT3 or INTO at RIP (SVM's INTn intercept, set while
    /// userspace uses software breakpoints: QEMU's emulation of SVM, the
    /// test machine, reports INT3 this way and not as a #BP). The emulator
    /// decodes which: INT3 is a breakpoint, the rest goes to the guest.
    SoftInt,
    /// A `mov` to or from a debug register (the emulator decodes which).
    Dr,
    /// A guest physical address with no valid translation.
    NestedFault {
        /// The address.
        gpa: GuestPhys,
        /// A write access.
        write: bool,
    },
    /// A page fault (shadow paging only: every #PF is intercepted).
    PageFault {
        /// The linear address (what CR2 would hold).
        addr: u64,
        /// The error code.
        error: u64,
    },
    /// A read or write of CR0, CR3 or CR4 (shadow paging only; the
    /// emulator decodes which).
    CrAccess,
    /// INVLPG (shadow paging only).
    Invlpg {
        /// The instruction's length and linear address where the hardware
        /// reports them (VMX); `None`: the emulator decodes them.
        reported: Option<(u8, u64)>,
    },
    /// CPUID.
    Cpuid,
    /// An instruction KVM executes as a no-op: WBINVD and INVD (no cache
    /// state the guest could tell apart), MONITOR and MWAIT (as KVM's
    /// default `KVM_X86_QUIRK_MWAIT_NEVER_UD_FAULTS` has them).
    Nop {
        /// The instruction's length.
        len: u8,
    },
    /// XSETBV (always intercepted: the guest's XCR0 is checked and
    /// switched by rkvm, see `guest_state::GuestFpu`).
    Xsetbv {
        /// The instruction's length.
        len: u8,
    },
    /// RDMSR or WRMSR (`write`).
    Msr {
        /// WRMSR.
        write: bool,
    },
    /// VMMCALL / VMCALL.
    Hypercall,
    /// Triple fault: the vCPU is shut down.
    Shutdown,
    /// The hardware refused the guest state.
    InvalidState(u64),
    /// Guest mode was not entered, through no fault of the guest state: the
    /// backend could not get this CPU ready (SVM off on a CPU onlined after
    /// it was enabled, VMX in use by another hypervisor, a VMX instruction
    /// before the entry failed).
    NotEntered {
        /// The VMCS field whose VMWRITE failed; 0 for the other failures.
        detail: u64,
    },
    /// The entry was abandoned before guest mode: the VM's mappings
    /// changed since it was prepared (`mmu::EntryGate::enter`).
    Cancelled,
    /// The guest state was lost: the VMCB held the host's state (see
    /// `svm::host_state_in_vmcb`), found before entry or after an exit.
    StateLost,
    /// An exception in a real-mode guest that VMX runs in virtual-8086 mode
    /// (shadow paging: no unrestricted guest). Every exception is
    /// intercepted there, since the processor would deliver it through a
    /// protected-mode IDT: rkvm emulates the instruction behind a #GP
    /// (`pure::decode::decode_v86`) or delivers the exception through the
    /// guest's interrupt vector table.
    RealModeException {
        /// The vector.
        vector: u8,
        /// The error code, if the exception has one.
        error: Option<u32>,
        /// The length of the instruction that raised it (INT3, INTO), 0 for
        /// a fault.
        len: u8,
    },
    /// A real-mode guest whose segments virtual-8086 mode cannot hold
    /// (`pure::vmcs::v86_segment`): rkvm has no instruction emulator to run
    /// it until they can be.
    RealModeUnsupported,
    /// An instruction the guest may not use (VMX instructions: rkvm has no
    /// nested virtualization): #UD for the guest.
    InvalidOpcode,
    /// Anything else: the raw exit code and exit information.
    Unhandled(u64, u64, u64),
}

/// General-purpose register numbers, in x86 encoding order (as ModRM, REX
/// and `pure::decode::Reg` number them).
pub(crate) mod gpr {
    pub(crate) const RAX: u8 = 0;
    pub(crate) const RCX: u8 = 1;
    pub(crate) const RDX: u8 = 2;
    pub(crate) const RBX: u8 = 3;
    pub(crate) const RSI: u8 = 6;
    pub(crate) const RDI: u8 = 7;
}

/// An event the hardware was delivering when guest mode ended, to be
/// delivered again at the next entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// An external interrupt.
    Interrupt(u8),
    /// A hardware exception.
    Exception(u8),
    /// Anything else (NMI, software interrupt).
    Other,
}

/// The event a vCPU delivers at its next entry, as `KVM_GET/SET_VCPU_EVENTS`
/// describe it (software interrupts and exceptions are not: they happen
/// again when the instruction runs again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Injection {
    /// A hardware exception, with its error code if it has one.
    Exception {
        /// The vector.
        vector: u8,
        /// The error code.
        error: Option<u32>,
    },
    /// An external interrupt.
    Interrupt(u8),
    /// An NMI.
    Nmi,
}

/// `kvm_vcpu_events.interrupt.shadow`: blocking by MOV SS.
pub(crate) const SHADOW_MOV_SS: u8 = 1;
/// `kvm_vcpu_events.interrupt.shadow`: blocking by STI.
pub(crate) const SHADOW_STI: u8 = 2;

/// One vCPU's hardware state.
pub(crate) trait ArchVcpu: Send {
    /// Enters guest mode once, with `entry.root` as the nested page table
    /// (or, with shadow paging, the shadow page table). `entry.tlb_epoch`
    /// changes whenever a mapping was removed or changed, so that
    /// translations cached under the old table are not used. With
    /// interrupts off, just before the entry, `entry.gate.enter()` must
    /// succeed and its guard live until the exit (else `Exit::Cancelled`).
    fn run(&mut self, entry: Entry<'_>) -> Exit;
    /// Puts the vCPU in its RESET state.
    fn reset(&mut self);

    /// `KVM_GET_REGS`.
    fn regs(&self) -> uapi::kvm_regs;
    /// `KVM_SET_REGS`.
    fn set_regs(&mut self, regs: &uapi::kvm_regs);
    /// `KVM_GET_SREGS`.
    fn sregs(&self) -> uapi::kvm_sregs;
    /// `KVM_SET_SREGS` of state already validated.
    fn set_sregs(&mut self, sregs: &uapi::kvm_sregs);

    /// The guest's CR0, CR3, CR4 and EFER, as the guest sees them (with
    /// shadow paging the processor runs with others).
    fn paging(&self) -> GuestPaging;
    /// Sets them, after an emulated write of a control register or EFER.
    fn set_paging(&mut self, paging: GuestPaging);
    /// Sets CR2 (a page fault reflected to the guest).
    fn set_cr2(&mut self, value: u64);
    /// Whether the backend keeps the PAE page-directory-pointer entries in
    /// its state (VMX with EPT loads them from the VMCS at entry, not from
    /// memory; SVM reads memory), so that rkvm must read them from guest
    /// memory after it changed CR0, CR3 or CR4 itself.
    fn holds_pdptes(&self) -> bool {
        false
    }
    /// Sets those entries (see [`ArchVcpu::holds_pdptes`]).
    fn set_pdptes(&mut self, _pdptes: [u64; 4]) {}
    /// CR8, the task priority (with no local APIC, only stored).
    fn cr8(&self) -> u64;
    /// Sets CR8 (the value's low 4 bits).
    fn set_cr8(&mut self, value: u64);
    /// Removes and returns the event queued for delivery at the next entry.
    fn take_event(&mut self) -> Option<Event>;

    /// General-purpose register `index` (x86 encoding order, 0-15; see [`gpr`]).
    fn gpr(&self, index: u8) -> u64;
    /// Sets general-purpose register `index`.
    fn set_gpr(&mut self, index: u8, value: u64);
    /// RIP.
    fn rip(&self) -> u64;
    /// Sets RIP.
    fn set_rip(&mut self, rip: u64);
    /// Moves RIP past an emulated instruction of `len` bytes.
    fn skip(&mut self, len: u64) {
        let rip = self.rip();
        self.set_rip(rip.wrapping_add(len));
    }
    /// The event queued for the next entry, if the processor cannot deliver
    /// it (a real-mode guest in virtual-8086 mode: see
    /// [`Exit::RealModeException`]): its vector and the IP to return to.
    /// rkvm then delivers it itself, through the interrupt vector table.
    fn take_real_mode_event(&mut self) -> Option<(u8, u64)> {
        None
    }
    /// Queues an exception for the next entry.
    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>);
    /// Delivers the INT n of `len` bytes at RIP to the guest at the next
    /// entry (after an [`Exit::SoftInt`]); false where the backend never
    /// reports one.
    fn inject_soft_interrupt(&mut self, _vector: u8, _len: u64) -> bool {
        false
    }
    /// Delivers #BP as the INT3 of `len` bytes at RIP would (0: as a
    /// fault, returning to RIP) at the next entry: `KVM_GUESTDBG_INJECT_BP`
    /// after a breakpoint exit. The caller checked that no event is queued.
    fn inject_breakpoint(&mut self, len: u64);
    /// Whether an external interrupt can be injected at the next entry:
    /// RFLAGS.IF set, no interrupt shadow, no other event queued.
    fn interrupt_allowed(&self) -> bool;
    /// Queues external interrupt `vector` for the next entry, whatever
    /// RFLAGS.IF says (as event injection does). False if another event
    /// (one being re-delivered, or an exception) already has the slot.
    fn inject_interrupt(&mut self, vector: u8) -> bool;
    /// Asks for an [`Exit::IrqWindow`] as soon as the guest can take an
    /// interrupt (or stops asking).
    fn set_irq_window(&mut self, enable: bool);
    /// Whether an NMI can be injected at the next entry: the guest is not
    /// between an NMI and its IRET, not in an interrupt shadow, and no
    /// other event is being injected.
    fn nmi_allowed(&self) -> bool;
    /// Injects an NMI at the next entry (only when [`Self::nmi_allowed`]);
    /// NMIs stay blocked until the guest's handler returns with IRET.
    fn inject_nmi(&mut self);
    /// Whether the guest is between an NMI and its IRET (KVM's NMI mask).
    fn nmi_masked(&self) -> bool;
    /// While an NMI waits, asks for an exit as soon as one can be injected
    /// (VMX: NMI-window exiting; SVM: the IRET intercept set by
    /// [`Self::inject_nmi`] does it, and an interrupt shadow ends at the
    /// next exit).
    fn set_nmi_window(&mut self, enable: bool);
    /// The event queued for the next entry, if it is one
    /// `KVM_GET_VCPU_EVENTS` reports.
    fn injection(&self) -> Option<Injection>;
    /// Drops the event queued for the next entry.
    fn clear_injection(&mut self);
    /// Replaces the event queued for the next entry (`None`: none), as
    /// `KVM_SET_VCPU_EVENTS` restores it.
    fn set_injection(&mut self, injection: Option<Injection>) {
        self.clear_injection();
        match injection {
            None => {}
            Some(Injection::Exception { vector, error }) => self.inject_exception(vector, error),
            Some(Injection::Interrupt(vector)) => {
                self.inject_interrupt(vector);
            }
            Some(Injection::Nmi) => self.inject_nmi(),
        }
    }
    /// The interrupt shadow ([`SHADOW_MOV_SS`], [`SHADOW_STI`]).
    fn interrupt_shadow(&self) -> u8;
    /// Sets the interrupt shadow.
    fn set_interrupt_shadow(&mut self, shadow: u8);
    /// Sets or clears the NMI mask (between an NMI and its IRET).
    fn set_nmi_masked(&mut self, masked: bool);
    /// The `MCG_CAP` bits the vendor keeps of what `KVM_X86_SETUP_MCE`
    /// asks for (KVM's `setup_mce` hook).
    fn mcg_cap_mask(&self) -> u64 {
        !0
    }
    /// The guest's x87, SSE and AVX state and its XCR0.
    fn guest_fpu(&self) -> &GuestFpu;
    /// The same, to change.
    fn guest_fpu_mut(&mut self) -> &mut GuestFpu;
    /// `KVM_GET_FPU`.
    fn fpu(&self) -> uapi::kvm_fpu;
    /// `KVM_SET_FPU` of state already validated (MXCSR reserved bits clear).
    fn set_fpu(&mut self, fpu: &uapi::kvm_fpu);
    /// The vCPU's debug registers and `KVM_SET_GUEST_DEBUG` settings. The
    /// backend runs the guest as they say: RFLAGS.TF while single-stepping
    /// (never shown in the registers), #BP intercepted with software
    /// breakpoints, [`DebugRegs::armed`] loaded around each entry.
    fn debug_regs(&self) -> &DebugRegs;
    /// The same, to change.
    fn debug_regs_mut(&mut self) -> &mut DebugRegs;
    /// The guest's view of debug register `n` (0-7; 4 and 5 alias 6 and 7).
    fn get_dr(&self, n: u8) -> Option<u64> {
        self.debug_regs().get(n)
    }
    /// Sets the guest's view of debug register `n`: false if the value is
    /// invalid (a #GP for the guest).
    fn set_dr(&mut self, n: u8, value: u64) -> bool {
        self.debug_regs_mut().set(n, value)
    }
    /// CS.base + RIP (`kvm_get_linear_rip`).
    fn linear_rip(&self) -> u64;
    /// Reads an MSR rkvm virtualizes (`pure::msr::LIST`); `None` for others.
    fn get_msr(&self, index: u32) -> Option<u64>;
    /// Writes an MSR: false if rkvm does not virtualize it or the value is
    /// invalid (a #GP for the guest). `host`: the write comes from
    /// `KVM_SET_MSRS`, which may set state the guest cannot (EFER.LMA).
    fn set_msr(&mut self, index: u32, value: u64, host: bool) -> bool;
    /// The physical CPU this vCPU last ran on (for `fail_entry.cpu`).
    fn last_cpu(&self) -> u32;
    /// The last exit as the hardware reported it: exit code and the two
    /// exit information words (for the exit trace).
    fn raw_exit(&self) -> (u64, u64, u64);
}

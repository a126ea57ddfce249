// SPDX-License-Identifier: GPL-2.0

//! The interface between the generic vCPU (`vcpu/`, which speaks the KVM
//! ABI) and a hardware backend (`svm/` or `vmx/`).
//!
//! A backend owns the hardware state of one vCPU (VMCB or VMCS, guest GPRs,
//! FPU), enters guest mode, and reports each exit as an [`Exit`] in terms
//! that do not depend on the vendor. What to do with an exit (return it to
//! userspace, emulate it, map memory) is decided above, once for all backends.

use crate::{
    abi::uapi,
    ffi::Gprs,
    guest_state::{
        DebugRegs,
        GuestFpu, //
    },
    mmu::Entry,
    pure::{
        decode::PortIo,
        msr,
        paging::GuestPhys,
        shadow::GuestPaging,
        x86::efer, //
    },
    sys, //
};

/// A segment register, for [`ArchVcpu::segment`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegReg {
    Cs,
    Ds,
    Es,
    Fs,
    Gs,
    Ss,
    Tr,
    Ldt,
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
    /// changed since it was prepared (`mmu::Entry::enter_guest_mode`).
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
    pub(crate) const RSP: u8 = 4;
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
    /// interrupts off, just before the entry, `entry.enter_guest_mode()` must
    /// succeed and its guard live until the exit (else `Exit::Cancelled`).
    fn run(&mut self, entry: Entry<'_>) -> Exit;
    /// Puts the vCPU in its RESET state.
    fn reset(&mut self);

    /// The guest's GPRs, as of the last exit or as set since.
    fn gprs(&self) -> &Gprs;
    /// The same, to change before the next entry.
    fn gprs_mut(&mut self) -> &mut Gprs;
    /// RFLAGS.
    fn rflags(&self) -> u64;
    /// Sets RIP and RFLAGS as `KVM_SET_REGS` does: nothing else changes
    /// (unlike [`ArchVcpu::set_rip`], which ends an interrupt shadow).
    fn load_rip_rflags(&mut self, rip: u64, rflags: u64);

    /// `KVM_GET_REGS`: the same for both backends, from the GPR array.
    fn regs(&self) -> uapi::kvm_regs {
        let r = &self.gprs().regs;
        uapi::kvm_regs {
            rax: r[0],
            rcx: r[1],
            rdx: r[2],
            rbx: r[3],
            rsp: r[4],
            rbp: r[5],
            rsi: r[6],
            rdi: r[7],
            r8: r[8],
            r9: r[9],
            r10: r[10],
            r11: r[11],
            r12: r[12],
            r13: r[13],
            r14: r[14],
            r15: r[15],
            rip: self.rip(),
            rflags: self.rflags(),
        }
    }
    /// `KVM_SET_REGS` (RFLAGS' fixed bit 1 set, as the processor keeps it).
    fn set_regs(&mut self, k: &uapi::kvm_regs) {
        self.gprs_mut().regs = [
            k.rax, k.rcx, k.rdx, k.rbx, k.rsp, k.rbp, k.rsi, k.rdi, k.r8, k.r9, k.r10, k.r11,
            k.r12, k.r13, k.r14, k.r15,
        ];
        self.load_rip_rflags(k.rip, k.rflags);
    }
    /// A segment register, in `struct kvm_segment`'s terms.
    fn segment(&self, seg: SegReg) -> uapi::kvm_segment;
    /// Sets a segment register from `struct kvm_segment` (already validated).
    fn set_segment(&mut self, seg: SegReg, value: &uapi::kvm_segment);
    /// The GDTR (`gdt`) or IDTR: base and limit.
    fn dtable(&self, gdt: bool) -> uapi::kvm_dtable;
    /// Sets the GDTR (`gdt`) or IDTR.
    fn set_dtable(&mut self, gdt: bool, value: &uapi::kvm_dtable);
    /// CR2.
    fn cr2(&self) -> u64;
    /// `IA32_APIC_BASE`.
    fn apic_base(&self) -> u64;
    /// Sets `IA32_APIC_BASE` (already validated).
    fn set_apic_base(&mut self, value: u64);

    /// `KVM_GET_SREGS`: the same for both backends, from their state.
    fn sregs(&self) -> uapi::kvm_sregs {
        let p = self.paging();
        uapi::kvm_sregs {
            cs: self.segment(SegReg::Cs),
            ds: self.segment(SegReg::Ds),
            es: self.segment(SegReg::Es),
            fs: self.segment(SegReg::Fs),
            gs: self.segment(SegReg::Gs),
            ss: self.segment(SegReg::Ss),
            tr: self.segment(SegReg::Tr),
            ldt: self.segment(SegReg::Ldt),
            gdt: self.dtable(true),
            idt: self.dtable(false),
            cr0: p.cr0,
            cr2: self.cr2(),
            cr3: p.cr3,
            cr4: p.cr4,
            cr8: self.cr8(),
            efer: p.efer,
            apic_base: self.apic_base(),
            interrupt_bitmap: [0; 4],
        }
    }
    /// `KVM_SET_SREGS` of state already validated.
    fn set_sregs(&mut self, k: &uapi::kvm_sregs) {
        for (seg, value) in [
            (SegReg::Cs, &k.cs),
            (SegReg::Ds, &k.ds),
            (SegReg::Es, &k.es),
            (SegReg::Fs, &k.fs),
            (SegReg::Gs, &k.gs),
            (SegReg::Ss, &k.ss),
            (SegReg::Tr, &k.tr),
            (SegReg::Ldt, &k.ldt),
        ] {
            self.set_segment(seg, value);
        }
        self.set_dtable(true, &k.gdt);
        self.set_dtable(false, &k.idt);
        self.set_cr2(k.cr2);
        self.set_cr8(k.cr8);
        self.set_apic_base(k.apic_base);
        self.set_paging(GuestPaging {
            cr0: k.cr0,
            cr3: k.cr3,
            cr4: k.cr4,
            efer: k.efer,
        });
    }

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
    fn gpr(&self, index: u8) -> u64 {
        self.gprs().get(index)
    }
    /// Sets general-purpose register `index`.
    fn set_gpr(&mut self, index: u8, value: u64) {
        self.gprs_mut().set(index, value);
    }
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
    /// The TSC offset: the guest's TSC is the host's plus this.
    fn tsc_offset(&self) -> u64;
    /// Sets the TSC offset.
    fn set_tsc_offset(&mut self, offset: u64);
    /// One of the MSRs the backend keeps in its state
    /// (`msr::backend_write` lists them); `None` for others.
    fn stored_msr(&self, index: u32) -> Option<u64>;
    /// Stores one of those MSRs, `value` already checked and masked by
    /// `msr::backend_write`; false for an MSR it does not keep.
    fn store_msr(&mut self, index: u32, value: u64) -> bool;

    /// Reads an MSR the backends virtualize (part of `pure::msr::LIST`);
    /// `None` for others. The same for both backends.
    fn get_msr(&self, index: u32) -> Option<u64> {
        match index {
            msr::TSC => Some(sys::rdtsc().wrapping_add(self.tsc_offset())),
            msr::APIC_BASE => Some(self.apic_base()),
            msr::EFER => Some(self.paging().efer),
            _ => self.stored_msr(index),
        }
    }
    /// Writes an MSR: false if the backends do not virtualize it or the
    /// value is invalid (a #GP for the guest). `host`: the write comes from
    /// `KVM_SET_MSRS`, which may set state the guest cannot (EFER.LMA).
    /// The same rules for both backends (`msr::backend_write`).
    fn set_msr(&mut self, index: u32, value: u64, host: bool) -> bool {
        match index {
            msr::TSC => self.set_tsc_offset(value.wrapping_sub(sys::rdtsc())),
            msr::EFER => {
                let p = self.paging();
                let next = if host {
                    (value & !efer::SUPPORTED == 0).then_some(GuestPaging { efer: value, ..p })
                } else {
                    p.write_efer(value)
                };
                match next {
                    Some(next) => self.set_paging(next),
                    None => return false,
                }
            }
            _ => match msr::backend_write(index, value) {
                Some(value) if index == msr::APIC_BASE => self.set_apic_base(value),
                Some(value) => return self.store_msr(index, value),
                None => return false,
            },
        }
        true
    }
    /// The physical CPU this vCPU last ran on (for `fail_entry.cpu`).
    fn last_cpu(&self) -> u32;
    /// The last exit as the hardware reported it: exit code and the two
    /// exit information words (for the exit trace).
    fn raw_exit(&self) -> (u64, u64, u64);
}

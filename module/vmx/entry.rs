// SPDX-License-Identifier: GPL-2.0

//! Entering guest mode: one run with interrupts off (see the module
//! documentation of `vmx`), the VMWRITEs of the controls, the host state
//! and the guest state, and the VMLAUNCH.

use kernel::prelude::*;

use crate::{
    backend::{
        gpr,
        ArchVcpu, //
    },
    ffi::{
        rkvm_vmx_host_restore,
        rkvm_vmx_host_save,
        rkvm_vmx_vmlaunch,
        VmxHostState as HostState, //
    },
    guest_state,
    mmu::Entry,
    pure::{
        debug::{
            BP_VECTOR,
            DB_VECTOR, //
        },
        msr,
        paging::HostPhys,
        vmcs::{
            self,
            field,
            reason,
            IntrInfo,
            Seg,
            Segment,
            INTERRUPTIBILITY_STI_MOVSS,
            PENDING_DBG_BS, //
        },
        x86::{
            self,
            efer,
            vector, //
        }, //
    },
    sys::{
        self,
        FpuGuard, //
    }, //
};

use super::{
    ops::{
        self,
        OpError,
        RootOperation, //
    },
    EntryError,
    VmxVcpu,
    RFLAGS_IOPL,
    RFLAGS_VM,
    SWITCHED_MSRS, //
};

impl VmxVcpu {
    /// One run, with interrupts off: see the module documentation.
    pub(super) fn enter(&mut self, entry: Entry<'_>, fpu: &FpuGuard) -> Result<(), EntryError> {
        let (root, tlb_epoch) = (entry.root, entry.tlb_epoch);
        let Some(_in_guest) = entry.enter_guest_mode() else {
            return Err(EntryError::Cancelled);
        };
        let cpu = sys::cpu_id();
        self.cpu = cpu as u32;
        let mut host = HostState::default();
        // SAFETY: fills `host` (a `#[repr(C)]` mirror of the C struct) with
        // this CPU's state; interrupts are off.
        unsafe { rkvm_vmx_host_save(&mut host) };
        let debugctl = ops::host_msr(msr::DEBUGCTL)?;
        let dr7 = read_dr7();

        // SAFETY: interrupts are off until `root_op` is dropped at the end
        // of this function; the VMXON region belongs to this vCPU, which
        // runs on one CPU at a time.
        let root_op = unsafe { RootOperation::enter(self.vmxon.phys())? };
        // SAFETY: the VMCS region belongs to this vCPU and lives as long as
        // `self`, which is borrowed for the whole run.
        let vmcs = unsafe { root_op.load(self.vmcs.phys())? };
        let c = self.controls;
        // With shadow paging the root is CR3's, and without VPIDs each
        // entry flushes the guest's translations.
        let eptp = if self.shadow {
            0
        } else {
            vmcs::ept_pointer(root.0)
        };
        if !self.shadow && self.flushed != Some((cpu, tlb_epoch)) {
            vmcs.invept(eptp, c.invept_single);
            self.flushed = Some((cpu, tlb_epoch));
        }
        if self.written_eptp != Some(eptp) {
            self.write_fixed_controls(&vmcs, eptp);
            self.cold_dirty = true;
        }
        let v86 = self.in_v86();
        if v86 != self.v86 {
            self.v86 = v86;
            self.cold_dirty = true;
        }
        self.write_controls(&vmcs);
        if self.written_host != Some((cpu, host)) {
            write_host(&vmcs, &host)?;
        }
        self.write_guest(&vmcs, root);
        if let Err(f) = vmcs.writes_ok() {
            // Write everything again next time.
            self.written_eptp = None;
            self.written_host = None;
            return Err(EntryError::Write(f.0));
        }
        self.written_eptp = Some(eptp);
        self.written_host = Some((cpu, host));
        self.cold_dirty = false;

        // The SYSCALL MSRs (where the guest's differ from the host's) and
        // KERNEL_GS_BASE, which SWAPGS in the guest changes without an
        // exit; the others change only by WRMSR, which exits.
        let host_msrs = self.caps.host_syscall_msrs;
        for ((index, host_value), guest_value) in
            SWITCHED_MSRS.iter().zip(host_msrs).zip(self.state.msrs)
        {
            if guest_value != host_value {
                sys::wrmsr_or_warn(*index, guest_value);
            }
        }
        sys::wrmsr_or_warn(msr::KERNEL_GS_BASE, self.state.kernel_gs_base);
        self.fx.restore(fpu);
        let gprs = &mut self.gprs;
        let cr2 = &mut self.cr2;
        let launched = guest_state::load_armed(&self.debug.armed(), || {
            // SAFETY: interrupts are off until after the exit and the read
            // of CR2 below.
            unsafe { ops::write_cr2(*cr2) };
            // SAFETY: in VMX root operation with this vCPU's VMCS current
            // and fully written; `gprs` is ours; interrupts are off and the
            // FPU is the guest's for the duration.
            let launched = unsafe { rkvm_vmx_vmlaunch(gprs) };
            *cr2 = ops::read_cr2();
            launched
        });
        self.fx.save(fpu);
        self.state.kernel_gs_base =
            sys::rdmsr_or_warn(msr::KERNEL_GS_BASE, self.state.kernel_gs_base);
        for ((index, host_value), guest_value) in
            SWITCHED_MSRS.iter().zip(host_msrs).zip(self.state.msrs)
        {
            if guest_value != host_value {
                sys::wrmsr_or_warn(*index, host_value);
            }
        }
        let result = match launched {
            0 => {
                self.read_exit(&vmcs);
                Ok(())
            }
            1 => Err(EntryError::Launch(
                vmcs.read(field::VM_INSTRUCTION_ERROR) as u32
            )),
            _ => Err(EntryError::Write(field::HOST_RSP.0)),
        };
        drop(vmcs);
        drop(root_op);
        // SAFETY: puts back what `rkvm_vmx_host_save` read, on the same CPU.
        unsafe { rkvm_vmx_host_restore(&host) };
        if debugctl != 0 {
            sys::wrmsr_or_warn(msr::DEBUGCTL, debugctl);
        }
        if dr7 != x86::RESET_DR7 {
            write_dr7(dr7);
        }
        // An NMI that arrived in guest mode ended it and is still the
        // host's: deliver it as KVM once did, through the NMI vector.
        if result.is_ok() && self.exit.reason as u16 == reason::EXCEPTION_NMI {
            if IntrInfo(self.exit.intr_info).kind() == IntrInfo::TYPE_NMI {
                // SAFETY: enters the kernel's NMI handler as an NMI would;
                // interrupts are off, as in NMI context.
                unsafe { core::arch::asm!("int 2") };
            }
        }
        result
    }

    /// The controls that stay the same for the vCPU's life.
    pub(super) fn write_fixed_controls(&self, v: &ops::Current<'_>, eptp: u64) {
        let c = self.controls;
        v.write(field::PIN_CONTROLS, c.pin.into());
        v.write(field::PROC_CONTROLS2, c.proc2.into());
        v.write(field::EXIT_CONTROLS, c.exit.into());
        v.write(field::CR3_TARGET_COUNT, 0);
        v.write(field::EXIT_MSR_STORE_COUNT, 0);
        v.write(field::EXIT_MSR_LOAD_COUNT, 0);
        v.write(field::ENTRY_MSR_LOAD_COUNT, 0);
        v.write(field::CR0_MASK, c.cr0_host_owned);
        v.write(field::CR4_MASK, c.cr4_host_owned);
        if self.shadow {
            // Every #PF the exception bitmap asks for exits.
            v.write(field::PF_ERROR_CODE_MASK, 0);
            v.write(field::PF_ERROR_CODE_MATCH, 0);
        } else {
            v.write(field::EPT_POINTER, eptp);
        }
        if c.vpid {
            v.write(field::VPID, self.vpid.0.into());
        }
        v.write(field::VMCS_LINK_POINTER, u64::MAX);
    }

    /// The controls that change from one entry to the next.
    pub(super) fn write_controls(&self, v: &ops::Current<'_>) {
        let c = self.controls;
        let s = &self.state;
        let window = if self.irq_window {
            vmcs::proc::INTR_WINDOW_EXITING
        } else {
            0
        } | if self.nmi_window {
            vmcs::proc::NMI_WINDOW_EXITING
        } else {
            0
        };
        let ia32e = if self.hw_efer() & efer::LMA != 0 {
            vmcs::entry_ctl::IA32E_MODE
        } else {
            0
        };
        v.write(field::PROC_CONTROLS, (c.proc | window).into());
        v.write(field::ENTRY_CONTROLS, (c.entry | ia32e).into());
        // Shadow paging sees every page fault; virtual-8086 mode every
        // exception (the processor would deliver them through the IDT).
        let exceptions = if self.v86 {
            u32::MAX
        } else if self.shadow {
            1 << vector::PF
        } else {
            0
        };
        // Every #DB, as KVM: the guest's DR6 is emulated, and a #DB the
        // debugger did not ask for is given to the guest with it.
        let bp = if self.debug.guest_debug().sw_bp {
            1 << BP_VECTOR
        } else {
            0
        };
        v.write(
            field::EXCEPTION_BITMAP,
            (exceptions | 1 << DB_VECTOR | bp).into(),
        );
        v.write(field::CR0_READ_SHADOW, s.cr0);
        v.write(field::CR4_READ_SHADOW, s.cr4);
        v.write(field::TSC_OFFSET, s.tsc_offset);
        if let Some(ticks) = self.caps.preemption_timer_ticks {
            v.write(field::PREEMPTION_TIMER_VALUE, ticks);
        }
        let (info, error, len) = self.event;
        v.write(field::ENTRY_INTR_INFO, info.0.into());
        v.write(field::ENTRY_EXCEPTION_ERROR_CODE, error.into());
        v.write(field::ENTRY_INSTRUCTION_LEN, len.into());
    }

    /// The guest state: what the guest changes itself (and the emulator
    /// after an exit) every time, the rest when rkvm changed it.
    pub(super) fn write_guest(&mut self, v: &ops::Current<'_>, root: HostPhys) {
        let c = self.controls;
        let s = &self.state;
        if self.shadow {
            // Paging always on; protection too (virtual-8086 mode in real
            // mode); CR3 the shadow table's.
            let p = self.paging();
            v.write(field::GUEST_CR0, p.hw_cr0() | x86::cr0::PE | c.cr0_fixed1);
            v.write(field::GUEST_CR3, root.0);
            v.write(field::GUEST_CR4, p.hw_cr4() | c.cr4_fixed1);
        } else {
            v.write(field::GUEST_CR0, s.cr0 | c.cr0_fixed1);
            v.write(field::GUEST_CR3, s.cr3);
            v.write(field::GUEST_CR4, s.cr4 | c.cr4_fixed1);
        }
        v.write(field::GUEST_EFER, self.hw_efer());
        v.write(field::GUEST_RSP, self.gprs.get(gpr::RSP));
        v.write(field::GUEST_RIP, s.rip);
        let v86_flags = if self.v86 { RFLAGS_VM | RFLAGS_IOPL } else { 0 };
        v.write(field::GUEST_RFLAGS, s.rflags | v86_flags);
        // Single-stepping over an instruction that blocks interrupts: the
        // entry checks want the pending single step recorded.
        let mut pending = s.pending_dbg;
        if s.rflags & x86::RFLAGS_TF != 0 && s.interruptibility & INTERRUPTIBILITY_STI_MOVSS != 0 {
            pending |= PENDING_DBG_BS;
        }
        v.write(field::GUEST_PENDING_DBG, pending);
        v.write(field::GUEST_INTERRUPTIBILITY, s.interruptibility.into());
        v.write(field::GUEST_DR7, self.debug.armed().dr7);
        if !self.cold_dirty {
            return;
        }
        let segs = self.hw_segments();
        for (seg, g) in Seg::ALL.into_iter().zip(segs) {
            v.write(seg.selector(), g.selector.into());
            v.write(seg.base(), g.base);
            v.write(seg.limit(), g.limit.into());
            v.write(seg.access_rights(), g.ar.into());
        }
        v.write(field::GUEST_GDTR_BASE, s.gdtr.0);
        v.write(field::GUEST_GDTR_LIMIT, s.gdtr.1.into());
        v.write(field::GUEST_IDTR_BASE, s.idtr.0);
        // In virtual-8086 mode an IDT of limit 0: INT n raises #GP.
        v.write(
            field::GUEST_IDTR_LIMIT,
            if self.v86 { 0 } else { s.idtr.1.into() },
        );
        v.write(field::GUEST_DEBUGCTL, 0);
        v.write(field::GUEST_SYSENTER_CS, s.sysenter[0]);
        v.write(field::GUEST_SYSENTER_ESP, s.sysenter[1]);
        v.write(field::GUEST_SYSENTER_EIP, s.sysenter[2]);
        v.write(field::GUEST_PAT, s.pat);
        v.write(field::GUEST_ACTIVITY_STATE, 0);
        // Without EPT the processor loads the PDPTEs from CR3 (the shadow
        // table's) itself.
        if !self.shadow {
            for (i, pdpte) in s.pdptes.iter().enumerate() {
                v.write(field::guest_pdpte(i as u32), *pdpte);
            }
        }
        self.written_segs = segs;
    }

    /// A real-mode guest with shadow paging, which runs in virtual-8086 mode.
    pub(super) fn in_v86(&self) -> bool {
        self.shadow && self.state.cr0 & x86::cr0::PE == 0
    }

    /// EFER for the processor.
    pub(super) fn hw_efer(&self) -> u64 {
        if self.shadow {
            self.paging().hw_efer()
        } else {
            self.state.efer
        }
    }

    /// The segments to enter with (see `written_segs`).
    pub(super) fn hw_segments(&self) -> [Segment; 8] {
        let mut segs = self.state.segs;
        if self.v86 {
            for (seg, s) in Seg::ALL.into_iter().zip(segs.iter_mut()) {
                *s = match seg {
                    // `run` refused the entry if it is `None`.
                    Seg::Ldtr => *s,
                    Seg::Tr => vmcs::V86_TR,
                    _ => vmcs::v86_segment(s).unwrap_or(*s),
                };
            }
        } else if self.shadow && self.state.rflags & RFLAGS_VM == 0 {
            // (A protected-mode guest's own virtual-8086 task has the
            // segments that mode wants already.)
            vmcs::protected_mode_fixup(&mut segs);
        }
        segs
    }
}

/// The host fields, from the state read on this CPU.
fn write_host(v: &ops::Current<'_>, h: &HostState) -> Result<(), OpError> {
    let (cs, ss, tr) = host_selectors();
    // A selector with RPL or TI bits set may not go in a host field: 0
    // instead, and `rkvm_vmx_host_restore` reloads the real one.
    let plain = |sel: u16| if sel & 7 == 0 { sel } else { 0 };
    v.write(field::HOST_CR0, h.cr0);
    v.write(field::HOST_CR3, h.cr3);
    v.write(field::HOST_CR4, ops::read_cr4());
    v.write(field::HOST_ES_SELECTOR, 0);
    v.write(field::HOST_DS_SELECTOR, 0);
    v.write(field::HOST_CS_SELECTOR, cs.into());
    v.write(field::HOST_SS_SELECTOR, ss.into());
    v.write(field::HOST_FS_SELECTOR, plain(h.fs).into());
    v.write(field::HOST_GS_SELECTOR, plain(h.gs).into());
    v.write(field::HOST_TR_SELECTOR, tr.into());
    v.write(field::HOST_FS_BASE, h.fs_base);
    v.write(field::HOST_GS_BASE, h.gs_base);
    v.write(field::HOST_TR_BASE, h.tr_base);
    v.write(field::HOST_GDTR_BASE, h.gdt_base);
    v.write(field::HOST_IDTR_BASE, h.idt_base);
    v.write(field::HOST_SYSENTER_CS, ops::host_msr(msr::SYSENTER_CS)?);
    v.write(field::HOST_SYSENTER_ESP, ops::host_msr(msr::SYSENTER_ESP)?);
    v.write(field::HOST_SYSENTER_EIP, ops::host_msr(msr::SYSENTER_EIP)?);
    v.write(field::HOST_PAT, ops::host_msr(msr::PAT)?);
    v.write(field::HOST_EFER, ops::host_msr(msr::EFER)?);
    Ok(())
}

/// CS, SS and TR of the host, now.
fn host_selectors() -> (u16, u16, u16) {
    let (cs, ss, tr): (u16, u16, u16);
    // SAFETY: reading segment selectors has no side effect.
    unsafe {
        core::arch::asm!("mov {0:x}, cs", "mov {1:x}, ss", "str {2:x}",
            out(reg) cs, out(reg) ss, out(reg) tr, options(nomem, nostack, preserves_flags));
    }
    (cs, ss, tr)
}

fn read_dr7() -> u64 {
    let dr7: u64;
    // SAFETY: reading DR7 has no side effect (CPL 0).
    unsafe {
        core::arch::asm!("mov {}, dr7", out(reg) dr7, options(nomem, nostack, preserves_flags))
    };
    dr7
}

/// Puts the host's DR7 back (a VM exit sets it to 0x400).
fn write_dr7(value: u64) {
    // SAFETY: restores the value the host had before the run (its hardware
    // breakpoints), read by `read_dr7` on this CPU with interrupts off.
    unsafe {
        core::arch::asm!("mov dr7, {}", in(reg) value, options(nomem, nostack, preserves_flags))
    };
}

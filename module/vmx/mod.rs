// SPDX-License-Identifier: GPL-2.0

//! The Intel VMX backend: one VMCS per vCPU, EPT, unrestricted guest.
//!
//! # One VMLAUNCH per entry
//!
//! rkvm keeps the guest's state in [`VmxVcpu`] itself, not in the VMCS, and
//! each run is self-contained, with interrupts off:
//!
//! 1. CR4.VMXE and VMXON (`ops::RootOperation`);
//! 2. VMCLEAR and VMPTRLD of the vCPU's VMCS (`ops::Current`);
//! 3. VMWRITE of what changed since the last entry (the VMCS region keeps
//!    the rest across VMCLEAR and VMPTRLD): the controls that change, the
//!    host fields when the CPU or the host state did, the guest state the
//!    guest or the emulator changes, and the rest when rkvm changed it;
//! 4. VMLAUNCH (`vmenter.S`), and after the exit VMREAD of the exit
//!    information and of the guest state;
//! 5. VMCLEAR, VMXOFF, CR4.VMXE cleared, host state the exit did not
//!    restore put back.
//!
//! So no VMCS is ever active on a CPU while its vCPU is outside a run, and
//! no CPU is in VMX operation while rkvm is not running a guest on it:
//! moving a vCPU to another CPU, freeing it, unloading the module or
//! onlining a CPU need no cross-CPU calls, and `KVM_GET_REGS` and friends
//! read plain memory. The price is a VMXON, a full VMCS load and a VMCLEAR
//! per entry, where KVM resumes a VMCS that stays loaded. It also follows
//! from Linux 7.x: the kernel's CR4 shadow, and its own VMXON (which KVM
//! uses), are exported to KVM's modules only, so rkvm may only have
//! CR4.VMXE set while no kernel code can look at CR4.
//!
//! # Shadow paging
//!
//! Without EPT there is no unrestricted guest, so the processor runs the
//! guest with paging and protection on whatever the guest believes
//! (`Controls::for_shadow_paging`): CR0, CR3 and CR4 are the shadow
//! table's (`pure::shadow::GuestPaging`), the guest's own are in the read
//! shadows and in [`GuestState`]. A real-mode guest runs in virtual-8086
//! mode, as kvm_intel did before unrestricted guest, but with nothing in
//! guest memory: its segments become virtual-8086 ones
//! (`pure::vmcs::v86_segment`), IOPL is 3 so that CLI, STI, PUSHF, POPF and
//! IRET run unhindered, and TR is a TSS of limit 0 and the IDT limit is 0,
//! so that IN, OUT and INT n raise #GP. Every exception is intercepted;
//! rkvm emulates the instruction behind a #GP (I/O, HLT, INT n, LGDT,
//! control registers, MSRs: `pure::decode::decode_v86`) and delivers
//! exceptions and interrupts through the guest's interrupt vector table
//! (`ArchVcpu::take_real_mode_event`). A real-mode state that
//! virtual-8086 mode cannot hold (CS after RESET, "unreal" segments) is
//! refused with an internal error, where kvm_intel would emulate.

mod hw;
mod ops;

pub(crate) use hw::{
    init,
    Caps,
    HardwareRef, //
};

use kernel::{
    prelude::*,
    sync::Arc, //
};

use crate::{
    abi::uapi,
    backend::{
        gpr,
        ArchVcpu,
        Event,
        Exit,
        Injection,
        SegReg,
        SHADOW_MOV_SS,
        SHADOW_STI, //
    },
    guest_state::{
        self,
        DebugRegs,
        GuestFpu, //
    },
    mmu::Entry,
    pure::{
        debug::{
            BP_VECTOR,
            DB_VECTOR, //
        },
        decode::{
            Mode,
            PortIo, //
        },
        msr,
        paging::{
            GuestPhys,
            HostPhys, //
        },
        shadow::GuestPaging,
        vmcs::{
            self,
            ar,
            field,
            reason,
            Controls,
            IntrInfo,
            IoQualification,
            Seg,
            Segment,
            INTERRUPTIBILITY_MOV_SS,
            INTERRUPTIBILITY_NMI,
            INTERRUPTIBILITY_STI,
            INTERRUPTIBILITY_STI_MOVSS,
            PENDING_DBG_BS, //
        },
        walk::Paging,
        x86::{
            self,
            efer,
            vector,
            SegAttrib, //
        }, //
    },
    sys::{
        self,
        FpuGuard,
        PageBox, //
    }, //
};

use ops::{
    OpError,
    Region,
    RootOperation, //
};

use crate::ffi::{
    rkvm_vmx_host_restore,
    rkvm_vmx_host_save,
    rkvm_vmx_vmlaunch,
    Gprs,
    VmxHostState as HostState, //
};

/// MSRs the VMCS does not switch: the SYSCALL ones, then KERNEL_GS_BASE
/// (the host's is put back by `rkvm_vmx_host_restore`). The guest's are
/// `GuestState::msrs`, in this order.
const SWITCHED_MSRS: [u32; 4] = [msr::STAR, msr::LSTAR, msr::CSTAR, msr::SFMASK];

/// RFLAGS.VM (virtual-8086 mode) and RFLAGS.IOPL.
const RFLAGS_VM: u64 = 1 << 17;
const RFLAGS_IOPL: u64 = 3 << 12;
/// Raw exit codes of this backend carry this bit, so traces and
/// statistics tell them from SVM's (`pure::trace`).
pub(crate) const RAW_EXIT_TAG: u64 = crate::pure::trace::VMX_EXIT_TAG;

/// The guest state the VMCS holds, between runs.
#[derive(Clone, Copy, Default)]
struct GuestState {
    segs: [Segment; 8],
    gdtr: (u64, u32),
    idtr: (u64, u32),
    /// CR0 and CR4 as the guest sees them (the processor's have the bits
    /// VMX forces).
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
    rip: u64,
    rflags: u64,
    pat: u64,
    sysenter: [u64; 3],
    interruptibility: u32,
    pending_dbg: u64,
    pdptes: [u64; 4],
    /// SWITCHED_MSRS' guest values.
    msrs: [u64; 4],
    /// KERNEL_GS_BASE.
    kernel_gs_base: u64,
    tsc_offset: u64,
    /// CR8 (the task priority), with no local APIC to act on it.
    tpr: u64,
}

impl GuestState {
    fn seg(&self, s: Seg) -> &Segment {
        &self.segs[s as usize]
    }

    fn seg_mut(&mut self, s: Seg) -> &mut Segment {
        &mut self.segs[s as usize]
    }
}

/// The exit information of the last exit.
#[derive(Clone, Copy, Default)]
struct ExitInfo {
    reason: u32,
    qualification: u64,
    intr_info: u32,
    intr_error: u32,
    idt_info: u32,
    idt_error: u32,
    insn_len: u32,
    insn_info: u32,
    gpa: u64,
}

/// Why a run did not reach guest mode.
enum EntryError {
    Op(OpError),
    /// A VMWRITE failed (a field the processor lacks).
    Write(u32),
    /// VMLAUNCH failed: the VM-instruction error.
    Launch(u32),
    /// The VM's mappings changed since the entry was prepared.
    Cancelled,
}

impl From<OpError> for EntryError {
    fn from(e: OpError) -> Self {
        EntryError::Op(e)
    }
}

pub(crate) struct VmxVcpu {
    vmxon: PageBox<Region>,
    vmcs: PageBox<Region>,
    fx: KBox<GuestFpu>,
    caps: Arc<Caps>,
    vpid: hw::Vpid,
    /// The controls: `caps.controls`, or with shadow paging their
    /// `for_shadow_paging` form.
    controls: Controls,
    /// Shadow paging rather than EPT.
    shadow: bool,
    /// The last entry was to virtual-8086 mode (a real-mode guest with
    /// shadow paging).
    v86: bool,
    /// The segments the VMCS holds (as rkvm wrote them: the guest's, or
    /// what stands for them in virtual-8086 mode or fixed for VM entry; or
    /// as the guest left them): one that reads back the same after an exit
    /// was not changed by the guest.
    written_segs: [Segment; 8],
    gprs: Gprs,
    /// The guest's CR2, which the VMCS does not hold: loaded just before
    /// each entry and read back just after the exit.
    cr2: u64,
    state: GuestState,
    exit: ExitInfo,
    /// The event to inject at the next entry (interruption information,
    /// error code, instruction length).
    event: (IntrInfo, u32, u32),
    irq_window: bool,
    /// NMI-window exiting is on (an NMI waits).
    nmi_window: bool,
    tf_added: bool,
    /// The debug registers, the guest's and the debugger's.
    debug: DebugRegs,
    apic_base: u64,
    bsp: bool,
    cpu: u32,
    /// The CPU and EPT epoch of the last INVEPT: translations cached on
    /// another CPU, or before a mapping changed, must not be used.
    flushed: Option<(usize, u64)>,
    /// What the VMCS region already holds (its contents survive VMCLEAR,
    /// which writes them back to memory, and come back with VMPTRLD): the
    /// EPT pointer the fixed controls were written with (`None`: nothing
    /// of rkvm's yet), and the CPU and host state of the host fields.
    /// Only what changed is written at the next entry.
    written_eptp: Option<u64>,
    written_host: Option<(usize, HostState)>,
    /// Guest state that only rkvm changes (segments, descriptor tables,
    /// SYSENTER, PAT, PDPTEs: the guest's own changes come back with each
    /// exit) changed since it was written.
    cold_dirty: bool,
}

/// A zeroed 4 KiB region with the revision identifier in its first word.
fn region(revision: u32) -> Result<PageBox<Region>> {
    let mut r = PageBox::<Region>::new()?;
    r.0[0] = revision;
    Ok(r)
}

impl VmxVcpu {
    /// A vCPU with EPT, or with `shadow` paging.
    pub(crate) fn new(bsp: bool, caps: Arc<Caps>, shadow: bool) -> Result<KBox<Self>> {
        let controls = if shadow {
            caps.controls.for_shadow_paging()
        } else {
            caps.controls
        };
        let mut vcpu = VmxVcpu {
            vmxon: region(caps.revision)?,
            vmcs: region(caps.revision)?,
            fx: GuestFpu::new()?,
            vpid: if controls.vpid {
                hw::Vpid::alloc()
            } else {
                hw::Vpid(0)
            },
            controls,
            shadow,
            v86: false,
            written_segs: [Segment::default(); 8],
            caps,
            gprs: Gprs::default(),
            cr2: 0,
            state: GuestState::default(),
            exit: ExitInfo::default(),
            event: (IntrInfo(0), 0, 0),
            irq_window: false,
            nmi_window: false,
            tf_added: false,
            debug: DebugRegs::RESET,
            apic_base: 0,
            bsp,
            cpu: 0,
            flushed: None,
            written_eptp: None,
            written_host: None,
            cold_dirty: true,
        };
        vcpu.reset();
        Ok(KBox::new(vcpu, GFP_KERNEL)?)
    }

    /// One run, with interrupts off: see the module documentation.
    fn enter(&mut self, entry: Entry<'_>, fpu: &FpuGuard) -> Result<(), EntryError> {
        let Entry {
            root,
            tlb_epoch,
            gate,
            vm_epoch,
        } = entry;
        let Some(_in_guest) = gate.enter(vm_epoch) else {
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
    fn write_fixed_controls(&self, v: &ops::Current<'_>, eptp: u64) {
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
    fn write_controls(&self, v: &ops::Current<'_>) {
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
    fn write_guest(&mut self, v: &ops::Current<'_>, root: HostPhys) {
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
    fn in_v86(&self) -> bool {
        self.shadow && self.state.cr0 & x86::cr0::PE == 0
    }

    /// EFER for the processor.
    fn hw_efer(&self) -> u64 {
        if self.shadow {
            self.paging().hw_efer()
        } else {
            self.state.efer
        }
    }

    /// The segments to enter with (see `written_segs`).
    fn hw_segments(&self) -> [Segment; 8] {
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

    fn read_exit(&mut self, v: &ops::Current<'_>) {
        let c = self.controls;
        let reason = v.read(field::EXIT_REASON) as u32;
        // Only an exception has an error code to read.
        let exception = reason as u16 == reason::EXCEPTION_NMI;
        self.exit = ExitInfo {
            reason,
            qualification: v.read(field::EXIT_QUALIFICATION),
            intr_info: v.read(field::EXIT_INTR_INFO) as u32,
            intr_error: if exception {
                v.read(field::EXIT_INTR_ERROR_CODE) as u32
            } else {
                0
            },
            idt_info: v.read(field::IDT_VECTORING_INFO) as u32,
            idt_error: v.read(field::IDT_VECTORING_ERROR_CODE) as u32,
            insn_len: v.read(field::EXIT_INSTRUCTION_LEN) as u32,
            insn_info: v.read(field::EXIT_INSTRUCTION_INFO) as u32,
            gpa: v.read(field::GUEST_PHYSICAL_ADDRESS),
        };
        let s = &mut self.state;
        for (seg, written) in Seg::ALL.into_iter().zip(self.written_segs.iter_mut()) {
            let hw = Segment {
                selector: v.read(seg.selector()) as u16,
                base: v.read(seg.base()),
                limit: v.read(seg.limit()) as u32,
                ar: v.read(seg.access_rights()) as u32,
            };
            // What stands for the guest's segment changes only when the
            // guest loads it; in virtual-8086 mode only selector and base
            // change (the limit and attributes stay, as in real mode).
            if hw != *written {
                let view = s.seg_mut(seg);
                *view = if self.v86 {
                    Segment {
                        selector: hw.selector,
                        base: hw.base,
                        ..*view
                    }
                } else {
                    hw
                };
                *written = hw;
            }
        }
        // LGDT and LIDT exit in virtual-8086 mode (IDTR holds limit 0 there).
        if !self.v86 {
            s.gdtr = (
                v.read(field::GUEST_GDTR_BASE),
                v.read(field::GUEST_GDTR_LIMIT) as u32,
            );
            s.idtr = (
                v.read(field::GUEST_IDTR_BASE),
                v.read(field::GUEST_IDTR_LIMIT) as u32,
            );
        }
        // The guest changes the CR0 and CR4 bits it owns without an exit.
        let merge = |hw: u64, view: u64, owned: u64| (hw & !owned) | (view & owned);
        s.cr0 = merge(v.read(field::GUEST_CR0), s.cr0, c.cr0_host_owned);
        s.cr4 = merge(v.read(field::GUEST_CR4), s.cr4, c.cr4_host_owned);
        // With shadow paging CR3 and EFER are the shadow table's; the
        // guest's change only through exits.
        if !self.shadow {
            s.cr3 = v.read(field::GUEST_CR3);
            s.efer = v.read(field::GUEST_EFER);
        }
        self.gprs.set(gpr::RSP, v.read(field::GUEST_RSP));
        s.rip = v.read(field::GUEST_RIP);
        let rflags = v.read(field::GUEST_RFLAGS);
        // Virtual-8086 mode's VM and IOPL are rkvm's, not the guest's.
        s.rflags = if self.v86 {
            (rflags & !(RFLAGS_VM | RFLAGS_IOPL)) | (s.rflags & RFLAGS_IOPL)
        } else {
            rflags
        };
        s.interruptibility = v.read(field::GUEST_INTERRUPTIBILITY) as u32;
        s.pending_dbg = v.read(field::GUEST_PENDING_DBG);
        // The PDPTEs mean something in PAE paging with EPT only.
        if !self.shadow && Paging::of(s.cr0, s.cr4, s.efer) == Paging::Pae {
            for (i, pdpte) in s.pdptes.iter_mut().enumerate() {
                *pdpte = v.read(field::guest_pdpte(i as u32));
            }
        }
    }

    fn decode_exit(&mut self) -> Exit {
        let e = self.exit;
        if e.reason & reason::ENTRY_FAILURE != 0 {
            return Exit::InvalidState(u64::from(e.reason));
        }
        // An event whose delivery the exit interrupted is delivered again at
        // the next entry.
        // In virtual-8086 mode the processor delivers nothing itself: the
        // event it was delivering was an INT n, whose #GP rkvm handles.
        let idt = IntrInfo(e.idt_info);
        if idt.valid() && e.reason as u16 != reason::TRIPLE_FAULT && !self.v86 {
            let len = if idt.needs_length() { e.insn_len } else { 0 };
            self.event = (idt.reinjection(), e.idt_error, len);
        }
        let next_rip = self.state.rip.wrapping_add(u64::from(e.insn_len));
        match e.reason as u16 {
            reason::EXTERNAL_INTERRUPT | reason::PREEMPTION_TIMER => Exit::Host,
            reason::EXCEPTION_NMI => {
                let info = IntrInfo(e.intr_info);
                let error = info.has_error().then_some(e.intr_error);
                match (info.kind(), info.vector()) {
                    (IntrInfo::TYPE_NMI, _) => Exit::Host,
                    (IntrInfo::TYPE_HW_EXCEPTION, DB_VECTOR)
                        if self.debug.guest_debug().db_to_user() || !self.v86 =>
                    {
                        Exit::Debug {
                            payload: e.qualification,
                        }
                    }
                    (IntrInfo::TYPE_SW_EXCEPTION, BP_VECTOR) if self.debug.guest_debug().sw_bp => {
                        Exit::Breakpoint
                    }
                    (IntrInfo::TYPE_HW_EXCEPTION, vector::PF) if self.shadow => Exit::PageFault {
                        addr: e.qualification,
                        error: u64::from(e.intr_error),
                    },
                    (IntrInfo::TYPE_HW_EXCEPTION, vector) if self.v86 => Exit::RealModeException {
                        vector,
                        error,
                        len: 0,
                    },
                    (IntrInfo::TYPE_SW_EXCEPTION | IntrInfo::TYPE_PRIV_SW_EXCEPTION, vector)
                        if self.v86 =>
                    {
                        Exit::RealModeException {
                            vector,
                            error: None,
                            len: e.insn_len as u8,
                        }
                    }
                    _ => self.unhandled(),
                }
            }
            reason::TRIPLE_FAULT => Exit::Shutdown,
            reason::INTERRUPT_WINDOW => Exit::IrqWindow,
            reason::NMI_WINDOW => Exit::NmiWindow,
            reason::CPUID => Exit::Cpuid,
            reason::INVD | reason::WBINVD | reason::MONITOR | reason::MWAIT => Exit::Nop {
                len: e.insn_len as u8,
            },
            reason::XSETBV => Exit::Xsetbv {
                len: e.insn_len as u8,
            },
            reason::HLT => Exit::Hlt,
            reason::VMCALL => Exit::Hypercall,
            reason::CR_ACCESS => Exit::CrAccess,
            reason::INVLPG => Exit::Invlpg {
                reported: Some((e.insn_len as u8, e.qualification)),
            },
            reason::DR_ACCESS => Exit::Dr,
            reason::IO => {
                let q = IoQualification::decode(e.qualification);
                let (addr_size, segment) = if q.string && self.controls.ins_outs_info {
                    vmcs::string_io_info(e.insn_info)
                } else {
                    // Without the information: the mode's address size and
                    // DS (an OUTS with a segment override then goes wrong;
                    // every VMX processor with unrestricted guest has it).
                    (self.address_size(), 3)
                };
                let io = PortIo {
                    port: q.port,
                    input: q.input,
                    size: q.size,
                    string: q.string,
                    rep: q.rep,
                    addr_size,
                    segment,
                };
                Exit::Io { io, next_rip }
            }
            reason::RDMSR => Exit::Msr { write: false },
            reason::WRMSR => Exit::Msr { write: true },
            reason::EPT_VIOLATION => Exit::NestedFault {
                gpa: GuestPhys(e.gpa),
                write: vmcs::ept_violation_write(e.qualification),
            },
            reason::VMCLEAR..=reason::VMXON | reason::INVEPT | reason::INVVPID | reason::VMFUNC => {
                Exit::InvalidOpcode
            }
            _ => self.unhandled(),
        }
    }

    fn unhandled(&self) -> Exit {
        let (code, info1, info2) = self.raw_exit();
        Exit::Unhandled(code, info1, info2)
    }

    /// The address size of the code segment, in bytes.
    fn address_size(&self) -> u8 {
        let (cs, _) = vmcs::attributes(self.state.seg(Seg::Cs).ar);
        Mode::of(self.state.efer & efer::LMA != 0, cs.l, cs.db).address_bytes()
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

/// The VMCS segment as `struct kvm_segment`, as kvm_intel reports it: the
/// access rights decide, and an unusable segment is not present.
fn to_kvm_segment(s: &Segment) -> uapi::kvm_segment {
    let (a, unusable) = vmcs::attributes(s.ar);
    uapi::kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: a.type_,
        present: u8::from(!unusable),
        dpl: a.dpl,
        db: u8::from(a.db),
        s: u8::from(a.s),
        l: u8::from(a.l),
        g: u8::from(a.g),
        avl: u8::from(a.avl),
        unusable: u8::from(unusable),
        padding: 0,
    }
}

/// The VMCS's name for a segment register.
fn vmcs_seg(seg: SegReg) -> Seg {
    match seg {
        SegReg::Cs => Seg::Cs,
        SegReg::Ds => Seg::Ds,
        SegReg::Es => Seg::Es,
        SegReg::Fs => Seg::Fs,
        SegReg::Gs => Seg::Gs,
        SegReg::Ss => Seg::Ss,
        SegReg::Tr => Seg::Tr,
        SegReg::Ldt => Seg::Ldtr,
    }
}

/// `struct kvm_segment` as a VMCS segment. As in kvm_intel, the accessed
/// bit of a usable segment's type is set (except LDTR's): unrestricted
/// guest requires it, and some userspace leaves it clear.
fn from_kvm_segment(k: &uapi::kvm_segment, seg: Seg) -> Segment {
    let a = SegAttrib {
        type_: k.type_,
        s: k.s & 1 != 0,
        dpl: k.dpl & 3,
        present: k.present & 1 != 0,
        avl: k.avl & 1 != 0,
        l: k.l & 1 != 0,
        db: k.db & 1 != 0,
        g: k.g & 1 != 0,
    };
    let mut r = vmcs::access_rights(&a, k.unusable != 0);
    if r & ar::UNUSABLE == 0 && seg != Seg::Ldtr {
        r |= ar::ACCESSED;
    }
    Segment {
        selector: k.selector,
        base: k.base,
        limit: k.limit,
        ar: r,
    }
}

impl ArchVcpu for VmxVcpu {
    fn run(&mut self, entry: Entry<'_>) -> Exit {
        if self.in_v86() {
            let six = [Seg::Cs, Seg::Ss, Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs];
            if six
                .iter()
                .any(|&seg| vmcs::v86_segment(self.state.seg(seg)).is_none())
            {
                return Exit::RealModeUnsupported;
            }
        }
        if self.debug.guest_debug().single_step && self.state.rflags & x86::RFLAGS_TF == 0 {
            self.state.rflags |= x86::RFLAGS_TF;
            self.tf_added = true;
        }
        // Entered without blocking by NMI and without an NMI to deliver:
        // the exit cannot rightly report the blocking (only an NMI's
        // delivery sets it). Bochs 2.7 does: it never clears its own
        // virtual-NMI blocking at VM entry, so an entry with the blocking
        // (a masked NMI from KVM_SET_VCPU_EVENTS, in any VM) leaves it on
        // for every later entry on that CPU until some guest's IRET (Bochs
        // bug SF #1456, fixed after 2.7). rkvm then waited forever for an
        // NMI window (state_test's nmi, after vcpu_events, under Bochs).
        let nmi_free = self.state.interruptibility & INTERRUPTIBILITY_NMI == 0
            && !(self.event.0.valid() && self.event.0.kind() == IntrInfo::TYPE_NMI);
        let fpu = FpuGuard::begin();
        let result = fpu.guest_irqs_off(|| self.enter(entry, &fpu));
        drop(fpu);
        if result.is_ok() && nmi_free {
            self.state.interruptibility &= !INTERRUPTIBILITY_NMI;
        }
        if self.tf_added {
            self.state.rflags &= !x86::RFLAGS_TF;
            // rkvm reports each step itself (a #DB exit, or an instruction
            // it emulated): a single step left pending at another exit
            // would be reported twice. Bochs saves one at an EPT violation
            // on the fetch of the instruction to step, which has not run
            // (debug_test's single_step caught it).
            self.state.pending_dbg &= !PENDING_DBG_BS;
            self.tf_added = false;
        }
        match result {
            Ok(()) => {
                // Delivered, or recorded as IDT-vectoring information.
                self.event = (IntrInfo(0), 0, 0);
                self.decode_exit()
            }
            Err(EntryError::Cancelled) => Exit::Cancelled,
            Err(EntryError::Op(OpError::Busy)) => {
                pr_err!("VMX is in use by another hypervisor on CPU {}\n", self.cpu);
                Exit::NotEntered { detail: 0 }
            }
            Err(EntryError::Op(e)) => {
                pr_err!("VMX: {:?} failed on CPU {}\n", e, self.cpu);
                Exit::NotEntered { detail: 0 }
            }
            Err(EntryError::Write(f)) => {
                pr_err!("VMX: VMWRITE of field {:#x} failed\n", f);
                Exit::NotEntered {
                    detail: u64::from(f),
                }
            }
            // As kvm_intel: KVM_EXIT_FAIL_ENTRY with the VM-instruction error.
            Err(EntryError::Launch(error)) => {
                pr_debug!(
                    "VMLAUNCH failed: error {} ({})\n",
                    error,
                    vmcs::instruction_error_name(error)
                );
                Exit::InvalidState(u64::from(error))
            }
        }
    }

    fn reset(&mut self) {
        let seg = |selector: u16, base: u64, ar: u32| Segment {
            selector,
            base,
            limit: 0xffff,
            ar,
        };
        let data = seg(0, 0, 0x93);
        let mut s = GuestState {
            segs: [data; 8],
            cr0: x86::RESET_CR0,
            rip: x86::RESET_RIP,
            rflags: x86::RFLAGS_FIXED,
            pat: x86::RESET_PAT,
            gdtr: (0, 0xffff),
            idtr: (0, 0xffff),
            ..GuestState::default()
        };
        *s.seg_mut(Seg::Cs) = seg(0xf000, 0xffff_0000, 0x9b);
        *s.seg_mut(Seg::Ldtr) = seg(0, 0, 0x82);
        *s.seg_mut(Seg::Tr) = seg(0, 0, 0x8b);
        self.state = s;
        self.cold_dirty = true;
        self.gprs = Gprs::default();
        self.gprs.set(gpr::RDX, x86::RESET_RDX);
        self.cr2 = 0;
        self.event = (IntrInfo(0), 0, 0);
        self.irq_window = false;
        self.nmi_window = false;
        self.debug.reset();
        self.apic_base = x86::reset_apic_base(self.bsp);
        self.fx.reset();
    }

    fn gprs(&self) -> &Gprs {
        &self.gprs
    }

    fn gprs_mut(&mut self) -> &mut Gprs {
        &mut self.gprs
    }

    fn rflags(&self) -> u64 {
        self.state.rflags
    }

    fn load_rip_rflags(&mut self, rip: u64, rflags: u64) {
        self.state.rip = rip;
        self.state.rflags = rflags | x86::RFLAGS_FIXED;
    }

    fn segment(&self, seg: SegReg) -> uapi::kvm_segment {
        to_kvm_segment(self.state.seg(vmcs_seg(seg)))
    }

    fn set_segment(&mut self, seg: SegReg, value: &uapi::kvm_segment) {
        let seg = vmcs_seg(seg);
        *self.state.seg_mut(seg) = from_kvm_segment(value, seg);
        self.cold_dirty = true;
    }

    fn dtable(&self, gdt: bool) -> uapi::kvm_dtable {
        let (base, limit) = if gdt {
            self.state.gdtr
        } else {
            self.state.idtr
        };
        uapi::kvm_dtable {
            base,
            limit: limit as u16,
            padding: [0; 3],
        }
    }

    fn set_dtable(&mut self, gdt: bool, value: &uapi::kvm_dtable) {
        let table = (value.base, u32::from(value.limit));
        if gdt {
            self.state.gdtr = table;
        } else {
            self.state.idtr = table;
        }
        self.cold_dirty = true;
    }

    fn cr2(&self) -> u64 {
        self.cr2
    }

    fn apic_base(&self) -> u64 {
        self.apic_base
    }

    fn set_apic_base(&mut self, value: u64) {
        self.apic_base = value;
    }

    fn paging(&self) -> GuestPaging {
        let s = &self.state;
        GuestPaging {
            cr0: s.cr0,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
        }
    }

    fn set_paging(&mut self, p: GuestPaging) {
        let s = &mut self.state;
        s.cr0 = p.cr0;
        s.cr3 = p.cr3;
        s.cr4 = p.cr4;
        s.efer = p.efer;
    }

    fn set_cr2(&mut self, value: u64) {
        self.cr2 = value;
    }

    fn holds_pdptes(&self) -> bool {
        !self.shadow
    }

    fn set_pdptes(&mut self, pdptes: [u64; 4]) {
        self.state.pdptes = pdptes;
        self.cold_dirty = true;
    }

    fn cr8(&self) -> u64 {
        self.state.tpr
    }

    fn set_cr8(&mut self, value: u64) {
        self.state.tpr = value & 0xf;
    }

    fn take_event(&mut self) -> Option<Event> {
        let (info, _, _) = core::mem::replace(&mut self.event, (IntrInfo(0), 0, 0));
        if !info.valid() {
            return None;
        }
        Some(match info.kind() {
            IntrInfo::TYPE_EXT_INTR => Event::Interrupt(info.vector()),
            IntrInfo::TYPE_HW_EXCEPTION => Event::Exception(info.vector()),
            _ => Event::Other,
        })
    }

    fn rip(&self) -> u64 {
        self.state.rip
    }

    fn set_rip(&mut self, rip: u64) {
        self.state.rip = rip;
        // Moving past an instruction ends the interrupt shadow it made.
        self.state.interruptibility &= !INTERRUPTIBILITY_STI_MOVSS;
    }

    fn take_real_mode_event(&mut self) -> Option<(u8, u64)> {
        let (info, _, len) = self.event;
        if !self.in_v86() || !info.valid() {
            return None;
        }
        self.event = (IntrInfo(0), 0, 0);
        // An NMI delivered in software blocks NMIs as one the processor
        // delivers would: the guest's IRET, which virtual-8086 mode runs
        // natively, lifts the virtual-NMI blocking.
        if info.kind() == IntrInfo::TYPE_NMI {
            self.state.interruptibility |= INTERRUPTIBILITY_NMI;
        }
        // A fault returns to its instruction, a software interrupt past it.
        let rip = self.state.rip.wrapping_add(if info.needs_length() {
            u64::from(len)
        } else {
            0
        });
        Some((info.vector(), rip))
    }

    fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        // Real mode delivers no error code, and VM entry refuses one there.
        let error_code = error_code.filter(|_| self.state.cr0 & x86::cr0::PE != 0);
        self.event = (
            IntrInfo::exception(vector, error_code.is_some()),
            error_code.unwrap_or(0),
            0,
        );
    }

    fn inject_breakpoint(&mut self, len: u64) {
        // A software exception with the INT3's length, as KVM injects it
        // (VM-entry instruction length); with no INT3 at RIP, a hardware
        // exception returning to RIP.
        self.event = if len == 0 {
            (IntrInfo::exception(BP_VECTOR, false), 0, 0)
        } else {
            (IntrInfo::soft_exception(BP_VECTOR), 0, len as u32)
        };
    }

    fn interrupt_allowed(&self) -> bool {
        let s = &self.state;
        s.rflags & x86::RFLAGS_IF != 0
            && s.interruptibility & INTERRUPTIBILITY_STI_MOVSS == 0
            && !self.event.0.valid()
    }

    fn inject_interrupt(&mut self, vector: u8) -> bool {
        if self.event.0.valid() {
            return false;
        }
        self.event = (IntrInfo::interrupt(vector), 0, 0);
        true
    }

    fn set_irq_window(&mut self, enable: bool) {
        self.irq_window = enable;
    }

    fn nmi_allowed(&self) -> bool {
        self.controls.virtual_nmis
            && self.state.interruptibility & (INTERRUPTIBILITY_STI_MOVSS | INTERRUPTIBILITY_NMI)
                == 0
            && !self.event.0.valid()
    }

    fn inject_nmi(&mut self) {
        // With virtual NMIs the entry sets blocking by NMI and the guest's
        // IRET clears it.
        self.event = (IntrInfo::nmi(), 0, 0);
    }

    fn nmi_masked(&self) -> bool {
        self.state.interruptibility & INTERRUPTIBILITY_NMI != 0
    }

    fn injection(&self) -> Option<Injection> {
        let (info, error, _) = self.event;
        if !info.valid() {
            return None;
        }
        match info.kind() {
            IntrInfo::TYPE_EXT_INTR => Some(Injection::Interrupt(info.vector())),
            IntrInfo::TYPE_NMI => Some(Injection::Nmi),
            // A software exception is a #BP or #OF queued by
            // KVM_GUESTDBG_INJECT_BP (or re-delivered after an exit): an
            // exception to KVM_GET_VCPU_EVENTS and INJECT_BP's EBUSY too.
            IntrInfo::TYPE_HW_EXCEPTION | IntrInfo::TYPE_SW_EXCEPTION => {
                Some(Injection::Exception {
                    vector: info.vector(),
                    error: info.has_error().then_some(error),
                })
            }
            _ => None,
        }
    }

    fn clear_injection(&mut self) {
        self.event = (IntrInfo(0), 0, 0);
    }

    fn interrupt_shadow(&self) -> u8 {
        let i = self.state.interruptibility;
        (if i & INTERRUPTIBILITY_STI != 0 {
            SHADOW_STI
        } else {
            0
        }) | if i & INTERRUPTIBILITY_MOV_SS != 0 {
            SHADOW_MOV_SS
        } else {
            0
        }
    }

    fn set_interrupt_shadow(&mut self, shadow: u8) {
        let i = &mut self.state.interruptibility;
        *i &= !INTERRUPTIBILITY_STI_MOVSS;
        if shadow & SHADOW_STI != 0 {
            *i |= INTERRUPTIBILITY_STI;
        }
        if shadow & SHADOW_MOV_SS != 0 {
            *i |= INTERRUPTIBILITY_MOV_SS;
        }
    }

    fn set_nmi_masked(&mut self, masked: bool) {
        if masked {
            self.state.interruptibility |= INTERRUPTIBILITY_NMI;
        } else {
            self.state.interruptibility &= !INTERRUPTIBILITY_NMI;
        }
    }

    fn set_nmi_window(&mut self, enable: bool) {
        self.nmi_window = enable && self.controls.virtual_nmis;
    }

    fn guest_fpu(&self) -> &GuestFpu {
        &self.fx
    }

    fn guest_fpu_mut(&mut self) -> &mut GuestFpu {
        &mut self.fx
    }

    fn fpu(&self) -> uapi::kvm_fpu {
        self.fx.to_kvm()
    }

    fn set_fpu(&mut self, fpu: &uapi::kvm_fpu) {
        self.fx.set_from_kvm(fpu);
    }

    fn debug_regs(&self) -> &DebugRegs {
        &self.debug
    }

    fn debug_regs_mut(&mut self) -> &mut DebugRegs {
        &mut self.debug
    }

    fn linear_rip(&self) -> u64 {
        self.state.seg(Seg::Cs).base.wrapping_add(self.state.rip)
    }

    fn tsc_offset(&self) -> u64 {
        self.state.tsc_offset
    }

    fn set_tsc_offset(&mut self, offset: u64) {
        self.state.tsc_offset = offset;
    }

    fn stored_msr(&self, index: u32) -> Option<u64> {
        let s = &self.state;
        Some(match index {
            msr::SYSENTER_CS => s.sysenter[0],
            msr::SYSENTER_ESP => s.sysenter[1],
            msr::SYSENTER_EIP => s.sysenter[2],
            msr::PAT => s.pat,
            msr::FS_BASE => s.seg(Seg::Fs).base,
            msr::GS_BASE => s.seg(Seg::Gs).base,
            msr::KERNEL_GS_BASE => s.kernel_gs_base,
            // STAR, LSTAR, CSTAR, SFMASK: switched around each run.
            _ => {
                let slot = SWITCHED_MSRS.iter().position(|&m| m == index)?;
                return s.msrs.get(slot).copied();
            }
        })
    }

    fn store_msr(&mut self, index: u32, value: u64) -> bool {
        let s = &mut self.state;
        let slot = match index {
            msr::SYSENTER_CS => &mut s.sysenter[0],
            msr::SYSENTER_ESP => &mut s.sysenter[1],
            msr::SYSENTER_EIP => &mut s.sysenter[2],
            msr::PAT => &mut s.pat,
            msr::FS_BASE => &mut s.seg_mut(Seg::Fs).base,
            msr::GS_BASE => &mut s.seg_mut(Seg::Gs).base,
            msr::KERNEL_GS_BASE => &mut s.kernel_gs_base,
            _ => {
                let Some(m) = SWITCHED_MSRS
                    .iter()
                    .position(|&m| m == index)
                    .and_then(|i| s.msrs.get_mut(i))
                else {
                    return false;
                };
                m
            }
        };
        *slot = value;
        // SYSENTER, PAT and the FS/GS bases live with the cold state.
        self.cold_dirty = true;
        true
    }

    fn last_cpu(&self) -> u32 {
        self.cpu
    }

    fn raw_exit(&self) -> (u64, u64, u64) {
        let e = &self.exit;
        let info2 = if e.reason as u16 == reason::EPT_VIOLATION {
            e.gpa
        } else {
            u64::from(e.intr_info)
        };
        (
            RAW_EXIT_TAG | u64::from(e.reason as u16),
            e.qualification,
            info2,
        )
    }
}

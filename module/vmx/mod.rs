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

// The run, from VMXON to the host state put back.
mod entry;
// The exit read back and decoded.
mod exit;
// The processor's capabilities, per VM.
mod hw;
// The VMX instructions, each wrapped once.
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
        DebugRegs,
        GuestFpu, //
    },
    mmu::Entry,
    pure::{
        debug::BP_VECTOR,
        msr,
        shadow::GuestPaging,
        vmcs::{
            self,
            ar,
            reason,
            Controls,
            IntrInfo,
            Seg,
            Segment,
            INTERRUPTIBILITY_MOV_SS,
            INTERRUPTIBILITY_NMI,
            INTERRUPTIBILITY_STI,
            INTERRUPTIBILITY_STI_MOVSS,
            PENDING_DBG_BS, //
        },
        x86::{
            self,
            SegAttrib, //
        }, //
    },
    sys::{
        FpuGuard,
        PageBox, //
    }, //
};

use ops::{
    OpError,
    Region, //
};

use crate::ffi::{
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

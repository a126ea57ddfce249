// SPDX-License-Identifier: GPL-2.0

//! The Intel VMX virtual-machine control structure (VMCS), typed.
//!
//! Unlike AMD's VMCB, a VMCS has no architectural layout: each field is
//! read and written with VMREAD/VMWRITE by its *encoding* (Intel SDM vol.
//! 3C, appendix B). This module names the encodings rkvm uses, the control
//! bits, the capability MSRs that say which controls the processor allows,
//! the exit reasons, and the decoding of exit qualifications, so that the
//! backend (`vmx/`) never handles a bare number.

use super::x86::SegAttrib;

/// A VMCS field encoding. Bits 14:13 give the width, bit 0 the high half of
/// a 64-bit field (never used: rkvm runs in 64-bit mode and accesses whole
/// fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field(pub u32);

/// The width of a field (encoding bits 14:13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// 16 bits.
    W16,
    /// 64 bits.
    W64,
    /// 32 bits.
    W32,
    /// Natural width (64 bits in 64-bit mode).
    Natural,
}

impl Field {
    /// The width the encoding declares.
    pub const fn width(self) -> Width {
        match (self.0 >> 13) & 3 {
            0 => Width::W16,
            1 => Width::W64,
            2 => Width::W32,
            _ => Width::Natural,
        }
    }

    /// A read-only field (encoding bits 11:10 = 1: exit information).
    pub const fn read_only(self) -> bool {
        (self.0 >> 10) & 3 == 1
    }
}

/// Field encodings (SDM vol. 3D, appendix B).
pub mod field {
    use super::Field;

    macro_rules! fields {
        ($($(#[$m:meta])* $name:ident = $enc:expr;)*) => {
            $($(#[$m])* pub const $name: Field = Field($enc);)*
        };
    }

    fields! {
        /// Virtual-processor identifier.
        VPID = 0x0000;
        /// I/O bitmap A (not used: unconditional I/O exiting).
        IO_BITMAP_A = 0x2000;
        /// TSC offset.
        TSC_OFFSET = 0x2010;
        /// EPT pointer.
        EPT_POINTER = 0x201a;
        /// Guest-physical address of an EPT violation or misconfiguration.
        GUEST_PHYSICAL_ADDRESS = 0x2400;
        /// VMCS link pointer: all ones (no shadow VMCS).
        VMCS_LINK_POINTER = 0x2800;
        /// Guest IA32_DEBUGCTL.
        GUEST_DEBUGCTL = 0x2802;
        /// Guest IA32_PAT.
        GUEST_PAT = 0x2804;
        /// Guest IA32_EFER.
        GUEST_EFER = 0x2806;
        /// Guest PDPTE 0 (PAE paging with EPT); 1-3 follow two apart.
        GUEST_PDPTE0 = 0x280a;
        /// Host IA32_PAT.
        HOST_PAT = 0x2c00;
        /// Host IA32_EFER.
        HOST_EFER = 0x2c02;
        /// Pin-based execution controls.
        PIN_CONTROLS = 0x4000;
        /// Primary processor-based execution controls.
        PROC_CONTROLS = 0x4002;
        /// Exception bitmap.
        EXCEPTION_BITMAP = 0x4004;
        /// Page-fault error-code mask (which #PFs the bitmap's bit 14 means).
        PF_ERROR_CODE_MASK = 0x4006;
        /// Page-fault error-code match.
        PF_ERROR_CODE_MATCH = 0x4008;
        /// CR3-target count.
        CR3_TARGET_COUNT = 0x400a;
        /// VM-exit controls.
        EXIT_CONTROLS = 0x400c;
        /// VMX-preemption timer value.
    PREEMPTION_TIMER_VALUE = 0x482e;
    /// VM-exit MSR-store count.
        EXIT_MSR_STORE_COUNT = 0x400e;
        /// VM-exit MSR-load count.
        EXIT_MSR_LOAD_COUNT = 0x4010;
        /// VM-entry controls.
        ENTRY_CONTROLS = 0x4012;
        /// VM-entry MSR-load count.
        ENTRY_MSR_LOAD_COUNT = 0x4014;
        /// VM-entry interruption information (event injection).
        ENTRY_INTR_INFO = 0x4016;
        /// VM-entry exception error code.
        ENTRY_EXCEPTION_ERROR_CODE = 0x4018;
        /// VM-entry instruction length (software interrupts and exceptions).
        ENTRY_INSTRUCTION_LEN = 0x401a;
        /// Secondary processor-based execution controls.
        PROC_CONTROLS2 = 0x401e;
        /// VM-instruction error (after a VMfailValid).
        VM_INSTRUCTION_ERROR = 0x4400;
        /// Exit reason.
        EXIT_REASON = 0x4402;
        /// VM-exit interruption information.
        EXIT_INTR_INFO = 0x4404;
        /// VM-exit interruption error code.
        EXIT_INTR_ERROR_CODE = 0x4406;
        /// IDT-vectoring information: the event being delivered at the exit.
        IDT_VECTORING_INFO = 0x4408;
        /// IDT-vectoring error code.
        IDT_VECTORING_ERROR_CODE = 0x440a;
        /// VM-exit instruction length.
        EXIT_INSTRUCTION_LEN = 0x440c;
        /// VM-exit instruction information (INS/OUTS: address size, segment).
        EXIT_INSTRUCTION_INFO = 0x440e;
        /// Guest GDTR limit.
        GUEST_GDTR_LIMIT = 0x4810;
        /// Guest IDTR limit.
        GUEST_IDTR_LIMIT = 0x4812;
        /// Guest interruptibility state.
        GUEST_INTERRUPTIBILITY = 0x4824;
        /// Guest activity state.
        GUEST_ACTIVITY_STATE = 0x4826;
        /// Guest IA32_SYSENTER_CS.
        GUEST_SYSENTER_CS = 0x482a;
        /// Host IA32_SYSENTER_CS.
        HOST_SYSENTER_CS = 0x4c00;
        /// CR0 guest/host mask: bits the host owns.
        CR0_MASK = 0x6000;
        /// CR4 guest/host mask.
        CR4_MASK = 0x6002;
        /// CR0 read shadow: what the guest reads in the bits the host owns.
        CR0_READ_SHADOW = 0x6004;
        /// CR4 read shadow.
        CR4_READ_SHADOW = 0x6006;
        /// Exit qualification.
        EXIT_QUALIFICATION = 0x6400;
        /// Guest CR0.
        GUEST_CR0 = 0x6800;
        /// Guest CR3.
        GUEST_CR3 = 0x6802;
        /// Guest CR4.
        GUEST_CR4 = 0x6804;
        /// Guest GDTR base.
        GUEST_GDTR_BASE = 0x6816;
        /// Guest IDTR base.
        GUEST_IDTR_BASE = 0x6818;
        /// Guest DR7.
        GUEST_DR7 = 0x681a;
        /// Guest RSP.
        GUEST_RSP = 0x681c;
        /// Guest RIP.
        GUEST_RIP = 0x681e;
        /// Guest RFLAGS.
        GUEST_RFLAGS = 0x6820;
        /// Guest pending debug exceptions.
        GUEST_PENDING_DBG = 0x6822;
        /// Guest IA32_SYSENTER_ESP.
        GUEST_SYSENTER_ESP = 0x6824;
        /// Guest IA32_SYSENTER_EIP.
        GUEST_SYSENTER_EIP = 0x6826;
        /// Host CR0.
        HOST_CR0 = 0x6c00;
        /// Host CR3.
        HOST_CR3 = 0x6c02;
        /// Host CR4.
        HOST_CR4 = 0x6c04;
        /// Host FS base.
        HOST_FS_BASE = 0x6c06;
        /// Host GS base.
        HOST_GS_BASE = 0x6c08;
        /// Host TR base.
        HOST_TR_BASE = 0x6c0a;
        /// Host GDTR base.
        HOST_GDTR_BASE = 0x6c0c;
        /// Host IDTR base.
        HOST_IDTR_BASE = 0x6c0e;
        /// Host IA32_SYSENTER_ESP.
        HOST_SYSENTER_ESP = 0x6c10;
        /// Host IA32_SYSENTER_EIP.
        HOST_SYSENTER_EIP = 0x6c12;
        /// Host RSP (written by `vmx/vmenter.S` just before VMLAUNCH).
        HOST_RSP = 0x6c14;
        /// Host RIP.
        HOST_RIP = 0x6c16;
    }

    /// Host selector fields, ES, CS, SS, DS, FS, GS, TR.
    pub const HOST_ES_SELECTOR: Field = Field(0x0c00);
    /// See [`HOST_ES_SELECTOR`].
    pub const HOST_CS_SELECTOR: Field = Field(0x0c02);
    /// See [`HOST_ES_SELECTOR`].
    pub const HOST_SS_SELECTOR: Field = Field(0x0c04);
    /// See [`HOST_ES_SELECTOR`].
    pub const HOST_DS_SELECTOR: Field = Field(0x0c06);
    /// See [`HOST_ES_SELECTOR`].
    pub const HOST_FS_SELECTOR: Field = Field(0x0c08);
    /// See [`HOST_ES_SELECTOR`].
    pub const HOST_GS_SELECTOR: Field = Field(0x0c0a);
    /// See [`HOST_ES_SELECTOR`].
    pub const HOST_TR_SELECTOR: Field = Field(0x0c0c);

    /// The guest PDPTE `i` (0-3).
    pub const fn guest_pdpte(i: u32) -> Field {
        Field(GUEST_PDPTE0.0 + 2 * (i & 3))
    }
}

/// A guest segment register, in the VMCS's order (which is also the order
/// of the encodings: selector, limit, access rights and base of segment
/// `n` are the first field of each group plus 2n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    /// ES.
    Es = 0,
    /// CS.
    Cs,
    /// SS.
    Ss,
    /// DS.
    Ds,
    /// FS.
    Fs,
    /// GS.
    Gs,
    /// LDTR.
    Ldtr,
    /// TR.
    Tr,
}

impl Seg {
    /// All of them.
    pub const ALL: [Seg; 8] = [
        Seg::Es,
        Seg::Cs,
        Seg::Ss,
        Seg::Ds,
        Seg::Fs,
        Seg::Gs,
        Seg::Ldtr,
        Seg::Tr,
    ];

    /// Guest selector field.
    pub const fn selector(self) -> Field {
        Field(0x0800 + 2 * self as u32)
    }

    /// Guest limit field.
    pub const fn limit(self) -> Field {
        Field(0x4800 + 2 * self as u32)
    }

    /// Guest access-rights field.
    pub const fn access_rights(self) -> Field {
        Field(0x4814 + 2 * self as u32)
    }

    /// Guest base field.
    pub const fn base(self) -> Field {
        Field(0x6806 + 2 * self as u32)
    }
}

/// A segment as the VMCS holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Base.
    pub base: u64,
    /// Limit, in bytes (expanded by G).
    pub limit: u32,
    /// Access rights (see [`ar`]).
    pub ar: u32,
}

/// Access-rights bits of a VMCS segment (SDM 24.4.1, table 24-2).
pub mod ar {
    /// Segment type (bits 3:0).
    pub const TYPE: u32 = 0xf;
    /// Code or data (not system).
    pub const S: u32 = 1 << 4;
    /// DPL (bits 6:5).
    pub const DPL_SHIFT: u32 = 5;
    /// Present.
    pub const P: u32 = 1 << 7;
    /// Available to software.
    pub const AVL: u32 = 1 << 12;
    /// 64-bit code segment.
    pub const L: u32 = 1 << 13;
    /// Default operation size.
    pub const DB: u32 = 1 << 14;
    /// Granularity.
    pub const G: u32 = 1 << 15;
    /// Segment unusable (a null selector was loaded).
    pub const UNUSABLE: u32 = 1 << 16;
    /// The accessed bit of the type (code and data segments).
    pub const ACCESSED: u32 = 1;
}

/// Access rights of a segment with attributes `a`, as KVM computes them: a
/// segment that is unusable or not present is unusable, with no other bit.
pub fn access_rights(a: &SegAttrib, unusable: bool) -> u32 {
    if unusable || !a.present {
        return ar::UNUSABLE;
    }
    u32::from(a.type_ & 0xf)
        | if a.s { ar::S } else { 0 }
        | (u32::from(a.dpl & 3) << ar::DPL_SHIFT)
        | ar::P
        | if a.avl { ar::AVL } else { 0 }
        | if a.l { ar::L } else { 0 }
        | if a.db { ar::DB } else { 0 }
        | if a.g { ar::G } else { 0 }
}

/// The attributes in access rights `r`, and whether the segment is unusable.
pub fn attributes(r: u32) -> (SegAttrib, bool) {
    let a = SegAttrib {
        type_: (r & ar::TYPE) as u8,
        s: r & ar::S != 0,
        dpl: ((r >> ar::DPL_SHIFT) & 3) as u8,
        present: r & ar::P != 0,
        avl: r & ar::AVL != 0,
        l: r & ar::L != 0,
        db: r & ar::DB != 0,
        g: r & ar::G != 0,
    };
    (a, r & ar::UNUSABLE != 0)
}

/// Pin-based execution controls.
pub mod pin {
    /// External interrupts cause exits.
    pub const EXT_INTR_EXITING: u32 = 1 << 0;
    /// NMIs cause exits.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// The guest's NMI blocking is virtual: set by an injected NMI, cleared
    /// by the guest's IRET, with NMI-window exiting available.
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// The VMX-preemption timer counts down in guest mode and exits at 0.
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

/// Primary processor-based execution controls.
pub mod proc {
    /// Exit as soon as the guest can take an interrupt.
    pub const INTR_WINDOW_EXITING: u32 = 1 << 2;
    /// Exit as soon as the guest can take an NMI (virtual NMIs only).
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    /// Add the TSC offset to the guest's TSC reads.
    pub const TSC_OFFSETTING: u32 = 1 << 3;
    /// HLT exits.
    pub const HLT_EXITING: u32 = 1 << 7;
    /// INVLPG exits.
    pub const INVLPG_EXITING: u32 = 1 << 9;
    /// MWAIT exits.
    pub const MWAIT_EXITING: u32 = 1 << 10;
    /// Loads of CR3 exit.
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// Stores of CR3 exit.
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    /// Loads of CR8 exit.
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    /// Stores of CR8 exit.
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    /// MOV DR exits.
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Every IN, OUT, INS and OUTS exits.
    pub const UNCOND_IO_EXITING: u32 = 1 << 24;
    /// MONITOR exits.
    pub const MONITOR_EXITING: u32 = 1 << 29;
    /// The secondary controls apply.
    pub const SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based execution controls.
pub mod proc2 {
    /// Extended page tables.
    pub const EPT: u32 = 1 << 1;
    /// Virtual-processor identifiers tag the guest's TLB entries.
    pub const VPID: u32 = 1 << 5;
    /// Real mode and unpaged protected mode run without emulation.
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
}

/// VM-exit controls.
pub mod exit_ctl {
    /// DR7 and IA32_DEBUGCTL are saved.
    pub const SAVE_DEBUG: u32 = 1 << 2;
    /// The host runs in 64-bit mode after the exit.
    pub const HOST_ADDR_SPACE_SIZE: u32 = 1 << 9;
    /// IA32_PAT is saved.
    pub const SAVE_PAT: u32 = 1 << 18;
    /// IA32_PAT is loaded from the host field.
    pub const LOAD_PAT: u32 = 1 << 19;
    /// IA32_EFER is saved.
    pub const SAVE_EFER: u32 = 1 << 20;
    /// IA32_EFER is loaded from the host field.
    pub const LOAD_EFER: u32 = 1 << 21;
}

/// VM-entry controls.
pub mod entry_ctl {
    /// DR7 and IA32_DEBUGCTL are loaded.
    pub const LOAD_DEBUG: u32 = 1 << 2;
    /// The guest is in IA-32e mode (EFER.LMA).
    pub const IA32E_MODE: u32 = 1 << 9;
    /// IA32_PAT is loaded.
    pub const LOAD_PAT: u32 = 1 << 14;
    /// IA32_EFER is loaded.
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// VMX capability MSRs (SDM appendix A).
pub mod cap_msr {
    /// IA32_VMX_BASIC: VMCS revision, TRUE-controls support.
    pub const BASIC: u32 = 0x480;
    /// IA32_VMX_PINBASED_CTLS.
    pub const PINBASED: u32 = 0x481;
    /// IA32_VMX_PROCBASED_CTLS.
    pub const PROCBASED: u32 = 0x482;
    /// IA32_VMX_EXIT_CTLS.
    pub const EXIT: u32 = 0x483;
    /// IA32_VMX_ENTRY_CTLS.
    pub const ENTRY: u32 = 0x484;
    /// IA32_VMX_MISC: bits 4:0, the preemption timer's rate (it counts
    /// once every 2^n TSC cycles).
    pub const MISC: u32 = 0x485;
    /// IA32_VMX_CR0_FIXED0: CR0 bits that must be 1 in VMX operation.
    pub const CR0_FIXED0: u32 = 0x486;
    /// IA32_VMX_CR0_FIXED1: CR0 bits that may be 1.
    pub const CR0_FIXED1: u32 = 0x487;
    /// IA32_VMX_CR4_FIXED0.
    pub const CR4_FIXED0: u32 = 0x488;
    /// IA32_VMX_CR4_FIXED1.
    pub const CR4_FIXED1: u32 = 0x489;
    /// IA32_VMX_PROCBASED_CTLS2.
    pub const PROCBASED2: u32 = 0x48b;
    /// IA32_VMX_EPT_VPID_CAP.
    pub const EPT_VPID_CAP: u32 = 0x48c;
    /// The TRUE forms of PINBASED, PROCBASED, EXIT, ENTRY: they allow some
    /// default-1 controls (CR3 exiting, among others) to be 0.
    pub const TRUE_PINBASED: u32 = 0x48d;
    /// See [`TRUE_PINBASED`].
    pub const TRUE_PROCBASED: u32 = 0x48e;
    /// See [`TRUE_PINBASED`].
    pub const TRUE_EXIT: u32 = 0x48f;
    /// See [`TRUE_PINBASED`].
    pub const TRUE_ENTRY: u32 = 0x490;
}

/// IA32_VMX_BASIC decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Basic(pub u64);

impl Basic {
    /// The VMCS revision identifier (first word of the VMXON region and of
    /// every VMCS).
    pub fn revision(self) -> u32 {
        (self.0 & 0x7fff_ffff) as u32
    }

    /// The TRUE control MSRs exist.
    pub fn true_controls(self) -> bool {
        self.0 & (1 << 55) != 0
    }

    /// INS/OUTS exits report the address size and segment in the
    /// instruction-information field.
    pub fn ins_outs_info(self) -> bool {
        self.0 & (1 << 54) != 0
    }

    /// The write-back memory type may be used for the VMCS (the only one
    /// rkvm supports).
    pub fn write_back(self) -> bool {
        (self.0 >> 50) & 0xf == 6
    }
}

/// A control word from a capability MSR: bits 31:0 must be 1 if set there
/// (allowed 0-settings), bits 63:32 may be 1 only if set there (allowed
/// 1-settings). Returns the value with `want` and every required bit set,
/// or `None` if the processor forbids a bit of `want`.
pub fn adjust_controls(want: u32, cap: u64) -> Option<u32> {
    let must = cap as u32;
    let may = (cap >> 32) as u32;
    let value = (want | must) & may;
    (value & want == want).then_some(value)
}

/// The capability MSRs' values (the TRUE forms where IA32_VMX_BASIC says
/// they exist).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapMsrs {
    /// IA32_VMX_BASIC.
    pub basic: u64,
    /// Pin-based controls.
    pub pin: u64,
    /// Primary processor-based controls.
    pub proc: u64,
    /// Secondary processor-based controls.
    pub proc2: u64,
    /// VM-exit controls.
    pub exit: u64,
    /// VM-entry controls.
    pub entry: u64,
    /// IA32_VMX_MISC.
    pub misc: u64,
    /// IA32_VMX_EPT_VPID_CAP.
    pub ept_vpid: u64,
    /// CR0 bits fixed to 1, and allowed to be 1.
    pub cr0_fixed: (u64, u64),
    /// CR4 bits fixed to 1, and allowed to be 1.
    pub cr4_fixed: (u64, u64),
}

/// The control values rkvm runs every guest with (dynamic bits, such as
/// interrupt-window exiting and IA-32e mode, are added per entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    /// Pin-based.
    pub pin: u32,
    /// Primary processor-based.
    pub proc: u32,
    /// Secondary processor-based.
    pub proc2: u32,
    /// VM-exit.
    pub exit: u32,
    /// VM-entry.
    pub entry: u32,
    /// VPIDs are used.
    pub vpid: bool,
    /// INVEPT can flush one EPT context (else all of them).
    pub invept_single: bool,
    /// INS/OUTS exits say their address size and segment.
    pub ins_outs_info: bool,
    /// CR0 bits the host owns (must stay 1 in VMX operation; PE and PG are
    /// free with unrestricted guest).
    pub cr0_host_owned: u64,
    /// CR0 bits forced to 1 in the processor's CR0.
    pub cr0_fixed1: u64,
    /// CR4 bits the host owns (VMXE).
    pub cr4_host_owned: u64,
    /// CR4 bits forced to 1 in the processor's CR4 (VMXE).
    pub cr4_fixed1: u64,
    /// The preemption timer is on; it counts once every 2^n TSC cycles.
    pub preemption_timer_rate: Option<u8>,
    /// Virtual NMIs with NMI-window exiting: `KVM_NMI` works.
    pub virtual_nmis: bool,
}

/// IA32_VMX_EPT_VPID_CAP bits.
pub mod ept_vpid_cap {
    /// INVEPT is supported.
    pub const INVEPT: u64 = 1 << 20;
    /// Single-context INVEPT.
    pub const INVEPT_SINGLE: u64 = 1 << 25;
    /// All-context INVEPT.
    pub const INVEPT_ALL: u64 = 1 << 26;
}

impl Controls {
    /// What rkvm needs, checked against what the processor allows: `Err`
    /// names the first control word that cannot hold it.
    pub fn derive(c: &CapMsrs) -> Result<Controls, &'static str> {
        use self::{
            entry_ctl as en,
            exit_ctl as ex, //
        };
        // The preemption timer where the processor has it: a guest then
        // leaves guest mode at least once per timer period even if an
        // interrupt does not make it (see `vmx/mod.rs`).
        let timer = (c.pin >> 32) as u32 & pin::PREEMPTION_TIMER != 0;
        // Virtual NMIs where the processor has them and the NMI window with
        // them (every VMX processor KVM still runs on does).
        let virtual_nmis = (c.pin >> 32) as u32 & pin::VIRTUAL_NMIS != 0
            && (c.proc >> 32) as u32 & proc::NMI_WINDOW_EXITING != 0;
        let pin = adjust_controls(
            pin::EXT_INTR_EXITING
                | pin::NMI_EXITING
                | if timer { pin::PREEMPTION_TIMER } else { 0 }
                | if virtual_nmis { pin::VIRTUAL_NMIS } else { 0 },
            c.pin,
        )
        .ok_or("pin-based controls")?;
        let want = proc::HLT_EXITING
            | proc::MWAIT_EXITING
            | proc::MONITOR_EXITING
            | proc::MOV_DR_EXITING
            | proc::UNCOND_IO_EXITING
            | proc::TSC_OFFSETTING
            | proc::CR8_LOAD_EXITING
            | proc::CR8_STORE_EXITING
            | proc::SECONDARY_CONTROLS;
        let proc = adjust_controls(want, c.proc).ok_or("processor-based controls")?;
        if (c.proc >> 32) as u32 & proc::INTR_WINDOW_EXITING == 0 {
            return Err("interrupt-window exiting");
        }
        let want2 = proc2::EPT | proc2::UNRESTRICTED_GUEST;
        let vpid = (c.proc2 >> 32) as u32 & proc2::VPID != 0;
        let proc2 = adjust_controls(want2 | if vpid { proc2::VPID } else { 0 }, c.proc2)
            .ok_or("secondary controls (EPT, unrestricted guest)")?;
        if c.ept_vpid & ept_vpid_cap::INVEPT == 0
            || c.ept_vpid & (ept_vpid_cap::INVEPT_SINGLE | ept_vpid_cap::INVEPT_ALL) == 0
        {
            return Err("INVEPT");
        }
        let exit = adjust_controls(
            ex::HOST_ADDR_SPACE_SIZE | ex::SAVE_EFER | ex::LOAD_EFER | ex::SAVE_PAT | ex::LOAD_PAT,
            c.exit,
        )
        .ok_or("VM-exit controls")?;
        let entry = adjust_controls(en::LOAD_EFER | en::LOAD_PAT | en::LOAD_DEBUG, c.entry)
            .ok_or("VM-entry controls")?;
        if (c.entry >> 32) as u32 & en::IA32E_MODE == 0 {
            return Err("IA-32e mode guests");
        }
        const PE: u64 = 1;
        const PG: u64 = 1 << 31;
        let cr0_fixed1 = c.cr0_fixed.0 & !(PE | PG);
        Ok(Controls {
            pin,
            proc,
            proc2,
            exit,
            entry,
            vpid,
            invept_single: c.ept_vpid & ept_vpid_cap::INVEPT_SINGLE != 0,
            ins_outs_info: Basic(c.basic).ins_outs_info(),
            cr0_host_owned: cr0_fixed1,
            cr0_fixed1,
            cr4_host_owned: c.cr4_fixed.0,
            cr4_fixed1: c.cr4_fixed.0,
            preemption_timer_rate: timer.then_some((c.misc & 0x1f) as u8),
            virtual_nmis,
        })
    }
}

impl Controls {
    /// The controls for shadow paging. No EPT, hence no unrestricted guest
    /// (which requires it): real mode runs in virtual-8086 mode (see
    /// [`v86_segment`]). No VPID: every VM entry and exit then flushes the
    /// guest's translations, so the processor never uses one the shadow
    /// table no longer has. CR3 loads and stores and INVLPG exit, and the
    /// host owns every bit of CR0 and CR4: the processor's values are
    /// derived from the guest's (`pure::shadow::GuestPaging`), and the
    /// guest reads its own from the read shadows.
    pub fn for_shadow_paging(&self) -> Controls {
        Controls {
            proc: self.proc
                | proc::CR3_LOAD_EXITING
                | proc::CR3_STORE_EXITING
                | proc::INVLPG_EXITING,
            proc2: self.proc2 & !(proc2::EPT | proc2::UNRESTRICTED_GUEST | proc2::VPID),
            vpid: false,
            cr0_host_owned: u64::MAX,
            cr4_host_owned: u64::MAX,
            ..*self
        }
    }
}

/// Access rights every segment register has in virtual-8086 mode (VM entry
/// checks them): present read/write data, accessed, DPL 3.
pub const V86_AR: u32 = 0xf3;

/// The segment virtual-8086 mode runs a real-mode guest with in place of
/// `s` (CS, SS, DS, ES, FS or GS): the same selector and base, a 64 KiB
/// limit and [`V86_AR`]. `None` where virtual-8086 mode cannot stand for
/// it: a base other than the selector times 16 (CS after RESET, or a
/// segment loaded in protected mode before the switch back), a limit other
/// than 64 KiB ("unreal mode") or a 32-bit default size.
pub fn v86_segment(s: &Segment) -> Option<Segment> {
    let plain = s.base == u64::from(s.selector) << 4 && s.limit == 0xffff && s.ar & ar::DB == 0;
    plain.then_some(Segment { ar: V86_AR, ..*s })
}

/// TR while a real-mode guest runs in virtual-8086 mode: a 32-bit busy TSS
/// with a limit of 0. The processor reads the I/O permission bitmap of the
/// TSS for every IN and OUT in virtual-8086 mode; with no room for one each
/// raises #GP(0), which rkvm intercepts and turns into the I/O exit. No
/// guest memory backs it, and nothing else reads it: every exception is
/// intercepted in virtual-8086 mode, before it could switch stacks.
pub const V86_TR: Segment = Segment {
    selector: 0,
    base: 0,
    limit: 0,
    ar: 0x8b,
};

/// Makes the segments of a protected-mode guest acceptable to VM entry
/// without unrestricted guest, which wants the RPLs of CS and SS to agree
/// with SS's DPL and no data segment's DPL below its RPL. A guest that has
/// just set CR0.PE still has real-mode segments (DPL 0) behind whatever
/// selectors it had: as kvm_intel does, CS and SS take SS's DPL as RPL and
/// a data segment's DPL is raised to its RPL, until the guest loads them.
/// A guest in proper protected mode has nothing to fix.
pub fn protected_mode_fixup(segs: &mut [Segment; 8]) {
    let dpl = |s: &Segment| ((s.ar >> ar::DPL_SHIFT) & 3) as u16;
    let ss_dpl = dpl(&segs[Seg::Ss as usize]);
    for seg in [Seg::Ss, Seg::Cs] {
        let s = &mut segs[seg as usize];
        if s.ar & ar::UNUSABLE == 0 {
            s.selector = (s.selector & !3) | ss_dpl;
        }
    }
    for seg in [Seg::Es, Seg::Ds, Seg::Fs, Seg::Gs] {
        let s = &mut segs[seg as usize];
        let rpl = s.selector & 3;
        let data_or_plain_code = s.ar & ar::TYPE <= 11;
        if s.ar & ar::UNUSABLE == 0 && s.ar & ar::S != 0 && data_or_plain_code && dpl(s) < rpl {
            s.ar = (s.ar & !(3 << ar::DPL_SHIFT)) | (u32::from(rpl) << ar::DPL_SHIFT);
        }
    }
}

/// Basic exit reasons (bits 15:0 of the exit reason; SDM appendix C).
pub mod reason {
    /// An exception or NMI (the interruption information says which).
    pub const EXCEPTION_NMI: u16 = 0;
    /// An external interrupt.
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    /// Triple fault.
    pub const TRIPLE_FAULT: u16 = 2;
    /// INIT signal.
    pub const INIT: u16 = 3;
    /// SIPI.
    pub const SIPI: u16 = 4;
    /// The interrupt window opened.
    pub const INTERRUPT_WINDOW: u16 = 7;
    /// The guest can take an NMI (NMI-window exiting).
    pub const NMI_WINDOW: u16 = 8;
    /// Task switch.
    pub const TASK_SWITCH: u16 = 9;
    /// CPUID.
    pub const CPUID: u16 = 10;
    /// HLT.
    pub const HLT: u16 = 12;
    /// INVD.
    pub const INVD: u16 = 13;
    /// INVLPG.
    pub const INVLPG: u16 = 14;
    /// RDPMC.
    pub const RDPMC: u16 = 15;
    /// RDTSC.
    pub const RDTSC: u16 = 16;
    /// VMCALL.
    pub const VMCALL: u16 = 18;
    /// VMCLEAR, the first of the VMX instructions (18 is VMCALL).
    pub const VMCLEAR: u16 = 19;
    /// VMXON, the last of them.
    pub const VMXON: u16 = 27;
    /// Control-register access.
    pub const CR_ACCESS: u16 = 28;
    /// MOV DR.
    pub const DR_ACCESS: u16 = 29;
    /// I/O instruction.
    pub const IO: u16 = 30;
    /// RDMSR.
    pub const RDMSR: u16 = 31;
    /// WRMSR.
    pub const WRMSR: u16 = 32;
    /// VM entry failed: invalid guest state.
    pub const INVALID_GUEST_STATE: u16 = 33;
    /// VM entry failed: MSR loading.
    pub const MSR_LOADING: u16 = 34;
    /// MWAIT.
    pub const MWAIT: u16 = 36;
    /// MONITOR.
    pub const MONITOR: u16 = 39;
    /// PAUSE.
    pub const PAUSE: u16 = 40;
    /// VM entry failed: machine check.
    pub const MACHINE_CHECK: u16 = 41;
    /// EPT violation.
    pub const EPT_VIOLATION: u16 = 48;
    /// The VMX-preemption timer expired.
    pub const PREEMPTION_TIMER: u16 = 52;
    /// EPT misconfiguration.
    pub const EPT_MISCONFIG: u16 = 49;
    /// INVEPT.
    pub const INVEPT: u16 = 50;
    /// RDTSCP.
    pub const RDTSCP: u16 = 51;
    /// INVVPID.
    pub const INVVPID: u16 = 53;
    /// WBINVD.
    pub const WBINVD: u16 = 54;
    /// XSETBV.
    pub const XSETBV: u16 = 55;
    /// VMFUNC.
    pub const VMFUNC: u16 = 59;
    /// Bit 31 of the exit reason: the VM entry failed.
    pub const ENTRY_FAILURE: u32 = 1 << 31;
}

/// The name of exit reason `basic`, for traces and statistics.
pub fn reason_name(basic: u16) -> &'static str {
    match basic {
        reason::EXCEPTION_NMI => "exception",
        reason::EXTERNAL_INTERRUPT => "intr",
        reason::TRIPLE_FAULT => "triple_fault",
        reason::INIT => "init",
        reason::INTERRUPT_WINDOW => "intr_window",
        reason::NMI_WINDOW => "nmi_window",
        reason::INVD => "invd",
        reason::TASK_SWITCH => "task_switch",
        reason::CPUID => "cpuid",
        reason::HLT => "hlt",
        reason::INVLPG => "invlpg",
        reason::VMCALL => "vmcall",
        reason::VMCLEAR..=reason::VMXON | reason::INVEPT | reason::INVVPID | reason::VMFUNC => {
            "vmx_insn"
        }
        reason::CR_ACCESS => "cr",
        reason::DR_ACCESS => "dr",
        reason::IO => "io",
        reason::RDMSR => "rdmsr",
        reason::WRMSR => "wrmsr",
        reason::INVALID_GUEST_STATE => "invalid",
        reason::MWAIT => "mwait",
        reason::MONITOR => "monitor",
        reason::EPT_VIOLATION => "ept_violation",
        reason::EPT_MISCONFIG => "ept_misconfig",
        reason::PREEMPTION_TIMER => "preemption_timer",
        reason::WBINVD => "wbinvd",
        reason::XSETBV => "xsetbv",
        _ => "other",
    }
}

/// Interruption information: VM-entry event injection, and the VM-exit and
/// IDT-vectoring information fields (SDM 24.8.3, 24.9.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntrInfo(pub u32);

impl IntrInfo {
    /// Valid.
    pub const VALID: u32 = 1 << 31;
    /// An error code is delivered.
    pub const ERROR_CODE: u32 = 1 << 11;
    /// Type: external interrupt.
    pub const TYPE_EXT_INTR: u32 = 0;
    /// Type: NMI.
    pub const TYPE_NMI: u32 = 2;
    /// Type: hardware exception.
    pub const TYPE_HW_EXCEPTION: u32 = 3;
    /// Type: software interrupt (INT n).
    pub const TYPE_SW_INTR: u32 = 4;
    /// Type: privileged software exception (INT1).
    pub const TYPE_PRIV_SW_EXCEPTION: u32 = 5;
    /// Type: software exception (INT3, INTO).
    pub const TYPE_SW_EXCEPTION: u32 = 6;

    /// An external interrupt to inject.
    pub fn interrupt(vector: u8) -> Self {
        IntrInfo(Self::VALID | (Self::TYPE_EXT_INTR << 8) | u32::from(vector))
    }

    /// An NMI to inject.
    pub fn nmi() -> Self {
        IntrInfo(Self::VALID | (Self::TYPE_NMI << 8) | 2)
    }

    /// A software exception (#BP of an INT3, #OF of an INTO) to inject:
    /// delivered as the instruction would, returning past it (the entry's
    /// instruction length).
    pub fn soft_exception(vector: u8) -> Self {
        IntrInfo(Self::VALID | (Self::TYPE_SW_EXCEPTION << 8) | u32::from(vector))
    }

    /// A hardware exception to inject.
    pub fn exception(vector: u8, has_error: bool) -> Self {
        let err = if has_error { Self::ERROR_CODE } else { 0 };
        IntrInfo(Self::VALID | (Self::TYPE_HW_EXCEPTION << 8) | err | u32::from(vector))
    }

    /// Valid.
    pub fn valid(self) -> bool {
        self.0 & Self::VALID != 0
    }

    /// Vector.
    pub fn vector(self) -> u8 {
        self.0 as u8
    }

    /// Type (bits 10:8).
    pub fn kind(self) -> u32 {
        (self.0 >> 8) & 7
    }

    /// An error code comes with it.
    pub fn has_error(self) -> bool {
        self.0 & Self::ERROR_CODE != 0
    }

    /// The same event, for injection at the next entry: IDT-vectoring
    /// information has the injection format except bit 12 (NMI unblocking
    /// by IRET), which is reserved there.
    pub fn reinjection(self) -> Self {
        IntrInfo(self.0 & !(1 << 12))
    }

    /// A software interrupt or exception: injecting it needs the
    /// instruction length.
    pub fn needs_length(self) -> bool {
        matches!(
            self.kind(),
            Self::TYPE_SW_INTR | Self::TYPE_PRIV_SW_EXCEPTION | Self::TYPE_SW_EXCEPTION
        )
    }
}

/// Guest interruptibility state: blocking by STI and by MOV SS.
pub const INTERRUPTIBILITY_STI_MOVSS: u32 = 3;
/// Guest interruptibility: blocking by STI.
pub const INTERRUPTIBILITY_STI: u32 = 1 << 0;
/// Guest interruptibility: blocking by MOV SS.
pub const INTERRUPTIBILITY_MOV_SS: u32 = 1 << 1;
/// Guest interruptibility: blocking by NMI (between an NMI and its IRET).
pub const INTERRUPTIBILITY_NMI: u32 = 1 << 3;
/// Pending debug exceptions: BS (a single step is pending).
pub const PENDING_DBG_BS: u64 = 1 << 14;

/// The exit qualification of an I/O instruction (SDM table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQualification {
    /// Port.
    pub port: u16,
    /// IN (or INS).
    pub input: bool,
    /// Bytes per transfer: 1, 2 or 4.
    pub size: u8,
    /// INS or OUTS.
    pub string: bool,
    /// REP prefix.
    pub rep: bool,
}

impl IoQualification {
    /// Decodes the qualification.
    pub fn decode(q: u64) -> Self {
        IoQualification {
            size: (q & 7) as u8 + 1,
            input: q & (1 << 3) != 0,
            string: q & (1 << 4) != 0,
            rep: q & (1 << 5) != 0,
            port: (q >> 16) as u16,
        }
    }
}

/// The instruction information of an INS/OUTS exit: address size in bytes
/// (2, 4 or 8) and segment (0 = ES ... 5 = GS).
pub fn string_io_info(info: u32) -> (u8, u8) {
    let addr_size = match (info >> 7) & 7 {
        0 => 2,
        1 => 4,
        _ => 8,
    };
    (addr_size, ((info >> 15) & 7) as u8)
}

/// The exit qualification of an EPT violation: whether the access was a
/// write (bit 1).
pub fn ept_violation_write(q: u64) -> bool {
    q & 2 != 0
}

/// EPT pointer for a 4-level table at `root` with write-back paging
/// structures.
pub fn ept_pointer(root: u64) -> u64 {
    const WRITE_BACK: u64 = 6;
    const WALK_LENGTH_4: u64 = 3 << 3;
    (root & !0xfff) | WALK_LENGTH_4 | WRITE_BACK
}

/// VM-instruction error numbers (SDM 31.4) worth naming in a log.
pub fn instruction_error_name(n: u32) -> &'static str {
    match n {
        2 => "VMCLEAR with invalid address",
        4 => "VMLAUNCH with non-clear VMCS",
        7 => "entry with invalid control fields",
        8 => "entry with invalid host-state fields",
        9 => "VMPTRLD with invalid address",
        11 => "VMPTRLD with incorrect revision",
        12 => "VMREAD/VMWRITE of an unsupported field",
        13 => "VMWRITE to a read-only field",
        26 => "entry with events blocked by MOV SS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_declare_their_width() {
        assert_eq!(field::VPID.width(), Width::W16);
        assert_eq!(field::EPT_POINTER.width(), Width::W64);
        assert_eq!(field::PIN_CONTROLS.width(), Width::W32);
        assert_eq!(field::GUEST_RIP.width(), Width::Natural);
        assert_eq!(Seg::Tr.selector(), Field(0x080e));
        assert_eq!(Seg::Cs.limit(), Field(0x4802));
        assert_eq!(Seg::Tr.access_rights(), Field(0x4822));
        // The field after TR's base is GDTR's base: the groups line up.
        assert_eq!(Field(Seg::Tr.base().0 + 2), field::GUEST_GDTR_BASE);
        assert!(field::EXIT_REASON.read_only());
        assert!(field::EXIT_QUALIFICATION.read_only());
        assert!(!field::GUEST_RIP.read_only());
        assert_eq!(field::guest_pdpte(3), Field(0x2810));
    }

    #[test]
    fn controls_respect_the_capability() {
        // Bits 1, 2 and 4 must be 1; bits 0-7 may be 1.
        let cap = 0x0000_00ff_0000_0016u64;
        assert_eq!(adjust_controls(1, cap), Some(0x17));
        assert_eq!(adjust_controls(0, cap), Some(0x16));
        // Bit 8 is not allowed.
        assert_eq!(adjust_controls(1 << 8, cap), None);
    }

    #[test]
    fn basic_msr() {
        // Bochs's corei7: revision 0x2b, WB, INS/OUTS info, TRUE controls.
        let b = bochs_caps();
        let b = Basic(b.basic);
        assert_eq!(b.revision(), 0x2b);
        assert!(b.true_controls() && b.ins_outs_info() && b.write_back());
    }

    #[test]
    fn segment_access_rights_round_trip() {
        // A 64-bit kernel code segment: type 0xb, S, P, L, G.
        let cs = SegAttrib {
            type_: 0xb,
            s: true,
            dpl: 0,
            present: true,
            l: true,
            g: true,
            ..Default::default()
        };
        assert_eq!(access_rights(&cs, false), 0xa09b);
        assert_eq!(attributes(0xa09b), (cs, false));
        // Real-mode data segment at reset.
        let ds = SegAttrib {
            type_: 3,
            s: true,
            present: true,
            ..Default::default()
        };
        assert_eq!(access_rights(&ds, false), 0x93);
        // Not present (or marked unusable): unusable, nothing else.
        assert_eq!(
            access_rights(
                &SegAttrib {
                    present: false,
                    ..cs
                },
                false
            ),
            ar::UNUSABLE
        );
        assert_eq!(access_rights(&cs, true), ar::UNUSABLE);
        assert!(attributes(ar::UNUSABLE).1);
    }

    #[test]
    fn io_qualification() {
        // out %al, $0x80
        let q = IoQualification::decode(0x80 << 16);
        assert_eq!(
            q,
            IoQualification {
                port: 0x80,
                input: false,
                size: 1,
                string: false,
                rep: false
            }
        );
        // rep insw from port 0x1f0
        let q = IoQualification::decode((0x1f0 << 16) | (1 << 5) | (1 << 4) | (1 << 3) | 1);
        assert_eq!(
            q,
            IoQualification {
                port: 0x1f0,
                input: true,
                size: 2,
                string: true,
                rep: true
            }
        );
        // 32-bit addressing, segment DS (3).
        assert_eq!(string_io_info((1 << 7) | (3 << 15)), (4, 3));
        assert_eq!(string_io_info(2 << 7), (8, 0));
    }

    #[test]
    fn interruption_information() {
        let gp = IntrInfo::exception(13, true);
        assert_eq!(gp.0, 0x8000_0b0d);
        assert!(
            gp.valid()
                && gp.has_error()
                && gp.vector() == 13
                && gp.kind() == IntrInfo::TYPE_HW_EXCEPTION
        );
        assert_eq!(IntrInfo::interrupt(0x20).0, 0x8000_0020);
        // IDT-vectoring information with NMI unblocking (bit 12) set.
        assert_eq!(
            IntrInfo(0x8000_1020).reinjection(),
            IntrInfo::interrupt(0x20)
        );
        assert!(IntrInfo(0x8000_0403).needs_length());
        assert!(!gp.needs_length());
    }

    #[test]
    fn ept_pointer_and_qualification() {
        assert_eq!(ept_pointer(0x1234_5000), 0x1234_501e);
        assert!(ept_violation_write(0x182));
        assert!(!ept_violation_write(0x181));
        assert_eq!(reason_name(reason::EPT_VIOLATION), "ept_violation");
        assert_eq!(reason_name(reason::VMXON), "vmx_insn");
    }

    /// Capability MSRs as Bochs's `corei7_haswell_4770` reports them
    /// (TRUE forms), from a boot of the test kernel there.
    fn bochs_caps() -> CapMsrs {
        CapMsrs {
            basic: 0x00d8_1000_0000_002b,
            pin: 0x0000_007f_0000_0016,
            proc: 0xf7f9_fffe_0400_6172,
            proc2: 0x0004_7fff_0000_0000,
            exit: 0x007f_ffff_0003_6dfb,
            entry: 0x0000_ffff_0000_11fb,
            misc: 0x2004_01e0,
            ept_vpid: 0x0f01_0633_4141,
            cr0_fixed: (0x8000_0021, 0xffff_ffff),
            cr4_fixed: (0x2000, 0x0017_27ff),
        }
    }

    #[test]
    fn controls_from_bochs() {
        let c = Controls::derive(&bochs_caps()).expect("Bochs has what rkvm needs");
        assert!(c.proc & proc::UNCOND_IO_EXITING != 0 && c.proc & proc::HLT_EXITING != 0);
        // The TRUE MSR lets CR3 exiting be 0 (the non-TRUE one forces it).
        assert_eq!(
            c.proc & (proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING),
            0
        );
        assert!(c.proc2 & proc2::EPT != 0 && c.proc2 & proc2::UNRESTRICTED_GUEST != 0);
        assert!(c.vpid && c.invept_single);
        assert!(c.pin & pin::PREEMPTION_TIMER != 0);
        assert_eq!(c.preemption_timer_rate, Some(0));
        assert!(c.exit & exit_ctl::HOST_ADDR_SPACE_SIZE != 0);
        // NE is the host's; PE and PG the guest's (unrestricted guest).
        assert_eq!(c.cr0_host_owned, 0x20);
        assert_eq!(c.cr4_host_owned, 0x2000);
    }

    #[test]
    fn shadow_paging_controls() {
        let c = Controls::derive(&bochs_caps())
            .expect("Bochs has what rkvm needs")
            .for_shadow_paging();
        let exiting = proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING | proc::INVLPG_EXITING;
        assert_eq!(c.proc & exiting, exiting);
        assert_eq!(
            c.proc2 & (proc2::EPT | proc2::UNRESTRICTED_GUEST | proc2::VPID),
            0
        );
        assert!(!c.vpid);
        assert_eq!((c.cr0_host_owned, c.cr4_host_owned), (u64::MAX, u64::MAX));
        // The bits forced to 1 stay what the processor says.
        assert_eq!((c.cr0_fixed1, c.cr4_fixed1), (0x20, 0x2000));
    }

    #[test]
    fn real_mode_segments_in_v86_mode() {
        let s = Segment {
            selector: 0x1234,
            base: 0x12340,
            limit: 0xffff,
            ar: 0x93,
        };
        assert_eq!(v86_segment(&s), Some(Segment { ar: V86_AR, ..s }));
        // CS after RESET: base 0xffff0000, not 0xf000 * 16.
        assert_eq!(
            v86_segment(&Segment {
                selector: 0xf000,
                base: 0xffff_0000,
                limit: 0xffff,
                ar: 0x9b
            }),
            None
        );
        // Unreal mode, and a 32-bit segment.
        assert_eq!(
            v86_segment(&Segment {
                limit: 0xffff_ffff,
                ..s
            }),
            None
        );
        assert_eq!(
            v86_segment(&Segment {
                ar: 0x93 | ar::DB,
                ..s
            }),
            None
        );
    }

    #[test]
    fn segments_just_out_of_real_mode() {
        let seg = |selector: u16, ar: u32| Segment {
            selector,
            base: u64::from(selector) << 4,
            limit: 0xffff,
            ar,
        };
        let mut segs = [seg(0, 0x93); 8];
        segs[Seg::Cs as usize] = seg(0x07c3, 0x9b);
        segs[Seg::Ds as usize] = seg(0x0012, 0x93);
        segs[Seg::Tr as usize] = seg(0, 0x8b);
        let mut fixed = segs;
        protected_mode_fixup(&mut fixed);
        assert_eq!(fixed[Seg::Cs as usize].selector, 0x07c0);
        assert_eq!(fixed[Seg::Ds as usize].ar, 0xd3, "DPL raised to RPL 2");
        assert_eq!(fixed[Seg::Tr as usize], segs[Seg::Tr as usize]);
        // Ring 3 of a protected-mode guest is left alone.
        let mut user = [seg(0x23, 0xf3); 8];
        user[Seg::Cs as usize] = seg(0x1b, 0xfb);
        let before = user;
        protected_mode_fixup(&mut user);
        assert_eq!(user, before);
    }

    #[test]
    fn controls_refuse_a_processor_without_unrestricted_guest() {
        let mut caps = bochs_caps();
        caps.proc2 &= !(u64::from(proc2::UNRESTRICTED_GUEST) << 32);
        assert!(Controls::derive(&caps).is_err());
        let mut caps = bochs_caps();
        caps.ept_vpid = 0;
        assert_eq!(Controls::derive(&caps), Err("INVEPT"));
    }
}

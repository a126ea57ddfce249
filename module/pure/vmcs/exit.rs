// SPDX-License-Identifier: GPL-2.0

//! What a VM exit reports: reasons, interruption information and exit
//! qualifications, decoded.

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

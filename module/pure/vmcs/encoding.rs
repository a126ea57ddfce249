// SPDX-License-Identifier: GPL-2.0

//! Field encodings: what VMREAD and VMWRITE name (SDM vol. 3C, appendix B).

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

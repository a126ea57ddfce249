// SPDX-License-Identifier: GPL-2.0

//! Architectural x86 rules the module enforces on state userspace hands it
//! (`KVM_SET_SREGS`), and the reset state of a vCPU.

/// CR0 bits.
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1 << 0;
    /// Task switched (the next x87/SSE instruction raises #NM).
    pub const TS: u64 = 1 << 3;
    /// Extension type (always 1 on modern CPUs).
    pub const ET: u64 = 1 << 4;
    /// Write protect: supervisor writes honour read-only pages.
    pub const WP: u64 = 1 << 16;
    /// Not write-through.
    pub const NW: u64 = 1 << 29;
    /// Cache disable.
    pub const CD: u64 = 1 << 30;
    /// Paging.
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits.
pub mod cr4 {
    /// Debugging extensions: DR4 and DR5 no longer alias DR6 and DR7 (#UD).
    pub const DE: u64 = 1 << 3;
    /// Page size extensions (4 MiB pages in 32-bit paging).
    pub const PSE: u64 = 1 << 4;
    /// Physical address extension.
    pub const PAE: u64 = 1 << 5;
    /// Machine-check enable.
    pub const MCE: u64 = 1 << 6;
    /// Global pages.
    pub const PGE: u64 = 1 << 7;
    /// The CR4 bits rkvm lets a guest have: VME, PVI, TSD, DE, PSE, PAE, MCE,
    /// PGE, PCE, OSFXSR, OSXMMEXCPT (bits 0-10). Anything else is refused, as
    /// KVM refuses bits the guest's CPUID does not allow.
    pub const SUPPORTED: u64 = 0x7ff;
    /// XSAVE and XCR0 enabled: allowed when the guest's CPUID has XSAVE
    /// (`pure::cpuid::cr4_allowed`).
    pub const OSXSAVE: u64 = 1 << 18;
}

/// Exception and interrupt vectors.
pub mod vector {
    /// Debug exception (#DB).
    pub const DB: u8 = 1;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Breakpoint (#BP).
    pub const BP: u8 = 3;
    /// Overflow (#OF, INTO).
    pub const OF: u8 = 4;
    /// Invalid opcode (#UD).
    pub const UD: u8 = 6;
    /// Double fault (#DF).
    pub const DF: u8 = 8;
    /// General protection (#GP).
    pub const GP: u8 = 13;
    /// Page fault (#PF).
    pub const PF: u8 = 14;
    /// Machine check (#MC).
    pub const MC: u8 = 18;
}

/// EFER bits.
pub mod efer {
    /// SYSCALL enable.
    pub const SCE: u64 = 1 << 0;
    /// Long mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long mode active.
    pub const LMA: u64 = 1 << 10;
    /// No-execute enable.
    pub const NXE: u64 = 1 << 11;
    /// SVM enable: set in the VMCB, never visible to the guest or userspace.
    pub const SVME: u64 = 1 << 12;
    /// The EFER bits a guest may have.
    pub const SUPPORTED: u64 = SCE | LME | LMA | NXE;
}

/// RFLAGS bit 1, always set.
pub const RFLAGS_FIXED: u64 = 1 << 1;
/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.TF.
pub const RFLAGS_TF: u64 = 1 << 8;

/// RFLAGS.AC.
pub const RFLAGS_AC: u64 = 1 << 18;

/// The stack frame of a real-mode interrupt: FLAGS, CS and IP, pushed on
/// the 16-bit stack at `ss_base:sp`. Returns the three stores, in order,
/// as (linear address, word), and the new SP.
pub fn real_mode_frame(
    ss_base: u64,
    sp: u16,
    flags: u64,
    cs: u16,
    ip: u64,
) -> ([(u64, u16); 3], u16) {
    let mut sp = sp;
    let mut stores = [(0, 0); 3];
    for (store, word) in stores.iter_mut().zip([flags as u16, cs, ip as u16]) {
        sp = sp.wrapping_sub(2);
        *store = (ss_base.wrapping_add(u64::from(sp)) & 0xffff_ffff, word);
    }
    (stores, sp)
}

/// RFLAGS after a real-mode interrupt is delivered: IF, TF and AC clear.
pub fn real_mode_interrupt_flags(flags: u64) -> u64 {
    flags & !(RFLAGS_IF | RFLAGS_TF | RFLAGS_AC)
}

/// The control-register part of `struct kvm_sregs` that validation needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlRegs {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// CS.L (64-bit code segment).
    pub cs_l: bool,
}

/// Whether `KVM_SET_SREGS` accepts this state (`kvm_is_valid_sregs()`):
/// `maxphyaddr` is the guest's physical address width, `cr4_allowed` the
/// CR4 bits its CPUID allows.
pub fn valid_sregs(c: &ControlRegs, maxphyaddr: u32, cr4_allowed: u64) -> bool {
    let long_mode = c.efer & efer::LME != 0 && c.cr0 & cr0::PG != 0;
    if long_mode {
        if c.cr4 & cr4::PAE == 0 || c.efer & efer::LMA == 0 {
            return false;
        }
        // A width from userspace's CPUID may be anything: >= 64 means no
        // reserved bits (and must not overflow the shift).
        if c.cr3.checked_shr(maxphyaddr).unwrap_or(0) != 0 {
            return false;
        }
    } else if c.efer & efer::LMA != 0 || c.cs_l {
        return false;
    }
    valid_cr0(c.cr0) && c.cr4 & !cr4_allowed == 0 && c.efer & !efer::SUPPORTED == 0
}

/// Whether CR0 may hold this value: no bits above 31, no NW without CD, no
/// paging without protection.
pub fn valid_cr0(value: u64) -> bool {
    value >> 32 == 0
        && !(value & cr0::NW != 0 && value & cr0::CD == 0)
        && !(value & cr0::PG != 0 && value & cr0::PE == 0)
}

/// CR0 after RESET: CD | NW | ET.
pub const RESET_CR0: u64 = cr0::CD | cr0::NW | cr0::ET;
/// RIP after RESET (with CS.base 0xffff0000: the reset vector 0xfffffff0).
pub const RESET_RIP: u64 = 0xfff0;
/// RDX after RESET when no CPUID leaf 1 is set: family 6.
pub const RESET_RDX: u64 = 0x600;
/// DR6 after RESET: its fixed bits (31:16 and 11:4 read as one).
pub const RESET_DR6: u64 = 0xffff_0ff0;
/// DR7 after RESET: bit 10 reads as one, no breakpoint enabled.
pub const RESET_DR7: u64 = 0x400;
/// IA32_PAT after RESET: WB, WT, UC-, UC in each half.
pub const RESET_PAT: u64 = 0x0007_0406_0007_0406;
/// DR6 bits a `mov` sets: B0-B3, BD, BS, BT.
const DR6_WRITABLE: u64 = 0xe00f;
/// DR7 bits a `mov` sets: all but 10 (fixed one) and 12, 14, 15 (zero).
const DR7_WRITABLE: u64 = 0xffff_2bff;

/// The value DR6 holds after a `mov` of `value` to it, `None` for a #GP
/// (bits 63:32 are reserved). APM vol. 2, 13.1.1.
pub fn dr6_write(value: u64) -> Option<u64> {
    (value >> 32 == 0).then_some((value & DR6_WRITABLE) | RESET_DR6)
}

/// The value DR7 holds after a `mov` of `value` to it, `None` for a #GP.
pub fn dr7_write(value: u64) -> Option<u64> {
    (value >> 32 == 0).then_some((value & DR7_WRITABLE) | RESET_DR7)
}
/// The local APIC base MSR after RESET: 0xfee00000, enabled, BSP for vCPU 0.
pub fn reset_apic_base(bsp: bool) -> u64 {
    0xfee0_0000 | 1 << 11 | if bsp { 1 << 8 } else { 0 }
}

/// A segment descriptor's attributes, as `struct kvm_segment` spells them;
/// the VMCB (`vmcb`) and the VMCS (`vmcs`) each pack them their own way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegAttrib {
    /// Type (4 bits).
    pub type_: u8,
    /// S: code/data (1) or system (0).
    pub s: bool,
    /// DPL.
    pub dpl: u8,
    /// P.
    pub present: bool,
    /// AVL.
    pub avl: bool,
    /// L: 64-bit code.
    pub l: bool,
    /// D/B.
    pub db: bool,
    /// G.
    pub g: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_mode_interrupt_frame() {
        let (stores, sp) = real_mode_frame(0x2000 << 4, 0x100, 0x3202, 0x1234, 0x5678);
        assert_eq!(
            stores,
            [(0x200fe, 0x3202), (0x200fc, 0x1234), (0x200fa, 0x5678)]
        );
        assert_eq!(sp, 0xfa);
        // SP wraps within the 64 KiB segment.
        let (stores, sp) = real_mode_frame(0, 2, 0, 0, 0);
        assert_eq!((stores[1].0, sp), (0xfffe, 0xfffc));
        assert_eq!(real_mode_interrupt_flags(0x4_0302), 0x2);
    }

    fn long_mode() -> ControlRegs {
        ControlRegs {
            cr0: cr0::PE | cr0::PG | cr0::ET,
            cr3: 0x1000,
            cr4: cr4::PAE,
            efer: efer::LME | efer::LMA,
            cs_l: true,
        }
    }

    #[test]
    fn reset_state_is_valid() {
        let c = ControlRegs {
            cr0: RESET_CR0,
            ..Default::default()
        };
        assert!(valid_sregs(&c, 36, cr4::SUPPORTED));
        assert_eq!(RESET_CR0, 0x6000_0010);
        assert_eq!(reset_apic_base(true), 0xfee0_0900);
        assert_eq!(reset_apic_base(false), 0xfee0_0800);
    }

    #[test]
    fn long_mode_rules() {
        assert!(valid_sregs(&long_mode(), 36, cr4::SUPPORTED));
        assert!(!valid_sregs(
            &ControlRegs {
                cr4: 0,
                ..long_mode()
            },
            36,
            cr4::SUPPORTED
        ));
        assert!(!valid_sregs(
            &ControlRegs {
                efer: efer::LME,
                ..long_mode()
            },
            36,
            cr4::SUPPORTED
        ));
        assert!(!valid_sregs(
            &ControlRegs {
                cr3: 1 << 40,
                ..long_mode()
            },
            36,
            cr4::SUPPORTED
        ));
        assert!(valid_sregs(
            &ControlRegs {
                cr3: 1 << 40,
                ..long_mode()
            },
            48,
            cr4::SUPPORTED
        ));
        // Regression: a CPUID address width of 255 once overflowed the shift
        // (a kernel panic reachable from KVM_SET_CPUID2 + KVM_SET_SREGS).
        assert!(valid_sregs(
            &ControlRegs {
                cr3: 1 << 40,
                ..long_mode()
            },
            255,
            cr4::SUPPORTED
        ));
        // LMA or a 64-bit CS outside long mode.
        assert!(!valid_sregs(
            &ControlRegs {
                cr0: cr0::PE,
                ..long_mode()
            },
            36,
            cr4::SUPPORTED
        ));
        let prot = ControlRegs {
            cr0: cr0::PE,
            cr3: 0,
            cr4: 0,
            efer: 0,
            cs_l: true,
        };
        assert!(!valid_sregs(&prot, 36, cr4::SUPPORTED));
    }

    #[test]
    fn cr0_cr4_efer_rules() {
        assert!(!valid_cr0(cr0::NW));
        assert!(!valid_cr0(cr0::PG));
        assert!(!valid_cr0(1 << 32));
        assert!(valid_cr0(cr0::PE | cr0::PG));
        let base = ControlRegs {
            cr0: cr0::PE,
            ..Default::default()
        };
        assert!(!valid_sregs(
            &ControlRegs {
                cr4: 1 << 12,
                ..base
            },
            36,
            cr4::SUPPORTED
        )); // LA57
        assert!(!valid_sregs(
            &ControlRegs {
                efer: efer::SVME,
                ..base
            },
            36,
            cr4::SUPPORTED
        ));
        assert!(valid_sregs(
            &ControlRegs {
                efer: efer::SCE | efer::NXE,
                ..base
            },
            36,
            cr4::SUPPORTED
        ));
    }

    #[test]
    fn debug_register_writes_keep_fixed_bits() {
        assert_eq!(dr6_write(0), Some(RESET_DR6));
        assert_eq!(
            dr6_write(0xffff_ffff),
            Some(0xffff_efff),
            "bit 12 reads as zero"
        );
        assert_eq!(dr6_write(1 << 32), None);
        assert_eq!(dr7_write(0), Some(RESET_DR7));
        assert_eq!(dr7_write(0xffff_d300), Some(0xffff_0700));
        assert_eq!(dr7_write(u64::MAX), None);
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Guest debugging: what `KVM_SET_GUEST_DEBUG` asks for, which breakpoints
//! the processor runs the guest with (the debugger's or the guest's own),
//! how a #DB changes the guest's DR6, and `KVM_SET_DEBUGREGS`' rules.
//!
//! As in KVM (`arch/x86/kvm/x86.c`, `regs.c`): with `KVM_GUESTDBG_USE_HW_BP`
//! the debugger's DR0-DR3 and DR7 are the ones armed in guest mode, else the
//! guest's own; every #DB is intercepted, and one the debugger did not ask
//! for is given to the guest with the DR6 the processor would have written.

use super::x86;

/// `KVM_GUESTDBG_*` control bits (`<linux/kvm.h>`, x86's `<asm/kvm.h>`).
pub mod control {
    /// `KVM_GUESTDBG_ENABLE`.
    pub const ENABLE: u32 = 0x1;
    /// `KVM_GUESTDBG_SINGLESTEP`.
    pub const SINGLESTEP: u32 = 0x2;
    /// `KVM_GUESTDBG_USE_SW_BP`.
    pub const USE_SW_BP: u32 = 0x1_0000;
    /// `KVM_GUESTDBG_USE_HW_BP`.
    pub const USE_HW_BP: u32 = 0x2_0000;
    /// `KVM_GUESTDBG_INJECT_DB`.
    pub const INJECT_DB: u32 = 0x4_0000;
    /// `KVM_GUESTDBG_INJECT_BP`.
    pub const INJECT_BP: u32 = 0x8_0000;
    /// `KVM_GUESTDBG_BLOCKIRQ`.
    pub const BLOCKIRQ: u32 = 0x10_0000;
    /// The bits KVM knows on x86 (`KVM_GUESTDBG_VALID_MASK`).
    pub const KVM: u32 =
        ENABLE | SINGLESTEP | USE_SW_BP | USE_HW_BP | INJECT_DB | INJECT_BP | BLOCKIRQ;
    /// The bits rkvm implements (`KVM_CAP_SET_GUEST_DEBUG2`).
    pub const SUPPORTED: u32 = ENABLE | SINGLESTEP | USE_SW_BP | USE_HW_BP | INJECT_BP;
}

/// DR6 bits that read as one when nothing happened (KVM's
/// `DR6_ACTIVE_LOW`, `DR6_FIXED_1` with RTM active-low: rkvm's guests have
/// no RTM).
pub const DR6_ACTIVE_LOW: u64 = x86::RESET_DR6;
/// DR6.B0-B3: which breakpoint hit.
pub const DR6_TRAP_BITS: u64 = 0xf;
/// DR6.BD: a `mov` to or from a debug register with DR7.GD set.
pub const DR6_BD: u64 = 1 << 13;
/// DR6.BS: a single step.
pub const DR6_BS: u64 = 1 << 14;
/// DR7.GD: general detect.
pub const DR7_GD: u64 = 1 << 13;
/// DR7's L0-L3 and G0-G3: a breakpoint is enabled.
pub const DR7_BP_EN_MASK: u64 = 0xff;
/// The #DB vector.
pub const DB_VECTOR: u8 = x86::vector::DB;
/// The #BP vector.
pub const BP_VECTOR: u8 = x86::vector::BP;

/// A control word with bits rkvm does not implement (of those KVM knows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unsupported;

/// The debugger's breakpoint registers (`kvm_guest_debug.arch.debugreg`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwBreakpoints {
    /// DR0-DR3.
    pub addr: [u64; 4],
    /// DR7, as the processor will hold it.
    pub dr7: u64,
}

/// What `KVM_SET_GUEST_DEBUG` turned on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestDebug {
    /// `KVM_GUESTDBG_SINGLESTEP`: a `KVM_EXIT_DEBUG` after each instruction.
    pub single_step: bool,
    /// `KVM_GUESTDBG_USE_SW_BP`: an INT3 is a `KVM_EXIT_DEBUG` (exception 3)
    /// and does not reach the guest.
    pub sw_bp: bool,
    /// `KVM_GUESTDBG_USE_HW_BP`: these breakpoints are armed, and every
    /// #DB is a `KVM_EXIT_DEBUG` (exception 1).
    pub hw_bp: Option<HwBreakpoints>,
}

impl GuestDebug {
    /// From `kvm_guest_debug`: `control` and `debugreg[0..8]`. A bit KVM
    /// does not know is ignored, as KVM ignores it; one KVM knows and rkvm
    /// does not implement is refused. Without `KVM_GUESTDBG_ENABLE`
    /// everything is off, as in KVM.
    pub fn from_kvm(control: u32, debugreg: &[u64; 8]) -> Result<Self, Unsupported> {
        if control & control::KVM & !control::SUPPORTED != 0 {
            return Err(Unsupported);
        }
        if control & control::ENABLE == 0 {
            return Ok(GuestDebug::default());
        }
        let hw_bp = (control & control::USE_HW_BP != 0).then(|| HwBreakpoints {
            addr: [debugreg[0], debugreg[1], debugreg[2], debugreg[3]],
            // KVM loads what it is given; rkvm keeps the processor's fixed
            // and reserved bits as they must be (a VMCB or VMCS with bits
            // 63:32 of DR7 set fails the entry).
            dr7: sanitize_dr7(debugreg[7]),
        });
        Ok(GuestDebug {
            single_step: control & control::SINGLESTEP != 0,
            sw_bp: control & control::USE_SW_BP != 0,
            hw_bp,
        })
    }

    /// Whether a #DB in guest mode goes to userspace (KVM's
    /// `db_interception`): while single-stepping or with hardware
    /// breakpoints. Otherwise it is the guest's.
    pub fn db_to_user(&self) -> bool {
        self.single_step || self.hw_bp.is_some()
    }
}

/// DR7 with bits 63:32 and the reserved bits clear and bit 10 set.
pub fn sanitize_dr7(value: u64) -> u64 {
    x86::dr7_write(value & 0xffff_ffff).unwrap_or(x86::RESET_DR7)
}

/// The breakpoint registers the processor runs the guest with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Armed {
    /// DR0-DR3.
    pub addr: [u64; 4],
    /// DR7 (the VMCB's or VMCS's guest DR7).
    pub dr7: u64,
}

impl Armed {
    /// Whether a breakpoint is enabled: then DR0-DR3 must be loaded into
    /// the processor around the entry (and the host's put back after).
    pub fn any_enabled(&self) -> bool {
        self.dr7 & DR7_BP_EN_MASK != 0
    }
}

/// The DR7 value to load in the host just before VMRUN (`svm/vmrun.S`), or
/// 0 for none.
///
/// On real hardware VMRUN loads the guest's DR7 from the VMCB and this is
/// redundant. QEMU's emulation of SVM (the test machine) copies the VMCB's
/// DR7 without arming its breakpoints; only a MOV to DR7 arms them, so rkvm
/// moves the same value to DR7 one instruction before VMRUN. In that window
/// the host could itself hit an execute breakpoint at the VMRUN
/// instruction (a fault that would repeat forever): if an enabled execute
/// breakpoint lies in the `len` bytes at `start` (the function holding
/// VMRUN), nothing is
/// loaded. A data breakpoint there is a trap the kernel ignores; GD is left
/// out (the host's own MOV DR after the exit would fault).
pub fn host_preload_dr7(armed: &Armed, start: u64, len: u64) -> u64 {
    if !armed.any_enabled() {
        return 0;
    }
    let executes_in_avoid = (0..4).any(|i| {
        let enabled = armed.dr7 >> (2 * i) & 3 != 0;
        let execute = armed.dr7 >> (16 + 4 * i) & 3 == 0;
        enabled && execute && armed.addr[i].wrapping_sub(start) < len
    });
    if executes_in_avoid {
        0
    } else {
        armed.dr7 & !DR7_GD
    }
}

/// KVM's `kvm_update_dr7` and `eff_db`: the debugger's breakpoints when it
/// uses hardware breakpoints, else the guest's own `addr` and `dr7`.
pub fn armed(guest_addr: [u64; 4], guest_dr7: u64, dbg: &GuestDebug) -> Armed {
    match dbg.hw_bp {
        Some(hw) => Armed {
            addr: hw.addr,
            dr7: hw.dr7,
        },
        None => Armed {
            addr: guest_addr,
            dr7: sanitize_dr7(guest_dr7),
        },
    }
}

/// The guest's DR6 after a #DB whose cause is `payload` (B0-B3, BD, BS as
/// they are set, the VMX exit qualification's layout): KVM's
/// `kvm_deliver_exception_payload`. B0-B3 are replaced, BD and BS add up,
/// the fixed bits stay.
pub fn dr6_after_db(dr6: u64, payload: u64) -> u64 {
    let mut dr6 = dr6 & !DR6_TRAP_BITS;
    dr6 &= !(payload & DR6_ACTIVE_LOW);
    dr6 |= payload & !DR6_ACTIVE_LOW;
    dr6 &= !(1 << 12);
    dr6 | DR6_ACTIVE_LOW
}

/// `KVM_SET_DEBUGREGS`' checks (`kvm_vcpu_ioctl_x86_set_debugregs`):
/// `flags` must be 0 and bits 63:32 of DR6 and DR7 clear.
pub fn valid_debugregs(flags: u64, dr6: u64, dr7: u64) -> bool {
    flags == 0 && dr6 >> 32 == 0 && dr7 >> 32 == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bits() {
        let regs = [1, 2, 3, 4, 0, 0, 0, 0x1_0000_0403];
        assert_eq!(
            GuestDebug::from_kvm(control::SINGLESTEP, &regs),
            Ok(GuestDebug::default()),
            "without ENABLE nothing is on"
        );
        let d = GuestDebug::from_kvm(
            control::ENABLE | control::USE_SW_BP | control::USE_HW_BP,
            &regs,
        )
        .unwrap();
        assert!(d.sw_bp && !d.single_step && d.db_to_user());
        assert_eq!(
            d.hw_bp,
            Some(HwBreakpoints {
                addr: [1, 2, 3, 4],
                dr7: 0x403
            })
        );
        assert_eq!(
            GuestDebug::from_kvm(control::ENABLE | control::INJECT_DB, &regs),
            Err(Unsupported)
        );
        assert!(GuestDebug::from_kvm(control::ENABLE | 0x8000_0000, &regs).is_ok());
        let s = GuestDebug::from_kvm(control::ENABLE | control::SINGLESTEP, &regs).unwrap();
        assert!(s.db_to_user() && s.hw_bp.is_none());
        assert!(!GuestDebug::default().db_to_user());
    }

    #[test]
    fn debugger_breakpoints_win() {
        let guest = [0x10, 0x20, 0x30, 0x40];
        let off = GuestDebug::default();
        let a = armed(guest, 0x401, &off);
        assert_eq!(a.addr, guest);
        assert!(a.any_enabled());
        assert!(!armed(guest, 0x400, &off).any_enabled());
        let dbg = GuestDebug {
            hw_bp: Some(HwBreakpoints {
                addr: [7, 0, 0, 0],
                dr7: 0x402,
            }),
            ..off
        };
        assert_eq!(
            armed(guest, 0x4ff, &dbg),
            Armed {
                addr: [7, 0, 0, 0],
                dr7: 0x402
            }
        );
        assert_eq!(sanitize_dr7(u64::MAX), 0xffff_2fff);
    }

    #[test]
    fn preload_only_what_cannot_hit_vmrun() {
        let off = Armed {
            addr: [0; 4],
            dr7: 0x400,
        };
        assert_eq!(host_preload_dr7(&off, 0x1000, 0x100), 0);
        let exec = Armed {
            addr: [0, 0x1080, 0, 0],
            dr7: 0x400 | 1 << 2 | DR7_GD,
        };
        assert_eq!(host_preload_dr7(&exec, 0x1000, 0x100), 0);
        assert_eq!(host_preload_dr7(&exec, 0x2000, 0x100), 0x404);
        // A write watchpoint there is harmless (a trap).
        let write = Armed {
            addr: [0, 0x1080, 0, 0],
            dr7: 0x400 | 1 << 2 | 1 << 20,
        };
        assert_eq!(host_preload_dr7(&write, 0x1000, 0x100), write.dr7);
    }

    #[test]
    fn dr6_of_a_db() {
        // Breakpoint 1 after a step: B1 replaces nothing, BS stays (sticky).
        let dr6 = dr6_after_db(DR6_ACTIVE_LOW | DR6_BS | 0x1, 0x2);
        assert_eq!(dr6, DR6_ACTIVE_LOW | DR6_BS | 0x2);
        assert_eq!(dr6_after_db(DR6_ACTIVE_LOW, DR6_BS), 0xffff_4ff0);
        // Bit 12 (enabled breakpoint in the payload layout) never shows.
        assert_eq!(dr6_after_db(DR6_ACTIVE_LOW, 0x1001), 0xffff_0ff1);
    }

    #[test]
    fn debugregs_rules() {
        assert!(valid_debugregs(0, 0xffff_0ff0, 0x400));
        assert!(!valid_debugregs(1, 0xffff_0ff0, 0x400));
        assert!(!valid_debugregs(0, 1 << 32, 0x400));
        assert!(!valid_debugregs(0, 0, 1 << 40));
    }
}

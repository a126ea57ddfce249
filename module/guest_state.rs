// SPDX-License-Identifier: GPL-2.0

//! Guest state that both backends keep the same way, outside the VMCB or
//! VMCS: the x87/SSE registers (an FXSAVE image, loaded around each run)
//! and the debug registers (the guest's, and the debugger's breakpoints).

use kernel::prelude::*;

use crate::{
    abi::uapi,
    pure::{
        debug::{
            self,
            Armed,
            GuestDebug, //
        },
        x86, //
    }, //
};

/// Offsets in the FXSAVE image: ST0-ST7 and XMM0-XMM15, 16 bytes each.
const FX_ST: usize = 32;
const FX_XMM: usize = 160;

/// FXSAVE image of the guest's x87/SSE state.
#[repr(C, align(16))]
pub(crate) struct FxArea([u8; 512]);

impl FxArea {
    /// A heap image in the RESET state.
    pub(crate) fn new() -> Result<KBox<Self>> {
        let mut fx = KBox::new(FxArea([0; 512]), GFP_KERNEL)?;
        fx.reset();
        Ok(fx)
    }

    /// FCW 0x37f, MXCSR 0x1f80, everything else 0: the x87 and SSE reset
    /// values.
    pub(crate) fn reset(&mut self) {
        self.0.fill(0);
        self.0[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        self.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    }

    /// Loads the image into the processor. Call inside a kernel FPU section
    /// (`sys::FpuGuard`), whose registers are then the guest's.
    pub(crate) fn restore(&self, _fpu: &crate::sys::FpuGuard) {
        // SAFETY: `self` is a 512-byte, 16-byte-aligned FXSAVE image; the
        // FPU section (witnessed by `_fpu`) makes the registers ours.
        unsafe {
            core::arch::asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack, readonly))
        };
    }

    /// Stores the processor's registers into the image.
    pub(crate) fn save(&mut self, _fpu: &crate::sys::FpuGuard) {
        // SAFETY: as in `restore`; FXSAVE writes exactly the 512 bytes.
        unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack)) };
    }

    /// `KVM_GET_FPU`.
    pub(crate) fn to_kvm(&self) -> uapi::kvm_fpu {
        let fx = &self.0;
        let u16_at = |o: usize| u16::from_le_bytes([fx[o], fx[o + 1]]);
        let u64_at = |o: usize| u64::from_le_bytes(fx[o..o + 8].try_into().unwrap_or([0; 8]));
        let mut fpu = uapi::kvm_fpu {
            fcw: u16_at(0),
            fsw: u16_at(2),
            ftwx: fx[4],
            last_opcode: u16_at(6),
            last_ip: u64_at(8),
            last_dp: u64_at(16),
            mxcsr: u32::from_le_bytes([fx[24], fx[25], fx[26], fx[27]]),
            ..Default::default()
        };
        for (i, reg) in fpu.fpr.iter_mut().enumerate() {
            reg.copy_from_slice(&fx[FX_ST + 16 * i..FX_ST + 16 * (i + 1)]);
        }
        for (i, reg) in fpu.xmm.iter_mut().enumerate() {
            reg.copy_from_slice(&fx[FX_XMM + 16 * i..FX_XMM + 16 * (i + 1)]);
        }
        fpu
    }

    /// `KVM_SET_FPU` of state already validated (MXCSR reserved bits clear).
    pub(crate) fn set_from_kvm(&mut self, fpu: &uapi::kvm_fpu) {
        let fx = &mut self.0;
        fx[0..2].copy_from_slice(&fpu.fcw.to_le_bytes());
        fx[2..4].copy_from_slice(&fpu.fsw.to_le_bytes());
        fx[4] = fpu.ftwx;
        fx[6..8].copy_from_slice(&fpu.last_opcode.to_le_bytes());
        fx[8..16].copy_from_slice(&fpu.last_ip.to_le_bytes());
        fx[16..24].copy_from_slice(&fpu.last_dp.to_le_bytes());
        fx[24..28].copy_from_slice(&fpu.mxcsr.to_le_bytes());
        for (i, reg) in fpu.fpr.iter().enumerate() {
            fx[FX_ST + 16 * i..FX_ST + 16 * (i + 1)].copy_from_slice(reg);
        }
        for (i, reg) in fpu.xmm.iter().enumerate() {
            fx[FX_XMM + 16 * i..FX_XMM + 16 * (i + 1)].copy_from_slice(reg);
        }
    }
}

/// The vCPU's debug registers: the guest's DR0-DR3, DR6 and DR7, as it
/// reads them (every MOV DR is intercepted and emulated on these), and what
/// the debugger asked for with `KVM_SET_GUEST_DEBUG`. The breakpoints armed
/// in guest mode ([`DebugRegs::armed`]) are the debugger's when it uses
/// hardware breakpoints, else the guest's; the backends load them around
/// each entry ([`load_armed`]).
pub(crate) struct DebugRegs {
    dr: [u64; 4],
    dr6: u64,
    dr7: u64,
    guest_debug: GuestDebug,
}

impl DebugRegs {
    /// The RESET values.
    pub(crate) const RESET: DebugRegs = DebugRegs {
        dr: [0; 4],
        dr6: x86::RESET_DR6,
        dr7: x86::RESET_DR7,
        guest_debug: GuestDebug {
            single_step: false,
            sw_bp: false,
            hw_bp: None,
        },
    };

    /// Back to RESET; the debugger's settings stay (as in KVM, a vCPU
    /// reset does not end guest debugging).
    pub(crate) fn reset(&mut self) {
        let guest_debug = self.guest_debug;
        *self = DebugRegs {
            guest_debug,
            ..DebugRegs::RESET
        };
    }

    /// Debug register `n` (0-7; 4 and 5 alias 6 and 7).
    pub(crate) fn get(&self, n: u8) -> Option<u64> {
        match n {
            0..=3 => self.dr.get(usize::from(n)).copied(),
            4 | 6 => Some(self.dr6),
            5 | 7 => Some(self.dr7),
            _ => None,
        }
    }

    /// Sets debug register `n`: false if the value is invalid (a #GP).
    pub(crate) fn set(&mut self, n: u8, value: u64) -> bool {
        match n {
            0..=3 => {
                if let Some(dr) = self.dr.get_mut(usize::from(n)) {
                    *dr = value;
                }
                true
            }
            4 | 6 => x86::dr6_write(value).map(|v| self.dr6 = v).is_some(),
            5 | 7 => x86::dr7_write(value).map(|v| self.dr7 = v).is_some(),
            _ => false,
        }
    }

    /// `KVM_GET_DEBUGREGS`: DR0-DR3, DR6, DR7.
    pub(crate) fn kvm(&self) -> ([u64; 4], u64, u64) {
        (self.dr, self.dr6, self.dr7)
    }

    /// `KVM_SET_DEBUGREGS` of values already checked
    /// (`pure::debug::valid_debugregs`): stored as given, as KVM does.
    pub(crate) fn set_kvm(&mut self, dr: [u64; 4], dr6: u64, dr7: u64) {
        self.dr = dr;
        self.dr6 = dr6;
        self.dr7 = dr7;
    }

    /// What `KVM_SET_GUEST_DEBUG` turned on.
    pub(crate) fn guest_debug(&self) -> &GuestDebug {
        &self.guest_debug
    }

    /// `KVM_SET_GUEST_DEBUG`.
    pub(crate) fn set_guest_debug(&mut self, dbg: GuestDebug) {
        self.guest_debug = dbg;
    }

    /// The breakpoints the processor runs the guest with.
    pub(crate) fn armed(&self) -> Armed {
        debug::armed(self.dr, self.dr7, &self.guest_debug)
    }

    /// A #DB that is the guest's (`payload`: its cause, as
    /// `pure::debug::dr6_after_db` takes it): DR6 updated and DR7.GD
    /// cleared, as the processor does when it delivers one.
    pub(crate) fn deliver_db(&mut self, payload: u64) {
        self.dr6 = debug::dr6_after_db(self.dr6, payload);
        self.dr7 &= !debug::DR7_GD;
    }
}

/// Around one entry, with interrupts off: when `armed` enables a
/// breakpoint, its DR0-DR3 go into the processor before `enter` (DR7 is
/// the VMCB's or VMCS's guest field, which the entry loads) and the host's
/// (the kernel's hardware breakpoints) come back after, as KVM's
/// `vcpu_enter_guest` does. Otherwise the processor's DR0-DR3 are left
/// alone: no breakpoint of the guest is enabled.
pub(crate) fn load_armed<R>(armed: &Armed, enter: impl FnOnce() -> R) -> R {
    if !armed.any_enabled() {
        return enter();
    }
    let mut host = [0u64; 4];
    // SAFETY: interrupts are off (the caller is inside
    // `FpuGuard::guest_irqs_off`); the helper disables the host's DR7
    // before it writes DR0-DR3, so no host breakpoint fires on a guest
    // address, reads four u64 from `addr` and writes four to `host`.
    unsafe { crate::ffi::rkvm_debugregs_load(armed.addr.as_ptr(), host.as_mut_ptr()) };
    let result = enter();
    // SAFETY: same CPU, interrupts still off: puts back the host's
    // DR0-DR3 (read into `host` above), DR6 and DR7 if it has hardware
    // breakpoints enabled.
    unsafe { crate::ffi::rkvm_debugregs_restore(host.as_ptr()) };
    result
}

// SPDX-License-Identifier: GPL-2.0

//! Guest state that both backends keep the same way, outside the VMCB or
//! VMCS: the x87/SSE/AVX registers and XCR0 (an XSAVE image, loaded around each run)
//! and the debug registers (the guest's, and the debugger's breakpoints).

use core::sync::atomic::{
    AtomicU32,
    AtomicU64,
    AtomicUsize,
    Ordering, //
};

use kernel::prelude::*;

use crate::{
    abi::uapi,
    pure::{
        debug::{
            self,
            Armed,
            GuestDebug, //
        },
        x86,
        xsave, //
    }, //
};

/// Offsets in the FXSAVE image: ST0-ST7 and XMM0-XMM15, 16 bytes each.
const FX_ST: usize = 32;
const FX_XMM: usize = 160;

/// The host's XSAVE support, probed once at module load
/// ([`probe_host_xsave`]): its XCR0 (0: no XSAVE, FXSAVE images), the
/// XCR0 bits guests may have, the uabi image size and the MXCSR bits the
/// processor allows.
static HOST_XCR0: AtomicU64 = AtomicU64::new(0);
static HOST_SUPPORTED: AtomicU64 = AtomicU64::new(0);
static HOST_UABI_SIZE: AtomicUsize = AtomicUsize::new(xsave::EXTENDED);
static MXCSR_MASK: AtomicU32 = AtomicU32::new(xsave::MXCSR_MASK_DEFAULT);

/// Reads XCR0 (XGETBV with ECX 0). Only where CR4.OSXSAVE is set.
fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller saw CPUID.1:ECX.OSXSAVE (CR4.OSXSAVE set), so
    // XGETBV does not fault; it only reads XCR0.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                         options(nostack, nomem, preserves_flags))
    };
    u64::from(lo) | (u64::from(hi) << 32)
}

/// Writes XCR0 (XSETBV with ECX 0).
///
/// # Safety
///
/// CR4.OSXSAVE is set and `value` is a valid XCR0 for this processor (a
/// subset of the host's own XCR0 with x87 set, and AVX only with SSE): else
/// XSETBV faults. The caller puts the host's value back before anything
/// else can use the FPU (interrupts off, inside a kernel FPU section).
unsafe fn xsetbv0(value: u64) {
    // SAFETY: as the caller guarantees.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") value as u32,
                         in("edx") (value >> 32) as u32, options(nostack, nomem, preserves_flags))
    };
}

/// Probes the host's XSAVE support (module load): XCR0 if the kernel
/// enabled XSAVE (CPUID.1:ECX.OSXSAVE), the sizes of leaf 0xD, and the
/// processor's MXCSR_MASK from an FXSAVE image.
pub(crate) fn probe_host_xsave() {
    use core::arch::x86_64::__cpuid_count;
    let osxsave = __cpuid_count(1, 0).ecx & (1 << 27) != 0;
    let xcr0 = if osxsave { xgetbv0() } else { 0 };
    let host = xsave::HostXsave::new(xcr0, |leaf, sub| {
        let r = __cpuid_count(leaf, sub);
        [r.eax, r.ebx, r.ecx, r.edx]
    });
    HOST_XCR0.store(host.xcr0, Ordering::Relaxed);
    HOST_SUPPORTED.store(host.supported, Ordering::Relaxed);
    HOST_UABI_SIZE.store(host.uabi_size, Ordering::Relaxed);
    let mut fx = FxImage([0; 512]);
    let fpu = crate::sys::FpuGuard::begin();
    // SAFETY: `fx` is a 512-byte, 16-byte-aligned FXSAVE image; the FPU
    // section makes the registers ours (FXSAVE only reads them).
    unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) fx.0.as_mut_ptr(), options(nostack)) };
    drop(fpu);
    let mask = u32::from_le_bytes([fx.0[28], fx.0[29], fx.0[30], fx.0[31]]);
    MXCSR_MASK.store(xsave::mxcsr_feature_mask(mask), Ordering::Relaxed);
}

/// The host's XSAVE support ([`probe_host_xsave`]).
pub(crate) fn host_xsave() -> xsave::HostXsave {
    xsave::HostXsave {
        xcr0: HOST_XCR0.load(Ordering::Relaxed),
        supported: HOST_SUPPORTED.load(Ordering::Relaxed),
        uabi_size: HOST_UABI_SIZE.load(Ordering::Relaxed),
    }
}

/// The MXCSR bits the processor allows (`mxcsr_feature_mask`).
pub(crate) fn mxcsr_mask() -> u32 {
    MXCSR_MASK.load(Ordering::Relaxed)
}

#[repr(C, align(16))]
struct FxImage([u8; 512]);

/// Room for rkvm's standard-format XSAVE image (`xsave::AREA_SIZE`).
const AREA: usize = 1024;

/// The guest's x87, SSE and AVX state and its XCR0. The state is an XSAVE
/// image in the standard format (an FXSAVE image where the host has no
/// XSAVE), loaded around each run inside a kernel FPU section: the task's
/// own registers are saved by `kernel_fpu_begin()` and come back on its
/// return to user mode. As with KVM's `kvm_load_guest_xsave_state()`, the
/// guest's XCR0 is in the processor from just before the entry to just
/// after the exit; unlike KVM, which loads it only while the guest's
/// CR4.OSXSAVE is set, rkvm loads it whenever it differs from the host's,
/// so that an XSETBV that did not exit always shows (see `save`). A guest
/// that uses XSAVE (Linux) usually has the host's XCR0, and then nothing
/// is switched.
///
/// KVM keeps the guest's state in a kernel `fpstate` swapped with the
/// task's (`fpu_alloc_guest_fpstate()`, `fpu_swap_kvm_fpstate()`,
/// `fpu_copy_guest_fpstate_to_uabi()`); in 7.3 those are
/// `EXPORT_SYMBOL_FOR_KVM`, exported to the modules kvm, kvm-amd and
/// kvm-intel only (modpost refuses them to rkvm.ko), so rkvm keeps its own
/// image and uses `kernel_fpu_begin_mask()` (`EXPORT_SYMBOL_GPL`) around
/// the entry, as it did for the FXSAVE image before.
#[repr(C, align(64))]
pub(crate) struct GuestFpu {
    area: [u8; AREA],
    /// The guest's XCR0, valid for this processor: checked by
    /// `xsave::valid_xcr0` within the host's XCR0, or taken by the
    /// processor's own XSETBV (see `save`). XSETBV takes it.
    xcr0: u64,
    /// The XCR0 `restore` left in the processor for the guest (its own or
    /// the host's), which `save` expects to find there.
    loaded: u64,
}

impl GuestFpu {
    /// A heap image in the RESET state.
    pub(crate) fn new() -> Result<KBox<Self>> {
        let mut fpu = KBox::new(
            GuestFpu {
                area: [0; AREA],
                xcr0: xsave::FP,
                loaded: 0,
            },
            GFP_KERNEL,
        )?;
        fpu.reset();
        Ok(fpu)
    }

    /// The RESET state: every component initial (XSTATE_BV 0), FCW 0x37f
    /// and MXCSR 0x1f80 in the legacy region, XCR0 1 (x87 only).
    pub(crate) fn reset(&mut self) {
        xsave::reset(&mut self.area, mxcsr_mask());
        self.xcr0 = xsave::FP;
    }

    /// Loads the image into the processor, then the guest's XCR0. Call
    /// inside a kernel FPU section (`sys::FpuGuard`) with interrupts off,
    /// right before the entry, and [`GuestFpu::save`] right after the exit.
    pub(crate) fn restore(&mut self, _fpu: &crate::sys::FpuGuard) {
        let host = host_xsave();
        if host.xcr0 == 0 {
            // SAFETY: the area starts with a 512-byte, 16-byte-aligned
            // FXSAVE image whose MXCSR was checked on every way in; the FPU
            // section (witnessed by `_fpu`) makes the registers ours.
            unsafe {
                core::arch::asm!("fxrstor64 [{}]", in(reg) self.area.as_ptr(),
                                 options(nostack, readonly))
            };
            return;
        }
        let rfbm = host.supported;
        // SAFETY: a 64-byte-aligned standard-format image of at least
        // `xsave::AREA_SIZE` bytes: its XSTATE_BV is within `rfbm` (within
        // the host's XCR0, which XCR0 holds now), its XCOMP_BV and reserved
        // header bytes are zero and its MXCSR valid (`xsave::from_uabi`,
        // `set_from_kvm` and XSAVE are the only writers). The FPU section
        // makes the registers ours.
        unsafe {
            core::arch::asm!("xrstor64 [{}]", in(reg) self.area.as_ptr(),
                             in("eax") rfbm as u32, in("edx") (rfbm >> 32) as u32,
                             options(nostack, readonly))
        };
        self.loaded = host.xcr0;
        if self.xcr0 != host.xcr0 {
            // SAFETY: CR4.OSXSAVE is set on the host (its XCR0 is not 0);
            // the guest's XCR0 is valid for this processor (see the field);
            // `save` puts the host's back, with interrupts still off.
            unsafe { xsetbv0(self.xcr0) };
            self.loaded = self.xcr0;
        }
    }

    /// Puts the host's XCR0 back, then stores the processor's registers
    /// into the image.
    ///
    /// XCR0 is read back first: an XCR0 other than the one [`restore`]
    /// loaded means the guest ran an XSETBV that did not exit, which the
    /// architecture rules out (VMX always exits, rkvm sets SVM's intercept)
    /// but QEMU's emulation of SVM (the test machine) does: its XSETBV
    /// ignores the intercept and writes the processor's XCR0 (KVM, which
    /// does not look, then runs its host with the guest's XCR0). rkvm takes
    /// the value as the guest's, since the processor accepted it, and the
    /// host's goes back in all cases.
    ///
    /// [`restore`]: GuestFpu::restore
    pub(crate) fn save(&mut self, _fpu: &crate::sys::FpuGuard) {
        let host = host_xsave();
        if host.xcr0 == 0 {
            // SAFETY: as in `restore`; FXSAVE writes exactly 512 bytes.
            unsafe {
                core::arch::asm!("fxsave64 [{}]", in(reg) self.area.as_mut_ptr(),
                                 options(nostack))
            };
            return;
        }
        let now = xgetbv0();
        if now != self.loaded {
            self.xcr0 = now;
        }
        if now != host.xcr0 {
            // SAFETY: the host's own XCR0.
            unsafe { xsetbv0(host.xcr0) };
        }
        let rfbm = host.supported;
        // SAFETY: as in `restore`; XSAVE writes the components of `rfbm`
        // (at most `xsave::AREA_SIZE` bytes) and XSTATE_BV, with the
        // host's XCR0 in the processor again.
        unsafe {
            core::arch::asm!("xsave64 [{}]", in(reg) self.area.as_mut_ptr(),
                             in("eax") rfbm as u32, in("edx") (rfbm >> 32) as u32,
                             options(nostack))
        };
    }

    /// The guest's XCR0.
    pub(crate) fn xcr0(&self) -> u64 {
        self.xcr0
    }

    /// Sets the guest's XCR0, if valid for a guest whose CPUID allows
    /// `guest_supported` (`xsave::valid_xcr0`): false if not.
    pub(crate) fn set_xcr0(&mut self, index: u32, value: u64, guest_supported: u64) -> bool {
        let guest_supported = guest_supported & host_xsave().supported;
        if !xsave::valid_xcr0(index, value, guest_supported) {
            return false;
        }
        self.xcr0 = value;
        true
    }

    /// `KVM_GET_XSAVE(2)`: the image in the uabi format, the components
    /// of `guest_mask` only (see `xsave::to_uabi`).
    pub(crate) fn to_uabi(&self, guest_mask: u64, out: &mut [u8]) {
        let host = host_xsave();
        if host.xcr0 == 0 {
            // An FXSAVE image: x87 and SSE are always in use (as KVM's
            // image on a host without XSAVE).
            out.fill(0);
            if let (Some(d), Some(s)) = (out.get_mut(..512), self.area.get(..512)) {
                d.copy_from_slice(s);
            }
            return;
        }
        xsave::to_uabi(
            &self.area,
            guest_mask,
            mxcsr_mask(),
            &xsave::sw_reserved(host.xcr0),
            out,
        );
    }

    /// `KVM_SET_XSAVE`: the checks and copy of `xsave::from_uabi`.
    pub(crate) fn set_from_uabi(&mut self, buf: &[u8]) -> core::result::Result<(), xsave::Invalid> {
        let host = host_xsave();
        if host.xcr0 == 0 {
            // As KVM without XSAVE: x87 and SSE only, MXCSR checked.
            if xsave::xstate_bv(buf) & !xsave::FPSSE != 0 {
                return Err(xsave::Invalid::Xfeatures);
            }
            let m = buf.get(xsave::MXCSR..xsave::MXCSR + 4).unwrap_or(&[0; 4]);
            if u32::from_le_bytes([m[0], m[1], m[2], m[3]]) & !mxcsr_mask() != 0 {
                return Err(xsave::Invalid::Mxcsr);
            }
            if let (Some(d), Some(s)) = (self.area.get_mut(..512), buf.get(..512)) {
                d.copy_from_slice(s);
            }
            return Ok(());
        }
        xsave::from_uabi(buf, host.supported, mxcsr_mask(), &mut self.area)
    }

    /// `KVM_GET_FPU`: the legacy region.
    pub(crate) fn to_kvm(&self) -> uapi::kvm_fpu {
        let fx = &self.area;
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

    /// `KVM_SET_FPU` of state already validated (MXCSR within
    /// [`mxcsr_mask`]). Unlike KVM, whose XSTATE_BV may leave them out (and
    /// XRSTOR then initialize them), x87 and SSE are marked in use: the
    /// guest sees what userspace set.
    pub(crate) fn set_from_kvm(&mut self, fpu: &uapi::kvm_fpu) {
        let fx = &mut self.area;
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
        if host_xsave().xcr0 != 0 {
            let bv = xsave::xstate_bv(&self.area) | xsave::FPSSE;
            xsave::set_xstate_bv(&mut self.area, bv);
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

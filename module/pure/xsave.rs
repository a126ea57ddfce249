// SPDX-License-Identifier: GPL-2.0

//! XSAVE: the guest's XCR0 (which values XSETBV and `KVM_SET_XCRS` accept),
//! the sizes CPUID leaf 0xD reports, and the userspace ABI of
//! `KVM_GET/SET_XSAVE(2)`: the standard (non-compacted) XSAVE format, as
//! KVM exposes it (`fpu_copy_guest_fpstate_to_uabi()`,
//! `fpu_copy_uabi_to_guest_fpstate()`).
//!
//! rkvm keeps the guest's state in the same standard format (XSAVE and
//! XRSTOR, never the compacted XSAVES), so the uabi image and the image the
//! processor loads differ only where KVM's ABI says so (components not in
//! XSTATE_BV read as their initial values).

/// XCR0 bit 0: x87 state.
pub const FP: u64 = 1 << 0;
/// XCR0 bit 1: SSE state (XMM0-15, MXCSR).
pub const SSE: u64 = 1 << 1;
/// XCR0 bit 2: AVX state (the upper halves of YMM0-15).
pub const YMM: u64 = 1 << 2;
/// XCR0 bits 3-4: MPX.
const BNDREGS: u64 = 1 << 3;
const BNDCSR: u64 = 1 << 4;
/// XCR0 bits 5-7: AVX-512 (opmask, ZMM_Hi256, Hi16_ZMM).
const AVX512: u64 = 0xe0;
/// XCR0 bits 17-18: AMX (tile configuration, tile data).
const XTILE: u64 = (1 << 17) | (1 << 18);
/// XCR0 bit 18: AMX tile data, the one "dynamic" feature
/// (`XFEATURE_MASK_USER_DYNAMIC`): a guest may have it only with a
/// permission from `arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM)`.
pub const XTILE_DATA: u64 = 1 << 18;
/// x87 and SSE (`XFEATURE_MASK_FPSSE`).
pub const FPSSE: u64 = FP | SSE;
/// The state components rkvm switches and saves for a guest (KVM's
/// `KVM_SUPPORTED_XCR0` has more: MPX, AVX-512, PKRU, AMX, APX). Guests
/// get the ones the host has enabled in its own XCR0.
pub const RKVM_XCR0: u64 = FP | SSE | YMM;

/// Offset of the legacy region's MXCSR (MXCSR_MASK follows it).
pub const MXCSR: usize = 24;
/// Offset of the x87 registers (ST0-7 / MM0-7, 16 bytes each).
const ST: usize = 32;
/// Offset of XMM0-15 (16 bytes each).
const XMM: usize = 160;
/// The legacy region's reserved bytes (not written by XSAVE) and the
/// software-reserved bytes Linux fills for signal frames.
const PADDING: usize = 416;
const SW_RESERVED: usize = 464;
/// The XSAVE header: XSTATE_BV, XCOMP_BV, 48 reserved bytes.
pub const HEADER: usize = 512;
/// The first extended component (AVX in the standard format).
pub const EXTENDED: usize = 576;
/// The AVX component in the standard format: offset and size (CPUID
/// 0xD.2 EBX and EAX, the same on every processor that has it).
pub const YMM_OFFSET: usize = 576;
pub const YMM_SIZE: usize = 256;
/// The image rkvm keeps for a guest: the legacy region, the header and
/// AVX.
pub const AREA_SIZE: usize = YMM_OFFSET + YMM_SIZE;
/// `sizeof(struct kvm_xsave)`: what `KVM_GET/SET_XSAVE` move.
pub const KVM_XSAVE_SIZE: usize = 4096;
/// The x87 control word after RESET or FNINIT.
pub const FCW_INIT: u16 = 0x37f;
/// MXCSR after RESET (`MXCSR_DEFAULT`): all exceptions masked.
pub const MXCSR_INIT: u32 = 0x1f80;
/// The MXCSR_MASK a processor reports as 0 means this one (SDM 11.6.6).
pub const MXCSR_MASK_DEFAULT: u32 = 0xffbf;

/// Whether XSETBV (and `KVM_SET_XCRS`) may write `value` to XCR `index`
/// (`__kvm_set_xcr()`): only XCR0; x87 always on; AVX only with SSE;
/// nothing the guest's CPUID does not offer (`guest_supported`, bit 0
/// always allowed); MPX's two components together; AVX-512's three
/// together and only with AVX; AMX's two together.
pub fn valid_xcr0(index: u32, value: u64, guest_supported: u64) -> bool {
    if index != 0 || value & FP == 0 {
        return false;
    }
    if value & YMM != 0 && value & SSE == 0 {
        return false;
    }
    if value & !(guest_supported | FP) != 0 {
        return false;
    }
    if (value & BNDREGS == 0) != (value & BNDCSR == 0) {
        return false;
    }
    if value & AVX512 != 0 && (value & YMM == 0 || value & AVX512 != AVX512) {
        return false;
    }
    value & XTILE == 0 || value & XTILE == XTILE
}

/// The size of an XSAVE image holding the components in `xcr0` that rkvm
/// supports (`xstate_required_size()`; the standard and compacted formats
/// agree here: AVX follows the header in both).
pub fn required_size(xcr0: u64) -> u32 {
    if xcr0 & YMM != 0 {
        (YMM_OFFSET + YMM_SIZE) as u32
    } else {
        EXTENDED as u32
    }
}

/// The host's XSAVE support that decides the guests': its XCR0 and what
/// its CPUID leaf 0xD says (`host(0xd, i)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostXsave {
    /// The host's XCR0 (0: the host kernel does not use XSAVE, CR4.OSXSAVE
    /// clear: then rkvm offers no XSAVE either).
    pub xcr0: u64,
    /// The XCR0 bits guests may have: the host's among [`RKVM_XCR0`]
    /// (KVM's `kvm_caps.supported_xcr0`).
    pub supported: u64,
    /// `KVM_GET_XSAVE2`'s size and what `KVM_SET_XSAVE` reads: the
    /// standard-format image of the host's user features but the dynamic
    /// ones (the kernel's `fpu_user_cfg.default_size`), at least 576.
    pub uabi_size: usize,
}

impl HostXsave {
    /// From the host's XCR0 and CPUID (`host(leaf, subleaf)`: EAX, EBX,
    /// ECX, EDX). AVX is offered only where leaf 0xD.2 says it sits where
    /// the standard format puts it.
    pub fn new(xcr0: u64, host: impl Fn(u32, u32) -> [u32; 4]) -> Self {
        if xcr0 & FPSSE != FPSSE {
            return HostXsave::default();
        }
        let mut supported = xcr0 & RKVM_XCR0;
        let ymm = host(0xd, 2);
        if ymm[0] as usize != YMM_SIZE || ymm[1] as usize != YMM_OFFSET {
            supported &= !YMM;
        }
        let mut uabi_size = EXTENDED;
        for i in 2..63u32 {
            let bit = 1u64 << i;
            if xcr0 & bit == 0 || bit & XTILE_DATA != 0 {
                continue;
            }
            let r = host(0xd, i);
            let end = (r[1] as usize).saturating_add(r[0] as usize);
            uabi_size = uabi_size.max(end);
        }
        HostXsave {
            xcr0,
            supported,
            uabi_size: uabi_size.min(1 << 20),
        }
    }

    /// `KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)`: the size of the image of
    /// every supported component, at least `sizeof(struct kvm_xsave)`.
    pub fn cap_xsave2(&self) -> usize {
        (required_size(self.supported) as usize).max(KVM_XSAVE_SIZE)
    }
}

/// What userspace's image may not hold (`KVM_SET_XSAVE` is EINVAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// XSTATE_BV has a component the host cannot give guests.
    Xfeatures,
    /// XCOMP_BV is not 0 (userspace uses the standard format only).
    Compacted,
    /// The header's reserved bytes are not 0.
    Reserved,
    /// MXCSR has bits the processor does not allow.
    Mxcsr,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let lo = u64::from(u32_at(b, at));
    let hi = u64::from(u32_at(b, at + 4));
    lo | (hi << 32)
}

fn copy(dst: &mut [u8], src: &[u8], at: usize, len: usize) {
    if let (Some(d), Some(s)) = (dst.get_mut(at..at + len), src.get(at..at + len)) {
        d.copy_from_slice(s);
    }
}

fn zero(dst: &mut [u8], at: usize, len: usize) {
    if let Some(d) = dst.get_mut(at..at + len) {
        d.fill(0);
    }
}

/// XSTATE_BV of an image.
pub fn xstate_bv(area: &[u8]) -> u64 {
    u64_at(area, HEADER)
}

/// Sets XSTATE_BV of an image.
pub fn set_xstate_bv(area: &mut [u8], value: u64) {
    if let Some(d) = area.get_mut(HEADER..HEADER + 8) {
        d.copy_from_slice(&value.to_le_bytes());
    }
}

/// The image of a vCPU after RESET: every component in its initial state
/// (XSTATE_BV 0, as KVM's zeroed guest FPU), with the x87 control word and
/// MXCSR at their reset values in the legacy region (what `KVM_GET_FPU`
/// shows, and what XRSTOR loads into MXCSR) and the processor's
/// `mxcsr_mask`.
pub fn reset(area: &mut [u8], mxcsr_mask: u32) {
    area.fill(0);
    if let Some(d) = area.get_mut(0..2) {
        d.copy_from_slice(&FCW_INIT.to_le_bytes());
    }
    if let Some(d) = area.get_mut(MXCSR..MXCSR + 8) {
        d[..4].copy_from_slice(&MXCSR_INIT.to_le_bytes());
        d[4..].copy_from_slice(&mxcsr_mask.to_le_bytes());
    }
}

/// `KVM_GET_XSAVE(2)` (`__copy_xstate_to_uabi_buf()` in XSAVE mode): the
/// guest's image `area` written to `out` in the standard format, keeping
/// only the components in `mask` (the guest's supported XCR0 with x87 and
/// SSE). A component outside XSTATE_BV reads as its initial state (the
/// legacy parts from `init`: FCW 0x37f, MXCSR 0x1f80 and the processor's
/// MXCSR_MASK; extended components as zeros); the legacy region's padding
/// is zero, its software-reserved bytes are `sw_reserved` (Linux's
/// `fx_sw_bytes`: the magic and sizes of a signal frame); the header holds
/// XSTATE_BV alone; the rest of `out` is zero.
pub fn to_uabi(area: &[u8], mask: u64, mxcsr_mask: u32, sw_reserved: &[u8; 48], out: &mut [u8]) {
    out.fill(0);
    let bv = xstate_bv(area) & mask;
    let mut init = [0u8; EXTENDED];
    reset(&mut init, mxcsr_mask);
    let fp_src = if bv & FP != 0 { area } else { &init[..] };
    copy(out, fp_src, 0, MXCSR);
    copy(out, fp_src, ST, XMM - ST);
    let mxcsr_src = if bv & (SSE | YMM) != 0 {
        area
    } else {
        &init[..]
    };
    copy(out, mxcsr_src, MXCSR, 8);
    if bv & SSE != 0 {
        copy(out, area, XMM, PADDING - XMM);
    }
    if let Some(d) = out.get_mut(SW_RESERVED..SW_RESERVED + 48) {
        d.copy_from_slice(sw_reserved);
    }
    if let Some(d) = out.get_mut(HEADER..HEADER + 8) {
        d.copy_from_slice(&bv.to_le_bytes());
    }
    if bv & YMM != 0 {
        copy(out, area, YMM_OFFSET, YMM_SIZE);
    }
}

/// `KVM_SET_XSAVE` (`fpu_copy_uabi_to_guest_fpstate()`): checks
/// userspace's image `buf` as KVM does, in KVM's order (XSTATE_BV within
/// `supported`, the host's components KVM can give guests; XCOMP_BV 0; the
/// reserved header bytes 0; MXCSR within `mxcsr_feature_mask` when x87,
/// SSE or AVX is in XSTATE_BV), then copies the components in XSTATE_BV
/// into the guest's image `area` and makes XSTATE_BV theirs: the others
/// are in their initial state at the next entry (XRSTOR initializes them).
/// With SSE or AVX but not x87, MXCSR and MXCSR_MASK come from `buf` too.
/// Nothing changes on an error.
pub fn from_uabi(
    buf: &[u8],
    supported: u64,
    mxcsr_feature_mask: u32,
    area: &mut [u8],
) -> Result<(), Invalid> {
    let bv = u64_at(buf, HEADER);
    if bv & !supported != 0 {
        return Err(Invalid::Xfeatures);
    }
    if u64_at(buf, HEADER + 8) != 0 {
        return Err(Invalid::Compacted);
    }
    if buf
        .get(HEADER + 16..EXTENDED)
        .is_none_or(|r| r.iter().any(|&b| b != 0))
    {
        return Err(Invalid::Reserved);
    }
    if bv & (FP | SSE | YMM) != 0 && u32_at(buf, MXCSR) & !mxcsr_feature_mask != 0 {
        return Err(Invalid::Mxcsr);
    }
    if bv & FP == 0 && bv & (SSE | YMM) != 0 {
        copy(area, buf, MXCSR, 8);
    }
    if bv & FP != 0 {
        copy(area, buf, 0, XMM);
    }
    if bv & SSE != 0 {
        copy(area, buf, XMM, PADDING - XMM);
    }
    if bv & YMM != 0 {
        copy(area, buf, YMM_OFFSET, YMM_SIZE);
    }
    set_xstate_bv(area, bv);
    // XRSTOR's standard form faults on anything but zeros here.
    zero(area, HEADER + 8, EXTENDED - HEADER - 8);
    Ok(())
}

/// The MXCSR bits a guest may set (`mxcsr_feature_mask`): the processor's
/// MXCSR_MASK from an FXSAVE image, 0 meaning [`MXCSR_MASK_DEFAULT`].
pub fn mxcsr_feature_mask(fxsave_mxcsr_mask: u32) -> u32 {
    if fxsave_mxcsr_mask == 0 {
        MXCSR_MASK_DEFAULT
    } else {
        fxsave_mxcsr_mask
    }
}

/// The legacy region's software-reserved bytes as `KVM_GET_XSAVE` fills
/// them (`xstate_fx_sw_bytes`, the ptrace regset's): the host's user
/// features (its XCR0) in the first 8 bytes, zeros after.
pub fn sw_reserved(host_xcr0: u64) -> [u8; 48] {
    let mut b = [0u8; 48];
    b[0..8].copy_from_slice(&host_xcr0.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xcr0_rules_are_kvms() {
        let all = FP | SSE | YMM;
        assert!(valid_xcr0(0, FP, 0), "x87 alone, even without XSAVE");
        assert!(valid_xcr0(0, FP | SSE, all));
        assert!(valid_xcr0(0, all, all));
        assert!(!valid_xcr0(1, FP, all), "only XCR0");
        assert!(!valid_xcr0(0, SSE, all), "x87 must stay on");
        assert!(!valid_xcr0(0, 0, all));
        assert!(!valid_xcr0(0, FP | YMM, all), "AVX needs SSE");
        assert!(!valid_xcr0(0, all, FP | SSE), "not in the guest's CPUID");
        assert!(!valid_xcr0(0, FP | (1 << 9), all), "PKRU: not offered");
        assert!(!valid_xcr0(0, FP | BNDREGS, u64::MAX), "MPX halves");
        assert!(valid_xcr0(0, FP | BNDREGS | BNDCSR, u64::MAX));
        assert!(
            !valid_xcr0(0, FP | SSE | AVX512, u64::MAX),
            "AVX-512 needs AVX"
        );
        assert!(!valid_xcr0(0, all | (1 << 5), u64::MAX), "AVX-512 thirds");
        assert!(valid_xcr0(0, all | AVX512, u64::MAX));
        assert!(!valid_xcr0(0, FP | (1 << 17), u64::MAX), "AMX halves");
        assert!(!valid_xcr0(0, FP | (1 << 63), all));
    }

    fn epyc(leaf: u32, sub: u32) -> [u32; 4] {
        match (leaf, sub) {
            (0xd, 2) => [256, 576, 0, 0],
            (0xd, 9) => [8, 2688, 0, 0],
            _ => [0; 4],
        }
    }

    #[test]
    fn host_support() {
        let h = HostXsave::new(0x7, epyc);
        assert_eq!(h.supported, 0x7);
        assert_eq!(h.uabi_size, 832);
        assert_eq!(h.cap_xsave2(), 4096);
        let pkru = HostXsave::new(0x207, epyc);
        assert_eq!(pkru.supported, 0x7, "PKRU is not switched by rkvm");
        assert_eq!(pkru.uabi_size, 2696, "but is in the host's user image");
        assert_eq!(HostXsave::new(0, epyc), HostXsave::default());
        let odd = HostXsave::new(0x7, |_, _| [128, 600, 0, 0]);
        assert_eq!(odd.supported, FPSSE, "AVX where the format does not put it");
        assert_eq!(required_size(0x3), 576);
        assert_eq!(required_size(0x7), 832);
    }

    fn image() -> [u8; AREA_SIZE] {
        let mut a = [0u8; AREA_SIZE];
        for (i, b) in a.iter_mut().enumerate() {
            *b = (i % 251) as u8 | 1;
        }
        a[MXCSR..MXCSR + 4].copy_from_slice(&0x1f80u32.to_le_bytes());
        a[MXCSR + 4..MXCSR + 8].copy_from_slice(&0xffffu32.to_le_bytes());
        a[HEADER..EXTENDED].fill(0);
        a
    }

    #[test]
    fn uabi_round_trip() {
        let mut area = image();
        set_xstate_bv(&mut area, 0x7);
        let sw = sw_reserved(0x7);
        let mut out = [0xffu8; 4096];
        to_uabi(&area, 0x7, 0xffff, &sw, &mut out);
        assert_eq!(&out[..PADDING], &area[..PADDING]);
        assert!(out[PADDING..SW_RESERVED].iter().all(|&b| b == 0));
        assert_eq!(&out[SW_RESERVED..HEADER], &sw[..]);
        assert_eq!(u64_at(&out, HEADER), 0x7);
        assert!(out[HEADER + 8..EXTENDED].iter().all(|&b| b == 0));
        assert_eq!(&out[YMM_OFFSET..AREA_SIZE], &area[YMM_OFFSET..AREA_SIZE]);
        assert!(out[AREA_SIZE..].iter().all(|&b| b == 0));

        let mut back = [0u8; AREA_SIZE];
        reset(&mut back, 0xffff);
        assert_eq!(from_uabi(&out, 0x7, 0xffff, &mut back), Ok(()));
        assert_eq!(&back[..PADDING], &area[..PADDING]);
        assert_eq!(xstate_bv(&back), 0x7);
        assert_eq!(&back[YMM_OFFSET..], &area[YMM_OFFSET..]);
    }

    #[test]
    fn uabi_components_outside_the_mask_read_as_init() {
        let mut area = image();
        set_xstate_bv(&mut area, 0x7);
        let mut out = [0u8; 4096];
        // A guest without AVX in its CPUID: YMM is left out.
        to_uabi(&area, FPSSE, 0xffff, &[0; 48], &mut out);
        assert_eq!(u64_at(&out, HEADER), FPSSE);
        assert!(out[YMM_OFFSET..].iter().all(|&b| b == 0));
        // Nothing in use: the initial x87 and SSE state.
        set_xstate_bv(&mut area, 0);
        to_uabi(&area, 0x7, 0xfffe, &[0; 48], &mut out);
        assert_eq!(&out[0..2], &[0x7f, 0x03]);
        assert!(out[2..MXCSR].iter().all(|&b| b == 0));
        assert_eq!(u32_at(&out, MXCSR), 0x1f80);
        assert_eq!(u32_at(&out, MXCSR + 4), 0xfffe);
        assert!(out[ST..HEADER].iter().all(|&b| b == 0));
        // AVX alone in use: MXCSR is the guest's.
        set_xstate_bv(&mut area, YMM);
        area[MXCSR] = 0xc0;
        to_uabi(&area, 0x7, 0xffff, &[0; 48], &mut out);
        assert_eq!(out[MXCSR], 0xc0);
        assert!(out[XMM..PADDING].iter().all(|&b| b == 0));
    }

    #[test]
    fn uabi_checks_in_kvms_order() {
        let mut area = [0u8; AREA_SIZE];
        reset(&mut area, 0xffff);
        let before = area;
        let mut buf = [0u8; 4096];
        buf[HEADER] = 0x8;
        assert_eq!(
            from_uabi(&buf, 0x7, 0xffff, &mut area),
            Err(Invalid::Xfeatures)
        );
        buf[HEADER] = 0x3;
        buf[HEADER + 8] = 1;
        assert_eq!(
            from_uabi(&buf, 0x7, 0xffff, &mut area),
            Err(Invalid::Compacted)
        );
        buf[HEADER + 8] = 0;
        buf[EXTENDED - 1] = 1;
        assert_eq!(
            from_uabi(&buf, 0x7, 0xffff, &mut area),
            Err(Invalid::Reserved)
        );
        buf[EXTENDED - 1] = 0;
        buf[MXCSR + 2] = 1;
        assert_eq!(from_uabi(&buf, 0x7, 0xffff, &mut area), Err(Invalid::Mxcsr));
        assert_eq!(area, before, "nothing changed");
        // MXCSR is not looked at when nothing uses it.
        buf[HEADER] = 0;
        assert_eq!(from_uabi(&buf, 0x7, 0xffff, &mut area), Ok(()));
        assert_eq!(u32_at(&area, MXCSR), 0x1f80, "kept");
        // SSE without x87: MXCSR comes with it, the x87 registers do not.
        buf[HEADER] = 0x2;
        buf[MXCSR + 2] = 0;
        buf[MXCSR] = 0x40;
        buf[0] = 0x12;
        buf[XMM] = 0x99;
        assert_eq!(from_uabi(&buf, 0x7, 0xffff, &mut area), Ok(()));
        assert_eq!(u32_at(&area, MXCSR), 0x40);
        assert_eq!(area[0], 0x7f);
        assert_eq!(area[XMM], 0x99);
        assert_eq!(xstate_bv(&area), 0x2);
    }

    #[test]
    fn sw_reserved_is_the_hosts_xcr0() {
        let b = sw_reserved(0x207);
        assert_eq!(u64_at(&b, 0), 0x207);
        assert!(b[8..].iter().all(|&x| x == 0));
    }
}

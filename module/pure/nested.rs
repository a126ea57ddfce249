// SPDX-License-Identifier: GPL-2.0

//! `KVM_GET/SET_NESTED_STATE` for a vCPU that never runs a nested guest
//! (rkvm offers neither SVM nor VMX to its guests): the 128-byte
//! `struct kvm_nested_state` header kvm_amd (`svm_get/set_nested_state()`)
//! or kvm_intel (`vmx_get/set_nested_state()`) exchanges then, and the
//! checks of `kvm_arch_vcpu_ioctl()` and of each vendor. The only state is
//! SVM's global interrupt flag (GIF), which userspace may clear.

/// `sizeof(struct kvm_nested_state)`: the header, without data.
pub const HEADER_SIZE: usize = 128;
/// `KVM_STATE_NESTED_SVM_VMCB_SIZE` and `KVM_STATE_NESTED_VMX_VMCS_SIZE`.
pub const VMCB_SIZE: u32 = 0x1000;

/// `KVM_STATE_NESTED_FORMAT_VMX`.
pub const FORMAT_VMX: u16 = 0;
/// `KVM_STATE_NESTED_FORMAT_SVM`.
pub const FORMAT_SVM: u16 = 1;
/// `KVM_STATE_NESTED_GUEST_MODE`.
pub const GUEST_MODE: u16 = 0x1;
/// `KVM_STATE_NESTED_RUN_PENDING`.
pub const RUN_PENDING: u16 = 0x2;
/// `KVM_STATE_NESTED_EVMCS`.
pub const EVMCS: u16 = 0x4;
/// `KVM_STATE_NESTED_MTF_PENDING`.
pub const MTF_PENDING: u16 = 0x8;
/// `KVM_STATE_NESTED_GIF_SET`.
pub const GIF_SET: u16 = 0x100;

/// Which vendor's format: rkvm answers as the KVM of its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// kvm_amd's.
    Svm,
    /// kvm_intel's.
    Vmx,
}

/// `KVM_CAP_NESTED_STATE`: the largest state, header and data
/// (`get_state(NULL, NULL, 0)`): one VMCB for SVM, a vmcs12 and a shadow
/// vmcs12 for VMX.
pub fn max_size(format: Format) -> u32 {
    HEADER_SIZE as u32
        + match format {
            Format::Svm => VMCB_SIZE,
            Format::Vmx => 2 * VMCB_SIZE,
        }
}

/// The header `KVM_GET_NESTED_STATE` writes outside guest mode: the
/// format, size 128, and for SVM the GIF; for VMX no VMXON region and no
/// current VMCS (both addresses all ones).
pub fn get_header(format: Format, gif: bool) -> [u8; HEADER_SIZE] {
    let mut h = [0u8; HEADER_SIZE];
    let (flags, fmt) = match format {
        Format::Svm => (if gif { GIF_SET } else { 0 }, FORMAT_SVM),
        Format::Vmx => (0, FORMAT_VMX),
    };
    h[0..2].copy_from_slice(&flags.to_le_bytes());
    h[2..4].copy_from_slice(&fmt.to_le_bytes());
    h[4..8].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    if format == Format::Vmx {
        h[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        h[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    }
    h
}

fn u16_at(h: &[u8; HEADER_SIZE], at: usize) -> u16 {
    u16::from_le_bytes([h[at], h[at + 1]])
}

fn u32_at(h: &[u8; HEADER_SIZE], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&h[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(h: &[u8; HEADER_SIZE], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_le_bytes(b)
}

/// What `KVM_SET_NESTED_STATE` of header `h` does to a vCPU outside guest
/// mode whose guest has no SVM or VMX (`svme`: EFER.SVME as userspace set
/// it): `None` is EINVAL (every refusal of KVM's is); `Some(gif)` is
/// accepted, with SVM's new GIF (`None` for VMX, which has none).
///
/// The generic checks (`kvm_arch_vcpu_ioctl()`): a size below the header,
/// unknown flags, RUN_PENDING without GUEST_MODE. Then kvm_amd: its format,
/// its three flags, and without EFER.SVME only GIF_SET or nothing; guest
/// mode (which needs SVME) is refused here as rkvm never enters one.
/// kvm_intel: its format; with no VMXON region (address all ones) no SMM
/// flags, no current VMCS and no flag but EVMCS; with one, a guest without
/// VMX is refused; then its own flags (preemption-timer deadline only);
/// EVMCS needs VMX in the guest.
pub fn set_outcome(format: Format, h: &[u8; HEADER_SIZE], svme: bool) -> Option<Option<bool>> {
    let flags = u16_at(h, 0);
    let fmt = u16_at(h, 2);
    let size = u32_at(h, 4);
    if (size as usize) < HEADER_SIZE
        || flags & !(RUN_PENDING | GUEST_MODE | EVMCS | MTF_PENDING | GIF_SET) != 0
        || (flags & RUN_PENDING != 0 && flags & GUEST_MODE == 0)
    {
        return None;
    }
    match format {
        Format::Svm => {
            if fmt != FORMAT_SVM
                || flags & !(GUEST_MODE | RUN_PENDING | GIF_SET) != 0
                || (!svme && flags != 0 && flags != GIF_SET)
                || flags & GUEST_MODE != 0
            {
                return None;
            }
            Some(Some(flags & GIF_SET != 0))
        }
        Format::Vmx => {
            let (vmxon, vmcs12) = (u64_at(h, 8), u64_at(h, 16));
            let (smm_flags, vmx_flags) = (u16_at(h, 24), u32_at(h, 28));
            if fmt != FORMAT_VMX
                || vmxon != u64::MAX
                || smm_flags != 0
                || vmcs12 != u64::MAX
                || flags & !EVMCS != 0
                || vmx_flags & !1 != 0
                || flags & EVMCS != 0
            {
                return None;
            }
            Some(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(4224, max_size(Format::Svm));
        assert_eq!(8320, max_size(Format::Vmx));
    }

    #[test]
    fn round_trip() {
        for gif in [false, true] {
            let h = get_header(Format::Svm, gif);
            assert_eq!(Some(Some(gif)), set_outcome(Format::Svm, &h, false));
            assert_eq!(None, set_outcome(Format::Vmx, &h, false));
        }
        let h = get_header(Format::Vmx, true);
        assert_eq!(0, u16_at(&h, 0));
        assert_eq!(Some(None), set_outcome(Format::Vmx, &h, false));
        assert_eq!(None, set_outcome(Format::Svm, &h, false));
    }

    #[test]
    fn refusals() {
        let svm = get_header(Format::Svm, true);
        let mut h = svm;
        h[4] = 127;
        assert_eq!(None, set_outcome(Format::Svm, &h, false));
        h = svm;
        h[0] = GUEST_MODE as u8 | GIF_SET as u8;
        assert_eq!(None, set_outcome(Format::Svm, &h, false));
        h = svm;
        h[0] = RUN_PENDING as u8;
        assert_eq!(None, set_outcome(Format::Svm, &h, false));
        h = svm;
        h[0] = EVMCS as u8;
        assert_eq!(None, set_outcome(Format::Svm, &h, false));
        // Bigger is fine; the rest of the header is not looked at.
        h = svm;
        h[5] = 1;
        h[40] = 7;
        assert_eq!(Some(Some(true)), set_outcome(Format::Svm, &h, false));

        let vmx = get_header(Format::Vmx, false);
        h = vmx;
        h[8] = 0;
        assert_eq!(None, set_outcome(Format::Vmx, &h, false));
        h = vmx;
        h[16] = 0;
        assert_eq!(None, set_outcome(Format::Vmx, &h, false));
        h = vmx;
        h[24] = 1;
        assert_eq!(None, set_outcome(Format::Vmx, &h, false));
        h = vmx;
        h[28] = 2;
        assert_eq!(None, set_outcome(Format::Vmx, &h, false));
        h = vmx;
        h[28] = 1;
        assert_eq!(Some(None), set_outcome(Format::Vmx, &h, false));
        h = vmx;
        h[0] = EVMCS as u8;
        assert_eq!(None, set_outcome(Format::Vmx, &h, false));
    }
}

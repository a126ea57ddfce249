// SPDX-License-Identifier: GPL-2.0

//! The KVM ABI: ioctl request numbers and capability answers.
//!
//! Everything userspace sees as "the KVM ABI" is defined here, from the
//! bindgen-generated `<linux/kvm.h>` ([`uapi`]) and the pure request encoder
//! (`pure::ioctl`). The backends (SVM, VMX) and MMUs never see ioctl numbers.

pub(crate) mod uapi;

use crate::pure::ioctl::kvm_io;

/// `KVM_API_VERSION`: the only API version there has ever been.
pub(crate) const API_VERSION: i32 = uapi::KVM_API_VERSION as i32;

/// Requests on the system fd (`/dev/rkvm`).
pub(crate) mod sys {
    use super::kvm_io;

    /// `KVM_GET_API_VERSION`: `_IO(KVMIO, 0x00)`.
    pub(crate) const GET_API_VERSION: u32 = kvm_io(0x00);
    /// `KVM_CHECK_EXTENSION`: `_IO(KVMIO, 0x03)`.
    pub(crate) const CHECK_EXTENSION: u32 = kvm_io(0x03);
}

/// The capabilities rkvm implements, with the value `KVM_CHECK_EXTENSION`
/// returns for each. Anything not listed answers 0, as KVM does for a
/// capability it does not have. An entry goes here only together with the
/// feature it announces.
const CAPABILITIES: &[(u32, i32)] = &[];

/// `KVM_CHECK_EXTENSION`: the argument is a `long` capability number.
pub(crate) fn check_extension(cap: usize) -> i32 {
    CAPABILITIES
        .iter()
        .find(|&&(nr, _)| nr as usize == cap)
        .map_or(0, |&(_, value)| value)
}

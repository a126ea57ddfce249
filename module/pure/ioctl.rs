// SPDX-License-Identifier: GPL-2.0

//! Linux ioctl request encoding (`_IO`, `_IOR`, `_IOW`, `_IOWR` of
//! `include/uapi/asm-generic/ioctl.h`, which x86 uses unchanged).
//!
//! A request packs a direction, the size of the argument, a type byte and a
//! number. KVM's requests all have type [`KVMIO`]; the module computes the sizes
//! from the bindgen-generated `struct kvm_*` types, so a request number can never
//! disagree with the layout of the struct it carries.

/// The ioctl type byte of every KVM request.
pub const KVMIO: u32 = 0xAE;

const NRBITS: u32 = 8;
const TYPEBITS: u32 = 8;
const SIZEBITS: u32 = 14;
const NRSHIFT: u32 = 0;
const TYPESHIFT: u32 = NRSHIFT + NRBITS;
const SIZESHIFT: u32 = TYPESHIFT + TYPEBITS;
const DIRSHIFT: u32 = SIZESHIFT + SIZEBITS;

/// Data direction, seen from userspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Dir {
    /// No argument is transferred (`_IO`).
    None = 0,
    /// Userspace writes the argument to the kernel (`_IOW`).
    Write = 1,
    /// Userspace reads the argument from the kernel (`_IOR`).
    Read = 2,
    /// Both (`_IOWR`).
    ReadWrite = 3,
}

/// Encodes a request. `size` must fit the 14-bit size field; every caller
/// passes a `size_of` of a uapi struct, and the build fails (const evaluation)
/// if one ever does not.
pub const fn request(dir: Dir, ty: u32, nr: u32, size: usize) -> u32 {
    assert!(size < (1 << SIZEBITS));
    ((dir as u32) << DIRSHIFT) | ((size as u32) << SIZESHIFT) | (ty << TYPESHIFT) | (nr << NRSHIFT)
}

/// `_IO(KVMIO, nr)`.
pub const fn kvm_io(nr: u32) -> u32 {
    request(Dir::None, KVMIO, nr, 0)
}

/// `_IOR(KVMIO, nr, T)`.
pub const fn kvm_ior<T>(nr: u32) -> u32 {
    request(Dir::Read, KVMIO, nr, core::mem::size_of::<T>())
}

/// `_IOW(KVMIO, nr, T)`.
pub const fn kvm_iow<T>(nr: u32) -> u32 {
    request(Dir::Write, KVMIO, nr, core::mem::size_of::<T>())
}

/// `_IOWR(KVMIO, nr, T)`.
pub const fn kvm_iowr<T>(nr: u32) -> u32 {
    request(Dir::ReadWrite, KVMIO, nr, core::mem::size_of::<T>())
}

/// The type byte of a request.
pub const fn type_of(request: u32) -> u32 {
    (request >> TYPESHIFT) & ((1 << TYPEBITS) - 1)
}

/// rkvm's own capability, outside KVM's numbering ("RK" and 1): the MMU
/// modes. `KVM_CHECK_EXTENSION` on the system fd answers with the modes
/// offered, as a mask of [`mmu_mode`] bits, and on a VM fd with the one
/// bit of the mode that VM uses. `KVM_ENABLE_CAP` on a VM fd with `args[0]`
/// one of them chooses the VM's, before its first vCPU (EINVAL after, or
/// for a mode not offered). Real KVM answers 0: it chooses with module
/// parameters (`kvm_amd npt=0`).
pub const KVM_CAP_RKVM_MMU: u32 = 0x524b_0001;

/// The MMU modes of [`KVM_CAP_RKVM_MMU`].
pub mod mmu_mode {
    /// Two-dimensional paging (NPT on AMD, EPT on Intel).
    pub const TDP: u64 = 1 << 0;
    /// Shadow page tables.
    pub const SHADOW: u64 = 1 << 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values as the C macros produce them (checked against <linux/kvm.h>).
    #[test]
    fn system_requests() {
        assert_eq!(kvm_io(0x00), 0xAE00); // KVM_GET_API_VERSION
        assert_eq!(kvm_io(0x01), 0xAE01); // KVM_CREATE_VM
        assert_eq!(kvm_io(0x03), 0xAE03); // KVM_CHECK_EXTENSION
        assert_eq!(kvm_io(0x04), 0xAE04); // KVM_GET_VCPU_MMAP_SIZE
        assert_eq!(kvm_io(0x80), 0xAE80); // KVM_RUN
    }

    #[test]
    fn sized_requests() {
        // KVM_SET_USER_MEMORY_REGION: _IOW(KVMIO, 0x46, 32-byte struct).
        assert_eq!(kvm_iow::<[u64; 4]>(0x46), 0x4020_AE46);
        // KVM_GET_REGS: _IOR(KVMIO, 0x81, 144-byte struct kvm_regs).
        assert_eq!(kvm_ior::<[u64; 18]>(0x81), 0x8090_AE81);
        // KVM_GET_MSR_INDEX_LIST: _IOWR(KVMIO, 0x02, 4-byte struct kvm_msr_list).
        assert_eq!(kvm_iowr::<u32>(0x02), 0xC004_AE02);
    }

    #[test]
    fn type_byte() {
        assert_eq!(type_of(0x4020_AE46), KVMIO);
        assert_eq!(type_of(0x5401), 0x54); // TCGETS
    }
}

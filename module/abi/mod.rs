// SPDX-License-Identifier: GPL-2.0

//! The KVM ABI: ioctl request numbers and capability answers.
//!
//! Everything userspace sees as "the KVM ABI" is defined here, from the
//! bindgen-generated `<linux/kvm.h>` ([`uapi`]) and the pure request encoder
//! (`pure::ioctl`). The backends (SVM, VMX) and MMUs never see ioctl numbers.

pub(crate) mod uapi;

use kernel::{
    prelude::*,
    transmute::{
        AsBytes,
        FromBytes, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    }, //
};

use crate::pure::{
    cpuid,
    ioctl::{
        kvm_io,
        kvm_ior,
        kvm_iow,
        kvm_iowr, //
    }, //
};

/// `KVM_API_VERSION`: the only API version there has ever been.
pub(crate) const API_VERSION: i32 = uapi::KVM_API_VERSION as i32;

/// Requests on the system fd (`/dev/rkvm`).
pub(crate) mod sys {
    use super::kvm_io;

    /// `KVM_GET_API_VERSION`: `_IO(KVMIO, 0x00)`.
    pub(crate) const GET_API_VERSION: u32 = kvm_io(0x00);
    /// `KVM_CREATE_VM`: `_IO(KVMIO, 0x01)`.
    pub(crate) const CREATE_VM: u32 = kvm_io(0x01);
    /// `KVM_CHECK_EXTENSION`: `_IO(KVMIO, 0x03)` (also on a VM fd).
    pub(crate) const CHECK_EXTENSION: u32 = kvm_io(0x03);
    /// `KVM_GET_VCPU_MMAP_SIZE`: `_IO(KVMIO, 0x04)`.
    pub(crate) const GET_VCPU_MMAP_SIZE: u32 = kvm_io(0x04);
    /// `KVM_GET_MSR_INDEX_LIST`: `_IOWR(KVMIO, 0x02, struct kvm_msr_list)`.
    pub(crate) const GET_MSR_INDEX_LIST: u32 = super::kvm_iowr::<super::uapi::kvm_msr_list>(0x02);
    /// `KVM_GET_SUPPORTED_CPUID`: `_IOWR(KVMIO, 0x05, struct kvm_cpuid2)`.
    pub(crate) const GET_SUPPORTED_CPUID: u32 = super::kvm_iowr::<super::uapi::kvm_cpuid2>(0x05);
    /// `KVM_GET_EMULATED_CPUID`: `_IOWR(KVMIO, 0x09, struct kvm_cpuid2)`.
    pub(crate) const GET_EMULATED_CPUID: u32 = super::kvm_iowr::<super::uapi::kvm_cpuid2>(0x09);
    /// `KVM_GET_MSR_FEATURE_INDEX_LIST`: `_IOWR(KVMIO, 0x0a, struct kvm_msr_list)`.
    pub(crate) const GET_MSR_FEATURE_INDEX_LIST: u32 =
        super::kvm_iowr::<super::uapi::kvm_msr_list>(0x0a);
    /// `KVM_X86_GET_MCE_CAP_SUPPORTED`: `_IOR(KVMIO, 0x9d, __u64)`.
    pub(crate) const X86_GET_MCE_CAP_SUPPORTED: u32 = super::kvm_ior::<u64>(0x9d);
}

/// Requests on a VM fd.
pub(crate) mod vm {
    use super::{
        kvm_io,
        kvm_iow,
        uapi, //
    };

    /// `KVM_CREATE_VCPU`: `_IO(KVMIO, 0x41)`.
    pub(crate) const CREATE_VCPU: u32 = kvm_io(0x41);
    /// `KVM_GET_DIRTY_LOG`: `_IOW(KVMIO, 0x42, struct kvm_dirty_log)`.
    pub(crate) const GET_DIRTY_LOG: u32 = kvm_iow::<uapi::kvm_dirty_log>(0x42);
    /// `KVM_SET_USER_MEMORY_REGION`: `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`.
    pub(crate) const SET_USER_MEMORY_REGION: u32 =
        kvm_iow::<uapi::kvm_userspace_memory_region>(0x46);
    /// `KVM_SET_USER_MEMORY_REGION2`: `_IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)`.
    pub(crate) const SET_USER_MEMORY_REGION2: u32 =
        kvm_iow::<uapi::kvm_userspace_memory_region2>(0x49);
    /// `KVM_SET_IDENTITY_MAP_ADDR`: `_IOW(KVMIO, 0x48, __u64)`.
    pub(crate) const SET_IDENTITY_MAP_ADDR: u32 = kvm_iow::<u64>(0x48);
    /// `KVM_SET_TSS_ADDR`: `_IO(KVMIO, 0x47)`.
    pub(crate) const SET_TSS_ADDR: u32 = kvm_io(0x47);
    /// `KVM_GET_STATS_FD`: `_IO(KVMIO, 0xce)` (also on a vCPU fd).
    pub(crate) const GET_STATS_FD: u32 = kvm_io(0xce);
    /// `KVM_ENABLE_CAP`: `_IOW(KVMIO, 0xa3, struct kvm_enable_cap)`.
    pub(crate) const ENABLE_CAP: u32 = kvm_iow::<uapi::kvm_enable_cap>(0xa3);
    /// `KVM_SET_CLOCK`: `_IOW(KVMIO, 0x7b, struct kvm_clock_data)`.
    pub(crate) const SET_CLOCK: u32 = kvm_iow::<uapi::kvm_clock_data>(0x7b);
    /// `KVM_GET_CLOCK`: `_IOR(KVMIO, 0x7c, struct kvm_clock_data)`.
    pub(crate) const GET_CLOCK: u32 = super::kvm_ior::<uapi::kvm_clock_data>(0x7c);
    /// `KVM_IRQ_LINE`: `_IOW(KVMIO, 0x61, struct kvm_irq_level)`.
    pub(crate) const IRQ_LINE: u32 = kvm_iow::<uapi::kvm_irq_level>(0x61);
    /// `KVM_IRQ_LINE_STATUS`: `_IOWR(KVMIO, 0x67, struct kvm_irq_level)`.
    pub(crate) const IRQ_LINE_STATUS: u32 = super::kvm_iowr::<uapi::kvm_irq_level>(0x67);
    /// `KVM_SET_GSI_ROUTING`: `_IOW(KVMIO, 0x6a, struct kvm_irq_routing)`.
    pub(crate) const SET_GSI_ROUTING: u32 = kvm_iow::<uapi::kvm_irq_routing>(0x6a);
    /// `KVM_SIGNAL_MSI`: `_IOW(KVMIO, 0xa5, struct kvm_msi)`.
    pub(crate) const SIGNAL_MSI: u32 = kvm_iow::<uapi::kvm_msi>(0xa5);
    /// `KVM_CREATE_IRQCHIP`: `_IO(KVMIO, 0x60)`.
    pub(crate) const CREATE_IRQCHIP: u32 = kvm_io(0x60);
    /// `KVM_GET_IRQCHIP`: `_IOWR(KVMIO, 0x62, struct kvm_irqchip)`.
    pub(crate) const GET_IRQCHIP: u32 = super::kvm_iowr::<uapi::kvm_irqchip>(0x62);
    /// `KVM_SET_IRQCHIP`: `_IOR(KVMIO, 0x63, struct kvm_irqchip)`.
    pub(crate) const SET_IRQCHIP: u32 = super::kvm_ior::<uapi::kvm_irqchip>(0x63);
    /// `KVM_CREATE_PIT2`: `_IOW(KVMIO, 0x77, struct kvm_pit_config)`.
    pub(crate) const CREATE_PIT2: u32 = kvm_iow::<uapi::kvm_pit_config>(0x77);
    /// `KVM_GET_PIT2`: `_IOR(KVMIO, 0x9f, struct kvm_pit_state2)`.
    pub(crate) const GET_PIT2: u32 = super::kvm_ior::<uapi::kvm_pit_state2>(0x9f);
    /// `KVM_SET_PIT2`: `_IOW(KVMIO, 0xa0, struct kvm_pit_state2)`.
    pub(crate) const SET_PIT2: u32 = kvm_iow::<uapi::kvm_pit_state2>(0xa0);
    /// `KVM_GET_PIT`: `_IOWR(KVMIO, 0x65, struct kvm_pit_state)`.
    pub(crate) const GET_PIT: u32 = super::kvm_iowr::<uapi::kvm_pit_state>(0x65);
    /// `KVM_SET_PIT`: `_IOR(KVMIO, 0x66, struct kvm_pit_state)`.
    pub(crate) const SET_PIT: u32 = super::kvm_ior::<uapi::kvm_pit_state>(0x66);
    /// `KVM_REINJECT_CONTROL`: `_IO(KVMIO, 0x71)`, the struct behind the
    /// argument.
    pub(crate) const REINJECT_CONTROL: u32 = kvm_io(0x71);
    /// `KVM_IRQFD`: `_IOW(KVMIO, 0x76, struct kvm_irqfd)`.
    pub(crate) const IRQFD: u32 = kvm_iow::<uapi::kvm_irqfd>(0x76);
    /// `KVM_IOEVENTFD`: `_IOW(KVMIO, 0x79, struct kvm_ioeventfd)`.
    pub(crate) const IOEVENTFD: u32 = kvm_iow::<uapi::kvm_ioeventfd>(0x79);
    /// `KVM_REGISTER_COALESCED_MMIO`: `_IOW(KVMIO, 0x67, struct kvm_coalesced_mmio_zone)`.
    pub(crate) const REGISTER_COALESCED_MMIO: u32 = kvm_iow::<uapi::kvm_coalesced_mmio_zone>(0x67);
    /// `KVM_UNREGISTER_COALESCED_MMIO`: `_IOW(KVMIO, 0x68, struct kvm_coalesced_mmio_zone)`.
    pub(crate) const UNREGISTER_COALESCED_MMIO: u32 =
        kvm_iow::<uapi::kvm_coalesced_mmio_zone>(0x68);
}

/// Requests on a vCPU fd.
pub(crate) mod vcpu {
    use super::{
        kvm_io,
        kvm_ior,
        kvm_iow,
        uapi, //
    };

    /// `KVM_RUN`: `_IO(KVMIO, 0x80)`.
    pub(crate) const RUN: u32 = kvm_io(0x80);
    /// `KVM_GET_REGS`: `_IOR(KVMIO, 0x81, struct kvm_regs)`.
    pub(crate) const GET_REGS: u32 = kvm_ior::<uapi::kvm_regs>(0x81);
    /// `KVM_SET_REGS`: `_IOW(KVMIO, 0x82, struct kvm_regs)`.
    pub(crate) const SET_REGS: u32 = kvm_iow::<uapi::kvm_regs>(0x82);
    /// `KVM_GET_SREGS`: `_IOR(KVMIO, 0x83, struct kvm_sregs)`.
    pub(crate) const GET_SREGS: u32 = kvm_ior::<uapi::kvm_sregs>(0x83);
    /// `KVM_SET_SREGS`: `_IOW(KVMIO, 0x84, struct kvm_sregs)`.
    pub(crate) const SET_SREGS: u32 = kvm_iow::<uapi::kvm_sregs>(0x84);
    /// `KVM_GET_MSRS`: `_IOWR(KVMIO, 0x88, struct kvm_msrs)`.
    pub(crate) const GET_MSRS: u32 = super::kvm_iowr::<uapi::kvm_msrs>(0x88);
    /// `KVM_SET_MSRS`: `_IOW(KVMIO, 0x89, struct kvm_msrs)`.
    pub(crate) const SET_MSRS: u32 = kvm_iow::<uapi::kvm_msrs>(0x89);
    /// `KVM_INTERRUPT`: `_IOW(KVMIO, 0x86, struct kvm_interrupt)`.
    pub(crate) const INTERRUPT: u32 = kvm_iow::<uapi::kvm_interrupt>(0x86);
    /// `KVM_GET_FPU`: `_IOR(KVMIO, 0x8c, struct kvm_fpu)`.
    pub(crate) const GET_FPU: u32 = kvm_ior::<uapi::kvm_fpu>(0x8c);
    /// `KVM_SET_FPU`: `_IOW(KVMIO, 0x8d, struct kvm_fpu)`.
    pub(crate) const SET_FPU: u32 = kvm_iow::<uapi::kvm_fpu>(0x8d);
    /// `KVM_SET_GUEST_DEBUG`: `_IOW(KVMIO, 0x9b, struct kvm_guest_debug)`.
    pub(crate) const SET_GUEST_DEBUG: u32 = kvm_iow::<uapi::kvm_guest_debug>(0x9b);
    /// `KVM_GET_DEBUGREGS`: `_IOR(KVMIO, 0xa1, struct kvm_debugregs)`.
    pub(crate) const GET_DEBUGREGS: u32 = kvm_ior::<uapi::kvm_debugregs>(0xa1);
    /// `KVM_SET_DEBUGREGS`: `_IOW(KVMIO, 0xa2, struct kvm_debugregs)`.
    pub(crate) const SET_DEBUGREGS: u32 = kvm_iow::<uapi::kvm_debugregs>(0xa2);
    /// `KVM_SET_CPUID2`: `_IOW(KVMIO, 0x90, struct kvm_cpuid2)`.
    pub(crate) const SET_CPUID2: u32 = kvm_iow::<uapi::kvm_cpuid2>(0x90);
    /// `KVM_GET_CPUID2`: `_IOWR(KVMIO, 0x91, struct kvm_cpuid2)`.
    pub(crate) const GET_CPUID2: u32 = super::kvm_iowr::<uapi::kvm_cpuid2>(0x91);
    /// `KVM_GET_TSC_KHZ`: `_IO(KVMIO, 0xa3)` (also on a VM fd).
    pub(crate) const GET_TSC_KHZ: u32 = kvm_io(0xa3);
    /// `KVM_SET_TSC_KHZ`: `_IO(KVMIO, 0xa2)` (also on a VM fd).
    pub(crate) const SET_TSC_KHZ: u32 = kvm_io(0xa2);
    /// `KVM_TRANSLATE`: `_IOWR(KVMIO, 0x85, struct kvm_translation)`.
    pub(crate) const TRANSLATE: u32 = super::kvm_iowr::<uapi::kvm_translation>(0x85);
    /// `KVM_GET_VCPU_EVENTS`: `_IOR(KVMIO, 0x9f, struct kvm_vcpu_events)`.
    pub(crate) const GET_VCPU_EVENTS: u32 = kvm_ior::<uapi::kvm_vcpu_events>(0x9f);
    /// `KVM_SET_VCPU_EVENTS`: `_IOW(KVMIO, 0xa0, struct kvm_vcpu_events)`.
    pub(crate) const SET_VCPU_EVENTS: u32 = kvm_iow::<uapi::kvm_vcpu_events>(0xa0);
    /// `KVM_NMI`: `_IO(KVMIO, 0x9a)`.
    pub(crate) const NMI: u32 = kvm_io(0x9a);
    /// `KVM_GET_LAPIC`: `_IOR(KVMIO, 0x8e, struct kvm_lapic_state)`.
    pub(crate) const GET_LAPIC: u32 = kvm_ior::<uapi::kvm_lapic_state>(0x8e);
    /// `KVM_SET_LAPIC`: `_IOW(KVMIO, 0x8f, struct kvm_lapic_state)`.
    pub(crate) const SET_LAPIC: u32 = kvm_iow::<uapi::kvm_lapic_state>(0x8f);
    /// `KVM_SET_VAPIC_ADDR`: `_IOW(KVMIO, 0x93, struct kvm_vapic_addr)`.
    pub(crate) const SET_VAPIC_ADDR: u32 = kvm_iow::<uapi::kvm_vapic_addr>(0x93);
    /// `KVM_GET_MP_STATE`: `_IOR(KVMIO, 0x98, struct kvm_mp_state)`.
    pub(crate) const GET_MP_STATE: u32 = kvm_ior::<uapi::kvm_mp_state>(0x98);
    /// `KVM_SET_MP_STATE`: `_IOW(KVMIO, 0x99, struct kvm_mp_state)`.
    pub(crate) const SET_MP_STATE: u32 = kvm_iow::<uapi::kvm_mp_state>(0x99);
    /// `KVM_X86_SETUP_MCE`: `_IOW(KVMIO, 0x9c, __u64)`.
    pub(crate) const X86_SETUP_MCE: u32 = kvm_iow::<u64>(0x9c);
    /// `KVM_X86_SET_MCE`: `_IOW(KVMIO, 0x9e, struct kvm_x86_mce)`.
    pub(crate) const X86_SET_MCE: u32 = kvm_iow::<uapi::kvm_x86_mce>(0x9e);
    /// `KVM_GET_XSAVE`: `_IOR(KVMIO, 0xa4, struct kvm_xsave)`.
    pub(crate) const GET_XSAVE: u32 = kvm_ior::<uapi::kvm_xsave>(0xa4);
    /// `KVM_SET_XSAVE`: `_IOW(KVMIO, 0xa5, struct kvm_xsave)`.
    pub(crate) const SET_XSAVE: u32 = kvm_iow::<uapi::kvm_xsave>(0xa5);
    /// `KVM_GET_XCRS`: `_IOR(KVMIO, 0xa6, struct kvm_xcrs)`.
    pub(crate) const GET_XCRS: u32 = kvm_ior::<uapi::kvm_xcrs>(0xa6);
    /// `KVM_SET_XCRS`: `_IOW(KVMIO, 0xa7, struct kvm_xcrs)`.
    pub(crate) const SET_XCRS: u32 = kvm_iow::<uapi::kvm_xcrs>(0xa7);
    /// `KVM_GET_XSAVE2`: `_IOR(KVMIO, 0xcf, struct kvm_xsave)`.
    pub(crate) const GET_XSAVE2: u32 = kvm_ior::<uapi::kvm_xsave>(0xcf);
    /// `KVM_GET_NESTED_STATE`: `_IOWR(KVMIO, 0xbe, struct kvm_nested_state)`.
    pub(crate) const GET_NESTED_STATE: u32 = super::kvm_iowr::<uapi::kvm_nested_state>(0xbe);
    /// `KVM_SET_NESTED_STATE`: `_IOW(KVMIO, 0xbf, struct kvm_nested_state)`.
    pub(crate) const SET_NESTED_STATE: u32 = kvm_iow::<uapi::kvm_nested_state>(0xbf);
}

/// Most vCPUs per VM (`KVM_CAP_NR_VCPUS`, `KVM_CAP_MAX_VCPUS`).
pub(crate) const MAX_VCPUS: u32 = 64;
/// vCPU ids are below this (`KVM_CAP_MAX_VCPU_ID`).
pub(crate) const MAX_VCPU_ID: u32 = 64;
/// Interrupt vectors (`KVM_NR_INTERRUPTS`).
pub(crate) const NR_INTERRUPTS: u32 = 256;
/// Pages of the vCPU mmap: `struct kvm_run`, the PIO data page, then the
/// VM's coalesced MMIO ring.
pub(crate) const VCPU_MMAP_PAGES: usize = 3;
/// Page offset of the PIO data page in the vCPU mmap (`KVM_PIO_PAGE_OFFSET`).
pub(crate) const PIO_PAGE_OFFSET: usize = uapi::KVM_PIO_PAGE_OFFSET as usize;
/// Page offset of the coalesced MMIO ring in the vCPU mmap
/// (`KVM_COALESCED_MMIO_PAGE_OFFSET`: 2 on x86, after the PIO page), also
/// the value of `KVM_CAP_COALESCED_MMIO`.
pub(crate) const COALESCED_MMIO_PAGE_OFFSET: usize = uapi::KVM_COALESCED_MMIO_PAGE_OFFSET as usize;

const _: () = {
    assert!(PIO_PAGE_OFFSET == 1 && COALESCED_MMIO_PAGE_OFFSET == 2);
    assert!(VCPU_MMAP_PAGES == COALESCED_MMIO_PAGE_OFFSET + 1);
};

// SAFETY: these uapi structs are plain integers (and arrays and structs of
// them) with no implicit padding: every byte pattern is a valid value, and
// every byte of a value is initialized. The size asserts below pin the layouts
// the ioctl numbers encode.
unsafe impl FromBytes for uapi::kvm_userspace_memory_region {}
// SAFETY: as above.
unsafe impl FromBytes for uapi::kvm_interrupt {}
// SAFETY: as above (`pad1` and `pad2` are explicit).
unsafe impl FromBytes for uapi::kvm_userspace_memory_region2 {}
// SAFETY: as above (`padding1` explicit; the union is a pointer-sized u64).
unsafe impl FromBytes for uapi::kvm_dirty_log {}
// SAFETY: as above (`kvm_cpuid2` is the 8-byte header, `nent` and padding).
unsafe impl FromBytes for uapi::kvm_cpuid2 {}
// SAFETY: as above (`pad1` and `pad2` are explicit).
unsafe impl FromBytes for uapi::kvm_fpu {}
// SAFETY: as above.
unsafe impl AsBytes for uapi::kvm_fpu {}
// SAFETY: as above (`pad` is explicit).
unsafe impl FromBytes for uapi::kvm_guest_debug {}
// SAFETY: as above (`db[4]`, `dr6`, `dr7`, `flags`, `reserved[9]`).
unsafe impl FromBytes for uapi::kvm_debugregs {}
// SAFETY: as above.
unsafe impl AsBytes for uapi::kvm_debugregs {}
// SAFETY: as above (`cap`, `flags`, `args[4]`, `pad[64]`: 104 bytes).
unsafe impl FromBytes for uapi::kvm_enable_cap {}
// SAFETY: as above (`address_lo`, `address_hi`, `data`, `flags`,
// `devid`, `pad[12]`: 32 bytes).
unsafe impl FromBytes for uapi::kvm_msi {}
// SAFETY: as above (`fd`, `gsi`, `flags`, `resamplefd`, `pad[16]`: 32
// bytes).
unsafe impl FromBytes for uapi::kvm_irqfd {}
// SAFETY: as above (the header: `nmsrs`).
unsafe impl FromBytes for uapi::kvm_msr_list {}
// SAFETY: as above (the header: `nmsrs` and `pad`).
unsafe impl FromBytes for uapi::kvm_msrs {}
// SAFETY: as above (`index`, `reserved`, `data`).
unsafe impl FromBytes for uapi::kvm_msr_entry {}
// SAFETY: as above.
unsafe impl AsBytes for uapi::kvm_msr_entry {}
// SAFETY: as above (explicit `padding[3]`).
unsafe impl FromBytes for uapi::kvm_cpuid_entry2 {}
// SAFETY: as above.
unsafe impl AsBytes for uapi::kvm_cpuid_entry2 {}
// SAFETY: as above.
unsafe impl FromBytes for uapi::kvm_regs {}
// SAFETY: as above.
unsafe impl AsBytes for uapi::kvm_regs {}
// SAFETY: as above (`pad1[7]` and `pad2[3]` are explicit).
unsafe impl FromBytes for uapi::kvm_x86_mce {}
// SAFETY: as above (`reserved[26]` is explicit; the struct has no hole).
unsafe impl FromBytes for uapi::kvm_vcpu_events {}
// SAFETY: as above.
unsafe impl AsBytes for uapi::kvm_vcpu_events {}
// SAFETY: as above (`pad0` and `pad[4]` are explicit).
unsafe impl FromBytes for uapi::kvm_clock_data {}
// SAFETY: as above.
unsafe impl AsBytes for uapi::kvm_clock_data {}
// SAFETY: as above (`pad[5]` is explicit).
unsafe impl FromBytes for uapi::kvm_translation {}
// SAFETY: as above.
unsafe impl AsBytes for uapi::kvm_translation {}
// SAFETY: as above.
unsafe impl FromBytes for uapi::kvm_mp_state {}
// SAFETY: as above.
unsafe impl AsBytes for uapi::kvm_mp_state {}
// SAFETY: as above (`nr_xcrs`, `flags`, `xcrs[16]` of `xcr`, `reserved`,
// `value`, `padding[16]`: 392 bytes).
unsafe impl FromBytes for uapi::kvm_xcrs {}
// SAFETY: as above.
unsafe impl AsBytes for uapi::kvm_xcrs {}
// SAFETY: as above (`pad[36]` is explicit: 64 bytes).
unsafe impl FromBytes for uapi::kvm_ioeventfd {}
// SAFETY: as above (`kvm_segment` and `kvm_dtable` carry explicit padding fields).
unsafe impl FromBytes for uapi::kvm_sregs {}
// SAFETY: as above.
unsafe impl AsBytes for uapi::kvm_sregs {}

const _: () = {
    assert!(core::mem::size_of::<uapi::kvm_userspace_memory_region>() == 32);
    assert!(core::mem::size_of::<uapi::kvm_userspace_memory_region2>() == 160);
    // KVM_SET_USER_MEMORY_REGION2's struct begins with the first one's.
    assert!(core::mem::offset_of!(uapi::kvm_userspace_memory_region2, userspace_addr) == 24);
    assert!(core::mem::offset_of!(uapi::kvm_userspace_memory_region, userspace_addr) == 24);
    assert!(core::mem::size_of::<uapi::kvm_regs>() == 144);
    assert!(core::mem::size_of::<uapi::kvm_segment>() == 24);
    assert!(core::mem::size_of::<uapi::kvm_dtable>() == 16);
    assert!(core::mem::size_of::<uapi::kvm_sregs>() == 312);
    assert!(core::mem::size_of::<uapi::kvm_cpuid2>() == 8);
    assert!(core::mem::size_of::<uapi::kvm_cpuid_entry2>() == 40);
    assert!(core::mem::size_of::<uapi::kvm_msrs>() == 8);
    assert!(core::mem::size_of::<uapi::kvm_dirty_log>() == 16);
    assert!(core::mem::size_of::<uapi::kvm_msr_entry>() == 16);
    assert!(core::mem::size_of::<uapi::kvm_enable_cap>() == 104);
    assert!(core::mem::size_of::<uapi::kvm_msi>() == 32);
    assert!(core::mem::size_of::<uapi::kvm_lapic_state>() == crate::pure::lapic::STATE_SIZE);
    assert!(core::mem::size_of::<uapi::kvm_fpu>() == 416);
    assert!(core::mem::size_of::<uapi::kvm_guest_debug>() == 72);
    assert!(core::mem::size_of::<uapi::kvm_x86_mce>() == 64);
    assert!(core::mem::size_of::<uapi::kvm_mp_state>() == 4);
    assert!(core::mem::size_of::<uapi::kvm_translation>() == 24);
    assert!(core::mem::size_of::<uapi::kvm_clock_data>() == 48);
    assert!(core::mem::size_of::<uapi::kvm_vcpu_events>() == 64);
    assert!(core::mem::offset_of!(uapi::kvm_vcpu_events, exception_payload) == 56);
    assert!(core::mem::size_of::<uapi::kvm_irq_level>() == 8);
    assert!(core::mem::size_of::<uapi::kvm_irq_routing>() == 8);
    assert!(core::mem::size_of::<uapi::kvm_debugregs>() == 128);
    assert!(core::mem::size_of::<uapi::kvm_xsave>() == crate::pure::xsave::KVM_XSAVE_SIZE);
    assert!(core::mem::size_of::<uapi::kvm_xcrs>() == 392);
    assert!(core::mem::size_of::<uapi::kvm_ioeventfd>() == 64);
    // The header `pure::nested` reads and writes as bytes.
    assert!(core::mem::size_of::<uapi::kvm_nested_state>() == crate::pure::nested::HEADER_SIZE);
    assert!(core::mem::offset_of!(uapi::kvm_nested_state, size) == 4);
    assert!(crate::pure::nested::GIF_SET as u32 == uapi::KVM_STATE_NESTED_GIF_SET);
    assert!(crate::pure::nested::FORMAT_SVM as u32 == uapi::KVM_STATE_NESTED_FORMAT_SVM);
    assert!(crate::pure::nested::VMCB_SIZE == uapi::KVM_STATE_NESTED_SVM_VMCB_SIZE);
    // Read as two u64 (`read_zone`): `addr`, then `size` and `pio`.
    assert!(core::mem::size_of::<uapi::kvm_coalesced_mmio_zone>() == 16);
    assert!(core::mem::offset_of!(uapi::kvm_coalesced_mmio_zone, size) == 8);
    // The ring's layout `pure::iobus` writes.
    assert!(
        core::mem::size_of::<uapi::kvm_coalesced_mmio>()
            == crate::pure::iobus::COALESCED_ENTRY_SIZE
    );
    assert!(
        core::mem::size_of::<uapi::kvm_coalesced_mmio_ring>()
            == crate::pure::iobus::COALESCED_RING_HEADER
    );
    assert!(core::mem::offset_of!(uapi::kvm_coalesced_mmio, data) == 16);
    // `<linux/kvm.h>` numbers the flags (its masks are macros over an enum).
    assert!(
        crate::pure::iobus::IOEVENTFD_VALID_FLAGS == (1 << uapi::kvm_ioeventfd_flag_nr_max) - 1
    );
    assert!(
        crate::pure::iobus::IOEVENTFD_FLAG_DATAMATCH == 1 << uapi::kvm_ioeventfd_flag_nr_datamatch
    );
    assert!(crate::pure::iobus::IOEVENTFD_FLAG_PIO == 1 << uapi::kvm_ioeventfd_flag_nr_pio);
    assert!(
        crate::pure::iobus::IOEVENTFD_FLAG_DEASSIGN == 1 << uapi::kvm_ioeventfd_flag_nr_deassign
    );
    assert!(
        crate::pure::iobus::IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY
            == 1 << uapi::kvm_ioeventfd_flag_nr_virtio_ccw_notify
    );
    assert!(crate::pure::irq_routing::IRQFD_FLAG_DEASSIGN == uapi::KVM_IRQFD_FLAG_DEASSIGN);
    assert!(crate::pure::irq_routing::IRQFD_FLAG_RESAMPLE == uapi::KVM_IRQFD_FLAG_RESAMPLE);
};

/// A `struct kvm_coalesced_mmio_zone` from user memory (EFAULT).
pub(crate) fn read_zone(arg: usize) -> Result<(u64, u32, u32)> {
    let [addr, rest]: [u64; 2] = read_arg(arg)?;
    Ok((addr, rest as u32, (rest >> 32) as u32))
}

/// `KVM_GET_MSR_INDEX_LIST`: `nmsrs` is always written back (so userspace
/// can probe with 0), then E2BIG if the list does not fit.
pub(crate) fn write_msr_list(arg: usize, list: &[u32]) -> Result {
    let room: u32 = read_arg(arg)?;
    write_arg(arg, &(list.len() as u32))?;
    if (room as usize) < list.len() {
        return Err(E2BIG);
    }
    let mut writer = trailing::<u32>(arg, 4, list.len()).writer();
    for index in list {
        writer.write(index)?;
    }
    Ok(())
}

/// `KVM_GET_MSRS`/`KVM_SET_MSRS` (`msr_io()`): applies `op` to each entry
/// in order, stopping at the first it refuses; writes the entries back if
/// `writeback`; returns how many were done.
pub(crate) fn msr_io(
    arg: usize,
    writeback: bool,
    mut op: impl FnMut(&mut uapi::kvm_msr_entry) -> bool,
) -> Result<isize> {
    let head: uapi::kvm_msrs = read_arg(arg)?;
    if head.nmsrs >= crate::pure::msr::MAX_IO_MSRS {
        return Err(E2BIG);
    }
    let n = head.nmsrs as usize;
    let mut reader = trailing::<uapi::kvm_msr_entry>(arg, 8, n).reader();
    let mut entries = KVec::with_capacity(n, GFP_KERNEL)?;
    for _ in 0..n {
        entries.push(reader.read::<uapi::kvm_msr_entry>()?, GFP_KERNEL)?;
    }
    let mut done = 0;
    for e in entries.iter_mut() {
        if !op(e) {
            break;
        }
        done += 1;
    }
    if writeback {
        let mut writer = trailing::<uapi::kvm_msr_entry>(arg, 8, n).writer();
        for e in entries.iter() {
            writer.write(e)?;
        }
    }
    Ok(done as isize)
}

/// The `count` elements of type `T` that follow a `header`-byte struct at
/// `arg` (the flexible arrays of `kvm_cpuid2`, `kvm_msrs`, `kvm_msr_list`).
fn trailing<T>(arg: usize, header: usize, count: usize) -> UserSlice {
    UserSlice::new(
        UserPtr::from_addr(arg).wrapping_byte_add(header),
        count * core::mem::size_of::<T>(),
    )
}

impl From<&uapi::kvm_cpuid_entry2> for cpuid::Entry {
    fn from(e: &uapi::kvm_cpuid_entry2) -> Self {
        cpuid::Entry {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        }
    }
}

impl From<&cpuid::Entry> for uapi::kvm_cpuid_entry2 {
    fn from(e: &cpuid::Entry) -> Self {
        uapi::kvm_cpuid_entry2 {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            padding: [0; 3],
        }
    }
}

/// Reads the entries of a `struct kvm_cpuid2` at `arg` (at most
/// `KVM_MAX_CPUID_ENTRIES`, else E2BIG, as KVM_SET_CPUID2).
pub(crate) fn read_cpuid(arg: usize) -> Result<KVec<cpuid::Entry>> {
    let head: uapi::kvm_cpuid2 = read_arg(arg)?;
    let nent = head.nent as usize;
    if nent > cpuid::MAX_ENTRIES {
        return Err(E2BIG);
    }
    let mut reader = trailing::<uapi::kvm_cpuid_entry2>(arg, 8, nent).reader();
    let mut entries = KVec::with_capacity(nent, GFP_KERNEL)?;
    for _ in 0..nent {
        let e: uapi::kvm_cpuid_entry2 = reader.read()?;
        entries.push(cpuid::Entry::from(&e), GFP_KERNEL)?;
    }
    Ok(entries)
}

/// `KVM_GET_EMULATED_CPUID` (`kvm_dev_ioctl_get_cpuid()`): E2BIG for a
/// buffer of no entry, EINVAL when an entry's padding is not zero (KVM
/// keeps it for later use), then the features rkvm emulates beyond what
/// the processor has: none (KVM emulates MOVBE and RDPID), so `nent` 0.
pub(crate) fn get_emulated_cpuid(arg: usize) -> Result<isize> {
    let head: uapi::kvm_cpuid2 = read_arg(arg)?;
    if head.nent < 1 {
        return Err(E2BIG);
    }
    let n = (head.nent as usize).min(cpuid::MAX_ENTRIES);
    let mut reader = trailing::<uapi::kvm_cpuid_entry2>(arg, 8, n).reader();
    for _ in 0..n {
        let e: uapi::kvm_cpuid_entry2 = reader.read().map_err(|_| EINVAL)?;
        if e.padding != [0; 3] {
            return Err(EINVAL);
        }
    }
    write_arg(arg, &0u32)?;
    Ok(0)
}

/// Writes `entries` as the `struct kvm_cpuid2` at `arg`, whose `nent` says
/// how many fit: E2BIG (nothing written) if they do not.
pub(crate) fn write_cpuid(arg: usize, entries: &[cpuid::Entry]) -> Result {
    let head: uapi::kvm_cpuid2 = read_arg(arg)?;
    if (head.nent as usize) < entries.len() {
        return Err(E2BIG);
    }
    let mut writer = trailing::<uapi::kvm_cpuid_entry2>(arg, 8, entries.len()).writer();
    for e in entries {
        writer.write(&uapi::kvm_cpuid_entry2::from(e))?;
    }
    // `nent` is the header's first field; its padding stays as userspace left it.
    write_arg(arg, &(entries.len() as u32))
}

/// Reads an ioctl's argument struct from user memory.
pub(crate) fn read_arg<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<T>())
        .reader()
        .read::<T>()
}

/// Writes an ioctl's result struct to user memory.
pub(crate) fn write_arg<T: AsBytes>(arg: usize, value: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<T>())
        .writer()
        .write(value)
}

/// The capabilities rkvm implements, with the value `KVM_CHECK_EXTENSION`
/// returns for each. Anything not listed answers 0, as KVM does for a
/// capability it does not have. An entry goes here only together with the
/// feature it announces.
const CAPABILITIES: &[(u32, i32)] = &[
    (uapi::KVM_CAP_USER_MEMORY, 1),
    (uapi::KVM_CAP_USER_MEMORY2, 1),
    (uapi::KVM_CAP_SET_IDENTITY_MAP_ADDR, 1),
    (uapi::KVM_CAP_SET_TSS_ADDR, 1),
    (uapi::KVM_CAP_DESTROY_MEMORY_REGION_WORKS, 1),
    (uapi::KVM_CAP_JOIN_MEMORY_REGIONS_WORKS, 1),
    (uapi::KVM_CAP_NR_VCPUS, MAX_VCPUS as i32),
    (uapi::KVM_CAP_MAX_VCPUS, MAX_VCPUS as i32),
    (uapi::KVM_CAP_MAX_VCPU_ID, MAX_VCPU_ID as i32),
    (
        uapi::KVM_CAP_NR_MEMSLOTS,
        crate::pure::memslot::USER_MEM_SLOTS as i32,
    ),
    (uapi::KVM_CAP_READONLY_MEM, 1),
    (uapi::KVM_CAP_EXT_CPUID, 1),
    (uapi::KVM_CAP_SET_GUEST_DEBUG, 1),
    (uapi::KVM_CAP_SET_GUEST_DEBUG2, GUEST_DEBUG_VALID as i32),
    (uapi::KVM_CAP_IMMEDIATE_EXIT, 1),
    (uapi::KVM_CAP_BINARY_STATS_FD, 1),
    (uapi::KVM_CAP_ENABLE_CAP_VM, 1),
    (uapi::KVM_CAP_MP_STATE, 1),
    (uapi::KVM_CAP_USER_NMI, 1),
    (uapi::KVM_CAP_GET_TSC_KHZ, 1),
    (uapi::KVM_CAP_VCPU_EVENTS, 1),
    (uapi::KVM_CAP_ADJUST_CLOCK, crate::clock::VALID_FLAGS as i32),
    (uapi::KVM_CAP_EXT_EMUL_CPUID, 1),
    (uapi::KVM_CAP_GET_MSR_FEATURES, 1),
    // No in-kernel irqchip: KVM_SET_GSI_ROUTING is EINVAL, as in KVM then.
    (uapi::KVM_CAP_IRQ_ROUTING, MAX_IRQ_ROUTES),
    (uapi::KVM_CAP_MCE, crate::pure::msr::MAX_MCE_BANKS as i32),
    (uapi::KVM_CAP_DEBUGREGS, 1),
    // KVM_GET/SET_XSAVE work with or without XSAVE on the host (an FXSAVE
    // image then), as in KVM.
    (uapi::KVM_CAP_XSAVE, 1),
    (uapi::KVM_CAP_IOEVENTFD, 1),
    // Length 0: any write at the address, MMIO (x86's NO_LENGTH) and PIO
    // alike (ANY_LENGTH), as KVM.
    (uapi::KVM_CAP_IOEVENTFD_NO_LENGTH, 1),
    (uapi::KVM_CAP_IOEVENTFD_ANY_LENGTH, 1),
    (
        uapi::KVM_CAP_COALESCED_MMIO,
        COALESCED_MMIO_PAGE_OFFSET as i32,
    ),
    (uapi::KVM_CAP_COALESCED_PIO, 1),
];

/// Entries of a GSI routing table (`KVM_MAX_IRQ_ROUTES`, the value of
/// `KVM_CAP_IRQ_ROUTING`).
pub(crate) const MAX_IRQ_ROUTES: i32 = 4096;

/// `KVM_SET_GUEST_DEBUG` control bits rkvm implements: enable,
/// single-step, software and hardware breakpoints (not `INJECT_DB`,
/// `INJECT_BP`, `BLOCKIRQ`). `KVM_CAP_SET_GUEST_DEBUG2`.
pub(crate) const GUEST_DEBUG_VALID: u32 = crate::pure::debug::control::SUPPORTED;

// `pure::debug::control` spells out `<linux/kvm.h>`'s bits.
const _: () = {
    use crate::pure::debug::control;
    assert!(control::ENABLE == uapi::KVM_GUESTDBG_ENABLE);
    assert!(control::SINGLESTEP == uapi::KVM_GUESTDBG_SINGLESTEP);
    assert!(control::USE_SW_BP == uapi::KVM_GUESTDBG_USE_SW_BP);
    assert!(control::USE_HW_BP == uapi::KVM_GUESTDBG_USE_HW_BP);
    assert!(control::INJECT_DB == uapi::KVM_GUESTDBG_INJECT_DB);
    assert!(control::INJECT_BP == uapi::KVM_GUESTDBG_INJECT_BP);
    assert!(control::BLOCKIRQ == uapi::KVM_GUESTDBG_BLOCKIRQ);
};

/// `KVM_SET_TSC_KHZ` (vCPU and VM fd) without TSC scaling: the guest's
/// TSC runs at the host's rate, so only that rate is accepted, within KVM's
/// tolerance of 250 ppm (`tsc_tolerance_ppm`); 0 means the host's. KVM
/// without scaling also accepts a faster rate, emulated by catching the
/// TSC up at each entry; rkvm refuses it (EINVAL) and, like KVM without
/// scaling, does not announce `KVM_CAP_TSC_CONTROL`.
pub(crate) fn set_tsc_khz(khz: usize) -> Result<isize> {
    let host = u64::from(crate::sys::tsc_khz());
    let khz = if khz == 0 { host } else { khz as u64 };
    let tolerance = host * 250 / 1_000_000;
    if host == 0 || khz.abs_diff(host) > tolerance {
        return Err(EINVAL);
    }
    Ok(0)
}

/// `KVM_GET_TSC_KHZ`: the guest TSC's rate, the host's (0 when the kernel
/// could not calibrate it, as KVM answers then).
pub(crate) fn get_tsc_khz() -> Result<isize> {
    Ok(crate::sys::tsc_khz() as isize)
}

/// `KVM_CHECK_EXTENSION`: the argument is a `long` capability number.
pub(crate) fn check_extension(cap: usize) -> i32 {
    use crate::pure::ioctl::{
        mmu_mode,
        KVM_CAP_RKVM_MMU, //
    };
    // The MMU modes: both backends have both.
    if cap == KVM_CAP_RKVM_MMU as usize {
        return (mmu_mode::TDP | mmu_mode::SHADOW) as i32;
    }
    // KVM_GET/SET_XCRS: only where the host has XSAVE (boot_cpu_has()).
    if cap == uapi::KVM_CAP_XCRS as usize {
        return i32::from(crate::guest_state::host_xsave().xcr0 != 0);
    }
    // The size KVM_GET_XSAVE2 needs: the image of every component guests
    // may have, at least a struct kvm_xsave.
    if cap == uapi::KVM_CAP_XSAVE2 as usize {
        return crate::guest_state::host_xsave().cap_xsave2() as i32;
    }
    // The in-kernel irqchips (the local APICs of both kinds, the PIC and
    // IOAPIC of KVM_CREATE_IRQCHIP, the PIT): all of them, unless the
    // `irqchip` module parameter turned them off.
    if cap == uapi::KVM_CAP_SPLIT_IRQCHIP as usize
        || cap == uapi::KVM_CAP_IRQCHIP as usize
        || cap == uapi::KVM_CAP_IRQ_INJECT_STATUS as usize
        || cap == uapi::KVM_CAP_PIT2 as usize
        || cap == uapi::KVM_CAP_PIT_STATE2 as usize
        || cap == uapi::KVM_CAP_REINJECT_CONTROL as usize
        || cap == uapi::KVM_CAP_SIGNAL_MSI as usize
        || cap == uapi::KVM_CAP_IRQFD as usize
        || cap == uapi::KVM_CAP_IRQFD_RESAMPLE as usize
    {
        return i32::from(crate::module_parameters::irqchip.value());
    }
    // The largest nested state, in the format of the backend's vendor (as
    // kvm_amd and kvm_intel answer with their nested support on).
    if cap == uapi::KVM_CAP_NESTED_STATE as usize {
        return nested_format().map_or(0, |f| crate::pure::nested::max_size(f) as i32);
    }
    CAPABILITIES
        .iter()
        .find(|&&(nr, _)| nr as usize == cap)
        .map_or(0, |&(_, value)| value)
}

/// The `KVM_GET/SET_NESTED_STATE` format: that of the KVM of the backend's
/// vendor (`None` without a backend).
pub(crate) fn nested_format() -> Option<crate::pure::nested::Format> {
    use crate::{
        pure::nested::Format,
        vendor::Vendor, //
    };
    crate::vendor::usable().map(|v| match v {
        Vendor::Svm => Format::Svm,
        Vendor::Vmx => Format::Vmx,
    })
}

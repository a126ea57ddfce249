// SPDX-License-Identifier: GPL-2.0

//! The model-specific registers rkvm virtualizes: their numbers (the list
//! `KVM_GET_MSR_INDEX_LIST` reports) and the architectural checks on writes.

/// `IA32_TIME_STAMP_COUNTER`.
pub const TSC: u32 = 0x10;
/// `IA32_APIC_BASE`.
pub const APIC_BASE: u32 = 0x1b;
/// `IA32_SYSENTER_CS`.
pub const SYSENTER_CS: u32 = 0x174;
/// `IA32_SYSENTER_ESP`.
pub const SYSENTER_ESP: u32 = 0x175;
/// `IA32_SYSENTER_EIP`.
pub const SYSENTER_EIP: u32 = 0x176;
/// `IA32_PAT`.
pub const PAT: u32 = 0x277;
/// `EFER`.
pub const EFER: u32 = 0xc000_0080;
/// `STAR`.
pub const STAR: u32 = 0xc000_0081;
/// `LSTAR`.
pub const LSTAR: u32 = 0xc000_0082;
/// `CSTAR`.
pub const CSTAR: u32 = 0xc000_0083;
/// `SFMASK`.
pub const SFMASK: u32 = 0xc000_0084;
/// `FS.base`.
pub const FS_BASE: u32 = 0xc000_0100;
/// `GS.base`.
pub const GS_BASE: u32 = 0xc000_0101;
/// `KernelGSbase`.
pub const KERNEL_GS_BASE: u32 = 0xc000_0102;

/// What `KVM_GET_MSR_INDEX_LIST` reports: the MSRs a VMM saves and
/// restores with `KVM_GET/SET_MSRS`. As in KVM, the ones whose state is part
/// of `struct kvm_sregs` (EFER, APIC base, FS and GS bases) are left out,
/// though `KVM_GET/SET_MSRS` and the guest reach them too.
pub const LIST: [u32; 10] = [
    TSC,
    SYSENTER_CS,
    SYSENTER_ESP,
    SYSENTER_EIP,
    PAT,
    STAR,
    LSTAR,
    CSTAR,
    SFMASK,
    KERNEL_GS_BASE,
];

/// MSRs that describe or tune the physical machine (microcode, northbridge,
/// memory-controller and bus configuration). A guest kernel reads and writes
/// some of them without `rdmsr_safe` (Linux's `init_amd()` sets a bit in
/// NB_CFG), so a #GP would be a warning with a call trace in the guest. As
/// KVM does (`kvm_get_msr_common`/`kvm_set_msr_common`), they read as fixed
/// values and writes are dropped: a guest cannot reach the real ones.
const FIXED: [(u32, u64); 15] = [
    (0x17, 0),             // IA32_PLATFORM_ID
    (0x2a, 0),             // EBL_CR_POWERON
    (0x8b, 0x1_0000_0000), // IA32_UCODE_REV: a microcode revision of 1
    (0xc001_001f, 0),      // AMD64_NB_CFG
    (0xc001_0010, 0),      // K8_SYSCFG
    (0xc001_0055, 0),      // K8_INT_PENDING_MSG
    (0xc001_0058, 0),      // FAM10H_MMIO_CONF_BASE
    (0xc001_0112, 0),      // K8_TSEG_ADDR
    (0xc001_0113, 0),      // K8_TSEG_MASK
    (0xc001_1022, 0),      // AMD64_DC_CFG
    (0xc001_1023, 0),      // AMD64_TW_CFG
    (0xc001_102a, 0),      // AMD64_BU_CFG2
    (0xc001_102c, 0),      // F15H_EX_CFG
    (0x79, 0),             // IA32_UCODE_WRITE (write-only on hardware)
    // IA32_MISC_ENABLE: KVM's reset value, PEBS and BTS unavailable. Linux
    // reads it on Intel before it has an IDT that survives a #GP
    // (verify_cpu, to clear XD_DISABLE): a #GP there is a triple fault.
    (0x1a0, 0x1800),
];

/// Writes KVM accepts and drops (the others of [`FIXED`] are #GP on write).
const WRITE_IGNORED: [u32; 8] = [
    0x79,
    0x8b,
    0x1a0,
    0xc001_001f,
    0xc001_1022,
    0xc001_1023,
    0xc001_102a,
    0xc001_102c,
];

/// The value a read of machine-configuration MSR `index` gives, if it is one.
pub fn fixed_read(index: u32) -> Option<u64> {
    // IA32_UCODE_WRITE is write-only.
    FIXED
        .iter()
        .find(|(i, _)| *i == index && *i != 0x79)
        .map(|(_, v)| *v)
}

/// Whether a write of MSR `index` is accepted and dropped.
pub fn write_ignored(index: u32) -> bool {
    WRITE_IGNORED.contains(&index)
}

/// `KVM_GET_MSRS`/`KVM_SET_MSRS` handle fewer than this many at once (`MAX_IO_MSRS`).
pub const MAX_IO_MSRS: u32 = 256;

/// Whether a PAT value is valid: each of its 8 entries is a memory type
/// (0 UC, 1 WC, 4 WT, 5 WP, 6 WB, 7 UC-).
pub fn valid_pat(pat: u64) -> bool {
    (0..8).all(|i| matches!((pat >> (8 * i)) & 0xff, 0 | 1 | 4 | 5 | 6 | 7))
}

/// Whether `addr` is canonical with 48-bit linear addresses (the base MSRs
/// must hold canonical addresses, else WRMSR is #GP).
pub fn canonical(addr: u64) -> bool {
    let top = (addr as i64) >> 47;
    top == 0 || top == -1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pat() {
        assert!(valid_pat(0x0007_0406_0007_0406));
        assert!(!valid_pat(0x0007_0406_0007_0402));
        assert!(!valid_pat(0x0800_0000_0000_0000));
    }

    #[test]
    fn canonical_addresses() {
        assert!(canonical(0x0000_7fff_ffff_ffff));
        assert!(canonical(0xffff_8000_0000_0000));
        assert!(!canonical(0x0000_8000_0000_0000));
        assert!(!canonical(0xfff0_0000_0000_0000));
    }

    #[test]
    fn machine_configuration_msrs_read_fixed_and_drop_writes() {
        assert_eq!(
            fixed_read(0xc001_001f),
            Some(0),
            "NB_CFG, which Linux's init_amd() touches"
        );
        assert_eq!(fixed_read(0x8b), Some(0x1_0000_0000));
        assert_eq!(fixed_read(0x79), None, "UCODE_WRITE is write-only");
        assert_eq!(fixed_read(0xdead_beef), None);
        assert!(write_ignored(0xc001_001f) && write_ignored(0x79));
        assert!(
            !write_ignored(0xc001_0010),
            "SYSCFG writes are #GP, as in KVM"
        );
        assert!(!write_ignored(LSTAR), "real MSRs are not dropped");
    }

    #[test]
    fn list_has_no_duplicates() {
        for (i, a) in LIST.iter().enumerate() {
            assert!(!LIST[i + 1..].contains(a));
        }
    }
}

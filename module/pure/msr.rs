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
/// `IA32_FEATURE_CONTROL` (the host's: VMX allowed).
pub const FEATURE_CONTROL: u32 = 0x3a;
/// `IA32_DEBUGCTL` (the host's, which a VMX exit clears).
pub const DEBUGCTL: u32 = 0x1d9;
/// AMD `VM_CR` (the host's: SVM disabled by firmware).
pub const VM_CR: u32 = 0xc001_0114;
/// AMD `VM_HSAVE_PA`: where VMRUN saves the host's state.
pub const VM_HSAVE_PA: u32 = 0xc001_0117;

/// `IA32_MTRRCAP` (read-only).
pub const MTRR_CAP: u32 = 0xfe;
/// `IA32_MCG_CAP` (read-only; `KVM_X86_SETUP_MCE` sets it).
pub const MCG_CAP: u32 = 0x179;
/// `IA32_MCG_STATUS`.
pub const MCG_STATUS: u32 = 0x17a;
/// `IA32_MCG_CTL`.
pub const MCG_CTL: u32 = 0x17b;
/// `IA32_MISC_ENABLE`.
pub const MISC_ENABLE: u32 = 0x1a0;
/// `IA32_XSS`: the supervisor state components XSAVES manages. rkvm
/// supports none (no XSAVES for guests), so, as KVM with no supported XSS
/// bit, the guest's RDMSR and WRMSR are #GP (its CPUID has no XSAVES) and
/// the VMM reads 0 and may write only 0. Not in the MSR index list (KVM
/// lists it only with supported XSS bits).
pub const XSS: u32 = 0xda0;
/// The first variable-range MTRR, `IA32_MTRR_PHYSBASE0` (then PHYSMASK0, ...).
pub const MTRR_PHYS_BASE0: u32 = 0x200;
/// `IA32_MTRR_DEF_TYPE`.
pub const MTRR_DEF_TYPE: u32 = 0x2ff;
/// `IA32_MC0_CTL`: bank i's CTL, STATUS, ADDR and MISC are 0x400 + 4i + 0..3.
pub const MC0_CTL: u32 = 0x400;
/// kvmclock's wall clock and system time, the first (`KVM_FEATURE_CLOCKSOURCE`)
/// and the second (`KVM_FEATURE_CLOCKSOURCE2`) numbering.
pub const KVM_WALL_CLOCK: u32 = 0x11;
/// See [`KVM_WALL_CLOCK`].
pub const KVM_SYSTEM_TIME: u32 = 0x12;
/// See [`KVM_WALL_CLOCK`].
pub const KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
/// See [`KVM_WALL_CLOCK`].
pub const KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;

/// What `KVM_GET_MSR_INDEX_LIST` reports: the MSRs a VMM saves and
/// restores with `KVM_GET/SET_MSRS`. As in KVM, the ones whose state is part
/// of `struct kvm_sregs` (EFER, APIC base, FS and GS bases) are left out,
/// though `KVM_GET/SET_MSRS` and the guest reach them too, and so are the
/// MTRRs and the MCE banks, which a VMM finds from CPUID and `MCG_CAP`.
pub const LIST: [u32; 17] = [
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
    MISC_ENABLE,
    MCG_STATUS,
    MCG_CTL,
    KVM_WALL_CLOCK,
    KVM_SYSTEM_TIME,
    KVM_WALL_CLOCK_NEW,
    KVM_SYSTEM_TIME_NEW,
];

/// The feature MSRs (`KVM_GET_MSR_FEATURE_INDEX_LIST`): what the system
/// fd's `KVM_GET_MSRS` reads, the values a VMM may give its guests. Only
/// the microcode revision, which rkvm's guests read as [`fixed_read`] says
/// (KVM adds ARCH_CAPABILITIES, PERF_CAPABILITIES, AMD's DE_CFG and, with
/// nested virtualization, the VMX capabilities).
pub const FEATURE_LIST: [u32; 1] = [0x8b];

/// A feature MSR's value for the system fd's `KVM_GET_MSRS`.
pub fn feature_read(index: u32) -> Option<u64> {
    FEATURE_LIST
        .contains(&index)
        .then(|| fixed_read(index))
        .flatten()
}

/// Variable-range MTRR pairs (`KVM_NR_VAR_MTRR`).
pub const NR_VAR_MTRR: usize = 8;
/// The fixed-range MTRRs: 64K at 0x250, 16K at 0x258-0x259, 4K at 0x268-0x26f.
const MTRR_FIXED: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26a, 0x26b, 0x26c, 0x26d, 0x26e, 0x26f,
];
/// `MTRRcap` as KVM reports it: WC (bit 10) and fixed ranges (bit 8)
/// supported, no SMRR, [`NR_VAR_MTRR`] variable ranges.
pub const MTRR_CAP_VALUE: u64 = 0x500 | NR_VAR_MTRR as u64;

/// Machine-check banks a VM may have (`KVM_MAX_MCE_BANKS`, the value of
/// `KVM_CAP_MCE`).
pub const MAX_MCE_BANKS: usize = 32;
/// `MCG_CAP.MCG_CTL_P`: `IA32_MCG_CTL` is present.
pub const MCG_CTL_P: u64 = 1 << 8;
/// `MCG_CAP.MCG_SER_P`: software error recovery.
pub const MCG_SER_P: u64 = 1 << 24;
/// What `KVM_X86_GET_MCE_CAP_SUPPORTED` reports (KVM's
/// `kvm_caps.supported_mce_cap` without an in-kernel local APIC: no CMCI,
/// no LMCE).
pub const MCE_CAP_SUPPORTED: u64 = MCG_CTL_P | MCG_SER_P;
/// `MCi_STATUS` bits `KVM_X86_SET_MCE` looks at.
pub mod mci_status {
    /// The bank holds a valid error.
    pub const VAL: u64 = 1 << 63;
    /// An earlier error was overwritten.
    pub const OVER: u64 = 1 << 62;
    /// Uncorrected error.
    pub const UC: u64 = 1 << 61;
    /// Processor context corrupt.
    pub const PCC: u64 = 1 << 57;
    /// Signaled (SRAR/SRAO).
    pub const S: u64 = 1 << 56;
    /// Action required.
    pub const AR: u64 = 1 << 55;
}
/// `MCG_STATUS.MCIP`: a machine check is in progress.
pub const MCG_STATUS_MCIP: u64 = 1 << 2;
/// `IA32_MISC_ENABLE` at reset (KVM's): BTS and PEBS unavailable.
pub const MISC_ENABLE_RESET: u64 = MISC_ENABLE_BTS_UNAVAIL | MISC_ENABLE_PEBS_UNAVAIL;
const MISC_ENABLE_EMON: u64 = 1 << 7;
const MISC_ENABLE_BTS_UNAVAIL: u64 = 1 << 11;
const MISC_ENABLE_PEBS_UNAVAIL: u64 = 1 << 12;

/// `struct kvm_x86_mce`, as `KVM_X86_SET_MCE` hands it over.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mce {
    /// `MCi_STATUS` of the error.
    pub status: u64,
    /// `MCi_ADDR`.
    pub addr: u64,
    /// `MCi_MISC`.
    pub misc: u64,
    /// `MCG_STATUS` while the machine check is delivered.
    pub mcg_status: u64,
    /// The bank.
    pub bank: u8,
}

/// What `KVM_X86_SET_MCE` asks of the vCPU after recording the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MceOutcome {
    /// Recorded in the bank (or dropped as the banks' controls say): no event.
    Logged,
    /// Deliver a machine-check exception (#MC, vector 18).
    Exception,
    /// A machine check while one is in progress, or with CR4.MCE clear:
    /// the processor shuts down.
    Shutdown,
}

/// The MSRs rkvm keeps above the vendors, with KVM's rules
/// (`arch/x86/kvm/mtrr.c`, `set_msr_mce()`/`get_msr_mce()` and the
/// `IA32_MISC_ENABLE` case of `kvm_set_msr_common()`): the MTRRs, the
/// machine-check registers and banks, `IA32_MISC_ENABLE`. (kvmclock's MSRs
/// need the VM: `vcpu/clock.rs`.)
#[derive(Clone, Debug)]
pub struct CommonMsrs {
    mtrr_def_type: u64,
    mtrr_fixed: [u64; 11],
    /// Base and mask of each variable range, in MSR order.
    mtrr_var: [u64; 2 * NR_VAR_MTRR],
    mcg_cap: u64,
    mcg_status: u64,
    mcg_ctl: u64,
    /// CTL, STATUS, ADDR, MISC of each bank.
    mce_banks: [[u64; 4]; MAX_MCE_BANKS],
    misc_enable: u64,
}

impl Default for CommonMsrs {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `t` is a memory type an MTRR may hold (UC, WC, WT, WP, WB).
fn valid_mtrr_type(t: u64) -> bool {
    matches!(t, 0 | 1 | 4 | 5 | 6)
}

impl CommonMsrs {
    /// The state at vCPU creation: MTRRs off, [`MAX_MCE_BANKS`] banks with
    /// no controls until the VMM sets `MCG_CAP`, KVM's `IA32_MISC_ENABLE`.
    pub const fn new() -> Self {
        Self {
            mtrr_def_type: 0,
            mtrr_fixed: [0; 11],
            mtrr_var: [0; 2 * NR_VAR_MTRR],
            mcg_cap: MAX_MCE_BANKS as u64,
            mcg_status: 0,
            mcg_ctl: 0,
            mce_banks: [[0; 4]; MAX_MCE_BANKS],
            misc_enable: MISC_ENABLE_RESET,
        }
    }

    fn banks(&self) -> usize {
        ((self.mcg_cap & 0xff) as usize).min(MAX_MCE_BANKS)
    }

    /// The bank register (bank, 0-3) MSR `index` names, if the vCPU has it.
    fn bank_reg(&self, index: u32) -> Option<(usize, usize)> {
        let offset = index.checked_sub(MC0_CTL)? as usize;
        (offset < 4 * self.banks()).then_some((offset / 4, offset % 4))
    }

    /// Reads MSR `index` (`host`: `KVM_GET_MSRS`, else the guest's RDMSR).
    /// `None`: not one of these, or #GP.
    pub fn get(&self, index: u32, host: bool) -> Option<u64> {
        Some(match index {
            MTRR_CAP => MTRR_CAP_VALUE,
            MTRR_DEF_TYPE => self.mtrr_def_type,
            i if (MTRR_PHYS_BASE0..MTRR_PHYS_BASE0 + 2 * NR_VAR_MTRR as u32).contains(&i) => {
                self.mtrr_var[(i - MTRR_PHYS_BASE0) as usize]
            }
            i if MTRR_FIXED.contains(&i) => {
                self.mtrr_fixed[MTRR_FIXED.iter().position(|&f| f == i)?]
            }
            MCG_CAP => self.mcg_cap,
            MCG_STATUS => self.mcg_status,
            MCG_CTL if self.mcg_cap & MCG_CTL_P != 0 || host => self.mcg_ctl,
            MISC_ENABLE => self.misc_enable,
            XSS if host => 0,
            i => {
                let (bank, reg) = self.bank_reg(i)?;
                self.mce_banks[bank][reg]
            }
        })
    }

    /// Writes MSR `index`. `None`: not one of these; `Some(false)`: #GP (or
    /// a short count for the VMM); `Some(true)`: done. `maxphyaddr` bounds
    /// the variable-range MTRRs.
    pub fn set(&mut self, index: u32, value: u64, host: bool, maxphyaddr: u32) -> Option<bool> {
        let reserved_pa = if maxphyaddr >= 64 {
            0
        } else {
            !0u64 << maxphyaddr
        };
        let ok = match index {
            MTRR_DEF_TYPE => {
                let ok = value & !0xcff == 0 && valid_mtrr_type(value & 0xff);
                if ok {
                    self.mtrr_def_type = value;
                }
                ok
            }
            i if (MTRR_PHYS_BASE0..MTRR_PHYS_BASE0 + 2 * NR_VAR_MTRR as u32).contains(&i) => {
                let base = i % 2 == 0;
                let ok = if base {
                    valid_mtrr_type(value & 0xff) && value & (reserved_pa | 0xf00) == 0
                } else {
                    value & (reserved_pa | 0x7ff) == 0
                };
                if ok {
                    self.mtrr_var[(i - MTRR_PHYS_BASE0) as usize] = value;
                }
                ok
            }
            i if MTRR_FIXED.contains(&i) => {
                let ok = (0..8).all(|b| valid_mtrr_type((value >> (8 * b)) & 0xff));
                if ok {
                    self.mtrr_fixed[MTRR_FIXED.iter().position(|&f| f == i)?] = value;
                }
                ok
            }
            MCG_STATUS => {
                self.mcg_status = value;
                true
            }
            MCG_CTL => {
                let ok = (self.mcg_cap & MCG_CTL_P != 0 || (value == 0 && host))
                    && (value == 0 || value == !0);
                if ok {
                    self.mcg_ctl = value;
                }
                ok
            }
            XSS => host && value == 0,
            MISC_ENABLE => {
                let mut value = value;
                if !host {
                    let ro = MISC_ENABLE_BTS_UNAVAIL | MISC_ENABLE_PEBS_UNAVAIL;
                    if (self.misc_enable ^ value) & ro != 0 {
                        return Some(false);
                    }
                    // EMON reads as it was: writes to it are ignored.
                    value = (value & !MISC_ENABLE_EMON) | (self.misc_enable & MISC_ENABLE_EMON);
                }
                self.misc_enable = value;
                true
            }
            i => {
                let (bank, reg) = self.bank_reg(i)?;
                let ok = match reg {
                    // CTL: 0 or all ones (bit 10 and bit 0 may be clear:
                    // K8 GART and UnixWare workarounds KVM allows).
                    0 => value == 0 || value | (1 << 10) | 1 == !0,
                    // STATUS: the guest may only clear it (no
                    // HWCR.McStatusWrEn); the VMM may write anything.
                    1 => host || value == 0,
                    _ => true,
                };
                if ok {
                    self.mce_banks[bank][reg] = value;
                }
                ok
            }
        };
        Some(ok)
    }

    /// `KVM_X86_SETUP_MCE`: the bank count (1 to [`MAX_MCE_BANKS`]) and
    /// capabilities ([`MCE_CAP_SUPPORTED`], bits 16-23 free) of `MCG_CAP`,
    /// of which the vendor keeps `vendor_mask`; `MCG_CTL` and every bank's
    /// CTL become all ones. `false`: EINVAL.
    pub fn setup_mce(&mut self, mcg_cap: u64, vendor_mask: u64) -> bool {
        let banks = (mcg_cap & 0xff) as usize;
        if banks == 0
            || banks > MAX_MCE_BANKS
            || mcg_cap & !(MCE_CAP_SUPPORTED | 0xff | 0xff_0000) != 0
        {
            return false;
        }
        self.mcg_cap = mcg_cap & vendor_mask;
        if mcg_cap & MCG_CTL_P != 0 {
            self.mcg_ctl = !0;
        }
        for bank in &mut self.mce_banks[..banks] {
            bank[0] = !0;
        }
        true
    }

    /// `KVM_X86_SET_MCE`: records the error in its bank as KVM does
    /// (`kvm_vcpu_ioctl_x86_set_mce()`). `None`: EINVAL (no such bank, or
    /// the status is not valid). `cr4_mce`: the guest's CR4.MCE.
    pub fn set_mce(&mut self, mce: &Mce, cr4_mce: bool) -> Option<MceOutcome> {
        use mci_status::*;
        let bank = usize::from(mce.bank);
        if bank >= self.banks() || mce.status & VAL == 0 {
            return None;
        }
        let mut status = mce.status;
        let uc = status & UC != 0;
        let regs = &mut self.mce_banks[bank];
        // An uncorrected error with no action required (UCNA): logged,
        // signalled through CMCI, which rkvm does not offer.
        if mce.mcg_status == 0 && status & (PCC | S | AR) == 0 && uc {
            regs[1] = status;
            regs[2] = mce.addr;
            regs[3] = mce.misc;
            self.mcg_status = mce.mcg_status;
            return Some(MceOutcome::Logged);
        }
        // Uncorrected errors reporting off (MCG_CTL, or the bank's CTL):
        // dropped.
        if uc && ((self.mcg_cap & MCG_CTL_P != 0 && self.mcg_ctl != !0) || regs[0] != !0) {
            return Some(MceOutcome::Logged);
        }
        if uc {
            if self.mcg_status & MCG_STATUS_MCIP != 0 || !cr4_mce {
                return Some(MceOutcome::Shutdown);
            }
            if regs[1] & VAL != 0 {
                status |= OVER;
            }
            regs[2] = mce.addr;
            regs[3] = mce.misc;
            self.mcg_status = mce.mcg_status;
            regs[1] = status;
            return Some(MceOutcome::Exception);
        }
        if regs[1] & VAL == 0 || regs[1] & UC == 0 {
            if regs[1] & VAL != 0 {
                status |= OVER;
            }
            regs[2] = mce.addr;
            regs[3] = mce.misc;
            regs[1] = status;
        } else {
            regs[1] |= OVER;
        }
        Some(MceOutcome::Logged)
    }
}

/// MSRs that describe or tune the physical machine (microcode, northbridge,
/// memory-controller and bus configuration). A guest kernel reads and writes
/// some of them without `rdmsr_safe` (Linux's `init_amd()` sets a bit in
/// NB_CFG), so a #GP would be a warning with a call trace in the guest. As
/// KVM does (`kvm_get_msr_common`/`kvm_set_msr_common`), they read as fixed
/// values and writes are dropped: a guest cannot reach the real ones.
const FIXED: [(u32, u64); 14] = [
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
];

/// Writes KVM accepts and drops (the others of [`FIXED`] are #GP on write).
const WRITE_IGNORED: [u32; 7] = [
    0x79,
    0x8b,
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

/// What a write of `value` to MSR `index` stores, for the MSRs both
/// backends keep in their state (the VMCB, or the VMCS and the MSRs rkvm
/// switches): the value, masked as the processor masks it, or `None` for a
/// value the processor refuses with #GP (a non-canonical address, a PAT
/// entry that is no memory type, SFMASK's upper half, APIC_BASE's reserved
/// bits 7:0 and 9). `None` too for any other MSR. The same rules for
/// WRMSR and `KVM_SET_MSRS`, on both backends, as KVM's `kvm_set_msr_common`
/// and `__kvm_set_msr` apply them above the vendors.
pub fn backend_write(index: u32, value: u64) -> Option<u64> {
    match index {
        SYSENTER_CS => Some(value & 0xffff),
        SYSENTER_ESP | SYSENTER_EIP | LSTAR | CSTAR | FS_BASE | GS_BASE | KERNEL_GS_BASE => {
            canonical(value).then_some(value)
        }
        PAT => valid_pat(value).then_some(value),
        STAR => Some(value),
        SFMASK => (value >> 32 == 0).then_some(value),
        APIC_BASE => (value & 0x2ff == 0).then_some(value),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_msr_writes_are_masked_or_refused_as_the_processor_does() {
        assert_eq!(backend_write(SYSENTER_CS, 0x1234_0010), Some(0x10));
        assert_eq!(
            backend_write(LSTAR, 0xffff_8000_0000_0000),
            Some(0xffff_8000_0000_0000)
        );
        assert_eq!(backend_write(LSTAR, 0x0000_8000_0000_0000), None);
        assert_eq!(backend_write(KERNEL_GS_BASE, 1 << 63), None);
        assert_eq!(backend_write(STAR, u64::MAX), Some(u64::MAX));
        assert_eq!(backend_write(SFMASK, 0x4_0000), Some(0x4_0000));
        assert_eq!(backend_write(SFMASK, 1 << 32), None);
        assert_eq!(
            backend_write(PAT, 0x0007_0406_0007_0406),
            Some(0x0007_0406_0007_0406)
        );
        assert_eq!(backend_write(PAT, 2), None);
        assert_eq!(backend_write(APIC_BASE, 0xfee0_0900), Some(0xfee0_0900));
        assert_eq!(backend_write(APIC_BASE, 0xfee0_0200), None);
        assert_eq!(backend_write(APIC_BASE, 0xfee0_0001), None);
        // Kept elsewhere: the TSC (an offset), EFER (the paging state).
        assert_eq!(backend_write(TSC, 5), None);
        assert_eq!(backend_write(EFER, 0), None);
    }

    #[test]
    fn xss_is_zero_for_the_vmm_and_absent_for_the_guest() {
        let mut m = CommonMsrs::new();
        assert_eq!(m.get(XSS, true), Some(0));
        assert_eq!(m.get(XSS, false), None);
        assert_eq!(m.set(XSS, 0, true, 40), Some(true));
        assert_eq!(m.set(XSS, 1 << 8, true, 40), Some(false));
        assert_eq!(m.set(XSS, 0, false, 40), Some(false));
    }

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
    fn mtrrs_follow_kvm() {
        let mut m = CommonMsrs::new();
        assert_eq!(m.get(MTRR_CAP, false), Some(0x508));
        assert_eq!(m.set(MTRR_CAP, 0, true, 40), None, "MTRRcap is read-only");
        assert_eq!(m.set(MTRR_DEF_TYPE, 0xc06, false, 40), Some(true));
        assert_eq!(m.get(MTRR_DEF_TYPE, false), Some(0xc06));
        assert_eq!(
            m.set(MTRR_DEF_TYPE, 0x1006, false, 40),
            Some(false),
            "reserved bit 12"
        );
        assert_eq!(
            m.set(MTRR_DEF_TYPE, 0x2, false, 40),
            Some(false),
            "type 2 is reserved"
        );
        assert_eq!(m.set(0x250, 0x0606_0606_0606_0606, false, 40), Some(true));
        assert_eq!(m.get(0x250, true), Some(0x0606_0606_0606_0606));
        assert_eq!(m.set(0x26f, 0x0706_0606_0606_0606, false, 40), Some(false));
        assert_eq!(m.get(0x251, true), None, "not an MTRR");
        // Variable: base 0x20f000 WB, mask with valid bit 11.
        assert_eq!(m.set(0x200, 0x8000_0006, false, 40), Some(true));
        assert_eq!(m.set(0x201, 0xff_8000_0800, false, 40), Some(true));
        assert_eq!(
            m.set(0x201, 0x100_0000_0800, false, 40),
            Some(false),
            "above MAXPHYADDR"
        );
        assert_eq!(
            m.set(0x201, 0xff_8000_0400, false, 40),
            Some(false),
            "reserved mask bit"
        );
        assert_eq!(
            m.set(0x200, 0x8000_0106, false, 40),
            Some(false),
            "reserved base bit"
        );
        assert_eq!(m.get(0x20f, false), Some(0));
        assert_eq!(m.get(0x210, false), None);
    }

    #[test]
    fn mce_banks_follow_kvm() {
        let mut m = CommonMsrs::new();
        assert_eq!(m.get(MCG_CAP, true), Some(32));
        assert_eq!(m.set(MCG_CTL, 1, true, 40), Some(false), "no MCG_CTL_P");
        assert_eq!(
            m.set(MCG_CTL, 0, true, 40),
            Some(true),
            "the VMM may write 0"
        );
        assert_eq!(m.set(MCG_CTL, 0, false, 40), Some(false));
        assert!(!m.setup_mce(0, !0));
        assert!(!m.setup_mce(33, !0));
        assert!(
            !m.setup_mce(MCG_CTL_P | 10 | 1 << 9, !0),
            "bit 9 is not supported"
        );
        assert!(m.setup_mce(MCG_CTL_P | MCG_SER_P | 10, 0x1ff));
        assert_eq!(
            m.get(MCG_CAP, true),
            Some(MCG_CTL_P | 10),
            "AMD keeps bits 8:0"
        );
        assert!(m.setup_mce(MCG_CTL_P | MCG_SER_P | 10, !0));
        assert_eq!(m.get(MCG_CTL, false), Some(!0));
        assert_eq!(m.get(MC0_CTL + 4 * 9, false), Some(!0));
        assert_eq!(m.get(MC0_CTL + 4 * 10, true), None, "bank 10 of 10");
        assert_eq!(m.set(MC0_CTL, 0x1234, false, 40), Some(false));
        assert_eq!(
            m.set(MC0_CTL, !(1 << 10), false, 40),
            Some(true),
            "K8 GART bit"
        );
        assert_eq!(
            m.set(MC0_CTL + 1, 5, false, 40),
            Some(false),
            "guest may only clear STATUS"
        );
        assert_eq!(m.set(MC0_CTL + 1, 5, true, 40), Some(true));
        assert_eq!(m.set(MC0_CTL + 1, 0, false, 40), Some(true));
    }

    #[test]
    fn set_mce_follows_kvm() {
        use mci_status::*;
        let mut m = CommonMsrs::new();
        assert!(m.setup_mce(MCG_CTL_P | MCG_SER_P | 10, !0));
        let uc = Mce {
            status: VAL | UC | PCC,
            addr: 0x1000,
            misc: 0,
            mcg_status: 0x5,
            bank: 2,
        };
        assert_eq!(m.set_mce(&Mce { bank: 10, ..uc }, true), None);
        assert_eq!(m.set_mce(&Mce { status: UC, ..uc }, true), None);
        assert_eq!(
            m.set_mce(&uc, false),
            Some(MceOutcome::Shutdown),
            "CR4.MCE clear"
        );
        assert_eq!(m.set_mce(&uc, true), Some(MceOutcome::Exception));
        assert_eq!(m.get(MC0_CTL + 4 * 2 + 1, true), Some(VAL | UC | PCC));
        assert_eq!(m.get(MCG_STATUS, true), Some(0x5));
        assert_eq!(m.set_mce(&uc, true), Some(MceOutcome::Shutdown), "MCIP set");
        // Corrected errors are logged; a second one overwrites and says so.
        let ce = Mce {
            status: VAL | 0x17,
            bank: 3,
            ..uc
        };
        assert_eq!(m.set_mce(&ce, true), Some(MceOutcome::Logged));
        assert_eq!(m.set_mce(&ce, true), Some(MceOutcome::Logged));
        assert_eq!(m.get(MC0_CTL + 4 * 3 + 1, true), Some(VAL | OVER | 0x17));
    }

    #[test]
    fn misc_enable() {
        let mut m = CommonMsrs::new();
        assert_eq!(m.get(MISC_ENABLE, false), Some(0x1800));
        assert_eq!(
            m.set(MISC_ENABLE, 0x1, false, 40),
            Some(false),
            "BTS/PEBS are read-only"
        );
        assert_eq!(m.set(MISC_ENABLE, 0x1881, false, 40), Some(true));
        assert_eq!(
            m.get(MISC_ENABLE, false),
            Some(0x1801),
            "EMON writes ignored"
        );
        assert_eq!(
            m.set(MISC_ENABLE, 0x1, true, 40),
            Some(true),
            "the VMM sets anything"
        );
        assert_eq!(m.get(MISC_ENABLE, true), Some(0x1));
        assert_eq!(m.get(KVM_SYSTEM_TIME, true), None, "kvmclock is the vCPU's");
        assert_eq!(m.set(KVM_WALL_CLOCK, 0, true, 40), None);
    }

    #[test]
    fn list_has_no_duplicates() {
        for (i, a) in LIST.iter().enumerate() {
            assert!(!LIST[i + 1..].contains(a));
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! What the processor offers for virtualization, decoded from raw CPUID leaves
//! and MSR values.
//!
//! The module reads the registers itself (CPUID, `rdmsr_safe`); the `rkvm info`
//! tool reads them from userspace (CPUID, `/dev/cpu/N/msr`). Both hand the raw
//! values to [`VirtFeatures::decode`], so the two always agree.
//!
//! Sources: AMD64 APM vol. 2 (15.4 "Enabling SVM", CPUID Fn8000_000A) and the
//! Intel SDM vol. 3 (A.3.2, A.3.3 and A.10 for the VMX capability MSRs,
//! 24.6.2 for the secondary processor-based controls).

/// CPUID Fn0000_0001 ECX: VMX.
const CPUID1_ECX_VMX: u32 = 1 << 5;
/// CPUID Fn8000_0001 ECX: SVM.
const CPUID_80000001_ECX_SVM: u32 = 1 << 2;

/// CPUID Fn8000_000A EDX feature bits.
mod svm_edx {
    pub(super) const NP: u32 = 1 << 0;
    pub(super) const NRIPS: u32 = 1 << 3;
    pub(super) const VMCB_CLEAN: u32 = 1 << 5;
    pub(super) const FLUSH_BY_ASID: u32 = 1 << 6;
    pub(super) const DECODE_ASSISTS: u32 = 1 << 7;
    pub(super) const VGIF: u32 = 1 << 16;
}

/// `VM_CR` (MSR C001_0114) bit 4: SVM disabled by firmware.
const VM_CR_SVMDIS: u64 = 1 << 4;

/// `IA32_FEATURE_CONTROL` (MSR 0x3A) bits.
const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// Primary processor-based control 31: activate secondary controls.
const PROCBASED_SECONDARY: u32 = 1 << 31;

/// Secondary processor-based controls.
mod procbased2 {
    pub(super) const EPT: u32 = 1 << 1;
    pub(super) const VPID: u32 = 1 << 5;
    pub(super) const UNRESTRICTED_GUEST: u32 = 1 << 7;
}

/// `IA32_VMX_EPT_VPID_CAP` (MSR 0x48C) bits.
mod ept_cap {
    pub(super) const WALK_LENGTH_4: u64 = 1 << 6;
    pub(super) const MEMTYPE_WB: u64 = 1 << 14;
    pub(super) const PAGE_2M: u64 = 1 << 16;
}

/// MSR numbers the decoder needs (defined with the other MSRs).
pub mod msr {
    pub use super::super::{
        msr::{
            FEATURE_CONTROL,
            VM_CR, //
        },
        vmcs::cap_msr::{
            EPT_VPID_CAP as VMX_EPT_VPID_CAP,
            PROCBASED as VMX_PROCBASED_CTLS,
            PROCBASED2 as VMX_PROCBASED_CTLS2, //
        }, //
    };
}

/// The raw register values the decoder looks at. An MSR that could not be read
/// (it faulted, or userspace has no `/dev/cpu/N/msr`) is `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawCpu {
    /// Highest extended CPUID leaf (Fn8000_0000 EAX).
    pub max_ext_leaf: u32,
    /// CPUID Fn0000_0001 ECX.
    pub leaf1_ecx: u32,
    /// CPUID Fn8000_0001 ECX.
    pub ext1_ecx: u32,
    /// CPUID Fn8000_000A EBX (number of ASIDs) and EDX (SVM features).
    pub svm_ebx: u32,
    /// See `svm_ebx`.
    pub svm_edx: u32,
    /// MSR `VM_CR` (AMD).
    pub vm_cr: Option<u64>,
    /// MSR `IA32_FEATURE_CONTROL` (Intel).
    pub feature_control: Option<u64>,
    /// MSR `IA32_VMX_PROCBASED_CTLS`.
    pub procbased: Option<u64>,
    /// MSR `IA32_VMX_PROCBASED_CTLS2`.
    pub procbased2: Option<u64>,
    /// MSR `IA32_VMX_EPT_VPID_CAP`.
    pub ept_vpid_cap: Option<u64>,
}

impl RawCpu {
    /// The CPUID leaf that describes SVM (`svm_ebx`, `svm_edx`).
    pub const SVM_LEAF: u32 = 0x8000_000A;
}

/// A tri-state answer: an MSR we could not read leaves a feature unknown
/// rather than silently absent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Avail {
    /// The processor has it.
    Yes,
    /// The processor does not have it.
    No,
    /// Could not tell (an MSR was unreadable).
    Unknown,
}

impl Avail {
    fn from_bool(b: bool) -> Self {
        if b {
            Avail::Yes
        } else {
            Avail::No
        }
    }

    /// Whether the feature is known to be present.
    pub fn is_yes(self) -> bool {
        self == Avail::Yes
    }
}

/// Virtualization features, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VirtFeatures {
    /// AMD SVM is implemented.
    pub svm: bool,
    /// SVM is disabled by firmware (`VM_CR.SVMDIS`).
    pub svm_disabled: Avail,
    /// Nested paging (NPT).
    pub npt: bool,
    /// Next-RIP save on #VMEXIT.
    pub nrips: bool,
    /// VMCB clean bits.
    pub vmcb_clean: bool,
    /// TLB flush by ASID.
    pub flush_by_asid: bool,
    /// Decode assists (instruction bytes, CR/DR/INVLPG info on exits).
    pub decode_assists: bool,
    /// Virtual GIF.
    pub vgif: bool,
    /// Number of ASIDs (0 without SVM).
    pub asids: u32,
    /// Intel VMX is implemented.
    pub vmx: bool,
    /// VMX is disabled by firmware (`IA32_FEATURE_CONTROL` locked without VMXON
    /// outside SMX).
    pub vmx_disabled: Avail,
    /// Extended page tables with a 4-level walk and write-back paging structures.
    pub ept: Avail,
    /// EPT maps 2 MiB pages.
    pub ept_2m: Avail,
    /// Virtual processor IDs.
    pub vpid: Avail,
    /// Unrestricted guest (real mode and unpaged protected mode without emulation).
    pub unrestricted_guest: Avail,
}

/// Bits 63:32 of a VMX control capability MSR: the controls that may be 1.
fn allowed1(msr: u64) -> u32 {
    (msr >> 32) as u32
}

impl VirtFeatures {
    /// Decodes the raw values.
    pub fn decode(raw: &RawCpu) -> Self {
        let svm = raw.ext1_ecx & CPUID_80000001_ECX_SVM != 0;
        // Fn8000_000A is only meaningful when SVM is reported.
        let svm_edx = if svm && raw.max_ext_leaf >= RawCpu::SVM_LEAF {
            raw.svm_edx
        } else {
            0
        };
        let vmx = raw.leaf1_ecx & CPUID1_ECX_VMX != 0;

        // Secondary controls exist only if the primary "activate secondary
        // controls" bit may be set.
        let secondary: Option<u32> = match (vmx, raw.procbased, raw.procbased2) {
            (false, _, _) => Some(0),
            (true, Some(p), Some(p2)) if allowed1(p) & PROCBASED_SECONDARY != 0 => {
                Some(allowed1(p2))
            }
            (true, Some(p), _) if allowed1(p) & PROCBASED_SECONDARY == 0 => Some(0),
            _ => None,
        };
        let sec = |bit: u32| secondary.map_or(Avail::Unknown, |s| Avail::from_bool(s & bit != 0));
        let ept = match (sec(procbased2::EPT), raw.ept_vpid_cap) {
            (Avail::Yes, Some(cap)) => Avail::from_bool(
                cap & ept_cap::WALK_LENGTH_4 != 0 && cap & ept_cap::MEMTYPE_WB != 0,
            ),
            (Avail::Yes, None) => Avail::Unknown,
            (other, _) => other,
        };
        let ept_2m = match (ept, raw.ept_vpid_cap) {
            (Avail::Yes, Some(cap)) => Avail::from_bool(cap & ept_cap::PAGE_2M != 0),
            (other, _) => other,
        };
        // Unrestricted guest requires EPT (SDM 26.2.1.1).
        let unrestricted_guest = match (sec(procbased2::UNRESTRICTED_GUEST), ept) {
            (Avail::Yes, e) => e,
            (other, _) => other,
        };

        VirtFeatures {
            svm,
            svm_disabled: match (svm, raw.vm_cr) {
                (false, _) => Avail::No,
                (true, Some(v)) => Avail::from_bool(v & VM_CR_SVMDIS != 0),
                (true, None) => Avail::Unknown,
            },
            npt: svm_edx & svm_edx::NP != 0,
            nrips: svm_edx & svm_edx::NRIPS != 0,
            vmcb_clean: svm_edx & svm_edx::VMCB_CLEAN != 0,
            flush_by_asid: svm_edx & svm_edx::FLUSH_BY_ASID != 0,
            decode_assists: svm_edx & svm_edx::DECODE_ASSISTS != 0,
            vgif: svm_edx & svm_edx::VGIF != 0,
            asids: if svm_edx != 0 || svm { raw.svm_ebx } else { 0 },
            vmx,
            vmx_disabled: match (vmx, raw.feature_control) {
                (false, _) => Avail::No,
                (true, Some(fc)) => Avail::from_bool(
                    fc & FEATURE_CONTROL_LOCKED != 0 && fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0,
                ),
                (true, None) => Avail::Unknown,
            },
            ept,
            ept_2m,
            vpid: sec(procbased2::VPID),
            unrestricted_guest,
        }
    }

    /// Calls `f` with the name and availability of every feature, in a fixed
    /// order: the one list that both the module's log line and `rkvm info` print.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, Avail)) {
        let b = Avail::from_bool;
        f("svm", b(self.svm));
        if self.svm {
            f("svm-disabled-by-firmware", self.svm_disabled);
            f("npt", b(self.npt));
            f("nrips", b(self.nrips));
            f("vmcb-clean", b(self.vmcb_clean));
            f("flush-by-asid", b(self.flush_by_asid));
            f("decode-assists", b(self.decode_assists));
            f("vgif", b(self.vgif));
        }
        f("vmx", b(self.vmx));
        if self.vmx {
            f("vmx-disabled-by-firmware", self.vmx_disabled);
            f("ept", self.ept);
            f("ept-2m", self.ept_2m);
            f("vpid", self.vpid);
            f("unrestricted-guest", self.unrestricted_guest);
        }
    }

    /// Whether rkvm can run guests here with hardware-assisted paging.
    pub fn usable_backend(&self) -> Option<&'static str> {
        if self.svm && self.svm_disabled == Avail::No {
            Some("svm")
        } else if self.vmx && self.vmx_disabled == Avail::No && self.unrestricted_guest.is_yes() {
            Some("vmx")
        } else {
            None
        }
    }
}

impl core::fmt::Display for Avail {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Avail::Yes => "+",
            Avail::No => "-",
            Avail::Unknown => "?",
        })
    }
}

/// The feature list as one line, `+svm +npt -nrips ... -vmx` (`?` where an MSR
/// was unreadable): what the module logs at load and `rkvm info` prints.
impl core::fmt::Display for VirtFeatures {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut result = Ok(());
        let mut sep = "";
        self.for_each(|name, avail| {
            result = result.and_then(|()| write!(f, "{sep}{avail}{name}"));
            sep = " ";
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn names(f: &VirtFeatures) -> Vec<(&'static str, Avail)> {
        let mut v = Vec::new();
        f.for_each(|n, a| v.push((n, a)));
        v
    }

    /// QEMU TCG `-cpu EPYC`: SVM with NPT, no NRIPS or decode assists.
    fn qemu_epyc() -> RawCpu {
        RawCpu {
            max_ext_leaf: 0x8000_001F,
            leaf1_ecx: 0,
            ext1_ecx: CPUID_80000001_ECX_SVM,
            svm_ebx: 16,
            svm_edx: svm_edx::NP,
            vm_cr: Some(0),
            ..Default::default()
        }
    }

    /// Bochs `corei7_haswell_4770`: VMX with EPT, VPID, unrestricted guest.
    fn bochs_haswell() -> RawCpu {
        RawCpu {
            leaf1_ecx: CPUID1_ECX_VMX,
            feature_control: Some(FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_OUTSIDE_SMX),
            procbased: Some((PROCBASED_SECONDARY as u64) << 32),
            procbased2: Some(
                ((procbased2::EPT | procbased2::VPID | procbased2::UNRESTRICTED_GUEST) as u64)
                    << 32,
            ),
            ept_vpid_cap: Some(ept_cap::WALK_LENGTH_4 | ept_cap::MEMTYPE_WB | ept_cap::PAGE_2M),
            ..Default::default()
        }
    }

    #[test]
    fn svm_with_npt() {
        let f = VirtFeatures::decode(&qemu_epyc());
        assert!(f.svm && f.npt && !f.nrips && !f.decode_assists && !f.vmx);
        assert_eq!(f.svm_disabled, Avail::No);
        assert_eq!(f.asids, 16);
        assert_eq!(f.usable_backend(), Some("svm"));
        assert_eq!(names(&f)[0], ("svm", Avail::Yes));
        assert!(names(&f).contains(&("npt", Avail::Yes)));
        assert!(!names(&f).iter().any(|(n, _)| *n == "ept"));
    }

    #[test]
    fn display_line() {
        let f = VirtFeatures::decode(&qemu_epyc());
        assert_eq!(
            std::format!("{f}"),
            "+svm -svm-disabled-by-firmware +npt -nrips -vmcb-clean -flush-by-asid -decode-assists -vgif -vmx"
        );
        let mut raw = bochs_haswell();
        raw.ept_vpid_cap = None;
        assert_eq!(
            std::format!("{}", VirtFeatures::decode(&raw)),
            "-svm +vmx -vmx-disabled-by-firmware ?ept ?ept-2m +vpid ?unrestricted-guest"
        );
    }

    #[test]
    fn svm_leaf_ignored_without_svm() {
        let mut raw = qemu_epyc();
        raw.ext1_ecx = 0;
        let f = VirtFeatures::decode(&raw);
        assert!(!f.svm && !f.npt && f.asids == 0);
        assert_eq!(f.usable_backend(), None);
    }

    #[test]
    fn svm_disabled_by_firmware() {
        let mut raw = qemu_epyc();
        raw.vm_cr = Some(VM_CR_SVMDIS);
        let f = VirtFeatures::decode(&raw);
        assert_eq!(f.svm_disabled, Avail::Yes);
        assert_eq!(f.usable_backend(), None);
    }

    #[test]
    fn vmx_with_ept_and_unrestricted_guest() {
        let f = VirtFeatures::decode(&bochs_haswell());
        assert!(f.vmx && !f.svm);
        assert_eq!(f.vmx_disabled, Avail::No);
        assert_eq!(
            (f.ept, f.ept_2m, f.vpid, f.unrestricted_guest),
            (Avail::Yes, Avail::Yes, Avail::Yes, Avail::Yes)
        );
        assert_eq!(f.usable_backend(), Some("vmx"));
    }

    #[test]
    fn vmx_locked_off() {
        let mut raw = bochs_haswell();
        raw.feature_control = Some(FEATURE_CONTROL_LOCKED);
        let f = VirtFeatures::decode(&raw);
        assert_eq!(f.vmx_disabled, Avail::Yes);
        assert_eq!(f.usable_backend(), None);
    }

    #[test]
    fn vmx_without_secondary_controls() {
        let mut raw = bochs_haswell();
        raw.procbased = Some(0);
        let f = VirtFeatures::decode(&raw);
        assert_eq!(
            (f.ept, f.vpid, f.unrestricted_guest),
            (Avail::No, Avail::No, Avail::No)
        );
    }

    #[test]
    fn unrestricted_guest_needs_ept() {
        let mut raw = bochs_haswell();
        raw.ept_vpid_cap = Some(0); // no 4-level walk: EPT unusable
        let f = VirtFeatures::decode(&raw);
        assert_eq!(f.ept, Avail::No);
        assert_eq!(f.unrestricted_guest, Avail::No);
    }

    #[test]
    fn unreadable_msrs_are_unknown() {
        let mut raw = bochs_haswell();
        raw.procbased2 = None;
        raw.ept_vpid_cap = None;
        raw.feature_control = None;
        let f = VirtFeatures::decode(&raw);
        assert_eq!(f.vmx_disabled, Avail::Unknown);
        assert_eq!(
            (f.ept, f.vpid, f.unrestricted_guest),
            (Avail::Unknown, Avail::Unknown, Avail::Unknown)
        );
        assert_eq!(f.usable_backend(), None);
    }
}

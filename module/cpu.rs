// SPDX-License-Identifier: GPL-2.0

//! Reads the processor's virtualization features (CPUID and MSRs) on the
//! current CPU; decoding is `pure::cpu`, shared with the `rkvm` tool.

use core::arch::x86_64::__cpuid;

use crate::pure::{
    cpu::{
        msr,
        RawCpu,
        VirtFeatures, //
    },
    cpuid, //
};

extern "C" {
    /// `rdmsrq_safe()`, from `helpers.c`.
    fn rkvm_rdmsr_safe(msr: u32, val: *mut u64) -> core::ffi::c_int;
}

/// Reads an MSR, or `None` if reading it faults (absent or disabled MSR).
fn rdmsr_safe(index: u32) -> Option<u64> {
    let mut val = 0u64;
    // SAFETY: `rkvm_rdmsr_safe` only writes through `val`, a valid `u64` on our
    // stack for the duration of the call; a faulting RDMSR is caught by the
    // exception table and reported as an error, never as a host fault.
    let ret = unsafe { rkvm_rdmsr_safe(index, &mut val) };
    (ret == 0).then_some(val)
}

/// Probes the features of the CPU this runs on.
pub(crate) fn probe() -> VirtFeatures {
    let max_ext_leaf = __cpuid(0x8000_0000).eax;
    let leaf1_ecx = __cpuid(1).ecx;
    let svm = if max_ext_leaf >= RawCpu::SVM_LEAF {
        __cpuid(RawCpu::SVM_LEAF)
    } else {
        __cpuid(0)
    };
    let ext1_ecx = if max_ext_leaf >= 0x8000_0001 {
        __cpuid(0x8000_0001).ecx
    } else {
        0
    };
    let vmx = leaf1_ecx & (1 << 5) != 0;
    let vmx_msr = |index| if vmx { rdmsr_safe(index) } else { None };
    VirtFeatures::decode(&RawCpu {
        max_ext_leaf,
        leaf1_ecx,
        ext1_ecx,
        svm_ebx: svm.ebx,
        svm_edx: svm.edx,
        vm_cr: rdmsr_safe(msr::VM_CR),
        feature_control: vmx_msr(msr::FEATURE_CONTROL),
        procbased: vmx_msr(msr::VMX_PROCBASED_CTLS),
        procbased2: vmx_msr(msr::VMX_PROCBASED_CTLS2),
        ept_vpid_cap: vmx_msr(msr::VMX_EPT_VPID_CAP),
    })
}

/// `KVM_GET_SUPPORTED_CPUID`: the host's leaves, masked (`pure::cpuid`).
pub(crate) fn supported_cpuid() -> ([cpuid::Entry; 12], usize) {
    cpuid::supported(|leaf, sub| {
        let r = core::arch::x86_64::__cpuid_count(leaf, sub);
        [r.eax, r.ebx, r.ecx, r.edx]
    })
}

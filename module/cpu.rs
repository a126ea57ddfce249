// SPDX-License-Identifier: GPL-2.0

//! Reads the processor's virtualization features (CPUID and MSRs) on the
//! current CPU; decoding is `pure::cpu`, shared with the `rkvm` tool.

use core::arch::x86_64::__cpuid;

use crate::{
    pure::{
        cpu::{
            msr,
            RawCpu,
            VirtFeatures, //
        },
        cpuid, //
    },
    sys, //
};

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
    let vmx_msr = |index| if vmx { sys::rdmsr(index) } else { None };
    VirtFeatures::decode(&RawCpu {
        max_ext_leaf,
        leaf1_ecx,
        ext1_ecx,
        svm_ebx: svm.ebx,
        svm_edx: svm.edx,
        vm_cr: sys::rdmsr(msr::VM_CR),
        feature_control: vmx_msr(msr::FEATURE_CONTROL),
        procbased: vmx_msr(msr::VMX_PROCBASED_CTLS),
        procbased2: vmx_msr(msr::VMX_PROCBASED_CTLS2),
        ept_vpid_cap: vmx_msr(msr::VMX_EPT_VPID_CAP),
    })
}

/// `KVM_GET_SUPPORTED_CPUID`: the host's leaves, masked (`pure::cpuid`).
pub(crate) fn supported_cpuid() -> ([cpuid::Entry; cpuid::SUPPORTED_MAX], usize) {
    cpuid::supported(
        |leaf, sub| {
            let r = core::arch::x86_64::__cpuid_count(leaf, sub);
            [r.eax, r.ebx, r.ecx, r.edx]
        },
        crate::guest_state::host_xsave().supported,
        crate::module_parameters::irqchip.value(),
    )
}

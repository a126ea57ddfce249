// SPDX-License-Identifier: GPL-2.0

//! Reads this machine's virtualization features from userspace: CPUID directly,
//! MSRs through `/dev/cpu/N/msr` (root and CONFIG_X86_MSR). Decoding is shared
//! with the module (`rkvm_pure::cpu`).

use std::arch::x86_64::{__cpuid, CpuidResult};
use std::fs::File;
use std::os::unix::fs::FileExt;

use rkvm_pure::cpu::{msr, RawCpu, VirtFeatures};

fn cpuid(leaf: u32) -> CpuidResult {
    // CPUID exists on every x86_64 processor.
    __cpuid(leaf)
}

/// The MSR device of CPU 0, if it can be opened.
struct MsrDev(Option<File>);

impl MsrDev {
    fn open() -> Self {
        MsrDev(File::open("/dev/cpu/0/msr").ok())
    }

    fn available(&self) -> bool {
        self.0.is_some()
    }

    fn read(&self, index: u32) -> Option<u64> {
        let mut buf = [0u8; 8];
        // The msr driver reads the MSR whose number is the file offset; an
        // MSR that faults reads as EIO.
        self.0
            .as_ref()?
            .read_exact_at(&mut buf, u64::from(index))
            .ok()?;
        Some(u64::from_le_bytes(buf))
    }
}

/// The features and whether MSRs could be consulted.
pub fn probe() -> (VirtFeatures, bool) {
    let msrs = MsrDev::open();
    let max_ext_leaf = cpuid(0x8000_0000).eax;
    let svm = if max_ext_leaf >= RawCpu::SVM_LEAF {
        cpuid(RawCpu::SVM_LEAF)
    } else {
        cpuid(0)
    };
    let vmx = cpuid(1).ecx & (1 << 5) != 0;
    let raw = RawCpu {
        max_ext_leaf,
        leaf1_ecx: cpuid(1).ecx,
        ext1_ecx: if max_ext_leaf >= 0x8000_0001 {
            cpuid(0x8000_0001).ecx
        } else {
            0
        },
        svm_ebx: svm.ebx,
        svm_edx: svm.edx,
        vm_cr: msrs.read(msr::VM_CR),
        // VMX capability MSRs fault on processors without VMX: do not ask.
        feature_control: vmx.then(|| msrs.read(msr::FEATURE_CONTROL)).flatten(),
        procbased: vmx.then(|| msrs.read(msr::VMX_PROCBASED_CTLS)).flatten(),
        procbased2: vmx.then(|| msrs.read(msr::VMX_PROCBASED_CTLS2)).flatten(),
        ept_vpid_cap: vmx.then(|| msrs.read(msr::VMX_EPT_VPID_CAP)).flatten(),
    };
    (VirtFeatures::decode(&raw), msrs.available())
}

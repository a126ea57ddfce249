// SPDX-License-Identifier: GPL-2.0

//! Which vendor's backend runs guests here, chosen once at module load,
//! and a VM's hold on that hardware: the only place that names both
//! backends (`svm/` and `vmx/`), as KVM's vendor modules register their
//! `kvm_x86_ops`. The backends know only the interface (`backend`), so
//! nothing depends in a circle.

use core::sync::atomic::{
    AtomicU8,
    Ordering, //
};

use kernel::prelude::*;

use crate::{
    backend::ArchVcpu,
    pure::paging::TdpFormat,
    svm,
    vmx, //
};

/// The vendor whose backend runs guests here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vendor {
    /// AMD SVM.
    Svm = 1,
    /// Intel VMX.
    Vmx = 2,
}

/// The usable backend, set once at module load (0: none).
static USABLE: AtomicU8 = AtomicU8::new(0);

/// Records what the CPU offers (from the module initializer).
pub(crate) fn set_usable(vendor: Option<Vendor>) {
    USABLE.store(vendor.map_or(0, |v| v as u8), Ordering::Relaxed);
}

/// The backend VMs are created with, if the CPU has one rkvm can use.
pub(crate) fn usable() -> Option<Vendor> {
    match USABLE.load(Ordering::Relaxed) {
        1 => Some(Vendor::Svm),
        2 => Some(Vendor::Vmx),
        _ => None,
    }
}

/// A VM's hold on the hardware: what its vCPUs are created from.
pub(crate) enum Hardware {
    /// SVM, enabled on every CPU while this lives.
    Svm(svm::HardwareRef),
    /// VMX, with the controls read from the processor.
    Vmx(vmx::HardwareRef),
}

impl Hardware {
    /// For a new VM: ENODEV without a usable backend, EBUSY if another
    /// hypervisor holds the hardware.
    pub(crate) fn get() -> Result<Self> {
        match usable() {
            Some(Vendor::Svm) => Ok(Hardware::Svm(svm::HardwareRef::get()?)),
            Some(Vendor::Vmx) => Ok(Hardware::Vmx(vmx::HardwareRef::get()?)),
            None => Err(ENODEV),
        }
    }

    /// Whether shadow paging is available (both backends have it).
    pub(crate) fn supports_shadow(&self) -> bool {
        true
    }

    /// The format of the two-dimensional page table (NPT or EPT).
    pub(crate) fn tdp_format(&self) -> TdpFormat {
        match self {
            Hardware::Svm(_) => TdpFormat::Npt,
            Hardware::Vmx(_) => TdpFormat::Ept,
        }
    }

    /// A new vCPU's hardware state.
    pub(crate) fn new_vcpu(&self, bsp: bool, shadow: bool) -> Result<KBox<dyn ArchVcpu>> {
        match self {
            Hardware::Svm(hw) => Ok(svm::SvmVcpu::new(bsp, hw.asids(), shadow)?),
            Hardware::Vmx(hw) => Ok(vmx::VmxVcpu::new(bsp, hw.caps(), shadow)?),
        }
    }
}

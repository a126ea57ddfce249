// SPDX-License-Identifier: GPL-2.0

//! rkvm: a small KVM-compatible hypervisor.
//!
//! The module registers `/dev/rkvm`, whose ioctls are a bit-exact subset of
//! KVM's (`<linux/kvm.h>`). Layout of the crate:
//!
//! - [`abi`]: the KVM ABI (request numbers, capabilities, uapi structs);
//! - [`dev`]: the system file descriptor, `/dev/rkvm`;
//! - [`vm`], [`vcpu`]: VM and vCPU file descriptors ([`fd`]), the run loop;
//! - [`backend`]: the interface to the hardware backends, [`svm`] (AMD)
//!   and [`vmx`] (Intel); [`vendor`]: which of them runs guests here;
//! - [`mmu`], [`memory`]: memory slots, nested and shadow page tables;
//! - [`cpu`]: what the processor offers (decoded by `pure::cpu`);
//! - [`ffi`]: every C and assembly function called, declared once, and the
//!   layouts shared with them, checked against `layout.h`;
//! - [`sys`]: safe wrappers around C helpers (`helpers.c`);
//! - `pure`: logic with no kernel dependency, also built and unit-tested on
//!   the host as the `rkvm-pure` crate.

use kernel::prelude::*;

mod abi;
mod apic;
mod backend;
mod clock;
mod cpu;
mod dev;
mod emulate;
mod fd;
mod ffi;
mod guest_state;
mod iobus;
mod irqfd;
mod kick;
mod memory;
mod mmu;
mod stats;
mod svm;
mod sys;
mod trace;
mod vcpu;
mod vendor;
mod vm;
mod vmx;
// Shared with the host crate `rkvm-pure` and the `rkvm` tool: `pub` there,
// and not every item is used by the module.
#[allow(dead_code, unreachable_pub)]
mod pure;

module! {
    type: RkvmModule,
    name: "rkvm",
    authors: ["The rkvm developers"],
    description: "rkvm: a small KVM-compatible hypervisor (/dev/rkvm)",
    license: "GPL",
    params: {
        exit_trace: bool {
            default: true,
            description: "Record every exit in a per-vCPU ring (debugfs rkvm-<pid>-<fd>/vcpuN/exits)",
        },
        kvm_node: bool {
            default: false,
            description: "Register as /dev/kvm (KVM's misc minor 232) instead of /dev/rkvm, for clients that open /dev/kvm by name; fails with EBUSY while kvm.ko is loaded",
        },
        tdp: bool {
            default: true,
            description: "New VMs use nested paging (NPT); 0: shadow page tables (KVM_CAP_RKVM_MMU chooses per VM)",
        },
        irqchip: bool {
            default: true,
            description: "Offer the in-kernel irqchips: local APICs (KVM_CAP_SPLIT_IRQCHIP, KVM_SIGNAL_MSI, KVM_IRQFD, KVM_GET/SET_LAPIC), the PIC and IOAPIC (KVM_CREATE_IRQCHIP, KVM_GET/SET_IRQCHIP) and the PIT (KVM_CREATE_PIT2); 0: none, their capabilities not announced, as a KVM without them",
        },
    },
}

#[pin_data]
struct RkvmModule {
    #[pin]
    _dev: dev::SystemDevice,
    /// Dropped after the device: no VM, so nothing queues work any more.
    _wq: irqfd::ModuleQueue,
}

impl kernel::InPlaceModule for RkvmModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let features = cpu::probe();
        // `VirtFeatures` implements `core::fmt::Display` (it is shared with the
        // host); `format_args!` hands it to the kernel's formatter.
        pr_info!(
            "cpu: {}; backend: {}\n",
            format_args!("{features}"),
            features.usable_backend().unwrap_or("none")
        );
        guest_state::probe_host_xsave();
        svm::init();
        vmx::init();
        let tdp = crate::module_parameters::tdp.value();
        pr_info!(
            "new VMs use {} (module parameter tdp)\n",
            if tdp { "tdp" } else { "shadow paging" }
        );
        vendor::set_usable(match features.usable_backend() {
            Some("svm") => Some(vendor::Vendor::Svm),
            Some("vmx") => Some(vendor::Vendor::Vmx),
            _ => None,
        });
        let kvm_node = crate::module_parameters::kvm_node.value();
        pr_info!(
            "registering /dev/{} (KVM API {})\n",
            if kvm_node { "kvm" } else { "rkvm" },
            abi::API_VERSION
        );
        try_pin_init!(Self {
            _wq: irqfd::ModuleQueue::create()?,
            _dev <- dev::SystemDevice::register(kvm_node),
        })
    }
}

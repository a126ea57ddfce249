// SPDX-License-Identifier: GPL-2.0

//! The first phase of a run: the VM itself. The KVM device, a VM with
//! guest memory from guest physical 0, and its one vCPU with the CPUID the
//! device supports.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use kvm_bindings::{
    kvm_cpuid_entry2, kvm_enable_cap, kvm_userspace_memory_region, CpuId, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Where the interrupt controllers are (`rkvm run --irqchip`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Irqchip {
    /// rkvm run's own PIC and PIT: it injects the PIC's vectors with
    /// `KVM_INTERRUPT` when the vCPU is ready (the interrupt-window
    /// protocol).
    #[default]
    User,
    /// The device's: `KVM_CREATE_IRQCHIP` (the PIC, the IOAPIC and a local
    /// APIC per vCPU) and `KVM_CREATE_PIT2`, their ports and MMIO handled
    /// in the kernel; rkvm run's devices raise their lines with
    /// `KVM_IRQ_LINE`.
    Kernel,
    /// The device's local APICs (`KVM_CAP_SPLIT_IRQCHIP`), rkvm run's PIC,
    /// PIT and IOAPIC (`devices::ioapic`: its interrupts go to the APICs
    /// with `KVM_SIGNAL_MSI`, their EOIs come back as
    /// `KVM_EXIT_IOAPIC_EOI`), as QEMU's `kernel-irqchip=split`.
    Split,
}

impl Irqchip {
    /// Whether the vCPUs have local APICs in the device.
    pub fn apics_in_kernel(self) -> bool {
        self != Irqchip::User
    }
}

/// A VM with its memory and vCPU, dropped in the order of the fields: the
/// memory outlives the VM that maps it, the device fd outlives both.
pub struct Vm {
    pub vcpu: VcpuFd,
    pub fd: VmFd,
    /// Where its interrupt controllers are.
    pub irqchip: Irqchip,
    /// vCPUs 1 and up (`--smp`), until their threads take them.
    pub aps: Vec<VcpuFd>,
    pub mem: GuestMemoryMmap,
    /// The size of `mem`, in bytes.
    pub mem_size: u64,
    /// The device the VM came from, open for the whole run.
    pub kvm: Kvm,
}

impl Vm {
    /// Opens `device` and makes a VM with `mem_mib` MiB of guest memory,
    /// the MMU mode `mmu` (the device's default if `None`), the interrupt
    /// controllers `irqchip` and `vcpus` vCPUs (at least 1).
    pub fn new(
        device: &Path,
        mem_mib: usize,
        mmu: Option<MmuMode>,
        irqchip: Irqchip,
        vcpus: u8,
    ) -> Result<Vm> {
        let mem_size = mem_mib.checked_mul(1 << 20).ok_or(Error::MemTooLarge)?;
        if mem_size < 2 << 20 {
            return Err(Error::MemTooSmall);
        }
        if mem_size as u64 > TSS_ADDR {
            return Err(Error::MemAboveTss {
                max_mib: TSS_ADDR >> 20,
            });
        }

        let kvm = open_device(device)?;
        let vm = kvm.create_vm().map_err(|source| Error::CreateVm {
            device: device.into(),
            source,
        })?;
        if let Some(mode) = mmu {
            choose_mmu(&kvm, &vm, mode, device)?;
        }
        // As QEMU does: guest physical space (below 4 GiB, above any RAM here)
        // for the TSS kvm_intel needs to run real mode without unrestricted
        // guest (ept=0). rkvm needs none and accepts it.
        vm.set_tss_address(TSS_ADDR as usize)
            .map_err(Error::ioctl("KVM_SET_TSS_ADDR"))?;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)]).map_err(
            |source| Error::AllocMemory {
                mib: mem_mib,
                source,
            },
        )?;
        add_memory(&vm, &mem)?;
        match irqchip {
            Irqchip::Kernel => create_kernel_irqchip(&kvm, &vm, device)?,
            Irqchip::Split => enable_split_irqchip(&kvm, &vm, device)?,
            Irqchip::User => {}
        }

        // Real KVM allows CR4.PAE and long mode only if the guest's CPUID says
        // so: hand the vCPUs what the device supports, where it can tell.
        let cpuid = match kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES) {
            Ok(cpuid) => {
                let mut entries = for_userspace_irqchip(cpuid.as_slice());
                if has_xsave(&entries) && !tracks_guest_xcr0(&kvm, &entries) {
                    entries = without_xsave(&entries);
                }
                Some(CpuId::from_entries(&entries).map_err(|e| Error::Cpuid(format!("{e:?}")))?)
            }
            Err(_) => None,
        };
        let create = |id: u8| -> Result<VcpuFd> {
            let vcpu = vm
                .create_vcpu(id.into())
                .map_err(Error::ioctl("KVM_CREATE_VCPU"))?;
            if let Some(cpuid) = &cpuid {
                vcpu.set_cpuid2(cpuid)
                    .map_err(Error::ioctl("KVM_SET_CPUID2"))?;
            }
            Ok(vcpu)
        };
        let vcpu = create(0)?;
        let aps = (1..vcpus).map(create).collect::<Result<Vec<_>>>()?;
        Ok(Vm {
            vcpu,
            fd: vm,
            irqchip,
            aps,
            mem,
            mem_size: mem_size as u64,
            kvm,
        })
    }
}

/// Opens a KVM device, turning the errno into advice.
pub fn open_device(device: &Path) -> Result<Kvm> {
    let path = CString::new(device.as_os_str().as_bytes())
        .map_err(|_| Error::DevicePathNul(device.into()))?;
    Kvm::new_with_path(path).map_err(|source| Error::OpenDevice {
        path: device.into(),
        source,
    })
}

/// The MMU mode of `--mmu` (rkvm's `KVM_CAP_RKVM_MMU`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MmuMode {
    /// Two-dimensional paging: NPT (AMD) or EPT (Intel).
    Tdp,
    /// Shadow page tables.
    Shadow,
}

/// `KVM_ENABLE_CAP(KVM_CAP_RKVM_MMU)`: chooses the VM's MMU mode, before
/// its first vCPU.
fn choose_mmu(kvm: &Kvm, vm: &VmFd, mode: MmuMode, device: &Path) -> Result<()> {
    use rkvm_pure::ioctl::{mmu_mode, KVM_CAP_RKVM_MMU};
    let bit = match mode {
        MmuMode::Tdp => mmu_mode::TDP,
        MmuMode::Shadow => mmu_mode::SHADOW,
    };
    let offered = kvm.check_extension_raw(KVM_CAP_RKVM_MMU.into()) as u64;
    if offered == 0 {
        return Err(Error::MmuNotChoosable(device.into()));
    }
    if offered & bit == 0 {
        return Err(Error::MmuNotOffered {
            device: device.into(),
            paging: if bit == mmu_mode::SHADOW {
                "shadow"
            } else {
                "two-dimensional"
            },
        });
    }
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_RKVM_MMU,
        ..Default::default()
    };
    cap.args[0] = bit;
    vm.enable_cap(&cap)
        .map_err(Error::ioctl("KVM_ENABLE_CAP(KVM_CAP_RKVM_MMU)"))
}

/// The in-kernel PIC, IOAPIC and PIT (before the first vCPU, which then
/// gets a local APIC), as QEMU's default machine makes them: the PIT with
/// port 0x61 in the kernel too (`KVM_PIT_SPEAKER_DUMMY`).
fn create_kernel_irqchip(kvm: &Kvm, vm: &VmFd, device: &Path) -> Result<()> {
    use kvm_ioctls::Cap;
    if !kvm.check_extension(Cap::Irqchip) || !kvm.check_extension(Cap::Pit2) {
        return Err(Error::NoKernelIrqchip(device.into()));
    }
    vm.create_irq_chip()
        .map_err(Error::ioctl("KVM_CREATE_IRQCHIP"))?;
    let config = kvm_bindings::kvm_pit_config {
        flags: kvm_bindings::KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(config)
        .map_err(Error::ioctl("KVM_CREATE_PIT2"))
}

/// The IOAPIC's pins, as QEMU gives `KVM_CAP_SPLIT_IRQCHIP`: the GSIs
/// whose MSI routes the device scans for the IOAPIC's vectors.
const SPLIT_IRQCHIP_PINS: u64 = rkvm_pure::ioapic::NUM_PINS as u64;

/// A local APIC in the device for each vCPU (before the first), the rest
/// of the irqchip in rkvm run.
fn enable_split_irqchip(kvm: &Kvm, vm: &VmFd, device: &Path) -> Result<()> {
    if !kvm.check_extension(kvm_ioctls::Cap::SplitIrqchip) {
        return Err(Error::NoSplitIrqchip(device.into()));
    }
    let mut cap = kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
        ..Default::default()
    };
    cap.args[0] = SPLIT_IRQCHIP_PINS;
    vm.enable_cap(&cap)
        .map_err(Error::ioctl("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)"))
}

/// Hands `mem` to the VM, a memory slot per region.
fn add_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(Error::guest_memory("guest memory"))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the memory belongs to `mem`, which outlives the VM (see `Vm`).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(Error::ioctl("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

/// Where `KVM_SET_TSS_ADDR` puts kvm_intel's three TSS pages (QEMU's choice).
const TSS_ADDR: u64 = 0xfffb_d000;

/// Whether the CPUID offers XSAVE (leaf 1 ECX bit 26).
fn has_xsave(entries: &[kvm_cpuid_entry2]) -> bool {
    entries
        .iter()
        .any(|e| e.function == 1 && e.ecx & (1 << 26) != 0)
}

/// Whether the device keeps track of the XCR0 a guest sets: a probe guest
/// (32-bit flat protected mode, CR4.OSXSAVE set) runs `xsetbv` with x87 |
/// SSE and halts; KVM_GET_XCRS must then say x87 | SSE. Any failure on the
/// way counts as "no".
///
/// Where it does not: QEMU's emulation of SVM (the test machine's QEMU
/// 7.2, TCG) ignores the XSETBV intercept (its `helper_xsetbv` checks no
/// SVM intercept), so a nested guest's XSETBV writes the processor's XCR0
/// behind kvm_amd's back. kvm_amd keeps loading its own idea of the
/// guest's XCR0 (1 after RESET) at each entry, so the guest loses the AVX
/// state it enabled and CPUID leaf 0xD's size (from kvm_amd's XCR0)
/// disagrees with what it set: Linux says "XSAVE consistency problem" and
/// "x86/fpu: XSAVE disabled", then oopses. (With its XCR0 equal to the
/// host's, kvm_amd does not even put the host's back: the host then runs
/// with the guest's.) rkvm.ko reads XCR0 back after each exit and follows
/// the guest, so it passes this probe there; so does any KVM on hardware.
fn tracks_guest_xcr0(kvm: &Kvm, cpuid: &[kvm_cpuid_entry2]) -> bool {
    probe_xcr0(kvm, cpuid).unwrap_or(false)
}

/// [`tracks_guest_xcr0`]'s probe; `None` for any ioctl that failed.
fn probe_xcr0(kvm: &Kvm, cpuid: &[kvm_cpuid_entry2]) -> Option<bool> {
    const XCR0_FP_SSE: u64 = 3;
    // xsetbv; hlt
    const CODE: [u8; 4] = [0x0f, 0x01, 0xd1, 0xf4];
    let vm = kvm.create_vm().ok()?;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).ok()?;
    add_memory(&vm, &mem).ok()?;
    vm_memory::Bytes::write_slice(&mem, &CODE, GuestAddress(0)).ok()?;
    let mut vcpu = vm.create_vcpu(0).ok()?;
    vcpu.set_cpuid2(&CpuId::from_entries(cpuid).ok()?).ok()?;
    let mut sregs = vcpu.get_sregs().ok()?;
    let code = kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 8,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_bindings::kvm_segment {
        selector: 16,
        type_: 3,
        ..code
    };
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.cr0 = 0x11; // PE | ET
    sregs.cr4 = (1 << 18) | (1 << 9); // OSXSAVE | OSFXSR
    vcpu.set_sregs(&sregs).ok()?;
    let regs = kvm_bindings::kvm_regs {
        rip: 0,
        rflags: 2,
        rax: XCR0_FP_SSE,
        ..Default::default()
    };
    vcpu.set_regs(&regs).ok()?;
    if !matches!(vcpu.run().ok()?, kvm_ioctls::VcpuExit::Hlt) {
        return Some(false);
    }
    let xcrs = vcpu.get_xcrs().ok()?;
    Some(xcrs.nr_xcrs == 1 && xcrs.xcrs[0].xcr == 0 && xcrs.xcrs[0].value == XCR0_FP_SSE)
}

/// The supported CPUID without XSAVE and the features that need it (leaf 1
/// XSAVE, OSXSAVE, AVX, F16C, FMA; leaf 7 AVX2; leaf 0xd), for a device
/// that cannot follow the guest's XCR0 ([`tracks_guest_xcr0`]).
fn without_xsave(entries: &[kvm_cpuid_entry2]) -> Vec<kvm_cpuid_entry2> {
    entries
        .iter()
        .filter(|e| e.function != 0xd)
        .map(|e| {
            let mut e = *e;
            match (e.function, e.index) {
                (1, _) => e.ecx &= !((1 << 12) | (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29)),
                (7, 0) => e.ebx &= !(1 << 5),
                _ => {}
            }
            e
        })
        .collect()
}

/// KVM's paravirtual features (leaf 0x40000001 EAX) a guest may use when
/// its interrupt controllers are in userspace, as here: kvmclock (both MSR
/// pairs and the stable bit) and no I/O delay. KVM_GET_SUPPORTED_CPUID
/// offers more whatever the VM's irqchip, but async page faults by
/// interrupt, PV EOI, PV IPIs and the like need an in-kernel local APIC
/// (kvm_amd refuses `MSR_KVM_ASYNC_PF_INT` without one: "unchecked MSR
/// access error" in the guest). QEMU filters the same way.
const PV_FEATURES_WITHOUT_IRQCHIP: u32 = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 24);

/// The supported CPUID with the paravirtual features a userspace irqchip
/// cannot back taken out (see [`PV_FEATURES_WITHOUT_IRQCHIP`]).
fn for_userspace_irqchip(entries: &[kvm_cpuid_entry2]) -> Vec<kvm_cpuid_entry2> {
    entries
        .iter()
        .map(|e| {
            let mut e = *e;
            if e.function == 0x4000_0001 {
                e.eax &= PV_FEATURES_WITHOUT_IRQCHIP;
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, ebx: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx,
            ecx,
            ..Default::default()
        }
    }

    #[test]
    fn xsave_hidden_where_the_device_cannot_follow_xcr0() {
        let all = u32::MAX;
        let out = without_xsave(&[
            entry(1, 0, all, all),
            entry(7, 0, all, all),
            entry(0xd, 0, 7, 7),
            entry(0xd, 1, 1, 1),
        ]);
        assert_eq!(out.len(), 2, "leaf 0xd is gone");
        assert_eq!(
            out[0].ecx, !0x3c00_1000,
            "FMA, XSAVE, OSXSAVE, AVX, F16C cleared, the rest kept"
        );
        assert_eq!(out[0].ebx, all);
        assert_eq!((out[1].ebx, out[1].ecx), (!(1 << 5), all), "AVX2 cleared");
        assert!(has_xsave(&[entry(1, 0, 0, 1 << 26)]));
        assert!(!has_xsave(&out));
    }

    #[test]
    fn only_kvmclock_and_no_io_delay_without_an_in_kernel_irqchip() {
        let mut pv = entry(0x4000_0001, 0, 0, 0);
        pv.eax = u32::MAX;
        let out = for_userspace_irqchip(&[pv, entry(1, 0, 7, 7)]);
        assert_eq!(out[0].eax, 0x0100_000b);
        assert_eq!(
            (out[1].ebx, out[1].ecx),
            (7, 7),
            "other leaves as they were"
        );
    }
}

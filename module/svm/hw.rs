// SPDX-License-Identifier: GPL-2.0

//! Turning SVM on and off on every CPU.
//!
//! SVM is enabled (EFER.SVME, plus a host save area in VM_HSAVE_PA) on all
//! CPUs when the first VM is created and disabled again when the last one is
//! destroyed: rkvm holds the hardware only while it needs it. If EFER.SVME is
//! already set on some CPU, another hypervisor (kvm_amd) owns SVM, and VM
//! creation fails with EBUSY instead of taking the hardware from under it.

use core::sync::atomic::{
    AtomicU8,
    Ordering, //
};

use kernel::{
    bindings,
    prelude::*,
    sync::Arc, //
};

use super::asid::AsidTable;
use crate::{
    pure::{
        msr,
        paging::HostPhys,
        vmcb::Vmcb,
        x86::efer, //
    },
    sys::{
        self,
        PageBox, //
    }, //
};

/// The page VMRUN saves host state into, one per CPU.
#[repr(C, align(4096))]
#[derive(Zeroable)]
pub(super) struct HostSaveArea([u8; 4096]);

// SAFETY: the VMCB is integers only (`pure::vmcb`), valid all-zero.
unsafe impl Zeroable for Vmcb {}

pub(crate) struct HwState {
    users: usize,
    save_areas: KVec<PageBox<HostSaveArea>>,
    asids: Option<Arc<AsidTable>>,
}

impl HwState {
    const fn new() -> Self {
        HwState {
            users: 0,
            save_areas: KVec::new(),
            asids: None,
        }
    }
}

kernel::sync::global_lock! {
    // SAFETY: `init()` runs in the module initializer, before any VM exists.
    unsafe(uninit) static HW: Mutex<HwState> = HwState::new();
}

/// Initializes the global state; called once from the module initializer.
pub(crate) fn init() {
    // SAFETY: called once, before any other use of `HW`.
    unsafe { HW.init() };
}

/// Per-CPU outcome of enabling.
const ENABLED: u8 = 1;
const BUSY: u8 = 2;
const FAILED: u8 = 3;

struct PerCpu {
    save_areas: KVec<HostPhys>,
    results: KVec<AtomicU8>,
}

/// Enables SVM on the CPU it runs on ([`sys::on_each_cpu`]).
fn enable_cpu(ctx: &PerCpu) {
    let cpu = sys::cpu_id();
    let (Some(result), Some(area)) = (ctx.results.get(cpu), ctx.save_areas.get(cpu)) else {
        return;
    };
    let outcome = match sys::rdmsr(msr::EFER) {
        Some(efer) if efer & efer::SVME != 0 => BUSY,
        Some(efer) => match sys::wrmsr(msr::EFER, efer | efer::SVME)
            .and_then(|()| sys::wrmsr(msr::VM_HSAVE_PA, area.0))
        {
            Ok(()) => ENABLED,
            Err(_) => FAILED,
        },
        None => FAILED,
    };
    result.store(outcome, Ordering::Relaxed);
}

/// Disables SVM on the CPU it runs on, if [`enable_cpu`] enabled it.
fn disable_cpu(ctx: &PerCpu) {
    let cpu = sys::cpu_id();
    // Only undo what rkvm did on this CPU.
    if ctx.results.get(cpu).map(|r| r.load(Ordering::Relaxed)) != Some(ENABLED) {
        return;
    }
    let disabled = sys::rdmsr(msr::EFER).is_some_and(|efer| {
        sys::wrmsr(msr::VM_HSAVE_PA, 0)
            .and_then(|()| sys::wrmsr(msr::EFER, efer & !efer::SVME))
            .is_ok()
    });
    if !disabled {
        pr_warn!("disabling SVM failed on CPU {}: it stays enabled\n", cpu);
    }
}

fn per_cpu_all(save_areas: &[PageBox<HostSaveArea>], state: u8) -> Result<PerCpu> {
    let mut ctx = PerCpu {
        save_areas: KVec::new(),
        results: KVec::new(),
    };
    for area in save_areas {
        ctx.save_areas.push(area.phys(), GFP_KERNEL)?;
        ctx.results.push(AtomicU8::new(state), GFP_KERNEL)?;
    }
    Ok(ctx)
}

/// A reference to SVM being enabled on all CPUs; the last one dropped
/// disables it. It carries the CPUs' ASID allocator.
pub(crate) struct HardwareRef {
    asids: Arc<AsidTable>,
}

impl HardwareRef {
    pub(crate) fn get() -> Result<Self> {
        let mut hw = HW.lock();
        if hw.users == 0 {
            // SAFETY: reading an exported variable that is fixed after boot.
            let ncpus = unsafe { bindings::nr_cpu_ids } as usize;
            let mut areas = KVec::with_capacity(ncpus, GFP_KERNEL)?;
            for _ in 0..ncpus {
                areas.push(PageBox::new()?, GFP_KERNEL)?;
            }
            let ctx = per_cpu_all(&areas, 0)?;
            sys::on_each_cpu(enable_cpu, &ctx);
            let busy = ctx
                .results
                .iter()
                .position(|r| r.load(Ordering::Relaxed) == BUSY);
            let failed = ctx
                .results
                .iter()
                .position(|r| r.load(Ordering::Relaxed) == FAILED);
            if busy.is_some() || failed.is_some() {
                sys::on_each_cpu(disable_cpu, &ctx);
                if let Some(cpu) = busy {
                    pr_err!(
                        "SVM is already enabled on CPU {} by another hypervisor (kvm_amd?)\n",
                        cpu
                    );
                    return Err(EBUSY);
                }
                pr_err!("enabling SVM failed on CPU {}\n", failed.unwrap_or(0));
                return Err(EIO);
            }
            let count = core::arch::x86_64::__cpuid(0x8000_000A).ebx;
            hw.asids = Some(Arc::new(AsidTable::new(ncpus, count)?, GFP_KERNEL)?);
            hw.save_areas = areas;
        }
        let asids = hw.asids.clone().ok_or(EIO)?;
        hw.users += 1;
        Ok(HardwareRef { asids })
    }

    /// The ASID allocator of the CPUs.
    pub(crate) fn asids(&self) -> Arc<AsidTable> {
        self.asids.clone()
    }
}

impl Drop for HardwareRef {
    fn drop(&mut self) {
        let mut hw = HW.lock();
        hw.users -= 1;
        if hw.users == 0 {
            if let Ok(ctx) = per_cpu_all(&hw.save_areas, ENABLED) {
                sys::on_each_cpu(disable_cpu, &ctx);
                // Replaced, not cleared: `HW` is a static, never dropped,
                // so a cleared vector's buffer would outlive the module
                // (kmemleak found it under the debug kernel).
                hw.save_areas = KVec::new();
                hw.asids = None;
            } else {
                // Out of memory for the bookkeeping: leave SVM on (harmless)
                // and keep the save areas, which the CPUs still point at.
                pr_warn!("could not disable SVM (out of memory); it stays enabled\n");
            }
        }
    }
}

/// Whether SVM is enabled on the current CPU (a CPU brought online after the
/// first VM was created is not). Call with preemption disabled.
pub(super) fn enabled_here() -> bool {
    sys::rdmsr(msr::EFER).is_some_and(|efer| efer & efer::SVME != 0)
}

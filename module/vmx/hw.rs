// SPDX-License-Identifier: GPL-2.0

//! What the processor's VMX allows (read once per VM from the capability
//! MSRs), the check that no other hypervisor holds VMX, and the
//! virtual-processor IDs.
//!
//! There is no per-CPU state to set up: rkvm enters VMX operation only for
//! the length of one guest run (`ops::RootOperation`), so CPUs brought
//! online later, and vCPUs moving between CPUs, need nothing special.

use core::sync::atomic::{
    AtomicBool,
    Ordering, //
};

use kernel::{
    prelude::*,
    sync::Arc, //
};

use super::ops;
use crate::{
    pure::vmcs::{
        cap_msr,
        Basic,
        CapMsrs,
        Controls, //
    },
    sys, //
};

/// The processor's VMX, as rkvm uses it.
pub(crate) struct Caps {
    /// VMCS revision identifier.
    pub(super) revision: u32,
    /// The controls every guest runs with.
    pub(super) controls: Controls,
    /// The preemption timer's value at every entry, if the processor has
    /// the timer (see [`preemption_timer_ticks`]).
    pub(super) preemption_timer_ticks: Option<u64>,
    /// The host's STAR, LSTAR, CSTAR and SFMASK: Linux programs the same
    /// values on every CPU when it brings it up (`syscall_init`) and never
    /// changes them, so they are read once, not around every run.
    pub(super) host_syscall_msrs: [u64; 4],
}

fn read_caps() -> Result<Caps> {
    let msr = |index| sys::rdmsr(index).ok_or(EIO);
    let basic = Basic(msr(cap_msr::BASIC)?);
    let (pin, proc, exit, entry) = if basic.true_controls() {
        (
            cap_msr::TRUE_PINBASED,
            cap_msr::TRUE_PROCBASED,
            cap_msr::TRUE_EXIT,
            cap_msr::TRUE_ENTRY,
        )
    } else {
        (
            cap_msr::PINBASED,
            cap_msr::PROCBASED,
            cap_msr::EXIT,
            cap_msr::ENTRY,
        )
    };
    let caps = CapMsrs {
        basic: basic.0,
        pin: msr(pin)?,
        proc: msr(proc)?,
        proc2: msr(cap_msr::PROCBASED2)?,
        exit: msr(exit)?,
        entry: msr(entry)?,
        misc: msr(cap_msr::MISC)?,
        ept_vpid: msr(cap_msr::EPT_VPID_CAP)?,
        cr0_fixed: (msr(cap_msr::CR0_FIXED0)?, msr(cap_msr::CR0_FIXED1)?),
        cr4_fixed: (msr(cap_msr::CR4_FIXED0)?, msr(cap_msr::CR4_FIXED1)?),
    };
    if !basic.write_back() {
        pr_err!("VMX: the VMCS memory type is not write-back\n");
        return Err(ENODEV);
    }
    let controls = Controls::derive(&caps).map_err(|what| {
        pr_err!("VMX: the processor lacks what rkvm needs: {}\n", what);
        pr_err!("VMX capability MSRs: {:x?}\n", caps);
        ENODEV
    })?;
    let host_syscall_msrs = [
        msr(crate::pure::msr::STAR)?,
        msr(crate::pure::msr::LSTAR)?,
        msr(crate::pure::msr::CSTAR)?,
        msr(crate::pure::msr::SFMASK)?,
    ];
    let preemption_timer_ticks = controls.preemption_timer_rate.map(preemption_timer_ticks);
    Ok(Caps {
        revision: basic.revision(),
        controls,
        preemption_timer_ticks,
        host_syscall_msrs,
    })
}

/// The preemption timer's start value for about 1 ms of guest time.
///
/// The timer bounds the time a guest runs without an exit, whatever
/// interrupts do. Under Bochs 2.7 they do not always: a VM entry that loads
/// RFLAGS.IF = 0 masks external interrupts (the entry loads RFLAGS before
/// Bochs marks the processor as in guest mode, and nothing re-evaluates the
/// mask after), so a guest spinning with interrupts off never left guest
/// mode and hung the test VM (guest_test's signal test found it). On
/// hardware the timer costs one exit per millisecond of a busy guest.
fn preemption_timer_ticks(rate: u8) -> u64 {
    let khz = u64::from(crate::sys::tsc_khz());
    let ticks = if khz == 0 { 1 << 20 } else { khz };
    (ticks >> rate).clamp(1, u64::from(u32::MAX))
}

/// Sets `busy` if another hypervisor holds VMX on the CPU it runs on
/// ([`sys::on_each_cpu`]).
fn check_cpu(busy: &AtomicBool) {
    if ops::vmx_in_use_here() {
        busy.store(true, Ordering::Relaxed);
    }
}

/// The VMX side of a VM: the capabilities its vCPUs run with.
pub(crate) struct HardwareRef {
    caps: Arc<Caps>,
}

impl HardwareRef {
    /// Refuses (EBUSY) if another hypervisor holds VMX on some CPU:
    /// kvm_intel does on every CPU while it is loaded (its default
    /// `enable_virt_at_load`).
    pub(crate) fn get() -> Result<Self> {
        let busy = AtomicBool::new(false);
        sys::on_each_cpu(check_cpu, &busy);
        if busy.load(Ordering::Relaxed) {
            pr_err!("VMX is in use by another hypervisor (kvm_intel?)\n");
            return Err(EBUSY);
        }
        Ok(HardwareRef {
            caps: Arc::new(read_caps()?, GFP_KERNEL)?,
        })
    }

    pub(crate) fn caps(&self) -> Arc<Caps> {
        self.caps.clone()
    }
}

/// VPIDs 1..=MAX_VPID in use (0 is the host's).
const MAX_VPID: usize = 4095;

struct VpidMap([u64; (MAX_VPID + 1).div_ceil(64)]);

kernel::sync::global_lock! {
    // SAFETY: `init()` runs in the module initializer, before any VM exists.
    unsafe(uninit) static VPIDS: Mutex<VpidMap> = VpidMap([0; (MAX_VPID + 1).div_ceil(64)]);
}

/// Initializes the global state; called once from the module initializer.
pub(crate) fn init() {
    // SAFETY: called once, before any other use of `VPIDS`.
    unsafe { VPIDS.init() };
}

/// A vCPU's VPID, given back when dropped; 0 (none: the TLB is flushed at
/// every entry and exit) when all are taken.
pub(super) struct Vpid(pub(super) u16);

impl Vpid {
    pub(super) fn alloc() -> Self {
        let mut map = VPIDS.lock();
        for id in 1..=MAX_VPID {
            let (word, bit) = (id / 64, 1u64 << (id % 64));
            if let Some(w) = map.0.get_mut(word) {
                if *w & bit == 0 {
                    *w |= bit;
                    return Vpid(id as u16);
                }
            }
        }
        Vpid(0)
    }
}

impl Drop for Vpid {
    fn drop(&mut self) {
        let id = usize::from(self.0);
        if id != 0 {
            if let Some(w) = VPIDS.lock().0.get_mut(id / 64) {
                *w &= !(1u64 << (id % 64));
            }
        }
    }
}

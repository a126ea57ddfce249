// SPDX-License-Identifier: GPL-2.0

//! A VM's kvmclock: the nanoseconds since the VM was created (or as
//! `KVM_SET_CLOCK` set them), counted by the host's boot-time clock, which
//! vCPUs publish to their guests (`vcpu/clock.rs`) and `KVM_GET_CLOCK`
//! reports. As in KVM without its "master clock", each vCPU's page holds
//! its own (system time, TSC) pair and `PVCLOCK_TSC_STABLE_BIT` stays
//! clear.

use core::sync::atomic::{
    AtomicI64,
    AtomicU64,
    Ordering, //
};

use kernel::time::{
    BootTime,
    ClockSource,
    RealTime, //
};

use crate::{
    abi::uapi,
    sys, //
};

/// The host's boot-time clock, in nanoseconds.
fn boot_ns() -> i64 {
    BootTime::ktime_get()
}

/// The host's real time, in nanoseconds since 1970.
fn real_ns() -> i64 {
    RealTime::ktime_get()
}

/// The flags `KVM_SET_CLOCK` accepts (`KVM_CLOCK_VALID_FLAGS`, the value of
/// `KVM_CAP_ADJUST_CLOCK`): those `KVM_GET_CLOCK` may report.
pub(crate) const VALID_FLAGS: u32 =
    uapi::KVM_CLOCK_TSC_STABLE | uapi::KVM_CLOCK_REALTIME | uapi::KVM_CLOCK_HOST_TSC;

pub(crate) struct VmClock {
    /// kvmclock = boot-time clock + offset.
    offset: AtomicI64,
    /// `MSR_KVM_WALL_CLOCK(_NEW)`: one per VM, as in KVM.
    wall_clock_msr: AtomicU64,
    /// Bumped whenever the clock is set: every vCPU publishes again.
    generation: AtomicU64,
}

impl VmClock {
    /// A clock that reads 0 now.
    pub(crate) fn new() -> Self {
        VmClock {
            offset: AtomicI64::new(boot_ns().wrapping_neg()),
            wall_clock_msr: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        }
    }

    /// kvmclock now, in nanoseconds.
    pub(crate) fn now_ns(&self) -> u64 {
        boot_ns().wrapping_add(self.offset.load(Ordering::Relaxed)) as u64
    }

    /// The real time, in nanoseconds since 1970, at which kvmclock read 0.
    pub(crate) fn epoch_ns(&self) -> u64 {
        real_ns().wrapping_sub(self.now_ns() as i64) as u64
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn wall_clock_msr(&self) -> u64 {
        self.wall_clock_msr.load(Ordering::Relaxed)
    }

    pub(crate) fn set_wall_clock_msr(&self, value: u64) {
        self.wall_clock_msr.store(value, Ordering::Relaxed);
    }

    /// `KVM_GET_CLOCK`: kvmclock now, with the real time and the host TSC
    /// read at (nearly) the same moment. Never `KVM_CLOCK_TSC_STABLE`.
    pub(crate) fn get(&self) -> uapi::kvm_clock_data {
        let tsc = sys::rdtsc();
        let real = real_ns();
        uapi::kvm_clock_data {
            clock: self.now_ns(),
            flags: uapi::KVM_CLOCK_REALTIME | uapi::KVM_CLOCK_HOST_TSC,
            realtime: real as u64,
            host_tsc: tsc,
            ..Default::default()
        }
    }

    /// `KVM_SET_CLOCK` (`kvm_vm_ioctl_set_clock()`): kvmclock reads
    /// `data.clock` now, plus, with `KVM_CLOCK_REALTIME`, the real time
    /// that passed since `data.realtime` (never backwards). Unknown flags
    /// are EINVAL; the others are accepted, so that what `KVM_GET_CLOCK`
    /// gave can be handed back.
    pub(crate) fn set(&self, data: &uapi::kvm_clock_data) -> Result<(), kernel::error::Error> {
        if data.flags & !VALID_FLAGS != 0 {
            return Err(kernel::error::code::EINVAL);
        }
        let mut clock = data.clock;
        if data.flags & uapi::KVM_CLOCK_REALTIME != 0 {
            let now = real_ns() as u64;
            if now > data.realtime {
                clock = clock.wrapping_add(now - data.realtime);
            }
        }
        self.offset
            .store((clock as i64).wrapping_sub(boot_ns()), Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

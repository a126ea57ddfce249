// SPDX-License-Identifier: GPL-2.0

//! kvmclock for one vCPU: its MSRs, and the `pvclock_vcpu_time_info` page
//! it publishes to the guest before an entry when the clock changed (the
//! MSR was written, the VM's clock was set, the guest TSC was written), as
//! KVM's `kvm_guest_time_update()` does on `KVM_REQ_CLOCK_UPDATE`. The
//! wall clock is written when the guest names its page.

use crate::{
    memory::GuestMemory,
    pure::{
        kvmclock::{
            self,
            TimeInfo, //
        },
        msr,
        paging::GuestPhys, //
    },
    sys, //
};

use super::{
    Vcpu,
    VcpuState, //
};

/// Writes `bytes` at `gpa` with the pvclock version protocol: an odd
/// version (past the guest's) first, the data with it, then the next even
/// one; the guest retries a read that saw an odd or changed version.
/// `fill` makes the data for a version. Guest memory that is not RAM is
/// left alone (the guest named a bad page: KVM does the same).
fn publish<const N: usize>(mem: &GuestMemory, gpa: GuestPhys, fill: impl FnOnce(u32) -> [u8; N]) {
    let mut old = [0u8; 4];
    if mem.read(gpa, &mut old).is_err() {
        return;
    }
    let version = kvmclock::updating_version(u32::from_le_bytes(old));
    let data = fill(version);
    let _ = mem
        .write(gpa, &version.to_le_bytes())
        .and_then(|()| mem.write(gpa, &data))
        .and_then(|()| mem.write(gpa, &version.wrapping_add(1).to_le_bytes()));
}

impl Vcpu {
    /// RDMSR and `KVM_GET_MSRS` of a kvmclock MSR; `None` for the others.
    pub(super) fn read_clock_msr(&self, st: &VcpuState, index: u32) -> Option<u64> {
        match index {
            msr::KVM_SYSTEM_TIME | msr::KVM_SYSTEM_TIME_NEW => Some(st.system_time_msr),
            msr::KVM_WALL_CLOCK | msr::KVM_WALL_CLOCK_NEW => Some(self.vm.clock().wall_clock_msr()),
            _ => None,
        }
    }

    /// WRMSR and `KVM_SET_MSRS` of a kvmclock MSR (any value is taken, as
    /// in KVM); `false` for the others.
    pub(super) fn write_clock_msr(&self, st: &mut VcpuState, index: u32, value: u64) -> bool {
        match index {
            msr::KVM_SYSTEM_TIME | msr::KVM_SYSTEM_TIME_NEW => {
                // Bit 0 enables the page; it is written at the next entry.
                st.system_time_msr = value;
                st.clock_stale = true;
            }
            msr::KVM_WALL_CLOCK | msr::KVM_WALL_CLOCK_NEW => {
                let clock = self.vm.clock();
                clock.set_wall_clock_msr(value);
                if value != 0 {
                    let epoch = clock.epoch_ns();
                    self.vm.with_memory(|mem| {
                        publish(mem, GuestPhys(value), |v| {
                            kvmclock::wall_clock_bytes(v, epoch)
                        })
                    });
                }
            }
            _ => return false,
        }
        true
    }

    /// Before an entry: the vCPU's clock page, if the guest enabled one and
    /// it is out of date.
    pub(super) fn update_clock(&self, st: &mut VcpuState) {
        let generation = self.vm.clock().generation();
        if st.system_time_msr & 1 == 0 || (!st.clock_stale && st.clock_generation == generation) {
            return;
        }
        st.clock_stale = false;
        st.clock_generation = generation;
        let Some((tsc_shift, tsc_to_system_mul)) =
            kvmclock::time_scale(u64::from(sys::tsc_khz()) * 1000)
        else {
            return;
        };
        let Some(tsc) = st.arch.get_msr(msr::TSC) else {
            return;
        };
        let system_time = self.vm.clock().now_ns();
        let gpa = GuestPhys(st.system_time_msr & !1);
        self.vm.with_memory(|mem| {
            // PVCLOCK_GUEST_STOPPED stays as the guest has it.
            let mut flags = [0u8; 1];
            let stopped = mem
                .read(GuestPhys(gpa.0 + 29), &mut flags)
                .map_or(0, |()| flags[0])
                & kvmclock::GUEST_STOPPED;
            publish(mem, gpa, |version| {
                TimeInfo {
                    version,
                    tsc_timestamp: tsc,
                    system_time,
                    tsc_to_system_mul,
                    tsc_shift,
                    flags: stopped,
                }
                .to_bytes()
            })
        });
    }
}

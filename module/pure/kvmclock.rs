// SPDX-License-Identifier: GPL-2.0

//! kvmclock, KVM's paravirtual clock: what the guest reads from the pages
//! it names with the kvmclock MSRs (`Documentation/virt/kvm/x86/msr.rst`),
//! and the CPUID leaves that offer it.
//!
//! The guest's clock is `system_time + scale(tsc - tsc_timestamp)`: the
//! hypervisor writes a (system time, TSC) pair and the TSC's rate as a
//! 32.32 fixed-point multiplier with a power-of-two shift, and the guest
//! interpolates with its own RDTSC between updates.

/// `KVM_CPUID_SIGNATURE`: the hypervisor leaf a guest looks for KVM at.
pub const CPUID_SIGNATURE: u32 = 0x4000_0000;
/// `KVM_CPUID_FEATURES`: the paravirtual features leaf.
pub const CPUID_FEATURES: u32 = 0x4000_0001;
/// "KVMKVMKVM\0\0\0", in EBX, ECX, EDX.
pub const SIGNATURE: &[u8; 12] = b"KVMKVMKVM\0\0\0";
/// `KVM_FEATURE_CLOCKSOURCE`: kvmclock at MSRs 0x11 and 0x12.
pub const FEATURE_CLOCKSOURCE: u32 = 1 << 0;
/// `KVM_FEATURE_NOP_IO_DELAY`: the guest need not delay after port I/O.
pub const FEATURE_NOP_IO_DELAY: u32 = 1 << 1;
/// `KVM_FEATURE_CLOCKSOURCE2`: kvmclock at MSRs 0x4b564d00 and 0x4b564d01.
pub const FEATURE_CLOCKSOURCE2: u32 = 1 << 3;
/// The features rkvm offers: kvmclock (both MSR pairs) and no I/O delay.
/// Not `KVM_FEATURE_CLOCKSOURCE_STABLE_BIT`: rkvm's clock pages never set
/// `PVCLOCK_TSC_STABLE_BIT` (KVM does with its master clock).
pub const FEATURES: u32 = FEATURE_CLOCKSOURCE | FEATURE_NOP_IO_DELAY | FEATURE_CLOCKSOURCE2;

/// `PVCLOCK_GUEST_STOPPED`: set by the host when it paused the guest; the
/// guest clears it. Kept as the guest has it across updates.
pub const GUEST_STOPPED: u8 = 1 << 1;

/// Bytes of `struct pvclock_vcpu_time_info`.
pub const TIME_INFO_SIZE: usize = 32;
/// Bytes of `struct pvclock_wall_clock`.
pub const WALL_CLOCK_SIZE: usize = 12;

/// The TSC-to-nanoseconds scale for a TSC of `tsc_hz`: `(shift, mul)` such
/// that nanoseconds = ((delta << shift, or >> -shift) * mul) >> 32. The
/// shift brings the rate into (1 GHz, 2 GHz], so that `mul` (10^9 / rate,
/// in 0.32 fixed point) keeps 31 or 32 significant bits. `None` for 0 Hz.
pub fn time_scale(tsc_hz: u64) -> Option<(i8, u32)> {
    const NS: u64 = 1_000_000_000;
    if tsc_hz == 0 {
        return None;
    }
    let mut shift: i8 = 0;
    let mut rate = tsc_hz;
    while rate > 2 * NS {
        rate >>= 1;
        shift -= 1;
    }
    while rate <= NS {
        rate <<= 1;
        shift += 1;
    }
    // rate in (1e9, 2e9]: 1e9 / rate in [0.5, 1), and so mul < 2^32. The
    // dividend (10^9 << 32) fits in 64 bits: no 128-bit division, which
    // the kernel does not link.
    u32::try_from((NS << 32) / rate)
        .ok()
        .map(|mul| (shift, mul))
}

/// Nanoseconds for `delta` TSC ticks at the scale of [`time_scale`], as
/// the guest computes them (`pvclock_scale_delta()`).
pub fn scale_delta(delta: u64, shift: i8, mul: u32) -> u64 {
    let delta = if shift < 0 {
        delta >> -shift
    } else {
        delta << shift
    };
    ((u128::from(delta) * u128::from(mul)) >> 32) as u64
}

/// `struct pvclock_vcpu_time_info`, the page a vCPU's `MSR_KVM_SYSTEM_TIME`
/// points at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeInfo {
    /// Odd while the host writes, even when consistent.
    pub version: u32,
    /// The guest TSC when `system_time` was taken.
    pub tsc_timestamp: u64,
    /// kvmclock's nanoseconds at `tsc_timestamp`.
    pub system_time: u64,
    /// See [`time_scale`].
    pub tsc_to_system_mul: u32,
    /// See [`time_scale`].
    pub tsc_shift: i8,
    /// `PVCLOCK_*` flags.
    pub flags: u8,
}

impl TimeInfo {
    /// The guest's layout: version, pad, tsc_timestamp, system_time, mul,
    /// shift, flags, pad.
    pub fn to_bytes(self) -> [u8; TIME_INFO_SIZE] {
        let mut b = [0u8; TIME_INFO_SIZE];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[8..16].copy_from_slice(&self.tsc_timestamp.to_le_bytes());
        b[16..24].copy_from_slice(&self.system_time.to_le_bytes());
        b[24..28].copy_from_slice(&self.tsc_to_system_mul.to_le_bytes());
        b[28] = self.tsc_shift as u8;
        b[29] = self.flags;
        b
    }

    /// The clock a guest reads at guest TSC `tsc` (`pvclock_clocksource_read()`).
    pub fn read(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        self.system_time
            .wrapping_add(scale_delta(delta, self.tsc_shift, self.tsc_to_system_mul))
    }
}

/// `struct pvclock_wall_clock` for a kvmclock epoch `epoch_ns` (the real
/// time, in nanoseconds since 1970, at which kvmclock read 0).
pub fn wall_clock_bytes(version: u32, epoch_ns: u64) -> [u8; WALL_CLOCK_SIZE] {
    let mut b = [0u8; WALL_CLOCK_SIZE];
    b[0..4].copy_from_slice(&version.to_le_bytes());
    // Seconds in 32 bits: good until 2106, as KVM's.
    b[4..8].copy_from_slice(&((epoch_ns / 1_000_000_000) as u32).to_le_bytes());
    b[8..12].copy_from_slice(&((epoch_ns % 1_000_000_000) as u32).to_le_bytes());
    b
}

/// The version to publish while updating a page whose version is
/// `current`: odd, and past anything the guest has seen.
pub fn updating_version(current: u32) -> u32 {
    current.wrapping_add(1) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_exact_to_a_part_in_a_billion() {
        for hz in [
            1_000_000u64,
            999_999_999,
            1_000_000_000,
            1_000_000_001,
            2_299_998_000,
            3_000_000_000,
            5_000_000_000,
            100_000_000_000,
        ] {
            let (shift, mul) = time_scale(hz).unwrap();
            assert!(mul >= 1 << 31, "{hz}: mul {mul:#x} keeps 32 bits");
            // One second of ticks is one second, to within a nanosecond per
            // 10^9 (the truncations of mul and of the shifted delta).
            let ns = scale_delta(hz, shift, mul);
            assert!(ns.abs_diff(1_000_000_000) <= 2, "{hz} Hz: {ns} ns");
            let ten = scale_delta(10 * hz, shift, mul);
            assert!(ten.abs_diff(10_000_000_000) <= 20, "{hz} Hz: {ten} ns");
        }
        assert_eq!(time_scale(0), None);
    }

    #[test]
    fn layout_and_reading() {
        let (tsc_shift, tsc_to_system_mul) = time_scale(2_000_000_000).unwrap();
        let t = TimeInfo {
            version: 3,
            tsc_timestamp: 1000,
            system_time: 5_000,
            tsc_to_system_mul,
            tsc_shift,
            flags: GUEST_STOPPED,
        };
        let b = t.to_bytes();
        assert_eq!(&b[0..4], &[3, 0, 0, 0]);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 1000);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 5_000);
        assert_eq!(b[28] as i8, tsc_shift);
        assert_eq!(b[29], GUEST_STOPPED);
        // 2 GHz: 2000 ticks later, one microsecond later.
        assert_eq!(t.read(3000), 6_000);
        assert_eq!(updating_version(3), 5);
        assert_eq!(updating_version(4), 5);
        assert_eq!(updating_version(u32::MAX), 1);
    }

    #[test]
    fn wall_clock() {
        let b = wall_clock_bytes(2, 1_700_000_000_123_456_789);
        assert_eq!(u32::from_le_bytes(b[0..4].try_into().unwrap()), 2);
        assert_eq!(
            u32::from_le_bytes(b[4..8].try_into().unwrap()),
            1_700_000_000
        );
        assert_eq!(
            u32::from_le_bytes(b[8..12].try_into().unwrap()),
            123_456_789
        );
    }
}

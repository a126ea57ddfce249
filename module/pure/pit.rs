// SPDX-License-Identifier: GPL-2.0

//! The in-kernel 8254 of `KVM_CREATE_PIT2` as KVM emulates it
//! (`arch/x86/kvm/i8254.c`): three 16-bit counters at ports 0x40-0x42 and
//! their control word at 0x43, counting at [`FREQ_HZ`]; channel 0 drives
//! IRQ 0, channel 2's gate and output are on port 0x61.
//!
//! # The model
//!
//! A [`Pit`] has no clock: every operation that needs the time takes
//! `now_ns`, nanoseconds of the glue's monotonic clock (KVM's `ktime_get()`),
//! and what the glue's timer must do comes back as a [`TimerAction`]. The
//! state is KVM's ABI, `struct kvm_pit_state2` (`KVM_GET_PIT2`,
//! `KVM_SET_PIT2`): [`PitState2`] and [`ChannelState`] mirror it field for
//! field, with their byte images; `count_load_time` is in the glue's clock.
//!
//! Channels 1 and 2 are functions of the time since their count was loaded
//! (or channel 2's gate rose, in modes 1, 2, 3 and 5). Channel 0 is a
//! timer: loading its count in mode 0, 1 or 4 arms a one-shot, in mode 2 or
//! 3 a periodic timer (its period stretched to [`MIN_PERIOD_NS`]), in any
//! other mode stops it; its count and output are computed from the time
//! left to the timer's next expiry, as KVM computes them from its hrtimer.
//!
//! # What the glue does
//!
//! - routes port I/O to [`Pit::read`] and [`Pit::write`] (port 0x61 only if
//!   the PIT was created with [`CONFIG_SPEAKER_DUMMY`]), and acts on the
//!   [`TimerAction`]: before arming, it cancels its hrtimer and waits for a
//!   queued injection to finish, as `create_pit_timer()` does;
//! - when its hrtimer fires, calls [`Pit::timer_fired`], rearms at the
//!   returned time (which may already be past: it fires again at once, one
//!   tick per period) and queues the injection work;
//! - the injection work calls [`Pit::inject`] and, if it says so, pulses
//!   GSI 0 (level 1 then 0, source [`super::ioapic::SOURCE_PIT`]) through
//!   the routing table, and delivers an NMI to every vCPU if some LAPIC has
//!   LVT0 in NMI mode (KVM's NMI watchdog through virtual wire);
//! - registers an ack notifier for GSI 0 that calls [`Pit::irq_acked`] and
//!   queues the injection work if that returns true, and a mask notifier
//!   for GSI 0 that calls [`Pit::irq0_mask_changed`];
//! - implements `KVM_REINJECT_CONTROL` with [`Pit::set_reinject`] and
//!   `KVM_GET/SET_PIT2` with [`Pit::state`] and [`Pit::set_state`].
//!
//! # Reinjection
//!
//! With reinjection on (the default, `KVM_REINJECT_CONTROL` with
//! `pit_reinject` 1), every expiry counts a pending tick, and a tick is
//! injected only after the guest acknowledged the previous one (its EOI at
//! the PIC or IOAPIC): a guest that was not running gets all its ticks,
//! late. With it off, every expiry injects, and ticks the guest has not
//! taken yet are coalesced by the interrupt controllers. Loading channel
//! 0's count, turning reinjection on and unmasking IRQ 0 forget the pending
//! ticks.
//!
//! # Where KVM and the 8254 differ
//!
//! This file follows KVM:
//! - the clock is 1,193,181 Hz (the PC's is 14.31818 MHz / 12,
//!   1,193,181.67 Hz; QEMU and rkvm's userspace PIT use 1,193,182);
//! - a counter starts at once when its count is written (the 8254 waits for
//!   the next clock edge, and in modes 1 and 5 for a gate trigger); on
//!   channel 0, mode 1 is a one-shot from the load and mode 5 stops the
//!   timer;
//! - a gate going low stops nothing; a rising gate restarts modes 1, 2, 3
//!   and 5. Only channel 2's gate can change (port 0x61);
//! - BCD is recorded and read back in the status, but counting is binary;
//! - mode 3's count is the count minus twice the elapsed ticks modulo the
//!   count (odd counts are approximated); its output is high for the first
//!   half of each period, rounded up. The outputs of modes 1, 2, 4 and 5 are
//!   the 8254's inverted: mode 1's is high while it counts, modes 2, 4 and
//!   5 are high for the one tick that ends the count (the 8254 holds them
//!   high and pulses them low);
//! - writing the control word changes the mode and access of the next load
//!   and read but stops nothing (channel 0's timer keeps its old mode until
//!   a count is loaded), and keeps pending latches; the status's null count
//!   bit is never set;
//! - channel 0's count and output follow the timer: with the period
//!   stretched to 200 us (counts below 239 in modes 2 and 3), they start
//!   over at each stretched period; IRQ 0 is an edge per expiry, not
//!   channel 0's output;
//! - a read of the control port returns no data (KVM leaves the access's
//!   buffer as it was); port 0x61 reads the gate (bit 0), the speaker data
//!   bit (1), a refresh bit toggling every 2^14 ns (4) and channel 2's
//!   output (5), and a write takes bits 0 and 1;
//! - with [`FLAGS_HPET_LEGACY`] (the HPET took IRQ 0 over), loading channel
//!   0 leaves the timer as it was (stopped, when the flag came with
//!   `KVM_SET_PIT2`); `KVM_SET_PIT2` takes every field as it is, then
//!   loads each channel's count again (0 becoming 0x10000), so channels 1
//!   and 2 restart from the call and channel 0's timer from a full period.
//!
//! KVM arms channel 0's timer only with an IOAPIC in the kernel, which the
//! PIT needs in rkvm: the model assumes one.

use super::lapic::MIN_PERIODIC_NS;

/// The counters' clock (`KVM_PIT_FREQ`).
pub const FREQ_HZ: u64 = 1_193_181;
const NS_PER_SEC: u64 = 1_000_000_000;
/// The first port (`KVM_PIT_BASE_ADDRESS`): channel 0.
pub const BASE_PORT: u16 = 0x40;
/// Ports from [`BASE_PORT`] (`KVM_PIT_MEM_LENGTH`).
pub const PORTS: u16 = 4;
/// The control word port.
pub const CONTROL_PORT: u16 = 0x43;
/// The speaker port (`KVM_SPEAKER_BASE_ADDRESS`). KVM registers 4 ports
/// from it but answers only this one.
pub const SPEAKER_PORT: u16 = 0x61;
/// `kvm_pit_config.flags` of `KVM_CREATE_PIT2` (`KVM_PIT_SPEAKER_DUMMY`;
/// the old `KVM_CREATE_PIT` implies it): port 0x61 is emulated in the
/// kernel. Without it, userspace serves the port.
pub const CONFIG_SPEAKER_DUMMY: u32 = 1;
/// `kvm_pit_state2.flags`: the HPET is in legacy replacement mode, channel
/// 0 drives no interrupt (`KVM_PIT_FLAGS_HPET_LEGACY`).
pub const FLAGS_HPET_LEGACY: u32 = 1;
/// `kvm_pit_state2.flags`: port 0x61's speaker data bit
/// (`KVM_PIT_FLAGS_SPEAKER_DATA_ON`).
pub const FLAGS_SPEAKER_DATA_ON: u32 = 2;
/// The shortest period of channel 0's periodic timer
/// (`min_timer_period_us`).
pub const MIN_PERIOD_NS: u64 = MIN_PERIODIC_NS;
/// The count a count of 0 means.
pub const MAX_COUNT: u32 = 0x10000;
/// The mode of a channel never programmed (`kvm_pit_reset()`).
pub const MODE_NONE: u8 = 0xff;
/// `read_state`, `write_state`, `count_latched`: the low byte only
/// (`RW_STATE_LSB`; also the access field of the control word).
pub const RW_LSB: u8 = 1;
/// The high byte only.
pub const RW_MSB: u8 = 2;
/// Both, the low byte next.
pub const RW_WORD0: u8 = 3;
/// Both, the high byte next.
pub const RW_WORD1: u8 = 4;
/// Size of `struct kvm_pit_channel_state`.
pub const CHANNEL_STATE_SIZE: usize = 24;
/// Size of `struct kvm_pit_state2`.
pub const STATE2_SIZE: usize = 112;
/// Size of `struct kvm_reinject_control`.
pub const REINJECT_CONTROL_SIZE: usize = 32;

/// `struct kvm_pit_channel_state`, field for field (`#[repr(C)]`, 24
/// bytes), which is also what KVM keeps per channel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelState {
    /// The count loaded, 1 to 0x10000 (0 from userspace is 0x10000).
    pub count: u32,
    /// The count latched for reading.
    pub latched_count: u16,
    /// How the latched count is read: 0 not latched, else an `RW_*`.
    pub count_latched: u8,
    /// A status is latched for reading.
    pub status_latched: u8,
    /// The latched status: output (bit 7), access (5:4), mode (3:1), BCD.
    pub status: u8,
    /// How the next read of the count goes (`RW_*`; others: low byte).
    pub read_state: u8,
    /// How the next write goes (`RW_*`; others: low byte).
    pub write_state: u8,
    /// The low byte written, awaiting the high one.
    pub write_latch: u8,
    /// The control word's access field (1-3; 0 before any).
    pub rw_mode: u8,
    /// The counter mode, 0-5 ([`MODE_NONE`] before any).
    pub mode: u8,
    /// BCD counting was asked for (recorded only).
    pub bcd: u8,
    /// The gate input.
    pub gate: u8,
    /// When the count was loaded or the gate restarted it (ns of the glue's
    /// clock; channel 0's is never updated, the timer stands for it).
    pub count_load_time: i64,
}

const _: () = assert!(core::mem::size_of::<ChannelState>() == CHANNEL_STATE_SIZE);
const _: () = assert!(core::mem::offset_of!(ChannelState, count_load_time) == 16);

/// `struct kvm_pit_state2`, field for field (`#[repr(C)]`, 112 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PitState2 {
    /// The three channels.
    pub channels: [ChannelState; 3],
    /// `FLAGS_*` (others are kept as they are).
    pub flags: u32,
    /// Zero from `KVM_GET_PIT2`, ignored by `KVM_SET_PIT2`.
    pub reserved: [u32; 9],
}

const _: () = assert!(core::mem::size_of::<PitState2>() == STATE2_SIZE);
const _: () = assert!(core::mem::offset_of!(PitState2, flags) == 72);

impl ChannelState {
    /// The byte image.
    pub fn to_bytes(self) -> [u8; CHANNEL_STATE_SIZE] {
        let mut out = [0u8; CHANNEL_STATE_SIZE];
        let bytes = self
            .count
            .to_le_bytes()
            .into_iter()
            .chain(self.latched_count.to_le_bytes())
            .chain([
                self.count_latched,
                self.status_latched,
                self.status,
                self.read_state,
                self.write_state,
                self.write_latch,
                self.rw_mode,
                self.mode,
                self.bcd,
                self.gate,
            ])
            .chain(self.count_load_time.to_le_bytes());
        for (o, b) in out.iter_mut().zip(bytes) {
            *o = b;
        }
        out
    }

    /// The channel in a byte image (`None`: fewer than 24 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; CHANNEL_STATE_SIZE] = bytes.get(..CHANNEL_STATE_SIZE)?.try_into().ok()?;
        let [c0, c1, c2, c3, l0, l1, rest @ ..] = *b;
        let [cl, sl, status, rs, ws, wl, rw, mode, bcd, gate, time @ ..] = rest;
        Some(Self {
            count: u32::from_le_bytes([c0, c1, c2, c3]),
            latched_count: u16::from_le_bytes([l0, l1]),
            count_latched: cl,
            status_latched: sl,
            status,
            read_state: rs,
            write_state: ws,
            write_latch: wl,
            rw_mode: rw,
            mode,
            bcd,
            gate,
            count_load_time: i64::from_le_bytes(time),
        })
    }
}

impl PitState2 {
    /// The ioctl's byte image.
    pub fn to_bytes(self) -> [u8; STATE2_SIZE] {
        let mut out = [0u8; STATE2_SIZE];
        let bytes = self
            .channels
            .iter()
            .flat_map(|c| c.to_bytes())
            .chain(self.flags.to_le_bytes())
            .chain(self.reserved.iter().flat_map(|r| r.to_le_bytes()));
        for (o, b) in out.iter_mut().zip(bytes) {
            *o = b;
        }
        out
    }

    /// The state in a byte image (`None`: fewer than 112 bytes).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let word = |at: usize| -> Option<u32> {
            let b = bytes.get(at..at + 4)?;
            Some(u32::from_le_bytes(b.try_into().ok()?))
        };
        let mut state = Self {
            flags: word(72)?,
            ..Self::default()
        };
        for (i, c) in state.channels.iter_mut().enumerate() {
            *c = ChannelState::from_bytes(bytes.get(CHANNEL_STATE_SIZE * i..)?)?;
        }
        for (i, r) in state.reserved.iter_mut().enumerate() {
            *r = word(76 + 4 * i)?;
        }
        Some(state)
    }
}

/// `KVM_REINJECT_CONTROL`'s `struct kvm_reinject_control`: whether
/// `pit_reinject` (byte 0) asks for reinjection (`None`: fewer than
/// [`REINJECT_CONTROL_SIZE`] bytes; the reserved bytes are not checked).
pub fn reinject_control(bytes: &[u8]) -> Option<bool> {
    let b = bytes.get(..REINJECT_CONTROL_SIZE)?;
    b.first().map(|&r| r != 0)
}

/// An access the PIT does not claim (KVM's `-EOPNOTSUPP`: the bus offers it
/// to the next device, or userspace gets it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange;

/// What the glue's hrtimer for channel 0 must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Nothing changes.
    Keep,
    /// Cancel it (and wait for a queued injection).
    Cancel,
    /// Cancel it, wait for a queued injection, and arm it at this time.
    Arm(u64),
}

/// Channel 0's timer: what KVM's hrtimer and `ps->period` hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Timer {
    /// The period (0: never armed); counts and outputs derive from it.
    period_ns: u64,
    periodic: bool,
    /// The expiry armed last (kept after it fired or was cancelled).
    expires_ns: u64,
    armed: bool,
}

/// Ticks of [`FREQ_HZ`] in `ns` (`mul_u64_u32_div()`, rounded down), in
/// 64-bit arithmetic (the kernel has no 128-bit division): whole seconds,
/// then the rest, whose product with the frequency stays below 2^51.
fn ticks(ns: u64) -> u64 {
    let (secs, rest) = (ns / NS_PER_SEC, ns % NS_PER_SEC);
    secs * FREQ_HZ + rest * FREQ_HZ / NS_PER_SEC
}

/// The PIT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pit {
    channels: [ChannelState; 3],
    flags: u32,
    speaker_dummy: bool,
    timer: Timer,
    reinject: bool,
    /// Expiries not yet injected (reinjection on).
    pending: u32,
    /// The last injected tick was acknowledged.
    irq_ack: bool,
}

impl Pit {
    /// The PIT as `KVM_CREATE_PIT2` makes it at `now_ns` (`kvm_create_pit()`
    /// with `kvm_pit_config.flags` `config_flags`): every channel in
    /// [`MODE_NONE`] with count 0x10000, gates high but channel 2's, the
    /// timer stopped, reinjection on.
    pub fn new(config_flags: u32, now_ns: u64) -> Self {
        let mut pit = Self {
            channels: [ChannelState::default(); 3],
            flags: 0,
            speaker_dummy: config_flags & CONFIG_SPEAKER_DUMMY != 0,
            timer: Timer::default(),
            reinject: true,
            pending: 0,
            irq_ack: true,
        };
        for ch in 0..3 {
            if let Some(c) = pit.channels.get_mut(ch) {
                c.mode = MODE_NONE;
                c.gate = u8::from(ch != 2);
            }
            pit.load_count(ch, 0, now_ns);
        }
        pit
    }

    /// Nanoseconds channel `ch` has counted (`kpit_elapsed()`): channel 0's
    /// from its timer (the period less the time to the expiry), the others'
    /// since their load. Never negative.
    fn elapsed_ns(&self, ch: usize, now_ns: u64) -> u64 {
        let elapsed = if ch == 0 {
            if self.timer.period_ns == 0 {
                return 0;
            }
            let remaining = i128::from(self.timer.expires_ns) - i128::from(now_ns);
            i128::from(self.timer.period_ns) - remaining
        } else {
            let load = self.channels.get(ch).map_or(0, |c| c.count_load_time);
            i128::from(now_ns) - i128::from(load)
        };
        u64::try_from(elapsed.max(0)).unwrap_or(u64::MAX)
    }

    /// The current count of channel `ch` (`pit_get_count()`): 0x10000 reads
    /// as 0.
    pub fn count(&self, ch: usize, now_ns: u64) -> Option<u32> {
        let c = self.channels.get(ch)?;
        let d = ticks(self.elapsed_ns(ch, now_ns));
        let count = u64::from(c.count);
        let value = match c.mode {
            0 | 1 | 4 | 5 => count.wrapping_sub(d) & 0xffff,
            3 => count.wrapping_sub(d.wrapping_mul(2).checked_rem(count).unwrap_or(0)),
            _ => count.wrapping_sub(d.checked_rem(count).unwrap_or(0)),
        };
        Some(value as u32)
    }

    /// The output of channel `ch` (`pit_get_out()`), from the ticks
    /// elapsed: in mode 0 (and modes KVM does not know) high once the count
    /// ran out, in mode 1 until then; in mode 2 high only at the ticks that
    /// end a period, in mode 3 in each period's first half (rounded up), in
    /// modes 4 and 5 only at the tick the count runs out.
    pub fn out(&self, ch: usize, now_ns: u64) -> Option<bool> {
        let c = self.channels.get(ch)?;
        let d = ticks(self.elapsed_ns(ch, now_ns));
        let count = u64::from(c.count);
        let rem = d.checked_rem(count).unwrap_or(0);
        Some(match c.mode {
            1 => d < count,
            2 => rem == 0 && d != 0,
            3 => rem < (count + 1) >> 1,
            4 | 5 => d == count,
            _ => d >= count,
        })
    }

    /// When channel 0's timer fires next, if it is armed.
    pub fn timer_expiry(&self) -> Option<u64> {
        self.timer.armed.then_some(self.timer.expires_ns)
    }

    /// The state's flags.
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Whether reinjection is on.
    pub fn reinject(&self) -> bool {
        self.reinject
    }

    /// Expiries counted and not yet injected (reinjection on).
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// Whether an access of `len` bytes at `port` is the PIT's: it must fit
    /// 0x40-0x43, or be at 0x61 (and fit 4 bytes) with the dummy speaker.
    pub fn claims(&self, port: u16, len: usize) -> bool {
        let end = usize::from(port).saturating_add(len);
        if self.speaker_dummy && port == SPEAKER_PORT {
            return end <= usize::from(SPEAKER_PORT) + 4;
        }
        port >= BASE_PORT && end <= usize::from(BASE_PORT + PORTS)
    }

    /// A guest's read at `port` (`pit_ioport_read()`,
    /// `speaker_ioport_read()`): the byte the access returns (KVM copies
    /// the value as a 32-bit integer, so the access's next bytes up to the
    /// fourth are zero), or `None` for the control port, where KVM writes
    /// no data.
    ///
    /// A counter port returns, in this order of precedence, the latched
    /// status, the latched count (a byte at a time as its access said), or
    /// the live count's byte the read state selects.
    pub fn read(&mut self, port: u16, len: usize, now_ns: u64) -> Result<Option<u8>, OutOfRange> {
        if !self.claims(port, len) {
            return Err(OutOfRange);
        }
        if port == SPEAKER_PORT {
            return Ok(Some(self.speaker_read(now_ns)));
        }
        let ch = usize::from(port & 3);
        let live = self.count(ch, now_ns);
        let Some((c, live)) = self.channels.get_mut(ch).zip(live) else {
            return Ok(None);
        };
        let value = if c.status_latched != 0 {
            c.status_latched = 0;
            c.status
        } else if c.count_latched != 0 {
            let [lo, hi] = c.latched_count.to_le_bytes();
            match c.count_latched {
                RW_MSB => {
                    c.count_latched = 0;
                    hi
                }
                RW_WORD0 => {
                    c.count_latched = RW_MSB;
                    lo
                }
                _ => {
                    c.count_latched = 0;
                    lo
                }
            }
        } else {
            let [lo, hi, ..] = live.to_le_bytes();
            match c.read_state {
                RW_MSB => hi,
                RW_WORD0 => {
                    c.read_state = RW_WORD1;
                    lo
                }
                RW_WORD1 => {
                    c.read_state = RW_WORD0;
                    hi
                }
                _ => lo,
            }
        };
        Ok(Some(value))
    }

    /// Port 0x61: gate, speaker data, refresh clock, channel 2's output.
    fn speaker_read(&self, now_ns: u64) -> u8 {
        let refresh = ((now_ns >> 14) & 1) as u8;
        let data = u8::from(self.flags & FLAGS_SPEAKER_DATA_ON != 0);
        let gate = self.channels[2].gate;
        let out = u8::from(self.out(2, now_ns).unwrap_or(false));
        (data << 1) | gate | (out << 5) | (refresh << 4)
    }

    /// A guest's write of `data` (its first byte counts) at `port`
    /// (`pit_ioport_write()`, `speaker_ioport_write()`).
    ///
    /// The control port takes a read-back command (bits 7:6 set: bit 5
    /// clear latches the counts, bit 4 clear the statuses, of the channels
    /// in bits 3:1), a counter latch command (access 0), or a channel's
    /// access (bits 5:4), mode (3:1; 6 and 7 are 2 and 3) and BCD (0). A
    /// counter port takes the count's byte(s) as the access says; a
    /// complete count is loaded. Port 0x61 takes the speaker data bit and
    /// channel 2's gate.
    pub fn write(
        &mut self,
        port: u16,
        data: &[u8],
        now_ns: u64,
    ) -> Result<TimerAction, OutOfRange> {
        if !self.claims(port, data.len()) {
            return Err(OutOfRange);
        }
        let Some(&value) = data.first() else {
            return Ok(TimerAction::Keep);
        };
        if port == SPEAKER_PORT {
            if value & 2 != 0 {
                self.flags |= FLAGS_SPEAKER_DATA_ON;
            } else {
                self.flags &= !FLAGS_SPEAKER_DATA_ON;
            }
            self.set_gate(2, value & 1, now_ns);
            return Ok(TimerAction::Keep);
        }
        let ch = usize::from(port & 3);
        if ch == 3 {
            self.control(value, now_ns);
            return Ok(TimerAction::Keep);
        }
        let Some(c) = self.channels.get_mut(ch) else {
            return Ok(TimerAction::Keep);
        };
        let count = match c.write_state {
            RW_MSB => u32::from(value) << 8,
            RW_WORD0 => {
                c.write_latch = value;
                c.write_state = RW_WORD1;
                return Ok(TimerAction::Keep);
            }
            RW_WORD1 => {
                c.write_state = RW_WORD0;
                u32::from(c.write_latch) | (u32::from(value) << 8)
            }
            _ => u32::from(value),
        };
        Ok(self.load_count(ch, count, now_ns))
    }

    /// A control word.
    fn control(&mut self, value: u8, now_ns: u64) {
        let ch = usize::from(value >> 6);
        if ch == 3 {
            for ch in (0..3).filter(|ch| value & (2 << ch) != 0) {
                if value & 0x20 == 0 {
                    self.latch_count(ch, now_ns);
                }
                if value & 0x10 == 0 {
                    self.latch_status(ch, now_ns);
                }
            }
            return;
        }
        let access = (value >> 4) & 3;
        if access == 0 {
            self.latch_count(ch, now_ns);
            return;
        }
        if let Some(c) = self.channels.get_mut(ch) {
            c.rw_mode = access;
            c.read_state = access;
            c.write_state = access;
            c.mode = (value >> 1) & 7;
            if c.mode > 5 {
                c.mode -= 4;
            }
            c.bcd = value & 1;
        }
    }

    /// `pit_latch_count()`: latches the count unless one is latched; the
    /// access in effect says how it reads (none before any control word).
    fn latch_count(&mut self, ch: usize, now_ns: u64) {
        let live = self.count(ch, now_ns).unwrap_or(0);
        if let Some(c) = self.channels.get_mut(ch) {
            if c.count_latched == 0 {
                c.latched_count = live as u16;
                c.count_latched = c.rw_mode;
            }
        }
    }

    /// `pit_latch_status()`: latches the status unless one is latched.
    fn latch_status(&mut self, ch: usize, now_ns: u64) {
        let out = u32::from(self.out(ch, now_ns).unwrap_or(false));
        if let Some(c) = self.channels.get_mut(ch) {
            if c.status_latched == 0 {
                let status = (out << 7)
                    | (u32::from(c.rw_mode) << 4)
                    | (u32::from(c.mode) << 1)
                    | u32::from(c.bcd);
                c.status = status as u8;
                c.status_latched = 1;
            }
        }
    }

    /// `pit_set_gate()`: a rising gate restarts modes 1, 2, 3 and 5.
    fn set_gate(&mut self, ch: usize, gate: u8, now_ns: u64) {
        if let Some(c) = self.channels.get_mut(ch) {
            if matches!(c.mode, 1 | 2 | 3 | 5) && c.gate < gate {
                c.count_load_time = now_ns as i64;
            }
            c.gate = gate;
        }
    }

    /// `pit_load_count()`: channel `ch` takes `count` (0 is 0x10000);
    /// channels 1 and 2 restart, channel 0's timer is armed or stopped.
    fn load_count(&mut self, ch: usize, count: u32, now_ns: u64) -> TimerAction {
        let count = if count == 0 { MAX_COUNT } else { count };
        let Some(c) = self.channels.get_mut(ch) else {
            return TimerAction::Keep;
        };
        c.count = count;
        if ch != 0 {
            c.count_load_time = now_ns as i64;
            return TimerAction::Keep;
        }
        match c.mode {
            0 | 1 | 4 => self.start_timer(count, false, now_ns),
            2 | 3 => self.start_timer(count, true, now_ns),
            _ => {
                self.timer.armed = false;
                TimerAction::Cancel
            }
        }
    }

    /// `create_pit_timer()`: the first expiry after `count` ticks, the
    /// next ones (periodic) a period apart, the period at least
    /// [`MIN_PERIOD_NS`]; the pending ticks are forgotten. Nothing in HPET
    /// legacy mode.
    fn start_timer(&mut self, count: u32, periodic: bool, now_ns: u64) -> TimerAction {
        if self.flags & FLAGS_HPET_LEGACY != 0 {
            return TimerAction::Keep;
        }
        // At most 0x10000 * 10^9: no overflow.
        let interval = u64::from(count) * NS_PER_SEC / FREQ_HZ;
        self.reset_reinject();
        self.timer = Timer {
            period_ns: if periodic {
                interval.max(MIN_PERIOD_NS)
            } else {
                interval
            },
            periodic,
            expires_ns: now_ns.saturating_add(interval),
            armed: true,
        };
        TimerAction::Arm(self.timer.expires_ns)
    }

    /// The glue's timer fired (`pit_timer_fn()`): with reinjection on, one
    /// more pending tick. Returns the next expiry of a periodic timer (the
    /// last one plus the period, even if that is past); `None` for a
    /// one-shot, or a timer not armed (a late call after a cancel), for
    /// which nothing is counted. The glue queues the injection work either
    /// way, but for a timer not armed.
    pub fn timer_fired(&mut self) -> Option<u64> {
        if !self.timer.armed {
            return None;
        }
        if self.reinject {
            self.pending = self.pending.saturating_add(1);
        }
        if self.timer.periodic {
            self.timer.expires_ns = self.timer.expires_ns.saturating_add(self.timer.period_ns);
            Some(self.timer.expires_ns)
        } else {
            self.timer.armed = false;
            None
        }
    }

    /// The injection work (`pit_do_work()`): whether to pulse IRQ 0 now.
    /// With reinjection on, only if the previous tick was acknowledged
    /// (then the next one waits for its acknowledgement); with it off,
    /// always.
    pub fn inject(&mut self) -> bool {
        !self.reinject || core::mem::replace(&mut self.irq_ack, false)
    }

    /// GSI 0 was acknowledged by the PIC or IOAPIC (`kvm_pit_ack_irq()`,
    /// an ack notifier only while reinjection is on): the next tick may go.
    /// Returns whether a pending tick remains after this one, for which the
    /// glue queues the injection work.
    pub fn irq_acked(&mut self) -> bool {
        if !self.reinject {
            return false;
        }
        self.irq_ack = true;
        if self.pending == 0 {
            return false;
        }
        self.pending -= 1;
        self.pending > 0
    }

    /// GSI 0 was masked or unmasked at the PIC or IOAPIC
    /// (`pit_mask_notifer()`, registered while reinjection is on):
    /// unmasking forgets the pending ticks.
    pub fn irq0_mask_changed(&mut self, masked: bool) {
        if self.reinject && !masked {
            self.reset_reinject();
        }
    }

    /// `kvm_pit_reset_reinject()`.
    fn reset_reinject(&mut self) {
        self.pending = 0;
        self.irq_ack = true;
    }

    /// `KVM_REINJECT_CONTROL` (`kvm_pit_set_reinject()`): turning it on
    /// forgets the pending ticks; the same setting again changes nothing.
    pub fn set_reinject(&mut self, reinject: bool) {
        if self.reinject == reinject {
            return;
        }
        if reinject {
            self.reset_reinject();
        }
        self.reinject = reinject;
    }

    /// `KVM_GET_PIT2`: the channels and flags as they are, `reserved` zero.
    pub fn state(&self) -> PitState2 {
        PitState2 {
            channels: self.channels,
            flags: self.flags,
            reserved: [0; 9],
        }
    }

    /// `KVM_SET_PIT2` at `now_ns` (`kvm_vm_ioctl_set_pit2()`): takes the
    /// channels and flags as they are, then loads each channel's count again
    /// (see the module's notes). If the flags turn HPET legacy mode on,
    /// channel 0's timer is stopped. Returns what the timer must do.
    pub fn set_state(&mut self, state: &PitState2, now_ns: u64) -> TimerAction {
        let start_legacy =
            self.flags & FLAGS_HPET_LEGACY == 0 && state.flags & FLAGS_HPET_LEGACY != 0;
        self.channels = state.channels;
        self.flags = state.flags;
        let mut action = TimerAction::Keep;
        for ch in 0..3 {
            let count = self.channels.get(ch).map_or(0, |c| c.count);
            if ch == 0 && start_legacy {
                let mode = self.channels[0].mode;
                self.channels[0].mode = MODE_NONE;
                action = self.load_count(0, count, now_ns);
                self.channels[0].mode = mode;
            } else if ch == 0 {
                action = self.load_count(0, count, now_ns);
            } else {
                self.load_count(ch, count, now_ns);
            }
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_000_000_000;

    #[test]
    fn ticks_match_128_bit_arithmetic() {
        for ns in [
            0,
            1,
            837,
            999_999_999,
            1_000_000_000,
            123_456_789_012_345,
            u64::MAX,
        ] {
            let wide = (u128::from(ns) * u128::from(FREQ_HZ) / u128::from(NS_PER_SEC)) as u64;
            assert_eq!(ticks(ns), wide, "{ns} ns");
        }
    }

    /// The shortest time after which `d` ticks have elapsed.
    fn ns_for(d: u64) -> u64 {
        (d * NS_PER_SEC).div_ceil(FREQ_HZ)
    }

    fn out(pit: &mut Pit, port: u16, value: u8, now: u64) -> TimerAction {
        pit.write(port, &[value], now).unwrap()
    }

    fn inb(pit: &mut Pit, port: u16, now: u64) -> u8 {
        pit.read(port, 1, now).unwrap().unwrap()
    }

    /// Reads a lo/hi count.
    fn inw(pit: &mut Pit, port: u16, now: u64) -> u16 {
        let lo = inb(pit, port, now);
        let hi = inb(pit, port, now);
        u16::from_le_bytes([lo, hi])
    }

    #[test]
    fn create_pit2_state() {
        let pit = Pit::new(0, T0);
        let s = pit.state();
        for (i, c) in s.channels.iter().enumerate() {
            assert_eq!((c.count, c.mode, c.rw_mode), (0x10000, 0xff, 0));
            assert_eq!(c.gate, u8::from(i != 2));
        }
        assert_eq!(s.channels[0].count_load_time, 0);
        assert_eq!(s.channels[1].count_load_time, T0 as i64);
        assert_eq!((s.flags, s.reserved), (0, [0; 9]));
        assert!(pit.reinject());
        assert_eq!(pit.timer_expiry(), None);
        // Unprogrammed channels read the count's low byte: 0x10000 is 0.
        let mut pit = pit;
        assert_eq!(inb(&mut pit, 0x40, T0 + 5000), 0);
        assert_eq!(pit.count(1, T0 + ns_for(10)), Some(0xfff6));
    }

    #[test]
    fn seabios_mode2_timer() {
        let mut pit = Pit::new(0, 0);
        assert_eq!(out(&mut pit, 0x43, 0x34, T0), TimerAction::Keep);
        assert_eq!(out(&mut pit, 0x40, 0x00, T0), TimerAction::Keep);
        // 65536 ticks: 54925447 ns, 18.2 Hz.
        let first = T0 + 54_925_447;
        assert_eq!(out(&mut pit, 0x40, 0x00, T0), TimerAction::Arm(first));
        assert_eq!(pit.timer_expiry(), Some(first));
        assert_eq!(pit.timer_fired(), Some(first + 54_925_447));
        assert_eq!(pit.timer_fired(), Some(first + 2 * 54_925_447));
        let c = pit.state().channels[0];
        assert_eq!((c.count, c.mode, c.rw_mode, c.bcd), (0x10000, 2, 3, 0));
    }

    #[test]
    fn linux_hz250_periodic_count() {
        let mut pit = Pit::new(0, 0);
        out(&mut pit, 0x43, 0x34, T0);
        out(&mut pit, 0x40, 0xa5, T0);
        assert_eq!(
            out(&mut pit, 0x40, 0x12, T0),
            TimerAction::Arm(T0 + 4_000_231)
        );
        // 1 ms in: 1193 ticks.
        let t = T0 + 1_000_000;
        assert_eq!(pit.count(0, t), Some(4773 - 1193));
        out(&mut pit, 0x43, 0x00, t);
        assert_eq!(inw(&mut pit, 0x40, t + 500_000), 3580);
        // Live again after the latch was read.
        assert_eq!(inw(&mut pit, 0x40, T0 + 2_000_000), 4773 - 2386);
        // Second period: the count starts over.
        let next = pit.timer_fired().unwrap();
        assert_eq!(next, T0 + 8_000_462);
        assert_eq!(pit.count(0, T0 + 4_000_231 + ns_for(10)), Some(4763));
        // Mode 2's output, as KVM computes it: high only at the tick that
        // ends a period.
        assert_eq!(pit.out(0, T0 + 4_000_231 + ns_for(10)), Some(false));
        assert_eq!(pit.out(0, T0 + 4_000_231 + ns_for(4773) - 1), Some(false));
        assert_eq!(pit.out(0, T0 + 4_000_231 + ns_for(4773)), Some(true));
    }

    #[test]
    fn min_period_clamp() {
        let mut pit = Pit::new(0, 0);
        out(&mut pit, 0x43, 0x34, T0);
        out(&mut pit, 0x40, 100, T0);
        // The first expiry after the real interval, then 200 us apart.
        assert_eq!(out(&mut pit, 0x40, 0, T0), TimerAction::Arm(T0 + 83_809));
        // The count follows the stretched timer: at the load, 200000 -
        // 83809 ns (138 ticks) of the period have passed: 100 - 38.
        assert_eq!(pit.count(0, T0), Some(62));
        assert_eq!(pit.timer_fired(), Some(T0 + 83_809 + 200_000));
        assert_eq!(pit.count(0, T0 + 83_809), Some(100));
        assert_eq!(pit.count(0, T0 + 83_809 + ns_for(120)), Some(80));
        // One-shot modes are not stretched.
        out(&mut pit, 0x43, 0x30, T0);
        out(&mut pit, 0x40, 100, T0);
        assert_eq!(out(&mut pit, 0x40, 0, T0), TimerAction::Arm(T0 + 83_809));
        assert_eq!(pit.timer_fired(), None);
    }

    #[test]
    fn mode0_one_shot_and_output() {
        let mut pit = Pit::new(0, 0);
        // Linux's pit_shutdown(): mode 0, count 0, so 65536 ticks.
        out(&mut pit, 0x43, 0x30, T0);
        out(&mut pit, 0x40, 0, T0);
        assert_eq!(
            out(&mut pit, 0x40, 0, T0),
            TimerAction::Arm(T0 + 54_925_447)
        );
        assert_eq!(pit.out(0, T0 + 1000), Some(false));
        assert_eq!(pit.count(0, T0 + ns_for(1)), Some(0xffff));
        assert_eq!(pit.timer_fired(), None);
        assert_eq!(pit.timer_expiry(), None);
        assert_eq!(pit.timer_fired(), None, "not armed: nothing counted");
        // Past the end: high, and the count wraps on from 0xffff.
        let after = T0 + 54_925_447 + ns_for(3);
        assert_eq!(pit.out(0, after), Some(true));
        assert_eq!(pit.count(0, after), Some(0xfffd));
        // Mode 4 (Linux's one-shot clockevent): one expiry, and the output
        // is high for the one tick at the end.
        out(&mut pit, 0x43, 0x38, T0);
        out(&mut pit, 0x40, 0xa9, T0);
        assert_eq!(
            out(&mut pit, 0x40, 0x04, T0),
            TimerAction::Arm(T0 + 999_848)
        );
        assert_eq!(pit.out(0, T0 + ns_for(1193)), Some(true));
        assert_eq!(pit.out(0, T0 + ns_for(1194)), Some(false));
        // Mode 5 on channel 0 stops the timer.
        out(&mut pit, 0x43, 0x3a, T0);
        out(&mut pit, 0x40, 1, T0);
        assert_eq!(out(&mut pit, 0x40, 0, T0), TimerAction::Cancel);
        assert_eq!(pit.timer_fired(), None);
    }

    #[test]
    fn control_word_alone_keeps_the_timer() {
        let mut pit = Pit::new(0, 0);
        out(&mut pit, 0x43, 0x34, T0);
        out(&mut pit, 0x40, 0, T0);
        out(&mut pit, 0x40, 0, T0);
        assert_eq!(out(&mut pit, 0x43, 0x30, T0 + 10), TimerAction::Keep);
        assert_eq!(
            pit.timer_fired(),
            Some(T0 + 2 * 54_925_447),
            "still periodic"
        );
        // Mode 6 and 7 are 2 and 3.
        out(&mut pit, 0x43, 0x7c, T0);
        assert_eq!(pit.state().channels[1].mode, 2);
        out(&mut pit, 0x43, 0x7e, T0);
        assert_eq!(pit.state().channels[1].mode, 3);
    }

    #[test]
    fn mode3_square_wave() {
        // Linux's PC speaker: channel 2, mode 3.
        let mut pit = Pit::new(CONFIG_SPEAKER_DUMMY, 0);
        out(&mut pit, 0x61, 0x03, T0);
        out(&mut pit, 0x43, 0xb6, T0);
        out(&mut pit, 0x42, 0xe8, T0);
        assert_eq!(out(&mut pit, 0x42, 0x03, T0), TimerAction::Keep);
        assert_eq!(pit.count(2, T0 + ns_for(100)), Some(800));
        assert_eq!(pit.out(2, T0 + ns_for(100)), Some(true));
        assert_eq!(pit.count(2, T0 + ns_for(600)), Some(800));
        assert_eq!(pit.out(2, T0 + ns_for(600)), Some(false));
        assert_eq!(pit.out(2, T0 + ns_for(1499)), Some(true));
        // An odd count: high for the first half rounded up.
        out(&mut pit, 0x42, 5, T0);
        out(&mut pit, 0x42, 0, T0);
        assert_eq!(pit.out(2, T0 + ns_for(2)), Some(true));
        assert_eq!(pit.out(2, T0 + ns_for(3)), Some(false));
        assert_eq!(pit.count(2, T0 + ns_for(1)), Some(3));
    }

    #[test]
    fn linux_tsc_calibration_on_channel2() {
        let mut pit = Pit::new(CONFIG_SPEAKER_DUMMY, 0);
        // pit_calibrate_tsc(): gate high, speaker off, mode 0, 50 ms.
        let v = inb(&mut pit, 0x61, T0);
        out(&mut pit, 0x61, (v & !0x02) | 0x01, T0);
        out(&mut pit, 0x43, 0xb0, T0);
        out(&mut pit, 0x42, 0x0b, T0);
        out(&mut pit, 0x42, 0xe9, T0);
        assert_eq!(pit.state().channels[2].count, 59659);
        let end = T0 + ns_for(59659);
        assert_eq!(end, T0 + 49_999_959);
        assert_eq!(inb(&mut pit, 0x61, end - 1) & 0x21, 0x01);
        assert_eq!(inb(&mut pit, 0x61, end) & 0x21, 0x21);
        // quick_pit_calibrate(): 0xffff, then the MSB falls one per 256
        // ticks, read as LSB then MSB.
        out(&mut pit, 0x43, 0xb0, T0);
        out(&mut pit, 0x42, 0xff, T0);
        out(&mut pit, 0x42, 0xff, T0);
        assert_eq!(inw(&mut pit, 0x42, T0 + ns_for(1)), 0xfffe);
        assert_eq!(inw(&mut pit, 0x42, T0 + ns_for(256 * 3)), 0xfcff);
        assert_eq!(pit.state().channels[2].read_state, RW_WORD0);
    }

    #[test]
    fn counter_latch() {
        let mut pit = Pit::new(0, 0);
        out(&mut pit, 0x43, 0x74, T0);
        out(&mut pit, 0x41, 0x10, T0);
        out(&mut pit, 0x41, 0x27, T0);
        out(&mut pit, 0x43, 0x40, T0 + ns_for(16));
        // A second latch before the first is read changes nothing.
        out(&mut pit, 0x43, 0x40, T0 + ns_for(500));
        assert_eq!(inb(&mut pit, 0x41, T0 + ns_for(900)), 0x00);
        let c = pit.state().channels[1];
        assert_eq!((c.latched_count, c.count_latched), (10_000 - 16, RW_MSB));
        assert_eq!(inb(&mut pit, 0x41, T0 + ns_for(900)), 0x27);
        assert_eq!(inw(&mut pit, 0x41, T0 + ns_for(900)), 10_000 - 900);
        // A latch with one-byte access reads once.
        out(&mut pit, 0x43, 0x50, T0);
        out(&mut pit, 0x41, 0xf0, T0);
        out(&mut pit, 0x43, 0x40, T0 + ns_for(0x20));
        assert_eq!(inb(&mut pit, 0x41, T0 + ns_for(0x40)), 0xd0);
        assert_eq!(inb(&mut pit, 0x41, T0 + ns_for(0x40)), 0xb0, "live");
        // Before any control word there is no access: nothing latches.
        out(&mut pit, 0x43, 0x80, T0);
        assert_eq!(pit.state().channels[2].count_latched, 0);
    }

    #[test]
    fn read_back_command() {
        let mut pit = Pit::new(0, 0);
        out(&mut pit, 0x43, 0x34, T0);
        out(&mut pit, 0x40, 0xe8, T0);
        out(&mut pit, 0x40, 0x03, T0);
        out(&mut pit, 0x43, 0x72, T0);
        out(&mut pit, 0x41, 0x64, T0);
        out(&mut pit, 0x41, 0x00, T0);
        // Status and count of channels 0 and 1: status first, then count.
        let t = T0 + ns_for(40);
        out(&mut pit, 0x43, 0xc6, t);
        assert_eq!(inb(&mut pit, 0x40, t), 0x34);
        assert_eq!(inw(&mut pit, 0x40, t), 960);
        // Mode 1's output, high while it counts (KVM's, not the 8254's).
        assert_eq!(inb(&mut pit, 0x41, t), 0x80 | 0x32);
        assert_eq!(inw(&mut pit, 0x41, t + ns_for(100)), 60);
        // Status only (bit 5 set), of channel 2 never programmed: mode 0xff
        // fills bits 7:1.
        out(&mut pit, 0x43, 0xe8, t);
        assert_eq!(inb(&mut pit, 0x42, t), 0xfe);
        assert_eq!(pit.state().channels[2].count_latched, 0);
        // Count only (bit 4 set).
        out(&mut pit, 0x43, 0xd2, t);
        assert_eq!(pit.state().channels[0].status_latched, 0);
        assert_eq!(inw(&mut pit, 0x40, t + 1000), 960);
        // A status latched twice keeps the first.
        out(&mut pit, 0x43, 0xe2, t);
        out(&mut pit, 0x43, 0x30, t);
        out(&mut pit, 0x43, 0xe2, t);
        assert_eq!(inb(&mut pit, 0x40, t), 0x34);
    }

    #[test]
    fn access_modes_and_bcd() {
        let mut pit = Pit::new(0, 0);
        out(&mut pit, 0x43, 0x50, T0);
        out(&mut pit, 0x41, 0x80, T0);
        assert_eq!(pit.state().channels[1].count, 0x80);
        assert_eq!(inb(&mut pit, 0x41, T0 + ns_for(1)), 0x7f);
        out(&mut pit, 0x43, 0x60, T0);
        out(&mut pit, 0x41, 0x12, T0);
        assert_eq!(pit.state().channels[1].count, 0x1200);
        assert_eq!(inb(&mut pit, 0x41, T0 + ns_for(0x100)), 0x11);
        assert_eq!(inb(&mut pit, 0x41, T0 + ns_for(0x100)), 0x11);
        // BCD is recorded, shown in the status, but counting is binary.
        out(&mut pit, 0x43, 0x71, T0);
        out(&mut pit, 0x41, 0x00, T0);
        out(&mut pit, 0x41, 0x10, T0);
        assert_eq!(pit.state().channels[1].bcd, 1);
        assert_eq!(inw(&mut pit, 0x41, T0 + ns_for(16)), 0x0ff0);
        out(&mut pit, 0x43, 0xe4, T0);
        assert_eq!(inb(&mut pit, 0x41, T0) & 0x3f, 0x31);
        // A channel with no control word yet takes and gives one byte.
        let mut pit = Pit::new(0, 0);
        out(&mut pit, 0x41, 0x34, T0);
        assert_eq!(pit.state().channels[1].count, 0x34);
        assert_eq!(inb(&mut pit, 0x41, T0), 0x34);
    }

    #[test]
    fn gate_restarts_periodic_modes() {
        let mut pit = Pit::new(CONFIG_SPEAKER_DUMMY, 0);
        out(&mut pit, 0x43, 0xb4, T0);
        out(&mut pit, 0x42, 100, T0);
        out(&mut pit, 0x42, 0, T0);
        // Counting, gate low or not.
        assert_eq!(pit.count(2, T0 + ns_for(30)), Some(70));
        let t1 = T0 + ns_for(30);
        out(&mut pit, 0x61, 0x01, t1);
        assert_eq!(pit.count(2, t1 + ns_for(10)), Some(90));
        // High again: no edge, no restart.
        out(&mut pit, 0x61, 0x01, t1 + 5000);
        assert_eq!(pit.count(2, t1 + ns_for(10)), Some(90));
        // Mode 0 is not restarted.
        out(&mut pit, 0x61, 0x00, t1);
        out(&mut pit, 0x43, 0xb0, t1);
        out(&mut pit, 0x42, 100, t1);
        out(&mut pit, 0x42, 0, t1);
        out(&mut pit, 0x61, 0x01, t1 + ns_for(20));
        assert_eq!(pit.count(2, t1 + ns_for(30)), Some(70));
    }

    #[test]
    fn speaker_port() {
        let mut pit = Pit::new(CONFIG_SPEAKER_DUMMY, 0);
        assert_eq!(inb(&mut pit, 0x61, 0), 0x00);
        out(&mut pit, 0x61, 0xff, 0);
        assert_eq!(pit.flags(), FLAGS_SPEAKER_DATA_ON);
        // Gate, data, refresh (2^14 ns); channel 2's output is low (an
        // unprogrammed channel counts as mode 0: 19 of 65536 ticks).
        assert_eq!(inb(&mut pit, 0x61, 0x4000), 0x13);
        assert_eq!(inb(&mut pit, 0x61, 0x8000), 0x03);
        out(&mut pit, 0x61, 0x01, 0);
        assert_eq!(pit.state().flags, 0);
        assert_eq!(pit.read(0x61, 4, 0), Ok(Some(0x01)));
        assert_eq!(pit.read(0x62, 1, 0), Err(OutOfRange));
        assert_eq!(pit.read(0x61, 5, 0), Err(OutOfRange));
        // Without the dummy speaker, port 0x61 is userspace's.
        let mut pit = Pit::new(0, 0);
        assert_eq!(pit.read(0x61, 1, 0), Err(OutOfRange));
        assert_eq!(pit.write(0x61, &[1], 0), Err(OutOfRange));
    }

    #[test]
    fn ports_and_lengths() {
        let mut pit = Pit::new(0, 0);
        assert_eq!(pit.read(0x43, 1, T0), Ok(None));
        assert_eq!(pit.read(0x40, 4, T0), Ok(Some(0)));
        assert_eq!(pit.read(0x42, 4, T0), Err(OutOfRange));
        assert_eq!(pit.read(0x44, 1, T0), Err(OutOfRange));
        assert_eq!(pit.read(0x3f, 1, T0), Err(OutOfRange));
        assert_eq!(pit.write(0x44, &[0], T0), Err(OutOfRange));
        // A wider write takes its first byte.
        out(&mut pit, 0x43, 0x90, T0);
        pit.write(0x42, &[0x55, 0xff], T0).unwrap();
        assert_eq!(pit.state().channels[2].count, 0x55);
        assert_eq!(pit.write(0x43, &[0x90, 0], T0), Err(OutOfRange));
        assert_eq!(pit.write(0x40, &[], T0), Ok(TimerAction::Keep));
    }

    #[test]
    fn reinject_delivers_every_tick_after_acks() {
        let mut pit = Pit::new(0, 0);
        out(&mut pit, 0x43, 0x34, T0);
        out(&mut pit, 0x40, 0, T0);
        out(&mut pit, 0x40, 0, T0);
        let mut injected = 0;
        // Three expiries while the guest does not acknowledge.
        for _ in 0..3 {
            pit.timer_fired();
            injected += u32::from(pit.inject());
        }
        assert_eq!((injected, pit.pending()), (1, 3));
        // Each acknowledgement lets the next one go.
        assert!(pit.irq_acked());
        assert!(pit.inject());
        assert_eq!(pit.pending(), 2);
        assert!(pit.irq_acked());
        assert!(pit.inject());
        assert!(!pit.irq_acked(), "the last one was the third");
        assert_eq!(pit.pending(), 0);
        assert!(pit.inject(), "acked: the next expiry goes at once");
        assert!(!pit.inject());
        // An acknowledgement with nothing pending.
        assert!(!pit.irq_acked());
        // Unmasking forgets the backlog; masking does not.
        pit.timer_fired();
        pit.timer_fired();
        pit.irq0_mask_changed(true);
        assert_eq!(pit.pending(), 2);
        pit.irq0_mask_changed(false);
        assert_eq!(pit.pending(), 0);
        assert!(pit.inject());
        // So does loading channel 0.
        pit.timer_fired();
        assert_eq!(pit.pending(), 1);
        out(&mut pit, 0x40, 0, T0);
        out(&mut pit, 0x40, 0, T0);
        assert_eq!(pit.pending(), 0);
        assert!(pit.inject());
    }

    #[test]
    fn coalesced_without_reinject() {
        let mut pit = Pit::new(0, 0);
        pit.set_reinject(false);
        out(&mut pit, 0x43, 0x34, T0);
        out(&mut pit, 0x40, 0, T0);
        out(&mut pit, 0x40, 0, T0);
        let injected = (0..3)
            .filter(|_| {
                pit.timer_fired();
                pit.inject()
            })
            .count();
        // Every expiry pulses IRQ 0; a guest that did not take the previous
        // one sees them as one (the PIC's IRR already set).
        assert_eq!((injected, pit.pending()), (3, 0));
        assert!(!pit.irq_acked());
        pit.irq0_mask_changed(false);
        // Back on: a fresh start, whatever irq_ack was.
        pit.set_reinject(true);
        pit.set_reinject(true);
        pit.timer_fired();
        assert!(pit.inject());
        pit.timer_fired();
        assert!(!pit.inject());
        assert_eq!(reinject_control(&[1; 32]), Some(true));
        assert_eq!(reinject_control(&[0; 32]), Some(false));
        assert_eq!(reinject_control(&[1; 31]), None);
    }

    #[test]
    fn hpet_legacy_mode() {
        let mut pit = Pit::new(0, 0);
        out(&mut pit, 0x43, 0x34, T0);
        out(&mut pit, 0x40, 0xe8, T0);
        out(&mut pit, 0x40, 0x03, T0);
        let mut s = pit.state();
        s.flags = FLAGS_HPET_LEGACY;
        // Turning it on stops the timer, the mode stays.
        assert_eq!(pit.set_state(&s, T0 + 10), TimerAction::Cancel);
        assert_eq!(pit.state().channels[0].mode, 2);
        assert_eq!(pit.timer_expiry(), None);
        // Loads then leave the timer alone.
        out(&mut pit, 0x40, 0x10, T0 + 20);
        assert_eq!(out(&mut pit, 0x40, 0x00, T0 + 20), TimerAction::Keep);
        assert_eq!(pit.set_state(&s, T0 + 30), TimerAction::Keep);
        assert_eq!(pit.state().channels[0].count, 1000);
        // Off again: armed from the call.
        s.flags = 0;
        assert_eq!(
            pit.set_state(&s, T0 + 40),
            TimerAction::Arm(T0 + 40 + 838_095)
        );
    }

    #[test]
    fn state_round_trip() {
        let mut pit = Pit::new(CONFIG_SPEAKER_DUMMY, 0);
        out(&mut pit, 0x43, 0x34, T0);
        out(&mut pit, 0x40, 0x9c, T0);
        out(&mut pit, 0x40, 0x2e, T0);
        out(&mut pit, 0x43, 0xb6, T0);
        out(&mut pit, 0x42, 0x33, T0);
        out(&mut pit, 0x61, 0x03, T0);
        out(&mut pit, 0x43, 0x80, T0 + 100);
        let s = pit.state();
        let c2 = s.channels[2];
        assert_eq!(
            (c2.write_state, c2.write_latch, c2.count_latched),
            (RW_WORD1, 0x33, 3)
        );
        let bytes = s.to_bytes();
        assert_eq!(bytes[..4], 0x2e9cu32.to_le_bytes());
        assert_eq!(bytes[12..16], [3, 2, 0, 1], "rw_mode, mode, bcd, gate");
        assert_eq!(bytes[48 + 16..48 + 24], (T0 as i64).to_le_bytes());
        assert_eq!(bytes[72..76], 2u32.to_le_bytes());
        assert_eq!(PitState2::from_bytes(&bytes), Some(s));
        assert_eq!(PitState2::from_bytes(&bytes[..STATE2_SIZE - 1]), None);
        assert_eq!(ChannelState::from_bytes(&bytes[24..]), Some(s.channels[1]));
        // Into another PIT, later: the same registers, channel 2 restarted,
        // channel 0's timer armed from the call.
        let mut other = Pit::new(CONFIG_SPEAKER_DUMMY, 0);
        let t = T0 + 5_000_000;
        assert_eq!(other.set_state(&s, t), TimerAction::Arm(t + 10_000_159));
        let back = other.state();
        assert_eq!(back.channels[0], s.channels[0]);
        assert_eq!(back.channels[2].count_load_time, t as i64);
        assert_eq!(back.flags, FLAGS_SPEAKER_DATA_ON);
        out(&mut other, 0x42, 0x12, t);
        assert_eq!(other.state().channels[2].count, 0x1233);
        assert_eq!(inb(&mut other, 0x61, t) & 0x03, 0x03);
        // Userspace's values are taken as they are: count 0 is 0x10000,
        // unknown flags stay, reserved is zero on the way out.
        let mut odd = s;
        odd.channels[1].count = 0;
        odd.channels[0].count_load_time = -5;
        odd.flags = 0x8000_0000;
        odd.reserved = [7; 9];
        other.set_state(&odd, t);
        let back = other.state();
        assert_eq!(back.channels[1].count, 0x10000);
        assert_eq!(back.channels[0].count_load_time, -5);
        assert_eq!((back.flags, back.reserved), (0x8000_0000, [0; 9]));
    }

    #[test]
    fn no_panic_on_any_input() {
        let mut pit = Pit::new(CONFIG_SPEAKER_DUMMY, 0);
        let mut x: u64 = 0xfeed_face_cafe_beef;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 16
        };
        let mut now = T0;
        for _ in 0..50_000 {
            now += next() % 100_000;
            let r = next();
            let port = [0x40, 0x41, 0x42, 0x43, 0x61, 0x44][(r % 6) as usize];
            let _ = pit.write(port, &[(r >> 8) as u8], now);
            let _ = pit.read(port, 1, now);
            match next() % 8 {
                0 => {
                    pit.timer_fired();
                }
                1 => {
                    pit.inject();
                }
                2 => {
                    pit.irq_acked();
                }
                3 => pit.set_reinject(next() & 1 != 0),
                4 => pit.irq0_mask_changed(next() & 1 != 0),
                _ => {}
            }
            if next() % 2000 == 0 {
                let mut b = [0u8; STATE2_SIZE];
                for v in &mut b {
                    *v = next() as u8;
                }
                pit.set_state(&PitState2::from_bytes(&b).unwrap(), now);
            }
            for ch in 0..3 {
                pit.count(ch, now.wrapping_sub(next() % 1000));
                pit.out(ch, now);
            }
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The 8254 programmable interval timer: three 16-bit counters clocked at
//! 1.193182 MHz. Channel 0 drives IRQ0 (the PC's timer interrupt); channel
//! 2's gate and output are at port 0x61, where Linux calibrates its TSC.
//!
//! The model is a function of time: every method takes the current time in
//! nanoseconds, so the host tests drive it with a fake clock and `rkvm run`
//! with the monotonic clock. Sources: the Intel 8254 data sheet.

/// Input clock, Hz.
use crate::snapshot::{Dec, Enc, FormatError};

pub const FREQ_HZ: u64 = 1_193_182;
const NS_PER_S: u64 = 1_000_000_000;

/// Ports: counters 0-2 and the control word.
pub const PORT_BASE: u16 = 0x40;
/// Port 0x61: speaker / channel 2 gate and output.
pub const PORT_61: u16 = 0x61;

fn ticks_between(from_ns: u64, to_ns: u64) -> u64 {
    let ns = to_ns.saturating_sub(from_ns);
    ((u128::from(ns) * u128::from(FREQ_HZ)) / u128::from(NS_PER_S)) as u64
}

fn ns_for_ticks(ticks: u64) -> u64 {
    ((u128::from(ticks) * u128::from(NS_PER_S)).div_ceil(u128::from(FREQ_HZ))) as u64
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Access {
    /// Low byte only.
    Lo,
    /// High byte only.
    Hi,
    /// Low then high.
    #[default]
    LoHi,
}

#[derive(Clone, Debug, Default)]
struct Channel {
    mode: u8,
    access: Access,
    /// The programmed count (0 means 65536).
    reload: u16,
    /// When counting started (the reload was written, or the gate rose).
    start_ns: u64,
    /// Counting (a reload was written and the gate is high).
    armed: bool,
    gate: bool,
    /// A latched count being read, and which byte comes next.
    latch: Option<u16>,
    read_hi: bool,
    write_hi: bool,
    write_lo: u8,
    /// For IRQ0: how many periods had elapsed at the last poll.
    periods_seen: u64,
}

impl Channel {
    fn period(&self) -> u64 {
        if self.reload == 0 {
            65536
        } else {
            u64::from(self.reload)
        }
    }

    fn elapsed(&self, now: u64) -> u64 {
        ticks_between(self.start_ns, now)
    }

    /// The current count.
    fn count(&self, now: u64) -> u16 {
        if !self.armed {
            return self.reload;
        }
        let (period, t) = (self.period(), self.elapsed(now));
        match self.mode {
            // Modes 2 and 3 reload at the end of each period (mode 3 counts
            // by two, twice per period).
            2 => (period - t % period) as u16,
            3 => ((period - (2 * t) % period) & !1) as u16,
            // Mode 0 (and the others, approximated): one count down, then
            // the counter wraps and goes on.
            _ => (period.wrapping_sub(t) & 0xffff) as u16,
        }
    }

    /// The OUT pin.
    fn out(&self, now: u64) -> bool {
        if !self.armed {
            return self.mode != 0;
        }
        let (period, t) = (self.period(), self.elapsed(now));
        match self.mode {
            0 => t >= period,
            2 => t % period != period - 1,
            3 => t % period < period.div_ceil(2),
            _ => true,
        }
    }

    /// Periods completed (mode 2/3), or 1 once the count ran out (mode 0).
    fn periods(&self, now: u64) -> u64 {
        if !self.armed {
            return 0;
        }
        let (period, t) = (self.period(), self.elapsed(now));
        match self.mode {
            2 | 3 => t / period,
            _ => u64::from(t >= period),
        }
    }
}

/// The timer.
#[derive(Clone, Debug)]
pub struct Pit {
    channels: [Channel; 3],
    /// Port 0x61 bit 1 (speaker data), kept for reads.
    speaker: bool,
    /// Port 0x61 bit 4 toggles on each read (the "refresh" bit).
    refresh: bool,
}

impl Default for Pit {
    fn default() -> Self {
        let mut pit = Pit {
            channels: Default::default(),
            speaker: false,
            refresh: false,
        };
        // Channels 0 and 1 have their gates tied high.
        pit.channels[0].gate = true;
        pit.channels[1].gate = true;
        pit
    }
}

impl Pit {
    /// The state `rkvm run --save` keeps at time `now` (crate::snapshot):
    /// the channels' times as offsets back from `now`, so that
    /// [`Pit::restore`] carries on from another process's clock.
    pub fn save(&self, e: &mut Enc, now: u64) {
        for c in &self.channels {
            let access = match c.access {
                Access::Lo => 1,
                Access::Hi => 2,
                Access::LoHi => 3,
            };
            e.u8(c.mode)
                .u8(access)
                .u16(c.reload)
                .u64(now.saturating_sub(c.start_ns));
            e.bool(c.armed)
                .bool(c.gate)
                .bool(c.latch.is_some())
                .u16(c.latch.unwrap_or(0));
            e.bool(c.read_hi)
                .bool(c.write_hi)
                .u8(c.write_lo)
                .u64(c.periods_seen);
        }
        e.bool(self.speaker).bool(self.refresh);
    }

    /// What [`Pit::save`] wrote, continued at time `now`.
    pub fn restore(&mut self, d: &mut Dec, now: u64) -> Result<(), FormatError> {
        for c in &mut self.channels {
            let mode = d.u8()?;
            let access = match d.u8()? {
                1 => Access::Lo,
                2 => Access::Hi,
                3 => Access::LoHi,
                v => {
                    return Err(FormatError::Bad {
                        tag: "PIT".into(),
                        what: format!("access mode {v}"),
                    })
                }
            };
            let reload = d.u16()?;
            let age = d.u64()?;
            let armed = d.bool()?;
            let gate = d.bool()?;
            let latched = d.bool()?;
            let latch = d.u16()?;
            *c = Channel {
                mode,
                access,
                reload,
                start_ns: now.saturating_sub(age),
                armed,
                gate,
                latch: latched.then_some(latch),
                read_hi: d.bool()?,
                write_hi: d.bool()?,
                write_lo: d.u8()?,
                periods_seen: d.u64()?,
            };
        }
        self.speaker = d.bool()?;
        self.refresh = d.bool()?;
        Ok(())
    }

    /// A read of port 0x40-0x43 or 0x61.
    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        match port {
            0x40..=0x42 => {
                let c = &mut self.channels[usize::from(port - PORT_BASE)];
                let value = c.latch.unwrap_or_else(|| c.count(now));
                let byte = match c.access {
                    Access::Lo => value as u8,
                    Access::Hi => (value >> 8) as u8,
                    Access::LoHi => {
                        c.read_hi = !c.read_hi;
                        if c.read_hi {
                            value as u8
                        } else {
                            (value >> 8) as u8
                        }
                    }
                };
                if c.access != Access::LoHi || !c.read_hi {
                    c.latch = None;
                }
                byte
            }
            PORT_61 => {
                self.refresh = !self.refresh;
                let c = &self.channels[2];
                u8::from(c.gate)
                    | u8::from(self.speaker) << 1
                    | u8::from(self.refresh) << 4
                    | u8::from(c.out(now)) << 5
            }
            _ => 0xff,
        }
    }

    /// A write of port 0x40-0x43 or 0x61.
    pub fn write(&mut self, port: u16, value: u8, now: u64) {
        match port {
            0x40..=0x42 => {
                let c = &mut self.channels[usize::from(port - PORT_BASE)];
                let reload = match c.access {
                    Access::Lo => Some(u16::from(value)),
                    Access::Hi => Some(u16::from(value) << 8),
                    Access::LoHi if !c.write_hi => {
                        c.write_lo = value;
                        c.write_hi = true;
                        None
                    }
                    Access::LoHi => {
                        c.write_hi = false;
                        Some(u16::from(c.write_lo) | u16::from(value) << 8)
                    }
                };
                if let Some(reload) = reload {
                    c.reload = reload;
                    c.start_ns = now;
                    c.armed = c.gate;
                    c.periods_seen = 0;
                }
            }
            0x43 => self.control(value, now),
            PORT_61 => {
                let c = &mut self.channels[2];
                let gate = value & 1 != 0;
                if gate && !c.gate {
                    // A rising gate (re)starts channel 2.
                    c.start_ns = now;
                    c.armed = true;
                }
                if !gate {
                    c.armed = false;
                }
                c.gate = gate;
                self.speaker = value & 2 != 0;
            }
            _ => {}
        }
    }

    fn control(&mut self, value: u8, now: u64) {
        let channel = usize::from(value >> 6);
        if channel == 3 {
            // Read-back: latch the counts of the selected channels.
            if value & 0x20 == 0 {
                for (i, c) in self.channels.iter_mut().enumerate() {
                    if value & (2 << i) != 0 {
                        c.latch = Some(c.count(now));
                    }
                }
            }
            return;
        }
        let c = &mut self.channels[channel];
        let access = (value >> 4) & 3;
        if access == 0 {
            // Counter latch command.
            if c.latch.is_none() {
                c.latch = Some(c.count(now));
            }
            return;
        }
        c.access = match access {
            1 => Access::Lo,
            2 => Access::Hi,
            _ => Access::LoHi,
        };
        c.mode = match (value >> 1) & 7 {
            6 => 2,
            7 => 3,
            m => m,
        };
        c.armed = false; // counting starts when the count is written
        c.latch = None;
        c.read_hi = false;
        c.write_hi = false;
    }

    /// IRQ0 edges since the last call (coalesced by the caller into one
    /// interrupt, as a PIC does with a request not yet serviced).
    pub fn poll_irq0(&mut self, now: u64) -> u64 {
        let c = &mut self.channels[0];
        let periods = c.periods(now);
        let new = periods.saturating_sub(c.periods_seen);
        c.periods_seen = periods;
        new
    }

    /// When channel 0 next raises IRQ0, in ns (`None`: it will not).
    pub fn next_irq0(&self, now: u64) -> Option<u64> {
        let c = &self.channels[0];
        if !c.armed {
            return None;
        }
        let period = c.period();
        let next_period = match c.mode {
            2 | 3 => c.periods(now) + 1,
            _ if c.periods(now) == 0 => 1,
            _ => return None,
        };
        Some(c.start_ns + ns_for_ticks(next_period * period))
    }
}

/// The PIT's ports on the bus: 0x40-0x43 and, separately, 0x61.
pub struct PitPorts {
    /// The timer, shared with the run loop (which polls IRQ0).
    pub pit: std::rc::Rc<std::cell::RefCell<Pit>>,
    /// The first port of this range.
    pub base: u16,
    /// The clock, ns.
    pub now: fn() -> u64,
}

impl super::PortDevice for PitPorts {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.pit.borrow_mut().read(self.base + offset, (self.now)());
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        self.pit
            .borrow_mut()
            .write(self.base + offset, data[0], (self.now)());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Channel 0, mode `mode`, lo/hi access, count `count`, at time `now`.
    fn program(pit: &mut Pit, channel: u8, mode: u8, count: u16, now: u64) {
        pit.write(0x43, channel << 6 | 0x30 | mode << 1, now);
        pit.write(0x40 + u16::from(channel), count as u8, now);
        pit.write(0x40 + u16::from(channel), (count >> 8) as u8, now);
    }

    fn read_count(pit: &mut Pit, channel: u8, now: u64) -> u16 {
        pit.write(0x43, channel << 6, now); // latch
        let lo = pit.read(0x40 + u16::from(channel), now);
        let hi = pit.read(0x40 + u16::from(channel), now);
        u16::from(lo) | u16::from(hi) << 8
    }

    #[test]
    fn saved_state_goes_on_from_the_same_count_at_another_time() {
        let mut pit = Pit::default();
        program(&mut pit, 0, 2, 11932, 5 * MS); // 10 ms
        let saved_at = 8 * MS;
        let count = read_count(&mut pit, 0, saved_at);
        let mut e = Enc::default();
        pit.save(&mut e, saved_at);
        // Restored in another process, on its clock.
        let restored_at = 1 << 40;
        let mut back = Pit::default();
        let mut d = Dec::new(&e.0, "PIT");
        back.restore(&mut d, restored_at).unwrap();
        d.end().unwrap();
        assert_eq!(read_count(&mut back, 0, restored_at), count);
        let next = |pit: &Pit, now| pit.next_irq0(now).map(|t| t - now);
        assert_eq!(next(&back, restored_at), next(&pit, saved_at));
    }

    #[test]
    fn rate_generator_counts_down_and_interrupts_periodically() {
        let mut pit = Pit::default();
        // Linux's 100 Hz tick: 11932 counts, mode 2.
        program(&mut pit, 0, 2, 11932, 0);
        assert_eq!(read_count(&mut pit, 0, 0), 11932);
        let c = read_count(&mut pit, 0, 5 * MS); // half a period
        assert!((5960..=5972).contains(&c), "{c}");
        assert_eq!(pit.poll_irq0(5 * MS), 0);
        assert_eq!(pit.poll_irq0(10 * MS + 1000), 1);
        assert_eq!(pit.poll_irq0(35 * MS), 2, "two more periods by 35 ms");
        let next = pit.next_irq0(35 * MS).unwrap();
        assert!(
            (40 * MS - 20_000..=40 * MS + 20_000).contains(&next),
            "{next}"
        );
    }

    #[test]
    fn one_shot_mode_0() {
        let mut pit = Pit::default();
        program(&mut pit, 0, 0, 1193, 0); // about 1 ms
        assert_eq!(pit.next_irq0(0), Some(ns_for_ticks(1193)));
        assert_eq!(pit.poll_irq0(MS / 2), 0);
        assert_eq!(pit.poll_irq0(2 * MS), 1);
        assert_eq!(pit.poll_irq0(10 * MS), 0, "once only");
        assert_eq!(pit.next_irq0(10 * MS), None);
    }

    #[test]
    fn channel_2_gate_and_out_on_port_61() {
        let mut pit = Pit::default();
        // Linux's pit_calibrate_tsc(): gate on, mode 0, count 0xffff (about 55 ms),
        // then poll bit 5 until OUT2 goes high.
        pit.write(PORT_61, 0x01, 0);
        program(&mut pit, 2, 0, 0xffff, 0);
        assert_eq!(pit.read(PORT_61, 10 * MS) & 0x21, 0x01, "gate on, OUT2 low");
        assert_eq!(
            pit.read(PORT_61, 56 * MS) & 0x20,
            0x20,
            "OUT2 high at terminal count"
        );
        pit.write(PORT_61, 0x00, 60 * MS);
        assert_eq!(pit.read(PORT_61, 60 * MS) & 1, 0);
        // The refresh bit toggles on each read.
        let a = pit.read(PORT_61, 61 * MS) & 0x10;
        let b = pit.read(PORT_61, 61 * MS) & 0x10;
        assert_ne!(a, b);
    }

    #[test]
    fn latch_holds_the_count_across_reads() {
        let mut pit = Pit::default();
        program(&mut pit, 0, 2, 1000, 0);
        pit.write(0x43, 0x00, 0); // latch at t = 0
        let lo = pit.read(0x40, 5 * MS);
        let hi = pit.read(0x40, 5 * MS);
        assert_eq!(u16::from(lo) | u16::from(hi) << 8, 1000);
        // Read-back command latching channel 0 count.
        pit.write(0x43, 0xc2, 0);
        assert_eq!(pit.read(0x40, MS), (1000 & 0xff) as u8);
    }

    #[test]
    fn square_wave_and_reload_zero() {
        let mut pit = Pit::default();
        program(&mut pit, 0, 3, 0, 0); // 65536: about 18.2 Hz
        assert_eq!(pit.poll_irq0(54 * MS), 0);
        assert_eq!(pit.poll_irq0(56 * MS), 1);
        assert!(read_count(&mut pit, 0, 56 * MS).is_multiple_of(2));
    }
}

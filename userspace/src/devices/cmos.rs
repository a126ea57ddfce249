// SPDX-License-Identifier: GPL-2.0

//! The CMOS RTC (MC146818) at ports 0x70 (index, bit 7 masks NMI) and 0x71
//! (data): the time of day from the host's clock, in BCD or binary and 12-
//! or 24-hour form as register B asks, the status registers a guest polls
//! (A: update in progress; D: valid RAM and time), and 128 bytes of RAM.
//! Periodic and alarm interrupts are not generated.

/// Index port.
use crate::snapshot::{Dec, Enc, FormatError};

pub const PORT: u16 = 0x70;

const SECONDS: usize = 0x00;
const MINUTES: usize = 0x02;
const HOURS: usize = 0x04;
const WEEKDAY: usize = 0x06;
const DAY: usize = 0x07;
const MONTH: usize = 0x08;
const YEAR: usize = 0x09;
const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
const CENTURY: usize = 0x32;

/// Register B: binary (not BCD) values.
const B_BINARY: u8 = 1 << 2;
/// Register B: 24-hour mode.
const B_24H: u8 = 1 << 1;
/// Register D: RAM and time are valid.
const D_VRT: u8 = 1 << 7;

/// Calendar time from seconds since the Unix epoch (UTC).
fn civil(unix: u64) -> (u64, u64, u64, u64, u64, u64, u64) {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (days + 4) % 7 + 1; // 1970-01-01 was a Thursday; Sunday = 1
    (
        year as u64,
        month as u64,
        day as u64,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        weekday,
    )
}

/// The RTC.
pub struct Cmos {
    index: usize,
    ram: [u8; 128],
    /// Seconds since the epoch, from the host (a function for the tests).
    clock: fn() -> u64,
}

fn host_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Default for Cmos {
    fn default() -> Self {
        Self::with_clock(host_clock)
    }
}

impl Cmos {
    /// The state `rkvm run --save` keeps (crate::snapshot): the index and
    /// the RAM. The clock is the host's on both sides.
    pub fn save(&self, e: &mut Enc) {
        e.u8(self.index as u8).bytes(&self.ram);
    }

    /// What [`Cmos::save`] wrote.
    pub fn restore(&mut self, d: &mut Dec) -> Result<(), FormatError> {
        self.index = usize::from(d.u8()?) % self.ram.len();
        self.ram = d.array()?;
        Ok(())
    }

    /// An RTC reading `clock` (BCD, 24-hour, as a PC BIOS leaves it).
    pub fn with_clock(clock: fn() -> u64) -> Self {
        let mut ram = [0u8; 128];
        ram[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz rate
        ram[REG_B] = B_24H;
        ram[REG_D] = D_VRT;
        Cmos {
            index: 0,
            ram,
            clock,
        }
    }

    fn encode(&self, value: u64) -> u8 {
        let v = (value % 100) as u8;
        if self.ram[REG_B] & B_BINARY != 0 {
            v
        } else {
            ((v / 10) << 4) | (v % 10)
        }
    }

    fn time_register(&self, index: usize) -> Option<u8> {
        let (year, month, day, hour, min, sec, weekday) = civil((self.clock)());
        Some(match index {
            SECONDS => self.encode(sec),
            MINUTES => self.encode(min),
            HOURS if self.ram[REG_B] & B_24H != 0 => self.encode(hour),
            HOURS => {
                let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };
                self.encode(h12) | if hour >= 12 { 0x80 } else { 0 }
            }
            WEEKDAY => self.encode(weekday),
            DAY => self.encode(day),
            MONTH => self.encode(month),
            YEAR => self.encode(year % 100),
            CENTURY => self.encode(year / 100),
            _ => return None,
        })
    }

    /// A guest read of port 0x70 or 0x71.
    pub fn read(&mut self, port: u16) -> u8 {
        if port == PORT {
            return 0xff;
        }
        match self.index {
            // Never "update in progress": reads are consistent at once.
            REG_A => self.ram[REG_A] & 0x7f,
            REG_C => std::mem::take(&mut self.ram[REG_C]),
            i => self.time_register(i).unwrap_or(self.ram[i]),
        }
    }

    /// A guest write of port 0x70 (index; bit 7 is the NMI mask) or 0x71.
    pub fn write(&mut self, port: u16, value: u8) {
        if port == PORT {
            self.index = usize::from(value & 0x7f);
            return;
        }
        match self.index {
            // The clock follows the host: writes to it are dropped.
            SECONDS | MINUTES | HOURS | WEEKDAY | DAY | MONTH | YEAR | CENTURY => {}
            REG_C | REG_D => {} // read-only
            i => self.ram[i] = value,
        }
    }
}

/// The RTC on the port bus (0x70-0x71).
pub struct CmosPorts(pub std::rc::Rc<std::cell::RefCell<Cmos>>);

impl super::PortDevice for CmosPorts {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.0.borrow_mut().read(PORT + offset);
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        self.0.borrow_mut().write(PORT + offset, data[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_restores_ram_and_index() {
        let mut c = Cmos::with_clock(fixed);
        c.write(0x70, 0x40);
        c.write(0x71, 0x99);
        c.write(0x70, 0x41);
        let mut e = Enc::default();
        c.save(&mut e);
        let mut back = Cmos::with_clock(fixed);
        let mut d = Dec::new(&e.0, "CMOS");
        back.restore(&mut d).unwrap();
        d.end().unwrap();
        back.write(0x70, 0x40);
        assert_eq!(back.read(0x71), 0x99);
    }

    /// 2026-11-24 23:40:44 UTC, a Tuesday.
    fn fixed() -> u64 {
        1_795_563_644
    }

    fn reg(c: &mut Cmos, index: u8) -> u8 {
        c.write(0x70, index);
        c.read(0x71)
    }

    #[test]
    fn time_in_bcd_24h() {
        let mut c = Cmos::with_clock(fixed);
        assert_eq!(reg(&mut c, 0x00), 0x44);
        assert_eq!(reg(&mut c, 0x02), 0x40);
        assert_eq!(reg(&mut c, 0x04), 0x23);
        assert_eq!(reg(&mut c, 0x07), 0x24);
        assert_eq!(reg(&mut c, 0x08), 0x11);
        assert_eq!(reg(&mut c, 0x09), 0x26);
        assert_eq!(reg(&mut c, 0x32), 0x20);
        assert_eq!(reg(&mut c, 0x06), 3, "Tuesday");
        assert_eq!(reg(&mut c, 0x0a) & 0x80, 0, "no update in progress");
        assert_eq!(reg(&mut c, 0x0d), 0x80, "valid");
    }

    #[test]
    fn binary_and_12_hour_modes() {
        let mut c = Cmos::with_clock(fixed);
        c.write(0x70, 0x8b); // register B, NMI masked
        c.write(0x71, B_BINARY);
        assert_eq!(reg(&mut c, 0x04), 0x80 | 11, "11 PM");
        assert_eq!(reg(&mut c, 0x00), 44);
        assert_eq!(reg(&mut c, 0x0b), B_BINARY);
    }

    #[test]
    fn ram_keeps_values_and_clock_ignores_writes() {
        let mut c = Cmos::with_clock(fixed);
        c.write(0x70, 0x40);
        c.write(0x71, 0x5a);
        assert_eq!(reg(&mut c, 0x40), 0x5a);
        c.write(0x70, 0x00);
        c.write(0x71, 0x00);
        assert_eq!(reg(&mut c, 0x00), 0x44);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0, 5));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0, 3)); // leap day, a Tuesday
    }
}

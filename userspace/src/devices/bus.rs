// SPDX-License-Identifier: GPL-2.0

//! The bus of `rkvm run`, one type for I/O ports and MMIO: disjoint address
//! ranges, each a device's, in a map keyed by the range's start (the shape
//! of rust-vmm's vm-device `Bus`), and what answers where no device is.
//!
//! Ranges never overlap: adding one that would is an error. An address no
//! device claims is either PC hardware that is known to be absent (ranges
//! added with [`Bus::add_absent`]: an access gets what an empty ISA bus
//! gives and is counted by name for the run's summary, since guests probe
//! there on purpose) or nothing rkvm knows of (the same answer, and a line
//! on stderr the first time). Either way the caller answers a read with all
//! ones and drops a write: nothing a guest does there can stop the run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// An address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// The 64 KiB of I/O ports (IN, OUT).
    Pio,
    /// Guest physical addresses without memory behind them.
    Mmio,
}

impl Space {
    /// The last address.
    fn last(self) -> u64 {
        match self {
            Space::Pio => 0xffff,
            Space::Mmio => u64::MAX,
        }
    }

    /// An unclaimed access is reported once per `1 << shift` addresses:
    /// per port, per page of MMIO.
    fn report_shift(self) -> u32 {
        match self {
            Space::Pio => 0,
            Space::Mmio => 12,
        }
    }

    fn report_note(self) -> &'static str {
        match self {
            Space::Pio => "reported once",
            Space::Mmio => "reported once per page",
        }
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Space::Pio => "I/O port",
            Space::Mmio => "MMIO",
        })
    }
}

/// An interval of a bus: `base` to `last` inclusive (vm-device's
/// `BusRange`), never empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    base: u64,
    last: u64,
}

impl Range {
    /// `size` addresses from `base` in `space`; `None` if that is no
    /// addresses or goes past the space's end.
    pub fn new(space: Space, base: u64, size: u64) -> Option<Range> {
        let last = base.checked_add(size.checked_sub(1)?)?;
        (last <= space.last()).then_some(Range { base, last })
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.base <= other.last && other.base <= self.last
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.base == self.last {
            write!(f, "{:#x}", self.base)
        } else {
            write!(f, "{:#x}-{:#x}", self.base, self.last)
        }
    }
}

/// Why a range cannot go on a bus.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// No addresses, or past the end of the space.
    #[error("{name}: {size:#x} {space} addresses from {base:#x} is not a range of the bus")]
    Invalid {
        space: Space,
        name: &'static str,
        base: u64,
        size: u64,
    },
    /// Part of the range belongs to another device already.
    #[error("{name} at {space} {range} overlaps {other} at {other_range}")]
    Overlap {
        space: Space,
        name: &'static str,
        range: Range,
        other: &'static str,
        other_range: Range,
    },
}

/// A guest access, for the line reporting an unclaimed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// What a range holds.
enum Slot<D> {
    Device(D),
    /// Absent hardware, with the number of accesses the guest made there.
    Absent(u64),
}

struct Entry<D> {
    range: Range,
    name: &'static str,
    slot: Slot<D>,
}

/// Devices of type `D` on disjoint ranges of one address space.
pub struct Bus<D> {
    space: Space,
    /// By the start of their range.
    entries: BTreeMap<u64, Entry<D>>,
    /// Unclaimed addresses already reported (`addr >> report_shift`).
    reported: BTreeSet<u64>,
}

impl<D> Bus<D> {
    pub fn new(space: Space) -> Self {
        Bus {
            space,
            entries: BTreeMap::new(),
            reported: BTreeSet::new(),
        }
    }

    /// Puts `device` (called `name` in errors) at `size` addresses from
    /// `base`.
    pub fn add(
        &mut self,
        base: u64,
        size: u64,
        name: &'static str,
        device: D,
    ) -> Result<Range, BusError> {
        self.insert(base, size, name, Slot::Device(device))
    }

    /// Declares `size` addresses from `base` to be hardware `name` that is
    /// not there: accesses are answered as empty and counted.
    pub fn add_absent(
        &mut self,
        base: u64,
        size: u64,
        name: &'static str,
    ) -> Result<Range, BusError> {
        self.insert(base, size, name, Slot::Absent(0))
    }

    fn insert(
        &mut self,
        base: u64,
        size: u64,
        name: &'static str,
        slot: Slot<D>,
    ) -> Result<Range, BusError> {
        let space = self.space;
        let range = Range::new(space, base, size).ok_or(BusError::Invalid {
            space,
            name,
            base,
            size,
        })?;
        // Of the ranges starting at or below our last address, the highest
        // is the only one that can reach into ours (they are disjoint).
        if let Some((_, e)) = self.entries.range(..=range.last).next_back() {
            if e.range.overlaps(&range) {
                return Err(BusError::Overlap {
                    space,
                    name,
                    range,
                    other: e.name,
                    other_range: e.range,
                });
            }
        }
        self.entries.insert(base, Entry { range, name, slot });
        Ok(range)
    }

    /// The device at `addr` and the offset of `addr` in its range, for a
    /// guest `access`. `None`: no device is there, and the caller answers
    /// as an empty bus does (reads all ones, writes vanish); the access was
    /// counted if the hardware is known to be absent, else reported on
    /// stderr, once per address (port) or page (MMIO).
    pub fn route(&mut self, addr: u64, access: Access) -> Option<(u64, &mut D)> {
        let space = self.space;
        let entry = self
            .entries
            .range_mut(..=addr)
            .next_back()
            .map(|(_, e)| e)
            .filter(|e| addr <= e.range.last);
        match entry {
            Some(Entry {
                range,
                slot: Slot::Device(device),
                ..
            }) => return Some((addr - range.base, device)),
            Some(Entry {
                slot: Slot::Absent(accesses),
                ..
            }) => *accesses += 1,
            None => {
                if self.reported.insert(addr >> space.report_shift()) {
                    eprintln!(
                        "rkvm: guest {access} of {space} {addr:#x}: no device there ({})",
                        space.report_note()
                    );
                }
            }
        }
        None
    }

    /// The devices and their ranges, by address.
    pub fn devices(&self) -> impl Iterator<Item = (Range, &D)> {
        self.entries.values().filter_map(|e| match &e.slot {
            Slot::Device(d) => Some((e.range, d)),
            Slot::Absent(_) => None,
        })
    }

    /// The devices and their ranges, by address, to change.
    pub fn devices_mut(&mut self) -> impl Iterator<Item = (Range, &mut D)> {
        self.entries.values_mut().filter_map(|e| match &mut e.slot {
            Slot::Device(d) => Some((e.range, d)),
            Slot::Absent(_) => None,
        })
    }

    /// "name (accesses), ..." by name, for the absent hardware the guest
    /// touched; `None` if it touched none.
    pub fn absent_summary(&self) -> Option<String> {
        let mut counts = BTreeMap::<&str, u64>::new();
        for e in self.entries.values() {
            if let Slot::Absent(n @ 1..) = e.slot {
                *counts.entry(e.name).or_default() += n;
            }
        }
        let parts: Vec<String> = counts
            .iter()
            .map(|(name, n)| format!("{name} ({n})"))
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// Whether anything unclaimed was reported at `addr`.
    #[cfg(test)]
    fn was_reported(&self, addr: u64) -> bool {
        self.reported.contains(&(addr >> self.space.report_shift()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(bus: &mut Bus<char>, addr: u64) -> Option<(u64, char)> {
        bus.route(addr, Access::Read).map(|(o, d)| (o, *d))
    }

    #[test]
    fn lookup_at_the_edges_of_ranges() {
        let mut bus = Bus::new(Space::Pio);
        bus.add(0x40, 4, "a", 'a').unwrap();
        bus.add(0x44, 1, "b", 'b').unwrap();
        bus.add(0x3f8, 8, "c", 'c').unwrap();
        assert_eq!(offset(&mut bus, 0x3f), None);
        assert_eq!(offset(&mut bus, 0x40), Some((0, 'a')));
        assert_eq!(offset(&mut bus, 0x43), Some((3, 'a')));
        assert_eq!(offset(&mut bus, 0x44), Some((0, 'b')));
        assert_eq!(offset(&mut bus, 0x45), None);
        assert_eq!(offset(&mut bus, 0x3f7), None);
        assert_eq!(offset(&mut bus, 0x3ff), Some((7, 'c')));
        assert_eq!(offset(&mut bus, 0x400), None);
        let order: Vec<_> = bus.devices().map(|(r, d)| (r.base(), *d)).collect();
        assert_eq!(order, [(0x40, 'a'), (0x44, 'b'), (0x3f8, 'c')]);
    }

    #[test]
    fn overlaps_are_rejected() {
        let mut bus = Bus::new(Space::Pio);
        let pit = bus.add(0x40, 4, "PIT", 1).unwrap();
        for (base, size) in [(0x40, 1), (0x43, 1), (0x3f, 2), (0x41, 1), (0x30, 0x20)] {
            assert_eq!(
                bus.add(base, size, "new", 2),
                Err(BusError::Overlap {
                    space: Space::Pio,
                    name: "new",
                    range: Range::new(Space::Pio, base, size).unwrap(),
                    other: "PIT",
                    other_range: pit,
                }),
                "{base:#x}+{size}"
            );
        }
        let err = bus.add_absent(0x42, 8, "DMA").unwrap_err();
        assert_eq!(
            err.to_string(),
            "DMA at I/O port 0x42-0x49 overlaps PIT at 0x40-0x43"
        );
        // Right next to it on either side is fine.
        bus.add(0x3f, 1, "below", 3).unwrap();
        bus.add_absent(0x44, 1, "above").unwrap();
        assert_eq!(bus.devices().count(), 2, "absent hardware is no device");
    }

    #[test]
    fn ranges_stay_in_their_space() {
        let mut bus = Bus::new(Space::Pio);
        assert!(bus.add(0xfff8, 8, "top", ()).is_ok());
        assert!(matches!(
            bus.add(0xfff0, 0x11, "past the end", ()),
            Err(BusError::Invalid { .. })
        ));
        assert!(matches!(
            bus.add(0x80, 0, "empty", ()),
            Err(BusError::Invalid { .. })
        ));
        let mut mmio = Bus::new(Space::Mmio);
        assert!(mmio.add(u64::MAX - 0xfff, 0x1000, "top", ()).is_ok());
        assert!(mmio.add(u64::MAX, 2, "wraps", ()).is_err());
    }

    #[test]
    fn fallback_counts_absent_hardware_and_reports_the_rest() {
        let mut bus = Bus::<()>::new(Space::Pio);
        bus.add_absent(0x2f8, 8, "COM2").unwrap();
        bus.add_absent(0x80, 0x10, "POST").unwrap();
        bus.add_absent(0x3e8, 8, "COM3").unwrap();
        assert_eq!(bus.absent_summary(), None, "nothing probed yet");
        for port in [0x2f8, 0x2ff, 0x3e8, 0x2f9] {
            assert!(bus.route(port, Access::Read).is_none());
        }
        assert!(bus.route(0x80, Access::Write).is_none());
        assert!(!bus.was_reported(0x2f8), "expected probes are not reported");
        assert!(bus.route(0x2f7, Access::Write).is_none());
        assert!(bus.was_reported(0x2f7));
        assert!(!bus.was_reported(0x2f6), "reported per port");
        assert_eq!(
            bus.absent_summary().as_deref(),
            Some("COM2 (3), COM3 (1), POST (1)"),
            "by name"
        );

        let mut mmio = Bus::<()>::new(Space::Mmio);
        assert!(mmio.route(0xfee0_0020, Access::Read).is_none());
        assert!(mmio.was_reported(0xfee0_0fff), "reported per page");
        assert!(!mmio.was_reported(0xfee0_1000));
        assert_eq!(mmio.absent_summary(), None);
    }
}

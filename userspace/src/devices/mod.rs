// SPDX-License-Identifier: GPL-2.0

//! Devices emulated in userspace on I/O exits, and the port bus that routes
//! an exit to the device owning the port.

pub mod cmos;
pub mod debug_exit;
pub mod i8042;
pub mod pic;
pub mod pit;
pub mod serial;
pub mod virtio;

use std::collections::{BTreeMap, BTreeSet};

/// A device on the I/O port bus.
pub trait PortDevice {
    /// A guest IN of `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// A guest OUT.
    fn write(&mut self, offset: u16, data: &[u8]);
    /// Whether this is a stand-in for absent hardware (for the counts).
    fn as_absent(&self) -> Option<&Absent> {
        None
    }
}

/// A device shared with the run loop (which also talks to it, outside
/// port I/O) sits on the bus through its `Rc`.
impl<T: PortDevice> PortDevice for std::rc::Rc<std::cell::RefCell<T>> {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        self.borrow_mut().read(offset, data)
    }
    fn write(&mut self, offset: u16, data: &[u8]) {
        self.borrow_mut().write(offset, data)
    }
}

/// PC hardware that guests probe for and `rkvm run` does not have: base,
/// number of ports, name. A probe gets what an ISA bus gives with nothing
/// there (reads all ones, writes vanish), which every driver takes as
/// "absent"; these accesses are expected, so they are counted for the
/// summary instead of reported one by one.
pub const ABSENT_PC_HARDWARE: [(u16, u16, &str); 14] = [
    (0x00, 0x20, "DMA controller 1"),
    (0x80, 0x10, "DMA page registers and POST port 0x80"),
    (0x92, 1, "system control port A"),
    (0xc0, 0x20, "DMA controller 2"),
    (0x170, 8, "IDE secondary"),
    (0x1f0, 8, "IDE primary"),
    (0x201, 1, "game port"),
    (0x278, 3, "LPT2"),
    (0x2e8, 8, "COM4"),
    (0x2f8, 8, "COM2"),
    (0x378, 3, "LPT1"),
    (0x3b0, 0x30, "VGA"),
    (0x3e8, 8, "COM3"),
    (0xcf8, 8, "PCI configuration ports (no PCI bus)"),
];

/// Ports and the devices behind them.
#[derive(Default)]
pub struct PortBus {
    devices: Vec<(u16, u16, Box<dyn PortDevice>)>,
    /// Accesses to known-absent hardware, by name.
    absent: BTreeMap<&'static str, u64>,
    /// Ports nobody owns that the guest touched, reported once each.
    reported: BTreeSet<u16>,
}

/// A range of [`ABSENT_PC_HARDWARE`] on the bus.
pub struct Absent(&'static str);

impl PortDevice for Absent {
    fn read(&mut self, _: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write(&mut self, _: u16, _: &[u8]) {}
    fn as_absent(&self) -> Option<&Absent> {
        Some(self)
    }
}

impl PortBus {
    /// Adds [`ABSENT_PC_HARDWARE`] (after the real devices, which win).
    pub fn add_absent_pc_hardware(&mut self) {
        for (base, len, name) in ABSENT_PC_HARDWARE {
            self.add(base, len, Box::new(Absent(name)));
        }
    }

    /// "name (accesses), ..." for the absent hardware the guest touched.
    pub fn absent_summary(&self) -> Option<String> {
        let parts: Vec<String> = self
            .absent
            .iter()
            .map(|(name, n)| format!("{name} ({n})"))
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// Adds `device` at ports `base .. base + len`.
    pub fn add(&mut self, base: u16, len: u16, device: Box<dyn PortDevice>) {
        self.devices.push((base, len, device));
    }

    fn find(&mut self, port: u16) -> Option<(u16, &mut Box<dyn PortDevice>)> {
        let (base, _, dev) = self
            .devices
            .iter_mut()
            .find(|(base, len, _)| port >= *base && port - *base < *len)?;
        if let Some(absent) = dev.as_absent() {
            *self.absent.entry(absent.0).or_default() += 1;
        }
        Some((port - *base, dev))
    }

    /// An IN. Absent hardware reads as all ones, as on a real ISA bus.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        match self.find(port) {
            Some((offset, dev)) => dev.read(offset, data),
            None => {
                data.fill(0xff);
                self.report(port, "read");
            }
        }
    }

    /// An OUT. Writes to absent hardware are dropped.
    pub fn write(&mut self, port: u16, data: &[u8]) {
        match self.find(port) {
            Some((offset, dev)) => dev.write(offset, data),
            None => self.report(port, "write"),
        }
    }

    fn report(&mut self, port: u16, what: &str) {
        if self.reported.insert(port) {
            eprintln!("rkvm: guest {what} of I/O port {port:#x}: no device there (reported once)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    struct Recorder(Rc<RefCell<Vec<(u16, u8)>>>);

    impl PortDevice for Recorder {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) {
            self.0.borrow_mut().push((offset, data[0]));
        }
    }

    #[test]
    fn routes_by_port_and_reads_ff_elsewhere() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let mut bus = PortBus::default();
        bus.add(0x3f8, 8, Box::new(Recorder(log.clone())));
        bus.write(0x3fb, &[7]);
        bus.write(0x400, &[9]);
        let mut b = [0u8; 1];
        bus.read(0x3fd, &mut b);
        assert_eq!(b, [5]);
        bus.read(0x80, &mut b);
        assert_eq!(b, [0xff]);
        assert_eq!(*log.borrow(), vec![(3, 7)]);
    }

    #[test]
    fn absent_hardware_reads_ones_and_is_counted() {
        let mut bus = PortBus::default();
        bus.add(
            0xcf8,
            1,
            Box::new(Recorder(Rc::new(RefCell::new(Vec::new())))),
        );
        bus.add_absent_pc_hardware();
        let mut d = [0u8; 4];
        bus.read(0xcfc, &mut d);
        assert_eq!(d, [0xff; 4], "no PCI bus: all ones");
        bus.write(0x80, &[0x55]);
        bus.write(0x80, &[0x55]);
        bus.read(0xcf8, &mut d[..1]);
        assert_eq!(d[0], 0, "a real device wins over the absent range");
        assert!(bus.reported.is_empty(), "expected probes are not reported");
        assert_eq!(
            bus.absent_summary().as_deref(),
            Some("DMA page registers and POST port 0x80 (2), PCI configuration ports (no PCI bus) (1)")
        );
    }

    #[test]
    fn absent_ranges_do_not_overlap_rkvm_devices() {
        let ours = [
            (0x20, 2),
            (0x40, 4),
            (0x60, 1),
            (0x61, 1),
            (0x64, 1),
            (0x70, 2),
            (0xa0, 2),
            (0x3f8, 8),
            (0x4d0, 2),
            (0xf4, 2),
        ];
        for (base, len, name) in ABSENT_PC_HARDWARE {
            for (b, l) in ours {
                assert!(
                    base + len <= b || b + l <= base,
                    "{name} overlaps port {b:#x}"
                );
            }
        }
    }
}

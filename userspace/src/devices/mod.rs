// SPDX-License-Identifier: GPL-2.0

//! Devices emulated in userspace on I/O exits, and the port bus that routes
//! an exit to the device owning the port.

pub mod bus;
pub mod cmos;
pub mod debug_exit;
pub mod i8042;
pub mod ioapic;
pub mod pic;
pub mod pit;
pub mod serial;
pub mod virtio;

use bus::{Access, Bus, BusError, Space};

/// A device on the I/O port bus.
pub trait PortDevice {
    /// A guest IN of `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// A guest OUT.
    fn write(&mut self, offset: u16, data: &[u8]);
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

/// The I/O ports and the devices behind them.
pub type PortBus = Bus<Box<dyn PortDevice>>;

impl PortBus {
    /// An empty port bus.
    pub fn ports() -> Self {
        Bus::new(Space::Pio)
    }

    /// Puts `device` at ports `base .. base + len`.
    pub fn add_port(
        &mut self,
        base: u16,
        len: u16,
        name: &'static str,
        device: impl PortDevice + 'static,
    ) -> Result<(), BusError> {
        self.add(base.into(), len.into(), name, Box::new(device))
            .map(|_| ())
    }

    /// Declares [`ABSENT_PC_HARDWARE`]: none of it may overlap a device.
    pub fn add_absent_pc_hardware(&mut self) -> Result<(), BusError> {
        for (base, len, name) in ABSENT_PC_HARDWARE {
            self.add_absent(base.into(), len.into(), name)?;
        }
        Ok(())
    }

    /// An IN. Absent hardware reads as all ones, as on a real ISA bus.
    pub fn read(&mut self, port: u16, data: &mut [u8]) {
        match self.route(port.into(), Access::Read) {
            Some((offset, dev)) => dev.read(offset as u16, data),
            None => data.fill(0xff),
        }
    }

    /// An OUT. Writes to absent hardware are dropped.
    pub fn write(&mut self, port: u16, data: &[u8]) {
        if let Some((offset, dev)) = self.route(port.into(), Access::Write) {
            dev.write(offset as u16, data);
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
        let mut bus = PortBus::ports();
        bus.add_port(0x3f8, 8, "COM1", Recorder(log.clone()))
            .unwrap();
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
        let mut bus = PortBus::ports();
        bus.add_absent_pc_hardware().unwrap();
        let mut d = [0u8; 4];
        bus.read(0xcfc, &mut d);
        assert_eq!(d, [0xff; 4], "no PCI bus: all ones");
        bus.write(0x80, &[0x55]);
        bus.write(0x80, &[0x55]);
        assert_eq!(
            bus.absent_summary().as_deref(),
            Some("DMA page registers and POST port 0x80 (2), PCI configuration ports (no PCI bus) (1)")
        );
    }

    #[test]
    fn absent_hardware_may_not_hide_a_device() {
        let mut bus = PortBus::ports();
        let log = Rc::new(RefCell::new(Vec::new()));
        bus.add_port(0xcf8, 1, "PCI", Recorder(log)).unwrap();
        assert_eq!(
            bus.add_absent_pc_hardware().unwrap_err().to_string(),
            "PCI configuration ports (no PCI bus) at I/O port 0xcf8-0xcff overlaps PCI at 0xcf8"
        );
    }
}

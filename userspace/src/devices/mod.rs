// SPDX-License-Identifier: GPL-2.0

//! Devices emulated in userspace on I/O exits, and the port bus that routes
//! an exit to the device owning the port.

pub mod cmos;
pub mod debug_exit;
pub mod pic;
pub mod pit;
pub mod serial;

use std::collections::BTreeSet;

/// A device on the I/O port bus.
pub trait PortDevice {
    /// A guest IN of `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// A guest OUT.
    fn write(&mut self, offset: u16, data: &[u8]);
}

/// Ports and the devices behind them.
#[derive(Default)]
pub struct PortBus {
    devices: Vec<(u16, u16, Box<dyn PortDevice>)>,
    /// Ports nobody owns that the guest touched, reported once each.
    reported: BTreeSet<u16>,
}

impl PortBus {
    /// Adds `device` at ports `base .. base + len`.
    pub fn add(&mut self, base: u16, len: u16, device: Box<dyn PortDevice>) {
        self.devices.push((base, len, device));
    }

    fn find(&mut self, port: u16) -> Option<(u16, &mut Box<dyn PortDevice>)> {
        self.devices
            .iter_mut()
            .find(|(base, len, _)| port >= *base && port - *base < *len)
            .map(|(base, _, dev)| (port - *base, dev))
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
}

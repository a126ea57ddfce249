// SPDX-License-Identifier: GPL-2.0

//! Ports for test guests: the debug-exit port (0xf4, as QEMU's
//! isa-debug-exit), where a byte written ends the run with that byte as
//! rkvm's exit status, and the IRQ port (0xf5), where a byte written pulses
//! that interrupt line of the PIC.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::{pic::Pic, PortDevice};

/// The debug-exit port.
pub const PORT: u16 = 0xf4;
/// The IRQ test port.
pub const IRQ_PORT: u16 = 0xf5;

/// Pulses the PIC line a test guest names.
pub struct IrqPort(pub Rc<RefCell<Pic>>);

impl PortDevice for IrqPort {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u16, data: &[u8]) {
        self.0.borrow_mut().pulse_irq(data[0] & 15);
    }
}

/// Holds the status the guest wrote, once it wrote one.
pub struct DebugExit(pub Rc<Cell<Option<u8>>>);

impl PortDevice for DebugExit {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u16, data: &[u8]) {
        self.0.set(Some(data[0]));
    }
}

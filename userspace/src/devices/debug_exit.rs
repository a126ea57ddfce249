// SPDX-License-Identifier: GPL-2.0

//! The debug-exit port (0xf4, as QEMU's isa-debug-exit): a test guest writes
//! a byte there to end the run with that byte as rkvm's exit status.

use std::cell::Cell;
use std::rc::Rc;

use super::PortDevice;

/// The port's base.
pub const PORT: u16 = 0xf4;

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

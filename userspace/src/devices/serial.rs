// SPDX-License-Identifier: GPL-2.0

//! The 16550 UART on COM1 (0x3f8), from rust-vmm's vm-superio, with its
//! output going to a writer (the terminal).

use std::io::Write;

use vm_superio::{serial::NoEvents, Serial, Trigger};

use super::PortDevice;

/// Interrupt line of the UART. Without an interrupt controller yet, the
/// guest polls the line status register; raising the line is a no-op.
pub struct NoIrq;

impl Trigger for NoIrq {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        Ok(())
    }
}

/// COM1.
pub struct Uart<W: Write>(Serial<NoIrq, NoEvents, W>);

impl<W: Write> Uart<W> {
    /// A UART writing what the guest transmits to `out`.
    pub fn new(out: W) -> Self {
        Uart(Serial::new(NoIrq, out))
    }
}

impl<W: Write> PortDevice for Uart<W> {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.0.read(offset as u8);
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        // A failed write to the terminal must not stop the guest.
        let _ = self.0.write(offset as u8, data[0]);
        let _ = self.0.writer_mut().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transmits_and_reports_an_empty_transmitter() {
        let mut uart = Uart::new(Vec::new());
        for b in b"hi" {
            uart.write(0, &[*b]);
        }
        let mut lsr = [0u8];
        uart.read(5, &mut lsr);
        assert_eq!(lsr[0] & 0x60, 0x60, "THR empty and transmitter idle");
        assert_eq!(uart.0.writer().as_slice(), b"hi");
    }
}

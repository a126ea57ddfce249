// SPDX-License-Identifier: GPL-2.0

//! The 16550 UART on COM1 (0x3f8), from rust-vmm's vm-superio, with its
//! output going to a writer (the terminal) and its interrupt to IRQ4 of the
//! PIC.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

use vm_superio::{
    serial::{NoEvents, SerialState},
    Serial, Trigger,
};

use super::{pic::Pic, PortDevice};
use crate::snapshot::{Dec, Enc, FormatError};

/// COM1's interrupt line.
pub const IRQ: u8 = 4;

/// Raises a PIC line when the UART interrupts (an edge: vm-superio triggers
/// once per event, transmitter empty or data received).
pub struct PicLine {
    /// The PIC.
    pub pic: Rc<RefCell<Pic>>,
    /// The line.
    pub irq: u8,
}

impl Trigger for PicLine {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.pic.borrow_mut().pulse_irq(self.irq);
        Ok(())
    }
}

/// COM1.
pub struct Uart<W: Write>(Serial<PicLine, NoEvents, W>);

impl<W: Write> Uart<W> {
    /// A UART writing what the guest transmits to `out`, interrupting on `line`.
    pub fn new(line: PicLine, out: W) -> Self {
        Uart(Serial::new(line, out))
    }
}

impl<W: Write> Uart<W> {
    /// Puts bytes from the host side into the receive FIFO (interrupting
    /// if the guest enabled that); returns how many fitted.
    pub fn receive(&mut self, bytes: &[u8]) -> usize {
        // The only errors are a full FIFO (0 bytes taken) and a failed
        // trigger, which `PicLine` cannot return.
        self.0.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Whether the guest enabled the received-data interrupt: input can
    /// then wake a halted guest.
    pub fn rx_interrupt_enabled(&self) -> bool {
        self.0.state().interrupt_enable & 1 != 0
    }

    /// The state `rkvm run --save` keeps (crate::snapshot): vm-superio's
    /// registers and receive FIFO.
    pub fn save(&self, e: &mut Enc) {
        let s = self.0.state();
        e.u8(s.baud_divisor_low)
            .u8(s.baud_divisor_high)
            .u8(s.interrupt_enable);
        e.u8(s.interrupt_identification)
            .u8(s.line_control)
            .u8(s.line_status);
        e.u8(s.modem_control)
            .u8(s.modem_status)
            .u8(s.scratch)
            .blob(&s.in_buffer);
    }

    /// What [`Uart::save`] wrote, on the same line and output.
    pub fn restore(&mut self, d: &mut Dec, line: PicLine, out: W) -> Result<(), FormatError> {
        let state = SerialState {
            baud_divisor_low: d.u8()?,
            baud_divisor_high: d.u8()?,
            interrupt_enable: d.u8()?,
            interrupt_identification: d.u8()?,
            line_control: d.u8()?,
            line_status: d.u8()?,
            modem_control: d.u8()?,
            modem_status: d.u8()?,
            scratch: d.u8()?,
            in_buffer: d.blob()?.to_vec(),
        };
        self.0 = Serial::from_state(&state, line, NoEvents, out).map_err(|e| FormatError::Bad {
            tag: "UART".into(),
            what: format!("{e:?}"),
        })?;
        Ok(())
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

    fn line() -> (PicLine, Rc<RefCell<Pic>>) {
        let pic = Rc::new(RefCell::new(Pic::new()));
        (
            PicLine {
                pic: pic.clone(),
                irq: IRQ,
            },
            pic,
        )
    }

    #[test]
    fn saved_state_restores_registers_and_pending_input() {
        let mut uart = Uart::new(line().0, Vec::new());
        uart.write(1, &[0x01]); // IER: received-data interrupt
        uart.write(7, &[0x5a]); // scratch
        assert_eq!(uart.receive(b"ab"), 2);
        let mut e = Enc::default();
        uart.save(&mut e);
        let mut back = Uart::new(line().0, Vec::new());
        let mut d = Dec::new(&e.0, "UART");
        back.restore(&mut d, line().0, Vec::new()).unwrap();
        d.end().unwrap();
        assert!(back.rx_interrupt_enabled());
        let mut b = [0];
        back.read(7, &mut b);
        assert_eq!(b, [0x5a]);
        back.read(0, &mut b);
        assert_eq!(b, [b'a']);
    }

    #[test]
    fn transmits_and_reports_an_empty_transmitter() {
        let mut uart = Uart::new(line().0, Vec::new());
        for b in b"hi" {
            uart.write(0, &[*b]);
        }
        let mut lsr = [0u8];
        uart.read(5, &mut lsr);
        assert_eq!(lsr[0] & 0x60, 0x60, "THR empty and transmitter idle");
        assert_eq!(uart.0.writer().as_slice(), b"hi");
    }

    #[test]
    fn received_bytes_are_read_in_order_with_irq4() {
        let (line, pic) = line();
        pic.borrow_mut().write(0x21, 0x00);
        let mut uart = Uart::new(line, Vec::new());
        assert!(!uart.rx_interrupt_enabled());
        uart.write(1, &[0x01]); // IER: received-data interrupt
        assert!(uart.rx_interrupt_enabled());
        assert_eq!(uart.receive(&[b'x'; 100]), 64, "the FIFO takes what fits");
        assert_eq!(pic.borrow_mut().acknowledge(), Some(0x08 + IRQ));
        let (mut lsr, mut byte) = ([0u8], [0u8]);
        uart.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        uart.read(0, &mut byte);
        assert_eq!(byte[0], b'x');
    }

    #[test]
    fn transmitter_empty_interrupt_reaches_irq4() {
        let (line, pic) = line();
        pic.borrow_mut().write(0x21, 0x00); // unmask everything
        let mut uart = Uart::new(line, Vec::new());
        assert!(!pic.borrow().interrupt_pending());
        uart.write(1, &[0x02]); // IER: transmitter-empty interrupt
        assert!(pic.borrow().interrupt_pending());
        assert_eq!(pic.borrow_mut().acknowledge(), Some(0x08 + IRQ));
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The 8259A programmable interrupt controller pair of a PC: master at
//! 0x20-0x21 (IRQ 0-7), slave at 0xa0-0xa1 (IRQ 8-15) cascaded on the
//! master's IR2, plus the edge/level control registers (ELCR) at 0x4d0-0x4d1.
//!
//! rkvm has no in-kernel interrupt controller: this model decides which
//! vector to inject, and `rkvm run` injects it with `KVM_INTERRUPT` when the
//! vCPU is ready (the interrupt-window protocol). Sources: the Intel 8259A
//! data sheet; Linux's i8259 driver for the sequences a guest uses.

use crate::snapshot::{Dec, Enc, FormatError};

/// One 8259A.
#[derive(Clone, Debug, Default)]
struct Chip {
    /// Interrupt request register: lines that asked.
    irr: u8,
    /// In-service register: interrupts being handled.
    isr: u8,
    /// Interrupt mask register (OCW1).
    imr: u8,
    /// Current level of each input line (for edge detection).
    lines: u8,
    /// Level-triggered inputs (ELCR).
    elcr: u8,
    /// Vector base (ICW2, low 3 bits clear).
    base: u8,
    /// Initialization: how many ICWs are still expected (0 = operational).
    icw_step: u8,
    /// ICW1 said an ICW4 follows.
    icw4_needed: bool,
    /// ICW4 automatic EOI.
    auto_eoi: bool,
    /// OCW3: a read of the command port returns the ISR (else the IRR).
    read_isr: bool,
}

impl Chip {
    /// The highest-priority bit of `bits` (bit 0 highest), if any.
    fn highest(bits: u8) -> Option<u8> {
        (bits != 0).then(|| bits.trailing_zeros() as u8)
    }

    /// The request this chip would raise now: the highest-priority unmasked
    /// request that is more urgent than everything in service.
    fn pending(&self) -> Option<u8> {
        let req = Self::highest(self.irr & !self.imr)?;
        match Self::highest(self.isr) {
            Some(busy) if busy <= req => None,
            _ => Some(req),
        }
    }

    fn set_line(&mut self, irq: u8, level: bool) {
        let bit = 1 << irq;
        if self.elcr & bit != 0 {
            // Level-triggered: requests follow the line.
            if level {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
        } else if level && self.lines & bit == 0 {
            self.irr |= bit; // a rising edge
        }
        if level {
            self.lines |= bit;
        } else {
            self.lines &= !bit;
        }
    }

    /// Interrupt acknowledge: moves `irq` from request to service.
    fn ack(&mut self, irq: u8) {
        let bit = 1 << irq;
        if self.elcr & bit == 0 {
            self.irr &= !bit;
        }
        if !self.auto_eoi {
            self.isr |= bit;
        }
    }

    fn write_command(&mut self, value: u8) {
        if value & 0x10 != 0 {
            // ICW1: start initialization.
            *self = Chip {
                elcr: self.elcr,
                lines: self.lines,
                ..Chip::default()
            };
            self.icw4_needed = value & 1 != 0;
            self.icw_step = 2;
        } else if value & 0x08 != 0 {
            // OCW3: register read select (bit 1 enables, bit 0 picks ISR).
            if value & 0x02 != 0 {
                self.read_isr = value & 0x01 != 0;
            }
        } else {
            // OCW2: end of interrupt.
            match value >> 5 {
                // Non-specific EOI: the highest-priority interrupt in service.
                1 => {
                    if let Some(irq) = Self::highest(self.isr) {
                        self.isr &= !(1 << irq);
                    }
                }
                // Specific EOI.
                3 => self.isr &= !(1 << (value & 7)),
                _ => {} // rotation and priority setting: not emulated
            }
        }
    }

    fn write_data(&mut self, value: u8) {
        match self.icw_step {
            2 => {
                self.base = value & 0xf8;
                self.icw_step = 3;
            }
            3 => {
                // ICW3 (cascade wiring): fixed in a PC, nothing to keep.
                self.icw_step = if self.icw4_needed { 4 } else { 0 };
            }
            4 => {
                self.auto_eoi = value & 0x02 != 0;
                self.icw_step = 0;
            }
            _ => self.imr = value, // OCW1
        }
    }

    fn read_command(&self) -> u8 {
        if self.read_isr {
            self.isr
        } else {
            self.irr
        }
    }
}

/// The master/slave pair.
#[derive(Clone, Debug, Default)]
pub struct Pic {
    chips: [Chip; 2],
    /// The devices' line changes, in order, for the run loop to hand on:
    /// to `KVM_IRQ_LINE` with the PIC in the kernel (`rkvm run --irqchip
    /// kernel`), to rkvm run's IOAPIC with the split irqchip.
    forwarded: Option<Vec<(u8, bool)>>,
    /// The lines are only forwarded (the PIC in the kernel): this model
    /// then decides nothing.
    forward_only: bool,
}

/// The master's input the slave is wired to.
const CASCADE_IRQ: u8 = 2;

impl Pic {
    /// The state `rkvm run --save` keeps (crate::snapshot).
    pub fn save(&self, e: &mut Enc) {
        for c in &self.chips {
            e.u8(c.irr)
                .u8(c.isr)
                .u8(c.imr)
                .u8(c.lines)
                .u8(c.elcr)
                .u8(c.base);
            e.u8(c.icw_step)
                .bool(c.icw4_needed)
                .bool(c.auto_eoi)
                .bool(c.read_isr);
        }
    }

    /// What [`Pic::save`] wrote.
    pub fn restore(&mut self, d: &mut Dec) -> Result<(), FormatError> {
        for c in &mut self.chips {
            *c = Chip {
                irr: d.u8()?,
                isr: d.u8()?,
                imr: d.u8()?,
                lines: d.u8()?,
                elcr: d.u8()?,
                base: d.u8()?,
                icw_step: d.u8()?,
                icw4_needed: d.bool()?,
                auto_eoi: d.bool()?,
                read_isr: d.bool()?,
            };
        }
        Ok(())
    }

    /// Both chips before the guest programs them: vectors 0x08 and 0x70
    /// (a PC BIOS's), every line masked, so that nothing interrupts a guest
    /// that never set up an interrupt controller. Initialization (ICW1)
    /// unmasks everything, as on the real part.
    pub fn new() -> Self {
        let mut pic = Pic::default();
        pic.chips[0].base = 0x08;
        pic.chips[1].base = 0x70;
        pic.chips[0].imr = 0xff;
        pic.chips[1].imr = 0xff;
        pic
    }

    /// A pair that only forwards its lines (see [`Pic::take_forwarded`]).
    pub fn forwarding() -> Self {
        Pic {
            forwarded: Some(Vec::new()),
            forward_only: true,
            ..Pic::new()
        }
    }

    /// A pair that works and also forwards its lines, which an IOAPIC
    /// beside it shares (`rkvm run --irqchip split`).
    pub fn sharing_lines() -> Self {
        Pic {
            forwarded: Some(Vec::new()),
            ..Pic::new()
        }
    }

    /// The line changes since the last call, oldest first, if this pair
    /// forwards them.
    pub fn take_forwarded(&mut self) -> Vec<(u8, bool)> {
        self.forwarded
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Sets the level of interrupt line `irq` (0-15).
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        if let Some(lines) = &mut self.forwarded {
            if irq < 16 {
                lines.push((irq, level));
            }
            if self.forward_only {
                return;
            }
        }
        match irq {
            0..=7 => self.chips[0].set_line(irq, level),
            8..=15 => self.chips[1].set_line(irq - 8, level),
            _ => {}
        }
        self.update_cascade();
    }

    /// A pulse on an edge-triggered line (the usual way a device interrupts).
    pub fn pulse_irq(&mut self, irq: u8) {
        self.set_irq(irq, true);
        self.set_irq(irq, false);
    }

    fn update_cascade(&mut self) {
        let slave = self.chips[1].pending().is_some();
        self.chips[0].set_line(CASCADE_IRQ, slave);
    }

    /// Whether the pair asserts INTR to the CPU.
    pub fn interrupt_pending(&self) -> bool {
        self.chips[0].pending().is_some()
    }

    /// The CPU acknowledges the interrupt: the vector to inject, or `None`
    /// when nothing is pending any more.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let irq = self.chips[0].pending()?;
        self.chips[0].ack(irq);
        let vector = if irq == CASCADE_IRQ {
            let slave_irq = self.chips[1].pending().unwrap_or(7); // spurious: IR7
            self.chips[1].ack(slave_irq);
            self.chips[1].base | slave_irq
        } else {
            self.chips[0].base | irq
        };
        self.update_cascade();
        Some(vector)
    }

    /// A guest read of `port`.
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            0x20 => self.chips[0].read_command(),
            0x21 => self.chips[0].imr,
            0xa0 => self.chips[1].read_command(),
            0xa1 => self.chips[1].imr,
            0x4d0 => self.chips[0].elcr,
            0x4d1 => self.chips[1].elcr,
            _ => 0xff,
        }
    }

    /// A guest write of `port`.
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            0x20 => self.chips[0].write_command(value),
            0x21 => self.chips[0].write_data(value),
            0xa0 => self.chips[1].write_command(value),
            0xa1 => self.chips[1].write_data(value),
            // IRQs 0-2 and 8 (timer, keyboard, cascade, RTC) are always edge.
            0x4d0 => self.chips[0].elcr = value & 0xf8,
            0x4d1 => self.chips[1].elcr = value & 0xde,
            _ => {}
        }
        self.update_cascade();
    }
}

/// One of the PIC's port ranges on the port bus (0x20, 0xa0 or 0x4d0, two
/// ports each), all sharing the one pair.
pub struct PicPorts {
    /// The pair.
    pub pic: std::rc::Rc<std::cell::RefCell<Pic>>,
    /// The first port of this range.
    pub base: u16,
}

impl super::PortDevice for PicPorts {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        data[0] = self.pic.borrow_mut().read(self.base + offset);
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        self.pic.borrow_mut().write(self.base + offset, data[0]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_forwarding_pair_hands_on_line_changes_and_decides_nothing() {
        let mut pic = Pic::forwarding();
        pic.pulse_irq(4);
        pic.set_irq(9, true);
        pic.set_irq(16, true);
        assert!(!pic.interrupt_pending());
        assert_eq!(pic.take_forwarded(), [(4, true), (4, false), (9, true)]);
        assert!(pic.take_forwarded().is_empty());
        assert!(Pic::new().take_forwarded().is_empty());
    }

    #[test]
    fn a_pair_sharing_its_lines_forwards_them_and_still_interrupts() {
        let mut pic = Pic::sharing_lines();
        pic.write(0x20, 0x11);
        for icw in [0x20, 0x04, 0x01] {
            pic.write(0x21, icw);
        }
        pic.pulse_irq(1);
        assert_eq!(pic.take_forwarded(), [(1, true), (1, false)]);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x21));
    }

    use super::*;

    /// Linux's init_8259A(): ICW1-4 on both chips, vectors 0x30 and 0x38.
    fn linux_init() -> Pic {
        let mut pic = Pic::new();
        for (cmd, data, base, icw3) in [(0x20, 0x21, 0x30, 0x04), (0xa0, 0xa1, 0x38, 0x02)] {
            pic.write(cmd, 0x11); // ICW1: edge, cascade, ICW4 needed
            pic.write(data, base); // ICW2: vector base
            pic.write(data, icw3); // ICW3: cascade wiring
            pic.write(data, 0x01); // ICW4: 8086 mode, normal EOI
        }
        pic.write(0x21, 0xfb); // mask all but the cascade
        pic.write(0xa1, 0xff);
        pic
    }

    #[test]
    fn saved_state_restores_the_same_pic() {
        let mut pic = linux_init();
        pic.write(0x21, 0xfa); // IRQ0 unmasked
        pic.set_irq(0, true);
        let mut e = Enc::default();
        pic.save(&mut e);
        let mut back = Pic::new();
        let mut d = Dec::new(&e.0, "PIC");
        back.restore(&mut d).unwrap();
        d.end().unwrap();
        assert!(back.interrupt_pending());
        let vector = back.acknowledge();
        assert_eq!(vector, Some(0x30));
        assert_eq!(vector, pic.acknowledge());
        let mut short = Dec::new(&e.0[..5], "PIC");
        assert!(Pic::new().restore(&mut short).is_err());
    }

    #[test]
    fn masked_until_programmed() {
        let mut pic = Pic::new();
        pic.pulse_irq(4);
        assert!(!pic.interrupt_pending());
        assert_eq!(pic.read(0x21), 0xff);
    }

    #[test]
    fn init_sequence_programs_vectors_and_masks() {
        let mut pic = linux_init();
        assert_eq!(pic.read(0x21), 0xfb);
        assert_eq!(pic.read(0xa1), 0xff);
        pic.pulse_irq(0);
        assert!(!pic.interrupt_pending(), "IRQ0 is masked");
        pic.write(0x21, 0xfa); // unmask IRQ0: the latched request fires
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x30));
        assert!(!pic.interrupt_pending());
    }

    #[test]
    fn priority_and_eoi() {
        let mut pic = linux_init();
        pic.write(0x21, 0x00);
        pic.pulse_irq(4);
        pic.pulse_irq(1);
        assert_eq!(pic.acknowledge(), Some(0x31), "IRQ1 beats IRQ4");
        // IRQ4 waits while IRQ1 is in service (lower priority).
        assert!(!pic.interrupt_pending());
        pic.pulse_irq(0);
        assert_eq!(pic.acknowledge(), Some(0x30), "IRQ0 preempts IRQ1");
        pic.write(0x20, 0x20); // non-specific EOI: ends IRQ0
        assert!(!pic.interrupt_pending(), "IRQ1 still in service");
        pic.write(0x20, 0x61); // specific EOI for IRQ1
        assert_eq!(pic.acknowledge(), Some(0x34));
    }

    #[test]
    fn slave_interrupts_cascade_through_ir2() {
        let mut pic = linux_init();
        pic.write(0xa1, 0xef); // unmask IRQ12 (slave IR4)
        pic.pulse_irq(12);
        assert!(pic.interrupt_pending());
        assert_eq!(pic.acknowledge(), Some(0x3c));
        // Both chips have it in service until both get their EOI.
        pic.write(0x0a0, 0x0b); // OCW3: read ISR
        assert_eq!(pic.read(0xa0), 1 << 4);
        pic.write(0xa0, 0x20);
        pic.write(0x20, 0x20);
        pic.write(0x20, 0x0b);
        assert_eq!(pic.read(0x20), 0);
    }

    #[test]
    fn edge_versus_level() {
        let mut pic = linux_init();
        pic.write(0x21, 0x00);
        pic.set_irq(3, true);
        pic.set_irq(3, true); // no second edge
        assert_eq!(pic.acknowledge(), Some(0x33));
        pic.write(0x20, 0x20);
        assert!(!pic.interrupt_pending(), "one edge, one interrupt");

        pic.write(0x4d0, 0x20); // IRQ5 level-triggered
        assert_eq!(pic.read(0x4d0), 0x20);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), Some(0x35));
        pic.write(0x20, 0x20);
        assert!(pic.interrupt_pending(), "the line is still high");
        pic.set_irq(5, false);
        assert!(!pic.interrupt_pending());
    }

    #[test]
    fn auto_eoi_and_reads() {
        let mut pic = Pic::new();
        pic.write(0x20, 0x11);
        pic.write(0x21, 0x20);
        pic.write(0x21, 0x04);
        pic.write(0x21, 0x03); // ICW4 with auto-EOI
        pic.write(0x21, 0x00);
        pic.pulse_irq(6);
        pic.write(0x20, 0x0a); // OCW3: read IRR
        assert_eq!(pic.read(0x20), 1 << 6);
        assert_eq!(pic.acknowledge(), Some(0x26));
        pic.write(0x20, 0x0b);
        assert_eq!(pic.read(0x20), 0, "auto-EOI leaves nothing in service");
        assert_eq!(pic.read(0x99), 0xff);
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The Intel 8042 PS/2 keyboard controller at ports 0x60 (data) and 0x64
//! (status / command), with nothing plugged into its keyboard and mouse
//! ports.
//!
//! It is here for two reasons. A Linux guest probes it (drivers/input/serio/
//! i8042.c) and must learn quickly that no keyboard or mouse is attached;
//! and Linux reboots through it (arch/x86/kernel/reboot.c: `kb_wait()` polls
//! status bit 1 until the input buffer is empty, then writes 0xfe, "pulse
//! reset", to port 0x64), which this model reports to the VMM as a reset
//! request. Writing the output port (command 0xd1) with bit 0 clear also
//! asserts the CPU reset line.
//!
//! Commands execute at once, so the input buffer is never full. Replies go
//! to a one-byte output buffer, read by polling (status bit 0, then the
//! data port, as `i8042_command()` does) or on an interrupt: the IRQ1
//! (keyboard-side byte) and IRQ12 (auxiliary-side byte, status bit 5)
//! outputs are levels that follow "output buffer full", gated by the
//! command byte's enables (bits 0 and 1), so the edge-triggered PIC sees
//! one rising edge per byte. A byte sent to an absent device comes back as
//! a timeout: status bit 6 with 0xfe in the output buffer (the i8042 itself
//! times out sending to a non-existent device, i8042.h; `i8042_handle_mux()`
//! likewise turns timeouts into 0xfe). `i8042_handle_data()` passes the
//! byte on with `SERIO_TIMEOUT`, and libps2 fails the command at once
//! instead of waiting for its timeout: psmouse turns the flag into
//! `PS2_ERROR` (`psmouse_pre_receive_byte()`), atkbd takes 0xfe as a NAK
//! (`ps2_handle_ack()`). The A20 gate (output port bit 1) is kept but not
//! enforced. Sources: Linux's drivers/input/serio/i8042.c and i8042.h,
//! include/linux/i8042.h (the 8042's command, status and command byte
//! bits), libps2.c, atkbd.c, psmouse-base.c and arch/x86/kernel/reboot.c.

use std::cell::RefCell;
use std::rc::Rc;

use super::{pic::Pic, PortDevice};
use crate::snapshot::{Dec, Enc, FormatError};

/// The data port.
pub const DATA_PORT: u16 = 0x60;
/// The status (read) and command (write) port.
pub const COMMAND_PORT: u16 = 0x64;
/// The keyboard's interrupt line.
pub const KBD_IRQ: u8 = 1;
/// The auxiliary (mouse) port's interrupt line.
pub const AUX_IRQ: u8 = 12;

// Status register bits.
const STR_OBF: u8 = 0x01;
const STR_SYSFLAG: u8 = 0x04;
const STR_CMDDAT: u8 = 0x08;
const STR_KEYLOCK: u8 = 0x10; // set: the keyboard is not inhibited
const STR_AUXDATA: u8 = 0x20;
const STR_TIMEOUT: u8 = 0x40;

// Command byte (CTR) bits.
const CTR_KBDINT: u8 = 0x01;
const CTR_AUXINT: u8 = 0x02;
const CTR_SYSFLAG: u8 = 0x04;
const CTR_KBDDIS: u8 = 0x10;
const CTR_AUXDIS: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;

/// What a device answers when nobody clocks in the byte sent to it.
const NO_DEVICE: u8 = 0xfe;

/// Where the next data-port write goes: the keyboard, or the parameter of
/// command 0x60-0x7f (internal RAM byte n), 0xd1 (output port), 0xd2 / 0xd3
/// (output buffer, as from the keyboard / auxiliary device) or 0xd4
/// (auxiliary device).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Next {
    #[default]
    Keyboard,
    Ram(u8),
    OutputPort,
    KbdLoop,
    AuxLoop,
    Aux,
}

/// The controller.
pub struct I8042 {
    pic: Rc<RefCell<Pic>>,
    /// Internal RAM; byte 0 is the command byte (CTR).
    ram: [u8; 32],
    /// The output port: bit 0 is the CPU reset line (low: reset), bit 1 A20.
    output_port: u8,
    /// The output buffer: a byte and its status bits (AUXDATA, TIMEOUT).
    out: Option<(u8, u8)>,
    /// What the data port reads when the buffer is empty: the last byte.
    last: u8,
    next: Next,
    /// Status bit 3: the last write was to the command port.
    last_was_command: bool,
    sys_flag: bool,
    /// The levels last driven on IRQ1 and IRQ12.
    lines: (bool, bool),
    reset: bool,
}

impl I8042 {
    /// The state `rkvm run --save` keeps (crate::snapshot).
    pub fn save(&self, e: &mut Enc) {
        let (next, arg) = match self.next {
            Next::Keyboard => (0, 0),
            Next::Ram(i) => (1, i),
            Next::OutputPort => (2, 0),
            Next::KbdLoop => (3, 0),
            Next::AuxLoop => (4, 0),
            Next::Aux => (5, 0),
        };
        let (byte, bits) = self.out.unwrap_or((0, 0));
        e.bytes(&self.ram)
            .u8(self.output_port)
            .bool(self.out.is_some())
            .u8(byte)
            .u8(bits);
        e.u8(self.last)
            .u8(next)
            .u8(arg)
            .bool(self.last_was_command)
            .bool(self.sys_flag);
        e.bool(self.lines.0).bool(self.lines.1).bool(self.reset);
    }

    /// What [`I8042::save`] wrote.
    pub fn restore(&mut self, d: &mut Dec) -> Result<(), FormatError> {
        self.ram = d.array()?;
        self.output_port = d.u8()?;
        let full = d.bool()?;
        let (byte, bits) = (d.u8()?, d.u8()?);
        self.out = full.then_some((byte, bits));
        self.last = d.u8()?;
        let (next, arg) = (d.u8()?, d.u8()?);
        self.next = match next {
            0 => Next::Keyboard,
            1 => Next::Ram(arg),
            2 => Next::OutputPort,
            3 => Next::KbdLoop,
            4 => Next::AuxLoop,
            5 => Next::Aux,
            v => {
                return Err(FormatError::Bad {
                    tag: "8042".into(),
                    what: format!("state {v}"),
                })
            }
        };
        self.last_was_command = d.bool()?;
        self.sys_flag = d.bool()?;
        self.lines = (d.bool()?, d.bool()?);
        self.reset = d.bool()?;
        Ok(())
    }

    /// The controller as a BIOS leaves it: self test passed (system flag
    /// set), translation on, keyboard interrupt on, auxiliary port off.
    pub fn new(pic: Rc<RefCell<Pic>>) -> Self {
        let mut ram = [0; 32];
        ram[0] = CTR_XLATE | CTR_AUXDIS | CTR_SYSFLAG | CTR_KBDINT;
        I8042 {
            pic,
            ram,
            output_port: 0x03,
            out: None,
            last: 0,
            next: Next::Keyboard,
            last_was_command: false,
            sys_flag: true,
            lines: (false, false),
            reset: false,
        }
    }

    /// Whether the guest asked for a system reset (sticky).
    pub fn reset_requested(&self) -> bool {
        self.reset
    }

    fn ctr(&self) -> u8 {
        self.ram[0]
    }

    fn set_ctr(&mut self, value: u8) {
        self.ram[0] = value;
        self.sys_flag = value & CTR_SYSFLAG != 0;
    }

    fn status(&self) -> u8 {
        let buffer = self.out.map_or(0, |(_, flags)| STR_OBF | flags);
        STR_KEYLOCK
            | buffer
            | if self.sys_flag { STR_SYSFLAG } else { 0 }
            | if self.last_was_command { STR_CMDDAT } else { 0 }
    }

    /// Puts a byte in the output buffer (replacing one the guest never read).
    fn push(&mut self, byte: u8, flags: u8) {
        self.out = Some((byte, flags));
        self.last = byte;
    }

    fn command(&mut self, cmd: u8) {
        self.next = Next::Keyboard;
        let ctr = self.ctr();
        match cmd {
            0x20..=0x3f => {
                let byte = self.ram.get(usize::from(cmd & 0x1f)).copied().unwrap_or(0);
                self.push(byte, 0);
            }
            0x60..=0x7f => self.next = Next::Ram(cmd & 0x1f),
            0xa7 => self.set_ctr(ctr | CTR_AUXDIS),
            0xa8 => self.set_ctr(ctr & !CTR_AUXDIS),
            // Interface tests: 0 is "no error" (the lines idle high when
            // nothing is plugged in).
            0xa9 | 0xab => self.push(0x00, 0),
            0xaa => {
                self.sys_flag = true;
                self.push(0x55, 0);
            }
            0xad => self.set_ctr(ctr | CTR_KBDDIS),
            0xae => self.set_ctr(ctr & !CTR_KBDDIS),
            // Input port: bit 7 set, keyboard not inhibited.
            0xc0 => self.push(0x80, 0),
            0xd0 => self.push(self.output_port, 0),
            0xd1 => self.next = Next::OutputPort,
            0xd2 => self.next = Next::KbdLoop,
            0xd3 => self.next = Next::AuxLoop,
            0xd4 => self.next = Next::Aux,
            // Pulse low the output lines whose bits (0-3) are clear; line 0
            // is the CPU reset. Pulses of lines 1-3 alone do nothing here.
            0xf0..=0xfe if cmd & 1 == 0 => self.reset = true,
            _ => {} // unsupported commands are ignored
        }
    }

    fn data(&mut self, value: u8) {
        match std::mem::take(&mut self.next) {
            Next::Keyboard => self.push(NO_DEVICE, STR_TIMEOUT),
            Next::Aux => self.push(NO_DEVICE, STR_AUXDATA | STR_TIMEOUT),
            Next::Ram(0) => self.set_ctr(value),
            Next::Ram(n) => {
                if let Some(b) = self.ram.get_mut(usize::from(n)) {
                    *b = value;
                }
            }
            Next::OutputPort => {
                self.output_port = value;
                self.reset |= value & 1 == 0; // bit 0 low: CPU reset
            }
            Next::KbdLoop => self.push(value, 0),
            Next::AuxLoop => self.push(value, STR_AUXDATA),
        }
    }

    /// Drives IRQ1 and IRQ12 from the output buffer and the interrupt
    /// enables, telling the PIC only about changes.
    fn update_irqs(&mut self) {
        let ctr = self.ctr();
        let (kbd, aux) = match self.out {
            Some((_, flags)) if flags & STR_AUXDATA != 0 => (false, ctr & CTR_AUXINT != 0),
            Some(_) => (ctr & CTR_KBDINT != 0, false),
            None => (false, false),
        };
        if kbd != self.lines.0 {
            self.pic.borrow_mut().set_irq(KBD_IRQ, kbd);
        }
        if aux != self.lines.1 {
            self.pic.borrow_mut().set_irq(AUX_IRQ, aux);
        }
        self.lines = (kbd, aux);
    }

    /// A guest read of `port` (0x60 or 0x64).
    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            DATA_PORT => {
                let byte = self.out.take().map_or(self.last, |(byte, _)| byte);
                self.update_irqs();
                byte
            }
            COMMAND_PORT => self.status(),
            _ => 0xff,
        }
    }

    /// A guest write of `port` (0x60 or 0x64).
    pub fn write(&mut self, port: u16, value: u8) {
        match port {
            DATA_PORT => {
                self.last_was_command = false;
                self.data(value);
            }
            COMMAND_PORT => {
                self.last_was_command = true;
                self.command(value);
            }
            _ => return,
        }
        self.update_irqs();
    }
}

/// One of the controller's ports on the port bus (0x60 or 0x64, one port
/// each: 0x61-0x63 belong to other devices), both sharing the controller.
pub struct I8042Ports {
    /// The controller.
    pub dev: Rc<RefCell<I8042>>,
    /// The port: [`DATA_PORT`] or [`COMMAND_PORT`].
    pub base: u16,
}

impl PortDevice for I8042Ports {
    fn read(&mut self, offset: u16, data: &mut [u8]) {
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = self.dev.borrow_mut().read(self.base.wrapping_add(offset));
        }
    }

    fn write(&mut self, offset: u16, data: &[u8]) {
        if let Some(&b) = data.first() {
            self.dev
                .borrow_mut()
                .write(self.base.wrapping_add(offset), b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PIC programmed as Linux does (vectors 0x30 and 0x38), all unmasked.
    fn setup() -> (I8042, Rc<RefCell<Pic>>) {
        let pic = Rc::new(RefCell::new(Pic::new()));
        for (cmd, data, base, icw3) in [(0x20, 0x21, 0x30, 4), (0xa0, 0xa1, 0x38, 2)] {
            for (port, value) in [(cmd, 0x11), (data, base), (data, icw3), (data, 1)] {
                pic.borrow_mut().write(port, value);
            }
        }
        (I8042::new(pic.clone()), pic)
    }

    #[test]
    fn saved_state_restores_the_same_controller() {
        let (mut kbc, pic) = setup();
        command(&mut kbc, 0x60, &[0x47]); // write the command byte
        kbc.write(COMMAND_PORT, 0xd0); // read the output port: byte pending
        let mut e = Enc::default();
        kbc.save(&mut e);
        let mut back = I8042::new(pic);
        let mut d = Dec::new(&e.0, "8042");
        back.restore(&mut d).unwrap();
        d.end().unwrap();
        let mut again = Enc::default();
        back.save(&mut again);
        assert_eq!(again.0, e.0);
        assert_eq!(back.read(DATA_PORT), kbc.read(DATA_PORT));
    }

    /// Linux's i8042_command(): command, parameters, then poll and read.
    fn command(kbc: &mut I8042, cmd: u8, params: &[u8]) -> Option<u8> {
        assert_eq!(kbc.read(COMMAND_PORT) & 0x02, 0, "IBF clear");
        kbc.write(COMMAND_PORT, cmd);
        params.iter().for_each(|p| kbc.write(DATA_PORT, *p));
        (kbc.read(COMMAND_PORT) & STR_OBF != 0).then(|| kbc.read(DATA_PORT))
    }

    /// Acknowledges the interrupt and ends it on both chips.
    fn ack(pic: &Rc<RefCell<Pic>>) -> Option<u8> {
        let vector = pic.borrow_mut().acknowledge();
        pic.borrow_mut().write(0xa0, 0x20);
        pic.borrow_mut().write(0x20, 0x20);
        vector
    }

    #[test]
    fn self_test_and_status() {
        let (mut kbc, _) = setup();
        assert_eq!(command(&mut kbc, 0xaa, &[]), Some(0x55));
        let s = kbc.read(COMMAND_PORT);
        assert_eq!(s & (STR_SYSFLAG | STR_CMDDAT | STR_KEYLOCK), 0x1c);
        assert_eq!(s & STR_OBF, 0, "the output buffer is empty after the read");
        assert_eq!(command(&mut kbc, 0xab, &[]), Some(0));
        assert_eq!(command(&mut kbc, 0xa9, &[]), Some(0));
        kbc.write(DATA_PORT, 0xf4);
        assert_eq!(kbc.read(COMMAND_PORT) & STR_CMDDAT, 0);
    }

    #[test]
    fn ctr_round_trip_and_port_enables() {
        let (mut kbc, _) = setup();
        assert_eq!(command(&mut kbc, 0x60, &[0x47]), None);
        assert_eq!(command(&mut kbc, 0x20, &[]), Some(0x47));
        command(&mut kbc, 0xa7, &[]);
        command(&mut kbc, 0xad, &[]);
        assert_eq!(
            command(&mut kbc, 0x20, &[]),
            Some(0x47 | CTR_AUXDIS | CTR_KBDDIS)
        );
        command(&mut kbc, 0xa8, &[]);
        command(&mut kbc, 0xae, &[]);
        assert_eq!(command(&mut kbc, 0x20, &[]), Some(0x47));
        assert_eq!(command(&mut kbc, 0xd0, &[]), Some(0x03));
    }

    #[test]
    fn reset_paths() {
        for (cmd, params) in [(0xfe, &[][..]), (0xf0, &[]), (0xd1, &[0x02])] {
            let (mut kbc, _) = setup();
            assert!(!kbc.reset_requested());
            command(&mut kbc, cmd, params);
            assert!(kbc.reset_requested(), "{cmd:#x}");
        }
        let (mut kbc, _) = setup();
        command(&mut kbc, 0xff, &[]);
        command(&mut kbc, 0xd1, &[0x03]);
        assert!(!kbc.reset_requested());
    }

    #[test]
    fn kb_wait_then_reset_through_the_bus_ports() {
        let (kbc, _) = setup();
        let dev = Rc::new(RefCell::new(kbc));
        let mut status = I8042Ports {
            dev: dev.clone(),
            base: COMMAND_PORT,
        };
        let mut b = [0xaa; 2];
        status.read(0, &mut b);
        assert_eq!(b[0] & 0x02, 0, "kb_wait() sees the input buffer empty");
        assert_eq!(b[1], 0);
        status.write(0, &[0xfe]);
        status.write(0, &[]);
        assert!(dev.borrow().reset_requested());
    }

    #[test]
    fn absent_keyboard_times_out_with_irq1_when_enabled() {
        let (mut kbc, pic) = setup();
        kbc.write(DATA_PORT, 0xf2); // GET ID to the keyboard (KBDINT is on)
        assert_eq!(kbc.read(COMMAND_PORT) & 0x61, STR_TIMEOUT | STR_OBF);
        assert_eq!(ack(&pic), Some(0x31));
        assert_eq!(kbc.read(DATA_PORT), NO_DEVICE);
        assert_eq!(kbc.read(COMMAND_PORT) & STR_OBF, 0);
        command(&mut kbc, 0x60, &[0x64]); // interrupts off
        kbc.write(DATA_PORT, 0xf2);
        assert_eq!(kbc.read(COMMAND_PORT) & 0x61, STR_TIMEOUT | STR_OBF);
        assert_eq!(ack(&pic), None);
        assert_eq!(kbc.read(DATA_PORT), NO_DEVICE);
    }

    #[test]
    fn absent_mouse_times_out_on_the_aux_side() {
        let (mut kbc, pic) = setup();
        command(&mut kbc, 0x60, &[0x47]); // both interrupts on
        kbc.write(COMMAND_PORT, 0xd4);
        kbc.write(DATA_PORT, 0xff);
        assert_eq!(
            kbc.read(COMMAND_PORT) & 0x61,
            STR_TIMEOUT | STR_AUXDATA | STR_OBF
        );
        assert_eq!(ack(&pic), Some(0x3c));
        assert_eq!(kbc.read(DATA_PORT), NO_DEVICE);
    }

    #[test]
    fn aux_loopback_with_irq12() {
        let (mut kbc, pic) = setup();
        // Polled, AUX interrupt off (Linux's i8042_check_aux loop test).
        assert_eq!(command(&mut kbc, 0xd3, &[0x5a]), Some(0x5a));
        assert_eq!(ack(&pic), None);
        // The IRQ test: AUX port and interrupt on, then loop 0xa5.
        command(&mut kbc, 0x60, &[0x47]);
        kbc.write(COMMAND_PORT, 0xd3);
        kbc.write(DATA_PORT, 0xa5);
        assert_eq!(kbc.read(COMMAND_PORT) & 0x61, STR_AUXDATA | STR_OBF);
        assert_eq!(ack(&pic), Some(0x3c));
        assert_eq!(kbc.read(DATA_PORT), 0xa5);
        assert_eq!(kbc.read(COMMAND_PORT) & (STR_AUXDATA | STR_OBF), 0);
        // A mux probe's third byte comes back unchanged: no multiplexer.
        assert_eq!(command(&mut kbc, 0xd3, &[0xa4]), Some(0xa4));
        assert_eq!(ack(&pic), Some(0x3c));
        // Keyboard-side loopback raises IRQ1.
        assert_eq!(command(&mut kbc, 0xd2, &[0x1c]), Some(0x1c));
        assert_eq!(ack(&pic), Some(0x31));
    }
}

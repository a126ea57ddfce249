// SPDX-License-Identifier: GPL-2.0

//! The in-kernel 8259A pair of `KVM_CREATE_IRQCHIP` as KVM emulates it
//! (`arch/x86/kvm/i8259.c`): the master at ports 0x20-0x21 (IRQs 0-7), the
//! slave at 0xa0-0xa1 (IRQs 8-15) cascaded on the master's IR2, and the
//! PIIX's edge/level control registers (ELCR) at 0x4d0-0x4d1.
//!
//! # State
//!
//! Each chip's state is KVM's ABI, `struct kvm_pic_state` (`KVM_GET_IRQCHIP`
//! and `KVM_SET_IRQCHIP` with `chip_id` 0, the master, and 1, the slave):
//! [`PicState`] mirrors it field for field, with its byte image. KVM keeps
//! exactly these 16 bytes per chip (the head of its `struct kvm_kpic_state`)
//! and copies them out and in without a check; so does [`Pic`]. Flags such
//! as `poll` or `auto_eoi` are bytes, true when not zero, as in KVM.
//! Besides them the pair has its output line (INTR, which the LAPICs take
//! on LINT0 as ExtINT) and, per IRQ, the sources that assert its line.
//!
//! # What the glue does
//!
//! The glue keeps one [`Pic`] per VM under a spinlock and:
//! - routes the guest's port I/O to [`Pic::read`] and [`Pic::write`]
//!   (accesses that do not fit one of the three 2-port windows are not the
//!   PIC's, [`OutOfRange`]);
//! - drives the lines of GSIs routed to a PIC pin with [`Pic::set_irq`]
//!   (`KVM_IRQ_LINE`, irqfds, the PIT);
//! - for a vCPU whose LAPIC accepts PIC interrupts
//!   (`kvm_apic_accept_pic_intr()`: the APIC hardware-disabled, or LVT0
//!   unmasked in ExtINT mode), sees an external interrupt pending while
//!   [`Pic::output`] is set (`kvm_cpu_has_extint()`), and when the guest can
//!   take it runs the INTA cycle, [`Pic::read_irq`], for the vector to
//!   inject;
//! - acts on each [`Effect`]: after dropping the lock, calls the ack
//!   notifiers of every IRQ in [`Effect::acked`] (the PIT's reinjection,
//!   irqfd resamplers) and the mask notifiers of every IRQ in
//!   [`Effect::mask_changed`]; on [`Effect::wakeup`], requests an event on
//!   the first vCPU that accepts PIC interrupts and kicks it;
//! - implements `KVM_GET_IRQCHIP`/`KVM_SET_IRQCHIP` for chips 0 and 1 with
//!   [`Pic::state`] and [`Pic::set_state`].
//!
//! KVM calls the ack notifiers in the middle of an operation with the lock
//! dropped (the chip's registers already final), then recomputes the
//! output; here the output is recomputed first. A notifier that lowers a
//! line (an irqfd resampler) goes through [`Pic::set_irq`], which recomputes
//! it again, so the end state is KVM's; at worst a vCPU is kicked for an
//! interrupt that is gone when it looks.
//!
//! # Where KVM and the 8259A differ
//!
//! This file follows KVM:
//! - special mask mode (OCW3 bits 6:5) is recorded but not applied: an IRQ
//!   in service still blocks itself and every lower priority;
//! - ICW1's single mode and level-triggered mode bits are ignored (KVM logs
//!   them): ICW3 is always expected and triggering is per ELCR. ICW1 clears
//!   IMR (without firing mask notifiers), the edge detection, the edge
//!   requests in IRR (level ones stay), the rotation, special mask and read
//!   select, and with no ICW4 announced the ICW4 modes; if some vCPU
//!   accepts PIC interrupts, the dropped edge requests also lose their ISR
//!   bit and are acked (so that the PIT's reinjection does not wait for an
//!   EOI that cannot come). The vector base, the rest of ISR, the poll
//!   command and the output stay as they were;
//! - ICW4's microprocessor and buffered-mode bits are ignored: vectors are
//!   always 8086-style, the vector base plus the IRQ (ICW2 keeps bits 7:3,
//!   a base from `KVM_SET_IRQCHIP` is added as it is);
//! - a poll (OCW3 bit 2) answers 0x80 plus the IRQ, or 0x07 with nothing
//!   pending; it takes the IRQ out of IRR, level-triggered or not, and a
//!   poll of the slave also clears the master's IR2 in IRR and ISR;
//! - the INTA cycle with nothing pending answers the master's IRQ 7 (and
//!   with IR2 pending but nothing on the slave, the slave's IRQ 7), as the
//!   8259A does for a request that went away;
//! - the ELCR masks (0xf8 and 0xde: IRQs 0-2, 8 and 13 are always
//!   edge-triggered, as on the PIIX) are part of the state, and
//!   `KVM_SET_IRQCHIP` replaces them too.
//!
//! `struct kvm_pic_state` has no `isr_ack`: old KVMs had one after
//! `elcr_mask` in their private `struct kvm_kpic_state`, to batch ack
//! notifiers; it never was ABI, and current KVM has none.

/// IRQs of the pair (`PIC_NUM_PINS`).
pub const NUM_PINS: usize = 16;
/// Size of `struct kvm_pic_state`.
pub const STATE_SIZE: usize = 16;
/// The master's command port (ICW1, OCW2, OCW3; reads IRR or ISR).
pub const MASTER_COMMAND: u16 = 0x20;
/// The master's data port (ICW2-4, OCW1; reads IMR).
pub const MASTER_DATA: u16 = 0x21;
/// The slave's command port.
pub const SLAVE_COMMAND: u16 = 0xa0;
/// The slave's data port.
pub const SLAVE_DATA: u16 = 0xa1;
/// The master's ELCR (IRQs 0-7).
pub const ELCR_MASTER: u16 = 0x4d0;
/// The slave's ELCR (IRQs 8-15).
pub const ELCR_SLAVE: u16 = 0x4d1;
/// The master's ELCR bits a guest can set (`kvm_pic_init()`).
pub const MASTER_ELCR_MASK: u8 = 0xf8;
/// The slave's ELCR bits a guest can set.
pub const SLAVE_ELCR_MASK: u8 = 0xde;
/// The master's input the slave drives.
pub const CASCADE_IRQ: u8 = 2;
/// Bit 7 of a poll's answer: an interrupt was pending.
pub const POLL_PENDING: u8 = 0x80;
/// A poll's answer with nothing pending.
pub const POLL_NONE: u8 = 0x07;

/// One of the pair (`KVM_IRQCHIP_PIC_MASTER`, `KVM_IRQCHIP_PIC_SLAVE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chip {
    /// `chip_id` 0: IRQs 0-7.
    Master,
    /// `chip_id` 1: IRQs 8-15.
    Slave,
}

impl Chip {
    /// The chip of a `chip_id` (the IOAPIC's 2 and others are not).
    pub fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(Self::Master),
            1 => Some(Self::Slave),
            _ => None,
        }
    }

    /// Its first IRQ.
    fn irq_offset(self) -> u8 {
        match self {
            Self::Master => 0,
            Self::Slave => 8,
        }
    }
}

/// `struct kvm_pic_state`, field for field (`#[repr(C)]`, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PicState {
    /// The lines' levels as last seen (edge detection).
    pub last_irr: u8,
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// The rotation: IRQ `priority_add & 7` has the highest priority.
    pub priority_add: u8,
    /// The vector base (ICW2).
    pub irq_base: u8,
    /// OCW3: the command port reads ISR (else IRR).
    pub read_reg_select: u8,
    /// OCW3: the next read is a poll.
    pub poll: u8,
    /// OCW3: special mask mode (recorded only).
    pub special_mask: u8,
    /// The initialization command word expected next on the data port: 0
    /// none (OCW1), 1 ICW2, 2 ICW3, 3 ICW4; other values take no data.
    pub init_state: u8,
    /// ICW4: automatic EOI.
    pub auto_eoi: u8,
    /// OCW2: rotate on automatic EOI.
    pub rotate_on_auto_eoi: u8,
    /// ICW4: special fully nested mode (applies to the master).
    pub special_fully_nested_mode: u8,
    /// ICW1: an ICW4 follows.
    pub init4: u8,
    /// ELCR: level-triggered IRQs.
    pub elcr: u8,
    /// The ELCR bits a guest's write can set.
    pub elcr_mask: u8,
}

const _: () = assert!(core::mem::size_of::<PicState>() == STATE_SIZE);

impl PicState {
    /// The ioctl's byte image.
    pub fn to_bytes(self) -> [u8; STATE_SIZE] {
        [
            self.last_irr,
            self.irr,
            self.imr,
            self.isr,
            self.priority_add,
            self.irq_base,
            self.read_reg_select,
            self.poll,
            self.special_mask,
            self.init_state,
            self.auto_eoi,
            self.rotate_on_auto_eoi,
            self.special_fully_nested_mode,
            self.init4,
            self.elcr,
            self.elcr_mask,
        ]
    }

    /// The state in a byte image (`None`: fewer than [`STATE_SIZE`] bytes).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; STATE_SIZE] = bytes.get(..STATE_SIZE)?.try_into().ok()?;
        Some(Self {
            last_irr: b[0],
            irr: b[1],
            imr: b[2],
            isr: b[3],
            priority_add: b[4],
            irq_base: b[5],
            read_reg_select: b[6],
            poll: b[7],
            special_mask: b[8],
            init_state: b[9],
            auto_eoi: b[10],
            rotate_on_auto_eoi: b[11],
            special_fully_nested_mode: b[12],
            init4: b[13],
            elcr: b[14],
            elcr_mask: b[15],
        })
    }

    /// `get_priority()`: how far below the highest priority the first IRQ
    /// of `mask` is, 8 for none.
    fn priority(&self, mask: u8) -> u8 {
        (0..8)
            .find(|&p: &u8| mask & bit(p.wrapping_add(self.priority_add)) != 0)
            .unwrap_or(8)
    }

    /// `pic_get_irq()`: the IRQ this chip requests, if a request not masked
    /// has a higher priority than everything in service. On the master in
    /// special fully nested mode, IR2 in service does not count.
    fn request(&self, chip: Chip) -> Option<u8> {
        let priority = self.priority(self.irr & !self.imr);
        if priority == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_fully_nested_mode != 0 && chip == Chip::Master {
            in_service &= !bit(CASCADE_IRQ);
        }
        (priority < self.priority(in_service)).then(|| priority.wrapping_add(self.priority_add) & 7)
    }

    /// `pic_set_irq1()`: the line of `irq` is now `level`. Returns -1 if
    /// the IRQ is masked, else 0 if the request was already pending
    /// (coalesced), 1 if it is new or the line went low.
    fn set_line(&mut self, irq: u8, level: bool) -> i32 {
        let mask = bit(irq);
        let mut ret = 1;
        if self.elcr & mask != 0 {
            if level {
                ret = i32::from(self.irr & mask == 0);
                self.irr |= mask;
                self.last_irr |= mask;
            } else {
                self.irr &= !mask;
                self.last_irr &= !mask;
            }
        } else if level {
            if self.last_irr & mask == 0 {
                ret = i32::from(self.irr & mask == 0);
                self.irr |= mask;
            }
            self.last_irr |= mask;
        } else {
            self.last_irr &= !mask;
        }
        if self.imr & mask != 0 {
            -1
        } else {
            ret
        }
    }
}

/// The bit of IRQ `irq & 7` in a chip's register.
fn bit(irq: u8) -> u8 {
    1 << (irq & 7)
}

/// An access the PIC does not claim (KVM's `-EOPNOTSUPP`: the bus offers it
/// to the next device, or userspace gets it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange;

/// What an operation asks of the glue besides its result. IRQ sets are
/// 16 bits, bit `n` for IRQ `n` (8-15 on the slave).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effect {
    /// IRQs whose ISR bit was cleared (EOI, automatic EOI, poll, ICW1):
    /// call their ack notifiers (`kvm_notify_acked_irq()` for
    /// `KVM_IRQCHIP_PIC_MASTER`/`_SLAVE` and the pin).
    pub acked: u16,
    /// IRQs whose IMR bit a guest's OCW1 changed: call their mask notifiers
    /// (`kvm_fire_mask_notifiers()`; the PIT's resets its reinjection when
    /// IRQ 0 is unmasked).
    pub mask_changed: u16,
    /// The pair's IMR after the operation (master in bits 7:0).
    pub masked: u16,
    /// The output rose: request an event on the first vCPU that accepts
    /// PIC interrupts and kick it (`pic_unlock()`). KVM's code, before a
    /// 2023 fix proposed on its list, also asked for it when the output
    /// was low and stayed low, a kick for nothing.
    pub wakeup: bool,
}

/// The pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pic {
    master: PicState,
    slave: PicState,
    /// The master's INTR (`kvm_pic.output`).
    output: bool,
    /// The output rose during this operation (`wakeup_needed`).
    wakeup: bool,
    /// Per IRQ, the sources asserting its line (bit `n`: source `n`).
    line_sources: [u32; NUM_PINS],
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    /// The pair as `KVM_CREATE_IRQCHIP` makes it (`kvm_pic_init()`): every
    /// register zero, so IMR unmasks everything and the vector base is 0,
    /// and the ELCR masks [`MASTER_ELCR_MASK`] and [`SLAVE_ELCR_MASK`].
    pub fn new() -> Self {
        Self {
            master: PicState {
                elcr_mask: MASTER_ELCR_MASK,
                ..PicState::default()
            },
            slave: PicState {
                elcr_mask: SLAVE_ELCR_MASK,
                ..PicState::default()
            },
            output: false,
            wakeup: false,
            line_sources: [0; NUM_PINS],
        }
    }

    fn chip(&self, chip: Chip) -> &PicState {
        match chip {
            Chip::Master => &self.master,
            Chip::Slave => &self.slave,
        }
    }

    fn chip_mut(&mut self, chip: Chip) -> &mut PicState {
        match chip {
            Chip::Master => &mut self.master,
            Chip::Slave => &mut self.slave,
        }
    }

    /// The master's output, INTR (`kvm_pic.output`): an interrupt awaits
    /// its INTA cycle.
    pub fn output(&self) -> bool {
        self.output
    }

    /// Whether some source asserts the line of `irq`.
    pub fn line(&self, irq: usize) -> bool {
        self.line_sources.get(irq).is_some_and(|&s| s != 0)
    }

    /// `pic_update_irq()`: a request of the slave raises the master's IR2
    /// (a pulse: the master sees an edge, or a level that falls again at
    /// once), then the master's request sets the output.
    fn update(&mut self) {
        if self.slave.request(Chip::Slave).is_some() {
            self.master.set_line(CASCADE_IRQ, true);
            self.master.set_line(CASCADE_IRQ, false);
        }
        let level = self.master.request(Chip::Master).is_some();
        if level && !self.output {
            self.wakeup = true;
        }
        self.output = level;
    }

    /// `pic_clear_isr()`: ends `irq`'s service and notes the ack.
    fn clear_isr(&mut self, chip: Chip, irq: u8, fx: &mut Effect) {
        self.chip_mut(chip).isr &= !bit(irq);
        fx.acked |= 1 << ((irq & 7) + chip.irq_offset());
    }

    /// Completes an operation's [`Effect`].
    fn finish(&mut self, mut fx: Effect) -> Effect {
        fx.wakeup = core::mem::take(&mut self.wakeup);
        fx.masked = u16::from(self.master.imr) | (u16::from(self.slave.imr) << 8);
        fx
    }

    /// Source `source` drives the line of `irq` (0-15) to `level`
    /// (`kvm_pic_set_irq()`); the line is asserted while any source asserts
    /// it. Sources are those of [`super::ioapic::SOURCE_USERSPACE`] and its
    /// neighbours; one past 31 drives nothing.
    ///
    /// Returns what `KVM_IRQ_LINE_STATUS` reports for this chip: -1 if the
    /// IRQ is masked (its request is recorded all the same), 0 if the
    /// request was already pending (coalesced), else 1; -1 for an IRQ past
    /// 15. An edge-triggered IRQ requests when its line rises, a
    /// level-triggered one while its line is high.
    pub fn set_irq(&mut self, irq: usize, source: u32, level: bool) -> (i32, Effect) {
        let Some(sources) = self.line_sources.get_mut(irq) else {
            return (-1, Effect::default());
        };
        let sbit = 1u32.checked_shl(source).unwrap_or(0);
        if level {
            *sources |= sbit;
        } else {
            *sources &= !sbit;
        }
        let line = *sources != 0;
        let (chip, pin) = if irq < 8 {
            (Chip::Master, irq as u8)
        } else {
            (Chip::Slave, irq as u8 - 8)
        };
        let ret = self.chip_mut(chip).set_line(pin, line);
        self.update();
        (ret, self.finish(Effect::default()))
    }

    /// Drops source `source` from every line (`kvm_pic_clear_all()`, when
    /// the source is freed); the requests already made stay.
    pub fn clear_source(&mut self, source: u32) {
        let sbit = 1u32.checked_shl(source).unwrap_or(0);
        for s in &mut self.line_sources {
            *s &= !sbit;
        }
    }

    /// `pic_intack()`: `irq` goes in service; an edge request leaves IRR.
    fn intack(&mut self, chip: Chip, irq: u8, fx: &mut Effect) {
        let c = self.chip_mut(chip);
        c.isr |= bit(irq);
        if c.elcr & bit(irq) == 0 {
            c.irr &= !bit(irq);
        }
        if c.auto_eoi != 0 {
            if c.rotate_on_auto_eoi != 0 {
                c.priority_add = (irq + 1) & 7;
            }
            self.clear_isr(chip, irq, fx);
        }
    }

    /// The INTA cycle (`kvm_pic_read_irq()`): the vector of the
    /// highest-priority request, which goes in service (on both chips for a
    /// slave IRQ), or the spurious IRQ 7's vector of the master (nothing
    /// pending) or of the slave (IR2 pending but no request on the slave).
    /// The output is recomputed.
    pub fn read_irq(&mut self) -> (u8, Effect) {
        let mut fx = Effect::default();
        self.output = false;
        let vector = match self.master.request(Chip::Master) {
            Some(irq) => {
                self.intack(Chip::Master, irq, &mut fx);
                if irq == CASCADE_IRQ {
                    let irq2 = match self.slave.request(Chip::Slave) {
                        Some(irq2) => {
                            self.intack(Chip::Slave, irq2, &mut fx);
                            irq2
                        }
                        None => 7,
                    };
                    self.slave.irq_base.wrapping_add(irq2)
                } else {
                    self.master.irq_base.wrapping_add(irq)
                }
            }
            None => self.master.irq_base.wrapping_add(7),
        };
        self.update();
        (vector, self.finish(fx))
    }

    /// Whether an access of `len` bytes at `port` is the PIC's: it must fit
    /// one of the 2-port windows KVM registers on its I/O bus.
    pub fn in_range(port: u16, len: usize) -> bool {
        let end = usize::from(port).saturating_add(len);
        [MASTER_COMMAND, SLAVE_COMMAND, ELCR_MASTER]
            .iter()
            .any(|&base| port >= base && end <= usize::from(base) + 2)
    }

    /// A guest's read of `len` bytes at `port` (`picdev_read()`): the first
    /// byte's value, the others zero. A read of other than 1 byte returns
    /// zero (KVM logs it). Command ports: a poll if one was asked for, else
    /// IRR or ISR as OCW3 selected; data ports: IMR; ELCR ports: the ELCR.
    pub fn read(&mut self, port: u16, len: usize) -> Result<(u8, Effect), OutOfRange> {
        if !Self::in_range(port, len) {
            return Err(OutOfRange);
        }
        if len != 1 {
            return Ok((0, Effect::default()));
        }
        let mut fx = Effect::default();
        let value = match port {
            MASTER_COMMAND | MASTER_DATA => self.ioport_read(Chip::Master, port, &mut fx),
            SLAVE_COMMAND | SLAVE_DATA => self.ioport_read(Chip::Slave, port, &mut fx),
            ELCR_MASTER => self.master.elcr,
            _ => self.slave.elcr,
        };
        Ok((value, self.finish(fx)))
    }

    /// `pic_ioport_read()`.
    fn ioport_read(&mut self, chip: Chip, port: u16, fx: &mut Effect) -> u8 {
        let c = self.chip_mut(chip);
        if c.poll != 0 {
            let value = self.poll(chip, fx);
            self.chip_mut(chip).poll = 0;
            value
        } else if port & 1 != 0 {
            c.imr
        } else if c.read_reg_select != 0 {
            c.isr
        } else {
            c.irr
        }
    }

    /// `pic_poll_read()`: the poll word, and the polled IRQ leaves IRR and
    /// ISR without an INTA cycle.
    fn poll(&mut self, chip: Chip, fx: &mut Effect) -> u8 {
        let Some(irq) = self.chip(chip).request(chip) else {
            self.update();
            return POLL_NONE;
        };
        if chip == Chip::Slave {
            self.master.isr &= !bit(CASCADE_IRQ);
            self.master.irr &= !bit(CASCADE_IRQ);
        }
        self.chip_mut(chip).irr &= !bit(irq);
        self.clear_isr(chip, irq, fx);
        if chip == Chip::Slave || irq != CASCADE_IRQ {
            self.update();
        }
        POLL_PENDING | irq
    }

    /// A guest's write of `data` at `port` (`picdev_write()`); a write of
    /// other than 1 byte is dropped (KVM logs it).
    ///
    /// `pic_intr_accepted` says whether some vCPU accepts PIC interrupts
    /// (`kvm_apic_accept_pic_intr()`); only ICW1 looks at it.
    ///
    /// Command ports: ICW1 (bit 4), OCW3 (bit 3: poll, read select, special
    /// mask), else OCW2 (bits 7:5: 0/4 rotation on automatic EOI off/on, 1
    /// non-specific EOI, 3 specific EOI of bits 2:0, 5 non-specific EOI and
    /// rotate, 6 set the lowest priority to bits 2:0, 7 specific EOI and
    /// rotate, 2 nothing). Data ports: the ICW the initialization expects,
    /// else OCW1 (IMR). ELCR ports: the ELCR, within its mask.
    pub fn write(
        &mut self,
        port: u16,
        data: &[u8],
        pic_intr_accepted: bool,
    ) -> Result<Effect, OutOfRange> {
        if !Self::in_range(port, data.len()) {
            return Err(OutOfRange);
        }
        let [value] = *data else {
            return Ok(Effect::default());
        };
        let mut fx = Effect::default();
        match port {
            MASTER_COMMAND | SLAVE_COMMAND | MASTER_DATA | SLAVE_DATA => {
                let chip = if port & 0x80 == 0 {
                    Chip::Master
                } else {
                    Chip::Slave
                };
                if port & 1 == 0 {
                    self.write_command(chip, value, pic_intr_accepted, &mut fx);
                } else {
                    self.write_data(chip, value, &mut fx);
                }
            }
            ELCR_MASTER => self.master.elcr = value & self.master.elcr_mask,
            _ => self.slave.elcr = value & self.slave.elcr_mask,
        }
        Ok(self.finish(fx))
    }

    fn write_command(&mut self, chip: Chip, value: u8, pic_intr_accepted: bool, fx: &mut Effect) {
        if value & 0x10 != 0 {
            self.icw1(chip, value, pic_intr_accepted, fx);
        } else if value & 0x08 != 0 {
            // OCW3.
            let c = self.chip_mut(chip);
            if value & 0x04 != 0 {
                c.poll = 1;
            }
            if value & 0x02 != 0 {
                c.read_reg_select = value & 1;
            }
            if value & 0x40 != 0 {
                c.special_mask = (value >> 5) & 1;
            }
        } else {
            self.ocw2(chip, value, fx);
        }
    }

    /// ICW1 (`kvm_pic_reset()`); the output is not recomputed.
    fn icw1(&mut self, chip: Chip, value: u8, pic_intr_accepted: bool, fx: &mut Effect) {
        let c = self.chip_mut(chip);
        c.init4 = value & 1;
        let edge_irr = c.irr & !c.elcr;
        c.last_irr = 0;
        c.irr &= c.elcr;
        c.imr = 0;
        c.priority_add = 0;
        c.special_mask = 0;
        c.read_reg_select = 0;
        if c.init4 == 0 {
            c.special_fully_nested_mode = 0;
            c.auto_eoi = 0;
        }
        c.init_state = 1;
        if pic_intr_accepted {
            for irq in (0..8).filter(|&i| edge_irr & bit(i) != 0) {
                self.clear_isr(chip, irq, fx);
            }
        }
    }

    /// OCW2.
    fn ocw2(&mut self, chip: Chip, value: u8, fx: &mut Effect) {
        let cmd = value >> 5;
        match cmd {
            0 | 4 => self.chip_mut(chip).rotate_on_auto_eoi = cmd >> 2,
            1 | 5 => {
                let c = self.chip(chip);
                let priority = c.priority(c.isr);
                if priority != 8 {
                    let irq = priority.wrapping_add(c.priority_add) & 7;
                    if cmd == 5 {
                        self.chip_mut(chip).priority_add = (irq + 1) & 7;
                    }
                    self.clear_isr(chip, irq, fx);
                    self.update();
                }
            }
            3 => {
                self.clear_isr(chip, value & 7, fx);
                self.update();
            }
            6 => {
                self.chip_mut(chip).priority_add = value.wrapping_add(1) & 7;
                self.update();
            }
            7 => {
                let irq = value & 7;
                self.chip_mut(chip).priority_add = (irq + 1) & 7;
                self.clear_isr(chip, irq, fx);
                self.update();
            }
            _ => {}
        }
    }

    /// A write of the data port: the ICW expected, or OCW1.
    fn write_data(&mut self, chip: Chip, value: u8, fx: &mut Effect) {
        let c = self.chip_mut(chip);
        match c.init_state {
            0 => {
                let changed = c.imr ^ value;
                c.imr = value;
                fx.mask_changed |= u16::from(changed) << chip.irq_offset();
                self.update();
            }
            1 => {
                c.irq_base = value & 0xf8;
                c.init_state = 2;
            }
            2 => c.init_state = if c.init4 != 0 { 3 } else { 0 },
            3 => {
                c.special_fully_nested_mode = (value >> 4) & 1;
                c.auto_eoi = (value >> 1) & 1;
                c.init_state = 0;
            }
            _ => {}
        }
    }

    /// `KVM_GET_IRQCHIP` of `chip`: its 16 bytes as they are.
    pub fn state(&self, chip: Chip) -> PicState {
        *self.chip(chip)
    }

    /// `KVM_SET_IRQCHIP` of `chip`: takes the 16 bytes as they are (KVM
    /// checks none; the ELCR mask too), then recomputes the output.
    pub fn set_state(&mut self, chip: Chip, state: &PicState) -> Effect {
        *self.chip_mut(chip) = *state;
        self.update();
        self.finish(Effect::default())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ioapic::{
        SOURCE_IRQFD_RESAMPLE,
        SOURCE_PIT,
        SOURCE_USERSPACE, //
    };
    use super::*;

    fn out(pic: &mut Pic, port: u16, value: u8) -> Effect {
        pic.write(port, &[value], true).unwrap()
    }

    fn inb(pic: &mut Pic, port: u16) -> u8 {
        pic.read(port, 1).unwrap().0
    }

    fn set(pic: &mut Pic, irq: usize, level: bool) -> i32 {
        pic.set_irq(irq, SOURCE_USERSPACE, level).0
    }

    fn pulse(pic: &mut Pic, irq: usize) -> i32 {
        let r = set(pic, irq, true);
        set(pic, irq, false);
        r
    }

    fn inta(pic: &mut Pic) -> u8 {
        pic.read_irq().0
    }

    /// Linux's `init_8259A()` (no automatic EOI) and its mask restore: vectors
    /// 0x30 and 0x38, everything masked but the cascade.
    fn linux() -> Pic {
        let mut pic = Pic::new();
        out(&mut pic, 0x21, 0xff);
        for (cmd, data, base, icw3) in [(0x20, 0x21, 0x30, 0x04), (0xa0, 0xa1, 0x38, 0x02)] {
            out(&mut pic, cmd, 0x11);
            out(&mut pic, data, base);
            out(&mut pic, data, icw3);
            out(&mut pic, data, 0x01);
        }
        out(&mut pic, 0x21, 0xfb);
        out(&mut pic, 0xa1, 0xff);
        pic
    }

    /// SeaBIOS's `pic_reset(0x08, 0x70)` and the PIIX ELCR it programs for
    /// PCI IRQs 10 and 11.
    fn seabios() -> Pic {
        let mut pic = Pic::new();
        out(&mut pic, 0x20, 0x11);
        out(&mut pic, 0xa0, 0x11);
        out(&mut pic, 0x21, 0x08);
        out(&mut pic, 0xa1, 0x70);
        out(&mut pic, 0x21, 0x04);
        out(&mut pic, 0xa1, 0x02);
        out(&mut pic, 0x21, 0x01);
        out(&mut pic, 0xa1, 0x01);
        out(&mut pic, 0x21, 0xfb);
        out(&mut pic, 0xa1, 0xff);
        out(&mut pic, 0x4d0, 0x00);
        out(&mut pic, 0x4d1, 0x0c);
        pic
    }

    #[test]
    fn create_irqchip_state() {
        let pic = Pic::new();
        let m = pic.state(Chip::Master);
        assert_eq!(
            m.to_bytes(),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf8]
        );
        assert_eq!(pic.state(Chip::Slave).elcr_mask, 0xde);
        assert!(!pic.output());
        assert_eq!(Pic::default(), pic);
        assert_eq!(Chip::from_id(0), Some(Chip::Master));
        assert_eq!(Chip::from_id(1), Some(Chip::Slave));
        assert_eq!(Chip::from_id(2), None);
        // Unprogrammed, everything is unmasked with vector base 0.
        let mut pic = Pic::new();
        assert_eq!(pulse(&mut pic, 5), 1);
        assert!(pic.output());
        assert_eq!(inta(&mut pic), 0x05);
    }

    #[test]
    fn linux_init_sequence() {
        let mut pic = linux();
        let m = pic.state(Chip::Master);
        assert_eq!(
            (m.irq_base, m.imr, m.init_state, m.init4),
            (0x30, 0xfb, 0, 1)
        );
        assert_eq!((m.auto_eoi, m.special_fully_nested_mode), (0, 0));
        let s = pic.state(Chip::Slave);
        assert_eq!((s.irq_base, s.imr, s.init_state), (0x38, 0xff, 0));
        // probe_8259A(): the mask reads back.
        assert_eq!(inb(&mut pic, 0x21), 0xfb);
        assert_eq!(inb(&mut pic, 0xa1), 0xff);
        // The timer, masked: recorded, reported -1, no output.
        assert_eq!(pulse(&mut pic, 0), -1);
        assert!(!pic.output());
        let fx = out(&mut pic, 0x21, 0xfa);
        assert_eq!((fx.mask_changed, fx.masked), (1, 0xff_fa));
        assert!(fx.wakeup);
        assert_eq!(inta(&mut pic), 0x30);
        assert!(!pic.output());
        // mask_and_ack_8259A(): specific EOI.
        let fx = out(&mut pic, 0x20, 0x60);
        assert_eq!(fx.acked, 1);
        assert_eq!(pic.state(Chip::Master).isr, 0);
    }

    #[test]
    fn seabios_init_and_level_irq_through_cascade() {
        let mut pic = seabios();
        assert_eq!(inb(&mut pic, 0x4d0), 0);
        assert_eq!(inb(&mut pic, 0x4d1), 0x0c);
        out(&mut pic, 0xa1, 0xf3);
        // IRQ 10 is level-triggered: the request follows the line.
        assert_eq!(set(&mut pic, 10, true), 1);
        assert_eq!(set(&mut pic, 10, true), 0);
        assert!(pic.output());
        assert_eq!(inta(&mut pic), 0x72);
        assert_eq!(pic.state(Chip::Slave).isr, 1 << 2);
        assert_eq!(pic.state(Chip::Master).isr, 1 << 2);
        // Still requested (level), but in service: no output.
        assert_eq!(pic.state(Chip::Slave).irr, 1 << 2);
        assert!(!pic.output());
        // SeaBIOS's pic_eoi2(): slave then master.
        let fx = out(&mut pic, 0xa0, 0x20);
        assert_eq!(fx.acked, 1 << 10);
        assert!(!pic.output(), "the master's IR2 is still in service");
        let fx = out(&mut pic, 0x20, 0x20);
        assert_eq!(fx.acked, 1 << 2);
        assert!(fx.wakeup, "the line is still high");
        assert_eq!(inta(&mut pic), 0x72);
        set(&mut pic, 10, false);
        out(&mut pic, 0xa0, 0x20);
        out(&mut pic, 0x20, 0x20);
        assert!(!pic.output());
        assert_eq!(pic.state(Chip::Slave).irr, 0);
        // IRQ 11 waits while 10 is in service, then goes.
        set(&mut pic, 10, true);
        set(&mut pic, 11, true);
        assert_eq!(inta(&mut pic), 0x72);
        set(&mut pic, 10, false);
        out(&mut pic, 0xa0, 0x20);
        out(&mut pic, 0x20, 0x20);
        assert_eq!(inta(&mut pic), 0x73);
    }

    #[test]
    fn priorities_and_nested_eoi() {
        let mut pic = linux();
        out(&mut pic, 0x21, 0x00);
        pulse(&mut pic, 4);
        pulse(&mut pic, 1);
        assert_eq!(inta(&mut pic), 0x31, "IRQ 1 beats IRQ 4");
        assert!(!pic.output(), "IRQ 4 waits for IRQ 1");
        pulse(&mut pic, 0);
        assert!(pic.output(), "IRQ 0 preempts IRQ 1");
        assert_eq!(inta(&mut pic), 0x30);
        assert_eq!(pic.state(Chip::Master).isr, 0b11);
        // A non-specific EOI ends the highest priority in service.
        let fx = out(&mut pic, 0x20, 0x20);
        assert_eq!(fx.acked, 1);
        assert!(!pic.output());
        // Specific EOI of IRQ 1; IRQ 4 then goes.
        let fx = out(&mut pic, 0x20, 0x61);
        assert_eq!(fx.acked, 1 << 1);
        assert!(fx.wakeup);
        assert_eq!(inta(&mut pic), 0x34);
        // A non-specific EOI with nothing in service acks nothing.
        out(&mut pic, 0x20, 0x20);
        assert_eq!(out(&mut pic, 0x20, 0x20).acked, 0);
        // A specific EOI acks even an IRQ not in service.
        assert_eq!(out(&mut pic, 0x20, 0x67).acked, 1 << 7);
        // OCW2 command 2 does nothing.
        assert_eq!(
            out(&mut pic, 0x20, 0x40),
            Effect {
                masked: 0xff00,
                ..Effect::default()
            }
        );
    }

    #[test]
    fn set_irq_status() {
        let mut pic = linux();
        out(&mut pic, 0x21, 0xf8);
        assert_eq!(set(&mut pic, 1, true), 1);
        // Held high: no new edge, and the request is pending anyway.
        assert_eq!(set(&mut pic, 1, true), 1);
        assert_eq!(set(&mut pic, 1, false), 1);
        // A new edge while the request is pending: coalesced.
        assert_eq!(set(&mut pic, 1, true), 0);
        set(&mut pic, 1, false);
        assert_eq!(inta(&mut pic), 0x31);
        // Masked IRQ: -1, but the request is in IRR.
        assert_eq!(set(&mut pic, 5, true), -1);
        assert_eq!(pic.state(Chip::Master).irr, 1 << 5);
        // IRQs past 15.
        assert_eq!(pic.set_irq(16, 0, true), (-1, Effect::default()));
    }

    #[test]
    fn line_sources_are_ored() {
        let mut pic = seabios();
        out(&mut pic, 0xa1, 0xf3);
        pic.set_irq(11, SOURCE_USERSPACE, true);
        pic.set_irq(11, SOURCE_IRQFD_RESAMPLE, true);
        pic.set_irq(11, SOURCE_USERSPACE, false);
        assert!(pic.line(11));
        assert_eq!(pic.state(Chip::Slave).irr, 1 << 3);
        pic.set_irq(11, SOURCE_IRQFD_RESAMPLE, false);
        assert!(!pic.line(11));
        assert_eq!(pic.state(Chip::Slave).irr, 0);
        // Freeing a source drops its assertions, not the requests.
        out(&mut pic, 0x21, 0xfa);
        pic.set_irq(0, SOURCE_PIT, true);
        pic.clear_source(SOURCE_PIT);
        assert!(!pic.line(0));
        assert_eq!(pic.state(Chip::Master).irr & 1, 1);
        // Sources past 31 drive nothing.
        pic.set_irq(3, 32, true);
        assert!(!pic.line(3));
        assert!(!pic.line(99));
    }

    #[test]
    fn edge_irr_cleared_by_inta_level_kept() {
        let mut pic = seabios();
        out(&mut pic, 0x21, 0x00);
        out(&mut pic, 0x4d0, 0x20);
        pulse(&mut pic, 3);
        set(&mut pic, 5, true);
        assert_eq!(pic.state(Chip::Master).irr, (1 << 3) | (1 << 5));
        assert_eq!(inta(&mut pic), 0x0b);
        assert_eq!(pic.state(Chip::Master).irr, 1 << 5);
        out(&mut pic, 0x20, 0x20);
        assert_eq!(inta(&mut pic), 0x0d);
        assert_eq!(pic.state(Chip::Master).irr, 1 << 5);
        out(&mut pic, 0x20, 0x20);
        assert!(pic.output());
        set(&mut pic, 5, false);
        assert!(!pic.output());
        // An edge line held high gives one interrupt.
        set(&mut pic, 6, true);
        assert_eq!(inta(&mut pic), 0x0e);
        out(&mut pic, 0x20, 0x20);
        set(&mut pic, 6, true);
        assert!(!pic.output());
    }

    #[test]
    fn elcr_masks() {
        let mut pic = Pic::new();
        out(&mut pic, 0x4d0, 0xff);
        out(&mut pic, 0x4d1, 0xff);
        assert_eq!(inb(&mut pic, 0x4d0), 0xf8);
        assert_eq!(inb(&mut pic, 0x4d1), 0xde);
        // A mask from KVM_SET_IRQCHIP applies to the guest's next writes.
        let mut s = pic.state(Chip::Master);
        s.elcr_mask = 0xff;
        pic.set_state(Chip::Master, &s);
        out(&mut pic, 0x4d0, 0x07);
        assert_eq!(inb(&mut pic, 0x4d0), 0x07);
    }

    #[test]
    fn inta_through_cascade_and_spurious() {
        let mut pic = linux();
        out(&mut pic, 0xa1, 0xef);
        pulse(&mut pic, 12);
        assert!(pic.output());
        assert_eq!(inta(&mut pic), 0x3c);
        assert_eq!(pic.state(Chip::Master).isr, 1 << 2);
        assert_eq!(pic.state(Chip::Slave).isr, 1 << 4);
        assert_eq!(pic.state(Chip::Master).irr, 0);
        out(&mut pic, 0xa0, 0x64);
        out(&mut pic, 0x20, 0x62);
        // Nothing pending: the master's IRQ 7, nothing goes in service.
        assert_eq!(inta(&mut pic), 0x37);
        assert_eq!(pic.state(Chip::Master).isr, 0);
        // IR2 requested, but the slave's request is gone by INTA (a level
        // IRQ that fell): the slave's IRQ 7; the master has IR2 in service.
        let mut s = pic.state(Chip::Slave);
        s.elcr = 1 << 3;
        pic.set_state(Chip::Slave, &s);
        out(&mut pic, 0xa1, 0xf7);
        set(&mut pic, 11, true);
        assert_eq!(pic.state(Chip::Master).irr, 1 << 2);
        let mut s = pic.state(Chip::Slave);
        s.irr = 0;
        pic.set_state(Chip::Slave, &s);
        assert!(pic.output(), "the master's IR2 edge stays");
        assert_eq!(inta(&mut pic), 0x3f);
        assert_eq!(pic.state(Chip::Master).isr, 1 << 2);
        assert_eq!(pic.state(Chip::Slave).isr, 0);
        // A vector base from userspace is added, and wraps.
        let mut m = pic.state(Chip::Master);
        m.irq_base = 0xfd;
        m.isr = 0;
        pic.set_state(Chip::Master, &m);
        out(&mut pic, 0x21, 0xf7);
        pulse(&mut pic, 3);
        assert_eq!(inta(&mut pic), 0x00);
    }

    #[test]
    fn output_and_wakeup() {
        let mut pic = linux();
        let (_, fx) = pic.set_irq(1, 0, true);
        assert!(!fx.wakeup, "masked");
        let fx = out(&mut pic, 0x21, 0xf9);
        assert!(fx.wakeup && pic.output());
        // Already high: no second wakeup.
        let (_, fx) = pic.set_irq(3, 0, true);
        assert!(!fx.wakeup);
        // INTA lowers the output; the next request raises it again.
        let (v, fx) = pic.read_irq();
        assert_eq!(v, 0x31);
        assert!(!fx.wakeup && !pic.output());
        out(&mut pic, 0x21, 0xf1);
        assert!(!pic.output(), "IRQ 3 waits for IRQ 1");
        let fx = out(&mut pic, 0x20, 0x20);
        assert!(fx.wakeup && pic.output());
        // A state without requests lowers it.
        let s = Pic::new().state(Chip::Master);
        let fx = pic.set_state(Chip::Master, &s);
        assert!(!fx.wakeup && !pic.output());
    }

    #[test]
    fn auto_eoi_and_rotation() {
        let mut pic = Pic::new();
        out(&mut pic, 0x20, 0x11);
        out(&mut pic, 0x21, 0x20);
        out(&mut pic, 0x21, 0x04);
        out(&mut pic, 0x21, 0x03);
        assert_eq!(pic.state(Chip::Master).auto_eoi, 1);
        out(&mut pic, 0x21, 0x00);
        pulse(&mut pic, 6);
        let (v, fx) = pic.read_irq();
        assert_eq!((v, fx.acked), (0x26, 1 << 6));
        assert_eq!(pic.state(Chip::Master).isr, 0);
        // Rotate on automatic EOI: the IRQ taken becomes the lowest.
        out(&mut pic, 0x20, 0x80);
        assert_eq!(pic.state(Chip::Master).rotate_on_auto_eoi, 1);
        pulse(&mut pic, 1);
        assert_eq!(inta(&mut pic), 0x21);
        assert_eq!(pic.state(Chip::Master).priority_add, 2);
        pulse(&mut pic, 1);
        pulse(&mut pic, 4);
        assert_eq!(inta(&mut pic), 0x24, "IRQ 1 is now the lowest");
        assert_eq!(inta(&mut pic), 0x21);
        out(&mut pic, 0x20, 0x00);
        assert_eq!(pic.state(Chip::Master).rotate_on_auto_eoi, 0);
        // ICW1 without ICW4 clears the ICW4 modes.
        out(&mut pic, 0x20, 0x10);
        assert_eq!(pic.state(Chip::Master).auto_eoi, 0);
    }

    #[test]
    fn rotate_and_set_priority() {
        let mut pic = linux();
        out(&mut pic, 0x21, 0x00);
        // OCW2 6: IRQ 4 the lowest, so 5 the highest.
        out(&mut pic, 0x20, 0xc4);
        assert_eq!(pic.state(Chip::Master).priority_add, 5);
        pulse(&mut pic, 0);
        pulse(&mut pic, 6);
        assert_eq!(inta(&mut pic), 0x36);
        assert!(!pic.output(), "IRQ 0 now ranks below 6, in service");
        assert_eq!(pic.state(Chip::Master).isr, 1 << 6);
        // Rotate on non-specific EOI: 6 ends and becomes the lowest.
        let fx = out(&mut pic, 0x20, 0xa0);
        assert_eq!(fx.acked, 1 << 6);
        assert_eq!(pic.state(Chip::Master).priority_add, 7);
        assert_eq!(inta(&mut pic), 0x30);
        // Rotate on specific EOI.
        let fx = out(&mut pic, 0x20, 0xe0);
        assert_eq!(fx.acked, 1);
        assert_eq!(pic.state(Chip::Master).priority_add, 1);
        pulse(&mut pic, 0);
        pulse(&mut pic, 7);
        assert_eq!(inta(&mut pic), 0x37);
    }

    #[test]
    fn special_fully_nested_mode() {
        let mut pic = Pic::new();
        for (cmd, data, base, icw3, icw4) in
            [(0x20, 0x21, 0x30, 4, 0x11), (0xa0, 0xa1, 0x38, 2, 0x01)]
        {
            out(&mut pic, cmd, 0x11);
            out(&mut pic, data, base);
            out(&mut pic, data, icw3);
            out(&mut pic, data, icw4);
        }
        assert_eq!(pic.state(Chip::Master).special_fully_nested_mode, 1);
        pulse(&mut pic, 13);
        assert_eq!(inta(&mut pic), 0x3d);
        // A slave IRQ of higher priority gets through IR2 in service.
        pulse(&mut pic, 9);
        assert!(pic.output());
        assert_eq!(inta(&mut pic), 0x39);
        assert_eq!(pic.state(Chip::Slave).isr, (1 << 1) | (1 << 5));
        // Without it, IR2 in service blocks the slave.
        let mut m = pic.state(Chip::Master);
        m.special_fully_nested_mode = 0;
        pic.set_state(Chip::Master, &m);
        out(&mut pic, 0xa0, 0x20);
        pulse(&mut pic, 8);
        assert!(!pic.output());
    }

    #[test]
    fn poll_mode() {
        let mut pic = linux();
        out(&mut pic, 0x21, 0x00);
        out(&mut pic, 0xa1, 0x00);
        pulse(&mut pic, 5);
        out(&mut pic, 0x20, 0x0c);
        let (v, fx) = pic.read(0x20, 1).unwrap();
        assert_eq!((v, fx.acked), (0x85, 1 << 5));
        let m = pic.state(Chip::Master);
        assert_eq!((m.irr, m.isr, m.poll), (0, 0, 0));
        assert!(!pic.output());
        // Nothing pending: 0x07. A poll reads either port.
        out(&mut pic, 0x20, 0x0c);
        assert_eq!(inb(&mut pic, 0x21), 0x07);
        assert_eq!(inb(&mut pic, 0x21), 0x00, "IMR again");
        // A level IRQ leaves IRR too.
        out(&mut pic, 0x4d0, 0x10);
        set(&mut pic, 4, true);
        out(&mut pic, 0x20, 0x0c);
        assert_eq!(inb(&mut pic, 0x20), 0x84);
        assert_eq!(pic.state(Chip::Master).irr, 0);
        set(&mut pic, 4, false);
        // Polling the slave clears the master's IR2.
        pulse(&mut pic, 14);
        assert_eq!(pic.state(Chip::Master).irr, 1 << 2);
        out(&mut pic, 0xa0, 0x0c);
        let (v, fx) = pic.read(0xa0, 1).unwrap();
        assert_eq!((v, fx.acked), (0x86, 1 << 14));
        assert_eq!(pic.state(Chip::Master).irr, 0);
        assert!(!pic.output());
        // Polling the master on a slave request answers IR2 and leaves the
        // output as it was.
        pulse(&mut pic, 15);
        out(&mut pic, 0x20, 0x0c);
        assert_eq!(inb(&mut pic, 0x20), 0x82);
        assert!(pic.output());
        assert_eq!(pic.state(Chip::Slave).irr, 1 << 7);
    }

    #[test]
    fn read_register_select() {
        let mut pic = linux();
        out(&mut pic, 0x21, 0xf0);
        pulse(&mut pic, 1);
        pulse(&mut pic, 2);
        inta(&mut pic);
        assert_eq!(inb(&mut pic, 0x20), 1 << 2, "IRR by default");
        out(&mut pic, 0x20, 0x0b);
        assert_eq!(inb(&mut pic, 0x20), 1 << 1);
        // OCW3 without bit 1 keeps the selection.
        out(&mut pic, 0x20, 0x08);
        assert_eq!(inb(&mut pic, 0x20), 1 << 1);
        out(&mut pic, 0x20, 0x0a);
        assert_eq!(inb(&mut pic, 0x20), 1 << 2);
        assert_eq!(inb(&mut pic, 0x21), 0xf0);
    }

    #[test]
    fn special_mask_is_recorded_not_applied() {
        let mut pic = linux();
        out(&mut pic, 0x21, 0x00);
        pulse(&mut pic, 3);
        inta(&mut pic);
        out(&mut pic, 0x20, 0x68);
        assert_eq!(pic.state(Chip::Master).special_mask, 1);
        out(&mut pic, 0x21, 0x08);
        // On an 8259A, IRQ 5 would now get through; KVM keeps it waiting.
        pulse(&mut pic, 5);
        assert!(!pic.output());
        out(&mut pic, 0x20, 0x48);
        assert_eq!(pic.state(Chip::Master).special_mask, 0);
        out(&mut pic, 0x20, 0x68);
        // ICW1 clears it.
        out(&mut pic, 0x20, 0x11);
        assert_eq!(pic.state(Chip::Master).special_mask, 0);
    }

    #[test]
    fn icw1_reinitialization() {
        let mut pic = linux();
        out(&mut pic, 0x4d0, 0x20);
        out(&mut pic, 0x21, 0x00);
        out(&mut pic, 0x20, 0xc3);
        out(&mut pic, 0x20, 0x0b);
        pulse(&mut pic, 0);
        assert_eq!(inta(&mut pic), 0x30);
        set(&mut pic, 5, true);
        pulse(&mut pic, 1);
        // A vCPU accepts PIC interrupts: the dropped edge request (IRQ 1)
        // loses its ISR bit and is acked; IRQ 0 stays in service.
        let fx = out(&mut pic, 0x20, 0x11);
        assert_eq!(fx.acked, 1 << 1);
        assert_eq!(fx.mask_changed, 0, "no mask notifiers");
        let m = pic.state(Chip::Master);
        assert_eq!((m.irr, m.isr, m.imr, m.last_irr), (1 << 5, 1, 0, 0));
        assert_eq!((m.priority_add, m.read_reg_select, m.init_state), (0, 0, 1));
        assert_eq!(m.irq_base, 0x30, "kept until ICW2");
        // Nobody accepts them: nothing is acked.
        let mut pic = linux();
        out(&mut pic, 0x21, 0x00);
        pulse(&mut pic, 0);
        inta(&mut pic);
        pulse(&mut pic, 0);
        let fx = pic.write(0x20, &[0x11], false).unwrap();
        assert_eq!(fx.acked, 0);
        assert_eq!(pic.state(Chip::Master).isr, 1);
        assert_eq!(pic.state(Chip::Master).irr, 0);
        // Without ICW4 the data port takes ICW2 and ICW3 only.
        out(&mut pic, 0x20, 0x10);
        out(&mut pic, 0x21, 0x47);
        out(&mut pic, 0x21, 0x04);
        out(&mut pic, 0x21, 0x3c);
        let m = pic.state(Chip::Master);
        assert_eq!((m.irq_base, m.init_state, m.imr), (0x40, 0, 0x3c));
    }

    #[test]
    fn icw1_leaves_the_output_stale() {
        let mut pic = linux();
        out(&mut pic, 0x21, 0x00);
        pulse(&mut pic, 1);
        assert!(pic.output());
        out(&mut pic, 0x20, 0x11);
        assert_eq!(pic.state(Chip::Master).irr, 0);
        assert!(pic.output(), "not recomputed by ICW1-4");
        out(&mut pic, 0x21, 0x30);
        out(&mut pic, 0x21, 0x04);
        out(&mut pic, 0x21, 0x01);
        assert!(pic.output());
        // The next OCW1 recomputes it.
        out(&mut pic, 0x21, 0xff);
        assert!(!pic.output());
    }

    #[test]
    fn non_byte_and_foreign_accesses() {
        let mut pic = linux();
        assert_eq!(pic.read(0x20, 2), Ok((0, Effect::default())));
        assert_eq!(pic.write(0x20, &[0x11, 0], true), Ok(Effect::default()));
        assert_eq!(pic.state(Chip::Master).init_state, 0);
        for (port, len) in [
            (0x21, 2),
            (0x22, 1),
            (0x1f, 1),
            (0xa2, 1),
            (0x4d2, 1),
            (0x4d1, 4),
        ] {
            assert_eq!(pic.read(port, len), Err(OutOfRange), "{port:#x}/{len}");
            assert_eq!(pic.write(port, &[0; 4][..len], true), Err(OutOfRange));
        }
        assert!(Pic::in_range(0x4d0, 2));
        assert!(Pic::in_range(0xa1, 1));
    }

    #[test]
    fn state_round_trip() {
        let mut pic = seabios();
        out(&mut pic, 0x21, 0xf8);
        pulse(&mut pic, 0);
        assert_eq!(inta(&mut pic), 0x08);
        pulse(&mut pic, 1);
        out(&mut pic, 0x20, 0x0b);
        let m = pic.state(Chip::Master);
        let bytes = m.to_bytes();
        assert_eq!(
            bytes,
            [0, 2, 0xf8, 1, 0, 0x08, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0xf8]
        );
        assert_eq!(PicState::from_bytes(&bytes), Some(m));
        assert_eq!(PicState::from_bytes(&bytes[..15]), None);
        let s = pic.state(Chip::Slave);
        assert_eq!(s.to_bytes()[14], 0x0c);
        // Into a fresh pair: the same registers, the same output.
        let mut other = Pic::new();
        assert!(!other.set_state(Chip::Master, &m).wakeup);
        other.set_state(Chip::Slave, &s);
        assert_eq!(other.state(Chip::Master), m);
        assert!(!other.output(), "IRQ 1 waits for IRQ 0");
        let fx = out(&mut other, 0x20, 0x20);
        assert!(fx.wakeup);
        assert_eq!(inta(&mut other), 0x09);
        // Values a guest could not write are taken as they are.
        let odd = PicState::from_bytes(&[0xff; 16]).unwrap();
        other.set_state(Chip::Slave, &odd);
        assert_eq!(other.state(Chip::Slave), odd);
        out(&mut other, 0xa1, 0x12);
        assert_eq!(inb(&mut other, 0xa1), POLL_NONE, "poll 0xff: a poll");
        assert_eq!(inb(&mut other, 0xa1), 0xff, "init_state 0xff took no data");
    }

    #[test]
    fn no_panic_on_any_input() {
        let mut pic = Pic::new();
        let mut x: u64 = 0x0123_4567_89ab_cdef;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 24
        };
        let ports = [0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x22];
        for _ in 0..50_000 {
            let r = next();
            let port = ports[(r % 7) as usize];
            let _ = pic.write(port, &[(r >> 8) as u8], r & (1 << 20) != 0);
            let _ = pic.read(ports[((r >> 16) % 7) as usize], 1);
            pic.set_irq(
                (next() % 20) as usize,
                (next() % 40) as u32,
                next() & 1 != 0,
            );
            if next() % 3 == 0 {
                pic.read_irq();
            }
            if next() % 1000 == 0 {
                let mut b = [0u8; 16];
                for v in &mut b {
                    *v = next() as u8;
                }
                let chip = if next() & 1 == 0 {
                    Chip::Master
                } else {
                    Chip::Slave
                };
                pic.set_state(chip, &PicState::from_bytes(&b).unwrap());
            }
        }
    }
}

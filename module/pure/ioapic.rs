// SPDX-License-Identifier: GPL-2.0

//! The in-kernel IOAPIC of `KVM_CREATE_IRQCHIP`: an 82093AA with 24 pins as
//! KVM emulates it (`arch/x86/kvm/ioapic.c`), state and all.
//!
//! The state is KVM's ABI, `struct kvm_ioapic_state` (`KVM_GET_IRQCHIP` and
//! `KVM_SET_IRQCHIP` with `chip_id` 2, `KVM_IRQCHIP_IOAPIC`): [`IoapicState`]
//! mirrors it field for field, with its byte image for the ioctls.
//!
//! The model owns no LAPIC. Every interrupt it sends goes through the
//! `deliver` callback the caller passes, as KVM calls
//! `kvm_irq_delivery_to_apic()`: it gets the decoded [`IrqMessage`] and,
//! for the RTC's pin with `KVM_IRQ_LINE_STATUS`, a [`DestMap`] to record
//! the vCPUs that took it; it returns what KVM's delivery returns (the
//! number of LAPICs that took the interrupt, 0 if the ones that matched did
//! not, -1 if none matched). The caller holds the IOAPIC's lock around each
//! call, as KVM holds `ioapic->lock`.
//!
//! Where KVM and the 82093AA differ, this file follows KVM:
//! - there is no EOI register (the 82093AA is version 0x11; the EOI
//!   register at 0x40 came with version 0x20 IOAPICs): remote IRR is
//!   cleared by the LAPICs' EOI broadcast ([`Ioapic::eoi`]), or by turning
//!   the entry edge-triggered, which Linux and Xen rely on;
//! - the polarity bit is kept but ignored: a level from userspace is the
//!   asserted state, whatever the pin's polarity;
//! - the destination is the entry's whole bits 63:56, also in physical
//!   mode (the 82093AA decodes 59:56); bits 55:49, a guest's extended
//!   destination ID, are not read;
//! - the arbitration register reads as the ID register; the delivery status
//!   bit is never set; vectors below 0x10 are delivered;
//! - a level-triggered entry gets remote IRR also when no LAPIC matched
//!   (the delivery returned -1), and an edge that arrives while the pin is
//!   masked is dropped (as on the 82093AA).

use super::msi::{
    DeliveryMode,
    DestMode,
    IrqMessage,
    Trigger,
    VectorSet, //
};

/// Pins (`KVM_IOAPIC_NUM_PINS`).
pub const NUM_PINS: usize = 24;
/// Where KVM puts the IOAPIC (`IOAPIC_DEFAULT_BASE_ADDRESS`).
pub const DEFAULT_BASE_ADDRESS: u64 = 0xfec0_0000;
/// Size of its MMIO window (`IOAPIC_MEM_LENGTH`).
pub const MEM_LENGTH: u64 = 0x100;
/// The version KVM reports (`IOAPIC_VERSION_ID`): the 82093AA's.
pub const VERSION_ID: u32 = 0x11;
/// Offset of IOREGSEL, the register selector.
pub const REG_SELECT: u64 = 0x00;
/// Offset of IOWIN, the window onto the selected register.
pub const REG_WINDOW: u64 = 0x10;
/// Offset of the EOI register of version 0x20 IOAPICs, which KVM's lacks:
/// reads there return 0, writes are dropped.
pub const REG_EOI: u64 = 0x40;
/// Indirect register 0: the ID, in bits 27:24.
pub const IND_ID: u32 = 0x00;
/// Indirect register 1: version and highest redirection entry.
pub const IND_VERSION: u32 = 0x01;
/// Indirect register 2: arbitration ID.
pub const IND_ARB_ID: u32 = 0x02;
/// Indirect register of redirection entry `n`'s low half is this plus
/// `2 * n`, its high half the next one.
pub const IND_REDIR_BASE: u32 = 0x10;
/// The pin KVM treats as the RTC's (`RTC_GSI`): with
/// `KVM_IRQ_LINE_STATUS`, an edge there is coalesced until every vCPU that
/// took the previous one has sent its EOI.
pub const RTC_PIN: usize = 8;
/// After this many EOIs in a row that each re-deliver a pin's level
/// interrupt, KVM defers the next delivery
/// (`IOAPIC_SUCCESSIVE_IRQ_MAX_COUNT`).
pub const SUCCESSIVE_EOI_MAX: u32 = 10_000;
/// How long KVM defers it (`HZ / 100`).
pub const DEFERRED_EOI_DELAY_MS: u32 = 10;
/// The line source of `KVM_IRQ_LINE` (`KVM_USERSPACE_IRQ_SOURCE_ID`).
pub const SOURCE_USERSPACE: u32 = 0;
/// The line source irqfd resamplers lower (`KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID`).
pub const SOURCE_IRQFD_RESAMPLE: u32 = 1;
/// The in-kernel PIT's line source (`KVM_PIT_IRQ_SOURCE_ID`).
pub const SOURCE_PIT: u32 = 2;
/// vCPU ids a [`DestMap`] records (rkvm's `KVM_CAP_MAX_VCPU_ID`).
pub const DEST_MAP_VCPUS: usize = 64;
/// Size of `struct kvm_ioapic_state`.
pub const STATE_SIZE: usize = 216;

/// A set of pins, bit `n` for pin `n`.
pub type PinMask = u32;

/// The bit of `pin` in a [`PinMask`], 0 for no pin.
fn pin_bit(pin: usize) -> PinMask {
    if pin < NUM_PINS {
        1 << pin
    } else {
        0
    }
}

/// A redirection table entry (`union kvm_ioapic_redirect_entry`, the
/// 82093AA's IOREDTBL layout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirEntry(pub u64);

impl RedirEntry {
    /// Bit 11: logical destination mode.
    pub const DEST_LOGICAL: u64 = 1 << 11;
    /// Bit 12: delivery status (read-only; KVM never sets it).
    pub const DELIVERY_STATUS: u64 = 1 << 12;
    /// Bit 13: active-low polarity (kept, ignored).
    pub const POLARITY_LOW: u64 = 1 << 13;
    /// Bit 14: remote IRR (read-only): a level interrupt was taken and its
    /// EOI has not come back.
    pub const REMOTE_IRR: u64 = 1 << 14;
    /// Bit 15: level-triggered.
    pub const LEVEL: u64 = 1 << 15;
    /// Bit 16: masked.
    pub const MASKED: u64 = 1 << 16;
    /// The bits a guest's write cannot change.
    pub const READ_ONLY: u64 = Self::DELIVERY_STATUS | Self::REMOTE_IRR;

    /// Bits 7:0.
    pub fn vector(self) -> u8 {
        self.0 as u8
    }

    /// Bits 10:8.
    pub fn delivery_mode(self) -> DeliveryMode {
        DeliveryMode::from_bits((self.0 >> 8) as u8)
    }

    /// Bit 11.
    pub fn dest_mode(self) -> DestMode {
        if self.0 & Self::DEST_LOGICAL != 0 {
            DestMode::Logical
        } else {
            DestMode::Physical
        }
    }

    /// Bit 15.
    pub fn trigger(self) -> Trigger {
        if self.0 & Self::LEVEL != 0 {
            Trigger::Level
        } else {
            Trigger::Edge
        }
    }

    /// Bit 14.
    pub fn remote_irr(self) -> bool {
        self.0 & Self::REMOTE_IRR != 0
    }

    /// Bit 16.
    pub fn masked(self) -> bool {
        self.0 & Self::MASKED != 0
    }

    /// Bits 63:56.
    pub fn dest_id(self) -> u8 {
        (self.0 >> 56) as u8
    }

    /// What the entry sends (`ioapic_service()`'s `kvm_lapic_irq`).
    pub fn message(self) -> IrqMessage {
        IrqMessage {
            vector: self.vector(),
            delivery_mode: self.delivery_mode(),
            dest_mode: self.dest_mode(),
            dest_id: u32::from(self.dest_id()),
            trigger: self.trigger(),
            level: true,
            redirect_hint: false,
        }
    }
}

/// `struct kvm_ioapic_state`, field for field (`#[repr(C)]`, 216 bytes); in
/// `struct kvm_irqchip` it starts at byte 8 of the 512-byte union.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoapicState {
    /// MMIO base. KVM keeps the bus device where it was registered (the
    /// default base): a different value here makes the IOAPIC ignore it.
    pub base_address: u64,
    /// IOREGSEL (8 bits from the guest, any value from userspace).
    pub ioregsel: u32,
    /// The ID (bits 3:0 are what the guest reads).
    pub id: u32,
    /// Pins whose line is asserted and whose interrupt has not been
    /// delivered (an edge already delivered does not show).
    pub irr: u32,
    /// Padding, kept as userspace wrote it.
    pub pad: u32,
    /// The redirection entries' bits.
    pub redirtbl: [u64; NUM_PINS],
}

const _: () = assert!(core::mem::size_of::<IoapicState>() == STATE_SIZE);

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(b.try_into().ok()?))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

impl IoapicState {
    /// The ioctl's byte image (x86 is little-endian).
    pub fn to_bytes(self) -> [u8; STATE_SIZE] {
        let mut out = [0u8; STATE_SIZE];
        let head = self.base_address.to_le_bytes().into_iter().chain(
            [self.ioregsel, self.id, self.irr, self.pad]
                .into_iter()
                .flat_map(u32::to_le_bytes),
        );
        let table = self.redirtbl.iter().flat_map(|e| e.to_le_bytes());
        for (o, b) in out.iter_mut().zip(head.chain(table)) {
            *o = b;
        }
        out
    }

    /// The state in a byte image (`None`: fewer than [`STATE_SIZE`] bytes).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut redirtbl = [0u64; NUM_PINS];
        for (i, e) in redirtbl.iter_mut().enumerate() {
            *e = le_u64(bytes, 24 + 8 * i)?;
        }
        Some(Self {
            base_address: le_u64(bytes, 0)?,
            ioregsel: le_u32(bytes, 8)?,
            id: le_u32(bytes, 12)?,
            irr: le_u32(bytes, 16)?,
            pad: le_u32(bytes, 20)?,
            redirtbl,
        })
    }
}

/// The vCPUs an interrupt went to, with the vector each took (KVM's
/// `struct dest_map`), for vCPU ids below [`DEST_MAP_VCPUS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestMap {
    map: u64,
    vectors: [u8; DEST_MAP_VCPUS],
}

impl Default for DestMap {
    fn default() -> Self {
        Self {
            map: 0,
            vectors: [0; DEST_MAP_VCPUS],
        }
    }
}

impl DestMap {
    fn bit(vcpu_id: u32) -> u64 {
        1u64.checked_shl(vcpu_id).unwrap_or(0)
    }

    /// Records that `vcpu_id` took `vector` (what KVM's
    /// `__apic_accept_irq()` does for a fixed or lowest-priority
    /// interrupt). Ids past the map are not recorded.
    pub fn record(&mut self, vcpu_id: u32, vector: u8) {
        if let Some(v) = self.vectors.get_mut(vcpu_id as usize) {
            *v = vector;
            self.map |= Self::bit(vcpu_id);
        }
    }

    /// The vector `vcpu_id` took, if it is recorded.
    pub fn vector_of(&self, vcpu_id: u32) -> Option<u8> {
        if self.map & Self::bit(vcpu_id) == 0 {
            return None;
        }
        self.vectors.get(vcpu_id as usize).copied()
    }

    fn remove(&mut self, vcpu_id: u32) {
        self.map &= !Self::bit(vcpu_id);
    }
}

/// An MMIO access outside the IOAPIC's window (KVM's `-EOPNOTSUPP`: the
/// bus offers the access to the next device, or userspace gets it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange;

/// What a guest's MMIO write did besides changing the IOAPIC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteEffect {
    /// A redirection entry's mask bit changed: the pin and whether it is
    /// now masked (`kvm_fire_mask_notifiers()`, which the PIT uses).
    pub mask_changed: Option<(u8, bool)>,
    /// A redirection entry was written: each vCPU's set of vectors whose
    /// EOI the IOAPIC needs ([`Ioapic::eoi_vectors`]) must be recomputed
    /// (`KVM_REQ_SCAN_IOAPIC`).
    pub rescan: bool,
    /// A level-triggered entry whose pin is pending in IRR was written, so
    /// the IOAPIC tried to send it: what that returned (-1 if it is masked
    /// or still awaits its EOI, else the delivery's result).
    pub delivered: Option<i32>,
}

/// What an EOI broadcast did ([`Ioapic::eoi`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EoiOutcome {
    /// Pins whose remote IRR the EOI cleared.
    pub cleared: PinMask,
    /// Pins delivered again because their line is still asserted.
    pub redelivered: PinMask,
    /// A pin hit [`SUCCESSIVE_EOI_MAX`]: call [`Ioapic::deferred_eoi_inject`]
    /// after [`DEFERRED_EOI_DELAY_MS`] (KVM's `eoi_inject` work).
    pub deferred: bool,
}

/// KVM's RTC EOI tracking (`struct rtc_status`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RtcStatus {
    pending_eoi: i32,
    dest_map: DestMap,
}

/// The IOAPIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ioapic {
    base_address: u64,
    ioregsel: u32,
    id: u32,
    irr: u32,
    pad: u32,
    redirtbl: [RedirEntry; NUM_PINS],
    /// Edge pins in `irr` already delivered (hidden from [`Ioapic::state`]).
    irr_delivered: u32,
    /// Per pin, the sources asserting its line (bit `n`: source `n`).
    line_sources: [u32; NUM_PINS],
    /// Per pin, EOIs in a row that re-delivered it.
    successive_eoi: [u32; NUM_PINS],
    rtc: RtcStatus,
}

impl Default for Ioapic {
    fn default() -> Self {
        Self::new()
    }
}

impl Ioapic {
    /// The IOAPIC as `KVM_CREATE_IRQCHIP` makes it: every pin masked, the
    /// rest of each entry zero, at [`DEFAULT_BASE_ADDRESS`], ID 0.
    pub fn new() -> Self {
        let mut ioapic = Self {
            base_address: 0,
            ioregsel: 0,
            id: 0,
            irr: 0,
            pad: 0,
            redirtbl: [RedirEntry(0); NUM_PINS],
            irr_delivered: 0,
            line_sources: [0; NUM_PINS],
            successive_eoi: [0; NUM_PINS],
            rtc: RtcStatus::default(),
        };
        ioapic.reset();
        ioapic
    }

    /// `kvm_ioapic_reset()`: masks every pin (the entries' other bits stay),
    /// back to the default base, IOREGSEL, ID and IRR zero, EOI counting and
    /// RTC tracking cleared. The lines' sources stay. The caller cancels a
    /// deferred EOI injection.
    pub fn reset(&mut self) {
        for e in &mut self.redirtbl {
            e.0 |= RedirEntry::MASKED;
        }
        self.base_address = DEFAULT_BASE_ADDRESS;
        self.ioregsel = 0;
        self.irr = 0;
        self.irr_delivered = 0;
        self.id = 0;
        self.successive_eoi = [0; NUM_PINS];
        self.rtc = RtcStatus::default();
    }

    /// Redirection entry `pin`.
    pub fn entry(&self, pin: usize) -> Option<RedirEntry> {
        self.redirtbl.get(pin).copied()
    }

    /// Whether some source asserts `pin`'s line.
    pub fn line(&self, pin: usize) -> bool {
        self.line_sources.get(pin).is_some_and(|&s| s != 0)
    }

    /// The MMIO base.
    pub fn base_address(&self) -> u64 {
        self.base_address
    }

    /// Whether `gpa` falls in the window (`ioapic_in_range()`).
    pub fn in_range(&self, gpa: u64) -> bool {
        gpa >= self.base_address && gpa < self.base_address.wrapping_add(MEM_LENGTH)
    }

    /// `ioapic_read_indirect()`: the register IOREGSEL selects.
    fn read_indirect(&self) -> u32 {
        match self.ioregsel {
            IND_VERSION => ((NUM_PINS as u32 - 1) << 16) | VERSION_ID,
            IND_ID | IND_ARB_ID => (self.id & 0xf) << 24,
            sel => {
                // Registers 3..0x10 wrap around to a huge index, like the
                // ones past the table: they read as all ones.
                let index = sel.wrapping_sub(IND_REDIR_BASE) >> 1;
                let bits = self.entry(index as usize).map_or(!0, |e| e.0);
                if sel & 1 != 0 {
                    (bits >> 32) as u32
                } else {
                    bits as u32
                }
            }
        }
    }

    /// A guest's read of `len` bytes at `gpa` (`ioapic_mmio_read()`).
    ///
    /// Only the address's low byte selects: 0x00 IOREGSEL, 0x10 IOWIN,
    /// anything else (the EOI register 0x40 included, and unaligned
    /// addresses) reads 0. `Ok(Some(v))`: the value's low `len` bytes are
    /// the data (8 bytes read the 32-bit register zero-extended);
    /// `Ok(None)`: a length other than 1, 2, 4 or 8, which KVM takes
    /// without writing the data.
    pub fn mmio_read(&self, gpa: u64, len: usize) -> Result<Option<u64>, OutOfRange> {
        if !self.in_range(gpa) {
            return Err(OutOfRange);
        }
        let value = match gpa & 0xff {
            REG_SELECT => self.ioregsel,
            REG_WINDOW => self.read_indirect(),
            _ => 0,
        };
        Ok(match len {
            1 => Some(u64::from(value & 0xff)),
            2 => Some(u64::from(value & 0xffff)),
            4 | 8 => Some(u64::from(value)),
            _ => None,
        })
    }

    /// A guest's write of `data` at `gpa` (`ioapic_mmio_write()`).
    ///
    /// The value is `data`'s first 4 bytes for 4- and 8-byte writes, its 2
    /// or 1 bytes zero-extended for shorter ones (so a 2-byte write to IOWIN
    /// replaces the whole selected register); other lengths are dropped.
    /// IOREGSEL keeps 8 bits. Through IOWIN: the ID register keeps bits
    /// 27:24, the version and arbitration registers ignore writes, a
    /// redirection entry's half is replaced but for its read-only bits
    /// (remote IRR, delivery status), and an entry made edge-triggered loses
    /// its remote IRR.
    pub fn mmio_write<D>(
        &mut self,
        gpa: u64,
        data: &[u8],
        deliver: &mut D,
    ) -> Result<WriteEffect, OutOfRange>
    where
        D: FnMut(&IrqMessage, Option<&mut DestMap>) -> i32,
    {
        if !self.in_range(gpa) {
            return Err(OutOfRange);
        }
        let value = match data.len() {
            4 | 8 => le_u32(data, 0),
            2 => data
                .get(..2)
                .and_then(|b| b.try_into().ok())
                .map(|b| u32::from(u16::from_le_bytes(b))),
            1 => data.first().map(|&b| u32::from(b)),
            _ => None,
        };
        let Some(value) = value else {
            return Ok(WriteEffect::default());
        };
        Ok(match gpa & 0xff {
            REG_SELECT => {
                self.ioregsel = value & 0xff;
                WriteEffect::default()
            }
            REG_WINDOW => self.write_indirect(value, deliver),
            _ => WriteEffect::default(),
        })
    }

    /// `ioapic_write_indirect()`.
    fn write_indirect<D>(&mut self, value: u32, deliver: &mut D) -> WriteEffect
    where
        D: FnMut(&IrqMessage, Option<&mut DestMap>) -> i32,
    {
        let mut effect = WriteEffect::default();
        let sel = self.ioregsel;
        match sel {
            IND_VERSION | IND_ARB_ID => {}
            IND_ID => self.id = (value >> 24) & 0xf,
            _ => {
                let pin = (sel.wrapping_sub(IND_REDIR_BASE) >> 1) as usize;
                let Some(e) = self.redirtbl.get_mut(pin) else {
                    return effect;
                };
                let old = e.0;
                let mut bits = if sel & 1 != 0 {
                    (old & 0xffff_ffff) | (u64::from(value) << 32)
                } else {
                    (old & !0xffff_ffff) | u64::from(value)
                };
                bits = (bits & !RedirEntry::READ_ONLY) | (old & RedirEntry::READ_ONLY);
                if bits & RedirEntry::LEVEL == 0 {
                    bits &= !RedirEntry::REMOTE_IRR;
                }
                e.0 = bits;
                if (old ^ bits) & RedirEntry::MASKED != 0 {
                    effect.mask_changed = Some((pin as u8, bits & RedirEntry::MASKED != 0));
                }
                if bits & RedirEntry::LEVEL != 0 && self.irr & pin_bit(pin) != 0 {
                    effect.delivered = Some(self.service(pin, false, deliver));
                }
                effect.rescan = true;
            }
        }
        effect
    }

    /// `ioapic_service()`: sends `pin`'s interrupt unless the pin is masked
    /// or a level interrupt awaits its EOI (-1).
    fn service<D>(&mut self, pin: usize, line_status: bool, deliver: &mut D) -> i32
    where
        D: FnMut(&IrqMessage, Option<&mut DestMap>) -> i32,
    {
        let Some(entry) = self.entry(pin) else {
            return -1;
        };
        if entry.masked() || (entry.trigger() == Trigger::Level && entry.remote_irr()) {
            return -1;
        }
        let msg = entry.message();
        if msg.trigger == Trigger::Edge {
            self.irr_delivered |= pin_bit(pin);
        }
        let ret = if pin == RTC_PIN && line_status {
            // Callers only get here with no EOI pending.
            let r = deliver(&msg, Some(&mut self.rtc.dest_map));
            self.rtc.pending_eoi = r.max(0);
            r
        } else {
            deliver(&msg, None)
        };
        if ret != 0 && msg.trigger == Trigger::Level {
            if let Some(e) = self.redirtbl.get_mut(pin) {
                e.0 |= RedirEntry::REMOTE_IRR;
            }
        }
        ret
    }

    /// `ioapic_set_irq()`: `pin`'s line is now `level` (all sources taken
    /// together).
    fn set_line<D>(&mut self, pin: usize, level: bool, line_status: bool, deliver: &mut D) -> i32
    where
        D: FnMut(&IrqMessage, Option<&mut DestMap>) -> i32,
    {
        let (bit, Some(entry)) = (pin_bit(pin), self.entry(pin)) else {
            return -1;
        };
        if !level {
            self.irr &= !bit;
            return 1;
        }
        if pin == RTC_PIN && line_status && self.rtc.pending_eoi > 0 {
            return 0;
        }
        let old_irr = self.irr;
        self.irr |= bit;
        if entry.trigger() == Trigger::Edge {
            self.irr_delivered &= !bit;
            if old_irr == self.irr {
                return 0;
            }
        }
        self.service(pin, line_status, deliver)
    }

    /// Source `source` drives `pin`'s line to `level`
    /// (`kvm_ioapic_set_irq()`; `KVM_IRQ_LINE`'s any non-zero level is
    /// true). The line is asserted while any source asserts it. Sources
    /// are [`SOURCE_USERSPACE`], [`SOURCE_IRQFD_RESAMPLE`], [`SOURCE_PIT`];
    /// one past 31 drives nothing. `line_status`: the caller is
    /// `KVM_IRQ_LINE_STATUS`, which turns on the RTC pin's coalescing.
    ///
    /// Returns what `KVM_IRQ_LINE_STATUS` reports for this chip: 1 for a
    /// line taken low; for a line high, 0 if the interrupt was coalesced
    /// (an edge pin already pending, or the RTC's previous interrupt not yet
    /// EOI'd), -1 if it was not sent (masked pin, or a level pin awaiting its
    /// EOI; a pin past 23 too), else the delivery's result.
    ///
    /// An edge pin delivers when its line rises: a line held high delivers
    /// once. A level pin delivers while its line is high and no EOI is
    /// awaited, and again at the EOI if the line is still high.
    pub fn set_irq<D>(
        &mut self,
        pin: usize,
        source: u32,
        level: bool,
        line_status: bool,
        deliver: &mut D,
    ) -> i32
    where
        D: FnMut(&IrqMessage, Option<&mut DestMap>) -> i32,
    {
        let Some(sources) = self.line_sources.get_mut(pin) else {
            return -1;
        };
        let bit = 1u32.checked_shl(source).unwrap_or(0);
        if level {
            *sources |= bit;
        } else {
            *sources &= !bit;
        }
        let line = *sources != 0;
        self.set_line(pin, line, line_status, deliver)
    }

    /// The pins whose entry has `vector`: at an EOI of `vector`, KVM calls
    /// their ack notifiers (`kvm_notify_acked_irq()` for IOAPIC pin `n`,
    /// which reaches the irqfd resamplers of the GSI routed to it), whatever
    /// the trigger mode. The caller does so before [`Ioapic::eoi`], with the
    /// IOAPIC's lock dropped as KVM drops it, so that a resampler's lowering
    /// of the line is seen before the EOI decides to deliver again.
    pub fn pins_with_vector(&self, vector: u8) -> PinMask {
        let mut pins = 0;
        for (pin, e) in self.redirtbl.iter().enumerate() {
            if e.vector() == vector {
                pins |= pin_bit(pin);
            }
        }
        pins
    }

    /// The EOI of `vector` by vCPU `vcpu_id` reaches the IOAPIC
    /// (`kvm_ioapic_update_eoi()`). `trigger` is the vector's bit in the
    /// LAPIC's TMR; `directed_eoi` whether that LAPIC has directed EOI on
    /// (SPIV bit 12), in which case its EOIs are not broadcast.
    ///
    /// For a level EOI that is broadcast, every pin with that vector loses
    /// its remote IRR, and one whose line is still high and that is not
    /// masked is delivered again, but after [`SUCCESSIVE_EOI_MAX`] such EOIs
    /// in a row KVM defers it instead (see [`EoiOutcome::deferred`]).
    /// Also ends the vCPU's part of the RTC's EOI tracking.
    pub fn eoi<D>(
        &mut self,
        vcpu_id: u32,
        vector: u8,
        trigger: Trigger,
        directed_eoi: bool,
        deliver: &mut D,
    ) -> EoiOutcome
    where
        D: FnMut(&IrqMessage, Option<&mut DestMap>) -> i32,
    {
        self.rtc_eoi(vcpu_id, vector);
        let mut out = EoiOutcome::default();
        if trigger != Trigger::Level || directed_eoi {
            return out;
        }
        for pin in 0..NUM_PINS {
            let bit = pin_bit(pin);
            let Some(e) = self.redirtbl.get_mut(pin) else {
                continue;
            };
            if e.vector() != vector {
                continue;
            }
            e.0 &= !RedirEntry::REMOTE_IRR;
            out.cleared |= bit;
            let pending = !e.masked() && self.irr & bit != 0;
            let Some(count) = self.successive_eoi.get_mut(pin) else {
                continue;
            };
            if !pending {
                *count = 0;
                continue;
            }
            *count = count.saturating_add(1);
            if *count >= SUCCESSIVE_EOI_MAX {
                *count = 0;
                out.deferred = true;
            } else {
                self.service(pin, false, deliver);
                out.redelivered |= bit;
            }
        }
        out
    }

    /// The deferred injection after an EOI storm
    /// (`kvm_ioapic_eoi_inject_work()`): delivers every level pin whose line
    /// is high and that awaits no EOI. Returns those pins.
    pub fn deferred_eoi_inject<D>(&mut self, deliver: &mut D) -> PinMask
    where
        D: FnMut(&IrqMessage, Option<&mut DestMap>) -> i32,
    {
        let mut pins = 0;
        for pin in 0..NUM_PINS {
            let Some(e) = self.entry(pin) else {
                continue;
            };
            if e.trigger() == Trigger::Level && self.irr & pin_bit(pin) != 0 && !e.remote_irr() {
                self.service(pin, false, deliver);
                pins |= pin_bit(pin);
            }
        }
        pins
    }

    /// `KVM_GET_IRQCHIP` (`kvm_get_ioapic()`): delivered edges do not show
    /// in `irr` (until the line is asserted again while high: KVM then
    /// forgets the edge was delivered).
    pub fn state(&self) -> IoapicState {
        let mut redirtbl = [0u64; NUM_PINS];
        for (out, e) in redirtbl.iter_mut().zip(self.redirtbl.iter()) {
            *out = e.0;
        }
        IoapicState {
            base_address: self.base_address,
            ioregsel: self.ioregsel,
            id: self.id,
            irr: self.irr & !self.irr_delivered,
            pad: self.pad,
            redirtbl,
        }
    }

    /// `KVM_SET_IRQCHIP` (`kvm_set_ioapic()`): takes every field as it is
    /// (remote IRR and delivery status included), then asserts each pin
    /// of `state.irr` as `KVM_IRQ_LINE_STATUS` would, delivering what is
    /// deliverable; the lines' sources are not changed. The RTC's EOI
    /// tracking ends up reset: the caller then calls
    /// [`Ioapic::rtc_restore`] for every vCPU and has every vCPU recompute
    /// [`Ioapic::eoi_vectors`], as `kvm_set_ioapic()` does.
    pub fn set_state<D>(&mut self, state: &IoapicState, deliver: &mut D)
    where
        D: FnMut(&IrqMessage, Option<&mut DestMap>) -> i32,
    {
        self.base_address = state.base_address;
        self.ioregsel = state.ioregsel;
        self.id = state.id;
        self.pad = state.pad;
        for (e, &bits) in self.redirtbl.iter_mut().zip(state.redirtbl.iter()) {
            *e = RedirEntry(bits);
        }
        self.irr = 0;
        self.irr_delivered = 0;
        self.rtc = RtcStatus::default();
        for pin in 0..NUM_PINS {
            if state.irr & pin_bit(pin) != 0 {
                self.set_line(pin, true, true, deliver);
            }
        }
        self.rtc = RtcStatus::default();
    }

    /// `rtc_irq_eoi()`.
    fn rtc_eoi(&mut self, vcpu_id: u32, vector: u8) {
        if self.rtc.dest_map.vector_of(vcpu_id) == Some(vector) {
            self.rtc.dest_map.remove(vcpu_id);
            self.rtc_pending_sub();
        }
    }

    fn rtc_pending_sub(&mut self) {
        self.rtc.pending_eoi -= 1;
        if self.rtc.pending_eoi < 0 {
            // KVM warns and rebuilds the tracking from the LAPICs; here it
            // starts over, which at worst lets one RTC edge through early.
            self.rtc = RtcStatus::default();
        }
    }

    /// `__rtc_irq_eoi_tracking_restore_one()`, after `KVM_SET_IRQCHIP`
    /// (for every vCPU) and `KVM_SET_LAPIC` (for that vCPU):
    /// `matches_dest` says whether the vCPU's LAPIC matches the RTC pin's
    /// destination, `pending_eoi` whether that LAPIC has the pin's vector in
    /// its IRR or ISR.
    pub fn rtc_restore(&mut self, vcpu_id: u32, matches_dest: bool, pending_eoi: bool) {
        if !matches_dest {
            return;
        }
        let old = self.rtc.dest_map.vector_of(vcpu_id).is_some();
        if pending_eoi == old {
            return;
        }
        if pending_eoi {
            let vector = self.entry(RTC_PIN).map_or(0, RedirEntry::vector);
            self.rtc.dest_map.record(vcpu_id, vector);
            self.rtc.pending_eoi += 1;
        } else {
            self.rtc.dest_map.remove(vcpu_id);
            self.rtc_pending_sub();
        }
    }

    /// How many vCPUs still owe the RTC's interrupt an EOI.
    pub fn rtc_pending_eoi(&self) -> i32 {
        self.rtc.pending_eoi
    }

    /// The vectors whose EOI vCPU `vcpu_id` must send to the IOAPIC
    /// (`kvm_ioapic_scan_entry()`; its LAPIC only forwards EOIs of these).
    ///
    /// The pins considered are the level-triggered ones, those in
    /// `notifier_pins` (pins with ack notifiers, e.g. irqfd resamplers),
    /// and the RTC's; `intercept` says for a pin's message whether this vCPU
    /// can receive it or has its vector pending (KVM's
    /// `kvm_apic_match_dest() || kvm_apic_pending_eoi()`). The RTC vector
    /// the vCPU still owes an EOI is always in.
    pub fn eoi_vectors<F>(
        &self,
        vcpu_id: u32,
        notifier_pins: PinMask,
        mut intercept: F,
    ) -> VectorSet
    where
        F: FnMut(&IrqMessage) -> bool,
    {
        let mut set = VectorSet::EMPTY;
        if let Some(v) = self.rtc.dest_map.vector_of(vcpu_id) {
            set.insert(v);
        }
        for (pin, e) in self.redirtbl.iter().enumerate() {
            let wanted = e.trigger() == Trigger::Level
                || notifier_pins & pin_bit(pin) != 0
                || pin == RTC_PIN;
            if wanted && intercept(&e.message()) {
                set.insert(e.vector());
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const BASE: u64 = DEFAULT_BASE_ADDRESS;

    /// A LAPIC bus that takes everything, once per call, and remembers it.
    #[derive(Default)]
    struct Bus {
        sent: Vec<IrqMessage>,
        /// What each delivery returns.
        ret: i32,
        /// vCPUs recorded in a dest map.
        vcpus: Vec<u32>,
    }

    impl Bus {
        fn new() -> Self {
            Self {
                ret: 1,
                vcpus: std::vec![0],
                ..Self::default()
            }
        }

        fn f(&mut self) -> impl FnMut(&IrqMessage, Option<&mut DestMap>) -> i32 + '_ {
            move |m, map| {
                self.sent.push(*m);
                if let Some(map) = map {
                    for &v in &self.vcpus {
                        map.record(v, m.vector);
                    }
                }
                self.ret
            }
        }

        fn take(&mut self) -> Vec<u8> {
            self.sent.drain(..).map(|m| m.vector).collect()
        }
    }

    fn write32(io: &mut Ioapic, off: u64, v: u32, bus: &mut Bus) -> WriteEffect {
        io.mmio_write(BASE + off, &v.to_le_bytes(), &mut bus.f())
            .unwrap()
    }

    fn read32(io: &Ioapic, off: u64) -> u32 {
        io.mmio_read(BASE + off, 4).unwrap().unwrap() as u32
    }

    fn write_reg(io: &mut Ioapic, reg: u32, v: u32, bus: &mut Bus) -> WriteEffect {
        write32(io, REG_SELECT, reg, bus);
        write32(io, REG_WINDOW, v, bus)
    }

    fn read_reg(io: &mut Ioapic, reg: u32) -> u32 {
        let mut bus = Bus::new();
        write32(io, REG_SELECT, reg, &mut bus);
        read32(io, REG_WINDOW)
    }

    /// Programs pin `pin` with `low` (high half: destination 0).
    fn program(io: &mut Ioapic, pin: u32, low: u32, bus: &mut Bus) -> WriteEffect {
        write_reg(io, IND_REDIR_BASE + 2 * pin + 1, 0, bus);
        write_reg(io, IND_REDIR_BASE + 2 * pin, low, bus)
    }

    const LEVEL: u32 = 1 << 15;
    const MASK: u32 = 1 << 16;

    fn set(io: &mut Ioapic, pin: usize, level: bool, bus: &mut Bus) -> i32 {
        io.set_irq(pin, SOURCE_USERSPACE, level, false, &mut bus.f())
    }

    #[test]
    fn reset_state() {
        let mut io = Ioapic::new();
        let s = io.state();
        assert_eq!(s.base_address, 0xfec0_0000);
        assert_eq!((s.ioregsel, s.id, s.irr, s.pad), (0, 0, 0, 0));
        assert!(s.redirtbl.iter().all(|&e| e == 0x1_0000));
        assert_eq!(read_reg(&mut io, IND_VERSION), 0x0017_0011);
        assert_eq!(read_reg(&mut io, IND_ID), 0);
        assert_eq!(read_reg(&mut io, IND_REDIR_BASE), 0x1_0000);
        assert_eq!(read_reg(&mut io, IND_REDIR_BASE + 47), 0);
    }

    #[test]
    fn ioregsel_is_eight_bits() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        write32(&mut io, REG_SELECT, 0x1234_5611, &mut bus);
        assert_eq!(read32(&io, REG_SELECT), 0x11);
        io.mmio_write(BASE, &[0x12, 0x34], &mut bus.f()).unwrap();
        assert_eq!(read32(&io, REG_SELECT), 0x12);
        io.mmio_write(BASE, &[0x3f], &mut bus.f()).unwrap();
        assert_eq!(io.state().ioregsel, 0x3f);
    }

    #[test]
    fn id_version_arbitration() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        write_reg(&mut io, IND_ID, 0xffff_ffff, &mut bus);
        assert_eq!(io.state().id, 0xf);
        assert_eq!(read_reg(&mut io, IND_ID), 0x0f00_0000);
        assert_eq!(read_reg(&mut io, IND_ARB_ID), 0x0f00_0000);
        write_reg(&mut io, IND_VERSION, 0, &mut bus);
        write_reg(&mut io, IND_ARB_ID, 0, &mut bus);
        assert_eq!(read_reg(&mut io, IND_VERSION), 0x0017_0011);
        assert_eq!(read_reg(&mut io, IND_ARB_ID), 0x0f00_0000);
        // Userspace may store more; the guest reads 4 bits.
        let mut s = io.state();
        s.id = 0x35;
        io.set_state(&s, &mut bus.f());
        assert_eq!(read_reg(&mut io, IND_ID), 0x0500_0000);
        assert_eq!(io.state().id, 0x35);
    }

    #[test]
    fn unimplemented_registers_read_all_ones() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        for reg in [3, 4, 0xf, 0x40, 0x41, 0x80, 0xff] {
            assert_eq!(read_reg(&mut io, reg), 0xffff_ffff, "reg {reg:#x}");
            let before = io.state();
            write_reg(&mut io, reg, 0, &mut bus);
            assert_eq!(io.state().redirtbl, before.redirtbl);
        }
    }

    #[test]
    fn redirection_entry_halves() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        let fx = write_reg(&mut io, 0x10 + 2 * 5, 0x0000_0931, &mut bus);
        assert!(fx.rescan);
        assert_eq!(fx.mask_changed, Some((5, false)));
        write_reg(&mut io, 0x11 + 2 * 5, 0xab00_0000, &mut bus);
        assert_eq!(io.entry(5), Some(RedirEntry(0xab00_0000_0000_0931)));
        assert_eq!(read_reg(&mut io, 0x10 + 2 * 5), 0x931);
        assert_eq!(read_reg(&mut io, 0x11 + 2 * 5), 0xab00_0000);
        let e = io.entry(5).unwrap();
        assert_eq!(e.delivery_mode(), DeliveryMode::LowestPriority);
        assert_eq!(e.dest_mode(), DestMode::Logical);
        assert_eq!(e.dest_id(), 0xab);
        // Reserved bits are stored as written, as KVM stores them.
        write_reg(&mut io, 0x11 + 2 * 5, 0xab12_3456, &mut bus);
        assert_eq!(read_reg(&mut io, 0x11 + 2 * 5), 0xab12_3456);
        // The last pin is 23.
        write_reg(&mut io, 0x10 + 2 * 23, 0x40, &mut bus);
        assert_eq!(io.entry(23), Some(RedirEntry(0x40)));
    }

    #[test]
    fn read_only_bits() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        // A guest cannot set remote IRR or delivery status.
        program(&mut io, 1, LEVEL | (1 << 14) | (1 << 12) | 0x50, &mut bus);
        assert_eq!(io.entry(1).unwrap().0, u64::from(LEVEL) | 0x50);
        // Nor clear remote IRR of a level entry.
        set(&mut io, 1, true, &mut bus);
        assert!(io.entry(1).unwrap().remote_irr());
        program(&mut io, 1, LEVEL | 0x51, &mut bus);
        assert!(io.entry(1).unwrap().remote_irr());
        assert_eq!(read_reg(&mut io, 0x12) & (1 << 14), 1 << 14);
        // Making it edge-triggered does.
        program(&mut io, 1, 0x51, &mut bus);
        assert!(!io.entry(1).unwrap().remote_irr());
        // Delivery status from userspace stays, through guest writes too.
        let mut s = io.state();
        s.redirtbl[2] = 1 << 12;
        io.set_state(&s, &mut bus.f());
        program(&mut io, 2, 0x60, &mut bus);
        assert_eq!(io.entry(2).unwrap().0, (1 << 12) | 0x60);
    }

    #[test]
    fn mmio_offsets_and_lengths() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        write32(&mut io, REG_SELECT, IND_VERSION, &mut bus);
        assert_eq!(io.mmio_read(BASE + 0x10, 1), Ok(Some(0x11)));
        assert_eq!(io.mmio_read(BASE + 0x10, 2), Ok(Some(0x11)));
        assert_eq!(io.mmio_read(BASE + 0x10, 8), Ok(Some(0x0017_0011)));
        assert_eq!(io.mmio_read(BASE + 0x10, 3), Ok(None));
        // Only offsets 0x00 and 0x10 select; unaligned bytes read 0.
        for off in [0x04, 0x11, 0x20, REG_EOI, 0xff] {
            assert_eq!(io.mmio_read(BASE + off, 4), Ok(Some(0)), "{off:#x}");
        }
        assert_eq!(io.mmio_read(BASE + 0x100, 4), Err(OutOfRange));
        assert_eq!(io.mmio_read(BASE - 1, 4), Err(OutOfRange));
        assert_eq!(
            io.mmio_write(BASE + 0x100, &[0; 4], &mut bus.f()),
            Err(OutOfRange)
        );
        // A 3-byte write is dropped.
        io.mmio_write(BASE, &[5, 0, 0], &mut bus.f()).unwrap();
        assert_eq!(io.state().ioregsel, IND_VERSION);
        // An 8-byte write takes the low 4 bytes.
        io.mmio_write(BASE, &[0x10, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], &mut bus.f())
            .unwrap();
        assert_eq!(io.state().ioregsel, 0x10);
        // A 2-byte write to IOWIN replaces the whole half.
        write32(&mut io, REG_WINDOW, 0x0001_2345, &mut bus);
        io.mmio_write(BASE + 0x10, &[0x31, 0x00], &mut bus.f())
            .unwrap();
        assert_eq!(io.entry(0), Some(RedirEntry(0x31)));
    }

    #[test]
    fn eoi_register_is_absent() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 3, LEVEL | 0x43, &mut bus);
        set(&mut io, 3, true, &mut bus);
        assert!(io.entry(3).unwrap().remote_irr());
        write32(&mut io, REG_EOI, 0x43, &mut bus);
        assert!(io.entry(3).unwrap().remote_irr());
        assert_eq!(read32(&io, REG_EOI), 0);
    }

    #[test]
    fn moved_base_address() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        let mut s = io.state();
        s.base_address = 0xfec0_1000;
        s.ioregsel = IND_VERSION;
        io.set_state(&s, &mut bus.f());
        assert_eq!(io.mmio_read(BASE, 4), Err(OutOfRange));
        assert_eq!(io.mmio_read(0xfec0_1010, 4), Ok(Some(0x0017_0011)));
        // A base near the top wraps the end, so nothing is in range.
        s.base_address = u64::MAX - 0x7f;
        io.set_state(&s, &mut bus.f());
        assert!(!io.in_range(u64::MAX));
    }

    #[test]
    fn edge_delivers_on_rising_edge_only() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 4, 0x34 | (1 << 11), &mut bus);
        write_reg(&mut io, 0x11 + 8, 0x0300_0000, &mut bus);
        assert_eq!(set(&mut io, 4, true, &mut bus), 1);
        assert_eq!(
            bus.sent,
            [IrqMessage {
                vector: 0x34,
                delivery_mode: DeliveryMode::Fixed,
                dest_mode: DestMode::Logical,
                dest_id: 3,
                trigger: Trigger::Edge,
                level: true,
                redirect_hint: false,
            }]
        );
        bus.take();
        // The delivered edge is not in the state's IRR, though the line is
        // high.
        assert_eq!(io.state().irr, 0);
        // Asserted again while high: coalesced, nothing sent. KVM then
        // forgets the edge was delivered: it shows in the state's IRR.
        assert_eq!(set(&mut io, 4, true, &mut bus), 0);
        assert!(bus.sent.is_empty());
        assert_eq!(io.state().irr, 1 << 4);
        assert!(!io.entry(4).unwrap().remote_irr());
        // Low (status 1), then high again: a new edge.
        assert_eq!(set(&mut io, 4, false, &mut bus), 1);
        assert_eq!(set(&mut io, 4, true, &mut bus), 1);
        assert_eq!(bus.take(), [0x34]);
    }

    #[test]
    fn level_waits_for_eoi() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 9, LEVEL | 0x59, &mut bus);
        assert_eq!(set(&mut io, 9, true, &mut bus), 1);
        assert_eq!(bus.sent[0].trigger, Trigger::Level);
        assert_eq!(bus.take(), [0x59]);
        assert!(io.entry(9).unwrap().remote_irr());
        // Asserting again while the EOI is awaited sends nothing.
        assert_eq!(set(&mut io, 9, true, &mut bus), -1);
        assert!(bus.sent.is_empty());
        assert_eq!(io.state().irr, 1 << 9);
        // EOI with the line still high: delivered again.
        let out = io.eoi(0, 0x59, Trigger::Level, false, &mut bus.f());
        assert_eq!(
            out,
            EoiOutcome {
                cleared: 1 << 9,
                redelivered: 1 << 9,
                deferred: false
            }
        );
        assert_eq!(bus.take(), [0x59]);
        assert!(io.entry(9).unwrap().remote_irr());
        // Line low, then EOI: remote IRR cleared, nothing sent.
        assert_eq!(set(&mut io, 9, false, &mut bus), 1);
        let out = io.eoi(0, 0x59, Trigger::Level, false, &mut bus.f());
        assert_eq!((out.cleared, out.redelivered), (1 << 9, 0));
        assert!(bus.sent.is_empty());
        assert!(!io.entry(9).unwrap().remote_irr());
        assert_eq!(io.state().irr, 0);
    }

    #[test]
    fn eoi_that_does_not_clear() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 2, LEVEL | 0x62, &mut bus);
        set(&mut io, 2, true, &mut bus);
        bus.take();
        let none = EoiOutcome::default();
        // Edge in the TMR, directed EOI, another vector: nothing.
        assert_eq!(io.eoi(0, 0x62, Trigger::Edge, false, &mut bus.f()), none);
        assert_eq!(io.eoi(0, 0x62, Trigger::Level, true, &mut bus.f()), none);
        assert_eq!(io.eoi(0, 0x63, Trigger::Level, false, &mut bus.f()), none);
        assert!(io.entry(2).unwrap().remote_irr());
        assert!(bus.sent.is_empty());
        // Every pin with the vector is acked and cleared.
        program(&mut io, 7, LEVEL | 0x62, &mut bus);
        assert_eq!(io.pins_with_vector(0x62), (1 << 2) | (1 << 7));
        assert_eq!(io.pins_with_vector(0x10), 0);
        set(&mut io, 2, false, &mut bus);
        let out = io.eoi(0, 0x62, Trigger::Level, false, &mut bus.f());
        assert_eq!(out.cleared, (1 << 2) | (1 << 7));
        assert_eq!(out.redelivered, 0);
    }

    #[test]
    fn masked_pins() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        // Reset state: masked. An edge is dropped, also on unmasking.
        program(&mut io, 6, MASK | 0x46, &mut bus);
        assert_eq!(set(&mut io, 6, true, &mut bus), -1);
        let fx = program(&mut io, 6, 0x46, &mut bus);
        assert_eq!(fx.mask_changed, Some((6, false)));
        assert_eq!(fx.delivered, None);
        assert!(bus.sent.is_empty());
        // The undelivered edge shows in IRR, and blocks a new one until
        // the line goes low.
        assert_eq!(io.state().irr, 1 << 6);
        assert_eq!(set(&mut io, 6, true, &mut bus), 0);
        set(&mut io, 6, false, &mut bus);
        assert_eq!(set(&mut io, 6, true, &mut bus), 1);
        assert_eq!(bus.take(), [0x46]);
        // A level pin asserted while masked is delivered on unmasking.
        program(&mut io, 10, MASK | LEVEL | 0x4a, &mut bus);
        assert_eq!(set(&mut io, 10, true, &mut bus), -1);
        let fx = program(&mut io, 10, LEVEL | 0x4a, &mut bus);
        assert_eq!(fx.mask_changed, Some((10, false)));
        assert_eq!(fx.delivered, Some(1));
        assert_eq!(bus.take(), [0x4a]);
        // Masking reports the change; the EOI then clears remote IRR but
        // does not deliver a masked pin.
        let fx = program(&mut io, 10, MASK | LEVEL | 0x4a, &mut bus);
        assert_eq!(fx.mask_changed, Some((10, true)));
        let out = io.eoi(0, 0x4a, Trigger::Level, false, &mut bus.f());
        assert_eq!((out.cleared, out.redelivered), (1 << 10, 0));
        assert!(bus.sent.is_empty());
    }

    #[test]
    fn no_destination_still_sets_remote_irr() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 11, LEVEL | 0x5b, &mut bus);
        bus.ret = -1;
        assert_eq!(set(&mut io, 11, true, &mut bus), -1);
        assert!(io.entry(11).unwrap().remote_irr());
        // A delivery that nobody took (0) does not.
        program(&mut io, 12, LEVEL | 0x5c, &mut bus);
        bus.ret = 0;
        assert_eq!(set(&mut io, 12, true, &mut bus), 0);
        assert!(!io.entry(12).unwrap().remote_irr());
    }

    #[test]
    fn line_sources_are_ored() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 5, LEVEL | 0x55, &mut bus);
        let mut f = bus.f();
        assert_eq!(io.set_irq(5, SOURCE_USERSPACE, true, false, &mut f), 1);
        assert_eq!(
            io.set_irq(5, SOURCE_IRQFD_RESAMPLE, true, false, &mut f),
            -1
        );
        assert_eq!(io.set_irq(5, SOURCE_USERSPACE, false, false, &mut f), -1);
        assert!(io.line(5));
        assert_eq!(io.state().irr, 1 << 5);
        assert_eq!(
            io.set_irq(5, SOURCE_IRQFD_RESAMPLE, false, false, &mut f),
            1
        );
        assert!(!io.line(5));
        assert_eq!(io.state().irr, 0);
        // Out-of-range pins and sources do nothing.
        assert_eq!(io.set_irq(24, SOURCE_USERSPACE, true, false, &mut f), -1);
        assert_eq!(io.set_irq(5, 32, true, false, &mut f), 1);
        assert!(!io.line(5));
    }

    #[test]
    fn eoi_storm_is_deferred() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 3, LEVEL | 0x73, &mut bus);
        set(&mut io, 3, true, &mut bus);
        for i in 1..SUCCESSIVE_EOI_MAX {
            let out = io.eoi(0, 0x73, Trigger::Level, false, &mut bus.f());
            assert_eq!(out.redelivered, 1 << 3, "EOI {i}");
        }
        assert_eq!(bus.sent.len(), SUCCESSIVE_EOI_MAX as usize);
        bus.take();
        let out = io.eoi(0, 0x73, Trigger::Level, false, &mut bus.f());
        assert_eq!((out.redelivered, out.deferred), (0, true));
        assert!(bus.sent.is_empty());
        assert!(!io.entry(3).unwrap().remote_irr());
        assert_eq!(io.deferred_eoi_inject(&mut bus.f()), 1 << 3);
        assert_eq!(bus.take(), [0x73]);
        // The count starts over.
        let out = io.eoi(0, 0x73, Trigger::Level, false, &mut bus.f());
        assert_eq!(out.redelivered, 1 << 3);
        // Nothing to inject while the EOI is awaited.
        assert_eq!(io.deferred_eoi_inject(&mut bus.f()), 0);
    }

    #[test]
    fn state_round_trip() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 0, 0x30, &mut bus);
        program(&mut io, 1, LEVEL | 0x31, &mut bus);
        write_reg(&mut io, IND_ID, 0x0200_0000, &mut bus);
        set(&mut io, 1, true, &mut bus);
        write32(&mut io, REG_SELECT, 0x13, &mut bus);
        let s = io.state();
        assert_eq!(s.irr, 1 << 1);
        assert_eq!(s.redirtbl[1], u64::from(LEVEL) | (1 << 14) | 0x31);
        let bytes = s.to_bytes();
        assert_eq!(bytes[..8], 0xfec0_0000u64.to_le_bytes());
        assert_eq!(bytes[8..12], 0x13u32.to_le_bytes());
        assert_eq!(bytes[12..16], 2u32.to_le_bytes());
        assert_eq!(bytes[16..20], 2u32.to_le_bytes());
        assert_eq!(bytes[24 + 8..24 + 16], s.redirtbl[1].to_le_bytes());
        assert_eq!(IoapicState::from_bytes(&bytes), Some(s));
        assert_eq!(IoapicState::from_bytes(&bytes[..STATE_SIZE - 1]), None);
        // Into a fresh IOAPIC: remote IRR is kept, so the asserted level pin
        // is not sent again; the state reads back the same.
        let mut other = Ioapic::new();
        let mut bus2 = Bus::new();
        other.set_state(&s, &mut bus2.f());
        assert!(bus2.sent.is_empty());
        assert_eq!(other.state(), s);
        assert_eq!(read_reg(&mut other, 0x13), 0);
    }

    #[test]
    fn set_state_delivers_pending_irr() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        let mut s = io.state();
        s.redirtbl[2] = 0x42;
        s.redirtbl[3] = u64::from(LEVEL) | 0x43;
        s.redirtbl[4] = u64::from(MASK) | 0x44;
        s.irr = (1 << 2) | (1 << 3) | (1 << 4) | (1 << 30);
        io.set_state(&s, &mut bus.f());
        assert_eq!(bus.take(), [0x42, 0x43]);
        assert!(io.entry(3).unwrap().remote_irr());
        // The delivered edge is hidden, the masked pin stays pending, the
        // bit past the pins is gone.
        assert_eq!(io.state().irr, (1 << 3) | (1 << 4));
        // The lines' sources did not change.
        assert!(!io.line(3));
    }

    #[test]
    fn rtc_coalescing_with_line_status() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 8, 0x38, &mut bus);
        bus.vcpus = std::vec![0, 1];
        bus.ret = 2;
        assert_eq!(io.set_irq(8, 0, true, true, &mut bus.f()), 2);
        io.set_irq(8, 0, false, true, &mut bus.f());
        assert_eq!(io.rtc_pending_eoi(), 2);
        // Coalesced until both vCPUs EOI the vector.
        assert_eq!(io.set_irq(8, 0, true, true, &mut bus.f()), 0);
        io.set_irq(8, 0, false, true, &mut bus.f());
        io.eoi(0, 0x38, Trigger::Edge, false, &mut bus.f());
        io.eoi(1, 0x99, Trigger::Edge, false, &mut bus.f());
        assert_eq!(io.rtc_pending_eoi(), 1);
        assert_eq!(io.set_irq(8, 0, true, true, &mut bus.f()), 0);
        io.set_irq(8, 0, false, true, &mut bus.f());
        io.eoi(1, 0x38, Trigger::Edge, false, &mut bus.f());
        assert_eq!(io.rtc_pending_eoi(), 0);
        assert_eq!(bus.take(), [0x38]);
        assert_eq!(io.set_irq(8, 0, true, true, &mut bus.f()), 2);
        assert_eq!(bus.take(), [0x38]);
        // Without line status, KVM_IRQ_LINE does not coalesce.
        io.set_irq(8, 0, false, false, &mut bus.f());
        assert_eq!(io.set_irq(8, 0, true, false, &mut bus.f()), 2);
        // vCPU 1 owes the EOI: its vector is intercepted.
        assert!(io.eoi_vectors(1, 0, |_| false).contains(0x38));
        assert!(!io.eoi_vectors(5, 0, |_| false).contains(0x38));
    }

    #[test]
    fn rtc_restore_after_set_state() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 8, 0x38, &mut bus);
        let s = io.state();
        io.set_state(&s, &mut bus.f());
        assert_eq!(io.rtc_pending_eoi(), 0);
        io.rtc_restore(0, true, true);
        io.rtc_restore(1, false, true);
        io.rtc_restore(2, true, true);
        assert_eq!(io.rtc_pending_eoi(), 2);
        assert_eq!(io.set_irq(8, 0, true, true, &mut bus.f()), 0);
        io.rtc_restore(2, true, false);
        io.rtc_restore(2, true, false);
        assert_eq!(io.rtc_pending_eoi(), 1);
        io.eoi(0, 0x38, Trigger::Edge, false, &mut bus.f());
        assert_eq!(io.rtc_pending_eoi(), 0);
    }

    #[test]
    fn rtc_tracking_never_goes_negative() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 8, 0x38, &mut bus);
        // The LAPIC recorded the vCPU but reported 0: nothing pending.
        bus.ret = 0;
        assert_eq!(io.set_irq(8, 0, true, true, &mut bus.f()), 0);
        assert_eq!(io.rtc_pending_eoi(), 0);
        // Its EOI would take the count below zero: tracking starts over.
        io.eoi(0, 0x38, Trigger::Edge, false, &mut bus.f());
        assert_eq!(io.rtc_pending_eoi(), 0);
        assert!(io.eoi_vectors(0, 0, |_| false).is_empty());
        assert_eq!(Ioapic::default(), Ioapic::new());
        assert_eq!(io.base_address(), DEFAULT_BASE_ADDRESS);
    }

    #[test]
    fn eoi_vectors_scan() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        program(&mut io, 1, LEVEL | 0x51, &mut bus);
        program(&mut io, 2, 0x52, &mut bus);
        program(&mut io, 3, 0x53, &mut bus);
        write_reg(&mut io, 0x11 + 2 * 4, 0x0100_0000, &mut bus);
        write_reg(&mut io, 0x10 + 2 * 4, LEVEL | 0x54, &mut bus);
        // Masked level pins count too; reset entries have vector 0 and
        // edge trigger, and the RTC's pin is always looked at.
        let all = io.eoi_vectors(0, 1 << 3, |_| true);
        for v in [0x51, 0x53, 0x54, 0] {
            assert!(all.contains(v), "{v:#x}");
        }
        assert!(!all.contains(0x52));
        // Only destination 0.
        let mine = io.eoi_vectors(0, 1 << 3, |m| m.dest_id == 0 && m.vector != 0);
        assert!(mine.contains(0x51) && mine.contains(0x53));
        assert!(!mine.contains(0x54) && !mine.contains(0));
    }

    #[test]
    fn no_panic_on_any_input() {
        let (mut io, mut bus) = (Ioapic::new(), Bus::new());
        let mut x: u64 = 0x1234_5678_9abc_def0;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 16
        };
        for _ in 0..20_000 {
            let r = next();
            let off = r & 0x1ff;
            let len = (r >> 9) as usize % 10;
            let data = next().to_le_bytes();
            let _ = io.mmio_read(BASE + off, len);
            let _ = io.mmio_write(BASE + off, &data[..len.min(8)], &mut bus.f());
            let pin = (next() % 40) as usize;
            io.set_irq(
                pin,
                (next() % 40) as u32,
                next() & 1 != 0,
                next() & 1 != 0,
                &mut bus.f(),
            );
            let v = next() as u8;
            io.eoi(next() as u32, v, Trigger::Level, false, &mut bus.f());
            io.rtc_restore(next() as u32 % 80, true, next() & 1 != 0);
            if next() % 500 == 0 {
                let mut s = io.state();
                s.ioregsel = next() as u32;
                s.irr = next() as u32;
                io.set_state(&s, &mut bus.f());
            }
            bus.sent.clear();
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! KVM's GSI routing table: what `KVM_SET_GSI_ROUTING` accepts
//! (`kvm_vm_ioctl()`, `kvm_set_irq_routing()` and `setup_routing_entry()` in
//! `virt/kvm/irqchip.c`, `kvm_set_routing_entry()` in `arch/x86/kvm/irq.c`),
//! the table `KVM_CREATE_IRQCHIP` installs, and how `KVM_IRQ_LINE_STATUS`
//! adds up what the chips of a GSI report.
//!
//! The module owns the table's storage: it copies the user's array, turns
//! each entry into a [`RoutingEntry`] with [`parse_entry`], and hands the
//! whole to [`finish`], which sorts it by GSI (keeping the user's order
//! within a GSI) and applies the rules between entries. A finished table is
//! a plain slice: [`routes_for`] finds a GSI's entries by binary search,
//! [`PinMap`] maps chip pins back to GSIs.
//!
//! Every refusal is `EINVAL` ([`RouteError::errno`]); the variants say which
//! rule, for tests and logs.

use super::ioapic::NUM_PINS as IOAPIC_PINS;
use super::msi::{
    IrqMessage,
    MsiMessage,
    Trigger,
    VectorSet,
    MSI_VALID_DEVID, //
};

/// `KVM_MAX_IRQ_ROUTES`: entries per table, and GSIs are below it
/// (`KVM_CAP_IRQ_ROUTING` reports it).
pub const MAX_IRQ_ROUTES: u32 = 4096;
/// `KVM_IRQ_ROUTING_IRQCHIP`.
pub const TYPE_IRQCHIP: u32 = 1;
/// `KVM_IRQ_ROUTING_MSI`.
pub const TYPE_MSI: u32 = 2;
/// `KVM_IRQ_ROUTING_S390_ADAPTER` (refused on x86).
pub const TYPE_S390_ADAPTER: u32 = 3;
/// `KVM_IRQ_ROUTING_HV_SINT` (refused: rkvm has no Hyper-V SynIC, as a KVM
/// without `CONFIG_KVM_HYPERV`).
pub const TYPE_HV_SINT: u32 = 4;
/// `KVM_IRQ_ROUTING_XEN_EVTCHN` (refused: no Xen emulation, as a KVM
/// without `CONFIG_KVM_XEN`).
pub const TYPE_XEN_EVTCHN: u32 = 5;
/// Size of `struct kvm_irq_routing`'s header (`nr`, `flags`).
pub const HEADER_SIZE: usize = 8;
/// Size of `struct kvm_irq_routing_entry`.
pub const ENTRY_SIZE: usize = 48;
/// Pins of each 8259 (`PIC_NUM_PINS / 2`).
pub const PIC_PINS: u32 = (super::pic::NUM_PINS / 2) as u32;
/// The errno of every refusal.
pub const EINVAL: i32 = 22;

/// `struct kvm_irq_routing_entry`, field for field (`#[repr(C)]`, 48
/// bytes): the union `u` as its eight words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawEntry {
    /// The GSI.
    pub gsi: u32,
    /// `KVM_IRQ_ROUTING_*`.
    pub type_: u32,
    /// 0, or [`MSI_VALID_DEVID`] for an MSI.
    pub flags: u32,
    /// Padding (not checked by KVM).
    pub pad: u32,
    /// For an irqchip route: `irqchip`, `pin`; for an MSI: `address_lo`,
    /// `address_hi`, `data`, `devid`.
    pub u: [u32; 8],
}

const _: () = assert!(core::mem::size_of::<RawEntry>() == ENTRY_SIZE);

impl RawEntry {
    /// An irqchip route: `chip` is `KVM_IRQCHIP_*`.
    pub fn irqchip(gsi: u32, chip: u32, pin: u32) -> Self {
        Self {
            gsi,
            type_: TYPE_IRQCHIP,
            u: [chip, pin, 0, 0, 0, 0, 0, 0],
            ..Self::default()
        }
    }

    /// An MSI route without device ID.
    pub fn msi(gsi: u32, msg: MsiMessage) -> Self {
        Self {
            gsi,
            type_: TYPE_MSI,
            u: [msg.address_lo, msg.address_hi, msg.data, 0, 0, 0, 0, 0],
            ..Self::default()
        }
    }

    /// The entry in its byte image (`None`: fewer than [`ENTRY_SIZE`]
    /// bytes), e.g. entry `n` of the ioctl's array at
    /// `HEADER_SIZE + n * ENTRY_SIZE`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let mut words = [0u32; 12];
        for (i, w) in words.iter_mut().enumerate() {
            let b = bytes.get(4 * i..4 * i + 4)?;
            *w = u32::from_le_bytes(b.try_into().ok()?);
        }
        let [gsi, type_, flags, pad, u @ ..] = words;
        Some(Self {
            gsi,
            type_,
            flags,
            pad,
            u,
        })
    }

    /// The byte image.
    pub fn to_bytes(self) -> [u8; ENTRY_SIZE] {
        let mut out = [0u8; ENTRY_SIZE];
        let words = [self.gsi, self.type_, self.flags, self.pad]
            .into_iter()
            .chain(self.u);
        for (o, b) in out.iter_mut().zip(words.flat_map(u32::to_le_bytes)) {
            *o = b;
        }
        out
    }
}

/// An interrupt controller of the in-kernel irqchip (`KVM_IRQCHIP_*`, also
/// `chip_id` of `KVM_GET_IRQCHIP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Irqchip {
    /// 0: the master 8259 (ISA IRQs 0-7).
    PicMaster,
    /// 1: the slave 8259 (ISA IRQs 8-15).
    PicSlave,
    /// 2: the IOAPIC.
    Ioapic,
}

impl Irqchip {
    /// The chip of a `KVM_IRQCHIP_*` number.
    pub fn from_id(id: u32) -> Option<Self> {
        match id {
            0 => Some(Self::PicMaster),
            1 => Some(Self::PicSlave),
            2 => Some(Self::Ioapic),
            _ => None,
        }
    }

    /// Its `KVM_IRQCHIP_*` number.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Its pins.
    pub fn pins(self) -> u32 {
        match self {
            Self::PicMaster | Self::PicSlave => PIC_PINS,
            Self::Ioapic => IOAPIC_PINS as u32,
        }
    }
}

/// Where a GSI goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// A pin of an in-kernel chip (only with the full in-kernel irqchip).
    Irqchip {
        /// The chip.
        chip: Irqchip,
        /// Its pin: 0-7 on either 8259, 0-23 on the IOAPIC.
        pin: u8,
    },
    /// An MSI to the LAPICs.
    Msi {
        /// The message.
        msg: MsiMessage,
        /// The device ID, when the entry has [`MSI_VALID_DEVID`] (x86 takes
        /// the flag and ignores the ID).
        devid: Option<u32>,
    },
}

impl Route {
    /// For an 8259 route, the IRQ the PIC pair takes (`kvm_pic_set_irq()`'s
    /// pin: the slave's pins are 8-15).
    pub fn pic_irq(&self) -> Option<u8> {
        match *self {
            Route::Irqchip {
                chip: Irqchip::PicMaster,
                pin,
            } => Some(pin),
            Route::Irqchip {
                chip: Irqchip::PicSlave,
                pin,
            } => pin.checked_add(8),
            _ => None,
        }
    }
}

/// One entry of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutingEntry {
    /// The GSI.
    pub gsi: u32,
    /// Where it goes.
    pub route: Route,
    /// Its position in the user's array (orders entries of a GSI, and makes
    /// the last entry for a chip pin the one [`PinMap`] keeps).
    pub index: u32,
}

/// Which in-kernel irqchip the VM has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqchipMode {
    /// `KVM_CREATE_IRQCHIP`: PIC and IOAPIC in the kernel.
    Full,
    /// `KVM_CAP_SPLIT_IRQCHIP`: LAPICs in the kernel, PIC and IOAPIC in
    /// userspace; only MSI routes.
    Split,
}

/// Why a table is refused: always `EINVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// No in-kernel irqchip (`kvm_arch_can_set_irq_routing()`).
    NoIrqchip,
    /// `nr` above [`MAX_IRQ_ROUTES`].
    TooManyEntries,
    /// `struct kvm_irq_routing`'s `flags` not zero.
    HeaderFlags,
    /// Entry `n`'s GSI is [`MAX_IRQ_ROUTES`] or above.
    GsiTooLarge(u32),
    /// Entry `n` has flags it may not have: any for an irqchip route,
    /// other than [`MSI_VALID_DEVID`] for an MSI.
    EntryFlags(u32),
    /// Entry `n` has a type rkvm does not route.
    UnknownType(u32),
    /// Entry `n` names no chip.
    UnknownChip(u32),
    /// Entry `n`'s pin is past its chip's last.
    PinOutOfRange(u32),
    /// Entry `n` routes to a chip with the split irqchip, which has none.
    IrqchipInSplitMode(u32),
    /// Entry `n`'s MSI is [invalid](MsiMessage::invalid) in the x2APIC
    /// format.
    InvalidMsi(u32),
    /// Entry `n` shares its GSI with an earlier entry to the same chip, or
    /// one of the two is an MSI.
    Conflict(u32),
}

impl RouteError {
    /// The errno the ioctl returns.
    pub fn errno(self) -> i32 {
        EINVAL
    }
}

/// `KVM_SET_GSI_ROUTING`'s checks of the header, before the entries are
/// copied. `irqchip`: the VM's irqchip, `None` for none.
pub fn check_request(nr: u32, flags: u32, irqchip: Option<IrqchipMode>) -> Result<(), RouteError> {
    if irqchip.is_none() {
        return Err(RouteError::NoIrqchip);
    }
    if nr > MAX_IRQ_ROUTES {
        return Err(RouteError::TooManyEntries);
    }
    if flags != 0 {
        return Err(RouteError::HeaderFlags);
    }
    Ok(())
}

/// Entry `index` of the user's array, checked on its own: its GSI, flags,
/// type, chip and pin (`kvm_set_irq_routing()`, `kvm_set_routing_entry()`).
/// `x2apic_format`: the VM enabled `KVM_X2APIC_API_USE_32BIT_IDS`.
pub fn parse_entry(
    raw: &RawEntry,
    index: u32,
    mode: IrqchipMode,
    x2apic_format: bool,
) -> Result<RoutingEntry, RouteError> {
    if raw.gsi >= MAX_IRQ_ROUTES {
        return Err(RouteError::GsiTooLarge(index));
    }
    let allowed_flags = if raw.type_ == TYPE_MSI {
        MSI_VALID_DEVID
    } else {
        0
    };
    if raw.flags & !allowed_flags != 0 {
        return Err(RouteError::EntryFlags(index));
    }
    let [w0, w1, w2, w3, ..] = raw.u;
    let route = match raw.type_ {
        TYPE_IRQCHIP => {
            if mode == IrqchipMode::Split {
                return Err(RouteError::IrqchipInSplitMode(index));
            }
            let chip = Irqchip::from_id(w0).ok_or(RouteError::UnknownChip(index))?;
            if w1 >= chip.pins() {
                return Err(RouteError::PinOutOfRange(index));
            }
            Route::Irqchip {
                chip,
                pin: w1 as u8,
            }
        }
        TYPE_MSI => {
            let msg = MsiMessage {
                address_lo: w0,
                address_hi: w1,
                data: w2,
            };
            if msg.invalid(x2apic_format) {
                return Err(RouteError::InvalidMsi(index));
            }
            Route::Msi {
                msg,
                devid: (raw.flags & MSI_VALID_DEVID != 0).then_some(w3),
            }
        }
        _ => return Err(RouteError::UnknownType(index)),
    };
    Ok(RoutingEntry {
        gsi: raw.gsi,
        route,
        index,
    })
}

fn chip_of(e: &RoutingEntry) -> Option<Irqchip> {
    match e.route {
        Route::Irqchip { chip, .. } => Some(chip),
        Route::Msi { .. } => None,
    }
}

/// Finishes a table of [`parse_entry`]'s entries: sorts it by GSI, keeping
/// the user's order within a GSI, and refuses a GSI routed twice to the same
/// chip (even to the same pin) or routed to an MSI and anything else
/// (`setup_routing_entry()`). So a GSI has one MSI, or up to three chip
/// pins, one per chip. A chip pin may serve several GSIs.
///
/// Sorting costs O(n log n) for the 4096 entries at most; a refused table
/// is left sorted.
pub fn finish(entries: &mut [RoutingEntry]) -> Result<(), RouteError> {
    entries.sort_unstable_by_key(|e| (e.gsi, e.index));
    let mut first = 0;
    for (i, e) in entries.iter().enumerate() {
        if entries.get(first).is_some_and(|f| f.gsi != e.gsi) {
            first = i;
        }
        let Some(earlier) = entries.get(first..i) else {
            continue;
        };
        for x in earlier {
            let (a, b) = (chip_of(x), chip_of(e));
            if a.is_none() || b.is_none() || a == b {
                return Err(RouteError::Conflict(e.index));
            }
        }
    }
    Ok(())
}

/// The entries of `gsi` in a finished table, in the user's order, which is
/// the order `kvm_set_irq()` sets them in (none: the line goes nowhere and
/// `KVM_IRQ_LINE_STATUS` reports -1).
pub fn routes_for(table: &[RoutingEntry], gsi: u32) -> &[RoutingEntry] {
    let start = table.partition_point(|e| e.gsi < gsi);
    let end = table.partition_point(|e| e.gsi <= gsi);
    table.get(start..end).unwrap_or(&[])
}

/// Chip pin to GSI (`kvm_irq_map_chip_pin()`): for ack and mask notifiers,
/// which are registered per GSI but fired per chip pin. Where several GSIs
/// route to a pin, the one of the last such entry in the user's array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinMap {
    /// `(index, gsi)` per chip and pin (PIC pins 0-7 per chip).
    map: [[Option<(u32, u32)>; IOAPIC_PINS]; 3],
}

impl PinMap {
    /// The map of a table.
    pub fn new(table: &[RoutingEntry]) -> Self {
        let mut map = [[None; IOAPIC_PINS]; 3];
        for e in table {
            let Route::Irqchip { chip, pin } = e.route else {
                continue;
            };
            let slot = map
                .get_mut(chip.id() as usize)
                .and_then(|pins| pins.get_mut(usize::from(pin)));
            if let Some(slot) = slot {
                if slot.is_none_or(|(index, _)| index < e.index) {
                    *slot = Some((e.index, e.gsi));
                }
            }
        }
        Self { map }
    }

    /// The GSI routed to `pin` of `chip`, if any.
    pub fn gsi(&self, chip: Irqchip, pin: u32) -> Option<u32> {
        let slot = self.map.get(chip.id() as usize)?.get(pin as usize)?;
        slot.map(|(_, gsi)| gsi)
    }
}

const fn default_routing() -> [RoutingEntry; 40] {
    let mut out = [RoutingEntry {
        gsi: 0,
        route: Route::Irqchip {
            chip: Irqchip::Ioapic,
            pin: 0,
        },
        index: 0,
    }; 40];
    let mut gsi = 0;
    let mut i = 0;
    while gsi < IOAPIC_PINS as u8 {
        out[i] = RoutingEntry {
            gsi: gsi as u32,
            route: Route::Irqchip {
                chip: Irqchip::Ioapic,
                pin: gsi,
            },
            index: i as u32,
        };
        i += 1;
        if gsi < 16 {
            out[i] = RoutingEntry {
                gsi: gsi as u32,
                route: Route::Irqchip {
                    chip: if gsi < 8 {
                        Irqchip::PicMaster
                    } else {
                        Irqchip::PicSlave
                    },
                    pin: gsi % 8,
                },
                index: i as u32,
            };
            i += 1;
        }
        gsi += 1;
    }
    out
}

/// The table `KVM_CREATE_IRQCHIP` installs
/// (`kvm_setup_default_ioapic_and_pic_routing()`), finished: GSIs 0-15 to
/// the IOAPIC pin of the same number and then to the 8259 pin (master for
/// 0-7, slave pin `gsi - 8` for 8-15), GSIs 16-23 to the IOAPIC alone. (KVM
/// routes GSI 0 to IOAPIC pin 0, unlike the MP tables' usual ISA IRQ 0 on
/// pin 2.) The split irqchip starts with an empty table.
pub const DEFAULT_ROUTING: [RoutingEntry; 40] = default_routing();

/// `KVM_IRQ_LINE_STATUS`'s status for a GSI (`kvm_set_irq()`) from what
/// each of its entries returned, in order: -1 to start with; a negative
/// result is skipped; the others add up. So: -1, ignored (no route, every
/// chip masked it, or an MSI lowered); 0, coalesced (taken by no LAPIC, or
/// already pending); above 0, how many chips or LAPICs took it (a line
/// lowered counts 1 per chip that lowered it).
pub fn fold_status(results: impl IntoIterator<Item = i32>) -> i32 {
    results.into_iter().fold(-1, |ret, r| {
        if r < 0 {
            ret
        } else {
            r.saturating_add(ret.max(0))
        }
    })
}

/// What an MSI entry returns to [`fold_status`] before delivery
/// (`kvm_set_msi()`): `-EINVAL` for an [invalid](MsiMessage::invalid)
/// message, -1 for a lowered line, else the message to deliver, whose
/// result is the entry's.
pub fn msi_set(msg: &MsiMessage, level: bool, x2apic_format: bool) -> Result<IrqMessage, i32> {
    let irq = msg.decode(x2apic_format).ok_or(-EINVAL)?;
    if !level {
        return Err(-1);
    }
    Ok(irq)
}

/// With the split irqchip, the vectors whose EOI vCPU must report to
/// userspace (`KVM_EXIT_IOAPIC_EOI`): those of the level-triggered MSI
/// routes of GSIs below `reserved_ioapic_pins` (the userspace IOAPIC's pins,
/// `KVM_CAP_SPLIT_IRQCHIP`'s argument) that `intercept` accepts, which
/// says whether the vCPU can receive the message or has its vector pending
/// (`kvm_scan_ioapic_routes()`, `kvm_scan_ioapic_irq()`).
pub fn split_eoi_vectors<F>(
    table: &[RoutingEntry],
    reserved_ioapic_pins: u32,
    x2apic_format: bool,
    mut intercept: F,
) -> VectorSet
where
    F: FnMut(&IrqMessage) -> bool,
{
    let mut set = VectorSet::EMPTY;
    for e in table {
        if e.gsi >= reserved_ioapic_pins {
            break;
        }
        let Route::Msi { msg, .. } = e.route else {
            continue;
        };
        let irq = msg.message(x2apic_format);
        if irq.trigger == Trigger::Level && intercept(&irq) {
            set.insert(irq.vector);
        }
    }
    set
}

/// `KVM_IRQFD_FLAG_DEASSIGN`.
pub const IRQFD_FLAG_DEASSIGN: u32 = 1 << 0;
/// `KVM_IRQFD_FLAG_RESAMPLE`: a resamplefd is given (level-triggered GSIs).
pub const IRQFD_FLAG_RESAMPLE: u32 = 1 << 1;

/// What a `KVM_IRQFD` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqfdRequest {
    /// Hook the eventfd to the GSI.
    Assign,
    /// Unhook the eventfd's irqfds of the GSI.
    Deassign,
}

/// Why a `KVM_IRQFD` is refused before any fd is looked up: always
/// `EINVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqfdError {
    /// Flags beyond DEASSIGN and RESAMPLE.
    UnknownFlags,
    /// An assign without an in-kernel irqchip.
    NoIrqchip,
    /// RESAMPLE without the in-kernel IOAPIC (only `KVM_CREATE_IRQCHIP`
    /// has it).
    ResampleNeedsIoapic,
}

/// `KVM_IRQFD`'s checks before any fd is looked up (`kvm_irqfd()`, then
/// x86's `kvm_arch_irqfd_allowed()` for an assign). A deassign is checked
/// for nothing more.
pub fn irqfd_request(flags: u32, mode: Option<IrqchipMode>) -> Result<IrqfdRequest, IrqfdError> {
    if flags & !(IRQFD_FLAG_DEASSIGN | IRQFD_FLAG_RESAMPLE) != 0 {
        return Err(IrqfdError::UnknownFlags);
    }
    if flags & IRQFD_FLAG_DEASSIGN != 0 {
        return Ok(IrqfdRequest::Deassign);
    }
    match (mode, flags & IRQFD_FLAG_RESAMPLE != 0) {
        (None, _) => Err(IrqfdError::NoIrqchip),
        (Some(IrqchipMode::Split), true) => Err(IrqfdError::ResampleNeedsIoapic),
        _ => Ok(IrqfdRequest::Assign),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn irqfd_request_follows_kvm_irqfd() {
        let split = Some(IrqchipMode::Split);
        assert_eq!(irqfd_request(0, split), Ok(IrqfdRequest::Assign));
        assert_eq!(
            irqfd_request(IRQFD_FLAG_RESAMPLE, Some(FULL)),
            Ok(IrqfdRequest::Assign)
        );
        // Resampling needs the in-kernel IOAPIC; an assign, an irqchip.
        assert_eq!(
            irqfd_request(IRQFD_FLAG_RESAMPLE, split),
            Err(IrqfdError::ResampleNeedsIoapic)
        );
        assert_eq!(irqfd_request(0, None), Err(IrqfdError::NoIrqchip));
        // A deassign needs neither, and RESAMPLE beside it is ignored.
        assert_eq!(
            irqfd_request(IRQFD_FLAG_DEASSIGN, None),
            Ok(IrqfdRequest::Deassign)
        );
        assert_eq!(
            irqfd_request(IRQFD_FLAG_DEASSIGN | IRQFD_FLAG_RESAMPLE, split),
            Ok(IrqfdRequest::Deassign)
        );
        // Unknown flags first, even on a deassign.
        assert_eq!(irqfd_request(4, split), Err(IrqfdError::UnknownFlags));
        assert_eq!(
            irqfd_request(IRQFD_FLAG_DEASSIGN | 1 << 31, None),
            Err(IrqfdError::UnknownFlags)
        );
    }

    const FULL: IrqchipMode = IrqchipMode::Full;

    fn build(
        raw: &[RawEntry],
        mode: IrqchipMode,
        x2apic: bool,
    ) -> Result<Vec<RoutingEntry>, RouteError> {
        check_request(raw.len() as u32, 0, Some(mode))?;
        let mut out = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            out.push(parse_entry(r, i as u32, mode, x2apic)?);
        }
        finish(&mut out)?;
        Ok(out)
    }

    fn msi(gsi: u32, data: u32) -> RawEntry {
        RawEntry::msi(
            gsi,
            MsiMessage {
                address_lo: 0xfee0_1000,
                address_hi: 0,
                data,
            },
        )
    }

    fn ioapic(gsi: u32, pin: u32) -> RawEntry {
        RawEntry::irqchip(gsi, 2, pin)
    }

    #[test]
    fn header_rules() {
        assert_eq!(check_request(0, 0, Some(FULL)), Ok(()));
        assert_eq!(check_request(4096, 0, Some(IrqchipMode::Split)), Ok(()));
        assert_eq!(check_request(0, 0, None), Err(RouteError::NoIrqchip));
        assert_eq!(
            check_request(4097, 0, Some(FULL)),
            Err(RouteError::TooManyEntries)
        );
        assert_eq!(
            check_request(1, 1, Some(FULL)),
            Err(RouteError::HeaderFlags)
        );
        assert_eq!(RouteError::HeaderFlags.errno(), 22);
    }

    #[test]
    fn gsi_limit() {
        assert!(build(&[ioapic(4095, 0)], FULL, false).is_ok());
        assert_eq!(
            build(&[ioapic(4096, 0)], FULL, false),
            Err(RouteError::GsiTooLarge(0))
        );
        assert_eq!(
            build(&[ioapic(1, 1), msi(u32::MAX, 0)], FULL, false),
            Err(RouteError::GsiTooLarge(1))
        );
    }

    #[test]
    fn entry_flags() {
        let mut e = ioapic(1, 1);
        e.flags = MSI_VALID_DEVID;
        assert_eq!(build(&[e], FULL, false), Err(RouteError::EntryFlags(0)));
        let mut m = msi(1, 0x30);
        m.flags = MSI_VALID_DEVID;
        m.u[3] = 0xbeef;
        let t = build(&[m], FULL, false).unwrap();
        assert!(matches!(
            t[0].route,
            Route::Msi {
                devid: Some(0xbeef),
                ..
            }
        ));
        m.flags = 2;
        assert_eq!(build(&[m], FULL, false), Err(RouteError::EntryFlags(0)));
        // Without the flag the device ID is not taken; padding is not
        // checked.
        let mut m = msi(1, 0x30);
        m.u[3] = 7;
        m.pad = 9;
        let t = build(&[m], FULL, false).unwrap();
        assert!(matches!(t[0].route, Route::Msi { devid: None, .. }));
        // An unknown type with flags is refused for its flags.
        let mut x = RawEntry {
            type_: 9,
            flags: 1,
            ..RawEntry::default()
        };
        assert_eq!(build(&[x], FULL, false), Err(RouteError::EntryFlags(0)));
        x.flags = 0;
        assert_eq!(build(&[x], FULL, false), Err(RouteError::UnknownType(0)));
    }

    #[test]
    fn pin_ranges() {
        for (chip, last) in [(0, 7), (1, 7), (2, 23)] {
            assert!(build(&[RawEntry::irqchip(0, chip, last)], FULL, false).is_ok());
            assert_eq!(
                build(&[RawEntry::irqchip(0, chip, last + 1)], FULL, false),
                Err(RouteError::PinOutOfRange(0)),
                "chip {chip}"
            );
            assert_eq!(
                build(&[RawEntry::irqchip(0, chip, u32::MAX)], FULL, false),
                Err(RouteError::PinOutOfRange(0))
            );
        }
        assert_eq!(
            build(&[RawEntry::irqchip(0, 3, 0)], FULL, false),
            Err(RouteError::UnknownChip(0))
        );
        let t = build(&[RawEntry::irqchip(3, 1, 5)], FULL, false).unwrap();
        assert_eq!(
            t[0].route,
            Route::Irqchip {
                chip: Irqchip::PicSlave,
                pin: 5
            }
        );
        assert_eq!(t[0].route.pic_irq(), Some(13));
    }

    #[test]
    fn unsupported_types() {
        for t in [
            0,
            TYPE_S390_ADAPTER,
            TYPE_HV_SINT,
            TYPE_XEN_EVTCHN,
            6,
            u32::MAX,
        ] {
            let e = RawEntry {
                gsi: 1,
                type_: t,
                ..RawEntry::default()
            };
            assert_eq!(
                build(&[e], FULL, false),
                Err(RouteError::UnknownType(0)),
                "type {t}"
            );
        }
    }

    #[test]
    fn split_mode_only_msi() {
        let split = IrqchipMode::Split;
        assert_eq!(
            build(&[ioapic(1, 1)], split, false),
            Err(RouteError::IrqchipInSplitMode(0))
        );
        assert_eq!(
            build(&[RawEntry::irqchip(1, 7, 99)], split, false),
            Err(RouteError::IrqchipInSplitMode(0))
        );
        assert!(build(&[msi(1, 0x30), msi(2, 0x31)], split, false).is_ok());
    }

    #[test]
    fn x2apic_format_msi() {
        let mut e = msi(4, 0x30);
        e.u[1] = 0x100;
        assert!(build(&[e], FULL, true).is_ok());
        e.u[1] = 0x101;
        assert!(build(&[e], FULL, false).is_ok());
        assert_eq!(build(&[e], FULL, true), Err(RouteError::InvalidMsi(0)));
    }

    #[test]
    fn one_pin_per_chip_per_gsi() {
        // IOAPIC, master and slave on one GSI: fine.
        let ok = [
            ioapic(5, 5),
            RawEntry::irqchip(5, 0, 5),
            RawEntry::irqchip(5, 1, 2),
        ];
        assert!(build(&ok, FULL, false).is_ok());
        // Two pins of one chip.
        let two = [ioapic(5, 5), RawEntry::irqchip(5, 0, 5), ioapic(5, 6)];
        assert_eq!(build(&two, FULL, false), Err(RouteError::Conflict(2)));
        // The same pin twice.
        assert_eq!(
            build(&[ioapic(5, 5), ioapic(5, 5)], FULL, false),
            Err(RouteError::Conflict(1))
        );
        // An MSI shares its GSI with nothing.
        assert_eq!(
            build(&[ioapic(5, 5), msi(5, 0x30)], FULL, false),
            Err(RouteError::Conflict(1))
        );
        assert_eq!(
            build(&[msi(5, 0x30), ioapic(5, 5)], FULL, false),
            Err(RouteError::Conflict(1))
        );
        assert_eq!(
            build(&[msi(5, 0x30), msi(5, 0x31)], FULL, false),
            Err(RouteError::Conflict(1))
        );
        // Entries of one GSI need not be adjacent.
        let apart = [ioapic(5, 5), msi(6, 0x30), ioapic(5, 7)];
        assert_eq!(build(&apart, FULL, false), Err(RouteError::Conflict(2)));
        // One pin for several GSIs is allowed.
        assert!(build(&[ioapic(5, 5), ioapic(6, 5), ioapic(700, 5)], FULL, false).is_ok());
    }

    #[test]
    fn lookup_keeps_user_order() {
        let raw = [
            msi(40, 0x40),
            RawEntry::irqchip(3, 0, 3),
            ioapic(3, 3),
            ioapic(1, 1),
            ioapic(4095, 0),
        ];
        let t = build(&raw, FULL, false).unwrap();
        let gsis: Vec<u32> = t.iter().map(|e| e.gsi).collect();
        assert_eq!(gsis, [1, 3, 3, 40, 4095]);
        let three: Vec<u32> = routes_for(&t, 3).iter().map(|e| e.index).collect();
        assert_eq!(three, [1, 2]);
        assert_eq!(
            routes_for(&t, 3)[0].route,
            Route::Irqchip {
                chip: Irqchip::PicMaster,
                pin: 3
            }
        );
        assert_eq!(routes_for(&t, 40).len(), 1);
        assert_eq!(routes_for(&t, 4095).len(), 1);
        assert!(routes_for(&t, 2).is_empty());
        assert!(routes_for(&t, u32::MAX).is_empty());
        assert!(routes_for(&[], 0).is_empty());
    }

    #[test]
    fn pin_map_last_entry_wins() {
        let raw = [
            ioapic(9, 9),
            ioapic(30, 9),
            RawEntry::irqchip(9, 1, 1),
            ioapic(2, 9),
        ];
        let t = build(&raw, FULL, false).unwrap();
        let map = PinMap::new(&t);
        assert_eq!(map.gsi(Irqchip::Ioapic, 9), Some(2));
        assert_eq!(map.gsi(Irqchip::PicSlave, 1), Some(9));
        assert_eq!(map.gsi(Irqchip::PicMaster, 1), None);
        assert_eq!(map.gsi(Irqchip::Ioapic, 24), None);
        assert_eq!(map.gsi(Irqchip::Ioapic, u32::MAX), None);
    }

    #[test]
    fn default_routing_contents() {
        let t = DEFAULT_ROUTING;
        assert_eq!(t.len(), 40);
        let mut copy = t;
        assert_eq!(finish(&mut copy), Ok(()));
        assert_eq!(copy, t, "already finished");
        let ioapic_pin = |pin| Route::Irqchip {
            chip: Irqchip::Ioapic,
            pin,
        };
        let r0: Vec<Route> = routes_for(&t, 0).iter().map(|e| e.route).collect();
        assert_eq!(
            r0,
            [
                ioapic_pin(0),
                Route::Irqchip {
                    chip: Irqchip::PicMaster,
                    pin: 0
                }
            ]
        );
        let r9: Vec<Route> = routes_for(&t, 9).iter().map(|e| e.route).collect();
        assert_eq!(
            r9,
            [
                ioapic_pin(9),
                Route::Irqchip {
                    chip: Irqchip::PicSlave,
                    pin: 1
                }
            ]
        );
        assert_eq!(r0[1].pic_irq(), Some(0));
        assert_eq!(r0[0].pic_irq(), None);
        let r15: Vec<Route> = routes_for(&t, 15).iter().map(|e| e.route).collect();
        assert_eq!(r15[1].pic_irq(), Some(15));
        for gsi in 16..24 {
            let r: Vec<Route> = routes_for(&t, gsi).iter().map(|e| e.route).collect();
            assert_eq!(r, [ioapic_pin(gsi as u8)]);
        }
        assert!(routes_for(&t, 24).is_empty());
        let map = PinMap::new(&t);
        for pin in 0..24 {
            assert_eq!(map.gsi(Irqchip::Ioapic, pin), Some(pin));
        }
        for pin in 0..8 {
            assert_eq!(map.gsi(Irqchip::PicMaster, pin), Some(pin));
            assert_eq!(map.gsi(Irqchip::PicSlave, pin), Some(pin + 8));
        }
        // What KVM's table is as an ioctl would give it: the same.
        let raw: Vec<RawEntry> = t
            .iter()
            .map(|e| match e.route {
                Route::Irqchip { chip, pin } => RawEntry::irqchip(e.gsi, chip.id(), u32::from(pin)),
                Route::Msi { msg, .. } => RawEntry::msi(e.gsi, msg),
            })
            .collect();
        assert_eq!(build(&raw, FULL, false).unwrap(), t);
    }

    #[test]
    fn raw_layout() {
        let mut e = RawEntry::msi(
            0x0102_0304,
            MsiMessage {
                address_lo: 0xfee0_3000,
                address_hi: 0x100,
                data: 0x4031,
            },
        );
        e.flags = MSI_VALID_DEVID;
        e.u[3] = 0xd0d0;
        let b = e.to_bytes();
        assert_eq!(b[0..4], [4, 3, 2, 1]);
        assert_eq!(b[4..8], TYPE_MSI.to_le_bytes());
        assert_eq!(b[8..12], 1u32.to_le_bytes());
        assert_eq!(b[16..20], 0xfee0_3000u32.to_le_bytes());
        assert_eq!(b[20..24], 0x100u32.to_le_bytes());
        assert_eq!(b[24..28], 0x4031u32.to_le_bytes());
        assert_eq!(b[28..32], 0xd0d0u32.to_le_bytes());
        assert!(b[32..].iter().all(|&x| x == 0));
        assert_eq!(RawEntry::from_bytes(&b), Some(e));
        assert_eq!(RawEntry::from_bytes(&b[..47]), None);
        let c = RawEntry::irqchip(7, 1, 6).to_bytes();
        assert_eq!(c[4..8], TYPE_IRQCHIP.to_le_bytes());
        assert_eq!((c[16], c[20]), (1, 6));
    }

    #[test]
    fn line_status_folding() {
        assert_eq!(fold_status([]), -1);
        assert_eq!(fold_status([-1]), -1);
        assert_eq!(fold_status([-1, -1]), -1);
        assert_eq!(fold_status([0, -1]), 0);
        assert_eq!(fold_status([-1, 0]), 0);
        assert_eq!(fold_status([1, -1]), 1);
        assert_eq!(fold_status([1, 1]), 2);
        assert_eq!(fold_status([-EINVAL, 3]), 3);
        assert_eq!(fold_status([i32::MAX, 1]), i32::MAX);
    }

    #[test]
    fn msi_entry_results() {
        let m = MsiMessage {
            address_lo: 0xfee0_2000,
            address_hi: 0x1,
            data: 0x8031,
        };
        assert_eq!(msi_set(&m, true, true), Err(-EINVAL));
        assert_eq!(msi_set(&m, false, false), Err(-1));
        let irq = msi_set(&m, true, false).unwrap();
        assert_eq!(
            (irq.vector, irq.dest_id, irq.trigger),
            (0x31, 2, Trigger::Level)
        );
        // Lowering an MSI GSI reports -1.
        assert_eq!(fold_status([msi_set(&m, false, false).unwrap_err()]), -1);
    }

    #[test]
    fn split_irqchip_eoi_vectors() {
        let level = |gsi, dest: u32, v: u32| {
            RawEntry::msi(
                gsi,
                MsiMessage {
                    address_lo: 0xfee0_0000 | (dest << 12),
                    address_hi: 0,
                    data: 0x8000 | v,
                },
            )
        };
        let raw = [
            level(0, 0, 0x30),
            msi(1, 0x31),
            level(2, 1, 0x32),
            level(23, 0, 0x37),
            level(24, 0, 0x38),
        ];
        let t = build(&raw, IrqchipMode::Split, false).unwrap();
        let v = split_eoi_vectors(&t, 24, false, |m| m.dest_id == 0);
        assert!(v.contains(0x30) && v.contains(0x37));
        assert!(!v.contains(0x31), "edge");
        assert!(!v.contains(0x32), "other vCPU");
        assert!(!v.contains(0x38), "past the reserved pins");
        let few = split_eoi_vectors(&t, 1, false, |_| true);
        assert!(few.contains(0x30) && !few.contains(0x32));
        assert!(split_eoi_vectors(&t, 0, false, |_| true).is_empty());
    }

    #[test]
    fn no_panic_on_any_entry() {
        let mut x: u64 = 0x0bad_cafe;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 32) as u32
        };
        let mut table = Vec::new();
        for i in 0..5000u32 {
            let mut raw = RawEntry {
                gsi: next() % 5000,
                type_: next() % 4,
                flags: next() % 3,
                pad: next(),
                u: [
                    next() % 4,
                    next() % 30,
                    next(),
                    next(),
                    next(),
                    next(),
                    next(),
                    next(),
                ],
            };
            if i % 2 == 0 {
                raw.flags = 0;
            }
            let bytes = raw.to_bytes();
            assert_eq!(RawEntry::from_bytes(&bytes), Some(raw));
            if let Ok(e) = parse_entry(&raw, i, FULL, next() & 1 != 0) {
                table.push(e);
            }
        }
        let _ = finish(&mut table);
        for gsi in 0..5000 {
            for e in routes_for(&table, gsi) {
                assert_eq!(e.gsi, gsi);
            }
        }
        let _ = PinMap::new(&table);
    }
}

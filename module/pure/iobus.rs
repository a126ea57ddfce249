// SPDX-License-Identifier: GPL-2.0

//! The in-kernel I/O buses a guest write goes through before it becomes a
//! `KVM_EXIT_IO` or `KVM_EXIT_MMIO` (KVM's `kvm_io_bus`, `virt/kvm/kvm_main.c`),
//! and the rules of the two kinds of device rkvm puts on them:
//! `KVM_IOEVENTFD` (`virt/kvm/eventfd.c`) and coalesced MMIO/PIO zones
//! (`virt/kvm/coalesced_mmio.c`), with the index arithmetic of the coalesced
//! ring. The module owns the devices, the eventfds and the ring page; this
//! file only decides.

use core::cmp::Ordering;

/// `KVM_IOEVENTFD_FLAG_DATAMATCH`.
pub const IOEVENTFD_FLAG_DATAMATCH: u32 = 1 << 0;
/// `KVM_IOEVENTFD_FLAG_PIO`.
pub const IOEVENTFD_FLAG_PIO: u32 = 1 << 1;
/// `KVM_IOEVENTFD_FLAG_DEASSIGN`.
pub const IOEVENTFD_FLAG_DEASSIGN: u32 = 1 << 2;
/// `KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY` (s390's bus; accepted as a flag
/// by KVM on x86 and then naming a bus no x86 guest write reaches).
pub const IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY: u32 = 1 << 3;
/// `KVM_IOEVENTFD_VALID_FLAG_MASK`: the five flags `<linux/kvm.h>` numbers
/// (the fifth, `fast_mmio`, has no name of its own but is in the mask).
pub const IOEVENTFD_VALID_FLAGS: u32 = (1 << 5) - 1;

/// `NR_IOBUS_DEVS`: devices per bus, ioeventfds not counted (KVM leaves
/// them to the limit on open files).
pub const NR_IOBUS_DEVS: usize = 1000;

/// `struct kvm_coalesced_mmio` is 24 bytes, the ring's header (`first`,
/// `last`) 8: `KVM_COALESCED_MMIO_MAX` entries fit in a 4 KiB page.
pub const COALESCED_ENTRY_SIZE: usize = 24;
/// Size of the ring's header.
pub const COALESCED_RING_HEADER: usize = 8;
/// `KVM_COALESCED_MMIO_MAX`: 170 entries in a 4 KiB page.
pub const COALESCED_MMIO_MAX: u32 = ((4096 - COALESCED_RING_HEADER) / COALESCED_ENTRY_SIZE) as u32;

/// Which bus a device sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusKind {
    /// Port I/O (`KVM_PIO_BUS`).
    Pio,
    /// MMIO (`KVM_MMIO_BUS`).
    Mmio,
    /// s390's virtio-ccw notifications (`KVM_VIRTIO_CCW_NOTIFY_BUS`): x86
    /// guests never write there, but KVM keeps the ioeventfds it is given.
    CcwNotify,
}

/// A device's range on a bus, or an access's (`struct kvm_io_range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoRange {
    /// First address (a port on the PIO bus).
    pub addr: u64,
    /// Length in bytes; a device of length 0 answers at `addr` alone.
    pub len: u32,
}

/// `kvm_io_bus_cmp(r1, r2)`: `Equal` when access `r1` falls in device `r2`
/// (within it, or at its address when `r2` has length 0). Also the order
/// devices are kept in.
pub fn bus_cmp(r1: IoRange, r2: IoRange) -> Ordering {
    let (mut a1, mut a2) = (r1.addr, r2.addr);
    if a1 < a2 {
        return Ordering::Less;
    }
    if r2.len != 0 {
        a1 = a1.wrapping_add(u64::from(r1.len));
        a2 = a2.wrapping_add(u64::from(r2.len));
    }
    if a1 > a2 {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// Where `kvm_io_bus_register_dev()` puts a new device with range `new`
/// among `ranges` (kept in bus order): before the first that compares
/// greater, so after the devices it ties with.
pub fn insert_index(ranges: impl Iterator<Item = IoRange>, new: IoRange) -> usize {
    let mut i = 0;
    for r in ranges {
        if bus_cmp(r, new) == Ordering::Greater {
            break;
        }
        i += 1;
    }
    i
}

/// Whether an access `access` is offered to device `device` on the bus
/// (`__kvm_io_bus_write()` offers it to each, in bus order, until one
/// takes it).
pub fn offered(access: IoRange, device: IoRange) -> bool {
    bus_cmp(access, device) == Ordering::Equal
}

/// `struct kvm_ioeventfd` without its `fd`: what an ioeventfd matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ioeventfd {
    /// The bus (from the flags).
    pub bus: BusKind,
    /// The exact address (or port) a write must start at.
    pub addr: u64,
    /// 0 (any length), 1, 2, 4 or 8.
    pub len: u32,
    /// The value a write must carry; `None`: any (no `DATAMATCH`).
    pub datamatch: Option<u64>,
}

/// `ioeventfd_bus_from_flags()`.
pub fn bus_from_flags(flags: u32) -> BusKind {
    if flags & IOEVENTFD_FLAG_PIO != 0 {
        BusKind::Pio
    } else if flags & IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY != 0 {
        BusKind::CcwNotify
    } else {
        BusKind::Mmio
    }
}

/// The request's ioeventfd. Without `DATAMATCH` the `datamatch` field is
/// not looked at (a wildcard), as KVM does.
pub fn ioeventfd_from(flags: u32, addr: u64, len: u32, datamatch: u64) -> Ioeventfd {
    Ioeventfd {
        bus: bus_from_flags(flags),
        addr,
        len,
        datamatch: (flags & IOEVENTFD_FLAG_DATAMATCH != 0).then_some(datamatch),
    }
}

/// `kvm_assign_ioeventfd()`'s checks, in its order, before the fd is even
/// looked at: all of them are `EINVAL`. `false`: refused.
pub fn assign_valid(flags: u32, addr: u64, len: u32) -> bool {
    matches!(len, 0 | 1 | 2 | 4 | 8)
        && addr.checked_add(u64::from(len)).is_some()
        && flags & !IOEVENTFD_VALID_FLAGS == 0
        && !(len == 0 && flags & IOEVENTFD_FLAG_DATAMATCH != 0)
}

impl Ioeventfd {
    /// The range it occupies on its bus.
    pub fn range(&self) -> IoRange {
        IoRange {
            addr: self.addr,
            len: self.len,
        }
    }

    /// `ioeventfd_in_range()`: whether a write of `data` (`len` bytes,
    /// little-endian) at `addr` signals it.
    pub fn hits(&self, addr: u64, len: u32, data: u64) -> bool {
        if addr != self.addr {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        if len != self.len {
            return false;
        }
        let Some(want) = self.datamatch else {
            return true;
        };
        let value = match len {
            1 => data & 0xff,
            2 => data & 0xffff,
            4 => data & 0xffff_ffff,
            8 => data,
            _ => return false,
        };
        value == want
    }

    /// `ioeventfd_check_collision()`: whether `self` and `other` may not
    /// both be assigned (`EEXIST`): the same bus and address, and either
    /// has no length, or the same length and either is a wildcard or both
    /// match the same value. The eventfd does not matter.
    pub fn collides(&self, other: &Ioeventfd) -> bool {
        self.bus == other.bus
            && self.addr == other.addr
            && (self.len == 0
                || other.len == 0
                || (self.len == other.len
                    && match (self.datamatch, other.datamatch) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }))
    }

    /// `kvm_deassign_ioeventfd_idx()`: whether a deassign request
    /// described by `request` (its eventfd matched by the caller) removes
    /// `self`: the same bus, address, length and wildcard-ness, and for a
    /// datamatch the same value.
    pub fn deassigned_by(&self, request: &Ioeventfd) -> bool {
        self.bus == request.bus
            && self.addr == request.addr
            && self.len == request.len
            && self.datamatch == request.datamatch
    }
}

/// `struct kvm_coalesced_mmio_zone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Zone {
    /// First address (a port for a PIO zone).
    pub addr: u64,
    /// Size in bytes.
    pub size: u32,
    /// A PIO zone (on the PIO bus) rather than MMIO.
    pub pio: bool,
}

/// The `pio` field of `KVM_(UN)REGISTER_COALESCED_MMIO`: only 0 or 1
/// (`EINVAL` otherwise).
pub fn zone_pio(pio: u32) -> Option<bool> {
    match pio {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

impl Zone {
    /// The range it occupies on its bus.
    pub fn range(&self) -> IoRange {
        IoRange {
            addr: self.addr,
            len: self.size,
        }
    }

    /// `coalesced_mmio_in_range()`: whether `len` bytes at `addr` lie
    /// wholly in the zone. `len` is a C `int` there: a length of 2 GiB or
    /// more is negative, and never in range.
    pub fn contains(&self, addr: u64, len: u32) -> bool {
        if len > i32::MAX as u32 {
            return false;
        }
        let Some(end) = addr.checked_add(u64::from(len)) else {
            return false;
        };
        addr >= self.addr && end <= self.addr.wrapping_add(u64::from(self.size))
    }

    /// Whether `KVM_UNREGISTER_COALESCED_MMIO` of `request` removes this
    /// zone: the same kind, and the request's range lies within the zone.
    /// (Every such zone goes, not only an exact match.)
    pub fn unregistered_by(&self, request: &Zone) -> bool {
        self.pio == request.pio && self.contains(request.addr, request.size)
    }
}

/// Where `coalesced_mmio_write()` puts its entry, given the ring's
/// `first` and `last` as userspace left them: `last`, unless that is out of
/// range or the ring is full (one entry is always left free, so that a
/// full ring differs from an empty one): then `None`, and the write goes to
/// userspace as an ordinary exit.
pub fn ring_slot(first: u32, last: u32) -> Option<u32> {
    if last >= COALESCED_MMIO_MAX || (last + 1) % COALESCED_MMIO_MAX == first {
        None
    } else {
        Some(last)
    }
}

/// `last` after an entry was put at `slot`.
pub fn ring_next(slot: u32) -> u32 {
    (slot + 1) % COALESCED_MMIO_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(addr: u64, len: u32) -> IoRange {
        IoRange { addr, len }
    }

    #[test]
    fn bus_order_and_offers() {
        // An access within a device, or at the address of a length-0 one.
        assert!(offered(r(0x1000, 4), r(0x1000, 8)));
        assert!(offered(r(0x1004, 4), r(0x1000, 8)));
        assert!(!offered(r(0x1006, 4), r(0x1000, 8)));
        assert!(!offered(r(0xfff, 2), r(0x1000, 8)));
        assert!(offered(r(0x1000, 8), r(0x1000, 0)));
        assert!(!offered(r(0x1001, 1), r(0x1000, 0)));
        // By address, then by end; ties go after what is there.
        let bus = [r(0x10, 0), r(0x10, 4), r(0x20, 2)];
        assert_eq!(1, insert_index(bus.iter().copied(), r(0x10, 2)));
        assert_eq!(2, insert_index(bus.iter().copied(), r(0x10, 4)));
        assert_eq!(0, insert_index(bus.iter().copied(), r(0x8, 1)));
        assert_eq!(3, insert_index(bus.iter().copied(), r(0x30, 1)));
    }

    #[test]
    fn assign_checks() {
        assert!(assign_valid(0, 0x1000, 4));
        assert!(assign_valid(IOEVENTFD_FLAG_PIO, 0x10, 0));
        assert!(!assign_valid(0, 0x1000, 3));
        assert!(!assign_valid(0, 0x1000, 16));
        assert!(!assign_valid(0, u64::MAX - 1, 4));
        assert!(assign_valid(0, u64::MAX, 0));
        assert!(!assign_valid(1 << 5, 0x1000, 4));
        assert!(assign_valid(1 << 4, 0x1000, 4));
        assert!(!assign_valid(IOEVENTFD_FLAG_DATAMATCH, 0x1000, 0));
        assert!(assign_valid(IOEVENTFD_FLAG_DEASSIGN, 0x1000, 4));
    }

    #[test]
    fn hits_and_datamatch() {
        let wild = ioeventfd_from(IOEVENTFD_FLAG_PIO, 0x10, 2, 77);
        assert_eq!(None, wild.datamatch);
        assert_eq!(BusKind::Pio, wild.bus);
        assert!(wild.hits(0x10, 2, 0x1234));
        assert!(!wild.hits(0x10, 1, 0x12));
        assert!(!wild.hits(0x11, 2, 0x12));
        let dm = ioeventfd_from(IOEVENTFD_FLAG_DATAMATCH, 0x1000, 4, 0xabcd);
        assert_eq!(BusKind::Mmio, dm.bus);
        assert!(dm.hits(0x1000, 4, 0xabcd));
        assert!(dm.hits(0x1000, 4, 0xffff_ffff_0000_abcd));
        assert!(!dm.hits(0x1000, 4, 0xabce));
        let any = ioeventfd_from(0, 0x2000, 0, 0);
        assert!(any.hits(0x2000, 1, 5));
        assert!(any.hits(0x2000, 8, 5));
        assert!(!any.hits(0x2001, 1, 5));
    }

    #[test]
    fn collisions_and_deassign() {
        let a = ioeventfd_from(IOEVENTFD_FLAG_DATAMATCH, 0x1000, 4, 1);
        let b = ioeventfd_from(IOEVENTFD_FLAG_DATAMATCH, 0x1000, 4, 2);
        let w = ioeventfd_from(0, 0x1000, 4, 0);
        let z = ioeventfd_from(0, 0x1000, 0, 0);
        let other_len = ioeventfd_from(0, 0x1000, 2, 0);
        let pio = ioeventfd_from(IOEVENTFD_FLAG_PIO, 0x1000, 4, 0);
        assert!(!a.collides(&b));
        assert!(a.collides(&a));
        assert!(a.collides(&w));
        assert!(z.collides(&other_len));
        assert!(!w.collides(&other_len));
        assert!(!w.collides(&pio));
        assert!(a.deassigned_by(&a));
        assert!(!a.deassigned_by(&b));
        assert!(!a.deassigned_by(&w));
        assert!(!w.deassigned_by(&a));
    }

    #[test]
    fn zones() {
        assert_eq!(Some(true), zone_pio(1));
        assert_eq!(None, zone_pio(2));
        let z = Zone {
            addr: 0x1000,
            size: 0x100,
            pio: false,
        };
        assert!(z.contains(0x1000, 8));
        assert!(z.contains(0x10f8, 8));
        assert!(!z.contains(0x10f9, 8));
        assert!(!z.contains(0xfff, 1));
        assert!(!z.contains(0x1000, 0x8000_0000));
        assert!(!z.contains(u64::MAX, 2));
        let inner = Zone {
            addr: 0x1010,
            size: 0x10,
            pio: false,
        };
        assert!(z.unregistered_by(&inner));
        assert!(!inner.unregistered_by(&z));
        assert!(!z.unregistered_by(&Zone { pio: true, ..inner }));
    }

    #[test]
    fn ring() {
        assert_eq!(170, COALESCED_MMIO_MAX);
        assert_eq!(Some(0), ring_slot(0, 0));
        assert_eq!(Some(168), ring_slot(0, 168));
        assert_eq!(None, ring_slot(0, 169));
        assert_eq!(None, ring_slot(5, 4));
        assert_eq!(Some(169), ring_slot(5, 169));
        assert_eq!(None, ring_slot(0, 170));
        assert_eq!(0, ring_next(169));
        assert_eq!(1, ring_next(0));
    }
}

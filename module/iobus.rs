// SPDX-License-Identifier: GPL-2.0

//! A VM's in-kernel I/O buses (KVM's `kvm_io_bus`): the devices a guest
//! write to a port or to MMIO is offered to before it becomes an exit for
//! userspace. rkvm has two kinds, both of KVM's `virt/kvm`:
//!
//! - `KVM_IOEVENTFD`: a write that matches signals an eventfd;
//! - coalesced MMIO/PIO zones (`KVM_REGISTER_COALESCED_MMIO`): a write in
//!   a zone is appended to the VM's ring page (mapped by every vCPU fd at
//!   `KVM_COALESCED_MMIO_PAGE_OFFSET`) while it has room.
//!
//! Either way the guest goes on without an exit. The rules (ranges,
//! datamatch, collisions, the ring's indices) are in `pure::iobus`.

use core::sync::atomic::{
    fence,
    Ordering, //
};

use kernel::{
    page::Page,
    prelude::*, //
};

use crate::{
    pure::iobus::{
        self,
        BusKind,
        IoRange,
        Ioeventfd,
        Zone, //
    },
    sys::{
        self,
        EventFd, //
    }, //
};

enum Kind {
    Ioeventfd(Ioeventfd, EventFd),
    Zone(Zone),
}

struct Device {
    range: IoRange,
    kind: Kind,
}

/// One bus: its devices in KVM's order (`pure::iobus::insert_index`).
#[derive(Default)]
struct Bus {
    devices: KVec<Device>,
}

impl Bus {
    fn insert(&mut self, device: Device) -> Result {
        let at = iobus::insert_index(self.devices.iter().map(|d| d.range), device.range);
        self.devices.reserve(1, GFP_KERNEL)?;
        // Within capacity now, and `at` is at most the length.
        self.devices
            .insert_within_capacity(at, device)
            .map_err(|_| ENOMEM)
    }

    /// `kvm_io_bus_register_dev()`'s limit: `ENOSPC` once the bus holds
    /// `NR_IOBUS_DEVS` devices other than ioeventfds, whatever the new
    /// device is.
    fn check_room(&self) -> Result {
        let counted = self
            .devices
            .iter()
            .filter(|d| !matches!(d.kind, Kind::Ioeventfd(..)))
            .count();
        if counted > iobus::NR_IOBUS_DEVS - 1 {
            return Err(ENOSPC);
        }
        Ok(())
    }
}

/// The buses of one VM and its coalesced ring page.
pub(crate) struct IoBuses {
    pio: Bus,
    mmio: Bus,
    ccw: Bus,
    /// `struct kvm_coalesced_mmio_ring`: one zeroed page, shared with
    /// userspace (it reads entries and advances `first`).
    ring: Page,
}

/// Offsets in the ring page (`struct kvm_coalesced_mmio_ring`).
const RING_FIRST: usize = 0;
const RING_LAST: usize = 4;

impl IoBuses {
    pub(crate) fn new() -> Result<Self> {
        Ok(IoBuses {
            pio: Bus::default(),
            mmio: Bus::default(),
            ccw: Bus::default(),
            ring: Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?,
        })
    }

    /// The ring page, for the vCPU mmap.
    pub(crate) fn ring(&self) -> &Page {
        &self.ring
    }

    fn bus_mut(&mut self, kind: BusKind) -> &mut Bus {
        match kind {
            BusKind::Pio => &mut self.pio,
            BusKind::Mmio => &mut self.mmio,
            BusKind::CcwNotify => &mut self.ccw,
        }
    }

    /// `KVM_IOEVENTFD` without `DEASSIGN`, once the request was checked
    /// (`pure::iobus::assign_valid`): `EEXIST` if it collides with one
    /// assigned already, then `ENOSPC` if the bus is full (of other devices:
    /// ioeventfds are not counted, but a bus full of zones takes none).
    pub(crate) fn assign(&mut self, ev: Ioeventfd, fd: EventFd) -> Result {
        let bus = self.bus_mut(ev.bus);
        let collides = bus.devices.iter().any(|d| match &d.kind {
            Kind::Ioeventfd(other, _) => other.collides(&ev),
            Kind::Zone(_) => false,
        });
        if collides {
            return Err(EEXIST);
        }
        bus.check_room()?;
        bus.insert(Device {
            range: ev.range(),
            kind: Kind::Ioeventfd(ev, fd),
        })
    }

    /// `KVM_IOEVENTFD` with `DEASSIGN`: the ioeventfd `request` describes,
    /// on eventfd `fd`, goes (`ENOENT` if there is none).
    pub(crate) fn deassign(&mut self, request: &Ioeventfd, fd: &EventFd) -> Result {
        let bus = self.bus_mut(request.bus);
        let found = bus.devices.iter().position(|d| match &d.kind {
            Kind::Ioeventfd(ev, efd) => efd.same(fd) && ev.deassigned_by(request),
            Kind::Zone(_) => false,
        });
        let i = found.ok_or(ENOENT)?;
        bus.devices.remove(i).map_err(|_| ENOENT)?;
        Ok(())
    }

    /// `KVM_REGISTER_COALESCED_MMIO`: `ENOSPC` once the bus has
    /// `NR_IOBUS_DEVS` devices other than ioeventfds.
    pub(crate) fn register_zone(&mut self, zone: Zone) -> Result {
        let bus = self.bus_mut(if zone.pio {
            BusKind::Pio
        } else {
            BusKind::Mmio
        });
        bus.check_room()?;
        bus.insert(Device {
            range: zone.range(),
            kind: Kind::Zone(zone),
        })
    }

    /// `KVM_UNREGISTER_COALESCED_MMIO`: every zone of that kind the
    /// request's range lies in goes (none is no error).
    pub(crate) fn unregister_zone(&mut self, request: &Zone) {
        let bus = self.bus_mut(if request.pio {
            BusKind::Pio
        } else {
            BusKind::Mmio
        });
        bus.devices
            .retain(|d| !matches!(&d.kind, Kind::Zone(z) if z.unregistered_by(request)));
    }

    /// A guest write of `len` bytes of `data` (little-endian) at `addr` on
    /// bus `kind`: offered to each device whose range holds it, in bus
    /// order, until one takes it (`kvm_io_bus_write()`). Whether one did;
    /// if not, the write goes to userspace.
    pub(crate) fn write(&self, kind: BusKind, addr: u64, len: u8, data: [u8; 8]) -> bool {
        let bus = match kind {
            BusKind::Pio => &self.pio,
            BusKind::Mmio => &self.mmio,
            BusKind::CcwNotify => &self.ccw,
        };
        let access = IoRange {
            addr,
            len: u32::from(len),
        };
        let value = u64::from_le_bytes(data);
        for d in bus
            .devices
            .iter()
            .filter(|d| iobus::offered(access, d.range))
        {
            let taken = match &d.kind {
                Kind::Ioeventfd(ev, fd) => {
                    let hit = ev.hits(addr, access.len, value);
                    if hit {
                        fd.signal();
                    }
                    hit
                }
                Kind::Zone(zone) => {
                    zone.contains(addr, access.len) && self.append(zone.pio, addr, len, &data)
                }
            };
            if taken {
                return true;
            }
        }
        false
    }

    /// `coalesced_mmio_write()`: the entry goes at `last` unless the ring is
    /// full (or userspace left `last` out of range); then `last` moves on.
    /// The caller's lock (the VM's bus lock) orders the writers, as KVM's
    /// `ring_lock`.
    fn append(&self, pio: bool, addr: u64, len: u8, data: &[u8; 8]) -> bool {
        let base = sys::page_address(&self.ring);
        // SAFETY: the ring page is ours, allocated zeroed with the buses and
        // alive while `self` is; the header's two u32 are at offsets 0 and
        // 4, aligned. Userspace may write them at any time: each is read
        // once, volatile.
        let (first, last) = unsafe {
            (
                base.add(RING_FIRST).cast::<u32>().read_volatile(),
                base.add(RING_LAST).cast::<u32>().read_volatile(),
            )
        };
        let Some(slot) = iobus::ring_slot(first, last) else {
            return false;
        };
        let entry = iobus::COALESCED_RING_HEADER + slot as usize * iobus::COALESCED_ENTRY_SIZE;
        let n = usize::from(len).min(data.len());
        // SAFETY: `slot` is below `COALESCED_MMIO_MAX`, so the 24-byte entry
        // at `entry` lies in the page (`pure::iobus` asserts the sizes);
        // its fields (`phys_addr` u64 at 0, `len` u32 at 8, `pio` u32 at
        // 12, `data` at 16) are naturally aligned. Written volatile, as
        // userspace may be reading the page.
        unsafe {
            let e = base.add(entry);
            e.cast::<u64>().write_volatile(addr);
            e.add(8).cast::<u32>().write_volatile(u32::from(len));
            e.add(12).cast::<u32>().write_volatile(u32::from(pio));
            for (i, &b) in data.iter().take(n).enumerate() {
                e.add(16 + i).write_volatile(b);
            }
        }
        // The entry before the index that publishes it (KVM's smp_wmb()).
        fence(Ordering::Release);
        // SAFETY: as for the header above.
        unsafe {
            base.add(RING_LAST)
                .cast::<u32>()
                .write_volatile(iobus::ring_next(slot))
        };
        true
    }
}

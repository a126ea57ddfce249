// SPDX-License-Identifier: GPL-2.0

//! Guest memory: the memory slots of a VM and the user pages behind them.
//!
//! Guest memory is the VM owner's own memory (`userspace_addr` of each slot).
//! A page is pinned (`FOLL_LONGTERM`) the first time the guest touches it and
//! stays pinned until its slot is deleted or moved, or the VM dies; so even if
//! userspace unmaps or remaps the range, the page the guest can reach is never
//! freed or reused by the host. The guest then keeps the old page: unlike
//! KVM, which follows the new mapping with MMU notifiers, rkvm chooses the
//! simpler guarantee (documented in Documentation/architecture.md).

use core::sync::atomic::{
    AtomicU64,
    Ordering, //
};

use kernel::{
    prelude::*,
    uaccess::{
        UserPtr,
        UserSlice, //
    }, //
};

use crate::{
    pure::{
        memslot::{
            self,
            Change,
            GfnSpan,
            Refusal,
            Region,
            Slot, //
        },
        paging::{
            GuestPhys,
            HostPhys,
            LARGE_PAGE_SIZE,
            PAGES_PER_LARGE, //
        }, //
    },
    sys::{
        self,
        PinnedPage, //
    }, //
};

/// One installed slot and its pinned pages (`None`: not touched yet).
struct SlotMem {
    slot: Slot,
    pages: KVVec<Option<PinnedPage>>,
    /// With `KVM_MEM_LOG_DIRTY_PAGES`: one bit per page written since the
    /// last `KVM_GET_DIRTY_LOG`, by the guest or by rkvm for it (empty
    /// otherwise). Atomic, so that a write through `&GuestMemory` (the
    /// kvmclock page, accessed bits) marks its page as KVM's
    /// `mark_page_dirty()` does.
    dirty: KVVec<AtomicU64>,
}

/// A dirty bitmap for `slot`: empty unless it logs dirty pages.
fn dirty_bitmap(slot: &Slot) -> Result<KVVec<AtomicU64>> {
    let mut bitmap = KVVec::new();
    if slot.flags & memslot::MEM_LOG_DIRTY_PAGES != 0 {
        let words = usize::try_from(slot.npages.div_ceil(64)).map_err(|_| EINVAL)?;
        bitmap.reserve(words, GFP_KERNEL)?;
        for _ in 0..words {
            bitmap.push(AtomicU64::new(0), GFP_KERNEL)?;
        }
    }
    Ok(bitmap)
}

impl SlotMem {
    /// Marks page `index` of the slot dirty, if the slot logs dirty pages.
    fn mark_dirty(&self, index: u64) {
        let Ok(index) = usize::try_from(index) else {
            return;
        };
        if let Some(word) = self.dirty.get(index / 64) {
            word.fetch_or(1 << (index % 64), Ordering::Relaxed);
        }
    }
}

impl SlotMem {
    /// The pinned page `index` of the slot, pinned now if the guest has
    /// not touched it before. Pinned for writing whenever the slot is
    /// writable, even for a read (a dirty-logged page is first mapped
    /// read-only): the page the guest may write later must be the caller's
    /// own, unshared page, and its unpin must mark it dirty. Must run in the
    /// VM owner's mm.
    fn pin(&mut self, index: usize) -> Result<&PinnedPage> {
        let hva = self.slot.hva(self.slot.base_gfn + index as u64);
        let writable = self.slot.writable();
        let entry = self.pages.get_mut(index).ok_or(EFAULT)?;
        if entry.is_none() {
            *entry = Some(PinnedPage::pin(hva, writable)?);
        }
        entry.as_ref().ok_or(EFAULT)
    }
}

/// The memory slots of one VM (address space 0).
pub(crate) struct GuestMemory {
    slots: KVec<SlotMem>,
    /// The slots' descriptions alone, for `pure::memslot`.
    infos: KVec<Slot>,
    /// Moves on with every change of the slots: a page pinned without the
    /// MMU lock for an older generation is not installed ([`PinRequest`]).
    generation: u64,
}

/// A page the guest touches for the first time, to be pinned without the
/// MMU lock: pinning (`get_user_pages`) may fault the page in, allocate and
/// zero it (2 MiB of it for a huge page), and vCPUs faulting at the same
/// time should not wait for each other's. KVM, too, resolves the host page
/// before it takes its MMU lock, and checks afterwards that no change of
/// the mappings came in between (its invalidation sequence); here the
/// slots' generation plays that part ([`GuestMemory::install`]).
pub(crate) struct PinRequest {
    generation: u64,
    id: u16,
    index: usize,
    hva: u64,
    writable: bool,
}

impl PinRequest {
    /// Pins the page, without any lock. Must run in the VM owner's mm.
    pub(crate) fn pin(&self) -> Result<PinnedPage> {
        PinnedPage::pin(self.hva, self.writable)
    }
}

/// What the guest reaches at a guest physical address.
pub(crate) enum Backing {
    /// RAM: a host page, to be mapped writable or not (`KVM_MEM_READONLY`,
    /// or a dirty-logged page not written yet).
    Ram(HostPhys, bool),
    /// No slot, or a write to a read-only slot: an MMIO access for userspace.
    Mmio,
}

/// A slot taken out of the VM by `KVM_SET_USER_MEMORY_REGION` (or nothing):
/// its pages stay pinned until this is dropped, which the MMU does only
/// when no vCPU can reach them any more (`mmu::Unmapped`).
pub(crate) struct RetiredSlot {
    /// Held only to be dropped (unpinned) at the right time.
    _slot: Option<SlotMem>,
}

impl RetiredSlot {
    pub(crate) fn none() -> Self {
        RetiredSlot { _slot: None }
    }
}

impl GuestMemory {
    pub(crate) fn new() -> Self {
        GuestMemory {
            slots: KVec::new(),
            infos: KVec::new(),
            generation: 0,
        }
    }

    /// Applies `KVM_SET_USER_MEMORY_REGION`. Returns, if mappings may have
    /// changed, the frames whose mappings the MMU must remove and the slot
    /// it deleted (if any), for the MMU to free. A new slot changes no
    /// mapping: nothing was mapped where it goes (a guest access there
    /// was MMIO, which no table keeps).
    pub(crate) fn set_region(&mut self, region: &Region) -> Result<Option<(GfnSpan, RetiredSlot)>> {
        let valid_flags = memslot::MEM_READONLY | memslot::MEM_LOG_DIRTY_PAGES;
        let change = memslot::plan(region, valid_flags, &self.infos, sys::access_ok).map_err(
            |r| match r {
                Refusal::Invalid => EINVAL,
                Refusal::Overlap => EEXIST,
            },
        )?;
        if !matches!(change, Change::Unchanged) {
            self.generation = self.generation.wrapping_add(1);
        }
        match change {
            Change::Unchanged => Ok(None),
            Change::FlagsOnly { id, flags } => {
                // Dirty logging turned on or off: pages must be write-protected
                // again (or may now be mapped writable), so mappings change.
                let i = self.index(id).ok_or(EINVAL)?;
                self.infos[i].flags = flags;
                let mem = &mut self.slots[i];
                mem.slot.flags = flags;
                mem.dirty = dirty_bitmap(&mem.slot)?;
                Ok(Some((mem.slot.span(), RetiredSlot::none())))
            }
            Change::Create(slot) => {
                let npages = usize::try_from(slot.npages).map_err(|_| EINVAL)?;
                let mut pages = KVVec::with_capacity(npages, GFP_KERNEL)?;
                for _ in 0..npages {
                    pages.push(None, GFP_KERNEL)?;
                }
                let dirty = dirty_bitmap(&slot)?;
                self.slots
                    .push(SlotMem { slot, pages, dirty }, GFP_KERNEL)?;
                self.infos.push(slot, GFP_KERNEL)?;
                Ok(None)
            }
            Change::Delete(id) => {
                let i = self.index(id).ok_or(EINVAL)?;
                // Its pages stay pinned until vCPUs in guest mode can no
                // longer reach them: the MMU drops it (`mmu::Unmapped`).
                self.infos.remove(i).map_err(|_| EINVAL)?;
                let slot = self.slots.remove(i).map_err(|_| EINVAL)?;
                Ok(Some((slot.slot.span(), RetiredSlot { _slot: Some(slot) })))
            }
            Change::Move { id, base_gfn } => {
                // What was mapped at the old place goes; nothing was mapped
                // at the new one (as for a new slot).
                let i = self.index(id).ok_or(EINVAL)?;
                let old = self.slots[i].slot.span();
                self.slots[i].slot.base_gfn = base_gfn;
                self.infos[i].base_gfn = base_gfn;
                Ok(Some((old, RetiredSlot::none())))
            }
        }
    }

    fn index(&self, id: u16) -> Option<usize> {
        self.infos.iter().position(|s| s.id == id)
    }

    /// What backs `gpa` for an access (`write` or not), pinning its page on
    /// first use and logging a write to a dirty-logged slot. Must run in the
    /// VM owner's mm (the vCPU ioctl checks that).
    pub(crate) fn backing(&mut self, gpa: GuestPhys, write: bool) -> Result<Backing> {
        let gfn = gpa.gfn();
        let Some(mem) = self.slots.iter_mut().find(|m| m.slot.contains(gfn)) else {
            return Ok(Backing::Mmio);
        };
        if write && !mem.slot.writable() {
            return Ok(Backing::Mmio);
        }
        let index = (gfn - mem.slot.base_gfn) as usize;
        // A dirty-logged page is mapped read-only until the guest writes it;
        // that write faults here and is logged.
        let logging = !mem.dirty.is_empty();
        if logging && write {
            mem.mark_dirty(index as u64);
        }
        let writable = mem.slot.writable() && (!logging || write);
        Ok(Backing::Ram(mem.pin(index)?.phys(), writable))
    }

    /// What pinning the page behind `gpa` takes, if it is RAM the guest has
    /// not touched yet and this access (`write` or not) will map it (a
    /// write to read-only memory is MMIO: nothing to pin; see
    /// [`PinRequest`]).
    pub(crate) fn unpinned(&self, gpa: GuestPhys, write: bool) -> Option<PinRequest> {
        let gfn = gpa.gfn();
        let mem = self.slots.iter().find(|m| m.slot.contains(gfn))?;
        if write && !mem.slot.writable() {
            return None;
        }
        let index = usize::try_from(gfn - mem.slot.base_gfn).ok()?;
        if mem.pages.get(index)?.is_some() {
            return None;
        }
        Some(PinRequest {
            generation: self.generation,
            id: mem.slot.id,
            index,
            hva: mem.slot.hva(gfn),
            // As `SlotMem::pin` pins it.
            writable: mem.slot.writable(),
        })
    }

    /// Keeps `page`, pinned for `request`, as the page behind its guest
    /// frame; unless the slots changed since the request was made, or
    /// another vCPU pinned the frame first: then `page` is unpinned, and
    /// the fault goes on as if there had been no request.
    pub(crate) fn install(&mut self, request: &PinRequest, page: PinnedPage) {
        if request.generation != self.generation {
            return;
        }
        let Some(i) = self.index(request.id) else {
            return;
        };
        if let Some(entry @ None) = self.slots[i].pages.get_mut(request.index) {
            *entry = Some(page);
        }
    }

    /// The host page behind `gpa` if the guest has touched it already (it
    /// is pinned), and whether a read may map it writable (a writable slot
    /// that does not log dirty pages): for prefetching mappings without
    /// pinning, populating or logging anything.
    pub(crate) fn pinned(&self, gpa: GuestPhys) -> Option<(HostPhys, bool)> {
        let gfn = gpa.gfn();
        let mem = self.slots.iter().find(|m| m.slot.contains(gfn))?;
        let page = mem
            .pages
            .get((gfn - mem.slot.base_gfn) as usize)?
            .as_ref()?;
        Some((page.phys(), mem.slot.writable() && mem.dirty.is_empty()))
    }

    /// Whether the 2 MiB-aligned guest range around `gpa` can be one large
    /// leaf for this access, and if so its base, host address and
    /// writability. It can when one slot covers the whole range, the slot
    /// does not log dirty pages (that needs 4 KiB write tracking), the
    /// access is not a write to read-only memory (that is MMIO), and the
    /// caller's pages there are one 2 MiB-aligned, physically contiguous
    /// range: a huge page (hugetlbfs, or a transparent huge page). Each of
    /// the 512 pages is then pinned, as if the guest had touched it.
    pub(crate) fn large_backing(
        &mut self,
        gpa: GuestPhys,
        write: bool,
    ) -> Result<Option<(GuestPhys, HostPhys, bool)>> {
        const PAGES: u64 = PAGES_PER_LARGE;
        let gfn = gpa.gfn();
        let Some(mem) = self.slots.iter_mut().find(|m| m.slot.contains(gfn)) else {
            return Ok(None);
        };
        let first = gfn & !(PAGES - 1);
        let slot = mem.slot;
        if !mem.dirty.is_empty()
            || (write && !slot.writable())
            || first < slot.base_gfn
            || first + PAGES > slot.base_gfn + slot.npages
            || slot.hva(first) % LARGE_PAGE_SIZE != 0
        {
            return Ok(None);
        }
        // The faulting page first: unless it is part of a huge page, the
        // others are not worth pinning (that would populate them).
        if !mem.pin((gfn - slot.base_gfn) as usize)?.in_huge_folio() {
            return Ok(None);
        }
        let start = (first - slot.base_gfn) as usize;
        let base = mem.pin(start)?.phys();
        if base.0 % LARGE_PAGE_SIZE != 0 {
            return Ok(None);
        }
        for i in 1..PAGES as usize {
            // A page that cannot be pinned (a hole in the caller's mapping)
            // leaves it to the 4 KiB path, which reports the error.
            match mem.pin(start + i) {
                Ok(page) if page.phys().0 == base.0 + (i as u64) * memslot::PAGE_SIZE => {}
                _ => return Ok(None),
            }
        }
        Ok(Some((GuestPhys(first << 12), base, slot.writable())))
    }

    /// `KVM_GET_DIRTY_LOG`: slot `id`'s bitmap, cleared, and the slot's
    /// frames. ENOENT if there is no such slot or it does not log dirty
    /// pages. The caller must write-protect those frames again (the MMU
    /// removes their mappings).
    pub(crate) fn take_dirty_log(&mut self, id: u16) -> Result<(KVVec<u64>, GfnSpan)> {
        let i = self.index(id).ok_or(ENOENT)?;
        let mem = &mut self.slots[i];
        if mem.dirty.is_empty() {
            return Err(ENOENT);
        }
        let mut out = KVVec::with_capacity(mem.dirty.len(), GFP_KERNEL)?;
        for word in mem.dirty.iter() {
            out.push(word.swap(0, Ordering::Relaxed), GFP_KERNEL)?;
        }
        Ok((out, mem.slot.span()))
    }

    /// Reads guest physical memory as the guest sees it (RAM only, within
    /// one page): from the page the guest runs on if it is pinned, which
    /// stays the guest's even after the owner unmapped or replaced its
    /// mapping; else through the owner's mapping ([`GuestMemory::read`]).
    /// For the instruction behind an exit: it is the one the guest ran.
    pub(crate) fn read_as_guest_sees(&self, gpa: GuestPhys, out: &mut [u8]) -> Result {
        let offset = (gpa.0 & (memslot::PAGE_SIZE - 1)) as usize;
        if offset + out.len() > memslot::PAGE_SIZE as usize {
            return Err(EINVAL);
        }
        let Some((page, _)) = self.pinned(gpa) else {
            return self.read(gpa, out);
        };
        // SAFETY: a pinned page of one of our slots, which `&self` keeps
        // (unpinning takes `&mut self`): 4096 bytes in the direct map, and
        // `offset + out.len()` is within them. The guest may write it at the
        // same time (as with any read of guest memory): bytes are read one
        // by one, volatile.
        let base = unsafe { sys::phys_to_virt(page) };
        for (i, byte) in out.iter_mut().enumerate() {
            // SAFETY: see above.
            *byte = unsafe { base.add(offset + i).read_volatile() };
        }
        Ok(())
    }

    /// The 4- or 8-byte page-table entry at `gpa`, as a walk of the guest's
    /// tables (`pure::walk`) reads it; `None` outside guest RAM.
    pub(crate) fn read_entry(&self, gpa: u64, size: u8) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(GuestPhys(gpa), b.get_mut(..usize::from(size))?)
            .ok()?;
        Some(u64::from_le_bytes(b))
    }

    /// Writes back the accessed and dirty bits `walked` set in the guest's
    /// entries, as the processor does. A table in a read-only slot keeps its
    /// bits clear (the write is dropped).
    pub(crate) fn write_walk_updates(&self, walked: &crate::pure::walk::Walk) {
        for u in walked.updates.iter().flatten() {
            let bytes = u.value.to_le_bytes();
            let _ = self.write(
                GuestPhys(u.gpa),
                bytes.get(..usize::from(u.size)).unwrap_or(&bytes),
            );
        }
    }

    /// Reads guest physical memory (RAM only, within one page) through the
    /// owner's mapping, as KVM does with `copy_from_user()`.
    pub(crate) fn read(&self, gpa: GuestPhys, out: &mut [u8]) -> Result {
        let offset = gpa.0 & (memslot::PAGE_SIZE - 1);
        if offset + out.len() as u64 > memslot::PAGE_SIZE {
            return Err(EINVAL);
        }
        let slot = memslot::lookup(&self.infos, gpa.gfn()).ok_or(EFAULT)?;
        let hva = usize::try_from(slot.hva(gpa.gfn()) + offset).map_err(|_| EFAULT)?;
        UserSlice::new(UserPtr::from_addr(hva), out.len())
            .reader()
            .read_slice(out)
    }

    /// Writes guest physical memory (RAM only, within one page, writable
    /// slots only) through the owner's mapping, and marks the page dirty in
    /// a dirty-logged slot, as KVM's `kvm_write_guest()` does
    /// (`mark_page_dirty()`).
    pub(crate) fn write(&self, gpa: GuestPhys, data: &[u8]) -> Result {
        let offset = gpa.0 & (memslot::PAGE_SIZE - 1);
        if offset + data.len() as u64 > memslot::PAGE_SIZE {
            return Err(EINVAL);
        }
        let gfn = gpa.gfn();
        let mem = self
            .slots
            .iter()
            .find(|m| m.slot.contains(gfn))
            .ok_or(EFAULT)?;
        let slot = &mem.slot;
        if !slot.writable() {
            return Err(EFAULT);
        }
        let hva = usize::try_from(slot.hva(gfn) + offset).map_err(|_| EFAULT)?;
        UserSlice::new(UserPtr::from_addr(hva), data.len())
            .writer()
            .write_slice(data)?;
        mem.mark_dirty(gfn - slot.base_gfn);
        Ok(())
    }
}

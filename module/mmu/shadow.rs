// SPDX-License-Identifier: GPL-2.0

//! Shadow page tables: what the processor walks when a VM runs without
//! nested paging.
//!
//! Each vCPU has one shadow table, mapping the guest's linear addresses to
//! host pages. It starts empty; every access the guest makes to an address
//! not mapped yet is a page fault that rkvm intercepts, and
//! [`Shadow::page_fault`] answers it by walking the guest's own tables in
//! software (`pure::walk`):
//!
//! - the guest's tables do not allow the access: the fault is the guest's,
//!   and is reflected to it with the error code the processor would give;
//! - they allow it and the page is RAM: one 4 KiB shadow leaf is written,
//!   with permissions no wider than the guest's (`pure::shadow::leaf`), and
//!   the accessed and dirty bits are set in the guest's entries as the
//!   processor would set them. The other entries of the same guest page
//!   table are prefetched into the same shadow table where that needs no
//!   bit set and no page pinned (see [`Shadow::prefetch`]);
//! - the page is not RAM (or is a write to read-only memory): MMIO, as with
//!   nested paging.
//!
//! The table has the semantics of a TLB (see `pure/shadow.rs`): it is
//! emptied on every INVLPG and paging-mode change, and when a change to
//! the VM's memory slots removes a frame it may map (it keeps the span of
//! the frames it maps, and the VM's entry gate the spans unmapped); a CR3
//! write empties what is not global. For that, each
//! table below the root belongs to one root entry, and the root entries
//! whose part of the address space maps any page that is not global are
//! known: a CR3 write clears those entries and frees their tables. Its size
//! is bounded: past [`MAX_TABLES`] tables it is emptied and refilled on
//! demand.

use kernel::prelude::*;

use super::{
    EntryGate,
    Table,
    TableTree, //
};
use crate::{
    memory::{
        Backing,
        GuestMemory, //
    },
    pure::{
        memslot::GfnSpan,
        paging::{
            GuestPhys,
            HostPhys,
            Pte,
            LARGE_PAGE_SIZE, //
        },
        shadow::{
            self,
            Flush,
            GuestPaging, //
        },
        walk::{
            self,
            Access,
            Walk, //
        }, //
    }, //
};

/// A software bit (ignored by the processor) in the entry that points at a
/// page directory: some leaf below comes from a guest page larger than 2
/// MiB (1 GiB, or 4 MiB in 32-bit paging), so INVLPG there must clear the
/// whole directory.
const BIG_BELOW: u64 = 1 << 9;

/// Tables (besides the root) one vCPU's shadow may hold: 4 MiB. A Linux
/// guest with 128 MiB needs about 100.
pub(crate) const MAX_TABLES: usize = 1024;

/// What a guest page fault turned out to be.
pub(crate) enum PageFault {
    /// A shadow miss: the page is mapped now, re-enter the guest.
    /// `emptied`: the table was full and was emptied first.
    Fixed {
        /// The table reached [`MAX_TABLES`] and was emptied.
        emptied: bool,
    },
    /// The guest's own fault: reflect it, with this error code.
    Guest(u32),
    /// An access to MMIO at this guest physical address.
    Mmio(GuestPhys),
}

/// A shadow page table of 4 KiB leaves, and the root entry it is under.
#[derive(Clone, Copy)]
struct Leaves(HostPhys, usize);

/// One vCPU's shadow page table.
pub(crate) struct Shadow {
    /// The top table (a PML4 in long mode, or a PAE page-directory-pointer
    /// table, below 4 GiB as a legacy-mode CR3 requires) and every table
    /// below it, tagged with the root entry it belongs to.
    tree: TableTree,
    /// 4 (long mode) or 3 (PAE) levels.
    levels: u8,
    /// The root entries under which a page that is not global is mapped,
    /// one bit each.
    local: [u64; 8],
    /// The VM's mapping epoch the entries are valid in
    /// (`EntryGate::epoch`).
    vm_epoch: u64,
    /// The guest frames the leaves map lie in this span (or nothing is
    /// mapped): an unmapping elsewhere leaves the table as it is.
    mapped: GfnSpan,
    /// How often the table was emptied.
    flushes: u64,
}

impl Shadow {
    pub(crate) fn new() -> Result<Self> {
        Ok(Shadow {
            tree: TableTree::new(Table::new_below_4g()?),
            levels: 3,
            local: [0; 8],
            vm_epoch: 0,
            mapped: GfnSpan::EMPTY,
            flushes: 0,
        })
    }

    /// Brings the table to the VM's epoch `now`: emptied if an unmapping
    /// since may have removed a frame it maps.
    fn catch_up(&mut self, gate: &EntryGate, now: u64) {
        if now == self.vm_epoch {
            return;
        }
        let stale = match gate.unmapped_since(self.vm_epoch, now) {
            Some(unmapped) => unmapped.overlaps(self.mapped),
            None => true,
        };
        if stale {
            self.flush(Flush::All);
        }
        self.vm_epoch = now;
    }

    /// The root for an entry in a guest with `paging`, emptied first if the
    /// format must change or an unmapping since the table's epoch (up to
    /// `vm_epoch`) may have removed what it maps.
    pub(crate) fn prepare(
        &mut self,
        paging: &GuestPaging,
        gate: &EntryGate,
        vm_epoch: u64,
    ) -> HostPhys {
        let levels = paging.shadow_levels();
        if levels != self.levels {
            self.flush(Flush::All);
            self.levels = levels;
        }
        self.catch_up(gate, vm_epoch);
        self.tree.root()
    }

    /// A number that changes whenever entries were removed: the vCPU's TLB
    /// must not keep translations from before.
    pub(crate) fn generation(&self) -> u64 {
        self.flushes
    }

    /// Empties the table (or its translations of pages that are not
    /// global), as a TLB flush empties the TLB.
    pub(crate) fn flush(&mut self, what: Flush) {
        let root = self.tree.root.entries_mut();
        match what {
            Flush::None => return,
            Flush::All => {
                root.fill(0);
                self.tree.clear();
                self.mapped = GfnSpan::EMPTY;
            }
            Flush::NonGlobal => {
                let local = self.local;
                let is_local =
                    |i: usize| local.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0);
                for (i, entry) in root.iter_mut().enumerate() {
                    if is_local(i) {
                        *entry = 0;
                    }
                }
                self.tree.retain(|i| !is_local(i));
            }
        }
        self.local = [0; 8];
        self.flushes = self.flushes.wrapping_add(1);
    }

    /// A guest page fault at `linear` with the processor's `error` code.
    /// `maxphyaddr`: the guest's physical address width.
    /// Called with the MMU lock held (`mem` is the VM's): the table is
    /// brought to the current epoch first, so that the leaf written now,
    /// from the slots as they are, survives until the mappings change again.
    pub(crate) fn page_fault(
        &mut self,
        mem: &mut GuestMemory,
        gate: &EntryGate,
        paging: &GuestPaging,
        maxphyaddr: u32,
        linear: u64,
        error: u64,
    ) -> Result<PageFault> {
        self.catch_up(gate, gate.epoch());
        let access = Access::from_error_code(error);
        let read = |gpa: u64, size: u8| mem.read_entry(gpa, size);
        let walked = match walk::walk(
            paging.mode(),
            paging.cr3,
            linear,
            access,
            paging.controls(maxphyaddr),
            read,
        ) {
            Ok(w) => w,
            Err(code) => return Ok(PageFault::Guest(code)),
        };
        mem.write_walk_updates(&walked);
        let gpa = GuestPhys(walked.gpa);
        match mem.backing(GuestPhys(gpa.0 & !0xfff), access.write)? {
            Backing::Mmio => Ok(PageFault::Mmio(gpa)),
            Backing::Ram(page, host_writable) => {
                let global = shadow::global(paging, walked.global);
                let big = walked.page_size > LARGE_PAGE_SIZE;
                let generation = self.flushes;
                let table = self.map(
                    linear,
                    shadow::leaf(page, &walked, access, host_writable),
                    global,
                    big,
                )?;
                self.mapped = self.mapped.hull(GfnSpan::frame(gpa.gfn()));
                self.prefetch(mem, paging, maxphyaddr, linear, &walked, table);
                Ok(PageFault::Fixed {
                    emptied: self.flushes != generation,
                })
            }
        }
    }

    /// INVLPG of `linear`: removes every translation the guest page around
    /// it may have left. Shadow leaves do not record the size of the guest
    /// page they come from, so the whole 2 MiB around `linear` goes, or the
    /// whole 1 GiB where a larger guest page was mapped.
    pub(crate) fn invlpg(&mut self, linear: u64) {
        let index = |level: u32| ((linear >> (12 + 9 * (level - 1))) & 0x1ff) as usize;
        let top = if self.levels == 3 {
            ((linear >> 30) & 3) as usize
        } else {
            index(4)
        };
        // The entry pointing to the page directory around `linear`.
        let mut upper = (self.tree.root(), top);
        let entry = |tree: &TableTree, (table, index)| tree.entry(table, index).map(Pte);
        if self.levels == 4 {
            match entry(&self.tree, upper) {
                Ok(pml4e) if pml4e.present() => upper = (pml4e.addr(), index(3)),
                _ => return,
            }
        }
        let pointer = match entry(&self.tree, upper) {
            Ok(pointer) if pointer.present() => pointer,
            _ => return,
        };
        if pointer.0 & BIG_BELOW != 0 {
            if let Some(directory) = self.tree.table_mut(pointer.addr()) {
                directory.fill(0);
            }
            if let Ok(e) = self.tree.entry_mut(upper.0, upper.1) {
                *e &= !BIG_BELOW;
            }
        } else if let Ok(pde) = entry(&self.tree, (pointer.addr(), index(2))) {
            if pde.present() {
                if let Some(table) = self.tree.table_mut(pde.addr()) {
                    table.fill(0);
                }
            }
        }
        self.flushes = self.flushes.wrapping_add(1);
    }

    /// After a fault at `linear` that `walked` answered and that was mapped
    /// in shadow page table `table`: fills the table's other empty entries
    /// for the same 2 MiB, from the guest's other entries in the same page
    /// table where the processor could use them as they are (present and
    /// already accessed: nothing to set in the guest's table), or from the
    /// rest of the same large guest page. Host pages are pinned for the 16
    /// entries around the fault (KVM prefetches 8); farther ones only if
    /// the guest touched them before. So after a process switch emptied the
    /// shadow table, or an INVLPG a 2 MiB of it, one fault brings back the
    /// pages around it, not one.
    fn prefetch(
        &mut self,
        mem: &mut GuestMemory,
        paging: &GuestPaging,
        maxphyaddr: u32,
        linear: u64,
        walked: &Walk,
        table: Leaves,
    ) {
        /// Guest entries read at a time.
        const CHUNK: usize = 64;
        /// The block around the fault whose pages may be pinned now.
        const NEAR: usize = 16;
        let span = linear & !(LARGE_PAGE_SIZE - 1);
        let fault_index = ((linear >> 12) & 0x1ff) as usize;
        let ctl = paging.controls(maxphyaddr);
        let mut local = false;
        let mut filled = GfnSpan::EMPTY;
        let Some(leaves) = self.tree.table_mut(table.0) else {
            return;
        };
        // Writes entry `index` of the table for `leaf`; returns whether it
        // wrote one that is not global.
        let mut fill = |mem: &mut GuestMemory, index: usize, leaf: &walk::Leaf| -> bool {
            let Some(entry) = leaves.get_mut(index & 0x1ff) else {
                return false;
            };
            if index == fault_index || Pte(*entry).present() {
                return false;
            }
            let backing = if index / NEAR == fault_index / NEAR {
                match mem.backing(GuestPhys(leaf.page), false) {
                    Ok(Backing::Ram(page, writable)) => Some((page, writable)),
                    _ => None,
                }
            } else {
                mem.pinned(GuestPhys(leaf.page))
            };
            match backing {
                Some((page, host_writable)) => {
                    *entry = shadow::prefetched_leaf(page, leaf, host_writable).0;
                    filled = filled.hull(GfnSpan::frame(GuestPhys(leaf.page).gfn()));
                    !shadow::global(paging, leaf.global)
                }
                None => false,
            }
        };
        match walked.leaf_table {
            None => {
                for index in 0..512 {
                    if let Some(leaf) =
                        shadow::same_page(walked, linear, span + ((index as u64) << 12))
                    {
                        local |= fill(mem, index, &leaf);
                    }
                }
            }
            Some(t) => {
                let size = usize::from(t.entry_size);
                // The guest entries for the 2 MiB of the shadow table: a
                // whole table of 8-byte entries, or half of one of 4-byte ones.
                let first = t.index & !511;
                for chunk in 0..512 / CHUNK {
                    let mut buf = [0u8; CHUNK * 8];
                    let at = t.gpa + ((first + chunk * CHUNK) * size) as u64;
                    let Some(dest) = buf.get_mut(..CHUNK * size) else {
                        break;
                    };
                    if mem.read(GuestPhys(at), dest).is_err() {
                        break;
                    }
                    for (i, raw) in dest.chunks_exact(size).enumerate() {
                        let mut word = [0u8; 8];
                        word[..size].copy_from_slice(raw);
                        if let Some(leaf) = walk::neighbour(
                            u64::from_le_bytes(word),
                            t.entry_size,
                            walked.upper,
                            ctl,
                        ) {
                            local |= fill(mem, chunk * CHUNK + i, &leaf);
                        }
                    }
                }
            }
        }
        self.mapped = self.mapped.hull(filled);
        if local {
            self.mark_local(table.1);
        }
    }

    /// Root entry `top` now has a page that is not global below it.
    fn mark_local(&mut self, top: usize) {
        if let Some(word) = self.local.get_mut(top / 64) {
            *word |= 1 << (top % 64);
        }
    }

    /// Writes the 4 KiB leaf for `linear`, creating tables on the way.
    /// `global`: the leaf survives CR3 writes; `big`: it comes from a guest
    /// page larger than 2 MiB. Returns the page table the leaf is in.
    fn map(&mut self, linear: u64, leaf: Pte, global: bool, big: bool) -> Result<Leaves> {
        if self.tree.len() + self.levels as usize > MAX_TABLES {
            self.flush(Flush::All);
        }
        let index = |level: u32| ((linear >> (12 + 9 * (level - 1))) & 0x1ff) as usize;
        let root = self.tree.root();
        // The four PDPTEs of PAE paging cover the 32-bit linear address space.
        let top = if self.levels == 3 {
            ((linear >> 30) & 3) as usize
        } else {
            index(4)
        };
        let mut upper = (root, top);
        let mut table = self.next_table(root, top, self.levels == 3, top)?;
        if self.levels == 4 {
            upper = (table, index(3));
            table = self.next_table(table, index(3), false, top)?;
        }
        if big {
            *self.tree.entry_mut(upper.0, upper.1)? |= BIG_BELOW;
        }
        table = self.next_table(table, index(2), false, top)?;
        *self.tree.entry_mut(table, index(1))? = leaf.0;
        if !global {
            self.mark_local(top);
        }
        Ok(Leaves(table, top))
    }

    /// The table entry `index` of `table` points to, created if empty
    /// (`pdpte`: as a legacy PAE PDPTE, with no permission bits) as a table
    /// of root entry `top`.
    fn next_table(
        &mut self,
        table: HostPhys,
        index: usize,
        pdpte: bool,
        top: usize,
    ) -> Result<HostPhys> {
        let entry = Pte(self.tree.entry(table, index & 0x1ff)?);
        if entry.present() {
            return Ok(entry.addr());
        }
        let pa = self.tree.add(top)?;
        let entry = if pdpte {
            Pte::pdpte(pa)
        } else {
            Pte::table(pa)
        };
        *self.tree.entry_mut(table, index & 0x1ff)? = entry.0;
        Ok(pa)
    }
}

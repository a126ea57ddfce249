// SPDX-License-Identifier: GPL-2.0

//! The guest's physical memory as the hardware sees it: memory slots plus the
//! translation structure built from them.
//!
//! Two modes, chosen per VM (`tdp` module parameter, or `KVM_ENABLE_CAP`
//! with rkvm's `KVM_CAP_RKVM_MMU`):
//!
//! - `tdp`: two-dimensional paging (NPT on AMD). One nested page table per
//!   VM maps guest physical to host physical addresses; the guest's own page
//!   tables are the hardware's business.
//! - `shadow`: no nested paging. Each vCPU has a shadow page table mapping
//!   the guest's linear addresses straight to host pages, built from the
//!   guest's page tables walked in software ([`shadow`]).
//!
//! Both take their pages from the same memory slots ([`GuestMemory`]), with
//! the same rules for MMIO, read-only slots and dirty logging.

pub(crate) mod shadow;
pub(crate) mod tdp;

use core::sync::atomic::AtomicU64;

use kernel::{
    prelude::*,
    sync::Arc, //
};

use crate::{
    memory::{
        Backing,
        GuestMemory, //
    },
    pure::{
        memslot::Region,
        paging::{
            GuestPhys,
            HostPhys,
            TdpFormat, //
        },
        shadow::{
            Flush,
            GuestPaging, //
        }, //
    },
    sys::PageBox, //
};

use shadow::{
    PageFault,
    Shadow, //
};

/// What one vCPU enters the guest with: the VM's nested page table, or its
/// own shadow page table. The run loop talks to the MMU through this alone.
pub(crate) enum VcpuMmu {
    /// Nested paging: the VM's table ([`Mmu::root`]); the guest's own page
    /// tables, faults and TLB flushes are the processor's business.
    Tdp,
    /// Shadow paging: this vCPU's table, kept by rkvm.
    Shadow(Shadow),
}

impl VcpuMmu {
    pub(crate) fn new(shadow: bool) -> Result<Self> {
        Ok(if shadow {
            VcpuMmu::Shadow(Shadow::new()?)
        } else {
            VcpuMmu::Tdp
        })
    }

    /// The root of the table to enter the guest with, and the TLB epoch
    /// (see `ArchVcpu::run`), for a guest whose paging registers are `paging`.
    pub(crate) fn entry(&mut self, vm: &Mmu, paging: &GuestPaging) -> (HostPhys, u64) {
        match self {
            VcpuMmu::Tdp => (vm.root(), vm.tlb_epoch()),
            VcpuMmu::Shadow(shadow) => {
                let root = shadow.prepare(paging, vm.tlb_epoch());
                (root, vm.tlb_epoch().wrapping_add(shadow.generation()))
            }
        }
    }

    /// The guest changed its paging state or flushed its TLB: `what` goes
    /// from the shadow table. Returns whether there was one.
    pub(crate) fn flush(&mut self, what: Flush) -> bool {
        match self {
            VcpuMmu::Tdp => false,
            VcpuMmu::Shadow(shadow) => {
                shadow.flush(what);
                what != Flush::None
            }
        }
    }

    /// The guest's INVLPG of `linear`.
    pub(crate) fn invlpg(&mut self, linear: u64) {
        if let VcpuMmu::Shadow(shadow) = self {
            shadow.invlpg(linear);
        }
    }

    /// A guest page fault at `addr` with error code `error` (intercepted
    /// with shadow paging only: `None` otherwise).
    pub(crate) fn page_fault(
        &mut self,
        vm: &mut Mmu,
        paging: &GuestPaging,
        maxphyaddr: u32,
        addr: u64,
        error: u64,
    ) -> Result<Option<PageFault>> {
        match self {
            VcpuMmu::Tdp => Ok(None),
            VcpuMmu::Shadow(shadow) => shadow
                .page_fault(&mut vm.memory, paging, maxphyaddr, addr, error)
                .map(Some),
        }
    }
}

/// A page table: a page of 512 entries, which borrow from it.
///
/// The processor reads the entries (and sets accessed and dirty bits in
/// them) only while a vCPU runs on the table, and a vCPU does not run while
/// the table's owner is borrowed (the MMU lock for `Tdp`, the vCPU's state
/// lock for `Shadow`).
struct Table(PageBox<[u64; 512]>);

impl Table {
    fn new() -> Result<Self> {
        Ok(Table(PageBox::new()?))
    }

    /// A table below 4 GiB (the root of a legacy PAE CR3).
    fn new_below_4g() -> Result<Self> {
        Ok(Table(PageBox::new_below_4g()?))
    }

    fn phys(&self) -> HostPhys {
        self.0.phys()
    }

    fn entries(&self) -> &[u64; 512] {
        &self.0
    }

    fn entries_mut(&mut self) -> &mut [u64; 512] {
        &mut self.0
    }
}

/// A root table and the tables below it, which entries point to by physical
/// address: a table is found by the address an entry holds, among the
/// tables this tree owns (so an entry can never lead outside them). Each
/// table below the root carries a tag (`Shadow`: the root entry it is
/// under).
struct TableTree {
    root: Table,
    /// Sorted by physical address.
    below: KVec<(u64, usize, Table)>,
}

impl TableTree {
    fn new(root: Table) -> Self {
        TableTree {
            root,
            below: KVec::new(),
        }
    }

    /// The root's physical address.
    fn root(&self) -> HostPhys {
        self.root.phys()
    }

    /// The tables below the root.
    fn len(&self) -> usize {
        self.below.len()
    }

    fn find(&self, pa: HostPhys) -> Option<usize> {
        self.below.binary_search_by_key(&pa.0, |(p, ..)| *p).ok()
    }

    /// The entries of the table at `pa`, if it is one of this tree's.
    fn table(&self, pa: HostPhys) -> Option<&[u64; 512]> {
        if pa.0 == self.root.phys().0 {
            return Some(self.root.entries());
        }
        let i = self.find(pa)?;
        self.below.get(i).map(|(_, _, t)| t.entries())
    }

    /// As [`TableTree::table`], to change them.
    fn table_mut(&mut self, pa: HostPhys) -> Option<&mut [u64; 512]> {
        if pa.0 == self.root.phys().0 {
            return Some(self.root.entries_mut());
        }
        let i = self.find(pa)?;
        self.below.get_mut(i).map(|(_, _, t)| t.entries_mut())
    }

    /// Entry `index` of the table at `pa` (`EIO`: not a table of this tree,
    /// which cannot happen).
    fn entry(&self, pa: HostPhys, index: usize) -> Result<u64> {
        self.table(pa)
            .and_then(|t| t.get(index))
            .copied()
            .ok_or(EIO)
    }

    /// As [`TableTree::entry`], to change it.
    fn entry_mut(&mut self, pa: HostPhys, index: usize) -> Result<&mut u64> {
        self.table_mut(pa).and_then(|t| t.get_mut(index)).ok_or(EIO)
    }

    /// A new, empty table below the root, tagged `tag`: its address.
    fn add(&mut self, tag: usize) -> Result<HostPhys> {
        let table = Table::new()?;
        let pa = table.phys();
        let at = match self.below.binary_search_by_key(&pa.0, |(p, ..)| *p) {
            Err(at) => at,
            // A live page is not allocated twice.
            Ok(_) => return Err(EIO),
        };
        self.below.reserve(1, GFP_KERNEL)?;
        self.below
            .insert_within_capacity(at, (pa.0, tag, table))
            .map_err(|_| ENOMEM)?;
        Ok(pa)
    }

    /// Frees every table below the root whose tag `keep` refuses.
    fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        self.below.retain(|(_, tag, _)| keep(*tag));
    }

    /// Frees every table below the root.
    fn clear(&mut self) {
        self.below.clear();
    }
}

/// The VM statistics the MMU keeps (KVM's names): the leaves mapped now, by
/// size. Atomics, so the stats fd reads them without the MMU lock, which a
/// running vCPU holds.
pub(crate) struct MmuStats {
    pub(crate) pages_4k: AtomicU64,
    pub(crate) pages_2m: AtomicU64,
}

/// A VM's memory: its slots and the nested page table built lazily from them.
pub(crate) struct Mmu {
    pub(crate) memory: GuestMemory,
    tdp: tdp::Tdp,
    pub(crate) stats: Arc<MmuStats>,
    /// Counts the times mappings were removed (see `ArchVcpu::run`).
    tlb_epoch: u64,
}

/// What a guest access to an unmapped guest physical address turned out to be.
pub(crate) enum Fault {
    /// The page is now mapped: re-enter the guest.
    Mapped,
    /// No RAM there (or a write to read-only RAM): emulate it as MMIO.
    Mmio,
}

impl Mmu {
    pub(crate) fn new(format: TdpFormat) -> Result<Self> {
        let stats = Arc::new(
            MmuStats {
                pages_4k: AtomicU64::new(0),
                pages_2m: AtomicU64::new(0),
            },
            GFP_KERNEL,
        )?;
        Ok(Mmu {
            memory: GuestMemory::new(),
            tdp: tdp::Tdp::new(format, stats.clone())?,
            stats,
            tlb_epoch: 0,
        })
    }

    /// See `ArchVcpu::run`.
    pub(crate) fn tlb_epoch(&self) -> u64 {
        self.tlb_epoch
    }

    /// Root of the nested page table (nCR3).
    pub(crate) fn root(&self) -> HostPhys {
        self.tdp.root()
    }

    /// `KVM_SET_USER_MEMORY_REGION`. Any change that can remove or move a
    /// mapping drops the whole nested page table; it is rebuilt on demand.
    pub(crate) fn set_region(&mut self, region: &Region) -> Result {
        if self.memory.set_region(region)? {
            self.drop_mappings();
        }
        Ok(())
    }

    /// Handles a nested page fault at `gpa`: one 2 MiB leaf where the
    /// memory allows it (see `GuestMemory::large_backing`), else a 4 KiB one.
    pub(crate) fn fault(&mut self, gpa: GuestPhys, write: bool) -> Result<Fault> {
        if let Some((base, hpa, writable)) = self.memory.large_backing(gpa, write)? {
            if self.tdp.map_large(base, hpa, writable)? {
                return Ok(Fault::Mapped);
            }
        }
        match self.memory.backing(gpa, write)? {
            Backing::Ram(hpa, writable) => {
                self.tdp.map(gpa, hpa, writable)?;
                Ok(Fault::Mapped)
            }
            Backing::Mmio => Ok(Fault::Mmio),
        }
    }

    /// `KVM_GET_DIRTY_LOG` for slot `id`: its bitmap, cleared, and its pages
    /// write-protected again (all mappings are dropped and rebuilt on demand).
    pub(crate) fn take_dirty_log(&mut self, id: u16) -> Result<KVVec<u64>> {
        let bitmap = self.memory.take_dirty_log(id)?;
        self.drop_mappings();
        Ok(bitmap)
    }

    fn drop_mappings(&mut self) {
        self.tdp.clear();
        self.tlb_epoch = self.tlb_epoch.wrapping_add(1);
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Two-dimensional paging: the nested page table (AMD NPT) mapping guest
//! physical to host physical addresses, 4 levels, 4 KiB leaves, built one
//! page at a time on nested page faults.

use kernel::{page::Page, prelude::*};

use crate::{
    pure::paging::{GuestPhys, HostPhys, Pte},
    sys,
};

/// A page holding 512 entries.
struct Table(Page);

impl Table {
    fn new() -> Result<Self> {
        Ok(Table(Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?))
    }

    fn phys(&self) -> HostPhys {
        sys::page_phys(&self.0)
    }
}

/// A table's entries, by physical address.
///
/// # Safety
///
/// `table` must be the address of a table page owned by the `Tdp` that the
/// caller borrows mutably, for as long as the slice is used.
unsafe fn entries<'a>(table: HostPhys) -> &'a mut [u64; 512] {
    // SAFETY: per the function's contract the page is ours, 4096 bytes,
    // page-aligned and in the direct map; the hardware only reads it while a
    // vCPU runs, and vCPUs do not run while the MMU lock is held mutably.
    unsafe { &mut *sys::phys_to_virt(table).cast::<[u64; 512]>() }
}

pub(crate) struct Tdp {
    root: Table,
    /// Every non-root table, to free them.
    tables: KVec<Table>,
}

impl Tdp {
    pub(crate) fn new() -> Result<Self> {
        Ok(Tdp { root: Table::new()?, tables: KVec::new() })
    }

    pub(crate) fn root(&self) -> HostPhys {
        self.root.phys()
    }

    /// Maps the 4 KiB page at `gpa` to `hpa`.
    pub(crate) fn map(&mut self, gpa: GuestPhys, hpa: HostPhys, writable: bool) -> Result {
        let mut table = self.root.phys();
        for level in (2..=4).rev() {
            // SAFETY: `table` is the root or a table this `Tdp` allocated, and
            // `self` is borrowed mutably.
            let e = unsafe { &mut entries(table)[gpa.index(level)] };
            let entry = Pte(*e);
            table = if entry.present() {
                entry.addr()
            } else {
                let new = Table::new()?;
                let pa = new.phys();
                self.tables.push(new, GFP_KERNEL)?;
                *e = Pte::table(pa).0;
                pa
            };
        }
        // SAFETY: as above.
        unsafe { entries(table)[gpa.index(1)] = Pte::leaf(hpa, writable).0 };
        Ok(())
    }

    /// Unmaps everything (the root stays, empty).
    pub(crate) fn clear(&mut self) {
        // SAFETY: the root belongs to `self`, borrowed mutably.
        unsafe { entries(self.root.phys()).fill(0) };
        self.tables.clear();
    }
}

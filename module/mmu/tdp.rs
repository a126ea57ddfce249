// SPDX-License-Identifier: GPL-2.0

//! Two-dimensional paging: the nested page table (AMD NPT, or Intel EPT in
//! its own entry format) mapping guest physical to host physical
//! addresses, 4 levels, built on nested page faults with 4 KiB leaves, or
//! 2 MiB leaves where the memory behind a 2 MiB-aligned guest range is one
//! aligned, contiguous host range.

use core::sync::atomic::{
    fence,
    Ordering, //
};

use kernel::{
    prelude::*,
    sync::Arc, //
};

use super::{
    MmuStats,
    Table,
    TableTree, //
};
use crate::pure::{
    memslot::{
        GfnSpan,
        PAGE_SHIFT, //
    },
    paging::{
        GuestPhys,
        HostPhys,
        Pte,
        TdpFormat,
        PAGES_PER_LARGE, //
    }, //
};

pub(crate) struct Tdp {
    /// NPT or EPT entries.
    format: TdpFormat,
    /// The root and every table below it.
    tree: TableTree,
    /// Leaves by size, for the VM's statistics.
    stats: Arc<MmuStats>,
}

impl Tdp {
    pub(crate) fn new(format: TdpFormat, stats: Arc<MmuStats>) -> Result<Self> {
        Ok(Tdp {
            format,
            tree: TableTree::new(Table::new()?),
            stats,
        })
    }

    pub(crate) fn root(&self) -> HostPhys {
        self.tree.root()
    }

    /// The level-2 table (page directory) covering `gpa`, created as needed.
    fn directory(&mut self, gpa: GuestPhys) -> Result<HostPhys> {
        let mut table = self.tree.root();
        for level in [4, 3] {
            table = self.next_table(table, gpa.index(level))?;
        }
        Ok(table)
    }

    /// The table entry `index` of `table` points to, created if empty. A
    /// 2 MiB leaf there is split into a table of 4 KiB leaves with the same
    /// translations (so no TLB entry goes stale).
    fn next_table(&mut self, table: HostPhys, index: usize) -> Result<HostPhys> {
        let entry = Pte(self.tree.entry(table, index)?);
        if entry.present() && !entry.large() {
            return Ok(entry.addr());
        }
        let pa = self.tree.add(0)?;
        if entry.present() {
            let small = self.tree.table_mut(pa).ok_or(EIO)?;
            for (i, e) in small.iter_mut().enumerate() {
                *e = entry.split(i as u64).0;
            }
            self.stats.pages_2m.fetch_sub(1, Ordering::Relaxed);
            self.stats
                .pages_4k
                .fetch_add(PAGES_PER_LARGE, Ordering::Relaxed);
        }
        // The table is complete before a processor walking in parallel (a
        // vCPU of this VM in guest mode) can reach it.
        fence(Ordering::Release);
        *self.tree.entry_mut(table, index)? = self.format.table(pa).0;
        Ok(pa)
    }

    /// Maps the 4 KiB page at `gpa` to `hpa`. Returns whether the page was
    /// unmapped before (false: a permission change of a mapped page).
    pub(crate) fn map(&mut self, gpa: GuestPhys, hpa: HostPhys, writable: bool) -> Result<bool> {
        let directory = self.directory(gpa)?;
        let table = self.next_table(directory, gpa.index(2))?;
        let e = self.tree.entry_mut(table, gpa.index(1))?;
        let new = !Pte(*e).present();
        *e = self.format.leaf(hpa, writable).0;
        if new {
            self.stats.pages_4k.fetch_add(1, Ordering::Relaxed);
        }
        Ok(new)
    }

    /// Maps the 2 MiB-aligned range at `gpa` to the 2 MiB-aligned `hpa`
    /// with one leaf, if nothing of it is mapped yet; returns whether it did.
    pub(crate) fn map_large(
        &mut self,
        gpa: GuestPhys,
        hpa: HostPhys,
        writable: bool,
    ) -> Result<bool> {
        let directory = self.directory(gpa)?;
        let e = self.tree.entry_mut(directory, gpa.index(2))?;
        if Pte(*e).present() {
            return Ok(false);
        }
        *e = self.format.large_leaf(hpa, writable).0;
        self.stats.pages_2m.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Removes every leaf that maps a frame of `span` (a 2 MiB leaf there
    /// lies within one slot, so it goes whole). The tables stay, for what
    /// is mapped there next; vCPUs in guest mode may still hold the old
    /// translations until they leave it (see `Unmapped`).
    pub(super) fn zap(&mut self, span: GfnSpan) -> Result {
        let mut gpa = span.start << PAGE_SHIFT;
        let end = span.end << PAGE_SHIFT;
        'next: while gpa < end {
            let mut table = self.tree.root();
            for level in (1..=4u8).rev() {
                // The guest physical range one entry of this level covers.
                let covered = 1u64 << (PAGE_SHIFT + 9 * (u32::from(level) - 1));
                let index = GuestPhys(gpa).index(level);
                let entry = Pte(self.tree.entry(table, index)?);
                if entry.present() && level > 1 && !entry.large() {
                    table = entry.addr();
                    continue;
                }
                if entry.present() {
                    *self.tree.entry_mut(table, index)? = 0;
                    let pages = if level == 1 {
                        &self.stats.pages_4k
                    } else {
                        &self.stats.pages_2m
                    };
                    pages.fetch_sub(1, Ordering::Relaxed);
                }
                gpa = (gpa | (covered - 1)).saturating_add(1);
                continue 'next;
            }
        }
        Ok(())
    }
}

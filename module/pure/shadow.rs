// SPDX-License-Identifier: GPL-2.0

//! Shadow paging's rules, without the tables themselves (`mmu/shadow.rs`).
//!
//! With shadow paging the processor never sees the guest's page tables. It
//! walks a shadow table that rkvm fills, one 4 KiB leaf per guest page fault,
//! from what a software walk of the guest's tables (`walk::walk`) allows. So
//! the guest's CR0, CR3, CR4 and EFER are not the processor's: the guest
//! reads and writes its own values (intercepted), and the processor runs with
//! values derived from them here.
//!
//! The shadow table is a cache of translations with the semantics of a TLB:
//! it is emptied whenever the guest would have to flush its TLB (INVLPG, a
//! change of paging mode), so edits of the guest's tables become visible
//! exactly when the architecture says they must. A CR3 write empties it
//! except for the translations of global pages (with CR4.PGE), as it does
//! a TLB: a guest kernel's own mappings survive its process switches.
//! Entries are only ever as permissive as the guest's: a page is mapped
//! writable only once its dirty bit is set, so the first write faults and
//! sets it.

use super::paging::{
    HostPhys,
    Pte, //
};
use super::walk::{
    Access,
    Controls,
    Leaf,
    Paging,
    Perm,
    Walk, //
};
use super::x86::{
    cr0,
    cr4,
    efer,
    valid_cr0,
    RESET_CR0, //
};

/// What a change of the guest's paging state does to the shadow table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Nothing.
    None,
    /// Translations of pages that are not global go (a CR3 write).
    NonGlobal,
    /// Every translation goes.
    All,
}

/// The paging state the guest believes it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestPaging {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
}

impl GuestPaging {
    /// The state after RESET.
    pub const RESET: GuestPaging = GuestPaging {
        cr0: RESET_CR0,
        cr3: 0,
        cr4: 0,
        efer: 0,
    };

    /// The guest's paging mode.
    pub fn mode(&self) -> Paging {
        Paging::of(self.cr0, self.cr4, self.efer)
    }

    /// What decides the guest's permissions, for [`super::walk::walk`].
    pub fn controls(&self, maxphyaddr: u32) -> Controls {
        Controls {
            wp: self.cr0 & cr0::WP != 0,
            nxe: self.efer & efer::NXE != 0,
            maxphyaddr,
        }
    }

    /// CR0 for the processor: paging always on, since the shadow table also
    /// stands for the guest's "physical" view while its paging is off (an
    /// SVM guest may page in real mode: "paged real mode"), and WP always on,
    /// so that read-only shadow entries stop the guest kernel's writes too.
    pub fn hw_cr0(&self) -> u64 {
        self.cr0 | cr0::PG | cr0::WP
    }

    /// CR4 for the processor: PAE always (shadow tables have 64-bit
    /// entries), and no global pages (no shadow entry is global: each CR3
    /// write empties the shadow table, global or not).
    pub fn hw_cr4(&self) -> u64 {
        (self.cr4 | cr4::PAE) & !cr4::PGE
    }

    /// EFER for the processor: long mode only while the guest's paging is
    /// on (with paging forced on, LME alone would activate it).
    pub fn hw_efer(&self) -> u64 {
        if self.cr0 & cr0::PG == 0 {
            self.efer & !(efer::LME | efer::LMA)
        } else {
            self.efer
        }
    }

    /// Levels of the shadow table: 4 in long mode, else 3 (PAE, whatever
    /// the guest's own format is: 32-bit, PAE or no paging).
    pub fn shadow_levels(&self) -> u8 {
        if self.efer & efer::LMA != 0 && self.cr0 & cr0::PG != 0 {
            4
        } else {
            3
        }
    }

    /// A guest `mov` to CR`n` (0, 3 or 4): the new state and what goes
    /// from the shadow table, or `None` for a #GP. `cs_l`: the guest runs
    /// 64-bit code; `maxphyaddr`: its physical address width;
    /// `cr4_allowed`: the CR4 bits its CPUID allows. Every CR3
    /// write flushes, even of the same value: that is how a guest flushes
    /// its TLB.
    pub fn write_cr(
        &self,
        n: u8,
        value: u64,
        cs_l: bool,
        maxphyaddr: u32,
        cr4_allowed: u64,
    ) -> Option<(GuestPaging, Flush)> {
        let mut next = *self;
        let long = self.efer & efer::LMA != 0;
        match n {
            0 => {
                let value = value | cr0::ET;
                if !valid_cr0(value) {
                    return None;
                }
                let was_paging = self.cr0 & cr0::PG != 0;
                let paging = value & cr0::PG != 0;
                if paging && !was_paging && self.efer & efer::LME != 0 {
                    if self.cr4 & cr4::PAE == 0 {
                        return None;
                    }
                    next.efer |= efer::LMA;
                }
                if !paging && was_paging {
                    if long && cs_l {
                        return None;
                    }
                    next.efer &= !efer::LMA;
                }
                next.cr0 = value;
            }
            3 => {
                if long {
                    if value.checked_shr(maxphyaddr).unwrap_or(0) != 0 {
                        return None;
                    }
                    next.cr3 = value;
                } else {
                    next.cr3 = value & 0xffff_ffff;
                }
            }
            4 => {
                if value & !cr4_allowed != 0 || (long && value & cr4::PAE == 0) {
                    return None;
                }
                next.cr4 = value;
            }
            _ => return None,
        }
        let flush = if self.flushes(&next) {
            Flush::All
        } else if n == 3 {
            Flush::NonGlobal
        } else {
            Flush::None
        };
        Some((next, flush))
    }

    /// A guest WRMSR to EFER: the new state, or `None` for a #GP. LMA is
    /// the processor's to set; LME cannot change while paging is on.
    pub fn write_efer(&self, value: u64) -> Option<GuestPaging> {
        if value & !efer::SUPPORTED != 0
            || ((value ^ self.efer) & efer::LME != 0 && self.cr0 & cr0::PG != 0)
        {
            return None;
        }
        Some(GuestPaging {
            efer: (value & !efer::LMA) | (self.efer & efer::LMA),
            ..*self
        })
    }

    /// Whether going from `self` to `next` changes how linear addresses
    /// translate (a CR3 write aside), so that the shadow table must be
    /// emptied: what flushes the whole TLB, or changes the meaning of
    /// entries, on real hardware.
    pub fn flushes(&self, next: &GuestPaging) -> bool {
        const CR0_BITS: u64 = cr0::PG | cr0::WP | cr0::PE;
        const CR4_BITS: u64 = cr4::PAE | cr4::PSE | cr4::PGE;
        (self.cr0 ^ next.cr0) & CR0_BITS != 0
            || (self.cr4 ^ next.cr4) & CR4_BITS != 0
            || (self.efer ^ next.efer) & (efer::NXE | efer::LMA) != 0
    }
}

/// Whether a shadow leaf survives CR3 writes: the guest's entry is global
/// (`guest_global`) and CR4.PGE is on.
pub fn global(paging: &GuestPaging, guest_global: bool) -> bool {
    guest_global && paging.cr4 & cr4::PGE != 0
}

/// The shadow leaf for the guest page a walk found, after the access that
/// faulted. Writable only if the guest's page is writable and dirty (so a
/// first write faults, and sets the dirty bit), and if the host allows it
/// (`host_writable`: not a read-only slot or a dirty-logged page not yet
/// written). A kernel write that only CR0.WP = 0 allows gets a writable,
/// kernel-only entry: user accesses fault and get the guest's own
/// permissions back.
pub fn leaf(page: HostPhys, walk: &Walk, access: Access, host_writable: bool) -> Pte {
    let (writable, user) = if access.write && !access.user && !walk.writable {
        (true, false)
    } else {
        (walk.writable && walk.dirty, walk.user)
    };
    Pte::shadow_leaf(page, writable && host_writable, user, walk.nx)
}

/// For prefetching around a fault at `fault` that `walk` answered with a
/// large guest page (or no paging: one page of 4 GiB): the 4 KiB piece of
/// that same page at `linear`, with the same permissions. `None` for a
/// 4 KiB guest page (its neighbours are other entries) or an address
/// outside the page.
pub fn same_page(walk: &Walk, fault: u64, linear: u64) -> Option<Leaf> {
    let size = walk.page_size;
    if walk.leaf_table.is_some() || size <= 4096 || (fault ^ linear) & !(size - 1) != 0 {
        return None;
    }
    let base = walk.gpa - (fault & (size - 1));
    Some(Leaf {
        page: (base + (linear & (size - 1))) & !0xfff,
        perm: Perm {
            writable: walk.writable,
            user: walk.user,
            nx: walk.nx,
        },
        dirty: walk.dirty,
        global: walk.global,
    })
}

/// The shadow leaf for a prefetched guest page (no access made): its
/// permissions, writable once dirty.
pub fn prefetched_leaf(page: HostPhys, leaf: &Leaf, host_writable: bool) -> Pte {
    let p = leaf.perm;
    Pte::shadow_leaf(
        page,
        p.writable && leaf.dirty && host_writable,
        p.user,
        p.nx,
    )
}

#[cfg(test)]
mod tests {
    use super::super::paging::bits;
    use super::*;

    const LONG: GuestPaging = GuestPaging {
        cr0: cr0::PE | cr0::PG | cr0::ET | cr0::WP,
        cr3: 0x1000,
        cr4: cr4::PAE,
        efer: efer::LME | efer::LMA | efer::NXE,
    };

    #[test]
    fn processor_values() {
        let real = GuestPaging::RESET;
        assert_eq!(
            real.hw_cr0() & (cr0::PG | cr0::WP | cr0::PE),
            cr0::PG | cr0::WP,
            "paged real mode"
        );
        assert_eq!(real.hw_cr4(), cr4::PAE);
        assert_eq!(real.shadow_levels(), 3);
        let lme_only = GuestPaging {
            efer: efer::LME,
            ..real
        };
        assert_eq!(lme_only.hw_efer(), 0, "no long mode before the guest pages");
        assert_eq!(LONG.hw_efer(), LONG.efer);
        assert_eq!(LONG.shadow_levels(), 4);
        assert_eq!(
            GuestPaging {
                cr4: cr4::PAE | cr4::PGE,
                ..LONG
            }
            .hw_cr4(),
            cr4::PAE
        );
    }

    #[test]
    fn entering_and_leaving_long_mode() {
        let pe = GuestPaging {
            cr0: cr0::PE | cr0::ET,
            efer: efer::LME,
            ..GuestPaging::RESET
        };
        assert_eq!(
            pe.write_cr(0, cr0::PE | cr0::PG, false, 40, cr4::SUPPORTED),
            None,
            "long mode needs PAE first"
        );
        let (pae, flush) = pe.write_cr(4, cr4::PAE, false, 40, cr4::SUPPORTED).unwrap();
        assert_eq!(flush, Flush::All);
        let (long, flush) = pae
            .write_cr(0, cr0::PE | cr0::PG, false, 40, cr4::SUPPORTED)
            .unwrap();
        assert_eq!(flush, Flush::All);
        assert_eq!(long.efer, efer::LME | efer::LMA);
        assert_eq!(long.cr0, cr0::PE | cr0::PG | cr0::ET, "ET reads as one");
        assert_eq!(
            long.write_cr(4, 0, true, 40, cr4::SUPPORTED),
            None,
            "PAE stays on in long mode"
        );
        assert_eq!(
            long.write_cr(0, cr0::PE, true, 40, cr4::SUPPORTED),
            None,
            "no paging off in 64-bit code"
        );
        assert_eq!(
            long.write_cr(0, cr0::PE, false, 40, cr4::SUPPORTED)
                .unwrap()
                .0
                .efer,
            efer::LME
        );
        assert_eq!(long.write_efer(0), None, "LME is fixed while paging");
        assert_eq!(
            long.write_efer(efer::LME | efer::NXE).unwrap().efer,
            efer::LME | efer::LMA | efer::NXE
        );
    }

    #[test]
    fn cr_writes() {
        assert_eq!(
            LONG.write_cr(3, 1 << 45, false, 40, cr4::SUPPORTED),
            None,
            "CR3 above MAXPHYADDR"
        );
        assert_eq!(
            LONG.write_cr(3, 0x1000, false, 40, cr4::SUPPORTED),
            Some((LONG, Flush::NonGlobal)),
            "the same CR3 again flushes"
        );
        assert_eq!(
            LONG.write_cr(3, 0x2000, false, 40, cr4::SUPPORTED)
                .unwrap()
                .1,
            Flush::NonGlobal
        );
        let pge = GuestPaging {
            cr4: cr4::PAE | cr4::PGE,
            ..LONG
        };
        assert_eq!(
            pge.write_cr(4, cr4::PAE, false, 40, cr4::SUPPORTED)
                .unwrap()
                .1,
            Flush::All,
            "PGE off flushes globals too"
        );
        assert_eq!(
            LONG.write_cr(4, cr4::PAE | (1 << 20), false, 40, cr4::SUPPORTED),
            None,
            "SMEP is not offered"
        );
        assert_eq!(
            LONG.write_cr(0, (1 << 32) | LONG.cr0, false, 40, cr4::SUPPORTED),
            None
        );
        assert_eq!(LONG.write_cr(2, 0, false, 40, cr4::SUPPORTED), None);
        let legacy = GuestPaging {
            cr0: cr0::PE | cr0::PG,
            ..GuestPaging::RESET
        };
        assert_eq!(
            legacy
                .write_cr(3, 0x1_0000_2000, false, 40, cr4::SUPPORTED)
                .unwrap()
                .0
                .cr3,
            0x2000
        );
        let (ts, flush) = LONG
            .write_cr(0, LONG.cr0 | 8, false, 40, cr4::SUPPORTED)
            .unwrap();
        assert!(
            flush == Flush::None && ts.cr0 & 8 != 0,
            "CR0.TS does not touch translations"
        );
        assert_eq!(
            LONG.write_cr(0, LONG.cr0 & !cr0::WP, false, 40, cr4::SUPPORTED)
                .unwrap()
                .1,
            Flush::All,
            "CR0.WP does"
        );
    }

    #[test]
    fn leaves() {
        let walk = Walk {
            gpa: 0,
            writable: true,
            user: true,
            nx: true,
            dirty: false,
            global: true,
            page_size: 4096,
            upper: Perm::ALL,
            leaf_table: None,
            updates: [None; 4],
        };
        assert!(
            !global(&LONG, walk.global),
            "no global pages without CR4.PGE"
        );
        assert!(global(
            &GuestPaging {
                cr4: cr4::PAE | cr4::PGE,
                ..LONG
            },
            walk.global
        ));
        let read = Access::default();
        let page = HostPhys(0x5000);
        let l = leaf(page, &walk, read, true);
        assert!(
            !l.writable() && l.0 & bits::US != 0 && l.0 & bits::NX != 0,
            "clean: read-only"
        );
        let write = Access {
            write: true,
            ..read
        };
        let dirty = Walk {
            dirty: true,
            ..walk
        };
        assert!(leaf(page, &dirty, write, true).writable());
        assert!(
            !leaf(page, &dirty, write, false).writable(),
            "the host's dirty log wins"
        );
        let ro = Walk {
            writable: false,
            ..dirty
        };
        let l = leaf(page, &ro, write, true);
        assert!(
            l.writable() && l.0 & bits::US == 0,
            "CR0.WP=0 kernel write: writable, kernel-only"
        );
        assert!(!leaf(page, &ro, Access { user: true, ..read }, true).writable());
    }

    #[test]
    fn pieces_of_large_pages() {
        let two_mb = Walk {
            gpa: 0x60_1234,
            writable: true,
            user: false,
            nx: false,
            dirty: true,
            global: true,
            page_size: 2 << 20,
            upper: Perm::ALL,
            leaf_table: None,
            updates: [None; 4],
        };
        // The fault was at linear 0x20_1234 (guest physical 0x60_1234).
        let l = same_page(&two_mb, 0x20_1234, 0x20_5000).unwrap();
        assert_eq!(l.page, 0x60_5000);
        assert!(l.perm.writable && !l.perm.user && l.dirty && l.global);
        assert_eq!(
            same_page(&two_mb, 0x20_1234, 0x40_0000),
            None,
            "the next 2 MiB is another page"
        );
        let small = Walk {
            page_size: 4096,
            leaf_table: Some(super::super::walk::LeafTable {
                gpa: 0,
                entry_size: 8,
                index: 0,
            }),
            ..two_mb
        };
        assert_eq!(same_page(&small, 0x1234, 0x2000), None);
        let off = Walk {
            gpa: 0x1234,
            page_size: 1 << 32,
            ..two_mb
        };
        assert_eq!(
            same_page(&off, 0x1234, 0xb_8000).unwrap().page,
            0xb_8000,
            "no paging: identity"
        );
    }
}

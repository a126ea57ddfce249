// SPDX-License-Identifier: GPL-2.0

//! Walking the guest's own page tables in software: linear address to guest
//! physical address, in every x86 paging mode. rkvm needs it to fetch the
//! instruction it emulates (an MMIO access) from guest memory, and shadow
//! paging needs it for every guest page fault: [`walk`] checks an access as
//! the processor would (present, U/S, R/W with CR0.WP, NX, reserved bits),
//! computes the error code of a fault, and lists the accessed and dirty bits
//! the processor would set in the guest's entries.

use super::paging::bits;
use super::x86::{
    cr0,
    cr4,
    efer, //
};

/// The guest's paging mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paging {
    /// CR0.PG = 0: linear is physical.
    Off,
    /// 2-level 32-bit paging (4 MiB pages with CR4.PSE).
    Bits32 {
        /// CR4.PSE.
        pse: bool,
    },
    /// PAE: 3 levels, 4 PDPTEs at CR3.
    Pae,
    /// 4-level long-mode paging.
    Long,
}

impl Paging {
    /// The mode the control registers select.
    pub fn of(cr0_value: u64, cr4_value: u64, efer_value: u64) -> Paging {
        if cr0_value & cr0::PG == 0 {
            Paging::Off
        } else if efer_value & efer::LMA != 0 {
            Paging::Long
        } else if cr4_value & cr4::PAE != 0 {
            Paging::Pae
        } else {
            Paging::Bits32 {
                pse: cr4_value & cr4::PSE != 0,
            }
        }
    }
}

/// Translates `linear`; `read(gpa, size)` reads a 4- or 8-byte entry from
/// guest physical memory. `None`: not mapped (or the table is not in RAM).
pub fn translate(
    mode: Paging,
    cr3: u64,
    linear: u64,
    mut read: impl FnMut(u64, u8) -> Option<u64>,
) -> Option<u64> {
    match mode {
        Paging::Off => Some(linear & 0xffff_ffff),
        Paging::Bits32 { pse } => {
            let linear = linear & 0xffff_ffff;
            let pde = read((cr3 & 0xffff_f000) + ((linear >> 22) << 2), 4)?;
            if pde & bits::P == 0 {
                return None;
            }
            if pse && pde & bits::PS != 0 {
                // 4 MiB page: bits 31:22 from the PDE, 39:32 from PDE bits 20:13.
                let base = (pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32;
                return Some(base | (linear & 0x3f_ffff));
            }
            let pte = read((pde & 0xffff_f000) + (((linear >> 12) & 0x3ff) << 2), 4)?;
            (pte & bits::P != 0).then_some((pte & 0xffff_f000) | (linear & 0xfff))
        }
        Paging::Pae => {
            let linear = linear & 0xffff_ffff;
            let pdpte = read((cr3 & 0xffff_ffe0) + ((linear >> 30) << 3), 8)?;
            walk_levels(pdpte, 2, linear, &mut read)
        }
        Paging::Long => {
            let pml4e = read((cr3 & bits::ADDR) + (((linear >> 39) & 0x1ff) << 3), 8)?;
            walk_levels(pml4e, 3, linear, &mut read)
        }
    }
}

/// Continues a 64-bit-entry walk from `entry`, which points at a table of
/// `level` (3 = PDPT, 2 = PD, 1 = PT).
fn walk_levels(
    mut entry: u64,
    mut level: u32,
    linear: u64,
    read: &mut impl FnMut(u64, u8) -> Option<u64>,
) -> Option<u64> {
    loop {
        if entry & bits::P == 0 {
            return None;
        }
        let index = (linear >> (12 + 9 * (level - 1))) & 0x1ff;
        entry = read((entry & bits::ADDR) | (index << 3), 8)?;
        if entry & bits::P == 0 {
            return None;
        }
        if level == 1 || entry & bits::PS != 0 {
            let page_bits = 12 + 9 * (level - 1);
            let mask = (1u64 << page_bits) - 1;
            return Some((entry & bits::ADDR & !mask) | (linear & mask));
        }
        level -= 1;
    }
}

/// Page-fault error code bits (the exception's error code, and EXITINFO1 of
/// an intercepted #PF).
pub mod pf {
    /// The translation was present: a permission or reserved-bit fault.
    pub const PRESENT: u32 = 1 << 0;
    /// A write.
    pub const WRITE: u32 = 1 << 1;
    /// A user-mode (CPL 3) access.
    pub const USER: u32 = 1 << 2;
    /// A reserved bit was set in an entry.
    pub const RSVD: u32 = 1 << 3;
    /// An instruction fetch (reported when no-execute is enabled).
    pub const FETCH: u32 = 1 << 4;
}

/// An access, as a page fault describes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// A write.
    pub write: bool,
    /// At CPL 3 (and not an implicit supervisor access).
    pub user: bool,
    /// An instruction fetch.
    pub fetch: bool,
}

impl Access {
    /// The access a page-fault error code describes.
    pub fn from_error_code(code: u64) -> Access {
        let code = code as u32;
        Access {
            write: code & pf::WRITE != 0,
            user: code & pf::USER != 0,
            fetch: code & pf::FETCH != 0,
        }
    }

    /// The access bits of a fault's error code for it.
    fn error_code(self, nxe: bool) -> u32 {
        let mut code = 0;
        if self.write {
            code |= pf::WRITE;
        }
        if self.user {
            code |= pf::USER;
        }
        if self.fetch && nxe {
            code |= pf::FETCH;
        }
        code
    }
}

/// The state besides the paging mode that decides what an access may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Controls {
    /// CR0.WP: supervisor writes honour read-only pages.
    pub wp: bool,
    /// EFER.NXE: bit 63 of an entry is no-execute (else reserved).
    pub nxe: bool,
    /// The guest's physical address width: address bits above it are reserved.
    pub maxphyaddr: u32,
}

/// A guest entry the walk sets accessed (or dirty) bits in: where it is, its
/// size and its new value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Update {
    /// Guest physical address of the entry.
    pub gpa: u64,
    /// 4 or 8 bytes.
    pub size: u8,
    /// The entry with the bits set.
    pub value: u64,
}

/// What a chain of entries allows (combined over its levels, as the
/// processor applies them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    /// Writable at every level.
    pub writable: bool,
    /// User-accessible at every level.
    pub user: bool,
    /// No-execute at some level (with EFER.NXE).
    pub nx: bool,
}

impl Perm {
    /// Nothing forbidden (no paging).
    pub const ALL: Perm = Perm {
        writable: true,
        user: true,
        nx: false,
    };

    /// `self` restricted by one more level's entry.
    fn and(self, entry: u64, nxe: bool) -> Perm {
        Perm {
            writable: self.writable && entry & bits::RW != 0,
            user: self.user && entry & bits::US != 0,
            nx: self.nx || (nxe && entry & bits::NX != 0),
        }
    }
}

/// The guest page table that holds a walk's 4 KiB leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafTable {
    /// Guest physical address of the table.
    pub gpa: u64,
    /// 4 (32-bit paging) or 8 bytes per entry.
    pub entry_size: u8,
    /// The leaf's index in it.
    pub index: usize,
}

/// A successful walk: where the access goes and what the guest's tables
/// allow there (the combination over all levels, as the processor applies it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    /// Guest physical address of the byte.
    pub gpa: u64,
    /// Writable at every level.
    pub writable: bool,
    /// User-accessible at every level.
    pub user: bool,
    /// No-execute at some level (with EFER.NXE).
    pub nx: bool,
    /// The leaf's dirty bit is set (now: a write sets it).
    pub dirty: bool,
    /// The leaf's global bit is set (meaningful with CR4.PGE).
    pub global: bool,
    /// Size of the guest's page: 4 KiB, 2 or 4 MiB, 1 GiB.
    pub page_size: u64,
    /// What the levels above the leaf allow.
    pub upper: Perm,
    /// Where the leaf entry is, for a 4 KiB page (its neighbours in the
    /// table can be prefetched); `None` for a large page or no paging.
    pub leaf_table: Option<LeafTable>,
    /// Entries whose A/D bits must be written back, in walk order.
    pub updates: [Option<Update>; 4],
}

/// One level of a walk: the entry, where it was, and its size.
struct Level {
    gpa: u64,
    size: u8,
    entry: u64,
}

/// Walks the guest's tables for an `access` to `linear`, as the processor
/// does. `Err` is the error code of the page fault the guest must see; a
/// table outside guest RAM (`read` gives `None`) is a not-present fault.
pub fn walk(
    mode: Paging,
    cr3: u64,
    linear: u64,
    access: Access,
    ctl: Controls,
    mut read: impl FnMut(u64, u8) -> Option<u64>,
) -> Result<Walk, u32> {
    let access_bits = access.error_code(ctl.nxe);
    let not_present = Err(access_bits);
    let reserved = Err(access_bits | pf::PRESENT | pf::RSVD);
    // Address bits from MAXPHYADDR to 51 (64-bit entries only).
    let width = ctl.maxphyaddr.clamp(32, 52);
    let high_reserved = bits::ADDR & !((1u64 << width) - 1);
    let nx_reserved = if ctl.nxe { 0 } else { bits::NX };

    let mut levels: [Option<Level>; 4] = [None, None, None, None];
    let mut depth = 0usize;
    let (leaf_entry, page_bits, base_mask);
    match mode {
        Paging::Off => {
            return Ok(Walk {
                gpa: linear & 0xffff_ffff,
                writable: true,
                user: true,
                nx: false,
                dirty: true,
                global: false,
                // One page: the whole 32-bit physical address space.
                page_size: 1 << 32,
                upper: Perm::ALL,
                leaf_table: None,
                updates: [None; 4],
            });
        }
        Paging::Bits32 { pse } => {
            let linear = linear & 0xffff_ffff;
            let pde_gpa = (cr3 & 0xffff_f000) + ((linear >> 22) << 2);
            let pde = read(pde_gpa, 4).ok_or(access_bits)?;
            if pde & bits::P == 0 {
                return not_present;
            }
            levels[0] = Some(Level {
                gpa: pde_gpa,
                size: 4,
                entry: pde,
            });
            depth = 1;
            if pse && pde & bits::PS != 0 {
                // Bits 39:32 of a 4 MiB page come from PDE bits 20:13.
                let base = (pde & 0xffc0_0000) | ((pde >> 13) & 0xff) << 32;
                leaf_entry = pde;
                page_bits = 22;
                base_mask = base;
            } else {
                let pte_gpa = (pde & 0xffff_f000) + (((linear >> 12) & 0x3ff) << 2);
                let pte = read(pte_gpa, 4).ok_or(access_bits)?;
                if pte & bits::P == 0 {
                    return not_present;
                }
                levels[1] = Some(Level {
                    gpa: pte_gpa,
                    size: 4,
                    entry: pte,
                });
                depth = 2;
                leaf_entry = pte;
                page_bits = 12;
                base_mask = pte & 0xffff_f000;
            }
        }
        Paging::Pae | Paging::Long => {
            let (mut table, mut level) = if mode == Paging::Pae {
                // The four PDPTEs have no permission or accessed bits.
                let linear = linear & 0xffff_ffff;
                let pdpte =
                    read((cr3 & 0xffff_ffe0) + ((linear >> 30) << 3), 8).ok_or(access_bits)?;
                if pdpte & bits::P == 0 {
                    return not_present;
                }
                if pdpte & (0x1e6 | high_reserved | bits::NX) != 0 {
                    return reserved;
                }
                (pdpte & bits::ADDR, 2u32)
            } else {
                (cr3 & bits::ADDR, 4u32)
            };
            loop {
                let shift = 12 + 9 * (level - 1);
                let gpa = table | (((linear >> shift) & 0x1ff) << 3);
                let entry = read(gpa, 8).ok_or(access_bits)?;
                if entry & bits::P == 0 {
                    return not_present;
                }
                let large = entry & bits::PS != 0 && level > 1;
                // PS is reserved in a PML4E; a large page's address must be
                // aligned to its size (bit 12 is PAT there).
                let misaligned = if large {
                    entry & ((1u64 << shift) - 1) & !0x1fff & bits::ADDR
                } else {
                    0
                };
                if entry & (high_reserved | nx_reserved) != 0
                    || misaligned != 0
                    || (level == 4 && entry & bits::PS != 0)
                {
                    return reserved;
                }
                if let Some(slot) = levels.get_mut(depth) {
                    *slot = Some(Level {
                        gpa,
                        size: 8,
                        entry,
                    });
                }
                depth += 1;
                if level == 1 || large {
                    leaf_entry = entry;
                    page_bits = shift;
                    base_mask = entry & bits::ADDR & !((1u64 << shift) - 1);
                    break;
                }
                table = entry & bits::ADDR;
                level -= 1;
            }
        }
    }

    let mut upper = Perm::ALL;
    for level in levels.iter().take(depth.saturating_sub(1)).flatten() {
        upper = upper.and(level.entry, ctl.nxe);
    }
    let Perm { writable, user, nx } = upper.and(leaf_entry, ctl.nxe);
    let allowed = (!access.user || user)
        && (!access.write || writable || (!access.user && !ctl.wp))
        && (!access.fetch || !nx);
    if !allowed {
        return Err(access_bits | pf::PRESENT);
    }

    let mut updates = [None; 4];
    for (i, level) in levels.iter().flatten().enumerate() {
        let mut value = level.entry | bits::A;
        if i + 1 == depth && access.write {
            value |= bits::D;
        }
        if value != level.entry {
            if let Some(slot) = updates.get_mut(i) {
                *slot = Some(Update {
                    gpa: level.gpa,
                    size: level.size,
                    value,
                });
            }
        }
    }
    let page_mask = (1u64 << page_bits) - 1;
    let leaf_table = match levels.get(depth.wrapping_sub(1)) {
        Some(Some(leaf)) if page_bits == 12 => {
            let size = u64::from(leaf.size);
            let table = leaf.gpa & !0xfff;
            Some(LeafTable {
                gpa: table,
                entry_size: leaf.size,
                index: ((leaf.gpa - table) / size) as usize,
            })
        }
        _ => None,
    };
    Ok(Walk {
        gpa: base_mask | (linear & page_mask),
        writable,
        user,
        nx,
        dirty: access.write || leaf_entry & bits::D != 0,
        global: leaf_entry & bits::G != 0,
        page_size: 1 << page_bits,
        upper,
        leaf_table,
        updates,
    })
}

/// A 4 KiB guest page, as an entry of a page table describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Guest physical address of the page.
    pub page: u64,
    /// What the whole chain allows.
    pub perm: Perm,
    /// The entry's dirty bit.
    pub dirty: bool,
    /// The entry's global bit.
    pub global: bool,
}

/// A neighbour of a walked leaf: entry `entry` of the same page table
/// (whose upper levels allow `upper`), if the processor could use it as it
/// is: present, with no reserved bit, and already accessed (so using it
/// sets no bit in the guest's table).
pub fn neighbour(entry: u64, entry_size: u8, upper: Perm, ctl: Controls) -> Option<Leaf> {
    if entry & bits::P == 0 || entry & bits::A == 0 {
        return None;
    }
    let (page, entry) = if entry_size == 4 {
        (entry & 0xffff_f000, entry & 0xffff_ffff)
    } else {
        let width = ctl.maxphyaddr.clamp(32, 52);
        let high_reserved = bits::ADDR & !((1u64 << width) - 1);
        let nx_reserved = if ctl.nxe { 0 } else { bits::NX };
        if entry & (high_reserved | nx_reserved) != 0 {
            return None;
        }
        (entry & bits::ADDR, entry)
    };
    Some(Leaf {
        page,
        perm: upper.and(entry, ctl.nxe),
        dirty: entry & bits::D != 0,
        global: entry & bits::G != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// Guest memory as a map of 8-byte-aligned words.
    struct Mem(BTreeMap<u64, u64>);

    impl Mem {
        fn read(&self, gpa: u64, size: u8) -> Option<u64> {
            let word = *self.0.get(&(gpa & !7)).unwrap_or(&0);
            let v = word >> (8 * (gpa & 7));
            Some(if size == 4 { v & 0xffff_ffff } else { v })
        }
    }

    #[test]
    fn modes() {
        assert_eq!(Paging::of(0x11, 0, 0), Paging::Off);
        assert_eq!(
            Paging::of(0x8000_0011, 0x10, 0),
            Paging::Bits32 { pse: true }
        );
        assert_eq!(Paging::of(0x8000_0011, 0x20, 0), Paging::Pae);
        assert_eq!(Paging::of(0x8000_0011, 0x20, 0x500), Paging::Long);
    }

    #[test]
    fn long_mode_4k_2m_1g() {
        let mut m = BTreeMap::new();
        m.insert(0x1000, 0x2003); // PML4[0] -> PDPT at 0x2000
        m.insert(0x2000, 0x3003); // PDPT[0] -> PD at 0x3000
        m.insert(0x2008, 0x4000_0083); // PDPT[1]: 1 GiB page at 1 GiB
        m.insert(0x3000, 0x4003); // PD[0] -> PT at 0x4000
        m.insert(0x3008, 0x0060_0083); // PD[1]: 2 MiB page at 6 MiB
        m.insert(0x4008, 0x9003); // PT[1] -> page 0x9000
        let mem = Mem(m);
        let t = |lin| translate(Paging::Long, 0x1000, lin, |a, s| mem.read(a, s));
        assert_eq!(t(0x1234), Some(0x9234));
        assert_eq!(t(0x20_0042), Some(0x60_0042));
        assert_eq!(t(0x4000_1234), Some(0x4000_1234));
        assert_eq!(t(0x2000), None); // PT[2] not present
        assert_eq!(t(1 << 39), None); // PML4[1] not present
    }

    #[test]
    fn pae_and_32bit() {
        let mut m = BTreeMap::new();
        m.insert(0x1000, 0x2001); // PDPTE[0] -> PD at 0x2000
        m.insert(0x2000, 0x3003); // PD[0] -> PT at 0x3000
        m.insert(0x3000, 0x7003); // PT[0] -> 0x7000
        let mem = Mem(m);
        assert_eq!(
            translate(Paging::Pae, 0x1000, 0x123, |a, s| mem.read(a, s)),
            Some(0x7123)
        );

        let mut m = BTreeMap::new();
        // 32-bit: PDE[0] -> PT at 0x3000 (4-byte entries), PDE[1] 4 MiB page at 8 MiB.
        m.insert(0x1000, (0x0080_0083u64 << 32) | 0x3003);
        m.insert(0x3000, 0x5003u64 << 32); // PTE[1] -> 0x5000 (PTE[0] empty)
        let mem = Mem(m);
        let t = |lin, pse| translate(Paging::Bits32 { pse }, 0x1000, lin, |a, s| mem.read(a, s));
        assert_eq!(t(0x1010, true), Some(0x5010));
        assert_eq!(t(0x10, true), None);
        assert_eq!(t(0x40_0100, true), Some(0x80_0100));
        // Without CR4.PSE the PS bit is ignored: the PDE points at a table.
        assert_eq!(t(0x40_0100, false), None);
    }

    #[test]
    fn off() {
        assert_eq!(
            translate(Paging::Off, 0, 0xf_fff0, |_, _| None),
            Some(0xf_fff0)
        );
    }

    fn long_tables(leaf: u64) -> Mem {
        let mut m = BTreeMap::new();
        m.insert(0x1000, 0x2007); // PML4[0] -> PDPT, user, writable
        m.insert(0x2000, 0x3007); // PDPT[0] -> PD
        m.insert(0x3000, 0x4007); // PD[0] -> PT
        m.insert(0x3008, 0x0060_0087); // PD[1]: 2 MiB page at 6 MiB, user, writable
        m.insert(0x4008, leaf); // PT[1]
        Mem(m)
    }

    const CTL: Controls = Controls {
        wp: true,
        nxe: true,
        maxphyaddr: 40,
    };
    const READ: Access = Access {
        write: false,
        user: false,
        fetch: false,
    };
    const UWRITE: Access = Access {
        write: true,
        user: true,
        fetch: false,
    };

    #[test]
    fn walk_sets_accessed_then_dirty() {
        let mem = long_tables(0x9007);
        let w = walk(Paging::Long, 0x1000, 0x1234, READ, CTL, |a, s| {
            mem.read(a, s)
        })
        .unwrap();
        assert_eq!(w.gpa, 0x9234);
        assert!(w.writable && w.user && !w.nx && !w.dirty);
        assert_eq!(w.page_size, 4096);
        let u: Vec<_> = w
            .updates
            .iter()
            .flatten()
            .map(|u| (u.gpa, u.value))
            .collect();
        assert_eq!(
            u,
            [
                (0x1000, 0x2027),
                (0x2000, 0x3027),
                (0x3000, 0x4027),
                (0x4008, 0x9027)
            ]
        );
        let w = walk(Paging::Long, 0x1000, 0x1234, UWRITE, CTL, |a, s| {
            mem.read(a, s)
        })
        .unwrap();
        assert!(w.dirty);
        assert_eq!(w.updates[3].unwrap().value, 0x9067, "the leaf gets A and D");
        // Bits already set are not written again.
        let mem = long_tables(0x9067);
        let mut m = mem.0.clone();
        for (k, v) in m.iter_mut() {
            if *k != 0x4008 {
                *v |= 0x20;
            }
        }
        let mem = Mem(m);
        let w = walk(Paging::Long, 0x1000, 0x1234, UWRITE, CTL, |a, s| {
            mem.read(a, s)
        })
        .unwrap();
        assert_eq!(w.updates, [None; 4]);
    }

    #[test]
    fn walk_permissions_and_error_codes() {
        let ro = long_tables(0x9005); // user, read-only
        let w = |mem: &Mem, a: Access, ctl: Controls| {
            walk(Paging::Long, 0x1000, 0x1234, a, ctl, |x, s| mem.read(x, s))
        };
        assert_eq!(w(&ro, UWRITE, CTL), Err(pf::PRESENT | pf::WRITE | pf::USER));
        let kwrite = Access {
            write: true,
            user: false,
            fetch: false,
        };
        assert_eq!(
            w(&ro, kwrite, CTL),
            Err(pf::PRESENT | pf::WRITE),
            "CR0.WP=1: read-only for the kernel too"
        );
        let no_wp = Controls { wp: false, ..CTL };
        assert!(
            w(&ro, kwrite, no_wp).is_ok(),
            "CR0.WP=0: the kernel writes read-only pages"
        );
        let kernel_page = long_tables(0x9003);
        let uread = Access { user: true, ..READ };
        assert_eq!(w(&kernel_page, uread, CTL), Err(pf::PRESENT | pf::USER));
        let nx = long_tables(0x8000_0000_0000_9007);
        let fetch = Access {
            fetch: true,
            ..READ
        };
        assert_eq!(w(&nx, fetch, CTL), Err(pf::PRESENT | pf::FETCH));
        assert!(w(&nx, READ, CTL).unwrap().nx);
        let no_nxe = Controls { nxe: false, ..CTL };
        assert_eq!(
            w(&nx, READ, no_nxe),
            Err(pf::PRESENT | pf::RSVD),
            "NX is reserved without EFER.NXE"
        );
        assert_eq!(
            w(&nx, fetch, no_nxe),
            Err(pf::PRESENT | pf::RSVD),
            "and a fetch reports no I bit"
        );
        let far = long_tables(0x100_0000_9007); // bit 40: above MAXPHYADDR 40
        assert_eq!(w(&far, READ, CTL), Err(pf::PRESENT | pf::RSVD));
        let absent = long_tables(0x9006);
        assert_eq!(w(&absent, UWRITE, CTL), Err(pf::WRITE | pf::USER));
        // A table outside RAM: not present.
        assert_eq!(
            walk(Paging::Long, 0x1000, 0x1234, READ, CTL, |_, _| None),
            Err(0)
        );
    }

    #[test]
    fn walk_large_pages() {
        let mem = long_tables(0);
        let w = walk(Paging::Long, 0x1000, 0x20_1234, UWRITE, CTL, |a, s| {
            mem.read(a, s)
        })
        .unwrap();
        assert_eq!((w.gpa, w.page_size), (0x60_1234, 2 << 20));
        assert_eq!(
            w.updates[2].unwrap().value,
            0x0060_00e7,
            "a large leaf gets D"
        );
        let mut m = mem.0.clone();
        m.insert(0x3008, 0x0061_0087); // misaligned 2 MiB page: bit 16 set
        let bad = Mem(m);
        assert_eq!(
            walk(Paging::Long, 0x1000, 0x20_1234, READ, CTL, |a, s| bad
                .read(a, s)),
            Err(pf::PRESENT | pf::RSVD)
        );
        // 32-bit paging: a 4 MiB page and 4-byte entries.
        let mut m = BTreeMap::new();
        m.insert(0x1000, 0x0080_0087u64 << 32); // PDE[1]: 4 MiB at 8 MiB, user
        let mem = Mem(m);
        let w = walk(
            Paging::Bits32 { pse: true },
            0x1000,
            0x40_0010,
            UWRITE,
            CTL,
            |a, s| mem.read(a, s),
        )
        .unwrap();
        assert_eq!((w.gpa, w.page_size), (0x80_0010, 4 << 20));
        assert_eq!(
            w.updates[0],
            Some(Update {
                gpa: 0x1004,
                size: 4,
                value: 0x0080_00e7
            })
        );
    }

    #[test]
    fn leaf_tables_and_neighbours() {
        let mem = long_tables(0x9027);
        let w = walk(Paging::Long, 0x1000, 0x1234, READ, CTL, |a, s| {
            mem.read(a, s)
        })
        .unwrap();
        assert_eq!(
            w.leaf_table,
            Some(LeafTable {
                gpa: 0x4000,
                entry_size: 8,
                index: 1
            })
        );
        assert_eq!(w.upper, Perm::ALL);
        let large = walk(Paging::Long, 0x1000, 0x20_1234, READ, CTL, |a, s| {
            mem.read(a, s)
        })
        .unwrap();
        assert_eq!(
            large.leaf_table, None,
            "no table of 4 KiB entries under a large page"
        );
        let kernel = Perm {
            user: false,
            ..Perm::ALL
        };
        let n = neighbour(0x8000_0000_0000_5067, 8, kernel, CTL).unwrap();
        assert_eq!(
            n,
            Leaf {
                page: 0x5000,
                perm: Perm {
                    writable: true,
                    user: false,
                    nx: true
                },
                dirty: true,
                global: false
            }
        );
        assert_eq!(
            neighbour(0x5007, 8, Perm::ALL, CTL),
            None,
            "not accessed yet: left to fault"
        );
        assert_eq!(neighbour(0x5026, 8, Perm::ALL, CTL), None, "not present");
        assert_eq!(
            neighbour(0x100_0000_5027, 8, Perm::ALL, CTL),
            None,
            "reserved bit"
        );
        let n = neighbour(0x5123, 4, Perm::ALL, CTL).unwrap();
        assert_eq!(
            (n.page, n.global, n.perm.user),
            (0x5000, true, false),
            "4-byte entry, global, kernel"
        );
    }

    #[test]
    fn walk_pae() {
        let mut m = BTreeMap::new();
        m.insert(0x1000, 0x2001); // PDPTE[0] -> PD
        m.insert(0x2000, 0x3003); // PD[0] -> PT, supervisor
        m.insert(0x3000, 0x7007); // PT[0] -> 0x7000
        let mem = Mem(m);
        let w = walk(Paging::Pae, 0x1000, 0x123, READ, CTL, |a, s| mem.read(a, s)).unwrap();
        assert!(!w.user && w.writable);
        assert_eq!(w.gpa, 0x7123);
        assert_eq!(
            w.updates.iter().flatten().count(),
            2,
            "PDPTEs have no accessed bit"
        );
        let mut m = mem.0.clone();
        m.insert(0x1000, 0x2003); // R/W is reserved in a PAE PDPTE
        let bad = Mem(m);
        assert_eq!(
            walk(Paging::Pae, 0x1000, 0x123, READ, CTL, |a, s| bad.read(a, s)),
            Err(pf::PRESENT | pf::RSVD)
        );
        assert!(
            walk(Paging::Off, 0, 0x1_2345_6789, UWRITE, CTL, |_, _| None)
                .unwrap()
                .gpa
                == 0x2345_6789
        );
    }
}

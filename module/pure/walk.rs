// SPDX-License-Identifier: GPL-2.0

//! Walking the guest's own page tables in software: linear address to guest
//! physical address, in every x86 paging mode. rkvm needs it to fetch the
//! instruction it emulates (an MMIO access) from guest memory.

use super::paging::bits;
use super::x86::{cr0, cr4, efer};

/// CR4.PSE.
const CR4_PSE: u64 = 1 << 4;

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
            Paging::Bits32 { pse: cr4_value & CR4_PSE != 0 }
        }
    }
}

/// Translates `linear`; `read(gpa, size)` reads a 4- or 8-byte entry from
/// guest physical memory. `None`: not mapped (or the table is not in RAM).
pub fn translate(mode: Paging, cr3: u64, linear: u64, mut read: impl FnMut(u64, u8) -> Option<u64>) -> Option<u64> {
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
fn walk_levels(mut entry: u64, mut level: u32, linear: u64, read: &mut impl FnMut(u64, u8) -> Option<u64>) -> Option<u64> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
        assert_eq!(Paging::of(0x8000_0011, 0x10, 0), Paging::Bits32 { pse: true });
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
        assert_eq!(translate(Paging::Pae, 0x1000, 0x123, |a, s| mem.read(a, s)), Some(0x7123));

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
        assert_eq!(translate(Paging::Off, 0, 0xf_fff0, |_, _| None), Some(0xf_fff0));
    }
}

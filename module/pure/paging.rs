// SPDX-License-Identifier: GPL-2.0

//! Addresses and x86-64 page-table entries, as the nested page tables (NPT)
//! use them.
//!
//! Guest physical and host physical addresses are distinct types: a guest
//! address can only become a host address through a memory slot lookup in the
//! module, never by accident.

/// A guest physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestPhys(pub u64);

/// A host physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPhys(pub u64);

impl GuestPhys {
    /// Its guest frame number.
    pub fn gfn(self) -> u64 {
        self.0 >> 12
    }

    /// Index into the table at `level` (4 = PML4 ... 1 = PT) of a 4-level walk.
    pub fn index(self, level: u8) -> usize {
        ((self.0 >> (12 + 9 * (u32::from(level) - 1))) & 0x1ff) as usize
    }
}

/// Entry bits (AMD64 APM vol. 2, 5.3.3; nested page tables use the same format,
/// with every access counted as a user access).
pub mod bits {
    /// Present.
    pub const P: u64 = 1 << 0;
    /// Writable.
    pub const RW: u64 = 1 << 1;
    /// User: must be set at every level of a nested page table.
    pub const US: u64 = 1 << 2;
    /// Accessed.
    pub const A: u64 = 1 << 5;
    /// Dirty.
    pub const D: u64 = 1 << 6;
    /// Page size (a large page at level 2 or 3).
    pub const PS: u64 = 1 << 7;
    /// Global (in a leaf): kept in the TLB across CR3 writes with CR4.PGE.
    pub const G: u64 = 1 << 8;
    /// No-execute.
    pub const NX: u64 = 1 << 63;
    /// The physical address field of an entry (bits 51:12).
    pub const ADDR: u64 = 0x000f_ffff_ffff_f000;
}

/// Size of a large page mapped at level 2.
pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
/// 4 KiB pages in a large page.
pub const PAGES_PER_LARGE: u64 = 512;

/// One page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pte(pub u64);

impl Pte {
    /// Not present.
    pub const EMPTY: Pte = Pte(0);

    /// An entry pointing at the next-level table at `table`: fully permissive,
    /// the leaf decides.
    pub fn table(table: HostPhys) -> Pte {
        Pte((table.0 & bits::ADDR) | bits::P | bits::RW | bits::US)
    }

    /// A 4 KiB leaf mapping `page`, writable or not. Accessed and dirty are
    /// preset so the processor never has to write them back.
    pub fn leaf(page: HostPhys, writable: bool) -> Pte {
        let rw = if writable { bits::RW | bits::D } else { 0 };
        Pte((page.0 & bits::ADDR) | bits::P | bits::US | bits::A | rw)
    }

    /// A PAE page-directory-pointer entry (legacy PAE paging: present and
    /// address only, every other bit is reserved).
    pub fn pdpte(table: HostPhys) -> Pte {
        Pte((table.0 & bits::ADDR) | bits::P)
    }

    /// A 4 KiB leaf of a shadow page table: the guest's view of the page
    /// decides user access and no-execute as well.
    pub fn shadow_leaf(page: HostPhys, writable: bool, user: bool, nx: bool) -> Pte {
        let mut pte = Pte::leaf(page, writable).0;
        if !user {
            pte &= !bits::US;
        }
        if nx {
            pte |= bits::NX;
        }
        Pte(pte)
    }

    /// A 2 MiB leaf (at level 2) mapping the 2 MiB-aligned `page`.
    pub fn large_leaf(page: HostPhys, writable: bool) -> Pte {
        Pte(Pte::leaf(HostPhys(page.0 & !(LARGE_PAGE_SIZE - 1)), writable).0 | bits::PS)
    }

    /// A large leaf (PS set; meaningful at levels 2 and 3).
    pub fn large(self) -> bool {
        self.0 & bits::PS != 0
    }

    /// The 4 KiB leaf for page `i` (0..512) of this 2 MiB leaf, with the
    /// same permissions: what splitting it into a page table gives.
    pub fn split(self, i: u64) -> Pte {
        Pte((self.0 & !bits::PS) + ((i & 0x1ff) << 12))
    }

    /// Present.
    pub fn present(self) -> bool {
        self.0 & bits::P != 0
    }

    /// Writable.
    pub fn writable(self) -> bool {
        self.0 & bits::RW != 0
    }

    /// The address it points to.
    pub fn addr(self) -> HostPhys {
        HostPhys(self.0 & bits::ADDR)
    }
}

/// The entry format of a two-dimensional page table: AMD's nested page
/// tables use ordinary x86-64 entries; Intel's extended page tables (EPT)
/// their own (SDM 29.3.2): read, write and execute permissions in bits 2:0
/// and a memory type in the leaves. Both put the address in bits 51:12 and
/// the large-page flag in bit 7, and both set bit 0 and bit 1 in every
/// present, writable entry rkvm builds, so [`Pte`]'s accessors read either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdpFormat {
    /// AMD NPT.
    Npt,
    /// Intel EPT.
    Ept,
}

/// EPT entry bits.
pub mod ept {
    /// Readable.
    pub const R: u64 = 1 << 0;
    /// Writable.
    pub const W: u64 = 1 << 1;
    /// Executable.
    pub const X: u64 = 1 << 2;
    /// Memory type write-back (bits 5:3 = 6) of a leaf.
    pub const MEMTYPE_WB: u64 = 6 << 3;
    /// Large page (bit 7), as in [`super::bits::PS`].
    pub const LARGE: u64 = 1 << 7;
}

impl TdpFormat {
    /// An entry pointing at the next-level table.
    pub fn table(self, table: HostPhys) -> Pte {
        match self {
            TdpFormat::Npt => Pte::table(table),
            TdpFormat::Ept => Pte((table.0 & bits::ADDR) | ept::R | ept::W | ept::X),
        }
    }

    /// A 4 KiB leaf. EPT leaves are write-back and let the guest's PAT
    /// decide (rkvm maps ordinary memory only).
    pub fn leaf(self, page: HostPhys, writable: bool) -> Pte {
        match self {
            TdpFormat::Npt => Pte::leaf(page, writable),
            TdpFormat::Ept => {
                let w = if writable { ept::W } else { 0 };
                Pte((page.0 & bits::ADDR) | ept::R | w | ept::X | ept::MEMTYPE_WB)
            }
        }
    }

    /// A 2 MiB leaf (at level 2).
    pub fn large_leaf(self, page: HostPhys, writable: bool) -> Pte {
        let aligned = HostPhys(page.0 & !(LARGE_PAGE_SIZE - 1));
        match self {
            TdpFormat::Npt => Pte::large_leaf(page, writable),
            TdpFormat::Ept => Pte(self.leaf(aligned, writable).0 | ept::LARGE),
        }
    }
}

/// Error code of a nested page fault (EXITINFO1 of `#VMEXIT(NPF)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NpfError(pub u64);

impl NpfError {
    /// The translation was present (a permission fault, not a miss).
    pub fn present(self) -> bool {
        self.0 & 1 != 0
    }

    /// The access was a write.
    pub fn write(self) -> bool {
        self.0 & 2 != 0
    }

    /// The access was an instruction fetch.
    pub fn fetch(self) -> bool {
        self.0 & 0x10 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_leaves_and_their_split() {
        let big = Pte::large_leaf(HostPhys(0x4020_0000), true);
        assert!(big.present() && big.large() && big.writable());
        assert_eq!(big.addr(), HostPhys(0x4020_0000));
        let small = big.split(3);
        assert!(!small.large());
        assert_eq!(
            small,
            Pte::leaf(HostPhys(0x4020_3000), true),
            "same bits as a 4 KiB leaf"
        );
        assert_eq!(
            Pte::large_leaf(HostPhys(0x4020_0000), false)
                .split(511)
                .addr(),
            HostPhys(0x403f_f000)
        );
        assert!(!Pte::large_leaf(HostPhys(0x4020_0000), false).writable());
    }

    #[test]
    fn indices() {
        let a = GuestPhys(0x0000_7fab_cdef_1234);
        assert_eq!(a.index(1), (0x7fab_cdef_1234 >> 12) & 0x1ff);
        assert_eq!(a.index(4), 0xff);
        assert_eq!(GuestPhys(0xfee0_0000).index(2), 0x1f7);
        assert_eq!(GuestPhys(0x1000).gfn(), 1);
    }

    #[test]
    fn entries() {
        let t = Pte::table(HostPhys(0x1234_5000));
        assert_eq!(t.0, 0x1234_5007);
        assert!(t.present() && t.writable());
        let ro = Pte::leaf(HostPhys(0xabc_d000), false);
        assert_eq!(ro.0, 0xabc_d025);
        assert!(!ro.writable());
        assert_eq!(Pte::leaf(HostPhys(0xabc_d000), true).0, 0xabc_d067);
        assert_eq!(ro.addr(), HostPhys(0xabc_d000));
        assert!(!Pte::EMPTY.present());
    }

    #[test]
    fn npf_error() {
        let e = NpfError(0x1_0000_0006); // write, user, not present, final translation
        assert!(e.write() && !e.present() && !e.fetch());
        assert!(NpfError(0x11).fetch());
    }

    #[test]
    fn ept_entries_read_like_npt_entries() {
        let f = TdpFormat::Ept;
        let t = f.table(HostPhys(0x1234_5000));
        assert_eq!(t.0, 0x1234_5007);
        assert!(t.present() && t.writable() && !t.large());
        let ro = f.leaf(HostPhys(0xabc_d000), false);
        assert_eq!(ro.0, 0xabc_d035); // R, X, WB
        assert!(ro.present() && !ro.writable());
        assert_eq!(ro.addr(), HostPhys(0xabc_d000));
        let big = f.large_leaf(HostPhys(0x4030_1000), true);
        assert_eq!(big.0, 0x4020_00b7);
        assert!(big.large() && big.writable());
        // Splitting keeps the memory type and permissions.
        assert_eq!(big.split(3), f.leaf(HostPhys(0x4020_3000), true));
        // The NPT format is the plain one.
        assert_eq!(
            TdpFormat::Npt.leaf(HostPhys(0x1000), true),
            Pte::leaf(HostPhys(0x1000), true)
        );
    }
}

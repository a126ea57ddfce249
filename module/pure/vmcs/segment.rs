// SPDX-License-Identifier: GPL-2.0

//! Guest segments as the VMCS holds them (access rights), and what
//! stands for them in virtual-8086 mode or for a VM entry without
//! unrestricted guest.

use super::super::x86::SegAttrib;

use super::encoding::Field;

/// A guest segment register, in the VMCS's order (which is also the order
/// of the encodings: selector, limit, access rights and base of segment
/// `n` are the first field of each group plus 2n).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    /// ES.
    Es = 0,
    /// CS.
    Cs,
    /// SS.
    Ss,
    /// DS.
    Ds,
    /// FS.
    Fs,
    /// GS.
    Gs,
    /// LDTR.
    Ldtr,
    /// TR.
    Tr,
}

impl Seg {
    /// All of them.
    pub const ALL: [Seg; 8] = [
        Seg::Es,
        Seg::Cs,
        Seg::Ss,
        Seg::Ds,
        Seg::Fs,
        Seg::Gs,
        Seg::Ldtr,
        Seg::Tr,
    ];

    /// Guest selector field.
    pub const fn selector(self) -> Field {
        Field(0x0800 + 2 * self as u32)
    }

    /// Guest limit field.
    pub const fn limit(self) -> Field {
        Field(0x4800 + 2 * self as u32)
    }

    /// Guest access-rights field.
    pub const fn access_rights(self) -> Field {
        Field(0x4814 + 2 * self as u32)
    }

    /// Guest base field.
    pub const fn base(self) -> Field {
        Field(0x6806 + 2 * self as u32)
    }
}

/// A segment as the VMCS holds it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Base.
    pub base: u64,
    /// Limit, in bytes (expanded by G).
    pub limit: u32,
    /// Access rights (see [`ar`]).
    pub ar: u32,
}

/// Access-rights bits of a VMCS segment (SDM 24.4.1, table 24-2).
pub mod ar {
    /// Segment type (bits 3:0).
    pub const TYPE: u32 = 0xf;
    /// Code or data (not system).
    pub const S: u32 = 1 << 4;
    /// DPL (bits 6:5).
    pub const DPL_SHIFT: u32 = 5;
    /// Present.
    pub const P: u32 = 1 << 7;
    /// Available to software.
    pub const AVL: u32 = 1 << 12;
    /// 64-bit code segment.
    pub const L: u32 = 1 << 13;
    /// Default operation size.
    pub const DB: u32 = 1 << 14;
    /// Granularity.
    pub const G: u32 = 1 << 15;
    /// Segment unusable (a null selector was loaded).
    pub const UNUSABLE: u32 = 1 << 16;
    /// The accessed bit of the type (code and data segments).
    pub const ACCESSED: u32 = 1;
}

/// Access rights of a segment with attributes `a`, as KVM computes them: a
/// segment that is unusable or not present is unusable, with no other bit.
pub fn access_rights(a: &SegAttrib, unusable: bool) -> u32 {
    if unusable || !a.present {
        return ar::UNUSABLE;
    }
    u32::from(a.type_ & 0xf)
        | if a.s { ar::S } else { 0 }
        | (u32::from(a.dpl & 3) << ar::DPL_SHIFT)
        | ar::P
        | if a.avl { ar::AVL } else { 0 }
        | if a.l { ar::L } else { 0 }
        | if a.db { ar::DB } else { 0 }
        | if a.g { ar::G } else { 0 }
}

/// The attributes in access rights `r`, and whether the segment is unusable.
pub fn attributes(r: u32) -> (SegAttrib, bool) {
    let a = SegAttrib {
        type_: (r & ar::TYPE) as u8,
        s: r & ar::S != 0,
        dpl: ((r >> ar::DPL_SHIFT) & 3) as u8,
        present: r & ar::P != 0,
        avl: r & ar::AVL != 0,
        l: r & ar::L != 0,
        db: r & ar::DB != 0,
        g: r & ar::G != 0,
    };
    (a, r & ar::UNUSABLE != 0)
}

/// Access rights every segment register has in virtual-8086 mode (VM entry
/// checks them): present read/write data, accessed, DPL 3.
pub const V86_AR: u32 = 0xf3;

/// The segment virtual-8086 mode runs a real-mode guest with in place of
/// `s` (CS, SS, DS, ES, FS or GS): the same selector and base, a 64 KiB
/// limit and [`V86_AR`]. `None` where virtual-8086 mode cannot stand for
/// it: a base other than the selector times 16 (CS after RESET, or a
/// segment loaded in protected mode before the switch back), a limit other
/// than 64 KiB ("unreal mode") or a 32-bit default size.
pub fn v86_segment(s: &Segment) -> Option<Segment> {
    let plain = s.base == u64::from(s.selector) << 4 && s.limit == 0xffff && s.ar & ar::DB == 0;
    plain.then_some(Segment { ar: V86_AR, ..*s })
}

/// TR while a real-mode guest runs in virtual-8086 mode: a 32-bit busy TSS
/// with a limit of 0. The processor reads the I/O permission bitmap of the
/// TSS for every IN and OUT in virtual-8086 mode; with no room for one each
/// raises #GP(0), which rkvm intercepts and turns into the I/O exit. No
/// guest memory backs it, and nothing else reads it: every exception is
/// intercepted in virtual-8086 mode, before it could switch stacks.
pub const V86_TR: Segment = Segment {
    selector: 0,
    base: 0,
    limit: 0,
    ar: 0x8b,
};

/// Makes the segments of a protected-mode guest acceptable to VM entry
/// without unrestricted guest, which wants the RPLs of CS and SS to agree
/// with SS's DPL and no data segment's DPL below its RPL. A guest that has
/// just set CR0.PE still has real-mode segments (DPL 0) behind whatever
/// selectors it had: as kvm_intel does, CS and SS take SS's DPL as RPL and
/// a data segment's DPL is raised to its RPL, until the guest loads them.
/// A guest in proper protected mode has nothing to fix.
pub fn protected_mode_fixup(segs: &mut [Segment; 8]) {
    let dpl = |s: &Segment| ((s.ar >> ar::DPL_SHIFT) & 3) as u16;
    let ss_dpl = dpl(&segs[Seg::Ss as usize]);
    for seg in [Seg::Ss, Seg::Cs] {
        let s = &mut segs[seg as usize];
        if s.ar & ar::UNUSABLE == 0 {
            s.selector = (s.selector & !3) | ss_dpl;
        }
    }
    for seg in [Seg::Es, Seg::Ds, Seg::Fs, Seg::Gs] {
        let s = &mut segs[seg as usize];
        let rpl = s.selector & 3;
        let data_or_plain_code = s.ar & ar::TYPE <= 11;
        if s.ar & ar::UNUSABLE == 0 && s.ar & ar::S != 0 && data_or_plain_code && dpl(s) < rpl {
            s.ar = (s.ar & !(3 << ar::DPL_SHIFT)) | (u32::from(rpl) << ar::DPL_SHIFT);
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The rules of `KVM_SET_USER_MEMORY_REGION`, as `kvm_set_memory_region()`
//! applies them: which request creates, deletes, moves or re-flags a slot, and
//! which is `EINVAL` or `EEXIST`. The module owns the slots' memory; this file
//! only decides.

/// Guest page size (rkvm maps guests in 4 KiB units).
pub const PAGE_SIZE: u64 = 4096;
/// Page shift matching [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// `KVM_USER_MEM_SLOTS` on x86: slot ids at or above are `EINVAL`.
pub const USER_MEM_SLOTS: u32 = 32764;
/// `KVM_MEM_MAX_NR_PAGES`: the most pages one slot may have.
pub const MAX_NR_PAGES: u64 = (1 << 31) - 1;
/// `KVM_MEM_LOG_DIRTY_PAGES`.
pub const MEM_LOG_DIRTY_PAGES: u32 = 1 << 0;
/// `KVM_MEM_READONLY`.
pub const MEM_READONLY: u32 = 1 << 1;

/// A request: `struct kvm_userspace_memory_region`, field for field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Slot id in bits 15:0, address space in bits 31:16.
    pub slot: u32,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// Guest physical address of the first byte.
    pub guest_phys_addr: u64,
    /// Size in bytes; 0 deletes the slot.
    pub memory_size: u64,
    /// Host virtual address of the first byte, in the VM owner's mm.
    pub userspace_addr: u64,
}

/// A slot as it is installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Slot id (address space 0 only).
    pub id: u16,
    /// First guest frame number.
    pub base_gfn: u64,
    /// Number of pages.
    pub npages: u64,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// Host virtual address of the first page.
    pub userspace_addr: u64,
}

impl Slot {
    /// Whether `gfn` lies in this slot.
    pub fn contains(&self, gfn: u64) -> bool {
        gfn >= self.base_gfn && gfn - self.base_gfn < self.npages
    }

    /// Host virtual address of the page holding `gfn` (which must be in the slot).
    pub fn hva(&self, gfn: u64) -> u64 {
        // In range for a `gfn` the slot contains (`plan` checked the sizes);
        // wrapping keeps a caller's mistake from being a kernel panic.
        self.userspace_addr
            .wrapping_add(gfn.wrapping_sub(self.base_gfn) << PAGE_SHIFT)
    }

    /// One past the last frame.
    pub fn end_gfn(&self) -> u64 {
        self.base_gfn + self.npages
    }

    /// Whether the guest may write to it.
    pub fn writable(&self) -> bool {
        self.flags & MEM_READONLY == 0
    }

    /// The frames it covers.
    pub fn span(&self) -> GfnSpan {
        GfnSpan {
            start: self.base_gfn,
            end: self.end_gfn(),
        }
    }
}

/// Guest frame numbers `start..end`: what an unmapping removed, or the
/// bounds of what a shadow page table maps. Empty when `start >= end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GfnSpan {
    /// The first frame.
    pub start: u64,
    /// One past the last frame.
    pub end: u64,
}

impl GfnSpan {
    /// No frame.
    pub const EMPTY: GfnSpan = GfnSpan { start: 0, end: 0 };

    /// The one frame `gfn`.
    pub fn frame(gfn: u64) -> Self {
        GfnSpan {
            start: gfn,
            end: gfn.saturating_add(1),
        }
    }

    /// Whether it has no frame.
    pub fn is_empty(self) -> bool {
        self.start >= self.end
    }

    /// Whether a frame is in both.
    pub fn overlaps(self, other: GfnSpan) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }

    /// The smallest span holding both (and what lies between them).
    pub fn hull(self, other: GfnSpan) -> Self {
        if self.is_empty() {
            other
        } else if other.is_empty() {
            self
        } else {
            GfnSpan {
                start: self.start.min(other.start),
                end: self.end.max(other.end),
            }
        }
    }
}

/// What a valid request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Install a new slot.
    Create(Slot),
    /// Remove slot `id`.
    Delete(u16),
    /// Slot `id` now starts at `base_gfn`; all else stays.
    Move {
        /// The slot.
        id: u16,
        /// Its new first frame.
        base_gfn: u64,
    },
    /// Slot `id` now has `flags` (only `KVM_MEM_LOG_DIRTY_PAGES` may change).
    FlagsOnly {
        /// The slot.
        id: u16,
        /// Its new flags.
        flags: u32,
    },
    /// The request repeats the slot as it is.
    Unchanged,
}

/// Why a request is refused (the module maps these to errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `EINVAL`.
    Invalid,
    /// `EEXIST`: the range overlaps another slot.
    Overlap,
}

/// Decides what `region` does to `slots`.
///
/// `valid_flags` are the `KVM_MEM_*` flags this VM accepts. `user_range_ok`
/// says whether `[addr, addr + size)` is a valid user address range
/// (`access_ok()` in the kernel).
pub fn plan(
    region: &Region,
    valid_flags: u32,
    slots: &[Slot],
    user_range_ok: impl Fn(u64, u64) -> bool,
) -> Result<Change, Refusal> {
    use Refusal::*;

    let id = region.slot as u16;
    let as_id = region.slot >> 16;
    if u32::from(id) >= USER_MEM_SLOTS {
        return Err(Invalid);
    }
    if region.flags & !valid_flags != 0 {
        return Err(Invalid);
    }
    let size = region.memory_size;
    if !size.is_multiple_of(PAGE_SIZE)
        || !region.guest_phys_addr.is_multiple_of(PAGE_SIZE)
        || !region.userspace_addr.is_multiple_of(PAGE_SIZE)
        || !user_range_ok(region.userspace_addr, size)
    {
        return Err(Invalid);
    }
    // rkvm has one address space (no SMM).
    if as_id != 0 {
        return Err(Invalid);
    }
    if region.guest_phys_addr.checked_add(size).is_none() {
        return Err(Invalid);
    }
    let npages = size >> PAGE_SHIFT;
    if npages > MAX_NR_PAGES {
        return Err(Invalid);
    }

    let old = slots.iter().find(|s| s.id == id);
    if size == 0 {
        return match old {
            Some(_) => Ok(Change::Delete(id)),
            None => Err(Invalid),
        };
    }

    let base_gfn = region.guest_phys_addr >> PAGE_SHIFT;
    let change = match old {
        None => Change::Create(Slot {
            id,
            base_gfn,
            npages,
            flags: region.flags,
            userspace_addr: region.userspace_addr,
        }),
        Some(old) => {
            if region.userspace_addr != old.userspace_addr
                || npages != old.npages
                || (region.flags ^ old.flags) & MEM_READONLY != 0
            {
                return Err(Invalid);
            }
            if base_gfn != old.base_gfn {
                Change::Move { id, base_gfn }
            } else if region.flags != old.flags {
                return Ok(Change::FlagsOnly {
                    id,
                    flags: region.flags,
                });
            } else {
                return Ok(Change::Unchanged);
            }
        }
    };

    let end = base_gfn + npages;
    if slots
        .iter()
        .any(|s| s.id != id && s.base_gfn < end && base_gfn < s.end_gfn())
    {
        return Err(Overlap);
    }
    Ok(change)
}

/// The slot that maps `gfn`, if any.
pub fn lookup(slots: &[Slot], gfn: u64) -> Option<&Slot> {
    slots.iter().find(|s| s.contains(gfn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const ALL: u32 = MEM_LOG_DIRTY_PAGES | MEM_READONLY;

    fn ok(_: u64, _: u64) -> bool {
        true
    }

    fn region(slot: u32, gpa: u64, size: u64, hva: u64) -> Region {
        Region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: hva,
        }
    }

    fn slot(id: u16, gpa: u64, size: u64, hva: u64) -> Slot {
        Slot {
            id,
            base_gfn: gpa >> 12,
            npages: size >> 12,
            flags: 0,
            userspace_addr: hva,
        }
    }

    #[test]
    fn create() {
        let c = plan(&region(0, 0x1000, 0x4000, 0x7000_0000), ALL, &[], ok);
        assert_eq!(c, Ok(Change::Create(slot(0, 0x1000, 0x4000, 0x7000_0000))));
    }

    #[test]
    fn misaligned_or_out_of_range_is_invalid() {
        for r in [
            region(0, 0x1000, 0x4001, 0x7000_0000),
            region(0, 0x1001, 0x4000, 0x7000_0000),
            region(0, 0x1000, 0x4000, 0x7000_0010),
            region(USER_MEM_SLOTS, 0, 0x1000, 0x7000_0000),
            region(1 << 16, 0, 0x1000, 0x7000_0000), // address space 1
            region(0, !0xfff, 0x2000, 0x7000_0000),  // wraps
        ] {
            assert_eq!(plan(&r, ALL, &[], ok), Err(Refusal::Invalid), "{r:?}");
        }
        let mut r = region(0, 0, 0x1000, 0x7000_0000);
        r.flags = 1 << 2; // KVM_MEM_GUEST_MEMFD: not here
        assert_eq!(plan(&r, ALL, &[], ok), Err(Refusal::Invalid));
        r.flags = MEM_READONLY;
        assert_eq!(
            plan(&r, MEM_LOG_DIRTY_PAGES, &[], ok),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            plan(&region(0, 0, 0x1000, 0x1000), ALL, &[], |_, _| false),
            Err(Refusal::Invalid)
        );
    }

    #[test]
    fn overlap_is_eexist_but_touching_is_fine() {
        let slots = [slot(0, 0x10000, 0x10000, 0x7000_0000)];
        assert_eq!(
            plan(&region(1, 0x1f000, 0x2000, 0x8000_0000), ALL, &slots, ok),
            Err(Refusal::Overlap)
        );
        assert_eq!(
            plan(&region(1, 0x0f000, 0x2000, 0x8000_0000), ALL, &slots, ok),
            Err(Refusal::Overlap)
        );
        assert!(plan(&region(1, 0x20000, 0x1000, 0x8000_0000), ALL, &slots, ok).is_ok());
        assert!(plan(&region(1, 0x0f000, 0x1000, 0x8000_0000), ALL, &slots, ok).is_ok());
    }

    #[test]
    fn delete() {
        let slots = [slot(3, 0, 0x1000, 0x7000_0000)];
        assert_eq!(
            plan(&region(3, 0, 0, 0), ALL, &slots, ok),
            Ok(Change::Delete(3))
        );
        // Deleting a slot that does not exist is EINVAL, as in KVM.
        assert_eq!(
            plan(&region(4, 0, 0, 0), ALL, &slots, ok),
            Err(Refusal::Invalid)
        );
    }

    #[test]
    fn modify() {
        let slots = vec![
            slot(0, 0x1000, 0x2000, 0x7000_0000),
            slot(1, 0x10000, 0x1000, 0x8000_0000),
        ];
        let same = region(0, 0x1000, 0x2000, 0x7000_0000);
        assert_eq!(plan(&same, ALL, &slots, ok), Ok(Change::Unchanged));
        let moved = Region {
            guest_phys_addr: 0x20000,
            ..same
        };
        assert_eq!(
            plan(&moved, ALL, &slots, ok),
            Ok(Change::Move {
                id: 0,
                base_gfn: 0x20
            })
        );
        let onto_other = Region {
            guest_phys_addr: 0x10000,
            ..same
        };
        assert_eq!(plan(&onto_other, ALL, &slots, ok), Err(Refusal::Overlap));
        // A move may overlap the slot's own old range.
        let shifted = Region {
            guest_phys_addr: 0x2000,
            ..same
        };
        assert_eq!(
            plan(&shifted, ALL, &slots, ok),
            Ok(Change::Move { id: 0, base_gfn: 2 })
        );
        let dirty = Region {
            flags: MEM_LOG_DIRTY_PAGES,
            ..same
        };
        assert_eq!(
            plan(&dirty, ALL, &slots, ok),
            Ok(Change::FlagsOnly {
                id: 0,
                flags: MEM_LOG_DIRTY_PAGES
            })
        );
        let ro = Region {
            flags: MEM_READONLY,
            ..same
        };
        let resized = Region {
            memory_size: 0x3000,
            ..same
        };
        let rehosted = Region {
            userspace_addr: 0x9000_0000,
            ..same
        };
        for r in [ro, resized, rehosted] {
            assert_eq!(plan(&r, ALL, &slots, ok), Err(Refusal::Invalid), "{r:?}");
        }
    }

    #[test]
    fn spans_overlap_only_where_they_share_a_frame() {
        let a = GfnSpan {
            start: 0x10,
            end: 0x20,
        };
        assert!(a.overlaps(GfnSpan::frame(0x10)));
        assert!(a.overlaps(GfnSpan::frame(0x1f)));
        assert!(!a.overlaps(GfnSpan::frame(0x20)));
        assert!(!a.overlaps(GfnSpan::frame(0xf)));
        assert!(a.overlaps(GfnSpan {
            start: 0,
            end: 0x100
        }));
        assert!(!a.overlaps(GfnSpan::EMPTY));
        assert!(!GfnSpan::EMPTY.overlaps(GfnSpan::EMPTY));
        // An empty span inside another still holds no frame.
        assert!(!a.overlaps(GfnSpan {
            start: 0x18,
            end: 0x18
        }));
    }

    #[test]
    fn a_hull_covers_both_spans_and_ignores_empty_ones() {
        let a = GfnSpan::frame(5);
        assert_eq!(GfnSpan::EMPTY.hull(a), a);
        assert_eq!(a.hull(GfnSpan::EMPTY), a);
        assert_eq!(a.hull(GfnSpan::frame(9)), GfnSpan { start: 5, end: 10 });
        assert_eq!(GfnSpan::frame(9).hull(a), GfnSpan { start: 5, end: 10 });
        let s = Slot {
            id: 1,
            base_gfn: 0x100,
            npages: 16,
            flags: 0,
            userspace_addr: 0,
        };
        assert_eq!(
            s.span(),
            GfnSpan {
                start: 0x100,
                end: 0x110
            }
        );
    }

    #[test]
    fn lookup_finds_the_slot() {
        let slots: Vec<Slot> = vec![
            slot(0, 0, 0x2000, 0x7000_0000),
            slot(1, 0x10000, 0x1000, 0x8000_0000),
        ];
        assert_eq!(lookup(&slots, 1).map(|s| s.id), Some(0));
        assert_eq!(lookup(&slots, 2), None);
        assert_eq!(lookup(&slots, 0x10).map(|s| s.hva(0x10)), Some(0x8000_0000));
        assert_eq!(slots[0].hva(1), 0x7000_1000);
    }
}

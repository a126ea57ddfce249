// SPDX-License-Identifier: GPL-2.0

//! The debugger's four hardware breakpoint slots (`hbreak`, `watch`,
//! `rwatch`, `awatch`) and the debug registers they make for
//! `KVM_SET_GUEST_DEBUG` with `KVM_GUESTDBG_USE_HW_BP`.

use gdbstub::target::ext::breakpoints::WatchKind;

/// What a slot watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An instruction fetch (`hbreak`).
    Execute,
    /// A data access of this kind (`watch`, `rwatch`, `awatch`).
    Watch(WatchKind),
}

/// One hardware breakpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The linear address.
    pub addr: u64,
    /// How many bytes: 1 for an instruction, 1, 2, 4 or 8 for data.
    pub len: u64,
    pub kind: Kind,
}

impl Slot {
    /// DR7's R/W and LEN bits for this slot (before the shift to its
    /// place): `None` where the hardware cannot watch it (a length other
    /// than 1, 2, 4, 8, or an address not aligned to it).
    fn control(&self) -> Option<u64> {
        let rw = match self.kind {
            Kind::Execute => return (self.len == 1).then_some(0),
            Kind::Watch(WatchKind::Write) => 0b01,
            // x86 has no read-only watchpoint: reads and writes (gdb then
            // checks whether the value changed).
            Kind::Watch(WatchKind::Read | WatchKind::ReadWrite) => 0b11,
        };
        let len = match self.len {
            1 => 0b00,
            2 => 0b01,
            4 => 0b11,
            8 => 0b10,
            _ => return None,
        };
        self.addr.is_multiple_of(self.len).then_some(rw | len << 2)
    }
}

/// The four slots (DR0-DR3).
#[derive(Debug, Default)]
pub struct Slots([Option<Slot>; 4]);

/// DR7 bit 10, which reads as one.
const DR7_FIXED: u64 = 0x400;

impl Slots {
    /// Takes a free slot: false if none is left or the hardware cannot
    /// watch this (gdb then says so, or watches in software).
    pub fn add(&mut self, slot: Slot) -> bool {
        if slot.control().is_none() {
            return false;
        }
        match self.0.iter_mut().find(|s| s.is_none()) {
            Some(free) => {
                *free = Some(slot);
                true
            }
            None => false,
        }
    }

    /// Frees the slot holding `slot`: false if none does.
    pub fn remove(&mut self, slot: &Slot) -> bool {
        match self.0.iter_mut().find(|s| s.as_ref() == Some(slot)) {
            Some(s) => {
                *s = None;
                true
            }
            None => false,
        }
    }

    /// Whether no slot is in use.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// `kvm_guest_debug.arch.debugreg`: DR0-DR3 and DR7 (local enables).
    pub fn debugreg(&self) -> [u64; 8] {
        let mut regs = [0u64; 8];
        let mut dr7 = DR7_FIXED;
        for (i, slot) in self.0.iter().enumerate() {
            if let Some((slot, control)) = slot.and_then(|s| Some((s, s.control()?))) {
                regs[i] = slot.addr;
                dr7 |= 1 << (2 * i) | control << (16 + 4 * i);
            }
        }
        regs[7] = dr7;
        regs
    }

    /// The slot that fired, by DR6's B0-B3.
    pub fn hit(&self, dr6: u64) -> Option<Slot> {
        (0..4)
            .filter(|i| dr6 & (1 << i) != 0)
            .find_map(|i| self.0[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(addr: u64, len: u64, kind: WatchKind) -> Slot {
        Slot {
            addr,
            len,
            kind: Kind::Watch(kind),
        }
    }

    #[test]
    fn dr7_for_breakpoints_and_watchpoints() {
        let mut s = Slots::default();
        assert!(s.is_empty());
        assert_eq!(s.debugreg()[7], 0x400);
        let exec = Slot {
            addr: 0xffff_ffff_8100_0000,
            len: 1,
            kind: Kind::Execute,
        };
        assert!(s.add(exec));
        assert!(s.add(watch(0x6000, 4, WatchKind::Write)));
        assert!(s.add(watch(0x7000, 8, WatchKind::ReadWrite)));
        let regs = s.debugreg();
        assert_eq!(regs[0], 0xffff_ffff_8100_0000);
        assert_eq!(regs[1], 0x6000);
        assert_eq!(regs[2], 0x7000);
        // L0 exec; L1 write 4 bytes (RW=01, LEN=11); L2 access 8 (RW=11, LEN=10).
        assert_eq!(
            regs[7],
            0x400 | 1 | 1 << 2 | 1 << 4 | 0b1101 << 20 | 0b1011 << 24
        );
        assert_eq!(s.hit(0xffff_0ff2), Some(watch(0x6000, 4, WatchKind::Write)));
        assert_eq!(s.hit(0xffff_4ff0), None, "a single step is no slot's");
        assert!(s.remove(&exec));
        assert!(!s.remove(&exec));
        assert_eq!(s.debugreg()[7] & 3, 0);
    }

    #[test]
    fn what_the_hardware_cannot_watch() {
        let mut s = Slots::default();
        assert!(!s.add(watch(0x6001, 4, WatchKind::Write)), "misaligned");
        assert!(!s.add(watch(0x6000, 3, WatchKind::Write)), "length 3");
        for i in 0..4 {
            assert!(s.add(watch(0x6000 + 8 * i, 8, WatchKind::Write)));
        }
        assert!(!s.add(watch(0x9000, 1, WatchKind::Read)), "four slots only");
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Address space IDs: which TLB entries belong to which guest.
//!
//! As KVM does, each CPU hands out ASIDs from a counter; a vCPU keeps its
//! ASID while it stays on the same CPU in the same generation. When a CPU
//! runs out of ASIDs it starts a new generation and flushes its whole TLB
//! once (TLB_CONTROL = 1, which every SVM implementation has; QEMU has no
//! flush-by-ASID). A vCPU that moves to another CPU, or whose VM changed its
//! nested page table, simply takes a fresh ASID: its old translations can
//! never be used again. So guests never share TLB entries, and the TLB is
//! flushed only when a CPU's ASIDs wrap.

use core::sync::atomic::{
    AtomicU64,
    Ordering, //
};

use kernel::prelude::*;

/// Per CPU: `generation << 32 | next ASID`.
pub(crate) struct AsidTable {
    cpus: KVec<AtomicU64>,
    /// ASIDs are 1 .. `count` (0 is the host's).
    count: u32,
}

/// The ASID a vCPU holds.
#[derive(Clone, Copy)]
pub(crate) struct VcpuAsid {
    cpu: usize,
    generation: u32,
    asid: u32,
    /// The VM's nested-page-table epoch the ASID was taken in.
    epoch: u64,
}

impl VcpuAsid {
    /// None yet (matches no CPU).
    pub(crate) const NONE: VcpuAsid = VcpuAsid {
        cpu: usize::MAX,
        generation: 0,
        asid: 0,
        epoch: 0,
    };
}

impl AsidTable {
    /// A table for `ncpus` CPUs with `count` ASIDs each (CPUID 8000_000A EBX).
    pub(crate) fn new(ncpus: usize, count: u32) -> Result<Self> {
        let mut cpus = KVec::with_capacity(ncpus, GFP_KERNEL)?;
        for _ in 0..ncpus {
            cpus.push(AtomicU64::new(1 << 32 | 1), GFP_KERNEL)?;
        }
        Ok(AsidTable {
            cpus,
            count: count.max(2),
        })
    }

    /// The ASID for a vCPU about to run on `cpu` (interrupts off, so only
    /// this CPU touches its counter), and whether the TLB must be flushed.
    pub(crate) fn assign(&self, cpu: usize, mine: &mut VcpuAsid, epoch: u64) -> (u32, bool) {
        let Some(slot) = self.cpus.get(cpu) else {
            return (1, true); // an unknown CPU: be safe
        };
        let cur = slot.load(Ordering::Relaxed);
        let (generation, next) = ((cur >> 32) as u32, cur as u32);
        if mine.cpu == cpu && mine.generation == generation && mine.epoch == epoch {
            return (mine.asid, false);
        }
        let (generation, asid, flush) = if next >= self.count {
            (generation.wrapping_add(1).max(1), 1, true)
        } else {
            (generation, next, false)
        };
        slot.store(
            u64::from(generation) << 32 | u64::from(asid + 1),
            Ordering::Relaxed,
        );
        *mine = VcpuAsid {
            cpu,
            generation,
            asid,
            epoch,
        };
        (asid, flush)
    }
}

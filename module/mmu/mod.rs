// SPDX-License-Identifier: GPL-2.0

//! The guest's physical memory as the hardware sees it: memory slots plus the
//! translation structure built from them.
//!
//! Two modes, chosen per VM (`tdp` module parameter, or `KVM_ENABLE_CAP`
//! with rkvm's `KVM_CAP_RKVM_MMU`):
//!
//! - `tdp`: two-dimensional paging (NPT on AMD). One nested page table per
//!   VM maps guest physical to host physical addresses; the guest's own page
//!   tables are the hardware's business.
//! - `shadow`: no nested paging. Each vCPU has a shadow page table mapping
//!   the guest's linear addresses straight to host pages, built from the
//!   guest's page tables walked in software ([`shadow`]).
//!
//! Both take their pages from the same memory slots ([`GuestMemory`]), with
//! the same rules for MMIO, read-only slots and dirty logging.

pub(crate) mod shadow;
pub(crate) mod tdp;

use core::sync::atomic::{
    fence,
    AtomicU64,
    Ordering, //
};

use kernel::{
    prelude::*,
    sync::Arc, //
};

use crate::{
    kick::{
        Kick,
        KickGuard, //
    },
    memory::{
        Backing,
        GuestMemory,
        RetiredSlot, //
    },
    pure::{
        memslot::{
            GfnSpan,
            Region, //
        },
        paging::{
            GuestPhys,
            HostPhys,
            TdpFormat, //
        },
        shadow::{
            Flush,
            GuestPaging, //
        }, //
    },
    sys::{
        self,
        PageBox, //
    }, //
};

use shadow::{
    PageFault,
    Shadow, //
};

/// What one vCPU enters the guest with: the VM's nested page table, or its
/// own shadow page table. The run loop talks to the MMU through this alone.
pub(crate) enum VcpuMmu {
    /// Nested paging: the VM's table ([`Mmu::root`]); the guest's own page
    /// tables, faults and TLB flushes are the processor's business.
    Tdp,
    /// Shadow paging: this vCPU's table, kept by rkvm.
    Shadow(Shadow),
}

impl VcpuMmu {
    pub(crate) fn new(shadow: bool) -> Result<Self> {
        Ok(if shadow {
            VcpuMmu::Shadow(Shadow::new()?)
        } else {
            VcpuMmu::Tdp
        })
    }

    /// What to enter the guest with, for a guest whose paging registers are
    /// `paging`: the root of the VM's nested page table (`tdp_root`) or of
    /// this vCPU's shadow page table, and the TLB epochs (see [`Entry`]).
    /// Needs no MMU lock: the nested root never changes, and the shadow
    /// table is this vCPU's.
    pub(crate) fn entry<'a>(
        &mut self,
        gate: &'a EntryGate,
        tdp_root: HostPhys,
        paging: &GuestPaging,
    ) -> Entry<'a> {
        let vm_epoch = gate.epoch();
        let (root, tlb_epoch) = match self {
            VcpuMmu::Tdp => (tdp_root, vm_epoch),
            VcpuMmu::Shadow(shadow) => {
                let root = shadow.prepare(paging, gate, vm_epoch);
                (root, vm_epoch.wrapping_add(shadow.generation()))
            }
        };
        Entry {
            root,
            tlb_epoch,
            gate,
            vm_epoch,
            kick: None,
        }
    }

    /// The guest changed its paging state or flushed its TLB: `what` goes
    /// from the shadow table. Returns whether there was one.
    pub(crate) fn flush(&mut self, what: Flush) -> bool {
        match self {
            VcpuMmu::Tdp => false,
            VcpuMmu::Shadow(shadow) => {
                shadow.flush(what);
                what != Flush::None
            }
        }
    }

    /// The guest's INVLPG of `linear`.
    pub(crate) fn invlpg(&mut self, linear: u64) {
        if let VcpuMmu::Shadow(shadow) = self {
            shadow.invlpg(linear);
        }
    }

    /// A guest page fault at `addr` with error code `error` (intercepted
    /// with shadow paging only: `None` otherwise).
    pub(crate) fn page_fault(
        &mut self,
        vm: &mut Mmu,
        paging: &GuestPaging,
        maxphyaddr: u32,
        addr: u64,
        error: u64,
    ) -> Result<Option<PageFault>> {
        match self {
            VcpuMmu::Tdp => Ok(None),
            VcpuMmu::Shadow(shadow) => shadow
                .page_fault(&mut vm.memory, &vm.gate, paging, maxphyaddr, addr, error)
                .map(Some),
        }
    }
}

/// A page table: a page of 512 entries, which borrow from it.
///
/// The processor reads the entries (and sets accessed and dirty bits in
/// them) while a vCPU runs on the table. A shadow table is its vCPU's and
/// changes only while that vCPU is out of guest mode (its state lock). The
/// nested page table is shared by the VM's vCPUs, which run in parallel
/// with its changes (made under the MMU lock): a new table is filled
/// before an entry points to it, and an entry goes from not present to
/// present, or to a translation that keeps every old one valid (a 2 MiB
/// leaf split into the same 4 KiB ones, a read-only leaf made writable),
/// except when leaves are removed: then the epoch moves and the pages they
/// mapped stay pinned until every vCPU in guest mode has left it
/// ([`Unmapped`], [`EntryGate::wait_for_guests`]). Its tables live as long
/// as the VM.
struct Table(PageBox<[u64; 512]>);

impl Table {
    fn new() -> Result<Self> {
        Ok(Table(PageBox::new()?))
    }

    /// A table below 4 GiB (the root of a legacy PAE CR3).
    fn new_below_4g() -> Result<Self> {
        Ok(Table(PageBox::new_below_4g()?))
    }

    fn phys(&self) -> HostPhys {
        self.0.phys()
    }

    fn entries(&self) -> &[u64; 512] {
        &self.0
    }

    fn entries_mut(&mut self) -> &mut [u64; 512] {
        &mut self.0
    }
}

/// A root table and the tables below it, which entries point to by physical
/// address: a table is found by the address an entry holds, among the
/// tables this tree owns (so an entry can never lead outside them). Each
/// table below the root carries a tag (`Shadow`: the root entry it is
/// under).
struct TableTree {
    root: Table,
    /// Sorted by physical address.
    below: KVec<TableEntry>,
}

/// A table below a root: its physical address, its tag, the table.
type TableEntry = (u64, usize, Table);

impl TableTree {
    fn new(root: Table) -> Self {
        TableTree {
            root,
            below: KVec::new(),
        }
    }

    /// The root's physical address.
    fn root(&self) -> HostPhys {
        self.root.phys()
    }

    /// The tables below the root.
    fn len(&self) -> usize {
        self.below.len()
    }

    fn find(&self, pa: HostPhys) -> Option<usize> {
        self.below.binary_search_by_key(&pa.0, |(p, ..)| *p).ok()
    }

    /// The entries of the table at `pa`, if it is one of this tree's.
    fn table(&self, pa: HostPhys) -> Option<&[u64; 512]> {
        if pa.0 == self.root.phys().0 {
            return Some(self.root.entries());
        }
        let i = self.find(pa)?;
        self.below.get(i).map(|(_, _, t)| t.entries())
    }

    /// As [`TableTree::table`], to change them.
    fn table_mut(&mut self, pa: HostPhys) -> Option<&mut [u64; 512]> {
        if pa.0 == self.root.phys().0 {
            return Some(self.root.entries_mut());
        }
        let i = self.find(pa)?;
        self.below.get_mut(i).map(|(_, _, t)| t.entries_mut())
    }

    /// Entry `index` of the table at `pa` (`EIO`: not a table of this tree,
    /// which cannot happen).
    fn entry(&self, pa: HostPhys, index: usize) -> Result<u64> {
        self.table(pa)
            .and_then(|t| t.get(index))
            .copied()
            .ok_or(EIO)
    }

    /// As [`TableTree::entry`], to change it.
    fn entry_mut(&mut self, pa: HostPhys, index: usize) -> Result<&mut u64> {
        self.table_mut(pa).and_then(|t| t.get_mut(index)).ok_or(EIO)
    }

    /// A new, empty table below the root, tagged `tag`: its address.
    fn add(&mut self, tag: usize) -> Result<HostPhys> {
        let table = Table::new()?;
        let pa = table.phys();
        let at = match self.below.binary_search_by_key(&pa.0, |(p, ..)| *p) {
            Err(at) => at,
            // A live page is not allocated twice.
            Ok(_) => return Err(EIO),
        };
        self.below.reserve(1, GFP_KERNEL)?;
        self.below
            .insert_within_capacity(at, (pa.0, tag, table))
            .map_err(|_| ENOMEM)?;
        Ok(pa)
    }

    /// Frees every table below the root whose tag `keep` refuses.
    fn retain(&mut self, keep: impl Fn(usize) -> bool) {
        self.below.retain(|(_, tag, _)| keep(*tag));
    }

    /// Frees every table below the root.
    fn clear(&mut self) {
        self.below.clear();
    }
}

/// The VM statistics the MMU keeps (KVM's names): the leaves mapped now, by
/// size. Atomics, so the stats fd reads them without the MMU lock, which a
/// running vCPU holds.
pub(crate) struct MmuStats {
    pub(crate) pages_4k: AtomicU64,
    pub(crate) pages_2m: AtomicU64,
    /// Unmappings whose translations no vCPU may keep (KVM's
    /// `remote_tlb_flush_requests`).
    pub(crate) remote_tlb_flush_requests: AtomicU64,
    /// Of those, the ones that found vCPUs in guest mode and interrupted
    /// the CPUs to make them exit (KVM's `remote_tlb_flush`).
    pub(crate) remote_tlb_flush: AtomicU64,
}

/// A VM's memory: its slots and the nested page table built lazily from them.
pub(crate) struct Mmu {
    pub(crate) memory: GuestMemory,
    tdp: tdp::Tdp,
    pub(crate) stats: Arc<MmuStats>,
    /// Counts the times mappings were removed; shared with the vCPUs.
    gate: Arc<EntryGate>,
}

/// What a guest access to an unmapped guest physical address turned out to be.
pub(crate) enum Fault {
    /// The page is now mapped: re-enter the guest.
    Mapped,
    /// No RAM there (or a write to read-only RAM): emulate it as MMIO.
    Mmio,
}

impl Mmu {
    pub(crate) fn new(format: TdpFormat) -> Result<Self> {
        let stats = Arc::new(
            MmuStats {
                pages_4k: AtomicU64::new(0),
                pages_2m: AtomicU64::new(0),
                remote_tlb_flush_requests: AtomicU64::new(0),
                remote_tlb_flush: AtomicU64::new(0),
            },
            GFP_KERNEL,
        )?;
        Ok(Mmu {
            memory: GuestMemory::new(),
            tdp: tdp::Tdp::new(format, stats.clone())?,
            gate: Arc::new(EntryGate::new(stats.clone())?, GFP_KERNEL)?,
            stats,
        })
    }

    /// The VM's entry gate (for the vCPUs, which enter without the MMU lock).
    pub(crate) fn gate(&self) -> Arc<EntryGate> {
        self.gate.clone()
    }

    /// Root of the nested page table (nCR3).
    pub(crate) fn root(&self) -> HostPhys {
        self.tdp.root()
    }

    /// `KVM_SET_USER_MEMORY_REGION`. A change that can remove or move
    /// mappings (a slot deleted, moved, or its dirty logging turned on or
    /// off) removes the slot's; they are made again on demand. What was
    /// unmapped is returned: dropping it (after the MMU lock) waits until
    /// no vCPU can still use it, then frees it.
    pub(crate) fn set_region(&mut self, region: &Region) -> Result<Option<Unmapped>> {
        match self.memory.set_region(region)? {
            Some((span, slot)) => self.drop_mappings(span, slot).map(Some),
            None => Ok(None),
        }
    }

    /// Handles a nested page fault at `gpa`: one 2 MiB leaf where the
    /// memory allows it (see `GuestMemory::large_backing`), else a 4 KiB one.
    pub(crate) fn fault(&mut self, gpa: GuestPhys, write: bool) -> Result<Fault> {
        if let Some((base, hpa, writable)) = self.memory.large_backing(gpa, write)? {
            if self.tdp.map_large(base, hpa, writable)? {
                return Ok(Fault::Mapped);
            }
        }
        match self.memory.backing(gpa, write)? {
            Backing::Ram(hpa, writable) => {
                self.tdp.map(gpa, hpa, writable)?;
                Ok(Fault::Mapped)
            }
            Backing::Mmio => Ok(Fault::Mmio),
        }
    }

    /// `KVM_GET_DIRTY_LOG` for slot `id`: its bitmap, cleared, and its pages
    /// write-protected again (the slot's mappings are removed and made
    /// again on demand, read-only until written; the writable translations
    /// are gone once the returned [`Unmapped`] is dropped).
    pub(crate) fn take_dirty_log(&mut self, id: u16) -> Result<(KVVec<u64>, Unmapped)> {
        let (bitmap, span) = self.memory.take_dirty_log(id)?;
        Ok((bitmap, self.drop_mappings(span, RetiredSlot::none())?))
    }

    /// Removes the nested page table's leaves for `span` and moves the
    /// epoch on, recording `span`: each vCPU flushes its TLB at its next
    /// entry, and a shadow table that maps any of `span` is emptied.
    fn drop_mappings(&mut self, span: GfnSpan, slot: RetiredSlot) -> Result<Unmapped> {
        // The epoch moves even if the zap failed half-way (which cannot
        // happen: the walk stays in the tree's own tables): what it did
        // remove must leave the vCPUs' TLBs.
        let zapped = self.tdp.zap(span);
        self.gate.advance(span);
        let unmapped = Unmapped {
            gate: self.gate.clone(),
            _slot: slot,
        };
        zapped.map(|()| unmapped)
    }
}

/// What an unmapping took out of use, still reachable by a vCPU in guest
/// mode through its TLB: the translations removed, and the pages of a
/// deleted slot. Dropping it frees the pages, once every vCPU that was in
/// guest mode has left it (see its `Drop`).
#[must_use = "dropping it waits for the vCPUs in guest mode: drop it after the MMU lock"]
pub(crate) struct Unmapped {
    gate: Arc<EntryGate>,
    _slot: RetiredSlot,
}

impl Drop for Unmapped {
    /// Waits until no vCPU can use what was unmapped; the fields, freed
    /// after this, are then unreachable. Best done without the MMU lock
    /// (vCPUs may be waiting for it), but safe with it: leaving guest mode
    /// for the interrupt needs no lock.
    fn drop(&mut self) {
        self.gate.wait_for_guests();
    }
}

/// How a VM's vCPUs enter guest mode in parallel with changes to its
/// mappings, without a lock held in guest mode.
///
/// Two records: the epoch, moved on by each unmapping (under the MMU lock),
/// and the CPUs on which a vCPU of the VM is in guest mode, one bit each. A
/// vCPU prepares its entry with the epoch it read ([`VcpuMmu::entry`]),
/// then, with interrupts off just before the entry, sets its CPU's bit and
/// reads the epoch again ([`Entry::enter_guest_mode`]): if it moved, the entry is
/// abandoned and prepared again. An unmapper moves the epoch, then reads the
/// bits and interrupts those CPUs and waits
/// ([`EntryGate::wait_for_guests`]): an interrupt makes a CPU leave guest
/// mode before it is handled. Both sides write one record and then read the
/// other, sequentially consistent, so at least one sees the other: a vCPU
/// either enters with the new epoch (and flushes its TLB) or is made to
/// exit before anything is freed. KVM does the same with `vcpu->mode`,
/// requests and `kvm_flush_remote_tlbs()`.
pub(crate) struct EntryGate {
    epoch: AtomicU64,
    /// What the last unmappings removed, by epoch (see
    /// [`EntryGate::unmapped_since`]).
    log: [Unmapping; UNMAP_LOG],
    /// Bit `cpu % 64` of word `cpu / 64`: a vCPU of this VM is in guest
    /// mode on that CPU (one at a time per CPU: it runs with interrupts off).
    in_guest: KVec<AtomicU64>,
    /// The VM's statistics (the remote flushes).
    stats: Arc<MmuStats>,
}

impl EntryGate {
    fn new(stats: Arc<MmuStats>) -> Result<Self> {
        let cpus = usize::try_from(kernel::cpu::nr_cpu_ids()).map_err(|_| EINVAL)?;
        let words = cpus.div_ceil(64);
        let mut in_guest = KVec::with_capacity(words, GFP_KERNEL)?;
        for _ in 0..words {
            in_guest.push(AtomicU64::new(0), GFP_KERNEL)?;
        }
        Ok(EntryGate {
            epoch: AtomicU64::new(0),
            log: Default::default(),
            in_guest,
            stats,
        })
    }

    /// The current epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Moves the epoch on for an unmapping of `span`, recorded first.
    /// Under the MMU lock (one writer at a time).
    fn advance(&self, span: GfnSpan) {
        let next = self.epoch.load(Ordering::SeqCst).wrapping_add(1);
        if let Some(record) = self.log.get(Self::log_index(next)) {
            record.write(next, span);
        }
        self.epoch.store(next, Ordering::SeqCst);
    }

    fn log_index(epoch: u64) -> usize {
        (epoch % UNMAP_LOG as u64) as usize
    }

    /// What the unmappings after epoch `since` up to epoch `now` removed,
    /// as one span (`None`: not known, as after more than [`UNMAP_LOG`] of
    /// them; assume everything). Needs no lock: a record rewritten while
    /// it is read reads as not known.
    pub(crate) fn unmapped_since(&self, since: u64, now: u64) -> Option<GfnSpan> {
        if now.wrapping_sub(since) > UNMAP_LOG as u64 {
            return None;
        }
        let mut span = GfnSpan::EMPTY;
        let mut epoch = since;
        while epoch != now {
            epoch = epoch.wrapping_add(1);
            span = span.hull(self.log.get(Self::log_index(epoch))?.read(epoch)?);
        }
        Some(span)
    }

    /// The word and bit of `cpu` in `in_guest`.
    fn cpu_bit(&self, cpu: usize) -> Option<(&AtomicU64, u64)> {
        Some((self.in_guest.get(cpu / 64)?, 1 << (cpu % 64)))
    }

    /// Records a vCPU in guest mode on this CPU, if the epoch is still
    /// `prepared` (`None`: it moved; prepare the entry again). Called with
    /// interrupts off, just before the entry; the vCPU counts as in guest
    /// mode until the guard is dropped, after the exit.
    fn enter(&self, prepared: u64) -> Option<InGuest<'_>> {
        // Every CPU id is below `nr_cpu_ids`, which sized the bitmap.
        let (word, bit) = self.cpu_bit(sys::cpu_id())?;
        word.fetch_or(bit, Ordering::SeqCst);
        let guard = InGuest {
            word,
            bit,
            _kick: None,
        };
        (self.epoch.load(Ordering::SeqCst) == prepared).then_some(guard)
    }

    /// Returns once every vCPU that was in guest mode when the epoch last
    /// moved has left it: the CPUs they are on are interrupted.
    pub(crate) fn wait_for_guests(&self) {
        fence(Ordering::SeqCst);
        self.stats
            .remote_tlb_flush_requests
            .fetch_add(1, Ordering::Relaxed);
        if self.in_guest.iter().any(|w| w.load(Ordering::SeqCst) != 0) {
            self.stats.remote_tlb_flush.fetch_add(1, Ordering::Relaxed);
            // Nothing to do on those CPUs: receiving the interrupt is the
            // point (a VM exit), and the call waits for each of them.
            sys::on_each_cpu_if(
                |cpu, gate: &EntryGate| {
                    gate.cpu_bit(cpu)
                        .is_some_and(|(w, bit)| w.load(Ordering::SeqCst) & bit != 0)
                },
                |_| {},
                self,
            );
        }
    }
}

/// Unmappings an [`EntryGate`] remembers: a vCPU whose shadow table was
/// made more than this many unmappings ago empties it.
const UNMAP_LOG: usize = 16;

/// One unmapping in an [`EntryGate`]'s log: the epoch it moved to and the
/// frames it removed. Written under the MMU lock, read without it, as a
/// sequence lock: the epoch is cleared while the span is written, so a
/// reader that finds the same epoch before and after the span read it
/// whole.
#[derive(Default)]
struct Unmapping {
    epoch: AtomicU64,
    start: AtomicU64,
    end: AtomicU64,
}

impl Unmapping {
    /// No epoch is `u64::MAX` while a record is written: a gate would need
    /// 2^64 unmappings to reach it.
    const WRITING: u64 = u64::MAX;

    fn write(&self, epoch: u64, span: GfnSpan) {
        self.epoch.store(Self::WRITING, Ordering::SeqCst);
        self.start.store(span.start, Ordering::SeqCst);
        self.end.store(span.end, Ordering::SeqCst);
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// The span of the unmapping to `epoch`, if this is still its record.
    fn read(&self, epoch: u64) -> Option<GfnSpan> {
        if self.epoch.load(Ordering::SeqCst) != epoch {
            return None;
        }
        let span = GfnSpan {
            start: self.start.load(Ordering::SeqCst),
            end: self.end.load(Ordering::SeqCst),
        };
        (self.epoch.load(Ordering::SeqCst) == epoch).then_some(span)
    }
}

/// A vCPU recorded in guest mode by [`Entry::enter_guest_mode`].
pub(crate) struct InGuest<'a> {
    word: &'a AtomicU64,
    bit: u64,
    /// The vCPU's kick, while it is in guest mode.
    _kick: Option<KickGuard<'a>>,
}

impl Drop for InGuest<'_> {
    fn drop(&mut self) {
        self.word.fetch_and(!self.bit, Ordering::SeqCst);
    }
}

/// What a vCPU enters guest mode with ([`VcpuMmu::entry`]).
pub(crate) struct Entry<'a> {
    /// The nested page table's root, or with shadow paging the shadow
    /// table's (the guest's CR3 as the processor sees it).
    pub(crate) root: HostPhys,
    /// Changes whenever translations the vCPU's TLB may hold were removed
    /// or changed, so that the backend flushes them before the entry.
    pub(crate) tlb_epoch: u64,
    /// The VM's entry gate, passed with interrupts off just before the
    /// entry ([`Entry::enter_guest_mode`]) with `vm_epoch`.
    gate: &'a EntryGate,
    /// The VM's epoch the entry was prepared in.
    vm_epoch: u64,
    /// The vCPU's kick, if anything can kick it (an in-kernel APIC).
    kick: Option<&'a Kick>,
}

impl<'a> Entry<'a> {
    /// With interrupts off, just before VMRUN or VMLAUNCH: records the vCPU
    /// in guest mode on this CPU until the guard is dropped (after the
    /// exit), or `None` if the mappings changed since the entry was
    /// prepared (then it must be prepared again: `Exit::Cancelled`).
    pub(crate) fn enter_guest_mode(&self) -> Option<InGuest<'a>> {
        let mut guard = self.gate.enter(self.vm_epoch)?;
        if let Some(kick) = self.kick {
            guard._kick = Some(kick.enter()?);
        }
        Some(guard)
    }

    /// The entry gives way to `kick`: kicked after it looked at its events,
    /// the vCPU does not enter (`Exit::Cancelled`) but looks again.
    pub(crate) fn with_kick(self, kick: Option<&'a Kick>) -> Self {
        Entry { kick, ..self }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Making a vCPU notice something another thread (or a timer) did for it:
//! KVM's `kvm_vcpu_kick()`.
//!
//! An event for a vCPU (an interrupt its local APIC accepted, its APIC
//! timer expiring) is first recorded where the vCPU will look (the APIC's
//! registers, a flag), then the vCPU is kicked:
//!
//! - in guest mode, its CPU gets an interrupt (a reschedule IPI), which
//!   ends guest mode; the run loop then looks before it enters again;
//! - halted in the kernel (an in-kernel HLT), it is woken;
//! - about to enter, it sees the kick: [`Kick::enter`], called with
//!   interrupts off just before VMRUN or VMLAUNCH, records the CPU and
//!   then reads the flag, while the kicker sets the flag and then reads
//!   the CPU, both sequentially consistent, so at least one sees the other
//!   (as with `vcpu->mode` and `kvm_vcpu_exiting_guest_mode()`).

use core::sync::atomic::{
    AtomicBool,
    AtomicU32,
    Ordering, //
};

use kernel::{
    new_condvar,
    new_spinlock_irq,
    prelude::*,
    sync::{
        CondVar,
        SpinLockIrq, //
    }, //
};

use crate::sys;

/// No CPU: the vCPU is not in guest mode.
const OUTSIDE: u32 = u32::MAX;

/// One vCPU's kick: shared by the vCPU and whoever has an event for it.
#[pin_data]
pub(crate) struct Kick {
    /// An event was recorded since the vCPU last looked.
    pending: AtomicBool,
    /// The CPU the vCPU is in guest mode on, or [`OUTSIDE`].
    cpu: AtomicU32,
    /// Orders a kick against a halted vCPU going to sleep: held while the
    /// vCPU checks `pending` and enqueues itself on `wake`, and taken by
    /// the kicker after it set `pending`. Taken from interrupt context too
    /// (the APIC timer), so with interrupts off.
    #[pin]
    sleep: SpinLockIrq<()>,
    /// Where a halted vCPU sleeps.
    #[pin]
    wake: CondVar,
}

impl Kick {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Kick {
            pending: AtomicBool::new(false),
            cpu: AtomicU32::new(OUTSIDE),
            sleep <- new_spinlock_irq!(()),
            wake <- new_condvar!(),
        })
    }

    /// Makes the vCPU look at what was recorded for it: callable from any
    /// context, interrupt handlers included.
    pub(crate) fn kick(&self) {
        self.pending.store(true, Ordering::SeqCst);
        let cpu = self.cpu.load(Ordering::SeqCst);
        if cpu != OUTSIDE {
            sys::kick_cpu(cpu);
        }
        // A vCPU between its check of `pending` and its sleep holds the
        // lock: taking it here means it sleeps already, and is woken.
        drop(self.sleep.lock());
        self.wake.notify_all();
    }

    /// The vCPU takes note of what was kicked: clears the flag before it
    /// looks at its events, so that a kick during the look is not lost.
    pub(crate) fn take(&self) -> bool {
        self.pending.swap(false, Ordering::SeqCst)
    }

    /// With interrupts off, just before the entry: records the vCPU in
    /// guest mode on this CPU; `None` (not recorded) if a kick came since
    /// [`Kick::take`], so that the vCPU looks again instead of entering.
    pub(crate) fn enter(&self) -> Option<KickGuard<'_>> {
        // CPU ids fit in 32 bits (nr_cpu_ids is an unsigned int).
        self.cpu.store(sys::cpu_id() as u32, Ordering::SeqCst);
        let guard = KickGuard(self);
        (!self.pending.load(Ordering::SeqCst)).then_some(guard)
    }

    /// A halted vCPU sleeps until kicked, or a signal arrives (then
    /// `Err(EINTR)`), or `ready()` is true already. `ready` is asked
    /// before each sleep, after the kick flag was cleared.
    pub(crate) fn wait(&self, mut ready: impl FnMut() -> bool) -> Result {
        loop {
            self.take();
            if ready() {
                return Ok(());
            }
            let mut guard = self.sleep.lock();
            if self.pending.load(Ordering::SeqCst) {
                continue;
            }
            if self.wake.wait_interruptible(&mut guard) {
                return Err(EINTR);
            }
        }
    }
}

/// A vCPU recorded in guest mode by [`Kick::enter`]: until it is dropped
/// (after the exit), a kick interrupts the CPU.
pub(crate) struct KickGuard<'a>(&'a Kick);

impl Drop for KickGuard<'_> {
    fn drop(&mut self) {
        self.0.cpu.store(OUTSIDE, Ordering::SeqCst);
    }
}

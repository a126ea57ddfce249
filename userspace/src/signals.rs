// SPDX-License-Identifier: GPL-2.0

//! Getting the vCPU thread out of `KVM_RUN`, the way api.rst describes it:
//! a signal whose handler sets `kvm_run.immediate_exit`.
//!
//! Three things need the vCPU thread while the guest runs: the PIT's next
//! interrupt (a POSIX timer sends SIGALRM), console input (the reader
//! thread sends SIGUSR1) and the user (SIGINT from Ctrl-C, SIGTERM, and
//! SIGUSR2 to save the guest with `--save`). Each
//! handler is installed without `SA_RESTART`, so a `KVM_RUN` in progress
//! returns `EINTR`; and each sets `immediate_exit`, so a signal that lands
//! just *before* `KVM_RUN` is not lost: that `KVM_RUN` returns `EINTR` at
//! once. The run loop clears `immediate_exit` after every return from
//! `KVM_RUN`, before it looks at the timer, the input and [`stop_signal`].

use std::ptr::{addr_of_mut, null_mut};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};
use std::sync::OnceLock;

use kvm_bindings::kvm_run;
use nix::libc::c_int;
use nix::sys::pthread::{pthread_kill, pthread_self, Pthread};
use nix::sys::signal::{
    sigaction, SaFlags, SigAction, SigHandler, SigSet, SigevNotify, SigmaskHow, Signal,
};
use nix::sys::time::{TimeSpec, TimeValLike};
use nix::sys::timer::{Expiration, Timer, TimerSetTimeFlags};
use nix::time::ClockId;

use crate::error::{Error, Result};

/// The running vCPU's `kvm_run` (null when no vCPU runs).
static RUN: AtomicPtr<kvm_run> = AtomicPtr::new(null_mut());
/// SIGINT or SIGTERM, once received.
static STOP: AtomicI32 = AtomicI32::new(0);
/// SIGUSR2 (`rkvm run --save`: save the guest now), once received.
static SAVE: AtomicBool = AtomicBool::new(false);
/// The vCPU thread, for [`wake_vcpu`].
static VCPU_THREAD: OnceLock<Pthread> = OnceLock::new();

const WAKE: [Signal; 5] = [
    Signal::SIGALRM,
    Signal::SIGUSR1,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGUSR2,
];

extern "C" fn on_signal(sig: c_int) {
    if sig == Signal::SIGINT as c_int || sig == Signal::SIGTERM as c_int {
        STOP.store(sig, Ordering::SeqCst);
    }
    if sig == Signal::SIGUSR2 as c_int {
        SAVE.store(true, Ordering::SeqCst);
    }
    let run = RUN.load(Ordering::SeqCst);
    if !run.is_null() {
        // SAFETY: `RUN` is non-null only between `Armed::new` and its drop,
        // while the vCPU's kvm_run mapping is alive; one volatile byte
        // store is async-signal-safe.
        unsafe { addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// The handlers, installed for one vCPU thread (the caller) and its
/// `kvm_run`; uninstalled from `RUN` on drop.
pub struct Armed(());

impl Armed {
    /// # Safety
    ///
    /// `run` must be the calling thread's vCPU's `kvm_run` mapping and stay
    /// mapped until the returned value is dropped.
    pub unsafe fn new(run: *mut kvm_run) -> Result<Armed> {
        RUN.store(run, Ordering::SeqCst);
        let _ = VCPU_THREAD.set(pthread_self());
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::empty(),
            SigSet::empty(),
        );
        for sig in WAKE {
            // SAFETY: the handler only does atomic and volatile stores,
            // which are async-signal-safe.
            unsafe { sigaction(sig, &action) }.map_err(|source| Error::Sigaction {
                signal: sig,
                source,
            })?;
        }
        Ok(Armed(()))
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        RUN.store(null_mut(), Ordering::SeqCst);
    }
}

/// Clears `immediate_exit`: called after each return from `KVM_RUN`.
pub fn clear_wakeup() {
    let run = RUN.load(Ordering::SeqCst);
    if !run.is_null() {
        // SAFETY: as in `on_signal`.
        unsafe { addr_of_mut!((*run).immediate_exit).write_volatile(0) };
    }
}

fn wakeup_pending() -> bool {
    let run = RUN.load(Ordering::SeqCst);
    // SAFETY: as in `on_signal`.
    !run.is_null() && unsafe { addr_of_mut!((*run).immediate_exit).read_volatile() } != 0
}

/// The signal that asked the run to stop (SIGINT, SIGTERM), if one did.
pub fn stop_signal() -> Option<Signal> {
    Signal::try_from(STOP.load(Ordering::SeqCst)).ok()
}

/// Whether SIGUSR2 asked for the guest to be saved (`rkvm run --save`).
pub fn save_requested() -> bool {
    SAVE.load(Ordering::SeqCst)
}

/// From another thread: make the vCPU thread's `KVM_RUN` return.
pub fn wake_vcpu() {
    if let Some(&thread) = VCPU_THREAD.get() {
        // The vCPU thread exists for the whole run; nothing to do if not.
        let _ = pthread_kill(thread, Signal::SIGUSR1);
    }
}

/// For a halted guest: sleeps until one of the signals above arrives
/// (returns at once if one came since the last [`clear_wakeup`]).
pub fn wait_for_wakeup() {
    let mut wake = SigSet::empty();
    WAKE.into_iter().for_each(|s| wake.add(s));
    let Ok(old) = wake.thread_swap_mask(SigmaskHow::SIG_BLOCK) else {
        return;
    };
    if !wakeup_pending() {
        let mut during = old;
        WAKE.into_iter().for_each(|s| during.remove(s));
        // Returns EINTR once a handler has run: that is the wakeup.
        let _ = during.suspend();
    }
    let _ = old.thread_set_mask();
}

/// The PIT's interrupt as a signal: a one-shot POSIX timer sending SIGALRM,
/// as a VMM's timer thread would kick the vCPU.
pub struct Kick(Timer);

impl Kick {
    pub fn new() -> Result<Self> {
        let event = nix::sys::signal::SigEvent::new(SigevNotify::SigevSignal {
            signal: Signal::SIGALRM,
            si_value: 0,
        });
        Timer::new(ClockId::CLOCK_MONOTONIC, event)
            .map(Kick)
            .map_err(Error::sys("timer_create"))
    }

    /// Arms the timer to fire in `delay_ns` (at least 1 µs), or disarms it.
    pub fn arm(&mut self, delay_ns: Option<u64>) {
        let delay = delay_ns.map(|d| d.max(1000));
        let expiration = Expiration::OneShot(TimeSpec::nanoseconds(delay.unwrap_or(0) as i64));
        // Arming a valid timer cannot fail; a zero expiration disarms it.
        let _ = self.0.set(expiration, TimerSetTimeFlags::empty());
    }
}

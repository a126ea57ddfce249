// SPDX-License-Identifier: GPL-2.0

//! The in-kernel local APIC of one vCPU (with `KVM_CAP_SPLIT_IRQCHIP`):
//! `pure::lapic`'s model under a lock, its timer on an hrtimer, and the
//! vCPU's [`Kick`]; and the delivery of one message to the APICs of a VM.
//!
//! Who touches what:
//! - the vCPU's own thread, in `KVM_RUN` and the vCPU ioctls: registers
//!   (MMIO, MSRs, CR8), the interrupt it injects, the timer's programming;
//! - other vCPUs and `KVM_SIGNAL_MSI`, from process context: a message
//!   delivered ([`VcpuApic::deliver`]), then a kick;
//! - the hrtimer, in interrupt context: only a flag and a kick. The vCPU
//!   itself then tells the model ([`pure::lapic::Lapic::timer_expired`]).
//!
//! So the model's lock is a plain spinlock, never taken in interrupt
//! context, and never held while another APIC's is taken.

use core::sync::atomic::{
    AtomicBool,
    Ordering, //
};

use kernel::{
    impl_has_hr_timer,
    new_spinlock,
    prelude::*,
    sync::{
        Arc,
        ArcBorrow,
        SpinLock, //
    },
    time::{
        hrtimer::{
            ArcHrTimerHandle,
            HrTimer,
            HrTimerCallback,
            HrTimerCallbackContext,
            HrTimerPointer,
            HrTimerRestart,
            RelativeMode, //
        },
        Delta,
        Monotonic, //
    }, //
};

use crate::{
    kick::Kick,
    pure::ioapic::DestMap,
    pure::lapic::{
        self,
        Accepted,
        Config,
        Destination,
        InitSipi,
        Interrupt,
        Lapic,
        Lvt,
        TimerAction, //
    }, //
};

/// What the lock of a [`VcpuApic`] guards.
pub(crate) struct ApicState {
    /// The registers.
    pub(crate) lapic: Lapic,
    /// INIT and SIPI, and the halted state (`KVM_GET/SET_MP_STATE`).
    pub(crate) mp: InitSipi,
    /// NMIs other APICs sent, not yet taken by the vCPU (at most two, as
    /// the vCPU keeps).
    pub(crate) nmis: u8,
}

/// One vCPU's local APIC.
#[pin_data]
pub(crate) struct VcpuApic {
    #[pin]
    state: SpinLock<ApicState>,
    #[pin]
    timer: HrTimer<VcpuApic>,
    /// The timer fired since the vCPU last looked.
    timer_fired: AtomicBool,
    /// Makes the vCPU look.
    #[pin]
    kick: Kick,
}

impl_has_hr_timer! {
    impl HasHrTimer<Self> for VcpuApic {
        mode: RelativeMode<Monotonic>,
        field: self.timer
    }
}

impl HrTimerCallback for VcpuApic {
    type Pointer<'a> = Arc<Self>;

    /// Interrupt context: the vCPU does the rest.
    fn run(this: ArcBorrow<'_, Self>, _ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        this.timer_fired.store(true, Ordering::SeqCst);
        this.kick.kick();
        HrTimerRestart::NoRestart
    }
}

/// The armed APIC timer: dropping it cancels the timer (and waits for a
/// callback running on another CPU). Kept with the vCPU's state.
pub(crate) type TimerHandle = ArcHrTimerHandle<VcpuApic>;

impl VcpuApic {
    pub(crate) fn new(config: Config) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(VcpuApic {
                state <- new_spinlock!(ApicState {
                    lapic: Lapic::new(config),
                    mp: InitSipi::new(config.bsp),
                    nmis: 0,
                }),
                timer <- HrTimer::new(),
                timer_fired: AtomicBool::new(false),
                kick <- Kick::new(),
            }),
            GFP_KERNEL,
        )
    }

    /// Runs `f` on the APIC's state, under its lock (no other APIC's lock
    /// may be taken inside).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut ApicState) -> R) -> R {
        f(&mut self.state.lock())
    }

    /// The id of the vCPU the APIC belongs to.
    pub(crate) fn vcpu_id(&self) -> u32 {
        self.with(|s| s.lapic.config().vcpu_id)
    }

    /// The vCPU's kick.
    pub(crate) fn kick(&self) -> &Kick {
        &self.kick
    }

    /// The timer fired since the last call: the vCPU tells the model now.
    pub(crate) fn take_timer_fired(&self) -> bool {
        self.timer_fired.swap(false, Ordering::SeqCst)
    }

    /// Programs the timer as the model asks (`action`), replacing what was
    /// armed (`armed`). `now_ns`: the model's clock (`sys::ktime_ns`);
    /// `tsc_to_ns`: how long until the guest's TSC reaches a value (`None`:
    /// it has already).
    pub(crate) fn program_timer(
        self: &Arc<Self>,
        armed: &mut Option<TimerHandle>,
        action: TimerAction,
        now_ns: u64,
        tsc_to_ns: impl FnOnce(u64) -> Option<u64>,
    ) {
        // Cancelled first: the handle's drop would cancel a timer started
        // again on the same hrtimer. An expiry not yet looked at is void,
        // as KVM clears its pending count when the timer is reprogrammed.
        drop(armed.take());
        self.timer_fired.store(false, Ordering::SeqCst);
        let delay_ns = match action {
            TimerAction::Cancel => return,
            TimerAction::At(at) => at.saturating_sub(now_ns),
            TimerAction::AtTsc(tsc) => tsc_to_ns(tsc).unwrap_or(0),
        };
        let delay = Delta::from_nanos(i64::try_from(delay_ns).unwrap_or(i64::MAX));
        *armed = Some(self.clone().start(delay));
    }

    /// Delivers `irq` to this APIC (another vCPU's IPI, an MSI, the
    /// vCPU's own LVT) and kicks the vCPU if it has something to do.
    /// Returns what the model did with it.
    pub(crate) fn deliver(&self, irq: Interrupt) -> Accepted {
        self.accept(|lapic| lapic.deliver(irq))
    }

    /// The local interrupt of LVT entry `which`, as its entry says (the
    /// PIT's NMI watchdog on LINT0), taken as [`VcpuApic::deliver`] takes
    /// a message.
    pub(crate) fn local_interrupt(&self, which: Lvt) -> Accepted {
        self.accept(|lapic| lapic.local_interrupt(which))
    }

    /// What the model accepted from `arrive`, recorded (an NMI, INIT or
    /// SIPI for the vCPU) and the vCPU kicked if it has something to do.
    fn accept(&self, arrive: impl FnOnce(&mut Lapic) -> Accepted) -> Accepted {
        let accepted = self.with(|s| {
            let accepted = arrive(&mut s.lapic);
            match accepted {
                Accepted::Nmi => s.nmis = s.nmis.saturating_add(1).min(2),
                Accepted::Init | Accepted::Sipi(_) => s.mp.receive(accepted),
                _ => {}
            }
            accepted
        });
        match accepted {
            // SMIs and ExtINT messages have no in-kernel target (no SMM;
            // the PIC's INTR reaches a vCPU through its LINT0, not as a
            // message): lost, as in KVM.
            Accepted::Dropped | Accepted::Smi | Accepted::ExtInt => {}
            Accepted::Fixed | Accepted::Nmi | Accepted::Init | Accepted::Sipi(_) => {
                self.kick.kick()
            }
        }
        accepted
    }
}

/// Delivers one message to the matching APICs of `apics` (the VM's, in
/// vCPU creation order; `source`: the index of the sending APIC for an
/// IPI, `None` for an MSI). Lowest priority goes, as KVM's vector hashing
/// does, to one of the matching software-enabled APICs
/// (`lapic::lowest_priority_target`); `ioapic_quirk`: an MSI's 0xff is a
/// broadcast for x2APIC-mode APICs too (see `Lapic::matches`);
/// `dest_map`: where the IOAPIC's RTC pin records the vCPUs that took a
/// fixed or lowest-priority interrupt (KVM's `struct dest_map`). Returns
/// how many APICs took it: 0 if none matched or all refused it, which
/// KVM's delivery through its APIC map does not tell apart either.
pub(crate) fn deliver(
    apics: &[Arc<VcpuApic>],
    irq: Interrupt,
    dest: &Destination,
    source: Option<usize>,
    ioapic_quirk: bool,
    mut dest_map: Option<&mut DestMap>,
) -> u32 {
    let matches = |i: usize, apic: &VcpuApic| {
        apic.with(|s| {
            let m = s
                .lapic
                .matches(dest, source == Some(i), ioapic_quirk && source.is_none());
            (m, m && s.lapic.sw_enabled())
        })
    };
    let lowest = irq.mode == lapic::DeliveryMode::LowestPriority;
    // Lowest priority: which of the candidates, counted in a first pass.
    let chosen = if lowest {
        let candidates = apics
            .iter()
            .enumerate()
            .filter(|&(i, apic)| matches(i, apic).1)
            .count();
        lapic::lowest_priority_target(irq.vector, candidates)
    } else {
        None
    };
    let mut taken = 0;
    let mut candidate = 0usize;
    for (i, apic) in apics.iter().enumerate() {
        let (m, enabled) = matches(i, apic);
        if !m {
            continue;
        }
        if lowest {
            if !enabled {
                continue;
            }
            let this = candidate;
            candidate += 1;
            if Some(this) != chosen {
                continue;
            }
        }
        let accepted = apic.deliver(irq);
        if accepted == Accepted::Fixed {
            if let Some(map) = dest_map.as_deref_mut() {
                map.record(apic.vcpu_id(), irq.vector);
            }
        }
        if accepted != Accepted::Dropped {
            taken += 1;
        }
    }
    taken
}

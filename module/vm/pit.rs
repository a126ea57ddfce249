// SPDX-License-Identifier: GPL-2.0

//! The in-kernel 8254 of `KVM_CREATE_PIT2` (`pure::pit` under a lock), its
//! channel 0 on an hrtimer, and IRQ 0 pulsed through the VM's routing.
//!
//! How a tick reaches the guest:
//! - the hrtimer fires (interrupt context): it notes which arming fired
//!   and queues [`VmPit`]'s work on the module's workqueue;
//! - the work (process context) tells the model (`Pit::timer_fired`),
//!   arms the next expiry of a periodic timer, and asks the model whether
//!   to inject now (`Pit::inject`: with reinjection on, only once the last
//!   tick was acknowledged). If so, it raises and lowers GSI 0 from the
//!   PIT's own line source, so that the PIC and IOAPIC see an edge whatever
//!   userspace does with the line;
//! - the guest's EOI of the tick reaches the PIT as an ack notifier of GSI
//!   0 ([`Vm::notify_acked`]): the next pending tick may go, and the work
//!   is queued for it. Unmasking GSI 0 at a chip forgets pending ticks.
//!
//! An expiry that belongs to an arming since replaced (the guest loaded a
//! new count, userspace set the state) is recognised by its generation and
//! ignored, where KVM waits for the queued work instead.
//!
//! The PIT holds its VM (the work pulses the VM's GSI 0), and the VM holds
//! the PIT: the VM file's release takes the PIT out and stops it, as
//! irqfds end there too; KVM keeps its PIT until the VM is destroyed.

use core::sync::atomic::{
    AtomicBool,
    AtomicU64,
    Ordering, //
};

use kernel::{
    impl_has_hr_timer,
    new_mutex,
    new_work,
    prelude::*,
    sync::{
        Arc,
        ArcBorrow,
        Mutex, //
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
    },
    workqueue::{
        Work,
        WorkItem, //
    }, //
};

use crate::{
    abi::{
        self,
        uapi, //
    },
    pure::{
        ioapic::SOURCE_PIT,
        pit::{
            self,
            Pit,
            PitState2,
            TimerAction, //
        }, //
    },
    sys, //
};

use super::Vm;

const _: () = assert!(core::mem::size_of::<uapi::kvm_pit_state2>() == pit::STATE2_SIZE);
const _: () = assert!(core::mem::size_of::<uapi::kvm_pit_config>() == 64);
const _: () =
    assert!(core::mem::size_of::<uapi::kvm_reinject_control>() == pit::REINJECT_CONTROL_SIZE);
/// Size of `struct kvm_pit_state` (`KVM_GET_PIT`): the three channels.
const STATE_SIZE: usize = 3 * pit::CHANNEL_STATE_SIZE;
const _: () = assert!(core::mem::size_of::<uapi::kvm_pit_state>() == STATE_SIZE);

/// What the PIT's lock guards.
struct PitState {
    pit: Pit,
    /// Channel 0's armed hrtimer; dropping it cancels it.
    timer: Option<ArcHrTimerHandle<VmPit>>,
    /// Counts the armings and cancels made for the model's new programming
    /// (not the re-armings of a periodic timer).
    generation: u64,
}

/// A VM's in-kernel PIT.
#[pin_data]
pub(crate) struct VmPit {
    vm: Arc<Vm>,
    #[pin]
    state: Mutex<PitState>,
    #[pin]
    timer: HrTimer<VmPit>,
    /// The generation the hrtimer was armed in.
    armed_generation: AtomicU64,
    /// Set by the hrtimer: the generation it fired in.
    fired_generation: AtomicU64,
    /// The hrtimer fired since the work last looked.
    fired: AtomicBool,
    /// An acknowledged tick left others pending since the work last
    /// looked.
    acked: AtomicBool,
    #[pin]
    work: Work<VmPit>,
}

impl_has_hr_timer! {
    impl HasHrTimer<Self> for VmPit {
        mode: RelativeMode<Monotonic>,
        field: self.timer
    }
}

kernel::impl_has_work! {
    impl HasWork<Self> for VmPit { self.work }
}

impl HrTimerCallback for VmPit {
    type Pointer<'a> = Arc<Self>;

    /// Interrupt context: the work does the rest.
    fn run(this: ArcBorrow<'_, Self>, _ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        let generation = this.armed_generation.load(Ordering::SeqCst);
        this.fired_generation.store(generation, Ordering::SeqCst);
        this.fired.store(true, Ordering::SeqCst);
        let pit: Arc<VmPit> = this.into();
        // Already queued: that run sees this expiry.
        let _ = crate::irqfd::queue().enqueue(pit);
        HrTimerRestart::NoRestart
    }
}

impl WorkItem for VmPit {
    type Pointer = Arc<VmPit>;

    /// An expiry, or an acknowledged tick with more pending: a tick is
    /// injected if the model says so (`pit_do_work()`).
    fn run(this: Arc<VmPit>) {
        let inject = {
            let mut st = this.state.lock();
            let mut tick = this.acked.swap(false, Ordering::SeqCst);
            if this.fired.swap(false, Ordering::SeqCst)
                && this.fired_generation.load(Ordering::SeqCst) == st.generation
                && st.pit.timer_expiry().is_some()
            {
                if let Some(next) = st.pit.timer_fired() {
                    this.arm(&mut st, next, sys::ktime_ns());
                }
                tick = true;
            }
            tick && st.pit.inject()
        };
        if inject {
            this.vm.pulse_pit_irq();
        }
    }
}

impl VmPit {
    /// A PIT as `KVM_CREATE_PIT2` makes it, with `config_flags`.
    fn new(vm: Arc<Vm>, config_flags: u32) -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(VmPit {
                vm,
                state <- new_mutex!(PitState {
                    pit: Pit::new(config_flags, sys::ktime_ns()),
                    timer: None,
                    generation: 0,
                }),
                timer <- HrTimer::new(),
                armed_generation: AtomicU64::new(0),
                fired_generation: AtomicU64::new(0),
                fired: AtomicBool::new(false),
                acked: AtomicBool::new(false),
                work <- new_work!("VmPit::work"),
            }),
            GFP_KERNEL,
        )
    }

    /// Arms the hrtimer for `at` (the model's clock), replacing what was
    /// armed, in the current generation.
    fn arm(self: &Arc<Self>, st: &mut PitState, at: u64, now_ns: u64) {
        drop(st.timer.take());
        self.armed_generation.store(st.generation, Ordering::SeqCst);
        let delay = Delta::from_nanos(i64::try_from(at.saturating_sub(now_ns)).unwrap_or(i64::MAX));
        st.timer = Some(self.clone().start(delay));
    }

    /// Does what the model asks of the timer after a new programming: a new
    /// generation, so that an expiry of the old one is ignored.
    fn apply(self: &Arc<Self>, st: &mut PitState, action: TimerAction, now_ns: u64) {
        match action {
            TimerAction::Keep => {}
            TimerAction::Cancel => {
                st.generation = st.generation.wrapping_add(1);
                drop(st.timer.take());
            }
            TimerAction::Arm(at) => {
                st.generation = st.generation.wrapping_add(1);
                self.arm(st, at, now_ns);
            }
        }
    }

    /// Stops the timer for good (the VM file's release).
    fn stop(&self) {
        let mut st = self.state.lock();
        st.generation = st.generation.wrapping_add(1);
        drop(st.timer.take());
    }

    /// A guest's IN (`input`) or OUT of `size` bytes at `port`, if the PIT
    /// takes it: `Some` with the value read (0 for an OUT, and for a read of
    /// the control port, which KVM answers with no data).
    fn io(self: &Arc<Self>, port: u16, input: bool, size: u8, data: u64) -> Option<u64> {
        let len = usize::from(size);
        let mut st = self.state.lock();
        if !st.pit.claims(port, len) {
            return None;
        }
        let now = sys::ktime_ns();
        if input {
            let value = st.pit.read(port, len, now).ok()?;
            return Some(value.map_or(0, u64::from));
        }
        let bytes = data.to_le_bytes();
        let action = st.pit.write(port, bytes.get(..len)?, now).ok()?;
        self.apply(&mut st, action, now);
        Some(0)
    }

    /// GSI 0 was acknowledged: with a tick still pending, the work injects
    /// it (`kvm_pit_ack_irq()`).
    fn acked(self: &Arc<Self>) {
        if self.state.lock().pit.irq_acked() {
            self.acked.store(true, Ordering::SeqCst);
            let _ = crate::irqfd::queue().enqueue(self.clone());
        }
    }

    /// Whether GSI 0 needs the guest's acknowledgements (reinjection on).
    fn wants_acks(&self) -> bool {
        self.state.lock().pit.reinject()
    }
}

impl Vm {
    /// `KVM_CREATE_PIT2` (`kvm_arch_vm_ioctl()`): the config is read
    /// (EFAULT), then EEXIST if the VM has a PIT, ENOENT without the
    /// in-kernel PIC (`KVM_CREATE_IRQCHIP`). Its flags are taken as they are
    /// (only `KVM_PIT_SPEAKER_DUMMY` means something: port 0x61 in the
    /// kernel).
    pub(super) fn create_pit(self: ArcBorrow<'_, Self>, arg: usize) -> Result<isize> {
        // `struct kvm_pit_config`: `flags`, then 15 words of padding.
        let [flags, ..]: [u32; 16] = abi::read_arg(arg)?;
        let mut slot = self.pit.lock();
        if slot.is_some() {
            return Err(EEXIST);
        }
        if !self.full_irqchip() {
            return Err(ENOENT);
        }
        *slot = Some(VmPit::new(self.into(), flags)?);
        Ok(0)
    }

    /// The VM's PIT, if it has one.
    fn vm_pit(&self) -> Option<Arc<VmPit>> {
        self.pit.lock().clone()
    }

    /// `KVM_GET_PIT2`: ENXIO without a PIT (before anything is read, as
    /// KVM); the state with `reserved` zeroed.
    pub(super) fn get_pit2(&self, arg: usize) -> Result<isize> {
        let pit = self.vm_pit().ok_or(ENXIO)?;
        let image = pit.state.lock().pit.state().to_bytes();
        abi::write_arg(arg, &image)?;
        Ok(0)
    }

    /// `KVM_SET_PIT2`: the state is read (EFAULT), then ENXIO without a
    /// PIT; every field is taken and each channel's count loaded again.
    pub(super) fn set_pit2(&self, arg: usize) -> Result<isize> {
        let image: [u8; pit::STATE2_SIZE] = abi::read_arg(arg)?;
        let pit = self.vm_pit().ok_or(ENXIO)?;
        let state = PitState2::from_bytes(&image).ok_or(EINVAL)?;
        let now = sys::ktime_ns();
        let mut st = pit.state.lock();
        let action = st.pit.set_state(&state, now);
        pit.apply(&mut st, action, now);
        Ok(0)
    }

    /// `KVM_GET_PIT` (the three channels of `KVM_GET_PIT2`): the argument
    /// is read first (EFAULT), then ENXIO without a PIT.
    pub(super) fn get_pit(&self, arg: usize) -> Result<isize> {
        let _: [u8; STATE_SIZE] = abi::read_arg(arg)?;
        let pit = self.vm_pit().ok_or(ENXIO)?;
        let image = pit.state.lock().pit.state().to_bytes();
        let channels = image.get(..STATE_SIZE).ok_or(EINVAL)?;
        let mut out = [0u8; STATE_SIZE];
        out.copy_from_slice(channels);
        abi::write_arg(arg, &out)?;
        Ok(0)
    }

    /// `KVM_SET_PIT`: the channels (EFAULT, then ENXIO), loaded as
    /// `KVM_SET_PIT2` loads them, the flags kept.
    pub(super) fn set_pit(&self, arg: usize) -> Result<isize> {
        let channels: [u8; STATE_SIZE] = abi::read_arg(arg)?;
        let pit = self.vm_pit().ok_or(ENXIO)?;
        let now = sys::ktime_ns();
        let mut st = pit.state.lock();
        let mut image = st.pit.state().to_bytes();
        image
            .get_mut(..STATE_SIZE)
            .ok_or(EINVAL)?
            .copy_from_slice(&channels);
        let state = PitState2::from_bytes(&image).ok_or(EINVAL)?;
        let action = st.pit.set_state(&state, now);
        pit.apply(&mut st, action, now);
        Ok(0)
    }

    /// `KVM_REINJECT_CONTROL`: the struct is read (EFAULT), then ENXIO
    /// without a PIT; `pit_reinject` not zero turns reinjection on.
    pub(super) fn reinject_control(&self, arg: usize) -> Result<isize> {
        let bytes: [u8; pit::REINJECT_CONTROL_SIZE] = abi::read_arg(arg)?;
        let pit = self.vm_pit().ok_or(ENXIO)?;
        let reinject = pit::reinject_control(&bytes).ok_or(EINVAL)?;
        pit.state.lock().pit.set_reinject(reinject);
        Ok(0)
    }

    /// A guest's port access, if the PIT takes it (see `VmPit::io`).
    pub(crate) fn pit_io(&self, port: u16, input: bool, size: u8, data: u64) -> Option<u64> {
        self.vm_pit()?.io(port, input, size, data)
    }

    /// The VM file's release: the PIT stops and lets its VM go.
    pub(super) fn release_pit(&self) {
        if let Some(pit) = self.pit.lock().take() {
            pit.stop();
        }
    }

    /// One tick: GSI 0 raised and lowered from the PIT's line source, then
    /// KVM's NMI watchdog through virtual wire (LVT0 in NMI mode).
    fn pulse_pit_irq(&self) {
        self.set_gsi(0, SOURCE_PIT, true, false);
        self.set_gsi(0, SOURCE_PIT, false, false);
        self.lint0_nmi_watchdog();
    }

    /// Whether the PIT listens to GSI 0's acknowledgements (reinjection
    /// on).
    pub(super) fn pit_wants_acks(&self) -> bool {
        self.vm_pit().is_some_and(|pit| pit.wants_acks())
    }

    /// The ack notifiers of `gsi` (`kvm_notify_acked_gsi()`).
    pub(super) fn notify_acked_gsi(&self, gsi: u32) {
        if gsi == 0 {
            if let Some(pit) = self.vm_pit() {
                pit.acked();
            }
        }
        self.resample_acked(gsi);
    }

    /// The mask notifiers of `gsi` (`kvm_fire_mask_notifiers()`).
    pub(super) fn notify_mask_gsi(&self, gsi: u32, masked: bool) {
        if gsi == 0 {
            if let Some(pit) = self.vm_pit() {
                pit.state.lock().pit.irq0_mask_changed(masked);
            }
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! `KVM_IRQFD`: an eventfd whose signals raise a GSI of the VM, without a
//! trip through the VMM (`virt/kvm/eventfd.c`).
//!
//! The life of an irqfd, as in KVM:
//! - **assign:** the irqfd hooks itself onto the eventfd's wait queue as
//!   its one exclusive priority waiter (helpers.c), so a signal wakes no
//!   one else; a signal already pending is injected at once;
//! - **signal:** the eventfd's wakeup runs with the eventfd's wait-queue
//!   lock held and interrupts off. It consumes the count and queues the
//!   injection on the module's workqueue, where the GSI's routes are
//!   followed and the APICs' locks may be taken;
//! - **end:** `KVM_IRQFD` with `KVM_IRQFD_FLAG_DEASSIGN`, the eventfd's
//!   last close (a hangup, handled on the workqueue), or the VM file's
//!   release. Each unhooks the irqfd once; after that no wakeup runs for
//!   it, and the workqueue is flushed so that no injection is left.
//!
//! The hook holds one reference to its irqfd while it is on the wait
//! queue, so a wakeup always finds the irqfd alive.

use core::{
    ptr::NonNull,
    sync::atomic::{
        AtomicBool,
        Ordering, //
    }, //
};

use kernel::{
    ffi::c_void,
    new_work,
    prelude::*,
    sync::{
        Arc,
        ArcBorrow, //
    },
    workqueue::{
        self,
        Work,
        WorkItem, //
    }, //
};

use crate::{
    ffi,
    sys::EventFd,
    vm::Vm, //
};

/// The module's workqueue (helpers.c), for the life of the module.
pub(crate) struct ModuleQueue;

impl ModuleQueue {
    /// Creates the workqueue; it is destroyed when the result is dropped.
    pub(crate) fn create() -> Result<Self> {
        // SAFETY: called once, from the module's init, before any irqfd.
        kernel::error::to_result(unsafe { ffi::rkvm_wq_create() })?;
        Ok(ModuleQueue)
    }
}

impl Drop for ModuleQueue {
    fn drop(&mut self) {
        // SAFETY: at the module's exit: no VM is left (each holds the
        // module), so nothing queues work any more; destroying drains
        // what is queued.
        unsafe { ffi::rkvm_wq_destroy() }
    }
}

/// The module's workqueue (also the in-kernel PIT's).
pub(crate) fn queue() -> &'static workqueue::Queue {
    // SAFETY: the workqueue exists from the module's init to its exit
    // (`ModuleQueue`), and irqfds only exist in between (a VM file holds
    // the module).
    unsafe { workqueue::Queue::from_raw(ffi::rkvm_wq_get()) }
}

/// Waits until everything queued on the module's workqueue has run.
pub(crate) fn flush() {
    // SAFETY: as in `queue`.
    unsafe { ffi::rkvm_wq_flush() }
}

/// The `struct rkvm_irqfd_hook` of helpers.c, owned: freed when dropped,
/// which `Irqfd` only lets happen once it is detached.
struct Hook(NonNull<ffi::IrqfdHook>);

impl Hook {
    fn new() -> Result<Self> {
        // SAFETY: allocates a zeroed hook, or returns null.
        let raw = unsafe { ffi::rkvm_irqfd_hook_alloc() };
        NonNull::new(raw).map(Hook).ok_or(ENOMEM)
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        // SAFETY: the hook came from `rkvm_irqfd_hook_alloc` and is not on
        // any wait queue (see `Irqfd::detach`).
        unsafe { ffi::rkvm_irqfd_hook_free(self.0.as_ptr()) }
    }
}

/// One irqfd: a signal of its eventfd raises `gsi` in `vm`.
#[pin_data]
pub(crate) struct Irqfd {
    vm: Arc<Vm>,
    gsi: u32,
    /// With `KVM_IRQFD_FLAG_RESAMPLE`: the eventfd signalled when the
    /// guest acknowledges the GSI, which a signal holds asserted until
    /// then (a level-triggered interrupt).
    resample: Option<EventFd>,
    hook: Hook,
    /// The hook is on the eventfd's wait queue and holds a reference to
    /// this irqfd: set before it goes on, cleared by whoever takes it off.
    attached: AtomicBool,
    #[pin]
    inject: Work<Irqfd, 0>,
    #[pin]
    shutdown: Work<Irqfd, 1>,
}

// SAFETY: the hook pointer is only used through the helpers, which take
// the eventfd's own lock; `attached` decides, atomically, who detaches.
unsafe impl Send for Irqfd {}
// SAFETY: as above: `&Irqfd` reads the hook's eventfd pointer, fixed while
// it is attached, and detaches at most once.
unsafe impl Sync for Irqfd {}

kernel::impl_has_work! {
    impl HasWork<Self, 0> for Irqfd { self.inject }
    impl HasWork<Self, 1> for Irqfd { self.shutdown }
}

impl WorkItem<0> for Irqfd {
    type Pointer = Arc<Irqfd>;

    /// A signal: the GSI goes up, and down again unless it resamples
    /// (then the guest's acknowledgement lowers it).
    fn run(this: Arc<Irqfd>) {
        if this.resample.is_some() {
            this.vm.assert_resampled_gsi(this.gsi);
        } else {
            this.vm.raise_gsi(this.gsi);
        }
    }
}

impl WorkItem<1> for Irqfd {
    type Pointer = Arc<Irqfd>;

    /// The eventfd is being closed: the irqfd leaves its VM.
    fn run(this: Arc<Irqfd>) {
        this.vm.forget_irqfd(&this);
        Irqfd::detach(this.as_arc_borrow());
    }
}

impl Irqfd {
    /// Hooks a new irqfd for `gsi` onto the eventfd behind `fd` (EBADF,
    /// EINVAL if it is not an eventfd, EBUSY if it already has an irqfd of
    /// any VM), resampling through `resample` if given. A signal already
    /// pending is injected.
    pub(crate) fn assign(
        vm: Arc<Vm>,
        fd: i32,
        gsi: u32,
        resample: Option<EventFd>,
    ) -> Result<Arc<Self>> {
        let hook = Hook::new()?;
        let irqfd = Arc::pin_init(
            pin_init!(Irqfd {
                vm,
                gsi,
                resample,
                hook,
                attached: AtomicBool::new(true),
                inject <- new_work!("Irqfd::inject"),
                shutdown <- new_work!("Irqfd::shutdown"),
            }),
            GFP_KERNEL,
        )?;
        let owner = Arc::into_raw(irqfd.clone());
        let mut pending = false;
        // SAFETY: the hook is ours and not attached; `owner` stays valid
        // while it is (the reference taken above, given back in `detach`).
        let ret = unsafe {
            ffi::rkvm_irqfd_hook_attach(irqfd.hook.0.as_ptr(), fd, owner.cast(), &mut pending)
        };
        if let Err(e) = kernel::error::to_result(ret) {
            irqfd.attached.store(false, Ordering::SeqCst);
            // SAFETY: the hook did not go on the wait queue: the reference
            // taken for it comes back.
            drop(unsafe { Arc::from_raw(owner) });
            return Err(e);
        }
        if pending {
            let _ = queue().enqueue::<_, 0>(irqfd.clone());
        }
        Ok(irqfd)
    }

    /// The GSI, if this irqfd resamples it.
    pub(crate) fn resampled_gsi(&self) -> Option<u32> {
        self.resample.as_ref().map(|_| self.gsi)
    }

    /// The guest acknowledged the GSI: the resamplefd is signalled.
    pub(crate) fn signal_resample(&self) {
        if let Some(fd) = &self.resample {
            fd.signal();
        }
    }

    /// Whether this irqfd is on `eventfd` for `gsi` (what a deassign names).
    pub(crate) fn is(&self, eventfd: &EventFd, gsi: u32) -> bool {
        // SAFETY: the hook's eventfd pointer is fixed while it is attached
        // (and null after, which matches no eventfd).
        let ctx = unsafe { ffi::rkvm_irqfd_hook_ctx(self.hook.0.as_ptr()) };
        self.gsi == gsi && eventfd.as_ptr() == ctx
    }

    /// Takes the hook off the eventfd, once (later calls do nothing): no
    /// wakeup runs for this irqfd after. The caller keeps a reference, so
    /// the hook's, dropped here, is never the last.
    pub(crate) fn detach(this: ArcBorrow<'_, Self>) {
        if !this.attached.swap(false, Ordering::SeqCst) {
            return;
        }
        // SAFETY: the hook is attached (we cleared `attached`, and only
        // the one who does detaches).
        unsafe { ffi::rkvm_irqfd_hook_detach(this.hook.0.as_ptr()) };
        // SAFETY: the reference `assign` gave the hook, which is off the
        // wait queue: no wakeup uses it any more.
        drop(unsafe { Arc::from_raw(core::ptr::from_ref::<Irqfd>(&this)) });
    }
}

/// The eventfd of an attached hook signalled (`hangup` false) or is being
/// released (`hangup`). Called by helpers.c's wakeup, with the eventfd's
/// wait-queue lock held and interrupts off: it only queues work.
///
/// # Safety
///
/// `owner` must be the pointer an attached hook was given by
/// [`Irqfd::assign`], and the hook still attached (guaranteed while the
/// wait-queue lock is held, as detaching takes it).
#[no_mangle]
pub(crate) unsafe extern "C" fn rkvm_irqfd_event(owner: *const c_void, hangup: bool) {
    // SAFETY: the hook's reference keeps the irqfd alive while it is
    // attached, which it is for the whole call (see above).
    let this = unsafe { ArcBorrow::<Irqfd>::from_raw(owner.cast()) };
    let irqfd: Arc<Irqfd> = this.into();
    // Already queued: that run will see this signal (or this hangup) too.
    let _ = if hangup {
        queue().enqueue::<_, 1>(irqfd)
    } else {
        queue().enqueue::<_, 0>(irqfd)
    };
}

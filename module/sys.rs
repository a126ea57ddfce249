// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers around the C helpers (`helpers.c`, declared in `ffi`) and a few raw kernel
//! facilities: MSRs, physical addresses, pinned user pages, interrupt and
//! preemption guards, the FPU.

use core::ptr::NonNull;

use kernel::{
    bindings,
    cpu::CpuId,
    ffi::{
        c_int,
        c_void, //
    },
    mm::Mm,
    page::{
        Page,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::aref::ARef,
    time::{
        ClockSource,
        Monotonic, //
    }, //
};

use crate::{
    ffi,
    pure::paging::HostPhys, //
};

/// The host TSC's frequency in kHz, as the kernel calibrated it (0 if it
/// could not). The guest's TSC runs at this rate: rkvm offsets it, never
/// scales it.
pub(crate) fn tsc_khz() -> u32 {
    // SAFETY: reads a variable the kernel fixes at boot.
    unsafe { bindings::tsc_khz }
}

/// Reads an MSR, or `None` if reading it faults.
pub(crate) fn rdmsr(index: u32) -> Option<u64> {
    let mut val = 0u64;
    // SAFETY: the helper only writes through `val`, a valid local; a faulting
    // RDMSR is caught by the exception table.
    let ret = unsafe { ffi::rkvm_rdmsr_safe(index, &mut val) };
    (ret == 0).then_some(val)
}

/// Writes an MSR; `Err(EIO)` if the WRMSR faults.
///
/// Only for MSRs whose meaning the caller owns (EFER.SVME, VM_HSAVE_PA).
pub(crate) fn wrmsr(index: u32, val: u64) -> Result {
    // SAFETY: a faulting WRMSR is caught by the exception table; the caller
    // only writes MSRs that change no state the kernel relies on.
    match unsafe { ffi::rkvm_wrmsr_safe(index, val) } {
        0 => Ok(()),
        _ => Err(EIO),
    }
}

/// Writes an MSR in the middle of a guest entry or exit, where a failure
/// cannot be undone: logged (once), not returned. For MSRs every processor
/// that runs guests has, written with the host's values or with guest
/// values checked when the guest wrote them.
pub(crate) fn wrmsr_or_warn(index: u32, val: u64) {
    if wrmsr(index, val).is_err() {
        kernel::pr_warn_once!(
            "WRMSR {:#x} <- {:#x} faulted around a guest run\n",
            index,
            val
        );
    }
}

/// Reads an MSR in the middle of a guest exit, as [`wrmsr_or_warn`]:
/// `old` (logged once) if the RDMSR faults.
pub(crate) fn rdmsr_or_warn(index: u32, old: u64) -> u64 {
    rdmsr(index).unwrap_or_else(|| {
        kernel::pr_warn_once!("RDMSR {:#x} faulted around a guest run\n", index);
        old
    })
}

/// A page's kernel virtual address in the direct map (x86-64 has no highmem).
pub(crate) fn page_address(page: &Page) -> *mut u8 {
    // SAFETY: as in `page_phys`.
    unsafe { ffi::rkvm_page_address(page.as_ptr()) }.cast()
}

/// Kernel virtual address of a physical address in the direct map.
///
/// # Safety
///
/// `pa` must be the address of memory rkvm owns and that stays allocated while
/// the returned pointer is used.
pub(crate) unsafe fn phys_to_virt(pa: HostPhys) -> *mut u8 {
    // SAFETY: `__va()` is arithmetic on the direct map's base.
    unsafe { ffi::rkvm_phys_to_virt(pa.0) }.cast()
}

/// Runs `f(data)` on every online CPU (`on_each_cpu()`: in interrupt
/// context, or with interrupts off on the calling CPU), waiting for all.
pub(crate) fn on_each_cpu<T: Sync>(f: fn(&T), data: &T) {
    on_each_cpu_if(|_, _| true, f, data);
}

/// Runs `f(data)` on every online CPU for which `cond(cpu, data)` holds
/// (`on_each_cpu_cond()`: `cond` is asked on the calling CPU, `f` runs in
/// interrupt context there, or with interrupts off on the calling CPU),
/// waiting for all of them.
pub(crate) fn on_each_cpu_if<T: Sync>(cond: fn(usize, &T) -> bool, f: fn(&T), data: &T) {
    /// What each CPU is given.
    struct Call<'a, T> {
        cond: fn(usize, &T) -> bool,
        f: fn(&T),
        data: &'a T,
    }

    /// # Safety
    ///
    /// `info` must point to a live `Call<'_, T>`.
    unsafe extern "C" fn cond_trampoline<T: Sync>(cpu: c_int, info: *mut c_void) -> bool {
        // SAFETY: per the contract; only read.
        let call = unsafe { &*info.cast::<Call<'_, T>>() };
        usize::try_from(cpu).is_ok_and(|cpu| (call.cond)(cpu, call.data))
    }

    /// # Safety
    ///
    /// `info` must point to a live `Call<'_, T>`.
    unsafe extern "C" fn trampoline<T: Sync>(info: *mut c_void) {
        // SAFETY: per the contract; only read (shared by all CPUs).
        let call = unsafe { &*info.cast::<Call<'_, T>>() };
        (call.f)(call.data)
    }

    let call = Call { cond, f, data };
    // SAFETY: `call` outlives the call, which waits for every CPU it chose
    // to finish, and is only read through the pointer (shared access from
    // several CPUs: `T: Sync`, and `fn` is `Sync`); the mask is the online
    // CPUs', a static of the kernel.
    unsafe {
        bindings::on_each_cpu_cond_mask(
            Some(cond_trampoline::<T>),
            Some(trampoline::<T>),
            core::ptr::from_ref(&call).cast_mut().cast(),
            true,
            &raw const bindings::__cpu_online_mask,
        )
    }
}

/// `access_ok()`: whether `[addr, addr + size)` lies in user space.
pub(crate) fn access_ok(addr: u64, size: u64) -> bool {
    let (Ok(addr), Ok(size)) = (usize::try_from(addr), usize::try_from(size)) else {
        return false;
    };
    // SAFETY: `access_ok` only compares numbers.
    unsafe { ffi::rkvm_access_ok(addr, size) }
}

/// Memory for the processor: a `T` in pages of its own, zeroed,
/// page-aligned and physically contiguous by construction, with its
/// physical address (VMCBs, VMCS regions, host save areas, permission
/// bitmaps, page tables).
pub(crate) struct PageBox<T: Zeroable> {
    /// The first of the `1 << ORDER` pages.
    page: NonNull<bindings::page>,
    /// Its address in the direct map.
    ptr: NonNull<T>,
}

// SAFETY: the pages are owned by this value alone (like a `KBox<T>`) and
// may be freed from any thread.
unsafe impl<T: Zeroable + Send> Send for PageBox<T> {}
// SAFETY: `&PageBox<T>` only gives `&T`.
unsafe impl<T: Zeroable + Sync> Sync for PageBox<T> {}

impl<T: Zeroable> PageBox<T> {
    /// The allocation's order: enough pages for a `T`, which must not need
    /// more than page alignment (checked when the type is instantiated).
    const ORDER: u32 = {
        assert!(core::mem::align_of::<T>() <= PAGE_SIZE);
        core::mem::size_of::<T>()
            .div_ceil(PAGE_SIZE)
            .next_power_of_two()
            .trailing_zeros()
    };

    /// A zeroed `T`.
    pub(crate) fn new() -> Result<Self> {
        Self::alloc(0)
    }

    /// A zeroed `T` below 4 GiB, where a CR3 of legacy PAE paging (32
    /// bits wide) can point.
    pub(crate) fn new_below_4g() -> Result<Self> {
        // `kernel::alloc::Flags` has no `GFP_DMA32`.
        Self::alloc(1 << bindings::___GFP_DMA32_BIT)
    }

    fn alloc(zone: bindings::gfp_t) -> Result<Self> {
        let flags = bindings::GFP_KERNEL | bindings::__GFP_ZERO | zone;
        // SAFETY: no preconditions; the pages returned, if any, are ours.
        let page =
            NonNull::new(unsafe { bindings::alloc_pages(flags, Self::ORDER) }).ok_or(ENOMEM)?;
        // SAFETY: `page` is a live page; x86-64 has no highmem, so every
        // page has an address in the direct map.
        let ptr = unsafe { ffi::rkvm_page_address(page.as_ptr()) };
        let Some(ptr) = NonNull::new(ptr.cast::<T>()) else {
            // SAFETY: allocated above with this order, not used since.
            unsafe { bindings::__free_pages(page.as_ptr(), Self::ORDER) };
            return Err(ENOMEM);
        };
        // INVARIANT: `ptr` is page-aligned and zeroed (`__GFP_ZERO`), and
        // all-zero bytes are a valid `T` (`Zeroable`); the pages hold at
        // least `size_of::<T>()` bytes (`ORDER`).
        Ok(PageBox { page, ptr })
    }

    /// Its physical address (page-aligned).
    pub(crate) fn phys(&self) -> HostPhys {
        // SAFETY: the page is allocated while `self` lives.
        HostPhys(unsafe { ffi::rkvm_page_to_phys(self.page.as_ptr()) })
    }
}

impl<T: Zeroable> core::ops::Deref for PageBox<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: a valid, aligned `T` (see `alloc`) that `self` owns.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: Zeroable> core::ops::DerefMut for PageBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, borrowed mutably through `self`.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: Zeroable> Drop for PageBox<T> {
    fn drop(&mut self) {
        // SAFETY: allocated by `alloc` with this order, freed once here;
        // `T` needs no drop of its own beyond its bytes (all-zero is a
        // valid `T`, and the type holds plain data for the processor).
        unsafe { bindings::__free_pages(self.page.as_ptr(), Self::ORDER) }
    }
}

/// A user page pinned with `FOLL_LONGTERM`: it stays allocated (and so safe
/// to map into a guest) until dropped, even if userspace unmaps it.
pub(crate) struct PinnedPage {
    page: NonNull<bindings::page>,
    writable: bool,
}

// SAFETY: a pinned page is a counted reference to a `struct page`, usable
// (and unpinnable) from any thread.
unsafe impl Send for PinnedPage {}
// SAFETY: `&PinnedPage` only reads the physical address.
unsafe impl Sync for PinnedPage {}

impl PinnedPage {
    /// Pins the page at user address `addr` of the current mm.
    pub(crate) fn pin(addr: u64, writable: bool) -> Result<Self> {
        let addr = usize::try_from(addr).map_err(|_| EFAULT)?;
        let mut page: *mut bindings::page = core::ptr::null_mut();
        // As long as a memory slot maps it, and writable if asked.
        let flags = bindings::FOLL_LONGTERM | if writable { bindings::FOLL_WRITE } else { 0 };
        // SAFETY: `page` is a valid out-pointer for one page pointer; pins
        // from the current mm, which the caller has checked is the VM's.
        let n = unsafe { bindings::pin_user_pages_fast(addr, 1, flags, &mut page) };
        match (n, NonNull::new(page)) {
            (1, Some(page)) => Ok(PinnedPage { page, writable }),
            (n, _) if n < 0 => Err(Error::from_errno(n)),
            _ => Err(EFAULT),
        }
    }

    /// Whether it is part of a huge page (a folio of 2 MiB or more).
    pub(crate) fn in_huge_folio(&self) -> bool {
        // SAFETY: the pin keeps the page, and so its folio, alive.
        unsafe { ffi::rkvm_page_in_huge_folio(self.page.as_ptr()) }
    }

    /// Its physical address.
    pub(crate) fn phys(&self) -> HostPhys {
        // SAFETY: the pin keeps the page alive.
        HostPhys(unsafe { ffi::rkvm_page_to_phys(self.page.as_ptr()) })
    }
}

impl Drop for PinnedPage {
    fn drop(&mut self) {
        let mut page = self.page.as_ptr();
        // SAFETY: the page was pinned once by `pin` and is unpinned once here;
        // a writable page may have been written by the guest, so it is dirty.
        unsafe { bindings::unpin_user_pages_dirty_lock(&mut page, 1, self.writable) }
    }
}

/// The address space of the process that created a VM, held (mmgrab) as
/// long as the VM lives, to recognise ioctls from any other process.
///
/// `current->mm` is read in C (`helpers.c`): the Rust bindings' layout of
/// `task_struct` is wrong with this toolchain, so `kernel::current!().mm()`
/// must not be used.
pub(crate) struct OwnerMm(ARef<Mm>);

/// `current->mm` (null for a kernel thread).
fn current_mm() -> *const bindings::mm_struct {
    // SAFETY: reads `current`, always valid in process context.
    unsafe { ffi::rkvm_current_mm() }
}

impl OwnerMm {
    /// The current process's mm (`None` for a kernel thread).
    pub(crate) fn current() -> Option<Self> {
        let mm = current_mm();
        if mm.is_null() {
            return None;
        }
        // SAFETY: the current task's mm is valid while the task runs in it,
        // as it does during this call; `ARef::from` takes a reference
        // (mmgrab) that keeps it allocated after that.
        Some(OwnerMm(ARef::from(unsafe { Mm::from_raw(mm) })))
    }

    /// Whether the caller runs in this mm.
    pub(crate) fn is_current(&self) -> bool {
        core::ptr::eq(current_mm(), self.0.as_raw())
    }
}

/// The page offset (`vm_pgoff`) of a VMA being set up.
pub(crate) fn vma_pgoff(vma: &kernel::mm::virt::VmaNew) -> usize {
    // SAFETY: the VMA is valid for the duration of the mmap call that gave it.
    unsafe { ffi::rkvm_vma_pgoff(vma.as_ptr()) }
}

/// The CPU this code runs on. Only meaningful while preemption is disabled.
pub(crate) fn cpu_id() -> usize {
    CpuId::current().as_u32() as usize
}

/// Yields the CPU if a reschedule is due.
pub(crate) fn cond_resched() {
    // SAFETY: called in process context, holding no spinlock.
    unsafe { ffi::rkvm_cond_resched() }
}

/// Interrupts `cpu` (a reschedule IPI), so that a vCPU in guest mode there
/// leaves it. Any context; a CPU that is not online is left alone.
pub(crate) fn kick_cpu(cpu: u32) {
    let Ok(cpu) = kernel::ffi::c_int::try_from(cpu) else {
        return;
    };
    // SAFETY: the helper checks `cpu` against the online CPUs; sending the
    // IPI is allowed from any context.
    unsafe { ffi::rkvm_kick_cpu(cpu) }
}

/// The host's time-stamp counter.
pub(crate) fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (CR4.TSD is clear in the kernel).
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

/// The monotonic clock in nanoseconds (`ktime_get_ns()`).
pub(crate) fn ktime_ns() -> u64 {
    // Never negative (`ClockSource`'s contract).
    u64::try_from(Monotonic::ktime_get()).unwrap_or(0)
}

/// The calling task's pid (`task_pid_nr(current)`).
pub(crate) fn current_pid() -> i32 {
    // SAFETY: reads `current`, always valid in process context.
    unsafe { ffi::rkvm_current_pid() }
}

/// The FPU is ours (the task's user state saved) and preemption is off while
/// this lives; local interrupts are disabled by [`FpuGuard::guest_irqs_off`].
pub(crate) struct FpuGuard(());

impl FpuGuard {
    /// `kernel_fpu_begin()`.
    pub(crate) fn begin() -> Self {
        // SAFETY: process context; ended by `Drop`.
        unsafe { ffi::rkvm_kernel_fpu_begin() };
        FpuGuard(())
    }

    /// Runs `f`, which enters guest mode, with local interrupts disabled.
    pub(crate) fn guest_irqs_off<R>(&self, f: impl FnOnce() -> R) -> R {
        // SAFETY: paired with the enable below; `f` cannot sleep (it runs
        // inside a kernel FPU section, which already forbids it). Guest mode
        // is an RCU quiescent state, like user mode.
        unsafe {
            ffi::rkvm_local_irq_disable();
            ffi::rkvm_guest_enter_irqoff();
        }
        let r = f();
        // SAFETY: re-enables what was disabled above.
        unsafe { ffi::rkvm_local_irq_enable() };
        r
    }
}

impl Drop for FpuGuard {
    fn drop(&mut self) {
        // SAFETY: paired with `kernel_fpu_begin` in `begin`.
        unsafe { ffi::rkvm_kernel_fpu_end() }
    }
}

/// A counted reference to an eventfd's context (`struct eventfd_ctx`), as
/// `KVM_IOEVENTFD` holds one: the eventfd stays alive while the reference
/// does, even after userspace closed its fd. The kernel crate has no
/// eventfd abstraction; these are the raw bindings of `<linux/eventfd.h>`.
pub(crate) struct EventFd(NonNull<bindings::eventfd_ctx>);

// SAFETY: an eventfd context is reference-counted and signalled under its
// own lock: usable and droppable from any thread.
unsafe impl Send for EventFd {}
// SAFETY: `&EventFd` only signals (locked inside the kernel) or compares
// the pointer.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// The eventfd behind the caller's fd `fd`: `EBADF` if it is not open,
    /// `EINVAL` if it is not an eventfd (`eventfd_ctx_fdget()`).
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        // SAFETY: looks `fd` up in the current task's fd table; any value is
        // acceptable, errors come back as an ERR_PTR.
        let ctx = unsafe { bindings::eventfd_ctx_fdget(fd) };
        let ctx = kernel::error::from_err_ptr(ctx)?;
        NonNull::new(ctx).map(EventFd).ok_or(EINVAL)
    }

    /// Adds 1 to the counter and wakes its readers (`eventfd_signal()`).
    pub(crate) fn signal(&self) {
        // SAFETY: our reference keeps the context alive; signalling takes
        // the context's own lock and may be done in process context.
        unsafe { bindings::eventfd_signal_mask(self.0.as_ptr(), 0) }
    }

    /// The eventfd context, to compare with one a C helper holds.
    pub(crate) fn as_ptr(&self) -> *mut bindings::eventfd_ctx {
        self.0.as_ptr()
    }

    /// Whether both are references to the same eventfd.
    pub(crate) fn same(&self, other: &EventFd) -> bool {
        self.0 == other.0
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: the reference `from_fd` took, dropped once here.
        unsafe { bindings::eventfd_ctx_put(self.0.as_ptr()) }
    }
}

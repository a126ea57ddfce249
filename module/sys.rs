// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers around the C helpers (`helpers.c`, declared in `ffi`) and a few raw kernel
//! facilities: MSRs, physical addresses, pinned user pages, interrupt and
//! preemption guards, the FPU.

use core::ptr::NonNull;

use kernel::{
    bindings,
    ffi::c_void,
    page::Page,
    prelude::*, //
};

use crate::{
    ffi,
    pure::paging::HostPhys, //
};

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

/// Physical address of a kernel object in the direct map (kmalloc memory).
pub(crate) fn virt_to_phys<T>(obj: &T) -> HostPhys {
    // SAFETY: `obj` is a live reference into the direct map (all rkvm objects
    // passed here come from kmalloc/KBox, never vmalloc or the stack).
    HostPhys(unsafe { ffi::rkvm_virt_to_phys(core::ptr::from_ref(obj).cast()) })
}

/// Physical address of a page.
pub(crate) fn page_phys(page: &Page) -> HostPhys {
    // SAFETY: `page.as_ptr()` is a valid `struct page` for as long as `page` lives.
    HostPhys(unsafe { ffi::rkvm_page_to_phys(page.as_ptr()) })
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

/// Runs `f` on every online CPU, waiting for all.
pub(crate) fn on_each_cpu<T: Sync>(f: unsafe extern "C" fn(*mut c_void), data: &T) {
    // SAFETY: `data` outlives the call, which waits for every CPU to finish;
    // `f` only reads through the pointer (shared access, `T: Sync`).
    unsafe { ffi::rkvm_on_each_cpu(f, core::ptr::from_ref(data).cast_mut().cast()) }
}

/// `access_ok()`: whether `[addr, addr + size)` lies in user space.
pub(crate) fn access_ok(addr: u64, size: u64) -> bool {
    let (Ok(addr), Ok(size)) = (usize::try_from(addr), usize::try_from(size)) else {
        return false;
    };
    // SAFETY: `access_ok` only compares numbers.
    unsafe { ffi::rkvm_access_ok(addr, size) }
}

/// A zeroed kernel page below 4 GiB: what a CR3 in legacy PAE mode (32
/// bits wide) can point to.
pub(crate) struct LowPage(NonNull<bindings::page>);

// SAFETY: the page is owned by this value alone and may be freed from any
// thread.
unsafe impl Send for LowPage {}
// SAFETY: `&LowPage` only reads the physical address.
unsafe impl Sync for LowPage {}

impl LowPage {
    pub(crate) fn alloc() -> Result<Self> {
        // SAFETY: no preconditions; the page returned is ours.
        NonNull::new(unsafe { ffi::rkvm_alloc_page_dma32() })
            .map(LowPage)
            .ok_or(ENOMEM)
    }

    /// Its physical address.
    pub(crate) fn phys(&self) -> HostPhys {
        // SAFETY: the page is allocated while `self` lives.
        HostPhys(unsafe { ffi::rkvm_page_to_phys(self.0.as_ptr()) })
    }
}

impl Drop for LowPage {
    fn drop(&mut self) {
        // SAFETY: allocated once by `alloc`, freed once here.
        unsafe { ffi::rkvm_free_page(self.0.as_ptr()) }
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
        // SAFETY: `page` is a valid out-pointer for one page pointer; the
        // helper pins from the current mm, which the caller has checked is the
        // VM's.
        let n = unsafe { ffi::rkvm_pin_user_page(addr, writable, &mut page) };
        match (n, NonNull::new(page)) {
            (1, Some(page)) => Ok(PinnedPage { page, writable }),
            (n, _) if n < 0 => Err(Error::from_errno(n as i32)),
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
        // SAFETY: the page was pinned once by `pin` and is unpinned once here;
        // a writable page may have been written by the guest, so it is dirty.
        unsafe { ffi::rkvm_unpin_user_page(self.page.as_ptr(), self.writable) }
    }
}

/// The address space of the process that created a VM, held (mmgrab) as
/// long as the VM lives, to recognise ioctls from any other process.
///
/// `task_struct` is read in C (`helpers.c`): the Rust bindings' layout of it
/// is wrong with this toolchain, so `kernel::current!().mm()` must not be used.
pub(crate) struct OwnerMm(NonNull<bindings::mm_struct>);

// SAFETY: the mm is only compared by address and released with mmdrop(),
// which any thread may do.
unsafe impl Send for OwnerMm {}
// SAFETY: as above; `&OwnerMm` only compares addresses.
unsafe impl Sync for OwnerMm {}

impl OwnerMm {
    /// The current process's mm (`None` for a kernel thread).
    pub(crate) fn current() -> Option<Self> {
        // SAFETY: the helper takes a reference that `Drop` gives back.
        NonNull::new(unsafe { ffi::rkvm_current_mm_grab() }).map(OwnerMm)
    }

    /// Whether the caller runs in this mm.
    pub(crate) fn is_current(&self) -> bool {
        // SAFETY: only compares `current->mm` with the address.
        unsafe { ffi::rkvm_current_mm_is(self.0.as_ptr()) }
    }
}

impl Drop for OwnerMm {
    fn drop(&mut self) {
        // SAFETY: drops the reference `current()` took.
        unsafe { ffi::rkvm_mmdrop(self.0.as_ptr()) }
    }
}

/// The page offset (`vm_pgoff`) of a VMA being set up.
pub(crate) fn vma_pgoff(vma: &kernel::mm::virt::VmaNew) -> usize {
    // SAFETY: the VMA is valid for the duration of the mmap call that gave it.
    unsafe { ffi::rkvm_vma_pgoff(vma.as_ptr()) }
}

/// The CPU this code runs on. Only meaningful while preemption is disabled.
pub(crate) fn cpu_id() -> usize {
    // SAFETY: reads a per-CPU variable; callers run with preemption disabled.
    unsafe { ffi::rkvm_smp_processor_id() as usize }
}

/// Yields the CPU if a reschedule is due.
pub(crate) fn cond_resched() {
    // SAFETY: called in process context, holding no spinlock.
    unsafe { ffi::rkvm_cond_resched() }
}

/// Zero-filled heap allocation (no zeroed value built on the stack first:
/// VMCBs, VMCS regions and permission maps are pages).
///
/// # Safety
///
/// All-zero bytes must be a valid `T`.
pub(crate) unsafe fn zeroed_box<T>() -> Result<KBox<T>> {
    let b = KBox::<T>::new_uninit(GFP_KERNEL | __GFP_ZERO)?;
    // SAFETY: the allocator zeroed it, and the caller guarantees zero is a
    // valid `T`.
    Ok(unsafe { b.assume_init() })
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
    // SAFETY: reads a clock; callable in any context.
    unsafe { ffi::rkvm_ktime_ns() }
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

// SPDX-License-Identifier: GPL-2.0

//! The two pages a vCPU fd maps for userspace: `struct kvm_run` (page 0),
//! through which `KVM_RUN` reports each exit, and the PIO data page (page 1).

use core::ptr::addr_of_mut;

use kernel::page::{
    Page,
    PAGE_SIZE, //
};

use crate::{
    abi::{
        self,
        uapi, //
    },
    sys, //
};

/// `struct kvm_run`, shared with userspace through the mmap.
///
/// Userspace may write the page at any time, so the kernel never forms a
/// reference to it: every field is read or written once, volatile, through
/// a raw pointer.
pub(super) struct RunPage<'a>(pub(super) &'a Page);

/// The address of a field of the `kvm_run` page. To be used inside an
/// `unsafe` block whose justification is: the page is this vCPU's `kvm_run`
/// page, allocated zeroed at vCPU creation and alive while `self` borrows it;
/// `struct kvm_run` fits in one page (asserted below); the field is accessed
/// once, volatile, so concurrent writes by userspace cannot tear a reference.
macro_rules! run_field {
    ($self:ident . $($field:tt)+) => {
        addr_of_mut!((*$self.raw()).$($field)+)
    };
}

const _: () = assert!(core::mem::size_of::<uapi::kvm_run>() <= PAGE_SIZE);

impl RunPage<'_> {
    fn raw(&self) -> *mut uapi::kvm_run {
        sys::page_address(self.0).cast()
    }

    pub(super) fn request_interrupt_window(&self) -> bool {
        // SAFETY: see `run_field!`; a volatile read of a byte userspace may write.
        unsafe { run_field!(self.request_interrupt_window).read_volatile() != 0 }
    }

    pub(super) fn immediate_exit(&self) -> bool {
        // SAFETY: see `run_field!`; a volatile read of a byte userspace may write.
        unsafe { run_field!(self.immediate_exit).read_volatile() != 0 }
    }

    /// The TPR the VMM's local APIC holds (`kvm_run->cr8`).
    pub(super) fn cr8(&self) -> u64 {
        // SAFETY: see `run_field!`; a volatile read of a field userspace may write.
        unsafe { run_field!(self.cr8).read_volatile() }
    }

    pub(super) fn exit_reason(&self) -> u32 {
        // SAFETY: see `run_field!`.
        unsafe { run_field!(self.exit_reason).read_volatile() }
    }

    pub(super) fn set_exit_reason(&self, reason: u32) {
        // SAFETY: see `run_field!`.
        unsafe { run_field!(self.exit_reason).write_volatile(reason) }
    }

    pub(super) fn set_io(&self, input: bool, size: u8, port: u16, count: u32) {
        self.set_exit_reason(uapi::KVM_EXIT_IO);
        // SAFETY: see `run_field!`; `io` is the union member for KVM_EXIT_IO.
        unsafe {
            run_field!(self.__bindgen_anon_1.io.direction).write_volatile(if input {
                uapi::KVM_EXIT_IO_IN
            } else {
                uapi::KVM_EXIT_IO_OUT
            } as u8);
            run_field!(self.__bindgen_anon_1.io.size).write_volatile(size);
            run_field!(self.__bindgen_anon_1.io.port).write_volatile(port);
            run_field!(self.__bindgen_anon_1.io.count).write_volatile(count);
            run_field!(self.__bindgen_anon_1.io.data_offset)
                .write_volatile((abi::PIO_PAGE_OFFSET * PAGE_SIZE) as u64);
        }
    }

    pub(super) fn set_debug(&self, arch: uapi::kvm_debug_exit_arch) {
        self.set_exit_reason(uapi::KVM_EXIT_DEBUG);
        // SAFETY: see `run_field!`; `debug` is the member for KVM_EXIT_DEBUG.
        unsafe { run_field!(self.__bindgen_anon_1.debug.arch).write_volatile(arch) }
    }

    pub(super) fn set_fail_entry(&self, reason: u64, cpu: u32) {
        self.set_exit_reason(uapi::KVM_EXIT_FAIL_ENTRY);
        // SAFETY: see `run_field!`; `fail_entry` is the member for this exit.
        unsafe {
            run_field!(
                self.__bindgen_anon_1
                    .fail_entry
                    .hardware_entry_failure_reason
            )
            .write_volatile(reason);
            run_field!(self.__bindgen_anon_1.fail_entry.cpu).write_volatile(cpu);
        }
    }

    pub(super) fn set_internal_error(&self, suberror: u32, data: &[u64]) {
        self.set_exit_reason(uapi::KVM_EXIT_INTERNAL_ERROR);
        // SAFETY: see `run_field!`; `internal` is the member for this exit and
        // `data` has 16 entries, more than any caller passes.
        unsafe {
            run_field!(self.__bindgen_anon_1.internal.suberror).write_volatile(suberror);
            run_field!(self.__bindgen_anon_1.internal.ndata).write_volatile(data.len() as u32);
            for (i, &d) in data.iter().take(16).enumerate() {
                run_field!(self.__bindgen_anon_1.internal.data[i]).write_volatile(d);
            }
        }
    }

    /// `KVM_EXIT_IOAPIC_EOI`: the guest's EOI of `vector`, accepted
    /// level-triggered, for userspace's IOAPIC (split irqchip).
    pub(super) fn set_ioapic_eoi(&self, vector: u8) {
        self.set_exit_reason(uapi::KVM_EXIT_IOAPIC_EOI);
        // SAFETY: see `run_field!`; `eoi` is the member for this exit.
        unsafe { run_field!(self.__bindgen_anon_1.eoi.vector).write_volatile(vector) };
    }

    pub(super) fn set_mmio(&self, gpa: u64, data: [u8; 8], len: u8, is_write: bool) {
        self.set_exit_reason(uapi::KVM_EXIT_MMIO);
        // SAFETY: see `run_field!`; `mmio` is the member for KVM_EXIT_MMIO.
        unsafe {
            run_field!(self.__bindgen_anon_1.mmio.phys_addr).write_volatile(gpa);
            run_field!(self.__bindgen_anon_1.mmio.data).write_volatile(data);
            run_field!(self.__bindgen_anon_1.mmio.len).write_volatile(u32::from(len));
            run_field!(self.__bindgen_anon_1.mmio.is_write).write_volatile(u8::from(is_write));
        }
    }

    /// The data userspace left for an MMIO load.
    pub(super) fn mmio_data(&self) -> [u8; 8] {
        // SAFETY: see `run_field!`.
        unsafe { run_field!(self.__bindgen_anon_1.mmio.data).read_volatile() }
    }

    /// The state KVM reports with every exit.
    pub(super) fn set_common(&self, if_flag: bool, ready: bool, cr8: u64, apic_base: u64) {
        // SAFETY: see `run_field!`.
        unsafe {
            run_field!(self.if_flag).write_volatile(u8::from(if_flag));
            run_field!(self.ready_for_interrupt_injection).write_volatile(u8::from(ready));
            run_field!(self.cr8).write_volatile(cr8);
            run_field!(self.apic_base).write_volatile(apic_base);
            run_field!(self.flags).write_volatile(0);
        }
    }
}

/// The PIO data page.
pub(super) struct PioPage<'a>(pub(super) &'a Page);

impl PioPage<'_> {
    /// Copies `data` (at most a page) to the start of the page.
    pub(super) fn write(&self, data: &[u8]) {
        let n = data.len().min(PAGE_SIZE);
        // SAFETY: the page is ours and `n` bytes fit in it; userspace may
        // read it concurrently, which for plain bytes is only a torn view of
        // its own shared memory.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), sys::page_address(self.0), n) }
    }

    /// Fills `out` (at most a page) from the start of the page.
    pub(super) fn read(&self, out: &mut [u8]) {
        let n = out.len().min(PAGE_SIZE);
        // SAFETY: as in `write`.
        unsafe { core::ptr::copy_nonoverlapping(sys::page_address(self.0), out.as_mut_ptr(), n) }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The VMX instructions, each wrapped once, with the states they need as
//! types: [`RootOperation`] (VMXON until dropped, which does VMXOFF) and
//! [`Current`] (a VMCS made current by VMPTRLD until dropped, which does
//! VMCLEAR). VMREAD and VMWRITE exist only on `Current`.
//!
//! rkvm is in VMX operation only while it runs a guest, with interrupts off
//! (see `vmx/mod.rs`): the kernel does not export its CR4 shadow to
//! modules other than KVM's, so CR4.VMXE is set and cleared directly, in a
//! window no kernel code (other than an NMI handler, which does not touch
//! CR4) can run in.

use core::{
    arch::asm,
    cell::Cell,
    marker::PhantomData, //
};

use kernel::prelude::*;

use crate::pure::{
    paging::HostPhys,
    vmcs::Field, //
};

/// CR4.VMXE.
const CR4_VMXE: u64 = 1 << 13;

/// Why VMX operation could not be entered or a VMCS not loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OpError {
    /// CR4.VMXE was already set: another hypervisor (kvm_intel) is in VMX
    /// operation on this CPU.
    Busy,
    /// VMXON failed.
    Vmxon,
    /// VMCLEAR or VMPTRLD of the vCPU's VMCS failed.
    Load,
    /// Reading this host MSR (for the VMCS's host state, or to put it back
    /// after the run) faulted.
    HostMsr(u32),
}

/// A host MSR the VMCS's host state or the run needs.
pub(super) fn host_msr(index: u32) -> Result<u64, OpError> {
    crate::sys::rdmsr(index).ok_or(OpError::HostMsr(index))
}

/// A 4 KiB VMXON region or VMCS: the revision identifier, then data only
/// the processor reads.
#[repr(C, align(4096))]
#[derive(Zeroable)]
pub(super) struct Region(pub(super) [u32; 1024]);

/// CR4 as it is now.
pub(super) fn read_cr4() -> u64 {
    let cr4: u64;
    // SAFETY: reading CR4 has no side effect (CPL 0).
    unsafe { asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags)) };
    cr4
}

/// # Safety
///
/// Interrupts must be disabled, and the change must be one rkvm undoes
/// before enabling them again (the kernel's CR4 shadow does not know it).
unsafe fn write_cr4(value: u64) {
    // SAFETY: per the contract; only VMXE differs from the current value.
    unsafe { asm!("mov cr4, {}", in(reg) value, options(nostack, preserves_flags)) };
}

/// CR2 as it is now: after a VM exit, with interrupts still off, the
/// guest's (VM exits do not change CR2).
pub(super) fn read_cr2() -> u64 {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effect (CPL 0).
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    cr2
}

/// Loads the guest's CR2 just before a VM entry, which does not load it.
///
/// # Safety
///
/// Interrupts must be disabled until after the VM exit that follows (and
/// its `read_cr2`): nothing of the host may fault in between and find its
/// own fault address overwritten, or overwrite the guest's. (An NMI
/// handler preserves CR2.)
pub(super) unsafe fn write_cr2(value: u64) {
    // SAFETY: per the contract; CR2 only holds the last fault address.
    unsafe { asm!("mov cr2, {}", in(reg) value, options(nomem, nostack, preserves_flags)) };
}

/// Whether another hypervisor is in VMX operation on this CPU.
pub(super) fn vmx_in_use_here() -> bool {
    read_cr4() & CR4_VMXE != 0
}

/// VMX root operation on the current CPU. Not `Send`: it belongs to the CPU.
pub(super) struct RootOperation {
    _cpu_bound: PhantomData<*const ()>,
}

impl RootOperation {
    /// Sets CR4.VMXE and executes VMXON with `region`.
    ///
    /// # Safety
    ///
    /// Interrupts must stay disabled until the value is dropped, and
    /// `region` must be a [`Region`] holding the VMCS revision identifier
    /// that no other CPU uses meanwhile.
    pub(super) unsafe fn enter(region: HostPhys) -> Result<Self, OpError> {
        let cr4 = read_cr4();
        if cr4 & CR4_VMXE != 0 {
            return Err(OpError::Busy);
        }
        // SAFETY: interrupts are off (contract); undone below or in `drop`.
        unsafe { write_cr4(cr4 | CR4_VMXE) };
        let pa = region.0;
        let failed: u8;
        // SAFETY: VMXE is set and we run at CPL 0 in 64-bit mode; the region
        // is valid (contract). VMXON reports failure in CF.
        unsafe {
            asm!("vmxon qword ptr [{pa}]", "setc {f}", pa = in(reg) core::ptr::from_ref(&pa), f = out(reg_byte) failed, options(nostack));
        }
        if failed != 0 {
            // SAFETY: as above; VMX operation was not entered.
            unsafe { write_cr4(cr4) };
            return Err(OpError::Vmxon);
        }
        Ok(RootOperation {
            _cpu_bound: PhantomData,
        })
    }

    /// Makes the VMCS at `vmcs` current, clear (launch state "clear") first.
    ///
    /// # Safety
    ///
    /// `vmcs` must be the physical address of a live [`Region`] holding the
    /// revision identifier, that stays alive and is not used by another
    /// CPU while the returned value lives.
    pub(super) unsafe fn load(&self, vmcs: HostPhys) -> Result<Current<'_>, OpError> {
        let pa = vmcs.0;
        // SAFETY: in VMX operation (`self`); the region is valid (contract).
        // VMfail sets CF or ZF.
        let failed: u8 = unsafe {
            let f: u8;
            asm!("vmclear qword ptr [{pa}]", "setbe {f}", pa = in(reg) core::ptr::from_ref(&pa), f = out(reg_byte) f, options(nostack));
            f
        };
        if failed != 0 {
            return Err(OpError::Load);
        }
        // SAFETY: as above.
        let failed: u8 = unsafe {
            let f: u8;
            asm!("vmptrld qword ptr [{pa}]", "setbe {f}", pa = in(reg) core::ptr::from_ref(&pa), f = out(reg_byte) f, options(nostack));
            f
        };
        if failed != 0 {
            return Err(OpError::Load);
        }
        Ok(Current {
            pa,
            failed_write: Cell::new(None),
            _root: PhantomData,
        })
    }
}

impl Drop for RootOperation {
    fn drop(&mut self) {
        // SAFETY: in VMX operation (`self` exists), interrupts off (contract
        // of `enter`); no VMCS is current any more (`Current` borrows `self`
        // and has been dropped, clearing it).
        unsafe { asm!("vmxoff", options(nostack)) };
        // SAFETY: out of VMX operation; interrupts still off.
        unsafe { write_cr4(read_cr4() & !CR4_VMXE) };
    }
}

/// The current VMCS.
pub(super) struct Current<'a> {
    pa: u64,
    /// The first field a VMWRITE failed on.
    failed_write: Cell<Option<Field>>,
    _root: PhantomData<&'a RootOperation>,
}

impl Current<'_> {
    /// VMWRITE. A failure is remembered for [`Current::writes_ok`] rather
    /// than checked at every one of the many writes of an entry.
    pub(super) fn write(&self, field: Field, value: u64) {
        let failed: u8;
        // SAFETY: a VMCS is current (`self`); VMWRITE only changes it.
        unsafe {
            asm!("vmwrite {f}, {v}", "setbe {r}", f = in(reg) u64::from(field.0), v = in(reg) value,
                 r = out(reg_byte) failed, options(nostack));
        }
        if failed != 0 && self.failed_write.get().is_none() {
            self.failed_write.set(Some(field));
        }
    }

    /// VMREAD (0 for a field the processor does not have).
    pub(super) fn read(&self, field: Field) -> u64 {
        let value: u64;
        // SAFETY: a VMCS is current; VMREAD has no side effect.
        unsafe {
            asm!("vmread {v}, {f}", v = out(reg) value, f = in(reg) u64::from(field.0), options(nostack));
        }
        value
    }

    /// `Err(field)` if a write failed since the VMCS was loaded.
    pub(super) fn writes_ok(&self) -> Result<(), Field> {
        self.failed_write.get().map_or(Ok(()), Err)
    }

    /// INVEPT: drops the translations derived from `eptp` (single context)
    /// or from every EPT (`single` false: all contexts).
    pub(super) fn invept(&self, eptp: u64, single: bool) {
        let desc: [u64; 2] = [eptp, 0];
        let kind: u64 = if single { 1 } else { 2 };
        // SAFETY: in VMX operation; the descriptor is a live 16-byte value.
        unsafe {
            asm!("invept {k}, [{d}]", k = in(reg) kind, d = in(reg) desc.as_ptr(), options(nostack))
        };
    }
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        let pa = self.pa;
        // SAFETY: in VMX operation; writes the VMCS's cached state back to
        // its region and makes it clear and not current, so that it can be
        // loaded on any CPU next time (the vCPU may migrate) and freed.
        unsafe {
            asm!("vmclear qword ptr [{pa}]", pa = in(reg) core::ptr::from_ref(&pa), options(nostack))
        };
    }
}

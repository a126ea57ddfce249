// SPDX-License-Identifier: GPL-2.0

//! `/dev/rkvm`: the system file descriptor, as `/dev/kvm` is for KVM.

use kernel::{
    fs::File,
    miscdevice::{
        MiscDevice,
        MiscDeviceRegistration, //
    },
    prelude::*, //
};

use crate::{
    abi,
    vm::Vm, //
};

/// An open `/dev/rkvm`. It holds no state of its own: VMs created from it are
/// file descriptors of their own.
pub(crate) struct SystemFd;

impl SystemFd {
    /// Dispatches a system ioctl. Errno values follow KVM's `kvm_dev_ioctl()`:
    /// a request it does not know, or an argument a request does not take, is
    /// `EINVAL` (not `ENOTTY`), so that clients probing rkvm see what they
    /// would see on `/dev/kvm`.
    fn dispatch(cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            abi::sys::GET_API_VERSION if arg == 0 => Ok(abi::API_VERSION as isize),
            abi::sys::CREATE_VM => Vm::create(arg),
            abi::sys::CHECK_EXTENSION => Ok(abi::check_extension(arg) as isize),
            abi::sys::GET_MSR_INDEX_LIST => {
                abi::write_msr_list(arg, &crate::pure::msr::LIST)?;
                Ok(0)
            }
            abi::sys::GET_SUPPORTED_CPUID => {
                let (entries, n) = crate::cpu::supported_cpuid();
                // KVM: a buffer for no entry at all is E2BIG too.
                let head: crate::abi::uapi::kvm_cpuid2 = abi::read_arg(arg)?;
                if head.nent < 1 {
                    return Err(E2BIG);
                }
                abi::write_cpuid(arg, entries.get(..n).unwrap_or(&entries))?;
                Ok(0)
            }
            abi::sys::GET_VCPU_MMAP_SIZE if arg == 0 => {
                Ok((abi::VCPU_MMAP_PAGES * kernel::page::PAGE_SIZE) as isize)
            }
            _ => Err(EINVAL),
        }
    }
}

#[vtable]
impl MiscDevice for SystemFd {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        Ok(KBox::new(SystemFd, GFP_KERNEL)?)
    }

    fn ioctl(_me: &SystemFd, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        Self::dispatch(cmd, arg)
    }

    #[cfg(CONFIG_COMPAT)]
    fn compat_ioctl(_me: &SystemFd, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        // The system ioctls take no pointers: the same handler serves 32-bit
        // callers (and KVM_CREATE_VM's fd works the same for them).
        Self::dispatch(cmd, arg)
    }
}

// SPDX-License-Identifier: GPL-2.0

//! `/dev/rkvm`: the system file descriptor, as `/dev/kvm` is for KVM.

use kernel::{
    bindings,
    error::to_result,
    fs::File,
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    prelude::*,
    types::Opaque, //
};

use crate::{
    abi,
    vm::Vm, //
};

/// KVM's misc minor (`KVM_MINOR` in `<linux/miscdevice.h>`): a node made
/// by hand (Firecracker's jailer makes `/dev/kvm` as 10:232) reaches rkvm.
const KVM_MINOR: i32 = 232;

/// The registered system device: `/dev/rkvm` with a minor the misc core
/// chooses, or with the `kvm_node` parameter `/dev/kvm` with KVM's minor,
/// for clients that open `/dev/kvm` by name (QEMU, Firecracker, Cloud
/// Hypervisor, rust-vmm's `Kvm::new()`).
///
/// The kernel crate's `MiscDeviceRegistration` always asks for a dynamic
/// minor, so this is its twin with a fixed one: the same `repr`, so that
/// the open callback, which finds the registration from the
/// `struct miscdevice` it was given, sees the layout it expects.
///
/// # Invariants
///
/// `inner` holds a `struct miscdevice` registered with `misc_register()`
/// for as long as this value lives; it is deregistered once, in drop.
#[repr(transparent)]
#[pin_data(PinnedDrop)]
pub(crate) struct SystemDevice {
    #[pin]
    inner: Opaque<bindings::miscdevice>,
}

// The open callback casts the `struct miscdevice` to this type.
const _: () = assert!(
    core::mem::size_of::<SystemDevice>()
        == core::mem::size_of::<MiscDeviceRegistration<SystemFd>>()
);

// SAFETY: `misc_deregister` may be called from any thread.
unsafe impl Send for SystemDevice {}
// SAFETY: `SystemDevice` has no `&self` methods that touch `inner`.
unsafe impl Sync for SystemDevice {}

impl SystemDevice {
    /// Registers `/dev/rkvm`, or `/dev/kvm` with minor 232 (`kvm_node`):
    /// `EBUSY`, with a message, while KVM holds that minor.
    pub(crate) fn register(kvm_node: bool) -> impl PinInit<Self, Error> {
        let name = if kvm_node { c"kvm" } else { c"rkvm" };
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                let mut raw = MiscDeviceOptions { name }.into_raw::<SystemFd>();
                if kvm_node {
                    raw.minor = KVM_MINOR;
                }
                // SAFETY: the initializer may write the slot it is given.
                unsafe { slot.write(raw) };
                // SAFETY: `slot` holds a `struct miscdevice` made by
                // `into_raw` for `SystemFd`; it is pinned and deregistered in
                // drop before its memory goes.
                let result = to_result(unsafe { bindings::misc_register(slot) });
                if kvm_node && result == Err(EBUSY) {
                    pr_err!(
                        "kvm_node=1: /dev/kvm (misc minor {}) is taken: unload kvm_amd or kvm_intel and kvm first, or load rkvm without kvm_node\n",
                        KVM_MINOR
                    );
                }
                result
            }),
        })
    }
}

#[pinned_drop]
impl PinnedDrop for SystemDevice {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: registered (the type's invariant), deregistered only here.
        unsafe { bindings::misc_deregister(self.inner.get()) };
    }
}

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
            abi::sys::GET_EMULATED_CPUID => abi::get_emulated_cpuid(arg),
            abi::sys::GET_MSR_FEATURE_INDEX_LIST => {
                abi::write_msr_list(arg, &crate::pure::msr::FEATURE_LIST)?;
                Ok(0)
            }
            // The system fd's KVM_GET_MSRS reads feature MSRs (kvm_get_msr_feature()).
            abi::vcpu::GET_MSRS => abi::msr_io(arg, true, |e| {
                crate::pure::msr::feature_read(e.index)
                    .map(|v| e.data = v)
                    .is_some()
            }),
            abi::sys::X86_GET_MCE_CAP_SUPPORTED => {
                abi::write_arg(arg, &crate::pure::msr::MCE_CAP_SUPPORTED)?;
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

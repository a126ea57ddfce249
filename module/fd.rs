// SPDX-License-Identifier: GPL-2.0

//! File descriptors backed by anonymous inodes: VMs and vCPUs are files, as in
//! KVM (`anon_inode_getfile()` + `fd_install()`).
//!
//! A type implementing [`FdOps`] gets a static `file_operations` table; the
//! file's `private_data` holds one reference of an `Arc<T>`, taken when the fd
//! is created and dropped at the file's final `release`. The table's `owner` is
//! this module, so `rmmod rkvm` is refused while any VM or vCPU fd is open.

use core::{
    marker::PhantomData,
    ptr::NonNull, //
};

use kernel::{
    bindings,
    error::from_err_ptr,
    ffi::{
        c_char,
        c_int,
        c_long,
        c_uint,
        c_ulong, //
    },
    fs::{
        file::FileDescriptorReservation,
        File, //
    },
    mm::virt::VmaNew,
    prelude::*,
    sync::{
        aref::ARef,
        Arc,
        ArcBorrow, //
    },
    types::ForeignOwnable,
    uaccess::{
        UserPtr,
        UserSlice,
        UserSliceWriter, //
    }, //
};

use crate::ffi;

/// Operations of an rkvm file descriptor.
pub(crate) trait FdOps: Send + Sync + Sized + 'static {
    /// Name of the anonymous inode (shown in `/proc/PID/fd`).
    const NAME: &'static CStr;
    /// Whether the file can be mmap'ed ([`FdOps::mmap`]).
    const HAS_MMAP: bool = false;
    /// Whether the file is a read-only file read with `read()` and
    /// `pread()` ([`FdOps::read`]), as KVM's statistics files are.
    const HAS_READ: bool = false;

    /// An ioctl on the file.
    fn ioctl(this: ArcBorrow<'_, Self>, file: &File, cmd: u32, arg: usize) -> Result<isize>;

    /// The file's last close, before its reference to `this` goes (what
    /// lives beyond the file but belongs to it is let go here).
    fn release(_this: ArcBorrow<'_, Self>) {}

    /// An mmap of the file.
    fn mmap(_this: ArcBorrow<'_, Self>, _vma: &VmaNew) -> Result {
        Err(ENODEV)
    }

    /// A read of up to `out.len()` bytes at offset `pos`: the bytes read.
    fn read(_this: ArcBorrow<'_, Self>, _out: &mut UserSliceWriter, _pos: u64) -> Result<usize> {
        Err(EINVAL)
    }
}

/// Creates a file for `data` and installs it as a new fd (`O_RDWR`, or
/// `O_RDONLY` with `pread()` allowed for [`FdOps::HAS_READ`]; `O_CLOEXEC`),
/// returning the fd number.
pub(crate) fn create<T: FdOps>(data: Arc<T>) -> Result<i32> {
    let reservation = FileDescriptorReservation::get_unused_fd_flags(bindings::O_CLOEXEC)?;
    let private = data.into_foreign();
    // SAFETY: `NAME` is NUL-terminated and static; the vtable is static; the
    // private pointer comes from `into_foreign` and is reclaimed either below
    // (on failure) or by `release` (exactly once, when the file dies).
    let raw = unsafe {
        ffi::anon_inode_getfile(
            T::NAME.as_char_ptr(),
            Vtable::<T>::build(),
            private,
            if T::HAS_READ {
                bindings::O_RDONLY
            } else {
                bindings::O_RDWR
            } as c_int,
        )
    };
    let raw = match from_err_ptr(raw) {
        Ok(raw) => raw,
        Err(e) => {
            // SAFETY: the file was not created, so nobody else owns `private`.
            drop(unsafe { Arc::<T>::from_foreign(private) });
            return Err(e);
        }
    };
    // SAFETY: `anon_inode_getfile` returned a new file with one reference,
    // which we hand to the `ARef` (then to the fd table). `File` is a
    // transparent wrapper of `struct file`.
    let file = unsafe { ARef::from_raw(NonNull::new_unchecked(raw.cast::<File>())) };
    if T::HAS_READ {
        // SAFETY: the file is new and not installed yet: nobody else uses it.
        unsafe { ffi::rkvm_file_allow_pread(raw) };
    }
    let fd = reservation.reserved_fd();
    reservation.fd_install(file);
    Ok(fd as i32)
}

struct Vtable<T: FdOps>(PhantomData<T>);

impl<T: FdOps> Vtable<T> {
    /// # Safety
    ///
    /// `file` must be a file created by [`create::<T>`], being released.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: the release of a file owns its private data, which `create`
        // set from `Arc<T>::into_foreign`.
        let this = unsafe { Arc::<T>::from_foreign((*file).private_data) };
        T::release(this.as_arc_borrow());
        drop(this);
        0
    }

    /// # Safety
    ///
    /// `file` must be a live file created by [`create::<T>`].
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: the private data is an `Arc<T>` that lives until `release`,
        // which cannot run while this ioctl holds the file.
        let this = unsafe { Arc::<T>::borrow((*file).private_data) };
        // SAFETY: the file is valid for the duration of the call and this
        // thread holds no fdget_pos region on it.
        let file = unsafe { File::from_raw_file(file) };
        match T::ioctl(this, file, cmd, arg) {
            Ok(ret) => ret as c_long,
            Err(err) => err.to_errno() as c_long,
        }
    }

    /// # Safety
    ///
    /// `file` must be a live file created by [`create::<T>`]; `vma` a VMA being
    /// set up by mmap of that file.
    unsafe extern "C" fn mmap(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: as in `ioctl`.
        let this = unsafe { Arc::<T>::borrow((*file).private_data) };
        // SAFETY: the caller passes a VMA undergoing its initial setup.
        let vma = unsafe { VmaNew::from_raw(vma) };
        match T::mmap(this, vma) {
            Ok(()) => 0,
            Err(err) => err.to_errno(),
        }
    }

    /// # Safety
    ///
    /// `file` must be a live file created by [`create::<T>`]; `buf` and
    /// `pos` come from the VFS `read` call.
    unsafe extern "C" fn read(
        file: *mut bindings::file,
        buf: *mut c_char,
        count: usize,
        pos: *mut bindings::loff_t,
    ) -> isize {
        // SAFETY: as in `ioctl`.
        let this = unsafe { Arc::<T>::borrow((*file).private_data) };
        // SAFETY: the VFS passes a valid position, which it owns for the call.
        let start = unsafe { *pos };
        let Ok(offset) = u64::try_from(start) else {
            return EINVAL.to_errno() as isize;
        };
        let mut out = UserSlice::new(UserPtr::from_addr(buf as usize), count).writer();
        match T::read(this, &mut out, offset) {
            Ok(n) => {
                // SAFETY: as above.
                unsafe { *pos = start + n as bindings::loff_t };
                n as isize
            }
            Err(err) => err.to_errno() as isize,
        }
    }

    const VTABLE: bindings::file_operations = bindings::file_operations {
        owner: kernel::module::this_module::<crate::RkvmModule>().as_ptr(),
        release: Some(Self::release),
        unlocked_ioctl: Some(Self::ioctl),
        #[cfg(CONFIG_COMPAT)]
        compat_ioctl: Some(Self::ioctl),
        mmap: if T::HAS_MMAP { Some(Self::mmap) } else { None },
        read: if T::HAS_READ { Some(Self::read) } else { None },
        llseek: Some(bindings::noop_llseek),
        ..pin_init::zeroed()
    };

    const fn build() -> &'static bindings::file_operations {
        &Self::VTABLE
    }
}

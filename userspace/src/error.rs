// SPDX-License-Identifier: GPL-2.0

//! What can go wrong in `rkvm`, with what the user needs to know: which
//! ioctl failed and its errno, which file could not be read, which argument
//! is wrong, and what to do about it where rkvm can tell. `main` prints the
//! message after "rkvm: " and exits with status 1.

use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use crate::devices::bus::BusError;

/// The errno of an ioctl made through kvm-ioctls.
pub type KvmErrno = kvm_ioctls::Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // Arguments.
    #[error("device path {} contains a NUL byte", .0.display())]
    DevicePathNul(PathBuf),
    #[error("--mem is too large")]
    MemTooLarge,
    #[error("--mem must be at least 2 (MiB)")]
    MemTooSmall,
    #[error("--mem must be at most {max_mib} (MiB): RAM starts at 0 and ends below the TSS")]
    MemAboveTss { max_mib: u64 },
    #[error("--interval must be a positive number of seconds")]
    BadInterval,
    #[error("--disk {}: {source}", .path.display())]
    Disk { path: PathBuf, source: io::Error },
    #[error("too many virtio devices: no interrupt line left for {0}")]
    NoIrqLeft(&'static str),

    // The KVM device and the VM.
    #[error("cannot open {}: {source}{}", .path.display(), open_hint(.path, .source))]
    OpenDevice { path: PathBuf, source: KvmErrno },
    #[error(
        "{} reports API version {version}; KVM clients need {}",
        .device.display(),
        kvm_bindings::KVM_API_VERSION
    )]
    ApiVersion { device: PathBuf, version: i32 },
    #[error("KVM_CREATE_VM on {}: {source}{}", .device.display(), create_vm_hint(.source))]
    CreateVm { device: PathBuf, source: KvmErrno },
    #[error(
        "{} cannot choose the MMU per VM (real KVM chooses when its module loads: kvm_amd npt=0 or kvm_intel ept=0 for shadow paging)",
        .0.display()
    )]
    MmuNotChoosable(PathBuf),
    #[error(
        "{} has no in-kernel irqchip (KVM_CAP_IRQCHIP and KVM_CAP_PIT2) for --irqchip kernel: with /dev/rkvm, load rkvm.ko without irqchip=0",
        .0.display()
    )]
    NoKernelIrqchip(PathBuf),
    #[error("{} has no split irqchip (KVM_CAP_SPLIT_IRQCHIP) for --irqchip split: with /dev/rkvm, load rkvm.ko without irqchip=0", .0.display())]
    NoSplitIrqchip(PathBuf),
    #[error("--irqchip kernel or split: {0}")]
    KernelIrqchip(&'static str),
    #[error(
        "--smp above 1 needs --irqchip kernel or split: the vCPUs' local APICs start the others"
    )]
    SmpNeedsKernelIrqchip,
    #[error("vCPU {id} (an AP of --smp) stopped: {what}")]
    ApFailed { id: u8, what: String },
    #[error("{} does not offer {paging} paging", .device.display())]
    MmuNotOffered {
        device: PathBuf,
        paging: &'static str,
    },
    /// An ioctl through kvm-ioctls, by name.
    #[error("{ioctl}: {source}")]
    Ioctl {
        ioctl: &'static str,
        source: KvmErrno,
    },
    /// A system call or an ioctl of rkvm's own, by name.
    #[error("{call}: {source}")]
    Sys { call: &'static str, source: Errno },
    #[error("sigaction({signal}): {source}")]
    Sigaction { signal: Signal, source: Errno },
    #[error("cannot allocate {mib} MiB of guest memory: {source} (try a smaller --mem)")]
    AllocMemory {
        mib: usize,
        source: vm_memory::mmap::FromRangesError,
    },
    /// The CPUID list would not fit kvm-bindings' `CpuId` (its error, as
    /// kvm-bindings prints it).
    #[error("CPUID: {0}")]
    Cpuid(String),
    /// `what` went wrong in guest memory.
    #[error("{what}: {source}")]
    GuestMemory {
        what: &'static str,
        source: vm_memory::GuestMemoryError,
    },

    // Files.
    #[error("cannot read {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot open {}: {source}", .path.display())]
    Open { path: PathBuf, source: io::Error },
    /// A file rkvm reads on its own account (debugfs, /dev/urandom).
    #[error("{}: {source}", .path.display())]
    File { path: PathBuf, source: io::Error },
    #[error("{}: {source}", .path.display())]
    Snapshot {
        path: PathBuf,
        source: crate::snapshot::FormatError,
    },
    #[error("restore: the device refused MSR {index:#x} = {value:#x} (KVM_SET_MSRS)")]
    RestoreMsr { index: u32, value: u64 },
    #[error("statistics file: {0}")]
    StatsRead(io::Error),
    #[error("statistics file: implausible header")]
    StatsHeader,

    // Guests.
    #[error("{} is too large: a flat program must fit below 0x80000", .0.display())]
    FlatTooLarge(PathBuf),
    #[error("{} is not a bzImage rkvm can load: {source}", .path.display())]
    NotBzImage {
        path: PathBuf,
        source: linux_loader::loader::Error,
    },
    #[error("the bzImage has no setup header")]
    NoSetupHeader,
    #[error(
        "{} has no 64-bit entry point (boot protocol {}.{}, xloadflags {xloadflags:#x})",
        .path.display(),
        .version >> 8,
        .version & 0xff
    )]
    No64BitEntry {
        path: PathBuf,
        version: u16,
        xloadflags: u16,
    },
    #[error("command line: {0}")]
    Cmdline(linux_loader::cmdline::Error),
    #[error("command line: {0}")]
    LoadCmdline(linux_loader::loader::Error),
    #[error("the kernel needs {mib} MiB of guest memory: give more --mem")]
    KernelNeedsMemory { mib: u64 },
    #[error("the initramfs does not fit above the kernel: give more --mem")]
    InitrdDoesNotFit,
    #[error("writing the zero page: {0}")]
    ZeroPage(linux_loader::configurator::Error),

    // The gdb stub (--gdb).
    #[error("--gdb {port}: cannot listen on 127.0.0.1:{port}: {source}")]
    GdbListen { port: u16, source: io::Error },
    #[error("--gdb: waiting for gdb: {0}")]
    GdbAccept(io::Error),
    /// The session with gdb failed (gdbstub's error, as it prints it).
    #[error("gdb session: {0}")]
    Gdb(String),

    // The run.
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the hardware refused the guest state (reason {reason:#x}, cpu {cpu})")]
    FailEntry { reason: u64, cpu: u32 },
    /// An exit rkvm does not handle, as kvm-ioctls prints it.
    #[error("unexpected exit: {0}")]
    UnexpectedExit(String),
    /// `KVM_EXIT_INTERNAL_ERROR`, with its suberror, data and the guest's
    /// RIP (if it could be read).
    #[error(
        "the hypervisor stopped the guest: {} (KVM_EXIT_INTERNAL_ERROR, suberror {suberror}, data [{}], rip {})",
        internal_error_kind(*.suberror),
        hex_list(.data),
        .rip.map_or_else(|| "?".to_string(), |r| format!("{r:#x}"))
    )]
    Internal {
        suberror: u32,
        data: Vec<u64>,
        rip: Option<u64>,
    },

    // rkvm stat, rkvm trace.
    #[error(
        "no rkvm VM in {} (none running, debugfs not mounted, or not root?)",
        .0.display()
    )]
    NoVms(PathBuf),
    #[error("no VM {which} in {}", .root.display())]
    NoSuchVm { which: String, root: PathBuf },
    #[error("{0} VMs are running: choose one with --vm")]
    ManyVms(usize),
    #[error("{} has no vCPU {vcpu}", .vm.display())]
    NoSuchVcpu { vm: PathBuf, vcpu: u32 },
}

impl Error {
    /// A failed ioctl through kvm-ioctls, for `map_err`.
    pub fn ioctl(ioctl: &'static str) -> impl FnOnce(KvmErrno) -> Error {
        move |source| Error::Ioctl { ioctl, source }
    }

    /// A failed system call, for `map_err`.
    pub fn sys(call: &'static str) -> impl FnOnce(Errno) -> Error {
        move |source| Error::Sys { call, source }
    }

    /// An error in guest memory while doing `what`, for `map_err`.
    pub fn guest_memory(what: &'static str) -> impl FnOnce(vm_memory::GuestMemoryError) -> Error {
        move |source| Error::GuestMemory { what, source }
    }
}

/// What to do when a KVM device does not open.
fn open_hint(device: &Path, e: &KvmErrno) -> &'static str {
    match Errno::from_raw(e.errno()) {
        Errno::ENOENT if device.ends_with("rkvm") => {
            " (is the rkvm module loaded? try: insmod rkvm.ko)"
        }
        Errno::ENOENT => " (is kvm_amd or kvm_intel loaded?)",
        Errno::EACCES => " (are you root or in the device's group?)",
        _ => "",
    }
}

/// What to do when `KVM_CREATE_VM` fails.
fn create_vm_hint(e: &KvmErrno) -> &'static str {
    match e.errno() {
        nix::libc::EBUSY => " (another hypervisor owns the CPU's virtualization: unload kvm_amd/kvm_intel, or use --device /dev/kvm)",
        nix::libc::ENOMEM => " (the host is short of memory)",
        _ => "",
    }
}

fn internal_error_kind(suberror: u32) -> &'static str {
    match suberror {
        1 => "an instruction the hypervisor could not emulate",
        2 => "an exception while delivering an exception",
        3 => "an exit while delivering an event",
        4 => "an exit reason the hypervisor does not handle",
        _ => "an internal error",
    }
}

fn hex_list(data: &[u64]) -> String {
    let hex: Vec<String> = data.iter().map(|d| format!("{d:#x}")).collect();
    hex.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_the_tests_and_users_rely_on() {
        let busy = Error::CreateVm {
            device: "/dev/rkvm".into(),
            source: KvmErrno::new(nix::libc::EBUSY),
        };
        assert_eq!(
            busy.to_string(),
            "KVM_CREATE_VM on /dev/rkvm: Device or resource busy (os error 16) (another hypervisor owns the CPU's virtualization: unload kvm_amd/kvm_intel, or use --device /dev/kvm)"
        );
        let absent = Error::OpenDevice {
            path: "/dev/rkvm".into(),
            source: KvmErrno::new(nix::libc::ENOENT),
        };
        assert_eq!(
            absent.to_string(),
            "cannot open /dev/rkvm: No such file or directory (os error 2) (is the rkvm module loaded? try: insmod rkvm.ko)"
        );
        let internal = Error::Internal {
            suberror: 1,
            data: vec![0x10, 0x2f],
            rip: None,
        };
        assert_eq!(
            internal.to_string(),
            "the hypervisor stopped the guest: an instruction the hypervisor could not emulate (KVM_EXIT_INTERNAL_ERROR, suberror 1, data [0x10, 0x2f], rip ?)"
        );
        let ioctl = Error::ioctl("KVM_RUN")(KvmErrno::new(nix::libc::EFAULT));
        assert_eq!(ioctl.to_string(), "KVM_RUN: Bad address (os error 14)");
        let sys = Error::sys("KVM_INTERRUPT")(Errno::EINVAL);
        assert_eq!(sys.to_string(), format!("KVM_INTERRUPT: {}", Errno::EINVAL));
    }
}

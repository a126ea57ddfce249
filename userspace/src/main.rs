// SPDX-License-Identifier: GPL-2.0

//! `rkvm`: the userspace side of rkvm.
//!
//! It talks to `/dev/rkvm` (the rkvm module) or `/dev/kvm` (real KVM) through
//! the same KVM ioctl ABI, with the same code: the device path is the only
//! difference.

mod caps;
mod cpu;
mod devices;
mod linux;
mod run;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kvm_ioctls::Kvm;
use nix::errno::Errno;
use rkvm_pure::cpu::Avail;

/// rkvm: a small KVM-compatible hypervisor, and the VMM that drives it.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show what a KVM device offers (API version, capabilities) and what the
    /// processor offers for virtualization.
    Info {
        /// The KVM device to ask: /dev/rkvm (the rkvm module) or /dev/kvm (real KVM).
        #[arg(long, default_value = "/dev/rkvm")]
        device: PathBuf,
        /// List every capability rkvm knows the name of, including those answered 0.
        #[arg(long)]
        all: bool,
    },
    /// Run a guest: a flat program loaded at 0x1000 (real or long mode).
    ///
    /// The guest's COM1 (0x3f8) is this terminal's output, the 8259 PIC pair
    /// (0x20, 0xa0, 0x4d0) delivers interrupts, the 8254 PIT (0x40-0x43,
    /// 0x61) ticks on IRQ0 and the CMOS RTC (0x70-0x71) tells the host's time; writing a byte to port 0xf4
    /// ends the run with that byte as the exit status, writing N to port 0xf5
    /// pulses IRQ line N (for test guests). HLT with nothing to wake the guest
    /// ends the run with 0, a triple fault with 3. Other ports read as 0xff and
    /// ignore writes (each reported once). Exit counts by reason are printed at
    /// the end.
    Run {
        /// The KVM device: /dev/rkvm (the rkvm module) or /dev/kvm (real KVM).
        #[arg(long, default_value = "/dev/rkvm")]
        device: PathBuf,
        /// A flat binary, loaded at guest physical 0x1000 and entered there.
        #[arg(long, conflicts_with = "kernel", required_unless_present = "kernel")]
        flat: Option<PathBuf>,
        /// A Linux bzImage, booted with the 64-bit boot protocol (experimental).
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// An initramfs for --kernel.
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// The kernel command line for --kernel.
        #[arg(long, default_value = "console=ttyS0 panic=-1")]
        cmdline: String,
        /// CPU mode at entry.
        #[arg(long, value_enum, default_value = "real", conflicts_with = "kernel")]
        mode: run::Mode,
        /// Guest memory in MiB (from guest physical 0).
        #[arg(long, default_value_t = 16)]
        mem: usize,
        /// Print one line per exit that reaches userspace.
        #[arg(long)]
        trace_exits: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { device, all } => info(&device, all).map(|()| 0),
        Command::Run { device, flat, kernel, initrd, cmdline, mode, mem, trace_exits } => {
            let guest = match (&flat, &kernel) {
                (Some(flat), _) => run::Guest::Flat(flat, mode),
                (None, Some(kernel)) => run::Guest::Linux { kernel, initrd: initrd.as_deref(), cmdline: &cmdline },
                (None, None) => return ExitCode::from(2), // clap requires one of them
            };
            let opts = run::Options { device: &device, guest, mem_mib: mem, trace_exits };
            run::run(&opts).map(|outcome| {
                if outcome == run::Outcome::Shutdown {
                    eprintln!("rkvm: the guest triple-faulted (shutdown)");
                }
                outcome.status()
            })
        }
    };
    match result {
        Ok(status) => ExitCode::from(status),
        Err(msg) => {
            eprintln!("rkvm: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Opens a KVM device, turning the errno into advice.
fn open_device(device: &Path) -> Result<Kvm, String> {
    let path = CString::new(device.as_os_str().as_bytes())
        .map_err(|_| format!("device path {} contains a NUL byte", device.display()))?;
    Kvm::new_with_path(path).map_err(|e| {
        let hint = match Errno::from_raw(e.errno()) {
            Errno::ENOENT if device.ends_with("rkvm") => " (is the rkvm module loaded? try: insmod rkvm.ko)",
            Errno::ENOENT => " (is kvm_amd or kvm_intel loaded?)",
            Errno::EACCES => " (are you root or in the device's group?)",
            _ => "",
        };
        format!("cannot open {}: {e}{hint}", device.display())
    })
}

fn info(device: &Path, all: bool) -> Result<(), String> {
    let kvm = open_device(device)?;
    println!("device:       {}", device.display());
    let version = kvm.get_api_version();
    println!("api version:  {version}");
    if version != kvm_bindings::KVM_API_VERSION as i32 {
        return Err(format!(
            "{} reports API version {version}; KVM clients need {}",
            device.display(),
            kvm_bindings::KVM_API_VERSION
        ));
    }

    let answers: Vec<(&str, i32)> = caps::CAPS
        .iter()
        .map(|&(name, nr)| (name, kvm.check_extension_raw(nr.into())))
        .collect();
    let supported = answers.iter().filter(|(_, v)| *v != 0).count();
    println!("capabilities: {supported} of {} known answered non-zero", answers.len());
    for (name, value) in answers.iter().filter(|(_, v)| all || *v != 0) {
        println!("  {name:<40} {value}");
    }

    let (features, msrs) = cpu::probe();
    println!("cpu:          {features}");
    let mut unknown = false;
    features.for_each(|_, avail| unknown |= avail == Avail::Unknown);
    if unknown && !msrs {
        println!("              (? needs the VMX MSRs: run as root with /dev/cpu/0/msr)");
    }
    println!(
        "backend:      {}",
        features.usable_backend().unwrap_or("none (no usable SVM or VMX with unrestricted guest)")
    );
    Ok(())
}

// SPDX-License-Identifier: GPL-2.0

//! `rkvm`: the userspace side of rkvm.
//!
//! It talks to `/dev/rkvm` (the rkvm module) or `/dev/kvm` (real KVM) through
//! the same KVM ioctl ABI, with the same code: the device path is the only
//! difference.

mod caps;
mod console;
mod cpu;
mod debugfs;
mod devices;
mod error;
mod gdb;
mod kvmstats;
mod observe;
mod run;
mod signals;
mod snapshot;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kvm_ioctls::Kvm;
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
    /// Show the statistics of running rkvm VMs, per VM and per vCPU.
    ///
    /// The kernel counts exits by kind (and whether each was handled in the
    /// kernel or returned to user mode), interrupts injected, instructions
    /// emulated, nested page faults fixed, time in guest mode and the nested
    /// page table's leaves by size. They are in debugfs
    /// (/sys/kernel/debug/rkvm-<pid>-<vm fd>/stats and .../vcpu<N>/stats,
    /// root only) and, for the VMM itself, in KVM's binary statistics fd
    /// (KVM_GET_STATS_FD), which `rkvm run` prints at the end.
    Stat {
        #[command(flatten)]
        which: VmChoice,
        /// Repeat every SECONDS, with the change per second.
        #[arg(long, value_name = "SECONDS")]
        interval: Option<f64>,
        /// With --interval: stop after N reports (0: never).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Print the last exits of a running VM's vCPU, decoded.
    ///
    /// The kernel records every exit from guest mode in a ring of the last
    /// 512 per vCPU (unless rkvm.ko was loaded with exit_trace=0): time,
    /// hardware exit code and information, guest RIP, time spent in guest
    /// mode, and whether it was handled in the kernel or went to user mode
    /// (and as which KVM exit). Columns: sequence number, time (ns), exit.
    Trace {
        #[command(flatten)]
        which: VmChoice,
        /// The vCPU.
        #[arg(long, default_value_t = 0)]
        vcpu: u32,
        /// Keep printing new exits until the VM is gone.
        #[arg(long)]
        follow: bool,
    },
    /// Run a guest: a Linux bzImage, or a flat test program.
    ///
    /// One vCPU, guest memory from guest physical 0 (--mem MiB), and these
    /// devices, emulated here on the exits that reach userspace:
    ///
    ///   0x3f8   COM1, a 16550 UART on IRQ4: its output is stdout, stdin is
    ///           its input (a terminal is in raw mode for the run; Ctrl-C
    ///           still stops rkvm)
    ///   0x20    the 8259 PIC pair (and 0xa0, 0x4d0), interrupts injected
    ///           with KVM_INTERRUPT and the interrupt-window protocol
    ///   0x40    the 8254 PIT (0x40-0x43), IRQ0; port 0x61 gates channel 2
    ///   0x60    the 8042 keyboard controller (0x60, 0x64), nothing plugged
    ///           in: its reset command is how Linux reboots
    ///   0x70    the CMOS RTC (0x70-0x71), the host's time
    ///   0xf4    debug exit: writing N ends the run with exit status N
    ///   0xf5    writing N pulses IRQ line N (for test guests)
    ///
    /// Hardware a PC guest probes for but rkvm lacks (PCI configuration
    /// ports, COM2-4, DMA, VGA, IDE...) reads as all ones, like an empty ISA
    /// bus, and is counted in the summary; any other port or MMIO address
    /// is reported once and also reads as all ones. Nothing a guest does
    /// there can stop rkvm.
    ///
    /// Exit status: 0 the guest powered off (HLT with nothing to wake it),
    /// N the guest wrote N to port 0xf4, 3 triple fault, 4 the guest
    /// rebooted, 128+signal when stopped by Ctrl-C (130) or SIGTERM (143),
    /// 1 an error (the message says what to do), 2 bad arguments. Exit
    /// counts by reason are printed at the end, --trace-exits prints one
    /// line per exit.
    ///
    /// Examples:
    ///
    ///   rkvm run --kernel bzImage --initrd initramfs.cpio.gz --mem 128
    ///
    ///   rkvm run --flat hello.bin --mode real --device /dev/kvm
    #[command(verbatim_doc_comment)]
    Run {
        /// The KVM device: /dev/rkvm (the rkvm module) or /dev/kvm (real KVM).
        #[arg(long, default_value = "/dev/rkvm")]
        device: PathBuf,
        /// A flat binary, loaded at guest physical 0x1000 and entered there.
        #[arg(long, conflicts_with = "kernel", required_unless_present_any = ["kernel", "restore"])]
        flat: Option<PathBuf>,
        /// A Linux bzImage (x86-64), booted with the 64-bit boot protocol:
        /// zero page with an e820 map, command line, initramfs; no firmware.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// An initramfs (cpio, possibly compressed) for --kernel.
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// The kernel command line for --kernel. There is no local APIC or
        /// IOAPIC (the PIC delivers interrupts): keep "nolapic noapic" to
        /// spare the guest the probing.
        #[arg(long, default_value = "console=ttyS0 nolapic noapic panic=-1")]
        cmdline: String,
        /// CPU mode at entry of a flat program.
        #[arg(long, value_enum, default_value = "real", conflicts_with = "kernel")]
        mode: run::Mode,
        /// Guest memory in MiB, from guest physical 0 [default: 128 with
        /// --kernel, 16 with --flat].
        #[arg(long)]
        mem: Option<usize>,
        /// Print one line per exit that reaches userspace ("rkvm: exit") and,
        /// through /dev/rkvm with debugfs mounted, every exit the kernel
        /// handled before it ("rkvm: kexit", from the kernel's exit ring).
        #[arg(long)]
        trace_exits: bool,
        /// With --trace-exits: the general-purpose registers after each exit
        /// that reaches userspace, and the bytes of each traced
        /// instruction (read through the guest's page tables).
        #[arg(long, requires = "trace_exits")]
        trace_regs: bool,
        /// How guest memory is translated: "tdp" (nested paging, NPT/EPT)
        /// or "shadow" (shadow page tables) [default: the module's, its
        /// parameter tdp]. /dev/rkvm only: real KVM chooses when its module
        /// loads (kvm_amd npt=0).
        #[arg(long, value_enum)]
        mmu: Option<run::MmuMode>,
        /// Where the interrupt controllers are: "user" (rkvm run's own PIC
        /// and PIT), "kernel" (the device's PIC, IOAPIC, local APIC and
        /// PIT: KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2) or "split" (the
        /// device's local APICs, KVM_CAP_SPLIT_IRQCHIP, and rkvm run's PIC,
        /// PIT and IOAPIC); the last two not with rkvm.ko irqchip=0. Not
        /// with --save or --restore.
        #[arg(long, value_enum, default_value = "user", conflicts_with = "restore")]
        irqchip: run::Irqchip,
        /// vCPUs, 1 to 32: vCPU 0 starts, the others wait for the INIT and
        /// SIPI it sends (an MP table tells a Linux guest they are there).
        /// Above 1, only with --irqchip kernel or split, and not with --gdb or
        /// --save.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=32), conflicts_with_all = ["gdb", "save", "restore"])]
        smp: u8,
        /// A disk image for a virtio-blk device (Linux: /dev/vda, vdb, ...);
        /// append ",ro" for a read-only disk. Repeatable.
        #[arg(long, value_name = "FILE[,ro]")]
        disk: Vec<String>,
        /// The guest's console on virtio-console (Linux: hvc0, added to the
        /// command line) rather than COM1; input goes there too.
        #[arg(long)]
        virtio_console: bool,
        /// A virtio entropy device fed from the host's /dev/urandom.
        #[arg(long)]
        virtio_rng: bool,
        /// Serve gdb's remote protocol on 127.0.0.1:PORT; the guest waits
        /// at its first instruction until gdb continues it (gdb: `target
        /// remote :PORT`). Registers, memory by guest-virtual address,
        /// breakpoints (`break`, `hbreak`), watchpoints (4 hardware slots),
        /// single steps, Ctrl-C in gdb. Documentation/gdb.md.
        #[arg(long, value_name = "PORT")]
        gdb: Option<u16>,
        /// Save the guest to FILE and end the run (exit status 0) on
        /// SIGUSR2 or, with --save-after, after that many exits to
        /// userspace: memory, the vCPU's state through the KVM ioctls
        /// (KVM_GET_REGS, _SREGS, _XSAVE or _FPU, _XCRS, _MSRS,
        /// _VCPU_EVENTS, _MP_STATE, _DEBUGREGS, KVM_GET_CLOCK) and the
        /// devices' state. Not with virtio devices or --gdb.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["disk", "virtio_console", "virtio_rng", "gdb"])]
        save: Option<PathBuf>,
        /// With --save: save after this many exits to userspace.
        #[arg(long, value_name = "EXITS", requires = "save")]
        save_after: Option<u64>,
        /// Resume a guest --save wrote, through --device (either KVM
        /// device, whichever the guest was saved from).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["flat", "kernel", "mem", "disk", "virtio_console", "virtio_rng"])]
        restore: Option<PathBuf>,
    },
}

/// Which VM `rkvm stat`/`rkvm trace` look at, and where.
#[derive(clap::Args)]
struct VmChoice {
    /// The VM: its debugfs name ("rkvm-<pid>-<fd>") or the pid of its VMM;
    /// default: all (stat) or the only one running (trace).
    #[arg(long)]
    vm: Option<String>,
    /// Where debugfs is mounted.
    #[arg(long, default_value = debugfs::ROOT)]
    debugfs: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { device, all } => info(&device, all).map(|()| 0),
        Command::Stat {
            which,
            interval,
            count,
        } => observe::stat(&which.debugfs, which.vm.as_deref(), interval, count).map(|()| 0),
        Command::Trace {
            which,
            vcpu,
            follow,
        } => observe::trace(&which.debugfs, which.vm.as_deref(), vcpu, follow).map(|()| 0),
        Command::Run {
            device,
            flat,
            kernel,
            initrd,
            cmdline,
            mode,
            mem,
            trace_exits,
            trace_regs,
            mmu,
            irqchip,
            smp,
            disk,
            virtio_console,
            virtio_rng,
            gdb,
            save,
            save_after,
            restore,
        } => {
            let guest = match (&flat, &kernel, &restore) {
                (Some(flat), _, _) => run::Guest::Flat(flat, mode),
                (None, Some(kernel), _) => run::Guest::Linux {
                    kernel,
                    initrd: initrd.as_deref(),
                    cmdline: &cmdline,
                },
                (None, None, Some(file)) => run::Guest::Restore(file),
                (None, None, None) => return ExitCode::from(2), // clap requires one of them
            };
            let mem_mib = mem.unwrap_or(if kernel.is_some() { 128 } else { 16 });
            let disks = disk
                .iter()
                .map(|d| match d.strip_suffix(",ro") {
                    Some(path) => (PathBuf::from(path), true),
                    None => (PathBuf::from(d), false),
                })
                .collect();
            let virtio = run::VirtioOptions {
                disks,
                console: virtio_console,
                rng: virtio_rng,
            };
            let opts = run::Options {
                device: &device,
                guest,
                mem_mib,
                trace_exits,
                trace_regs,
                mmu,
                irqchip,
                vcpus: smp,
                virtio,
                gdb,
                save: save.as_deref().map(|path| run::Save {
                    path,
                    after_exits: save_after,
                }),
            };
            run::run(&opts).map(|outcome| {
                if let Some(msg) = outcome.message() {
                    eprintln!("rkvm: {msg} (exit status {})", outcome.status());
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

fn info(device: &Path, all: bool) -> error::Result<()> {
    let kvm = run::vm::open_device(device)?;
    println!("device:       {}", device.display());
    let version = kvm.get_api_version();
    println!("api version:  {version}");
    if version != kvm_bindings::KVM_API_VERSION as i32 {
        return Err(error::Error::ApiVersion {
            device: device.into(),
            version,
        });
    }

    let answers: Vec<(&str, i32)> = caps::CAPS
        .iter()
        .map(|&(name, nr)| (name, kvm.check_extension_raw(nr.into())))
        .collect();
    let supported = answers.iter().filter(|(_, v)| *v != 0).count();
    println!(
        "capabilities: {supported} of {} known answered non-zero",
        answers.len()
    );
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
        features
            .usable_backend()
            .unwrap_or("none (no usable SVM or VMX with unrestricted guest)")
    );
    println!("mmu:          {}", mmu_modes(&kvm));
    Ok(())
}

/// The MMU modes the device offers (`KVM_CAP_RKVM_MMU` on the system fd),
/// and the one a new VM gets (the same on a VM fd: the module parameter
/// tdp, which the kernel does not show in sysfs).
fn mmu_modes(kvm: &Kvm) -> String {
    use rkvm_pure::ioctl::{mmu_mode, KVM_CAP_RKVM_MMU};
    let offered = kvm.check_extension_raw(KVM_CAP_RKVM_MMU.into()) as u64;
    if offered == 0 {
        return "chosen by the module (KVM: kvm_amd npt=0 or kvm_intel ept=0 for shadow paging)"
            .into();
    }
    let name = |bit: u64| {
        if bit == mmu_mode::SHADOW {
            "shadow"
        } else {
            "tdp"
        }
    };
    let modes: Vec<_> = [mmu_mode::TDP, mmu_mode::SHADOW]
        .into_iter()
        .filter(|b| offered & b != 0)
        .map(name)
        .collect();
    let default = match kvm.create_vm() {
        Ok(vm) => name(vm.check_extension_raw(KVM_CAP_RKVM_MMU.into()) as u64).to_string(),
        Err(e) => format!("unknown (KVM_CREATE_VM: {e})"),
    };
    format!(
        "{} per VM (--mmu); new VMs: {default} (module parameter tdp)",
        modes.join(", ")
    )
}

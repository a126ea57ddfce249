// SPDX-License-Identifier: GPL-2.0

//! `rkvm run`: a VM with one vCPU, guest memory at guest physical 0, a flat
//! program loaded at 0x1000 and run in real or long mode or a Linux
//! bzImage, devices emulated on the exits that reach userspace.
//!
//! By phase, each a module: `vm` (the device, the VM, its memory and
//! vCPU), `setup` (a flat program and its CPU mode) or `linux` (a bzImage
//! and the boot protocol), `board` (the devices), `exits` (the loop and
//! what each exit goes to), `trace` (`--trace-exits`), `report` (the
//! summaries at the end).

mod aps;
pub mod board;
pub mod exits;
mod linux;
mod mptable;
pub mod report;
mod setup;
mod state;
pub mod trace;
pub mod vm;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use nix::sys::signal::Signal;

pub use setup::Mode;
pub use vm::{Irqchip, MmuMode};

use crate::console::Input;
use crate::error::Result;
use crate::signals;

/// What to run.
pub enum Guest<'a> {
    /// A flat program at 0x1000.
    Flat(&'a Path, Mode),
    /// A Linux bzImage with an optional initramfs and a command line.
    Linux {
        kernel: &'a Path,
        initrd: Option<&'a Path>,
        cmdline: &'a str,
    },
    /// A guest `--save` wrote.
    Restore(&'a Path),
}

/// `--save FILE [--save-after EXITS]`.
pub struct Save<'a> {
    pub path: &'a Path,
    /// Save after this many exits to userspace (else on SIGUSR2 only).
    pub after_exits: Option<u64>,
}

/// What `rkvm run` was asked to do.
pub struct Options<'a> {
    pub device: &'a Path,
    pub guest: Guest<'a>,
    pub mem_mib: usize,
    pub trace_exits: bool,
    pub trace_regs: bool,
    pub mmu: Option<MmuMode>,
    pub irqchip: Irqchip,
    /// `--smp`: vCPUs (1: the BSP alone).
    pub vcpus: u8,
    pub virtio: VirtioOptions,
    /// `--gdb PORT`: serve gdb on this port, the guest stopped until it
    /// says go.
    pub gdb: Option<u16>,
    pub save: Option<Save<'a>>,
}

/// The paravirtual devices of a run (`--disk`, `--virtio-console`,
/// `--virtio-rng`).
#[derive(Default)]
pub struct VirtioOptions {
    /// Disk images, each read-only or not.
    pub disks: Vec<(std::path::PathBuf, bool)>,
    /// The guest's console is virtio-console (hvc0), not COM1.
    pub console: bool,
    /// An entropy device.
    pub rng: bool,
}

/// How the run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The guest wrote this status to the debug-exit port.
    DebugExit(u8),
    /// The guest executed HLT with nothing that could wake it: how a guest
    /// without ACPI powers off.
    Halted,
    /// The guest triple-faulted.
    Shutdown,
    /// The guest asked for a reset (a reboot) through the keyboard controller.
    Reset,
    /// The user stopped the run (SIGINT from Ctrl-C, or SIGTERM).
    Signal(Signal),
    /// gdb killed the guest (`--gdb`).
    Killed,
    /// The guest was saved (`--save`) and the run ended there.
    Saved,
}

impl Outcome {
    /// The status `rkvm run` exits with.
    pub fn status(&self) -> u8 {
        match self {
            Outcome::DebugExit(s) => *s,
            Outcome::Halted | Outcome::Saved => 0,
            Outcome::Shutdown => 3,
            Outcome::Reset => 4,
            Outcome::Signal(sig) => 128 + *sig as u8,
            Outcome::Killed => 128 + Signal::SIGKILL as u8,
        }
    }

    /// What happened, for the user.
    pub fn message(&self) -> Option<String> {
        Some(match self {
            Outcome::DebugExit(_) => return None, // the guest's own verdict
            Outcome::Halted => "the guest halted with nothing left to wake it (powered off)".into(),
            Outcome::Shutdown => "the guest triple-faulted (shutdown); the run is over".into(),
            Outcome::Reset => {
                "the guest asked for a reset (reboot); rkvm does not restart guests".into()
            }
            Outcome::Signal(sig) => format!("stopped by {sig}; the guest did not shut down"),
            Outcome::Killed => "gdb killed the guest".into(),
            Outcome::Saved => return None, // said when saved
        })
    }
}

/// The MP table (`mptable`) that shows a Linux guest its `vcpus` local
/// APICs and its IOAPIC, with the vCPUs' CPUID signature and features, and
/// the virtio devices' IRQs `level` as level-triggered.
fn write_mptable(vm: &vm::Vm, vcpus: u8, level: &[u8]) -> Result<()> {
    use vm_memory::{Bytes, GuestAddress};
    let cpuid = vm
        .vcpu
        .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(crate::error::Error::ioctl("KVM_GET_CPUID2"))?;
    let leaf1 = cpuid
        .as_slice()
        .iter()
        .find(|e| e.function == 1)
        .copied()
        .unwrap_or_default();
    let cpus = mptable::Cpus {
        count: vcpus.max(1),
        signature: leaf1.eax,
        features: leaf1.edx,
    };
    let table = mptable::build(mptable::BASE, cpus, level).ok_or(
        crate::error::Error::KernelIrqchip("too many vCPUs for the MP table"),
    )?;
    vm.mem
        .write_slice(&table, GuestAddress(mptable::BASE))
        .map_err(crate::error::Error::guest_memory("the MP table"))
}

/// Runs a guest as `opts` say, until it or the user ends the run.
pub fn run(opts: &Options<'_>) -> Result<Outcome> {
    let snapshot = match opts.guest {
        Guest::Restore(path) => Some(state::Snapshot::read(path)?),
        _ => None,
    };
    let mem_mib = snapshot
        .as_ref()
        .map_or(Ok(opts.mem_mib), |s| s.mem_mib())?;
    if opts.irqchip.apics_in_kernel() && opts.save.is_some() {
        return Err(crate::error::Error::KernelIrqchip(
            "not with --save (the device's interrupt controllers keep state it does not save)",
        ));
    }
    if opts.vcpus > 1 && !opts.irqchip.apics_in_kernel() {
        return Err(crate::error::Error::SmpNeedsKernelIrqchip);
    }
    let mut vm = vm::Vm::new(opts.device, mem_mib, opts.mmu, opts.irqchip, opts.vcpus)?;
    let virtio = board::virtio_devices(&opts.virtio)?;
    match opts.guest {
        Guest::Restore(_) => {}
        Guest::Flat(path, mode) => setup::load_flat(&vm.vcpu, &vm.mem, path, mode)?,
        Guest::Linux {
            kernel,
            initrd,
            cmdline,
        } => {
            // The devices are announced on the command line; the console
            // named last is /dev/console.
            let mut line = format!("{cmdline}{}", virtio.cmdline());
            if opts.virtio.console {
                line.push_str(" console=hvc0");
            }
            linux::load(&vm.mem, vm.mem_size, &vm.vcpu, kernel, initrd, &line)?;
            if opts.irqchip.apics_in_kernel() {
                write_mptable(&vm, opts.vcpus, &virtio.irqs())?;
            }
        }
    }
    let mut board = board::Board::new(virtio, opts.virtio.console, opts.irqchip)?;
    if let (Some(snapshot), Guest::Restore(path)) = (&snapshot, &opts.guest) {
        let started = Instant::now();
        let skipped = snapshot.restore(&mut vm, &mut board)?;
        eprintln!(
            "rkvm: restored {} through {} in {} µs",
            path.display(),
            opts.device.display(),
            started.elapsed().as_micros()
        );
        if !skipped.is_empty() {
            eprintln!(
                "rkvm: restore: {} does not offer these MSRs, left as they were: {}",
                opts.device.display(),
                skipped
                    .iter()
                    .map(|m| format!("{m:#x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
    }

    let kernel_stats = report::KernelStats::open(&vm);
    let mut stats = report::Stats::default();
    // SAFETY: the kvm_run mapping belongs to `vm.vcpu`, which outlives
    // `armed` (declared after it, so dropped first).
    let armed = unsafe { signals::Armed::new(vm.vcpu.get_kvm_run()) }?;
    let mut input = Input::stdin(signals::wake_vcpu);
    let mut trace = trace::Trace::new(opts.trace_exits, opts.trace_regs, vm.fd.as_raw_fd());
    let mut state = exits::LoopState::new()?;
    state.save_after = opts
        .save
        .as_ref()
        .map(|s| s.after_exits.unwrap_or(u64::MAX));
    let aps = (!vm.aps.is_empty()).then(|| {
        let (aps, requests) = aps::Aps::start(std::mem::take(&mut vm.aps));
        state.ap_requests = Some(requests);
        aps
    });
    let started = Instant::now();
    let outcome = match opts.gdb {
        Some(port) => crate::gdb::serve(
            port,
            crate::gdb::Machine {
                vm: &mut vm,
                board: &mut board,
                input: &mut input,
                stats: &mut stats,
                trace: &mut trace,
                state: &mut state,
            },
        ),
        None => exits::run_loop(
            &mut vm, &mut board, &mut input, &mut stats, &mut trace, &mut state, None,
        )
        .and_then(|stop| match (stop, &opts.save) {
            (exits::Stop::Save, Some(save)) => {
                let started = Instant::now();
                let size = state::save(save.path, &mut vm, &board)?;
                eprintln!(
                    "rkvm: saved the guest to {} ({} KiB) after {} exits to userspace, in {} µs",
                    save.path.display(),
                    size >> 10,
                    state.exits,
                    started.elapsed().as_micros()
                );
                Ok(Outcome::Saved)
            }
            (stop, _) => Ok(match stop {
                exits::Stop::Over(outcome) => outcome,
                // Without a debugger the loop returns only when the run is over.
                exits::Stop::Debug(_) | exits::Stop::Attention | exits::Stop::Save => {
                    Outcome::Halted
                }
            }),
        }),
    };
    let wall = started.elapsed();
    if let Some(aps) = aps {
        aps.stop(state.ap_requests.take());
    }
    drop(armed);
    trace.end(&vm.vcpu);
    report::print(&stats, &kernel_stats, wall, &vm, &board);
    outcome
}

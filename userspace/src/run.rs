// SPDX-License-Identifier: GPL-2.0

//! `rkvm run`: a VM with one vCPU, guest memory at guest physical 0, a flat
//! program loaded at 0x1000 and run in real or long mode, devices emulated
//! on the exits that reach userspace.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_enable_cap, kvm_segment, kvm_userspace_memory_region, CpuId,
    KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use std::os::fd::{AsRawFd, RawFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::console::Input;
use crate::devices::bus::BusError;
use crate::devices::{
    cmos::{self, Cmos, CmosPorts},
    debug_exit::{self, DebugExit, IrqPort},
    i8042::{self, I8042Ports, I8042},
    pic::{Pic, PicPorts},
    pit::{self, Pit, PitPorts},
    serial::{self, PicLine, Uart},
    virtio, PortBus,
};
use crate::signals::{self, Kick};
use crate::{debugfs, kvmstats};
use nix::sys::signal::Signal;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where a flat program is loaded and starts.
pub const LOAD_ADDR: u64 = 0x1000;
/// Long mode: page tables (PML4, PDPT, PD) identity-mapping the first GiB.
const PML4: u64 = 0x10_0000;
/// Initial stack pointer.
const STACK: u64 = 0x8_0000;

/// The CPU mode a flat program starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// 16-bit real mode, CS:IP = 0000:1000.
    Real,
    /// 64-bit long mode, identity-mapped first GiB, RIP = 0x1000.
    Long,
}

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
}

/// What `rkvm run` was asked to do.
pub struct Options<'a> {
    pub device: &'a Path,
    pub guest: Guest<'a>,
    pub mem_mib: usize,
    pub trace_exits: bool,
    pub trace_regs: bool,
    pub mmu: Option<MmuMode>,
    pub virtio: VirtioOptions,
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

/// The virtio-mmio devices the options ask for.
fn virtio_devices(opts: &VirtioOptions) -> Result<virtio::Bus, String> {
    let mut bus = virtio::Bus::default();
    let mut add = |dev: Box<dyn virtio::Transport>, what: &str| {
        bus.add(dev)
            .map(|_| ())
            .ok_or_else(|| format!("too many virtio devices: no interrupt line left for {what}"))
    };
    for (i, (path, read_only)) in opts.disks.iter().enumerate() {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| format!("--disk {}: {e}", path.display()))?;
        let disk = virtio::blk::Blk::new(file, *read_only, &format!("rkvm-disk{i}"))
            .map_err(|e| format!("--disk {}: {e}", path.display()))?;
        add(Box::new(virtio::Mmio::new(disk)), "a disk")?;
    }
    if opts.console {
        add(
            Box::new(virtio::Mmio::new(virtio::console::Console::new(
                std::io::stdout(),
            ))),
            "the console",
        )?;
    }
    if opts.rng {
        let source =
            std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?;
        add(
            Box::new(virtio::Mmio::new(virtio::rng::Rng::new(source))),
            "the entropy device",
        )?;
    }
    Ok(bus)
}

/// The MMU mode of `--mmu` (rkvm's `KVM_CAP_RKVM_MMU`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum MmuMode {
    /// Two-dimensional paging: NPT (AMD) or EPT (Intel).
    Tdp,
    /// Shadow page tables.
    Shadow,
}

/// `KVM_ENABLE_CAP(KVM_CAP_RKVM_MMU)`: chooses the VM's MMU mode, before
/// its first vCPU.
fn choose_mmu(kvm: &Kvm, vm: &VmFd, mode: MmuMode, device: &Path) -> Result<(), String> {
    use rkvm_pure::ioctl::{mmu_mode, KVM_CAP_RKVM_MMU};
    let bit = match mode {
        MmuMode::Tdp => mmu_mode::TDP,
        MmuMode::Shadow => mmu_mode::SHADOW,
    };
    let offered = kvm.check_extension_raw(KVM_CAP_RKVM_MMU.into()) as u64;
    if offered == 0 {
        return Err(format!(
            "{} cannot choose the MMU per VM (real KVM chooses when its module loads: kvm_amd npt=0 or kvm_intel ept=0 for shadow paging)",
            device.display()
        ));
    }
    if offered & bit == 0 {
        return Err(format!(
            "{} does not offer {} paging",
            device.display(),
            if bit == mmu_mode::SHADOW {
                "shadow"
            } else {
                "two-dimensional"
            }
        ));
    }
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_RKVM_MMU,
        ..Default::default()
    };
    cap.args[0] = bit;
    vm.enable_cap(&cap)
        .map_err(|e| format!("KVM_ENABLE_CAP(KVM_CAP_RKVM_MMU): {e}"))
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
}

impl Outcome {
    /// The status `rkvm run` exits with.
    pub fn status(&self) -> u8 {
        match self {
            Outcome::DebugExit(s) => *s,
            Outcome::Halted => 0,
            Outcome::Shutdown => 3,
            Outcome::Reset => 4,
            Outcome::Signal(sig) => 128 + *sig as u8,
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
        })
    }
}

pub fn run(opts: &Options<'_>) -> Result<Outcome, String> {
    let mem_size = opts
        .mem_mib
        .checked_mul(1 << 20)
        .ok_or("--mem is too large")?;
    if mem_size < 2 << 20 {
        return Err("--mem must be at least 2 (MiB)".into());
    }
    if mem_size as u64 > TSS_ADDR {
        return Err(format!(
            "--mem must be at most {} (MiB): RAM starts at 0 and ends below the TSS",
            TSS_ADDR >> 20
        ));
    }

    let kvm = crate::open_device(opts.device)?;
    let vm = kvm.create_vm().map_err(|e| {
        let hint = match e.errno() {
            nix::libc::EBUSY => " (another hypervisor owns the CPU's virtualization: unload kvm_amd/kvm_intel, or use --device /dev/kvm)",
            nix::libc::ENOMEM => " (the host is short of memory)",
            _ => "",
        };
        format!("KVM_CREATE_VM on {}: {e}{hint}", opts.device.display())
    })?;
    if let Some(mode) = opts.mmu {
        choose_mmu(&kvm, &vm, mode, opts.device)?;
    }
    // As QEMU does: guest physical space (below 4 GiB, above any RAM here)
    // for the TSS kvm_intel needs to run real mode without unrestricted
    // guest (ept=0). rkvm needs none and accepts it.
    vm.set_tss_address(TSS_ADDR as usize)
        .map_err(|e| format!("KVM_SET_TSS_ADDR: {e}"))?;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mem_size)]).map_err(|e| {
        format!(
            "cannot allocate {} MiB of guest memory: {e} (try a smaller --mem)",
            opts.mem_mib
        )
    })?;
    add_memory(&vm, &mem)?;

    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    // Real KVM allows CR4.PAE and long mode only if the guest's CPUID says
    // so: hand the vCPU what the device supports, where it can tell.
    if let Ok(cpuid) = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES) {
        let cpuid = CpuId::from_entries(&without_xsave(cpuid.as_slice()))
            .map_err(|e| format!("CPUID: {e:?}"))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    }
    let mut virtio_bus = virtio_devices(&opts.virtio)?;
    match opts.guest {
        Guest::Flat(path, mode) => {
            let program =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if LOAD_ADDR as usize + program.len() > 0x8_0000 {
                return Err(format!(
                    "{} is too large: a flat program must fit below 0x80000",
                    path.display()
                ));
            }
            mem.write_slice(&program, GuestAddress(LOAD_ADDR))
                .map_err(|e| format!("loading the program: {e}"))?;
            match mode {
                Mode::Real => setup_real_mode(&vcpu)?,
                Mode::Long => setup_long_mode(&vcpu, &mem)?,
            }
        }
        Guest::Linux {
            kernel,
            initrd,
            cmdline,
        } => {
            // The devices are announced on the command line; the console
            // named last is /dev/console.
            let mut line = format!("{cmdline}{}", virtio_bus.cmdline());
            if opts.virtio.console {
                line.push_str(" console=hvc0");
            }
            crate::linux::load(&mem, mem_size as u64, &vcpu, kernel, initrd, &line)?;
        }
    }

    let status = Rc::new(Cell::new(None));
    let pic = Rc::new(RefCell::new(Pic::new()));
    let pit = Rc::new(RefCell::new(Pit::default()));
    let uart = Rc::new(RefCell::new(Uart::new(
        PicLine {
            pic: pic.clone(),
            irq: serial::IRQ,
        },
        std::io::stdout(),
    )));
    let i8042 = Rc::new(RefCell::new(I8042::new(pic.clone())));
    let mut bus = port_bus(&pic, &pit, &uart, &i8042, &status).map_err(|e| e.to_string())?;

    // Both devices have the binary statistics (KVM since 5.14); a device
    // without them just gets no kernel-side summary.
    let kernel_stats = (
        kvmstats::StatsFile::open(&vcpu).ok(),
        kvmstats::StatsFile::open(&vm).ok(),
    );
    let mut stats = Stats::default();
    // SAFETY: the kvm_run mapping belongs to `vcpu`, which outlives `armed`
    // (declared after it, so dropped first).
    let armed = unsafe { signals::Armed::new(vcpu.get_kvm_run()) }?;
    let input = Input::stdin(signals::wake_vcpu);
    // The kernel's own record of every exit, when it keeps one we can read.
    let kernel_trace = if opts.trace_exits {
        debugfs::own_vm(Path::new(debugfs::ROOT), vm.as_raw_fd())
            .map(|dir| debugfs::TraceReader::new(&dir.join("vcpu0")))
    } else {
        None
    };
    let devices = Devices {
        bus: &mut bus,
        virtio: &mut virtio_bus,
        virtio_console: opts.virtio.console,
        pic: &pic,
        pit: &pit,
        uart: &uart,
        i8042: &i8042,
        input,
        status: &status,
        kernel_trace,
    };
    let trace = Trace {
        exits: opts.trace_exits,
        regs: opts.trace_regs,
        mem: &mem,
    };
    let started = Instant::now();
    let outcome = run_loop(&mut vcpu, devices, &mut stats, &trace);
    let wall = started.elapsed();
    drop(armed);
    if opts.trace_exits {
        trace_final_state(&vcpu);
    }
    stats.print();
    print_kernel_stats(&kernel_stats, wall, uses_shadow_paging(&vm));
    if let Some(absent) = bus.absent_summary() {
        eprintln!("rkvm: absent hardware the guest probed (answered as empty): {absent}");
    }
    for line in virtio_bus.summary() {
        eprintln!("rkvm: {line}");
    }
    outcome
}

/// The PC's ports: rkvm's devices, and the absent hardware guests probe.
fn port_bus(
    pic: &Rc<RefCell<Pic>>,
    pit: &Rc<RefCell<Pit>>,
    uart: &Rc<RefCell<Uart<std::io::Stdout>>>,
    i8042: &Rc<RefCell<I8042>>,
    status: &Rc<Cell<Option<u8>>>,
) -> Result<PortBus, BusError> {
    let mut bus = PortBus::ports();
    bus.add_port(0x3f8, 8, "COM1", uart.clone())?;
    for (base, name) in [
        (0x20, "PIC master"),
        (0xa0, "PIC slave"),
        (0x4d0, "PIC edge/level control"),
    ] {
        let pic = pic.clone();
        bus.add_port(base, 2, name, PicPorts { pic, base })?;
    }
    bus.add_port(debug_exit::PORT, 1, "debug exit", DebugExit(status.clone()))?;
    bus.add_port(
        debug_exit::IRQ_PORT,
        1,
        "IRQ test port",
        IrqPort(pic.clone()),
    )?;
    for (base, len, name) in [
        (pit::PORT_BASE, 4, "PIT"),
        (pit::PORT_61, 1, "PIT port 0x61"),
    ] {
        let pit = pit.clone();
        bus.add_port(
            base,
            len,
            name,
            PitPorts {
                pit,
                base,
                now: now_ns,
            },
        )?;
    }
    bus.add_port(cmos::PORT, 2, "CMOS RTC", CmosPorts(Cmos::default()))?;
    for (base, name) in [
        (i8042::DATA_PORT, "i8042 data"),
        (i8042::COMMAND_PORT, "i8042 command"),
    ] {
        let dev = i8042.clone();
        bus.add_port(base, 1, name, I8042Ports { dev, base })?;
    }
    bus.add_absent_pc_hardware()?;
    Ok(bus)
}

fn add_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), String> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| format!("guest memory: {e}"))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the memory belongs to `mem`, which outlives the VM in `run`.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
    }
    Ok(())
}

/// Where `KVM_SET_TSS_ADDR` puts kvm_intel's three TSS pages (QEMU's choice).
const TSS_ADDR: u64 = 0xfffb_d000;

fn setup_real_mode(vcpu: &VcpuFd) -> Result<(), String> {
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    set_entry(vcpu)
}

fn setup_long_mode(vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> Result<(), String> {
    enter_long_mode(vcpu, mem, PML4, 8, None)?;
    set_entry(vcpu)
}

/// Puts `vcpu` in 64-bit mode: page tables at `pml4` (three pages) that
/// identity-map the first GiB with 2 MiB pages, flat code and data segments
/// with selectors `cs` and `cs + 8`, and, given `gdt`, a GDT there whose
/// descriptors match those segments (entries below `cs` null).
pub fn enter_long_mode(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    pml4: u64,
    cs: u16,
    gdt: Option<u64>,
) -> Result<(), String> {
    let write = |addr: u64, val: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(|e| format!("guest memory: {e}"))
    };
    write(pml4, (pml4 + 0x1000) | 3)?;
    write(pml4 + 0x1000, (pml4 + 0x2000) | 3)?;
    for i in 0..512u64 {
        write(pml4 + 0x2000 + i * 8, (i << 21) | 0x83)?; // 2 MiB, present, writable
    }
    let ds = cs + 8;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: cs,
        type_: 0xb,
        present: 1,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment {
        selector: ds,
        type_: 3,
        l: 0,
        db: 1,
        ..code
    };
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    if let Some(base) = gdt {
        for sel in (0..cs).step_by(8) {
            write(base + u64::from(sel), 0)?;
        }
        write(base + u64::from(cs), 0x00af_9b00_0000_ffff)?; // 64-bit code, DPL 0
        write(base + u64::from(ds), 0x00cf_9300_0000_ffff)?; // 4 GiB data, DPL 0
        sregs.gdt.base = base;
        sregs.gdt.limit = ds + 7;
    }
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.cr3 = pml4;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 0x8000_0011; // PG, ET, PE
    sregs.efer = (1 << 8) | (1 << 10); // LME, LMA
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))
}

fn set_entry(vcpu: &VcpuFd) -> Result<(), String> {
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = LOAD_ADDR;
    regs.rsp = STACK;
    regs.rflags = 2;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))
}

/// What the kernel counted (`KVM_GET_STATS_FD`), under KVM's names.
/// Whether the VM runs on rkvm's shadow page tables (`KVM_CAP_RKVM_MMU` on
/// the VM fd; real KVM answers 0).
fn uses_shadow_paging(vm: &VmFd) -> bool {
    use rkvm_pure::ioctl::{mmu_mode, KVM_CAP_RKVM_MMU};
    vm.check_extension_raw(KVM_CAP_RKVM_MMU.into()) as u64 == mmu_mode::SHADOW
}

fn print_kernel_stats(
    (vcpu, vm): &(Option<kvmstats::StatsFile>, Option<kvmstats::StatsFile>),
    wall: Duration,
    shadow: bool,
) {
    const VCPU: [(&str, &str); 10] = [
        ("exits", "exits"),
        ("io_exits", "io"),
        ("mmio_exits", "mmio"),
        ("halt_exits", "hlt"),
        ("irq_exits", "host interrupts"),
        ("irq_window_exits", "irq windows"),
        ("signal_exits", "signals"),
        ("irq_injections", "interrupts injected"),
        ("insn_emulation", "instructions emulated"),
        ("pf_fixed", "page faults fixed"),
    ];
    const VM: [(&str, &str); 3] = [
        ("pages_4k", "4 KiB"),
        ("pages_2m", "2 MiB"),
        ("pages_1g", "1 GiB"),
    ];
    // What only shadow paging counts (rkvm's names are KVM's).
    const SHADOW: [(&str, &str); 3] = [
        ("pf_guest", "guest page faults reflected"),
        ("invlpg", "INVLPG"),
        ("tlb_flush", "shadow flushes"),
    ];
    if let Some(vcpu) = vcpu {
        let values = vcpu.read();
        eprintln!(
            "rkvm: vCPU statistics from the kernel: {}",
            kvmstats::summary(&values, &VCPU)
        );
        if shadow {
            eprintln!(
                "rkvm: shadow paging: {}",
                kvmstats::summary(&values, &SHADOW)
            );
        }
        if let Some(split) = time_split(&values, wall) {
            eprintln!("rkvm: {split}");
        }
    }
    // The nested page table's leaves (none with shadow paging).
    if let Some(vm) = vm.as_ref().filter(|_| !shadow) {
        eprintln!(
            "rkvm: guest memory mapped by the kernel in pages of {}",
            kvmstats::summary(&vm.read(), &VM)
        );
    }
}

/// Where the run's time went, from rkvm's `guest_time_ns` and
/// `host_time_ns` (KVM has no such statistics: `None` there).
fn time_split(values: &[(&str, u64)], wall: Duration) -> Option<String> {
    let get = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let (guest, host) = (get("guest_time_ns")?, get("host_time_ns")?);
    let wall_ns = wall.as_nanos().max(1) as u64;
    let user = wall_ns.saturating_sub(guest + host);
    let pct = |ns: u64| ns as f64 * 100.0 / wall_ns as f64;
    let secs = |ns: u64| ns as f64 / 1e9;
    Some(format!(
        "time: {:.2} s in all, guest mode {:.2} s ({:.0} %), kernel {:.2} s ({:.0} %), user mode and elsewhere {:.2} s ({:.0} %)",
        secs(wall_ns),
        secs(guest),
        pct(guest),
        secs(host),
        pct(host),
        secs(user),
        pct(user)
    ))
}

/// Exit counts by reason, printed when the run ends.
#[derive(Default)]
struct Stats(BTreeMap<&'static str, u64>);

impl Stats {
    fn count(&mut self, reason: &'static str) {
        *self.0.entry(reason).or_default() += 1;
    }

    fn print(&self) {
        let total: u64 = self.0.values().sum();
        let parts: Vec<String> = self.0.iter().map(|(r, n)| format!("{r} {n}")).collect();
        eprintln!("rkvm: {total} exits to userspace: {}", parts.join(", "));
    }
}

/// What the run loop serves exits with.
struct Devices<'a> {
    bus: &'a mut PortBus,
    /// The virtio-mmio devices.
    virtio: &'a mut virtio::Bus,
    /// Console input goes to virtio-console rather than COM1.
    virtio_console: bool,
    pic: &'a RefCell<Pic>,
    pit: &'a RefCell<Pit>,
    uart: &'a RefCell<Uart<std::io::Stdout>>,
    i8042: &'a RefCell<I8042>,
    input: Input,
    status: &'a Cell<Option<u8>>,
    kernel_trace: Option<debugfs::TraceReader>,
}

/// Nanoseconds since the first call: the clock of the emulated devices.
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

nix::ioctl_write_ptr!(
    kvm_interrupt,
    kvm_bindings::KVMIO,
    0x86,
    kvm_bindings::kvm_interrupt
);

/// Before each `KVM_RUN`: if the PIC raises INTR, inject its vector when the
/// vCPU can take it, else ask for an interrupt-window exit (the protocol of
/// a VMM without an in-kernel irqchip).
fn inject_interrupt(vcpu: &mut VcpuFd, pic: &RefCell<Pic>) -> Result<(), String> {
    let mut pic = pic.borrow_mut();
    let ready = vcpu.get_kvm_run().ready_for_interrupt_injection != 0;
    let mut want_window = false;
    if pic.interrupt_pending() {
        if ready {
            if let Some(vector) = pic.acknowledge() {
                let irq = kvm_bindings::kvm_interrupt {
                    irq: u32::from(vector),
                };
                // SAFETY: KVM_INTERRUPT reads one `struct kvm_interrupt`
                // from the pointer, which is valid for the call.
                unsafe { kvm_interrupt(vcpu.as_raw_fd(), &irq) }
                    .map_err(|e| format!("KVM_INTERRUPT: {e}"))?;
            }
            want_window = pic.interrupt_pending();
        } else {
            want_window = true;
        }
    }
    vcpu.get_kvm_run().request_interrupt_window = u8::from(want_window);
    Ok(())
}

/// What `--trace-exits` (and `--trace-regs`) print.
struct Trace<'a> {
    exits: bool,
    regs: bool,
    mem: &'a GuestMemoryMmap,
}

fn run_loop(
    vcpu: &mut VcpuFd,
    dev: Devices<'_>,
    stats: &mut Stats,
    trace: &Trace<'_>,
) -> Result<Outcome, String> {
    let Devices {
        bus,
        virtio,
        virtio_console,
        pic,
        pit,
        uart,
        i8042,
        mut input,
        status,
        mut kernel_trace,
    } = dev;
    let set_irq = |irq: u8, level: bool| pic.borrow_mut().set_irq(irq, level);
    let mut kick = Kick::new()?;
    let mut halted = false;
    let mut internal_error = false;
    loop {
        if let Some(signal) = signals::stop_signal() {
            return Ok(Outcome::Signal(signal));
        }
        if pit.borrow_mut().poll_irq0(now_ns()) > 0 {
            pic.borrow_mut().pulse_irq(0);
        }
        if virtio_console {
            input.feed(|bytes| virtio.receive(bytes));
        } else {
            input.feed(|bytes| uart.borrow_mut().receive(bytes));
        }
        virtio.poll(trace.mem, set_irq);
        if halted {
            // HLT: an interrupt to deliver wakes the guest. Otherwise, with
            // interrupts on, wait for what could raise one (the timer,
            // console input); with nothing that can, the run is over.
            if pic.borrow().interrupt_pending() {
                halted = false;
            } else {
                let if_flag = vcpu.get_kvm_run().if_flag != 0;
                let timer = pit.borrow().next_irq0(now_ns());
                let typing = input.may_have_more()
                    && (virtio_console || uart.borrow().rx_interrupt_enabled());
                if !if_flag || (timer.is_none() && !typing) {
                    return Ok(Outcome::Halted);
                }
                kick.arm(timer.map(|at| at.saturating_sub(now_ns())));
                signals::wait_for_wakeup();
                signals::clear_wakeup();
                continue;
            }
        }
        inject_interrupt(vcpu, pic)?;
        kick.arm(
            pit.borrow()
                .next_irq0(now_ns())
                .map(|at| at.saturating_sub(now_ns())),
        );
        let vcpu_fd = vcpu.as_raw_fd();
        let result = vcpu.run();
        signals::clear_wakeup();
        if let Some(reader) = kernel_trace.as_mut() {
            print_kernel_exits(reader, trace.regs.then_some((vcpu_fd, trace.mem)));
        }
        let exit = match result {
            Ok(exit) => exit,
            // A signal (the timer, input, Ctrl-C): deal with it, then go on.
            Err(e) if e.errno() == nix::libc::EINTR => {
                stats.count("intr");
                continue;
            }
            Err(e) => return Err(format!("KVM_RUN: {e}")),
        };
        let (reason, line) = describe(&exit);
        stats.count(reason);
        if trace.exits {
            eprintln!("rkvm: exit {reason:<6} {line}");
        }
        if trace.regs {
            trace_registers(vcpu_fd, "       ");
        }
        match exit {
            VcpuExit::IoOut(port, data) => bus.write(port, data),
            VcpuExit::IoIn(port, data) => bus.read(port, data),
            VcpuExit::MmioRead(addr, data) => virtio.read(addr, data),
            VcpuExit::MmioWrite(addr, data) => virtio.write(addr, data, trace.mem, set_irq),
            VcpuExit::IrqWindowOpen => {} // injected before the next entry
            VcpuExit::Hlt => halted = true,
            VcpuExit::Shutdown => return Ok(Outcome::Shutdown),
            VcpuExit::FailEntry(reason, cpu) => {
                return Err(format!(
                    "the hardware refused the guest state (reason {reason:#x}, cpu {cpu})"
                ));
            }
            VcpuExit::InternalError => internal_error = true,
            other => return Err(format!("unexpected exit: {other:?}")),
        }
        if let Some(s) = status.get() {
            return Ok(Outcome::DebugExit(s));
        }
        if i8042.borrow().reset_requested() {
            return Ok(Outcome::Reset);
        }
        if internal_error {
            return Err(describe_internal_error(vcpu));
        }
    }
}

/// The exits the kernel recorded since the last call, one line each; with
/// `insn`, the bytes at each exit's RIP too.
fn print_kernel_exits(reader: &mut debugfs::TraceReader, insn: Option<(RawFd, &GuestMemoryMmap)>) {
    match reader.read_new() {
        Ok((records, lost)) => {
            if lost > 0 {
                eprintln!("rkvm: kexit ... {lost} exits overwritten before they were read");
            }
            for r in &records {
                let bytes = insn.and_then(|(vcpu, mem)| instruction_bytes(vcpu, mem, r.rip));
                let bytes = bytes
                    .map(|b| format!(" insn={}", hex_bytes(&b)))
                    .unwrap_or_default();
                eprintln!("rkvm: kexit {}{bytes}", rkvm_pure::trace::describe(r));
            }
        }
        Err(e) => eprintln!("rkvm: kexit (cannot read the kernel's exit trace: {e})"),
    }
}

/// The supported CPUID without XSAVE and the features that need it (leaf 1
/// XSAVE, OSXSAVE, AVX, F16C; leaf 7 AVX2; leaf 0xd), so that a guest sees
/// the same kind of CPU through /dev/kvm as through /dev/rkvm, which does not
/// switch the guest's XCR0 yet. Through kvm_amd nested in QEMU, Linux also
/// finds the XSAVE leaves inconsistent ("x86/fpu: XSAVE disabled") and then
/// oopses early: a regression `rkvm:linux`/`kvm:linux` in the test VM guard.
fn without_xsave(entries: &[kvm_cpuid_entry2]) -> Vec<kvm_cpuid_entry2> {
    entries
        .iter()
        .filter(|e| e.function != 0xd)
        .map(|e| {
            let mut e = *e;
            match (e.function, e.index) {
                (1, _) => e.ecx &= !((1 << 26) | (1 << 27) | (1 << 28) | (1 << 29)),
                (7, 0) => e.ebx &= !(1 << 5),
                _ => {}
            }
            e
        })
        .collect()
}

/// `KVM_EXIT_INTERNAL_ERROR`, with its suberror, data and the guest's RIP.
fn describe_internal_error(vcpu: &mut VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    // SAFETY: the exit reason was KVM_EXIT_INTERNAL_ERROR, so `internal` is
    // the member of the exit union the kernel filled.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    let data: Vec<String> = internal.data[..n]
        .iter()
        .map(|d| format!("{d:#x}"))
        .collect();
    let what = match internal.suberror {
        1 => "an instruction the hypervisor could not emulate",
        2 => "an exception while delivering an exception",
        3 => "an exit while delivering an event",
        4 => "an exit reason the hypervisor does not handle",
        _ => "an internal error",
    };
    let rip = vcpu
        .get_regs()
        .map(|r| format!("{:#x}", r.rip))
        .unwrap_or_else(|_| "?".into());
    format!(
        "the hypervisor stopped the guest: {what} (KVM_EXIT_INTERNAL_ERROR, suberror {}, data [{}], rip {rip})",
        internal.suberror,
        data.join(", ")
    )
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Up to 15 bytes (the longest x86 instruction) at `rip` in the code
/// segment, read through the guest's page tables as they are now.
fn instruction_bytes(vcpu: RawFd, mem: &GuestMemoryMmap, rip: u64) -> Option<Vec<u8>> {
    use rkvm_pure::walk::{translate, Paging};
    let mut sregs = kvm_bindings::kvm_sregs::default();
    // SAFETY: KVM_GET_SREGS fills one `struct kvm_sregs`, valid for the call.
    unsafe { kvm_get_sregs(vcpu, &mut sregs) }.ok()?;
    let mode = Paging::of(sregs.cr0, sregs.cr4, sregs.efer);
    let long = mode == Paging::Long && sregs.cs.l != 0;
    let linear = if long {
        rip
    } else {
        sregs.cs.base.wrapping_add(rip)
    };
    let read_entry = |gpa: u64, size: u8| match size {
        4 => mem.read_obj::<u32>(GuestAddress(gpa)).ok().map(u64::from),
        _ => mem.read_obj::<u64>(GuestAddress(gpa)).ok(),
    };
    let mut out = Vec::with_capacity(15);
    while out.len() < 15 {
        let at = linear.wrapping_add(out.len() as u64);
        let gpa = translate(mode, sregs.cr3, at, read_entry)?;
        let in_page = (0x1000 - (at & 0xfff)) as usize;
        let mut chunk = vec![0u8; in_page.min(15 - out.len())];
        mem.read_slice(&mut chunk, GuestAddress(gpa)).ok()?;
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

// By fd: a `VcpuExit` holds the `VcpuFd` borrowed while the trace reads them.
nix::ioctl_read!(
    kvm_get_regs,
    kvm_bindings::KVMIO,
    0x81,
    kvm_bindings::kvm_regs
);
nix::ioctl_read!(
    kvm_get_sregs,
    kvm_bindings::KVMIO,
    0x83,
    kvm_bindings::kvm_sregs
);

/// `--trace-regs`: the general-purpose registers, two lines.
fn trace_registers(vcpu: RawFd, indent: &str) {
    let mut r = kvm_bindings::kvm_regs::default();
    // SAFETY: KVM_GET_REGS fills one `struct kvm_regs`, valid for the call.
    if unsafe { kvm_get_regs(vcpu, &mut r) }.is_ok() {
        eprintln!(
            "rkvm: {indent}rip={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}",
            r.rip, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi
        );
        eprintln!(
            "rkvm: {indent}rsp={:#x} rbp={:#x} r8={:#x} r9={:#x} r10={:#x} r11={:#x} r12={:#x} r13={:#x} r14={:#x} r15={:#x}",
            r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15
        );
    }
}

/// With `--trace-exits`: the registers at the end, so that two runs (through
/// /dev/kvm and /dev/rkvm) can be compared to the last bit.
fn trace_final_state(vcpu: &VcpuFd) {
    match vcpu.get_regs() {
        Ok(r) => {
            eprintln!(
                "rkvm: final rip={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x}",
                r.rip, r.rflags, r.rax, r.rbx, r.rcx, r.rdx
            );
            eprintln!(
                "rkvm: final rsi={:#x} rdi={:#x} rsp={:#x} rbp={:#x} r8={:#x} r9={:#x}",
                r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9
            );
        }
        Err(e) => eprintln!("rkvm: KVM_GET_REGS: {e}"),
    }
}

/// The exit's reason and a readable line about it.
fn describe(exit: &VcpuExit<'_>) -> (&'static str, String) {
    let hex = |d: &[u8]| {
        d.iter()
            .rev()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    match exit {
        VcpuExit::IoOut(port, d) => (
            "io",
            format!("out port={port:#06x} size={} data=0x{}", d.len(), hex(d)),
        ),
        VcpuExit::IoIn(port, d) => ("io", format!("in  port={port:#06x} size={}", d.len())),
        VcpuExit::MmioWrite(a, d) => (
            "mmio",
            format!("write addr={a:#x} size={} data=0x{}", d.len(), hex(d)),
        ),
        VcpuExit::MmioRead(a, d) => ("mmio", format!("read  addr={a:#x} size={}", d.len())),
        VcpuExit::Hlt => ("hlt", String::new()),
        VcpuExit::IrqWindowOpen => ("irq_window", String::new()),
        VcpuExit::Shutdown => ("shutdown", String::new()),
        VcpuExit::FailEntry(r, cpu) => ("fail_entry", format!("reason={r:#x} cpu={cpu}")),
        VcpuExit::InternalError => ("internal_error", String::new()),
        _ => ("other", format!("{exit:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, ebx: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx,
            ecx,
            ..Default::default()
        }
    }

    #[test]
    fn the_pc_ports_do_not_overlap() {
        let pic = Rc::new(RefCell::new(Pic::new()));
        let line = PicLine {
            pic: pic.clone(),
            irq: serial::IRQ,
        };
        let uart = Rc::new(RefCell::new(Uart::new(line, std::io::stdout())));
        let i8042 = Rc::new(RefCell::new(I8042::new(pic.clone())));
        let pit = Rc::new(RefCell::new(Pit::default()));
        let status = Rc::new(Cell::new(None));
        let mut bus = port_bus(&pic, &pit, &uart, &i8042, &status).unwrap();
        bus.write(debug_exit::PORT, &[7]);
        assert_eq!(status.get(), Some(7));
        let mut b = [0];
        bus.read(0x2f8, &mut b);
        assert_eq!(b, [0xff]);
        assert_eq!(bus.absent_summary().as_deref(), Some("COM2 (1)"));
    }

    #[test]
    fn time_split_adds_up() {
        let values = [
            ("guest_time_ns", 600_000_000),
            ("host_time_ns", 100_000_000),
        ];
        assert_eq!(
            time_split(&values, Duration::from_secs(1)).as_deref(),
            Some("time: 1.00 s in all, guest mode 0.60 s (60 %), kernel 0.10 s (10 %), user mode and elsewhere 0.30 s (30 %)")
        );
        assert_eq!(
            time_split(&[("exits", 1)], Duration::from_secs(1)),
            None,
            "KVM has no time statistics"
        );
    }

    #[test]
    fn guests_see_no_xsave_through_either_device() {
        let all = u32::MAX;
        let out = without_xsave(&[
            entry(1, 0, all, all),
            entry(7, 0, all, all),
            entry(0xd, 0, 7, 7),
            entry(0xd, 1, 1, 1),
        ]);
        assert_eq!(out.len(), 2, "leaf 0xd is gone");
        assert_eq!(
            out[0].ecx, !0x3c00_0000,
            "XSAVE, OSXSAVE, AVX, F16C cleared, the rest kept"
        );
        assert_eq!(out[0].ebx, all);
        assert_eq!((out[1].ebx, out[1].ecx), (!(1 << 5), all), "AVX2 cleared");
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The machine around the vCPU: the PC's devices on the port bus (COM1,
//! the PIC pair, the PIT, the i8042, the CMOS RTC, rkvm's test ports and
//! the absent hardware guests probe) and the virtio-mmio devices the
//! options ask for.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::Instant;

use std::path::Path;

use super::{Irqchip, VirtioOptions};
use crate::devices::{
    bus::BusError,
    cmos::{self, Cmos, CmosPorts},
    debug_exit::{self, DebugExit, IrqPort},
    i8042::{self, I8042Ports, I8042},
    ioapic::Ioapic,
    pic::{Pic, PicPorts},
    pit::{self, Pit, PitPorts},
    serial::{self, PicLine, Uart},
    virtio, PortBus,
};
use crate::error::{Error, Result};
use kvm_ioctls::VmFd;
use vm_memory::GuestMemoryMmap;

/// The devices of a run, with the handles the run loop keeps on those it
/// also talks to outside I/O exits.
pub struct Board {
    /// The I/O ports.
    pub ports: PortBus,
    /// The virtio-mmio devices (and the rest of MMIO, empty).
    pub virtio: virtio::Bus,
    /// Console input goes to virtio-console rather than COM1.
    pub virtio_console: bool,
    pub pic: Rc<RefCell<Pic>>,
    /// rkvm run's IOAPIC (`--irqchip split`), which shares the PIC's
    /// lines: ISA IRQ n is its pin n, as the MP table says.
    pub ioapic: Option<RefCell<Ioapic>>,
    pub pit: Rc<RefCell<Pit>>,
    pub uart: Rc<RefCell<Uart<std::io::Stdout>>>,
    pub i8042: Rc<RefCell<I8042>>,
    pub cmos: Rc<RefCell<Cmos>>,
    /// What the guest wrote to the debug-exit port.
    pub status: Rc<Cell<Option<u8>>>,
}

impl Board {
    /// The PC's devices, and the virtio devices `virtio` made from the
    /// options (the guest's command line names them before this). With
    /// the irqchip in the kernel, the PIC only forwards the devices' lines
    /// (the device's PIC, IOAPIC and PIT take the guest's accesses); with
    /// the split one, an IOAPIC shares them.
    pub fn new(virtio: virtio::Bus, virtio_console: bool, irqchip: Irqchip) -> Result<Board> {
        let status = Rc::new(Cell::new(None));
        let pic = Rc::new(RefCell::new(match irqchip {
            Irqchip::User => Pic::new(),
            Irqchip::Kernel => Pic::forwarding(),
            Irqchip::Split => Pic::sharing_lines(),
        }));
        let ioapic = (irqchip == Irqchip::Split).then(|| RefCell::new(Ioapic::default()));
        let pit = Rc::new(RefCell::new(Pit::default()));
        let uart = Rc::new(RefCell::new(Uart::new(
            PicLine {
                pic: pic.clone(),
                irq: serial::IRQ,
            },
            std::io::stdout(),
        )));
        let i8042 = Rc::new(RefCell::new(I8042::new(pic.clone())));
        let cmos = Rc::new(RefCell::new(Cmos::default()));
        let ports = port_bus(&pic, &pit, &uart, &i8042, &cmos, &status)?;
        Ok(Board {
            ports,
            virtio,
            virtio_console,
            pic,
            ioapic,
            pit,
            uart,
            i8042,
            cmos,
            status,
        })
    }
}

/// A guest's MMIO read: in rkvm run's IOAPIC's window, or the virtio
/// devices' (and the rest, empty).
pub fn mmio_read(
    ioapic: &Option<RefCell<Ioapic>>,
    virtio: &mut virtio::Bus,
    addr: u64,
    data: &mut [u8],
) {
    match ioapic.as_ref().filter(|io| io.borrow().in_range(addr)) {
        Some(io) => io.borrow().read(addr, data),
        None => virtio.read(addr, data),
    }
}

/// A guest's MMIO write, as [`mmio_read`]; the IOAPIC talks to the VM's
/// APICs through `vm`, a virtio device raises its line with `set_irq`.
pub fn mmio_write(
    ioapic: &Option<RefCell<Ioapic>>,
    vm: &VmFd,
    virtio: &mut virtio::Bus,
    (addr, data): (u64, &[u8]),
    mem: &GuestMemoryMmap,
    set_irq: impl FnMut(u8, bool),
) {
    match ioapic.as_ref().filter(|io| io.borrow().in_range(addr)) {
        Some(io) => io.borrow_mut().write(vm, addr, data),
        None => virtio.write(addr, data, mem, set_irq),
    }
}

/// The virtio-mmio devices the options ask for.
pub fn virtio_devices(opts: &VirtioOptions) -> Result<virtio::Bus> {
    let mut bus = virtio::Bus::default();
    let mut add = |dev: Box<dyn virtio::Transport>, what: &'static str| {
        bus.add(dev).map(|_| ()).ok_or(Error::NoIrqLeft(what))
    };
    let disk_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Disk { path, source }
    };
    for (i, (path, read_only)) in opts.disks.iter().enumerate() {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(disk_error(path))?;
        let disk = virtio::blk::Blk::new(file, *read_only, &format!("rkvm-disk{i}"))
            .map_err(disk_error(path))?;
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
        let urandom = Path::new("/dev/urandom");
        let source = std::fs::File::open(urandom).map_err(|source| Error::File {
            path: urandom.into(),
            source,
        })?;
        add(
            Box::new(virtio::Mmio::new(virtio::rng::Rng::new(source))),
            "the entropy device",
        )?;
    }
    Ok(bus)
}

/// The PC's ports: rkvm's devices, and the absent hardware guests probe.
fn port_bus(
    pic: &Rc<RefCell<Pic>>,
    pit: &Rc<RefCell<Pit>>,
    uart: &Rc<RefCell<Uart<std::io::Stdout>>>,
    i8042: &Rc<RefCell<I8042>>,
    cmos: &Rc<RefCell<Cmos>>,
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
    bus.add_port(cmos::PORT, 2, "CMOS RTC", CmosPorts(cmos.clone()))?;
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

/// The devices' clock, in nanoseconds: since the first call, plus 2^62
/// (146 years), so that the times a restored device carries from before
/// its save (`rkvm run --restore`, the PIT's start of counting) are never
/// before 0.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    (1 << 62) + START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pc_ports_do_not_overlap() {
        let board = Board::new(virtio::Bus::default(), false, Irqchip::User).unwrap();
        let (mut bus, status) = (board.ports, board.status);
        bus.write(debug_exit::PORT, &[7]);
        assert_eq!(status.get(), Some(7));
        let mut b = [0];
        bus.read(0x2f8, &mut b);
        assert_eq!(b, [0xff]);
        assert_eq!(bus.absent_summary().as_deref(), Some("COM2 (1)"));
    }
}

// SPDX-License-Identifier: GPL-2.0

//! Paravirtual devices: the virtio-mmio transport (virtio 1.2, section 4.2,
//! version 2 only) and the devices behind it (`blk`, `console`, `rng`).
//!
//! A device is a 4 KiB window of registers in guest physical memory that no
//! memory slot covers: every access is an MMIO exit, handled here. The
//! driver finds the window on the kernel command line
//! (`virtio_mmio.device=4K@0xd0000000:5`), negotiates features, and hands
//! over split virtqueues in its own memory; a write to `QueueNotify` says
//! buffers are waiting. The queues themselves (descriptor chains, indirect
//! descriptors, event index) are rust-vmm's `virtio-queue`. A driver that
//! hands over a malformed queue gets the device into `DEVICE_NEEDS_RESET`
//! and a configuration-change interrupt, never an access outside its memory
//! (every guest address goes through `vm-memory`).

pub mod blk;
pub mod console;
pub mod rng;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

use super::bus::{Access, Space};

/// Size of a device's register window.
pub const WINDOW: u64 = 0x1000;

/// Feature bits of the transport (virtio 1.2, section 6).
pub mod feature {
    /// Indirect descriptors.
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event` / `avail_event` notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// A virtio 1.x device (no legacy interface).
    pub const VERSION_1: u64 = 1 << 32;
}

/// Device status bits (virtio 1.2, section 2.1); the device reads the
/// driver's progress from them (the tests write them as a driver does).
#[cfg_attr(not(test), allow(dead_code))]
pub mod status {
    /// The driver found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The driver knows how to drive it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from (a malformed queue).
    pub const DEVICE_NEEDS_RESET: u32 = 64;
}

/// `InterruptStatus` bits.
const INT_USED_BUFFER: u32 = 1;
const INT_CONFIG_CHANGE: u32 = 2;

/// Register offsets.
mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// "virt", little-endian.
const MAGIC: u32 = 0x7472_6976;
/// "RKVM": the vendor ID rkvm's devices report.
const VENDOR: u32 = 0x4d56_4b52;

/// Why a queue could not be served: the driver broke the rules.
#[derive(Debug)]
pub struct Malformed(pub String);

/// One virtio device, as the transport sees it.
pub trait VirtioDevice {
    /// Device ID (virtio 1.2, section 5): 2 block, 3 console, 4 entropy.
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; their number is the number of queues.
    fn queue_sizes(&self) -> &[u16];
    /// Device-specific feature bits (the transport adds its own).
    fn features(&self) -> u64;
    /// Reads the device's configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver accepted `features`; the device may depend on them.
    fn activate(&mut self, _features: u64) {}
    /// Serves the available buffers of queue `index`. Returns whether any
    /// went back to the driver (used).
    fn process(
        &mut self,
        index: usize,
        queue: &mut Queue,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, Malformed>;
    /// Work that arrives without a notification (console input): serves
    /// what it can; returns whether buffers went back to the driver.
    fn poll(&mut self, _queues: &mut [Queue], _mem: &GuestMemoryMmap) -> Result<bool, Malformed> {
        Ok(false)
    }
    /// Takes input for the guest (a console): how much was accepted.
    fn receive(&mut self, _bytes: &[u8]) -> usize {
        0
    }
    /// What the device did, for the run's summary.
    fn summary(&self) -> String;
    /// Back to the state after power-on (the driver wrote 0 to `Status`).
    fn reset(&mut self) {}
}

/// The transport state of one device.
pub struct Mmio<D: VirtioDevice> {
    /// The device.
    pub device: D,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: u32,
    /// Errors the driver caused, for the run's summary.
    pub errors: Vec<String>,
}

impl<D: VirtioDevice> Mmio<D> {
    pub fn new(device: D) -> Self {
        let queues = device
            .queue_sizes()
            .iter()
            .filter_map(|&n| Queue::new(n).ok())
            .collect();
        Mmio {
            device,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: 0,
            errors: Vec::new(),
        }
    }

    /// All features offered: the device's and the transport's.
    fn offered(&self) -> u64 {
        self.device.features()
            | feature::VERSION_1
            | feature::RING_INDIRECT_DESC
            | feature::RING_EVENT_IDX
    }

    /// The level of the device's interrupt line.
    pub fn irq_level(&self) -> bool {
        self.interrupt_status != 0
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt_status = 0;
        self.device.reset();
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        let value = match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => 2,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered() as u32,
                1 => (self.offered() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            reg::QUEUE_READY => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready())),
            reg::INTERRUPT_STATUS => self.interrupt_status,
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => 0,
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    /// A guest write at `offset`; `mem` is the guest's memory, where the
    /// queues are.
    pub fn write(&mut self, offset: u64, data: &[u8], mem: &GuestMemoryMmap) {
        if offset >= reg::CONFIG {
            return; // no writable configuration fields
        }
        let mut bytes = [0u8; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        let value = u32::from_le_bytes(bytes);
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES => match self.driver_features_sel {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value)
                }
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                }
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM => {
                if let Some(q) = self.selected() {
                    q.set_size(value as u16);
                }
            }
            reg::QUEUE_DESC_LOW => self.with_queue(|q| q.set_desc_table_address(Some(value), None)),
            reg::QUEUE_DESC_HIGH => {
                self.with_queue(|q| q.set_desc_table_address(None, Some(value)))
            }
            reg::QUEUE_DRIVER_LOW => {
                self.with_queue(|q| q.set_avail_ring_address(Some(value), None))
            }
            reg::QUEUE_DRIVER_HIGH => {
                self.with_queue(|q| q.set_avail_ring_address(None, Some(value)))
            }
            reg::QUEUE_DEVICE_LOW => {
                self.with_queue(|q| q.set_used_ring_address(Some(value), None))
            }
            reg::QUEUE_DEVICE_HIGH => {
                self.with_queue(|q| q.set_used_ring_address(None, Some(value)))
            }
            reg::QUEUE_READY => {
                let event_idx = self.driver_features & feature::RING_EVENT_IDX != 0;
                if let Some(q) = self.selected() {
                    q.set_event_idx(event_idx);
                    q.set_ready(value == 1);
                }
            }
            reg::QUEUE_NOTIFY => self.notify(value as usize, mem),
            reg::INTERRUPT_ACK => self.interrupt_status &= !value,
            reg::STATUS => self.set_status(value),
            _ => {}
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        // Queue addresses may only change before the queue is ready.
        if let Some(q) = self.selected().filter(|q| !q.ready()) {
            f(q);
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        // FEATURES_OK sticks only for a subset of what was offered that
        // includes VERSION_1: the driver reads it back to know.
        if value & status::FEATURES_OK != 0 && self.status & status::FEATURES_OK == 0 {
            let ok = self.driver_features & !self.offered() == 0
                && self.driver_features & feature::VERSION_1 != 0;
            if ok {
                self.device.activate(self.driver_features);
            } else {
                value &= !status::FEATURES_OK;
            }
        }
        self.status = value | (self.status & status::DEVICE_NEEDS_RESET);
    }

    fn live(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && self.status & status::DEVICE_NEEDS_RESET == 0
    }

    /// `QueueNotify`: queue `index` has buffers.
    fn notify(&mut self, index: usize, mem: &GuestMemoryMmap) {
        if !self.live() {
            return;
        }
        let Some(queue) = self.queues.get_mut(index) else {
            return;
        };
        if !queue.ready() || !queue.is_valid(mem) {
            self.fail(format!("queue {index} notified but not valid"));
            return;
        }
        let result = self.device.process(index, queue, mem);
        self.finish(result, index, mem);
    }

    /// Serves work that came without a notification (console input).
    pub fn poll(&mut self, mem: &GuestMemoryMmap) {
        if !self.live() {
            return;
        }
        let result = self.device.poll(&mut self.queues, mem);
        // Polled input goes to queue 0 (the receive queue).
        self.finish(result, 0, mem);
    }

    fn finish(&mut self, result: Result<bool, Malformed>, index: usize, mem: &GuestMemoryMmap) {
        match result {
            Ok(true) => {
                let notify = self
                    .queues
                    .get_mut(index)
                    .is_none_or(|q| q.needs_notification(mem).unwrap_or(true));
                if notify {
                    self.interrupt_status |= INT_USED_BUFFER;
                }
            }
            Ok(false) => {}
            Err(Malformed(why)) => self.fail(why),
        }
    }

    /// The driver broke the rules: the device stops until it is reset.
    fn fail(&mut self, why: String) {
        self.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt_status |= INT_CONFIG_CHANGE;
        self.errors.push(why);
    }
}

/// What the run loop needs of a device on the transport, whatever it is.
pub trait Transport {
    /// A read at `offset` in the window.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// A write at `offset` in the window.
    fn write(&mut self, offset: u64, data: &[u8], mem: &GuestMemoryMmap);
    /// The interrupt line's level.
    fn irq_level(&self) -> bool;
    /// Serves work that came without a notification.
    fn poll(&mut self, mem: &GuestMemoryMmap);
    /// Takes input for the guest (a console); how much was accepted.
    fn receive(&mut self, _bytes: &[u8]) -> usize {
        0
    }
    /// What the device did, for the run's summary.
    fn summary(&self) -> String;
    /// Errors the driver caused.
    fn errors(&self) -> &[String];
}

/// The devices on the virtio-mmio bus: each at `BASE + i * WINDOW`, with
/// its interrupt line. The rest of guest physical space without memory
/// is empty: reads give all ones, writes vanish, and the first access to
/// each page is reported.
pub struct Bus {
    bus: super::bus::Bus<(u8, Box<dyn Transport>)>,
    count: usize,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            bus: super::bus::Bus::new(Space::Mmio),
            count: 0,
        }
    }
}

/// Where the windows start: above any guest RAM rkvm gives (the PCI hole).
pub const BASE: u64 = 0xd000_0000;
/// The PIC lines the devices get, in order: free on a PC without a second
/// serial port, a parallel port or a floppy.
pub const IRQS: [u8; 6] = [5, 6, 7, 9, 10, 11];

impl Bus {
    /// Adds a device; its window and IRQ, or `None` when all lines are taken.
    pub fn add(&mut self, device: Box<dyn Transport>) -> Option<(u64, u8)> {
        let irq = *IRQS.get(self.count)?;
        let base = BASE + self.count as u64 * WINDOW;
        // The windows follow each other: they cannot overlap.
        self.bus
            .add(base, WINDOW, "virtio-mmio device", (irq, device))
            .ok()?;
        self.count += 1;
        Some((base, irq))
    }

    /// The devices' IRQs, in order.
    pub fn irqs(&self) -> Vec<u8> {
        self.bus.devices().map(|(_, (irq, _))| *irq).collect()
    }

    /// The kernel command line that announces the devices to Linux.
    pub fn cmdline(&self) -> String {
        self.bus
            .devices()
            .map(|(range, (irq, _))| format!(" virtio_mmio.device=4K@{:#x}:{irq}", range.base()))
            .collect()
    }

    /// An MMIO read.
    pub fn read(&mut self, addr: u64, data: &mut [u8]) {
        match self.bus.route(addr, Access::Read) {
            Some((offset, (_, dev))) => dev.read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// An MMIO write; `set_irq` gets the device's line level afterwards.
    /// The PIC's lines are edge-triggered and a virtio interrupt is a
    /// level: when the driver acknowledges some causes and others arrived
    /// since it read them, the line drops and rises again, so that the new
    /// ones are not lost.
    pub fn write(
        &mut self,
        addr: u64,
        data: &[u8],
        mem: &GuestMemoryMmap,
        mut set_irq: impl FnMut(u8, bool),
    ) {
        if let Some((offset, (irq, dev))) = self.bus.route(addr, Access::Write) {
            dev.write(offset, data, mem);
            let level = dev.irq_level();
            if offset == reg::INTERRUPT_ACK && level {
                set_irq(*irq, false);
            }
            set_irq(*irq, level);
        }
    }

    /// Polls every device; `set_irq` gets each line level.
    pub fn poll(&mut self, mem: &GuestMemoryMmap, mut set_irq: impl FnMut(u8, bool)) {
        for (_, (irq, dev)) in self.bus.devices_mut() {
            dev.poll(mem);
            set_irq(*irq, dev.irq_level());
        }
    }

    /// Input for the first device that takes it (the console).
    pub fn receive(&mut self, bytes: &[u8]) -> usize {
        self.bus
            .devices_mut()
            .map(|(_, (_, d))| d.receive(bytes))
            .find(|&n| n > 0)
            .unwrap_or(0)
    }

    /// One line per device for the run's summary, and the errors.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (range, (irq, d)) in self.bus.devices() {
            lines.push(format!("{} at {:#x} irq {irq}", d.summary(), range.base()));
            lines.extend(
                d.errors()
                    .iter()
                    .map(|e| format!("  the driver broke the device (DEVICE_NEEDS_RESET): {e}")),
            );
        }
        lines
    }
}

impl<D: VirtioDevice> Transport for Mmio<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        Mmio::read(self, offset, data)
    }
    fn write(&mut self, offset: u64, data: &[u8], mem: &GuestMemoryMmap) {
        Mmio::write(self, offset, data, mem)
    }
    fn irq_level(&self) -> bool {
        Mmio::irq_level(self)
    }
    fn poll(&mut self, mem: &GuestMemoryMmap) {
        Mmio::poll(self, mem)
    }
    fn receive(&mut self, bytes: &[u8]) -> usize {
        self.device.receive(bytes)
    }
    fn summary(&self) -> String {
        self.device.summary()
    }
    fn errors(&self) -> &[String] {
        &self.errors
    }
}

/// Serves every available chain of `queue` with `serve`, which returns how
/// many bytes it wrote into the chain; returns whether any was used.
pub fn serve_chains(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    mut serve: impl FnMut(&virtio_queue::DescriptorChain<&GuestMemoryMmap>) -> Result<u32, Malformed>,
) -> Result<bool, Malformed> {
    let mut used = false;
    loop {
        // With event index, re-check after enabling notifications, so that
        // buffers added meanwhile are not left waiting.
        queue
            .disable_notification(mem)
            .map_err(|e| Malformed(format!("avail ring: {e}")))?;
        while let Some(chain) = queue
            .iter(mem)
            .map_err(|e| Malformed(format!("avail ring: {e}")))?
            .next()
        {
            let head = chain.head_index();
            let len = serve(&chain)?;
            queue
                .add_used(mem, head, len)
                .map_err(|e| Malformed(format!("used ring: {e}")))?;
            used = true;
        }
        if !queue
            .enable_notification(mem)
            .map_err(|e| Malformed(format!("avail ring: {e}")))?
        {
            return Ok(used);
        }
    }
}

#[cfg(test)]
mod tests {
    //! A minimal driver in the test: it lays out split virtqueues in guest
    //! memory and talks to the device through the transport's registers,
    //! as Linux's virtio_mmio and virtio_ring do.
    use super::*;
    use std::io::{Seek, SeekFrom, Write as _};
    use vm_memory::{Bytes, GuestAddress};

    const QSIZE: u16 = 16;
    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;
    const F_INDIRECT: u16 = 4;

    struct Driver<D: VirtioDevice> {
        dev: Mmio<D>,
        mem: GuestMemoryMmap,
        /// Per queue: next free descriptor, next avail index, last used index seen.
        next_desc: Vec<u16>,
        avail_idx: Vec<u16>,
    }

    fn desc_table(q: usize) -> u64 {
        0x10_0000 + q as u64 * 0x1_0000
    }
    fn avail(q: usize) -> u64 {
        desc_table(q) + 0x1000
    }
    fn used(q: usize) -> u64 {
        desc_table(q) + 0x2000
    }

    impl<D: VirtioDevice> Driver<D> {
        /// Probes and sets the device up, accepting `features` (plus VERSION_1).
        fn new(device: D, features: u64) -> Self {
            let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
            let mut d = Driver {
                dev: Mmio::new(device),
                mem,
                next_desc: vec![],
                avail_idx: vec![],
            };
            assert_eq!(d.read(reg::MAGIC), MAGIC);
            assert_eq!(d.read(reg::VERSION), 2);
            d.write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER);
            let wanted = features | feature::VERSION_1;
            d.write(reg::DRIVER_FEATURES_SEL, 0);
            d.write(reg::DRIVER_FEATURES, wanted as u32);
            d.write(reg::DRIVER_FEATURES_SEL, 1);
            d.write(reg::DRIVER_FEATURES, (wanted >> 32) as u32);
            d.write(
                reg::STATUS,
                status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
            );
            assert_ne!(
                d.read(reg::STATUS) & status::FEATURES_OK,
                0,
                "features refused"
            );
            let queues = d.dev.device.queue_sizes().len();
            for q in 0..queues {
                d.write(reg::QUEUE_SEL, q as u32);
                assert!(d.read(reg::QUEUE_NUM_MAX) >= u32::from(QSIZE));
                d.write(reg::QUEUE_NUM, u32::from(QSIZE));
                d.write(reg::QUEUE_DESC_LOW, desc_table(q) as u32);
                d.write(reg::QUEUE_DRIVER_LOW, avail(q) as u32);
                d.write(reg::QUEUE_DEVICE_LOW, used(q) as u32);
                d.write(reg::QUEUE_READY, 1);
                d.next_desc.push(0);
                d.avail_idx.push(0);
            }
            d.write(
                reg::STATUS,
                status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
            );
            d
        }

        fn read(&mut self, offset: u64) -> u32 {
            let mut b = [0u8; 4];
            self.dev.read(offset, &mut b);
            u32::from_le_bytes(b)
        }

        fn write(&mut self, offset: u64, value: u32) {
            let mem = self.mem.clone();
            self.dev.write(offset, &value.to_le_bytes(), &mem);
        }

        fn write_desc(&self, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
            let at = table + u64::from(i) * 16;
            self.mem.write_obj(addr, GuestAddress(at)).unwrap();
            self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        }

        /// Makes a chain of (address, length, device-writable) buffers
        /// available on queue `q`, directly or through an indirect table.
        fn add(&mut self, q: usize, bufs: &[(u64, u32, bool)], indirect: bool) -> u16 {
            // The device answers each chain at once: descriptors are reused
            // from the start when the table is used up.
            if usize::from(self.next_desc[q]) + bufs.len() > usize::from(QSIZE) {
                self.next_desc[q] = 0;
            }
            let head = self.next_desc[q];
            if indirect {
                let table = 0x30_0000 + u64::from(head) * 0x100;
                for (i, &(addr, len, w)) in bufs.iter().enumerate() {
                    let last = i + 1 == bufs.len();
                    let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
                    self.write_desc(table, i as u16, addr, len, flags, i as u16 + 1);
                }
                self.write_desc(
                    desc_table(q),
                    head,
                    table,
                    bufs.len() as u32 * 16,
                    F_INDIRECT,
                    0,
                );
                self.next_desc[q] += 1;
            } else {
                for (i, &(addr, len, w)) in bufs.iter().enumerate() {
                    let me = head + i as u16;
                    let last = i + 1 == bufs.len();
                    let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
                    self.write_desc(desc_table(q), me, addr, len, flags, me + 1);
                }
                self.next_desc[q] += bufs.len() as u16;
            }
            let idx = self.avail_idx[q];
            self.mem
                .write_obj(
                    head,
                    GuestAddress(avail(q) + 4 + u64::from(idx % QSIZE) * 2),
                )
                .unwrap();
            self.avail_idx[q] = idx.wrapping_add(1);
            self.mem
                .write_obj(self.avail_idx[q], GuestAddress(avail(q) + 2))
                .unwrap();
            head
        }

        fn notify(&mut self, q: usize) {
            self.write(reg::QUEUE_NOTIFY, q as u32);
        }

        /// The used ring's index and its entry `i` (id, len).
        fn used(&self, q: usize, i: u16) -> (u16, (u32, u32)) {
            let idx: u16 = self.mem.read_obj(GuestAddress(used(q) + 2)).unwrap();
            let at = used(q) + 4 + u64::from(i % QSIZE) * 8;
            let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
            (idx, (id, len))
        }

        fn ack_interrupt(&mut self) -> u32 {
            let status = self.read(reg::INTERRUPT_STATUS);
            self.write(reg::INTERRUPT_ACK, status);
            status
        }
    }

    fn disk(sectors: u64) -> std::fs::File {
        let mut f = tempfile();
        for s in 0..sectors {
            f.write_all(&[s as u8; blk::SECTOR as usize]).unwrap();
        }
        f.seek(SeekFrom::Start(0)).unwrap();
        f
    }

    /// An unnamed temporary file (O_TMPFILE is not everywhere: a named one, unlinked).
    fn tempfile() -> std::fs::File {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "rkvm-virtio-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    /// A block request: header at 0x1000, data at 0x2000, status at 0x3000.
    fn blk_request(
        d: &mut Driver<blk::Blk>,
        kind: u32,
        sector: u64,
        data: Option<(u32, bool)>,
        indirect: bool,
    ) -> u8 {
        d.mem.write_obj(kind, GuestAddress(0x1000)).unwrap();
        d.mem.write_obj(0u32, GuestAddress(0x1004)).unwrap();
        d.mem.write_obj(sector, GuestAddress(0x1008)).unwrap();
        d.mem.write_obj(0xffu8, GuestAddress(0x3000)).unwrap();
        let mut bufs = vec![(0x1000, 16, false)];
        if let Some((len, w)) = data {
            bufs.push((0x2000, len, w));
        }
        bufs.push((0x3000, 1, true));
        d.add(0, &bufs, indirect);
        d.notify(0);
        d.mem.read_obj(GuestAddress(0x3000)).unwrap()
    }

    #[test]
    fn registers_and_feature_negotiation() {
        let mut d = Driver::new(rng::Rng::new(std::io::repeat(7)), 0);
        assert_eq!(d.read(reg::DEVICE_ID), 4);
        assert_eq!(d.read(reg::VENDOR_ID), VENDOR);
        d.write(reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(d.read(reg::DEVICE_FEATURES), 1, "VERSION_1 offered");
        // A driver without VERSION_1 (legacy) is refused.
        d.write(reg::STATUS, 0);
        assert_eq!(d.read(reg::STATUS), 0, "reset");
        d.write(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(d.read(reg::STATUS) & status::FEATURES_OK, 0);
        // Nor features that were not offered.
        d.write(reg::STATUS, 0);
        d.write(reg::DRIVER_FEATURES_SEL, 1);
        d.write(reg::DRIVER_FEATURES, 1 | 2);
        d.write(reg::STATUS, status::FEATURES_OK);
        assert_eq!(d.read(reg::STATUS) & status::FEATURES_OK, 0);
    }

    #[test]
    fn rng_fills_buffers_and_interrupts() {
        let mut d = Driver::new(rng::Rng::new(std::io::repeat(0x5a)), 0);
        d.add(0, &[(0x5000, 32, true)], false);
        assert!(!d.dev.irq_level());
        d.notify(0);
        assert_eq!(d.used(0, 0), (1, (0, 32)));
        let mut got = [0u8; 32];
        d.mem.read_slice(&mut got, GuestAddress(0x5000)).unwrap();
        assert_eq!(got, [0x5a; 32]);
        assert!(d.dev.irq_level());
        assert_eq!(d.ack_interrupt(), 1, "used-buffer interrupt");
        assert!(!d.dev.irq_level());
    }

    #[test]
    fn blk_reads_writes_flushes_directly_and_indirectly() {
        let mut d = Driver::new(blk::Blk::new(disk(8), false, "rkvm-disk").unwrap(), 0);
        let mut cap = [0u8; 8];
        d.dev.read(reg::CONFIG, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 8, "capacity in sectors");
        assert_eq!(
            blk_request(&mut d, 0, 3, Some((1024, true)), false),
            0,
            "read sectors 3-4"
        );
        let mut data = [0u8; 1024];
        d.mem.read_slice(&mut data, GuestAddress(0x2000)).unwrap();
        assert!(data[..512].iter().all(|&b| b == 3) && data[512..].iter().all(|&b| b == 4));
        assert_eq!(d.used(0, 0), (1, (0, 1025)), "data and status written");
        d.mem
            .write_slice(&[0xee; 512], GuestAddress(0x2000))
            .unwrap();
        assert_eq!(
            blk_request(&mut d, 1, 7, Some((512, false)), true),
            0,
            "indirect write of sector 7"
        );
        assert_eq!(blk_request(&mut d, 4, 0, None, false), 0, "flush");
        assert_eq!(blk_request(&mut d, 0, 7, Some((512, true)), false), 0);
        d.mem
            .read_slice(&mut data[..512], GuestAddress(0x2000))
            .unwrap();
        assert!(
            data[..512].iter().all(|&b| b == 0xee),
            "the write reached the file"
        );
        assert_eq!(
            blk_request(&mut d, 8, 0, Some((20, true)), false),
            0,
            "GET_ID"
        );
        let mut id = [0u8; 9];
        d.mem.read_slice(&mut id, GuestAddress(0x2000)).unwrap();
        assert_eq!(&id, b"rkvm-disk");
        assert_eq!(
            blk_request(&mut d, 0, 8, Some((512, true)), false),
            1,
            "past the end: IOERR"
        );
        assert_eq!(
            blk_request(&mut d, 0, u64::MAX, Some((512, true)), false),
            1,
            "overflowing sector: IOERR"
        );
        assert_eq!(
            blk_request(&mut d, 0, 0, Some((100, true)), false),
            1,
            "not whole sectors: IOERR"
        );
        assert_eq!(
            blk_request(&mut d, 99, 0, None, false),
            2,
            "unknown request: UNSUPP"
        );
        let s = d.dev.device.stats;
        assert_eq!((s.reads, s.writes, s.flushes, s.errors), (2, 1, 1, 4));
        assert_eq!(d.read(reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    }

    #[test]
    fn blk_read_only_refuses_writes() {
        let mut d = Driver::new(blk::Blk::new(disk(2), true, "ro").unwrap(), 0);
        d.write(reg::DEVICE_FEATURES_SEL, 0);
        assert_ne!(
            d.read(reg::DEVICE_FEATURES) & (1 << 5),
            0,
            "VIRTIO_BLK_F_RO offered"
        );
        assert_eq!(blk_request(&mut d, 1, 0, Some((512, false)), false), 1);
        assert_eq!(blk_request(&mut d, 0, 0, Some((512, true)), false), 0);
    }

    /// Malformed queues: the device stops with DEVICE_NEEDS_RESET and a
    /// configuration interrupt, and touches nothing outside guest memory.
    #[test]
    fn malformed_requests_need_reset() {
        // No status byte.
        let mut d = Driver::new(blk::Blk::new(disk(2), false, "x").unwrap(), 0);
        d.add(0, &[(0x1000, 16, false)], false);
        d.notify(0);
        assert_ne!(d.read(reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(d.ack_interrupt(), 2, "configuration change");
        assert_eq!(d.dev.errors.len(), 1);
        // Stopped: further notifications do nothing until a reset.
        d.add(0, &[(0x1000, 16, false), (0x3000, 1, true)], false);
        d.notify(0);
        assert_eq!(d.used(0, 0).0, 0);
        // A buffer outside guest memory.
        let mut d = Driver::new(blk::Blk::new(disk(2), false, "x").unwrap(), 0);
        d.add(
            0,
            &[
                (0x1000, 16, false),
                (0xffff_0000_0000, 512, true),
                (0x3000, 1, true),
            ],
            false,
        );
        d.notify(0);
        assert_ne!(d.read(reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        // An avail index further ahead than the queue is long.
        let mut d = Driver::new(rng::Rng::new(std::io::repeat(1)), 0);
        d.mem
            .write_obj(1000u16, GuestAddress(avail(0) + 2))
            .unwrap();
        d.notify(0);
        assert_ne!(d.read(reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
        // An indirect table inside an indirect table.
        let mut d = Driver::new(rng::Rng::new(std::io::repeat(1)), 0);
        d.write_desc(0x30_0000, 0, 0x30_1000, 16, F_INDIRECT, 0);
        d.write_desc(desc_table(0), 0, 0x30_0000, 16, F_INDIRECT, 0);
        d.mem.write_obj(0u16, GuestAddress(avail(0) + 4)).unwrap();
        d.mem.write_obj(1u16, GuestAddress(avail(0) + 2)).unwrap();
        d.notify(0);
        assert_eq!(
            d.used(0, 0),
            (1, (0, 0)),
            "an empty answer: nothing writable in the chain"
        );
    }

    #[test]
    fn console_moves_whole_buffers_both_ways() {
        let mut d = Driver::new(console::Console::new(Vec::new()), 0);
        d.mem
            .write_slice(b"hello, hvc0\n", GuestAddress(0x4000))
            .unwrap();
        d.add(1, &[(0x4000, 12, false)], false);
        d.notify(1);
        assert_eq!(d.dev.device.sent, 12);
        assert_eq!(d.used(1, 0), (1, (0, 0)));
        // Input waits for a receive buffer, then fills it.
        assert_eq!(d.dev.device.receive(b"typed"), 5);
        let mem = d.mem.clone();
        d.dev.poll(&mem);
        assert_eq!(d.used(0, 0).0, 0, "no buffer yet");
        d.add(0, &[(0x6000, 64, true)], false);
        d.notify(0);
        assert_eq!(d.used(0, 0), (1, (0, 5)));
        let mut got = [0u8; 5];
        d.mem.read_slice(&mut got, GuestAddress(0x6000)).unwrap();
        assert_eq!(&got, b"typed");
    }

    /// With VIRTIO_F_RING_EVENT_IDX the driver says after which used index
    /// it wants an interrupt (used_event, after the avail ring).
    #[test]
    fn event_index_suppresses_interrupts() {
        let mut d = Driver::new(rng::Rng::new(std::io::repeat(1)), feature::RING_EVENT_IDX);
        let used_event = avail(0) + 4 + u64::from(QSIZE) * 2;
        d.mem.write_obj(5u16, GuestAddress(used_event)).unwrap();
        d.add(0, &[(0x5000, 8, true)], false);
        d.notify(0);
        assert_eq!(d.used(0, 0).0, 1);
        assert!(
            !d.dev.irq_level(),
            "the driver asked for an interrupt after 6 used buffers only"
        );
        d.mem.write_obj(1u16, GuestAddress(used_event)).unwrap();
        d.add(0, &[(0x5000, 8, true)], false);
        d.notify(0);
        assert!(d.dev.irq_level(), "used index passed used_event");
    }

    #[test]
    fn bus_windows_lines_and_command_line() {
        let mut bus = Bus::default();
        assert_eq!(
            bus.add(Box::new(Mmio::new(rng::Rng::new(std::io::repeat(1))))),
            Some((BASE, 5))
        );
        assert_eq!(
            bus.add(Box::new(Mmio::new(console::Console::new(Vec::new())))),
            Some((BASE + WINDOW, 6))
        );
        assert_eq!(
            bus.cmdline(),
            " virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
        );
        let mut data = [0u8; 4];
        bus.read(BASE + WINDOW + reg::DEVICE_ID, &mut data);
        assert_eq!(
            u32::from_le_bytes(data),
            3,
            "the second window is the console"
        );
        bus.read(BASE + 2 * WINDOW, &mut data);
        assert_eq!(data, [0xff; 4], "nothing there");
        assert_eq!(
            bus.receive(b"abc"),
            3,
            "input goes to the device that takes it"
        );
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut lines = Vec::new();
        bus.write(
            BASE + reg::STATUS,
            &0u32.to_le_bytes(),
            &mem,
            |irq, level| lines.push((irq, level)),
        );
        assert_eq!(lines, [(5, false)]);
        for _ in 0..IRQS.len() - 2 {
            assert!(bus
                .add(Box::new(Mmio::new(rng::Rng::new(std::io::repeat(1)))))
                .is_some());
        }
        assert_eq!(
            bus.add(Box::new(Mmio::new(rng::Rng::new(std::io::repeat(1))))),
            None,
            "out of lines"
        );
    }
}

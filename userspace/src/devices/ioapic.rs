// SPDX-License-Identifier: GPL-2.0

//! The IOAPIC of `rkvm run --irqchip split`: the local APICs are the
//! device's (`KVM_CAP_SPLIT_IRQCHIP`), the IOAPIC is rkvm run's, as QEMU's
//! `kernel-irqchip=split` has it.
//!
//! The model is the one rkvm.ko runs for `KVM_CREATE_IRQCHIP`
//! (`rkvm_pure::ioapic`, KVM's IOAPIC); this file connects it to the
//! device:
//! - what the IOAPIC sends goes to the local APICs as an MSI
//!   (`KVM_SIGNAL_MSI`), with the entry's destination, vector, delivery and
//!   trigger modes;
//! - the device learns from the GSI routing table which vectors are the
//!   IOAPIC's level-triggered ones, so that their EOIs come back as
//!   `KVM_EXIT_IOAPIC_EOI` (KVM's `kvm_scan_ioapic_routes()`): pin n is GSI
//!   n, routed to its entry's MSI, refreshed whenever the guest writes an
//!   entry; a masked entry keeps its pin's last route (QEMU's rule), so
//!   an interrupt in service when it was masked still gets its EOI;
//! - the EOI clears the remote IRR and sends a level pin again if its line
//!   is still high.

use kvm_bindings::{kvm_irq_routing_entry, kvm_msi, KvmIrqRouting, KVM_IRQ_ROUTING_MSI};
use kvm_ioctls::VmFd;
use rkvm_pure::ioapic::{DestMap, Ioapic as Model, NUM_PINS, SOURCE_USERSPACE};
use rkvm_pure::msi::{DeliveryMode, DestMode, IrqMessage, Trigger};

/// An MSI as the x86 architecture lays it out (address 0xfeeXXXXX, data
/// with the vector and modes) for an interrupt of the IOAPIC.
pub fn msi_of(m: &IrqMessage) -> kvm_msi {
    let mut address_lo = 0xfee0_0000 | ((m.dest_id & 0xff) << 12);
    if m.dest_mode == DestMode::Logical {
        address_lo |= 1 << 2;
    }
    if m.redirect_hint {
        address_lo |= 1 << 3;
    }
    let mut data = u32::from(m.vector) | (u32::from(m.delivery_mode.bits()) << 8);
    if m.level {
        data |= 1 << 14;
    }
    if m.trigger == Trigger::Level {
        data |= 1 << 15;
    }
    kvm_msi {
        address_lo,
        data,
        ..Default::default()
    }
}

/// The routes for the device's EOI bookkeeping: for each pin that ever
/// had an unmasked entry, GSI = pin to its last such entry's MSI.
fn routes_of(last: &[Option<kvm_msi>; NUM_PINS]) -> Vec<kvm_irq_routing_entry> {
    last.iter()
        .enumerate()
        .filter_map(|(pin, msi)| {
            let msi = msi.as_ref()?;
            let mut e = kvm_irq_routing_entry {
                gsi: pin as u32,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi.address_lo = msi.address_lo;
            e.u.msi.data = msi.data;
            Some(e)
        })
        .collect()
}

/// The IOAPIC and what the device knows of it.
pub struct Ioapic {
    model: Model,
    /// Each pin's last unmasked entry, as an MSI (see [`routes_of`]).
    routes: [Option<kvm_msi>; NUM_PINS],
    /// Interrupts sent (`KVM_SIGNAL_MSI`), for the summary.
    pub sent: u64,
    /// EOIs that came back (`KVM_EXIT_IOAPIC_EOI`), for the summary.
    pub eois: u64,
    /// MSIs (and routing tables) the device refused, for the summary.
    pub failed_msis: u64,
}

impl Default for Ioapic {
    fn default() -> Self {
        Ioapic {
            model: Model::new(),
            routes: [None; NUM_PINS],
            sent: 0,
            eois: 0,
            failed_msis: 0,
        }
    }
}

impl Ioapic {
    /// Whether `addr` is in the IOAPIC's MMIO window.
    pub fn in_range(&self, addr: u64) -> bool {
        self.model.in_range(addr)
    }

    /// A guest's read in the window.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        if let Ok(Some(value)) = self.model.mmio_read(addr, data.len()) {
            let bytes = value.to_le_bytes();
            for (d, b) in data.iter_mut().zip(bytes) {
                *d = b;
            }
        }
    }

    /// A guest's write in the window; an entry written changes the
    /// device's routes.
    pub fn write(&mut self, vm: &VmFd, addr: u64, data: &[u8]) {
        let mut count = Sent::default();
        let effect = self.model.mmio_write(
            addr,
            data,
            &mut |m: &IrqMessage, _: Option<&mut DestMap>| count.send(vm, m),
        );
        self.count(count);
        if effect.is_ok_and(|e| e.rescan) {
            self.update_routes(vm);
        }
    }

    /// A device's line `pin` is now `level`.
    pub fn set_irq(&mut self, vm: &VmFd, pin: u8, level: bool) {
        let mut count = Sent::default();
        self.model.set_irq(
            pin.into(),
            SOURCE_USERSPACE,
            level,
            false,
            &mut |m: &IrqMessage, _: Option<&mut DestMap>| count.send(vm, m),
        );
        self.count(count);
    }

    /// vCPU `vcpu`'s EOI of `vector` (`KVM_EXIT_IOAPIC_EOI`).
    pub fn eoi(&mut self, vm: &VmFd, vcpu: u32, vector: u8) {
        let mut count = Sent::default();
        self.model.eoi(
            vcpu,
            vector,
            Trigger::Level,
            false,
            &mut |m: &IrqMessage, _: Option<&mut DestMap>| count.send(vm, m),
        );
        self.eois += 1;
        self.count(count);
    }

    fn count(&mut self, count: Sent) {
        self.sent += count.sent;
        self.failed_msis += count.failed;
    }

    /// The device's routes again, if an entry written changed one: a
    /// guest masking and unmasking a pin leaves them as they were.
    fn update_routes(&mut self, vm: &VmFd) {
        let mut changed = false;
        for (pin, route) in self.routes.iter_mut().enumerate() {
            if let Some(entry) = self.model.entry(pin).filter(|e| !e.masked()) {
                let msi = Some(msi_of(&entry.message()));
                changed |= *route != msi;
                *route = msi;
            }
        }
        if !changed {
            return;
        }
        let entries = routes_of(&self.routes);
        // A routing table this small always fits; a refusal leaves the old
        // table, and EOIs of a new vector then do not come back: counted.
        match KvmIrqRouting::from_entries(&entries) {
            Ok(table) if vm.set_gsi_routing(&table).is_ok() => {}
            _ => self.failed_msis += 1,
        }
    }
}

/// The interrupts one call of the model sent, and those that failed.
#[derive(Default)]
struct Sent {
    sent: u64,
    failed: u64,
}

impl Sent {
    /// Sends one interrupt of the IOAPIC: what `KVM_SIGNAL_MSI` returned
    /// (the APICs that took it; 0 if none could), -1 if it failed.
    fn send(&mut self, vm: &VmFd, m: &IrqMessage) -> i32 {
        // The 8259's vector cannot come from here: the PIC is rkvm run's
        // and reaches the vCPU through KVM_INTERRUPT.
        if m.delivery_mode == DeliveryMode::ExtInt {
            return 0;
        }
        self.sent += 1;
        vm.signal_msi(msi_of(m)).unwrap_or_else(|_| {
            self.failed += 1;
            -1
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(vector: u8, dest_id: u32, dest_mode: DestMode, trigger: Trigger) -> IrqMessage {
        IrqMessage {
            vector,
            delivery_mode: DeliveryMode::LowestPriority,
            dest_mode,
            dest_id,
            trigger,
            level: true,
            redirect_hint: false,
        }
    }

    #[test]
    fn an_ioapic_interrupt_becomes_the_msi_that_decodes_back_to_it() {
        let m = message(0x31, 3, DestMode::Logical, Trigger::Level);
        let msi = msi_of(&m);
        assert_eq!(msi.address_lo, 0xfee0_3004);
        assert_eq!(msi.data, 0x31 | (1 << 8) | (1 << 14) | (1 << 15));
        let back = rkvm_pure::msi::MsiMessage {
            address_lo: msi.address_lo,
            address_hi: 0,
            data: msi.data,
        }
        .decode(false);
        assert_eq!(back, Some(m));

        let edge = message(0x40, 0, DestMode::Physical, Trigger::Edge);
        assert_eq!(msi_of(&edge).address_lo, 0xfee0_0000);
        assert_eq!(msi_of(&edge).data & (1 << 15), 0);
    }

    #[test]
    fn the_routes_are_the_pins_that_had_an_entry() {
        let mut last = [None; NUM_PINS];
        last[4] = Some(msi_of(&message(0x34, 0, DestMode::Physical, Trigger::Edge)));
        last[9] = Some(msi_of(&message(
            0x39,
            1,
            DestMode::Physical,
            Trigger::Level,
        )));
        let routes = routes_of(&last);
        assert_eq!(routes.len(), 2);
        assert_eq!((routes[0].gsi, routes[1].gsi), (4, 9));
        assert!(routes.iter().all(|r| r.type_ == KVM_IRQ_ROUTING_MSI));
        // SAFETY: the entries were made as MSI routes just above.
        let (a, d) = unsafe { (routes[1].u.msi.address_lo, routes[1].u.msi.data) };
        assert_eq!(
            (a, d),
            (0xfee0_1000, 0x39 | (1 << 8) | (1 << 14) | (1 << 15))
        );
    }

    #[test]
    fn reads_outside_the_registers_give_zero_and_the_version_is_kvms() {
        let io = Ioapic::default();
        assert!(io.in_range(0xfec0_0000) && !io.in_range(0xfec0_1000));
        let mut data = [0xffu8; 4];
        io.read(0xfec0_0040, &mut data);
        assert_eq!(data, [0; 4]);
        // IOREGSEL is 0 (the ID register) after reset.
        io.read(0xfec0_0010, &mut data);
        assert_eq!(data, [0; 4]);
    }
}

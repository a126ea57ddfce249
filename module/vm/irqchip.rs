// SPDX-License-Identifier: GPL-2.0

//! The in-kernel PIC pair and IOAPIC of `KVM_CREATE_IRQCHIP` (the
//! "full" irqchip): `pure::pic` and `pure::ioapic` under the VM's locks,
//! reached by the guest's port I/O and MMIO, by `KVM_IRQ_LINE` and irqfds
//! through the GSI routing table, and by the LAPICs' EOIs; their state
//! through `KVM_GET_IRQCHIP` and `KVM_SET_IRQCHIP`.
//!
//! Lock order: the routing table, then the IOAPIC or the PIC, then the
//! list of APICs, then one APIC. The PIC's lock is never held while the
//! APICs are looked at: what the PIC asks for afterwards
//! ([`pic::Effect::wakeup`]) is done once it is dropped.
//!
//! Ack and mask notifiers are KVM's: a chip's pin acknowledged (a PIC's
//! EOI, an IOAPIC EOI of the pin's vector) or masked tells the GSI routed
//! to it (`irq_routing::PinMap`), which the PIT (`vm::pit`) and resampling
//! irqfds listen to.
//!
//! Where rkvm differs: after `ioapic::SUCCESSIVE_EOI_MAX` re-deliveries
//! of a level pin in a row the pin is delivered at once rather than 10 ms
//! later (a guest that keeps a line high without serving it only spends
//! its own time).

use kernel::{
    prelude::*,
    sync::Arc, //
};

use crate::{
    abi::{
        self,
        uapi, //
    },
    apic::{
        self,
        VcpuApic, //
    },
    pure::{
        ioapic::{
            self,
            DestMap,
            Ioapic,
            IoapicState, //
        },
        irq_routing::{
            self,
            Irqchip,
            IrqchipMode, //
        },
        lapic,
        msi::{
            IrqMessage,
            Trigger, //
        },
        pic::{
            self,
            Chip,
            Pic,
            PicState, //
        }, //
    }, //
};

use super::Vm;

/// Size of `struct kvm_irqchip`: `chip_id`, `pad`, then the 512-byte
/// union of the chips' states.
pub(super) const IRQCHIP_SIZE: usize = 520;
/// Offset of the union in `struct kvm_irqchip`.
const CHIP_OFFSET: usize = 8;

const _: () = assert!(core::mem::size_of::<uapi::kvm_irqchip>() == IRQCHIP_SIZE);
const _: () = assert!(core::mem::size_of::<uapi::kvm_pic_state>() == pic::STATE_SIZE);
const _: () = assert!(core::mem::size_of::<uapi::kvm_ioapic_state>() == ioapic::STATE_SIZE);

/// Whether `vector`'s bit is set in the 256-bit APIC register (ISR, TMR,
/// IRR) that starts at `base`.
fn vector_bit(lapic: &lapic::Lapic, base: u32, vector: u8) -> bool {
    let word = lapic.register(base + u32::from(vector / 32) * 0x10);
    word & (1 << (vector % 32)) != 0
}

/// A chip's state image into the union of `struct kvm_irqchip`.
fn put_image(union: &mut [u8], image: &[u8]) -> Result {
    union
        .get_mut(..image.len())
        .ok_or(EINVAL)?
        .copy_from_slice(image);
    Ok(())
}

/// Whether `gpa` is in the IOAPIC's MMIO window, where KVM registers it:
/// only there can an access reach it.
pub(crate) fn in_ioapic_window(gpa: u64) -> bool {
    (ioapic::DEFAULT_BASE_ADDRESS..ioapic::DEFAULT_BASE_ADDRESS + ioapic::MEM_LENGTH).contains(&gpa)
}

impl Vm {
    /// `KVM_CREATE_IRQCHIP` (`kvm_arch_vm_ioctl()`): EEXIST if the VM has
    /// an in-kernel irqchip already (split or full), EINVAL once a vCPU
    /// exists. The PIC pair and the IOAPIC start as after reset, and the
    /// routing table is KVM's default (`irq_routing::DEFAULT_ROUTING`).
    /// Every vCPU created afterwards has a local APIC.
    pub(super) fn create_irqchip(&self) -> Result<isize> {
        let mut vcpus = self.vcpus.lock();
        if vcpus.irqchip.is_some() {
            return Err(EEXIST);
        }
        if vcpus.any() {
            return Err(EINVAL);
        }
        let mut table = KVVec::with_capacity(irq_routing::DEFAULT_ROUTING.len(), GFP_KERNEL)?;
        for entry in irq_routing::DEFAULT_ROUTING {
            table.push(entry, GFP_KERNEL)?;
        }
        *self.pic.lock() = Pic::new();
        *self.ioapic.lock() = Ioapic::new();
        *self.routes.lock() = table;
        vcpus.irqchip = Some(IrqchipMode::Full);
        Ok(0)
    }

    /// Whether the VM has the full in-kernel irqchip.
    pub(crate) fn full_irqchip(&self) -> bool {
        self.irqchip_mode() == Some(IrqchipMode::Full)
    }

    /// `KVM_GET_IRQCHIP` (`set` false) and `KVM_SET_IRQCHIP`: the whole
    /// struct is read first (EFAULT), then ENXIO without the full irqchip,
    /// EINVAL for a `chip_id` other than 0 (PIC master), 1 (slave) and 2
    /// (IOAPIC). A get writes the whole struct back, the state in its
    /// union; a set takes the state as it is (KVM checks nothing in it),
    /// then the chips' outputs follow it.
    pub(super) fn irqchip_state(&self, arg: usize, set: bool) -> Result<isize> {
        let mut bytes: [u8; IRQCHIP_SIZE] = abi::read_arg(arg)?;
        if !self.full_irqchip() {
            return Err(ENXIO);
        }
        let id = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let chip = Irqchip::from_id(id).ok_or(EINVAL)?;
        let state = bytes.get_mut(CHIP_OFFSET..).ok_or(EINVAL)?;
        let pic_chip = match chip {
            Irqchip::PicMaster => Some(Chip::Master),
            Irqchip::PicSlave => Some(Chip::Slave),
            Irqchip::Ioapic => None,
        };
        match (pic_chip, set) {
            (Some(c), false) => put_image(state, &self.pic.lock().state(c).to_bytes())?,
            (None, false) => put_image(state, &self.ioapic.lock().state().to_bytes())?,
            (Some(c), true) => {
                let new = PicState::from_bytes(state).ok_or(EINVAL)?;
                let effect = self.pic.lock().set_state(c, &new);
                self.pic_effect(effect);
            }
            (None, true) => {
                let new = IoapicState::from_bytes(state).ok_or(EINVAL)?;
                self.set_ioapic(&new);
            }
        }
        if !set {
            abi::write_arg(arg, &bytes)?;
        }
        Ok(0)
    }

    /// `kvm_set_ioapic()`: the state, then each vCPU's part in the RTC
    /// pin's EOI tracking as its LAPIC shows it (the RTC vector in IRR or
    /// ISR of a LAPIC the pin's destination matches).
    fn set_ioapic(&self, state: &IoapicState) {
        let mut ioapic = self.ioapic.lock();
        ioapic.set_state(state, &mut self.ioapic_delivery());
        let Some(rtc) = ioapic.entry(ioapic::RTC_PIN) else {
            return;
        };
        let (_, dest) = lapic::from_message(&rtc.message());
        let vector = rtc.vector();
        for a in self.apics.lock().iter() {
            let (id, matches, pending) = a.with(|s| {
                let l = &s.lapic;
                let pending = vector_bit(l, lapic::reg::IRR, vector)
                    || vector_bit(l, lapic::reg::ISR, vector);
                (l.config().vcpu_id, l.matches(&dest, false, true), pending)
            });
            ioapic.rtc_restore(id, matches, pending);
        }
    }

    /// How the IOAPIC's messages reach the LAPICs (`kvm_irq_delivery_to_apic()`,
    /// with the IOAPIC's broadcast quirk). Called with the IOAPIC's lock held.
    fn ioapic_delivery(&self) -> impl FnMut(&IrqMessage, Option<&mut DestMap>) -> i32 + '_ {
        move |message, dest_map| {
            let (irq, dest) = lapic::from_message(message);
            let apics = self.apics.lock();
            let taken = apic::deliver(&apics, irq, &dest, None, true, dest_map);
            i32::try_from(taken).unwrap_or(i32::MAX)
        }
    }

    /// Source `source` drives IOAPIC pin `pin` to `level`; `line_status`:
    /// for `KVM_IRQ_LINE_STATUS` (the RTC pin's coalescing). Returns the
    /// chip's status (see `Ioapic::set_irq`).
    pub(super) fn ioapic_set_irq(&self, pin: u8, source: u32, level: bool, status: bool) -> i32 {
        let mut ioapic = self.ioapic.lock();
        let pin = usize::from(pin);
        ioapic.set_irq(pin, source, level, status, &mut self.ioapic_delivery())
    }

    /// Source `source` drives PIC IRQ `irq` (0-15) to `level`. Returns the
    /// chip's status (see `Pic::set_irq`). Called with the routing table
    /// locked: a line change acknowledges and masks nothing, so only the
    /// wakeup is done.
    pub(super) fn pic_set_irq(&self, irq: u8, source: u32, level: bool) -> i32 {
        let (status, effect) = self.pic.lock().set_irq(usize::from(irq), source, level);
        if effect.wakeup {
            self.pic_wakeup();
        }
        status
    }

    /// What a PIC operation asks for, with its lock dropped (and the
    /// routing table's): the ack notifiers of the IRQs that left service,
    /// the mask notifiers of those whose mask the guest changed, and when
    /// the output rose, a kick (`pic_unlock()`).
    fn pic_effect(&self, effect: pic::Effect) {
        for irq in 0..16u32 {
            let bit = 1u16 << irq;
            if effect.acked & bit == 0 && effect.mask_changed & bit == 0 {
                continue;
            }
            let chip = if irq < 8 {
                Irqchip::PicMaster
            } else {
                Irqchip::PicSlave
            };
            let Some(gsi) = self.gsi_of(chip, irq % 8) else {
                continue;
            };
            if effect.acked & bit != 0 {
                self.notify_acked_gsi(gsi);
            }
            if effect.mask_changed & bit != 0 {
                self.notify_mask_gsi(gsi, effect.masked & bit != 0);
            }
        }
        if effect.wakeup {
            self.pic_wakeup();
        }
    }

    /// The GSI routed to `pin` of `chip` (`kvm_irq_map_chip_pin()`).
    fn gsi_of(&self, chip: Irqchip, pin: u32) -> Option<u32> {
        irq_routing::PinMap::new(&self.routes.lock()).gsi(chip, pin)
    }

    /// The IOAPIC pins whose GSI has an ack notifier
    /// (`kvm_irq_has_notifier()`), which its EOIs must reach.
    fn ioapic_notifier_pins(&self) -> ioapic::PinMask {
        let map = irq_routing::PinMap::new(&self.routes.lock());
        let pit = self.pit_wants_acks();
        let irqfds = self.irqfds.lock();
        let notified =
            |gsi: u32| (gsi == 0 && pit) || irqfds.iter().any(|i| i.resampled_gsi() == Some(gsi));
        (0..ioapic::NUM_PINS as u32)
            .filter(|&pin| map.gsi(Irqchip::Ioapic, pin).is_some_and(notified))
            .fold(0, |mask, pin| mask | (1 << pin))
    }

    /// The PIC's output rose: the first vCPU that takes PIC interrupts is
    /// kicked to look.
    fn pic_wakeup(&self) {
        let apics = self.apics.lock();
        if let Some(a) = apics
            .iter()
            .find(|a| a.with(|s| s.lapic.accepts_pic_interrupt()))
        {
            a.kick().kick();
        }
    }

    /// KVM's NMI watchdog through virtual wire, at each PIT tick
    /// (`kvm_apic_nmi_wd_deliver()`): if some APIC has LVT0 unmasked in NMI
    /// mode, every APIC delivers its LVT0.
    pub(super) fn lint0_nmi_watchdog(&self) {
        let apics = self.apics.lock();
        let nmi_mode = |a: &Arc<VcpuApic>| {
            a.with(|s| {
                let lint0 = s.lapic.lvt(lapic::Lvt::Lint0);
                !lint0.masked && lint0.mode == lapic::DeliveryMode::Nmi
            })
        };
        if apics.iter().any(nmi_mode) {
            for a in apics.iter() {
                a.local_interrupt(lapic::Lvt::Lint0);
            }
        }
    }

    /// Whether some vCPU takes PIC interrupts (`kvm_apic_accept_pic_intr()`
    /// of any).
    fn pic_accepted(&self) -> bool {
        self.apics
            .lock()
            .iter()
            .any(|a| a.with(|s| s.lapic.accepts_pic_interrupt()))
    }

    /// Whether the PIC's INTR is up: an interrupt waits for an INTA cycle
    /// (`kvm_cpu_has_extint()` for a vCPU that takes PIC interrupts).
    pub(crate) fn pic_output(&self) -> bool {
        self.pic.lock().output()
    }

    /// The INTA cycle (`kvm_pic_read_irq()`): the vector to inject.
    pub(crate) fn pic_read_irq(&self) -> u8 {
        let (vector, effect) = self.pic.lock().read_irq();
        self.pic_effect(effect);
        vector
    }

    /// A guest's IN (`input`) or OUT of `size` bytes at `port`, if the PIC
    /// takes it: `Some` with the value read (0 for an OUT), `None` if the
    /// port is not the PIC's.
    pub(crate) fn pic_io(&self, port: u16, input: bool, size: u8, data: u64) -> Option<u64> {
        let len = usize::from(size);
        if !Pic::in_range(port, len) {
            return None;
        }
        // Asked before the PIC's lock is taken: the APICs come after it in
        // no order.
        let accepted = !input && self.pic_accepted();
        let mut pic = self.pic.lock();
        let (value, effect) = if input {
            pic.read(port, len).ok()?
        } else {
            let bytes = data.to_le_bytes();
            (0, pic.write(port, bytes.get(..len)?, accepted).ok()?)
        };
        drop(pic);
        self.pic_effect(effect);
        Some(u64::from(value))
    }

    /// A guest's MMIO access at `gpa`, if the IOAPIC takes it (its window
    /// at the default base, where KVM registers it, and at its current
    /// base: `KVM_SET_IRQCHIP` may move the base, not the window). A write
    /// of `data` (`Some`); a read of `len` bytes: `Some(Some(value))`, or
    /// `Some(None)` for a length the IOAPIC takes without an answer.
    pub(crate) fn ioapic_mmio(
        &self,
        gpa: u64,
        len: usize,
        data: Option<&[u8]>,
    ) -> Option<Option<u64>> {
        if !in_ioapic_window(gpa) {
            return None;
        }
        let mut ioapic = self.ioapic.lock();
        match data {
            // No rescan: the EOI path asks the IOAPIC for its vectors each
            // time.
            Some(data) => {
                let effect = ioapic
                    .mmio_write(gpa, data, &mut self.ioapic_delivery())
                    .ok()?;
                drop(ioapic);
                if let Some((pin, masked)) = effect.mask_changed {
                    if let Some(gsi) = self.gsi_of(Irqchip::Ioapic, u32::from(pin)) {
                        self.notify_mask_gsi(gsi, masked);
                    }
                }
                Some(None)
            }
            None => ioapic.mmio_read(gpa, len).ok(),
        }
    }

    /// The EOI of `eoi.vector` by `apic` (`kvm_ioapic_send_eoi()` with the
    /// full irqchip): if the IOAPIC handles that vector for this vCPU (a
    /// pin's entry that is level-triggered, the RTC's, or one whose GSI has
    /// an ack notifier, with a destination the APIC matches), the ack
    /// notifiers of the pins with that vector run, with the IOAPIC's lock
    /// dropped as KVM drops it; then those pins lose their remote IRR and
    /// the level ones still asserted are delivered again.
    pub(crate) fn ioapic_eoi(&self, apic: &VcpuApic, eoi: lapic::Eoi) {
        let vcpu_id = apic.vcpu_id();
        let notifier_pins = self.ioapic_notifier_pins();
        let pins = {
            let ioapic = self.ioapic.lock();
            let handled = ioapic.eoi_vectors(vcpu_id, notifier_pins, |message| {
                let (_, dest) = lapic::from_message(message);
                apic.with(|s| s.lapic.matches(&dest, false, true))
            });
            if !handled.contains(eoi.vector) {
                return;
            }
            ioapic.pins_with_vector(eoi.vector)
        };
        for pin in (0..ioapic::NUM_PINS as u32).filter(|&p| pins & (1 << p) != 0) {
            if let Some(gsi) = self.gsi_of(Irqchip::Ioapic, pin) {
                self.notify_acked_gsi(gsi);
            }
        }
        let mut ioapic = self.ioapic.lock();
        let trigger = if eoi.level {
            Trigger::Level
        } else {
            Trigger::Edge
        };
        let mut deliver = self.ioapic_delivery();
        let outcome = ioapic.eoi(
            vcpu_id,
            eoi.vector,
            trigger,
            eoi.suppress_broadcast,
            &mut deliver,
        );
        if outcome.deferred {
            ioapic.deferred_eoi_inject(&mut deliver);
        }
    }
}

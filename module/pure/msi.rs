// SPDX-License-Identifier: GPL-2.0

//! Interrupt messages: what the in-kernel IOAPIC and an MSI hand to the local
//! APICs, and how KVM decodes an MSI (`kvm_msi_to_lapic_irq()` in
//! `arch/x86/kvm/irq.c`, the x86 MSI layout of `arch/x86/include/asm/msi.h`).
//!
//! [`IrqMessage`] is KVM's `struct kvm_lapic_irq` for the two sources this
//! file and [`super::ioapic`] serve: neither uses a destination shorthand, so
//! the message has none. The module's glue turns it into whatever the LAPIC
//! model takes.

/// `KVM_MSI_VALID_DEVID`: the only flag of `struct kvm_msi` and of an MSI
/// routing entry (`devid` is meaningful; x86 ignores the device ID).
pub const MSI_VALID_DEVID: u32 = 1 << 0;

/// How the target LAPICs take the interrupt: the 3-bit field of a
/// redirection entry (bits 10:8) and of MSI data (bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// 0: the vector, to every destination.
    Fixed,
    /// 1: the vector, to the destination with the lowest priority.
    LowestPriority,
    /// 2: a system management interrupt.
    Smi,
    /// 3: reserved; KVM passes it on and the LAPIC ignores it.
    Reserved3,
    /// 4: a non-maskable interrupt.
    Nmi,
    /// 5: INIT.
    Init,
    /// 6: reserved in the 82093AA and in MSI, but KVM passes it on as the
    /// LAPIC's start-up (SIPI) mode, `APIC_DM_STARTUP`.
    StartUp,
    /// 7: the 8259's vector, read by an INTA cycle.
    ExtInt,
}

impl DeliveryMode {
    /// The mode of a 3-bit field (higher bits are ignored).
    pub fn from_bits(bits: u8) -> Self {
        match bits & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            3 => Self::Reserved3,
            4 => Self::Nmi,
            5 => Self::Init,
            6 => Self::StartUp,
            _ => Self::ExtInt,
        }
    }

    /// The 3-bit field (`APIC_DM_*` is this shifted left by 8).
    pub fn bits(self) -> u8 {
        self as u8
    }
}

/// How `dest_id` names the target LAPICs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestMode {
    /// An APIC ID (0xff, or 0xffff_ffff in x2APIC mode: all).
    Physical,
    /// A logical destination, matched against each LAPIC's LDR and DFR.
    Logical,
}

/// Trigger mode, as the LAPIC records it in its TMR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Edge: no EOI goes back to the source.
    Edge,
    /// Level: the LAPIC's EOI is broadcast back to the IOAPIC.
    Level,
}

/// One interrupt for the LAPICs (`struct kvm_lapic_irq` without a
/// shorthand: the IOAPIC and MSIs always use `APIC_DEST_NOSHORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqMessage {
    /// The vector (KVM does not refuse vectors below 16 here; the LAPIC
    /// model decides what it does with them).
    pub vector: u8,
    /// How it is delivered.
    pub delivery_mode: DeliveryMode,
    /// How [`Self::dest_id`] is read.
    pub dest_mode: DestMode,
    /// The destination: 8 bits from a redirection entry or a plain MSI, up
    /// to 32 with KVM's x2APIC MSI format.
    pub dest_id: u32,
    /// Edge or level.
    pub trigger: Trigger,
    /// Asserted. Always true for IOAPIC and MSI deliveries (KVM sets
    /// `level = 1`; MSI data bit 14 is ignored).
    pub level: bool,
    /// The MSI redirection hint (address bit 3): with logical destinations,
    /// deliver as lowest priority. Never set by the IOAPIC.
    pub redirect_hint: bool,
}

/// A set of the 256 vectors (e.g. the vectors whose EOI must reach the
/// IOAPIC or userspace: KVM's `ioapic_handled_vectors`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VectorSet(pub [u64; 4]);

impl VectorSet {
    /// The empty set.
    pub const EMPTY: Self = Self([0; 4]);

    fn word_bit(vector: u8) -> (usize, u64) {
        (usize::from(vector >> 6), 1u64 << (vector & 63))
    }

    /// Adds `vector`.
    pub fn insert(&mut self, vector: u8) {
        let (w, bit) = Self::word_bit(vector);
        if let Some(word) = self.0.get_mut(w) {
            *word |= bit;
        }
    }

    /// Whether `vector` is in the set.
    pub fn contains(&self, vector: u8) -> bool {
        let (w, bit) = Self::word_bit(vector);
        self.0.get(w).is_some_and(|word| word & bit != 0)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
}

/// An MSI as userspace gives it (`struct kvm_msi`, a routing entry's
/// `struct kvm_irq_routing_msi`) and as a device writes it: the address's
/// two halves and the data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsiMessage {
    /// Address bits 31:0: 0xfee in 31:20, destination ID 19:12, the
    /// "extended destination ID" 11:5, remappable format 4, redirection
    /// hint 3, destination mode 2.
    pub address_lo: u32,
    /// Address bits 63:32. Bits 31:8 are destination ID bits 31:8 when the
    /// VM uses KVM's x2APIC format.
    pub address_hi: u32,
    /// Vector 7:0, delivery mode 10:8, level assert 14 (ignored), trigger
    /// mode 15.
    pub data: u32,
}

impl MsiMessage {
    /// Whether KVM refuses this message (`kvm_msi_route_invalid()`): with
    /// `x2apic_format` (`KVM_CAP_X2APIC_API` with
    /// `KVM_X2APIC_API_USE_32BIT_IDS`), bits 7:0 of `address_hi` must be
    /// zero. A routing entry like that is `EINVAL` at `KVM_SET_GSI_ROUTING`;
    /// `KVM_SIGNAL_MSI` returns `-EINVAL`; an irqfd injects nothing.
    pub fn invalid(&self, x2apic_format: bool) -> bool {
        x2apic_format && self.address_hi & 0xff != 0
    }

    /// The message KVM delivers for this MSI, `None` where
    /// [`Self::invalid`] (`kvm_set_msi()`).
    pub fn decode(&self, x2apic_format: bool) -> Option<IrqMessage> {
        if self.invalid(x2apic_format) {
            return None;
        }
        Some(self.message(x2apic_format))
    }

    /// The message this MSI makes, valid or not (`kvm_msi_to_lapic_irq()`,
    /// which KVM also uses to scan routes).
    ///
    /// The destination is address bits 19:12, and with `x2apic_format`
    /// also `address_hi` bits 31:8 as destination bits 31:8
    /// (`x86_msi_msg_get_destid()`). KVM never reads address bits 11:5,
    /// the "extended destination ID" of `KVM_FEATURE_MSI_EXT_DEST_ID`
    /// guests: the VMM moves them into `address_hi` first (see
    /// [`Self::swizzle_ext_dest_id`]). The 0xfee prefix is not checked.
    pub fn message(&self, x2apic_format: bool) -> IrqMessage {
        let mut dest_id = (self.address_lo >> 12) & 0xff;
        if x2apic_format {
            dest_id |= self.address_hi & !0xff;
        }
        IrqMessage {
            vector: self.data as u8,
            delivery_mode: DeliveryMode::from_bits((self.data >> 8) as u8),
            dest_mode: if self.address_lo & (1 << 2) != 0 {
                DestMode::Logical
            } else {
                DestMode::Physical
            },
            dest_id,
            trigger: if self.data & (1 << 15) != 0 {
                Trigger::Level
            } else {
                Trigger::Edge
            },
            level: true,
            redirect_hint: self.address_lo & (1 << 3) != 0,
        }
    }

    /// The 7-bit extended destination ID a `KVM_FEATURE_MSI_EXT_DEST_ID`
    /// guest puts in address bits 11:5: destination bits 14:8.
    pub fn ext_dest_id(&self) -> u8 {
        ((self.address_lo >> 5) & 0x7f) as u8
    }

    /// What a VMM does before handing a guest's MSI to KVM when it offers
    /// `KVM_FEATURE_MSI_EXT_DEST_ID` (QEMU's `kvm_swizzle_msi_ext_dest_id()`):
    /// address bits 11:5 move to `address_hi` bits 14:8, where KVM's x2APIC
    /// format reads destination bits 14:8. Unchanged when bits 11:5 are
    /// zero, when the remappable-format bit 4 is set, or when `address_hi`
    /// is already non-zero.
    pub fn swizzle_ext_dest_id(self) -> Self {
        let ext = self.address_lo & 0xff0;
        if ext == 0 || ext & 0x10 != 0 || self.address_hi != 0 {
            return self;
        }
        Self {
            address_lo: self.address_lo & !ext,
            address_hi: ext << 3,
            data: self.data,
        }
    }
}

/// `KVM_SIGNAL_MSI`'s check of `struct kvm_msi`'s flags
/// (`kvm_send_userspace_msi()`): only [`MSI_VALID_DEVID`] may be set, else
/// `EINVAL`. After it, the ioctl returns what delivering the message gives:
/// `-EINVAL` for an [invalid](MsiMessage::invalid) message, else the
/// number of LAPICs that took it, 0 if none did, and -1 (which userspace
/// reads as `EPERM`) if no LAPIC matched.
pub fn signal_msi_flags_ok(flags: u32) -> bool {
    flags & !MSI_VALID_DEVID == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msi(address_lo: u32, address_hi: u32, data: u32) -> MsiMessage {
        MsiMessage {
            address_lo,
            address_hi,
            data,
        }
    }

    #[test]
    fn decode_fixed_physical_edge() {
        let m = msi(0xfee0_3000, 0, 0x0041).decode(false).unwrap();
        assert_eq!(
            m,
            IrqMessage {
                vector: 0x41,
                delivery_mode: DeliveryMode::Fixed,
                dest_mode: DestMode::Physical,
                dest_id: 3,
                trigger: Trigger::Edge,
                level: true,
                redirect_hint: false,
            }
        );
    }

    #[test]
    fn decode_logical_lowest_level_hint() {
        // Logical (bit 2), redirection hint (bit 3), destination 0x0f,
        // lowest priority, level-triggered, level-assert bit clear.
        let m = msi(0xfee0_f00c, 0, 0x8000 | 0x100 | 0x33)
            .decode(false)
            .unwrap();
        assert_eq!(m.vector, 0x33);
        assert_eq!(m.delivery_mode, DeliveryMode::LowestPriority);
        assert_eq!(m.dest_mode, DestMode::Logical);
        assert_eq!(m.dest_id, 0x0f);
        assert_eq!(m.trigger, Trigger::Level);
        assert!(m.level, "KVM always asserts, whatever data bit 14 says");
        assert!(m.redirect_hint);
    }

    #[test]
    fn delivery_modes_round_trip() {
        for bits in 0..8u8 {
            assert_eq!(DeliveryMode::from_bits(bits).bits(), bits);
            let m = msi(0xfee0_0000, 0, u32::from(bits) << 8)
                .decode(false)
                .unwrap();
            assert_eq!(m.delivery_mode.bits(), bits);
        }
        assert_eq!(DeliveryMode::from_bits(0xfe), DeliveryMode::StartUp);
        assert_eq!(DeliveryMode::from_bits(4), DeliveryMode::Nmi);
        assert_eq!(DeliveryMode::from_bits(7), DeliveryMode::ExtInt);
    }

    #[test]
    fn address_hi_ignored_without_x2apic_format() {
        let m = msi(0xfee0_5000, 0x1234_5600, 0x30).decode(false).unwrap();
        assert_eq!(m.dest_id, 5);
        // Bits 7:0 of address_hi are only refused in the x2APIC format.
        assert!(!msi(0, 0xff, 0).invalid(false));
    }

    #[test]
    fn x2apic_format_destination() {
        let m = msi(0xfee0_5000, 0x1234_5600, 0x30).decode(true).unwrap();
        assert_eq!(m.dest_id, 0x1234_5605);
        let all = msi(0xfeef_f000, 0xffff_ff00, 0x30);
        assert_eq!(all.decode(true).unwrap().dest_id, 0xffff_ffff);
    }

    #[test]
    fn x2apic_format_refuses_low_address_hi_bits() {
        for hi in [1, 0x80, 0x1234_5601] {
            let m = msi(0xfee0_0000, hi, 0x30);
            assert!(m.invalid(true));
            assert_eq!(m.decode(true), None);
            assert!(m.decode(false).is_some());
            // The route scan still reads a destination out of it.
            assert_eq!(m.message(true).dest_id, hi & !0xff);
        }
    }

    #[test]
    fn kvm_ignores_ext_dest_id_bits() {
        // A guest with KVM_FEATURE_MSI_EXT_DEST_ID targets APIC ID 0x1234
        // (bits 14:8 = 0x12 in address bits 11:5).
        let guest = msi(0xfee0_0000 | (0x34 << 12) | (0x12 << 5), 0, 0x30);
        assert_eq!(guest.ext_dest_id(), 0x12);
        assert_eq!(guest.decode(false).unwrap().dest_id, 0x34);
        assert_eq!(guest.decode(true).unwrap().dest_id, 0x34);
        // After the VMM's swizzle, the x2APIC format reaches 0x1234.
        let fixed = guest.swizzle_ext_dest_id();
        assert_eq!(fixed.address_lo, 0xfee3_4000);
        assert_eq!(fixed.address_hi, 0x1200);
        assert_eq!(fixed.decode(true).unwrap().dest_id, 0x1234);
        assert_eq!(fixed.ext_dest_id(), 0);
    }

    #[test]
    fn swizzle_leaves_other_messages_alone() {
        let plain = msi(0xfee0_1000, 0, 0x30);
        assert_eq!(plain.swizzle_ext_dest_id(), plain);
        let remappable = msi(0xfee0_0010 | (1 << 5), 0, 0x30);
        assert_eq!(remappable.swizzle_ext_dest_id(), remappable);
        let has_hi = msi(0xfee0_0000 | (1 << 5), 0x100, 0x30);
        assert_eq!(has_hi.swizzle_ext_dest_id(), has_hi);
        // The largest extended ID: bits 14:8 all set.
        let top = msi(0xfee0_0fe0, 0, 0x30).swizzle_ext_dest_id();
        assert_eq!((top.address_lo, top.address_hi), (0xfee0_0000, 0x7f00));
    }

    #[test]
    fn signal_msi_flags() {
        assert!(signal_msi_flags_ok(0));
        assert!(signal_msi_flags_ok(MSI_VALID_DEVID));
        assert!(!signal_msi_flags_ok(2));
        assert!(!signal_msi_flags_ok(MSI_VALID_DEVID | 0x8000_0000));
    }

    #[test]
    fn vector_set() {
        let mut s = VectorSet::EMPTY;
        assert!(s.is_empty());
        for v in [0u8, 63, 64, 127, 200, 255] {
            assert!(!s.contains(v));
            s.insert(v);
            assert!(s.contains(v));
        }
        assert!(!s.contains(1) && !s.contains(254));
        assert_eq!(s.0, [1 | 1 << 63, 1 | 1 << 63, 0, 1 << 8 | 1 << 63]);
        assert!(!s.is_empty());
    }
}

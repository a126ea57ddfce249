// SPDX-License-Identifier: GPL-2.0

//! The MultiProcessor Specification 1.4 table (Intel, 1997) that tells a
//! guest without ACPI where its processors' local APICs and its IOAPIC are
//! and how the ISA interrupts reach them: written for `rkvm run --irqchip
//! kernel` and `split`, whose IOAPIC (the device's, or rkvm run's) routes
//! ISA IRQ n to pin n, as KVM's default routing does.
//!
//! The virtio-mmio devices' lines are level-triggered: a device holds its
//! line up until the driver acknowledges its interrupt status (virtio 1.2,
//! 4.2.2), so the table says so for their IRQs and the guest programs
//! those pins level-triggered, the IOAPIC path with remote IRR and the
//! EOI. The other ISA IRQs conform to the bus: edge.
//!
//! Linux looks for the floating pointer (`_MP_`) in the last KiB of base
//! memory, among other places (`default_find_smp_config()`): rkvm run
//! puts it there, at 639 KiB, outside the e820 RAM, with the table right
//! after it.

/// Where the floating pointer goes: the last KiB below 640 KiB.
pub const BASE: u64 = 639 * 1024;
/// The room there.
pub const MAX_SIZE: usize = 1024;
/// The local APICs' MMIO base.
const LAPIC_BASE: u32 = 0xfee0_0000;
/// The IOAPIC's MMIO base and version (KVM's).
const IOAPIC_BASE: u32 = 0xfec0_0000;
const IOAPIC_VERSION: u8 = 0x11;
/// The local APICs' version (an integrated APIC, as KVM reports).
const LAPIC_VERSION: u8 = 0x14;
/// The ISA IRQs described.
const ISA_IRQS: u8 = 16;

/// Entry types.
const PROCESSOR: u8 = 0;
const BUS: u8 = 1;
const IOAPIC: u8 = 2;
const IO_INTERRUPT: u8 = 3;
const LOCAL_INTERRUPT: u8 = 4;
/// Interrupt types of the interrupt entries.
const INT: u8 = 0;
const NMI: u8 = 1;
const EXTINT: u8 = 3;
/// An I/O interrupt entry's flags: as the bus says (ISA: edge, active
/// high), or level-triggered and active high (polarity 01, trigger 11).
const CONFORMING: u16 = 0;
const LEVEL_HIGH: u16 = 0b11_01;

/// What the processor entries say about the CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cpus {
    /// How many (APIC IDs 0 to count - 1; 0 is the bootstrap processor).
    pub count: u8,
    /// CPUID leaf 1's EAX: stepping, model, family.
    pub signature: u32,
    /// CPUID leaf 1's EDX.
    pub features: u32,
}

/// The byte that makes `bytes` sum to 0.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

/// The floating pointer and the table after it, for `cpus`, to be written
/// at guest physical `base`, with the ISA IRQs in `level` level-triggered.
/// `None` if it would not fit in [`MAX_SIZE`] (more processors than the
/// space holds).
pub fn build(base: u64, cpus: Cpus, level: &[u8]) -> Option<Vec<u8>> {
    let table_at = u32::try_from(base + 16).ok()?;
    let ioapic_id = cpus.count;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus.count {
        let flags = 1 | if id == 0 { 2 } else { 0 }; // enabled, bootstrap
        entries.extend_from_slice(&[PROCESSOR, id, LAPIC_VERSION, flags]);
        entries.extend_from_slice(&cpus.signature.to_le_bytes());
        entries.extend_from_slice(&cpus.features.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_BASE.to_le_bytes());
    count += 2;
    // ISA IRQ n on pin n; the PIC's cascade (IRQ 2) carries nothing of
    // its own.
    for irq in (0..ISA_IRQS).filter(|&i| i != 2) {
        let flags = if level.contains(&irq) {
            LEVEL_HIGH
        } else {
            CONFORMING
        };
        entries.extend_from_slice(&[IO_INTERRUPT, INT]);
        entries.extend_from_slice(&flags.to_le_bytes());
        entries.extend_from_slice(&[0, irq, ioapic_id, irq]);
        count += 1;
    }
    // The PIC through every LINT0, NMIs through every LINT1.
    for (kind, lint) in [(EXTINT, 0), (NMI, 1)] {
        entries.extend_from_slice(&[LOCAL_INTERRUPT, kind, 0, 0, 0, 0, 0xff, lint]);
        count += 1;
    }

    let length = u16::try_from(44 + entries.len()).ok()?;
    let mut table = Vec::with_capacity(usize::from(length));
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&length.to_le_bytes());
    table.extend_from_slice(&[4, 0]); // revision 1.4, checksum below
    table.extend_from_slice(b"RKVM    ");
    table.extend_from_slice(b"rkvm run    ");
    table.extend_from_slice(&[0; 4]); // no OEM table
    table.extend_from_slice(&[0; 2]);
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_BASE.to_le_bytes());
    table.extend_from_slice(&[0; 4]); // no extended table
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(16 + table.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&table_at.to_le_bytes());
    out.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // 16 bytes, 1.4; no IMCR
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    (out.len() <= MAX_SIZE).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
    }

    const CPUS: Cpus = Cpus {
        count: 2,
        signature: 0x0083_0f10,
        features: 0x178b_fbff,
    };

    #[test]
    fn pointer_and_table_have_their_signatures_lengths_and_checksums() {
        let t = build(BASE, CPUS, &[]).unwrap();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(
            u32::from_le_bytes(t[4..8].try_into().unwrap()),
            BASE as u32 + 16
        );
        assert_eq!((t[8], t[9]), (1, 4));
        assert_eq!(sum(&t[..16]), 0);
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
        // 2 processors, the bus, the IOAPIC, 15 ISA IRQs, 2 local.
        assert_eq!(u16::from_le_bytes([table[34], table[35]]), 21);
        assert_eq!(len, 44 + 2 * 20 + 8 + 8 + 15 * 8 + 2 * 8);
        assert_eq!(
            u32::from_le_bytes(table[36..40].try_into().unwrap()),
            LAPIC_BASE
        );
    }

    #[test]
    fn entries_name_the_bsp_the_ioapic_and_identity_isa_pins() {
        let t = build(BASE, CPUS, &[]).unwrap();
        let e = &t[16 + 44..];
        assert_eq!(
            &e[..4],
            &[PROCESSOR, 0, LAPIC_VERSION, 3],
            "APIC 0: enabled, BSP"
        );
        assert_eq!(
            &e[20..24],
            &[PROCESSOR, 1, LAPIC_VERSION, 1],
            "APIC 1: enabled"
        );
        assert_eq!(&e[8..12], &CPUS.features.to_le_bytes());
        assert_eq!(&e[40..48], b"\x01\x00ISA   ");
        assert_eq!(
            &e[48..52],
            &[IOAPIC, 2, IOAPIC_VERSION, 1],
            "IOAPIC ID after the CPUs'"
        );
        assert_eq!(&e[52..56], &IOAPIC_BASE.to_le_bytes());
        assert_eq!(
            &e[56..64],
            &[IO_INTERRUPT, INT, 0, 0, 0, 0, 2, 0],
            "IRQ 0 on pin 0"
        );
        assert_eq!(
            &e[64..72],
            &[IO_INTERRUPT, INT, 0, 0, 0, 1, 2, 1],
            "IRQ 2 skipped"
        );
        let local = &e[e.len() - 16..];
        assert_eq!(&local[..8], &[LOCAL_INTERRUPT, EXTINT, 0, 0, 0, 0, 0xff, 0]);
        assert_eq!(&local[8..], &[LOCAL_INTERRUPT, NMI, 0, 0, 0, 0, 0xff, 1]);
    }

    #[test]
    fn too_many_processors_do_not_fit() {
        let many = Cpus { count: 41, ..CPUS };
        assert!(build(BASE, many, &[]).is_none());
        assert!(build(BASE, Cpus { count: 40, ..CPUS }, &[]).is_some());
    }

    #[test]
    fn the_level_irqs_entries_say_level_and_active_high() {
        let t = build(BASE, CPUS, &[5, 9]).unwrap();
        assert_eq!(sum(&t[16..]), 0);
        // After 2 processors, the bus and the IOAPIC: IRQs 0, 1, 3, 4, 5.
        let irqs = &t[16 + 44 + 2 * 20 + 8 + 8..];
        let entry = |i: usize| &irqs[i * 8..i * 8 + 8];
        assert_eq!(
            entry(3),
            &[IO_INTERRUPT, INT, 0, 0, 0, 4, 2, 4],
            "IRQ 4: edge"
        );
        assert_eq!(
            entry(4),
            &[IO_INTERRUPT, INT, 0x0d, 0, 0, 5, 2, 5],
            "IRQ 5: level, active high"
        );
        assert_eq!(entry(8), &[IO_INTERRUPT, INT, 0x0d, 0, 0, 9, 2, 9]);
        assert_eq!(entry(9), &[IO_INTERRUPT, INT, 0, 0, 0, 10, 2, 10]);
    }
}

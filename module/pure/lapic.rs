// SPDX-License-Identifier: GPL-2.0

//! The local APIC of one vCPU as pure logic: registers, interrupt acceptance
//! and priority, destination matching, the timer's arithmetic, INIT and SIPI.
//!
//! # The model
//!
//! A [`Lapic`] is the state of one local APIC (Intel SDM vol. 3, chapter
//! "Advanced Programmable Interrupt Controller (APIC)"), and where the SDM
//! leaves room, it behaves as KVM's `arch/x86/kvm/lapic.c` does. It has no
//! clock, no lock, no other vCPU and no allocation: every operation takes the
//! values it needs (the time, as nanoseconds of the glue's monotonic clock,
//! `now_ns`) and returns what the caller must do as a value ([`Effect`],
//! [`Accepted`], [`Expiry`], [`TimerAction`]). It never panics, whatever the
//! guest writes or userspace sets.
//!
//! Its registers are the 1 KiB page of `struct kvm_lapic_state` that
//! `KVM_GET_LAPIC` and `KVM_SET_LAPIC` carry: each 32-bit register at its xAPIC
//! MMIO offset ([`reg`]), the other 12 bytes of each 16-byte slot zero. In
//! x2APIC mode the same registers are MSRs `0x800 + offset / 16`, with the ICR
//! one 64-bit MSR (kept here as ICR and ICR2, as `KVM_GET_LAPIC` shows it). The
//! state outside that page: `IA32_APIC_BASE` (carried by `KVM_GET/SET_SREGS`
//! and the MSR), the TSC deadline (`IA32_TSC_DEADLINE`, by `KVM_GET/SET_MSRS`),
//! the timer's expiry time (recomputed from the current count at
//! `KVM_SET_LAPIC`), the errors not yet latched into the ESR (lost across a
//! save and restore), and INIT/SIPI ([`InitSipi`], carried by
//! `KVM_GET/SET_MP_STATE` and `KVM_GET/SET_VCPU_EVENTS`).
//!
//! # What the glue does
//!
//! The kernel glue keeps one `Lapic` per vCPU under a lock and:
//! - routes guest accesses to it: MMIO in the 4 KiB at [`Lapic::mmio_base`]
//!   ([`Lapic::read`], [`Lapic::write`]), RDMSR/WRMSR of 0x800-0x8FF
//!   ([`Lapic::rdmsr`], [`Lapic::wrmsr`]), of `IA32_TSC_DEADLINE` and of
//!   `IA32_APIC_BASE` ([`Lapic::set_apic_base`]), and CR8 ([`Lapic::cr8`]);
//! - acts on the returned [`Effect`]: injects #GP, sends an IPI (for each vCPU
//!   whose APIC [`Lapic::matches`] the destination, [`Lapic::deliver`] to it
//!   and kick it), tells the IOAPIC of an EOI (`KVM_EXIT_IOAPIC_EOI` with a
//!   split irqchip), recomputes its routing after an ID, LDR, DFR, enable or
//!   mode change, programs its timer;
//! - owns one hrtimer per vCPU, on the clock whose nanoseconds it passes as
//!   `now_ns`: [`TimerAction::At`] arms it at that absolute time,
//!   [`TimerAction::AtTsc`] at the time the guest TSC reaches the value (at
//!   once if it already has), [`TimerAction::Cancel`] cancels it; when it
//!   fires it calls [`Lapic::timer_expired`], kicks the vCPU if an interrupt
//!   was accepted, and rearms at [`Expiry::next`];
//! - before each entry, asks [`Lapic::has_interrupt`]; if the guest can take
//!   an interrupt, [`Lapic::ack`] moves it to service and the vCPU injects
//!   that vector, else it requests an interrupt window (TPR changes come back
//!   as [`Effect::Tpr`]). NMI, SMI, INIT, SIPI and ExtINT come back from
//!   [`Lapic::deliver`] as [`Accepted`] for the glue (INIT and SIPI through
//!   [`InitSipi`]);
//! - implements `KVM_GET/SET_LAPIC` with [`Lapic::get_state`] and
//!   [`Lapic::set_state`], given the VM's `KVM_CAP_X2APIC_API` flags.
//!
//! Lowest-priority delivery is not arbitrated by priority (neither does KVM):
//! the glue may deliver it like fixed to the first matching APIC, or, as KVM
//! does by default, to the one [`lowest_priority_target`] picks among the
//! matching software-enabled APICs.

/// Bytes of `struct kvm_lapic_state`: the xAPIC register page.
pub const STATE_SIZE: usize = 1024;
/// Bytes of the xAPIC MMIO window.
pub const MMIO_SIZE: u64 = 0x1000;
/// The first x2APIC MSR: register `offset` is MSR `0x800 + offset / 16`.
pub const X2APIC_MSR_FIRST: u32 = 0x800;
/// The last x2APIC MSR.
pub const X2APIC_MSR_LAST: u32 = 0x8ff;
/// `IA32_TSC_DEADLINE`.
pub const TSC_DEADLINE_MSR: u32 = 0x6e0;
/// The xAPIC base address after RESET.
pub const DEFAULT_BASE: u64 = 0xfee0_0000;
/// KVM's APIC bus cycle (`APIC_BUS_CYCLE_NS`): a 1 GHz bus, the default of
/// `KVM_CAP_X86_APIC_BUS_CYCLES_NS`.
pub const BUS_CYCLE_NS: u64 = 1;
/// The shortest periodic timer period, as KVM's `min_timer_period_us`
/// (200 us): a shorter one is stretched to it, so that a guest cannot keep a
/// host CPU busy with timer interrupts.
pub const MIN_PERIODIC_NS: u64 = 200_000;
/// Version register bits 7:0: KVM's 0x14 (an integrated APIC).
const VERSION: u32 = 0x14;
/// Version register bit 24: EOI-broadcast suppression (directed EOI) offered.
pub const VERSION_DIRECTED_EOI: u32 = 1 << 24;
/// SVR bit 8: the APIC is software-enabled.
pub const SVR_ENABLE: u32 = 1 << 8;
/// SVR bit 12: EOI-broadcast suppression (writable only if offered).
pub const SVR_SUPPRESS_EOI_BROADCAST: u32 = 1 << 12;

/// The xAPIC MMIO offsets of the registers, which are also their offsets in
/// `struct kvm_lapic_state`.
pub mod reg {
    /// Local APIC ID (xAPIC: bits 31:24; x2APIC: all 32 bits, read-only).
    pub const ID: u32 = 0x20;
    /// Version (read-only).
    pub const VERSION: u32 = 0x30;
    /// Task priority.
    pub const TPR: u32 = 0x80;
    /// Arbitration priority (xAPIC only; reads 0, as in KVM).
    pub const APR: u32 = 0x90;
    /// Processor priority (read-only).
    pub const PPR: u32 = 0xa0;
    /// End of interrupt (write-only).
    pub const EOI: u32 = 0xb0;
    /// Remote read (not implemented, as in KVM).
    pub const RRD: u32 = 0xc0;
    /// Logical destination (read-only in x2APIC mode).
    pub const LDR: u32 = 0xd0;
    /// Destination format (xAPIC only).
    pub const DFR: u32 = 0xe0;
    /// Spurious interrupt vector.
    pub const SVR: u32 = 0xf0;
    /// In-service register: eight registers, 0x100-0x170, 32 vectors each.
    pub const ISR: u32 = 0x100;
    /// Trigger mode register: 0x180-0x1f0.
    pub const TMR: u32 = 0x180;
    /// Interrupt request register: 0x200-0x270.
    pub const IRR: u32 = 0x200;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// LVT corrected machine-check interrupt (only with `MCG_CMCI_P`).
    pub const LVT_CMCI: u32 = 0x2f0;
    /// Interrupt command, bits 31:0 (x2APIC: the 64-bit MSR 0x830).
    pub const ICR: u32 = 0x300;
    /// Interrupt command, bits 63:32 (xAPIC only).
    pub const ICR2: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT thermal sensor.
    pub const LVT_THERMAL: u32 = 0x330;
    /// LVT performance-monitoring counters.
    pub const LVT_PMC: u32 = 0x340;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INITIAL: u32 = 0x380;
    /// Timer current count (read-only).
    pub const TIMER_CURRENT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIVIDE: u32 = 0x3e0;
    /// Self IPI (x2APIC only, write-only).
    pub const SELF_IPI: u32 = 0x3f0;
}

/// `IA32_APIC_BASE` bits.
pub mod base {
    /// BSP: this is the bootstrap processor.
    pub const BSP: u64 = 1 << 8;
    /// EXTD: x2APIC mode.
    pub const EXTD: u64 = 1 << 10;
    /// EN: the APIC is enabled.
    pub const EN: u64 = 1 << 11;
    /// Bits that are reserved whatever the CPU: 7:0 and 9.
    pub const RESERVED: u64 = 0x2ff;
}

/// Bits of an LVT entry.
pub mod lvt {
    /// Vector.
    pub const VECTOR: u32 = 0xff;
    /// Delivery mode, bits 10:8 (LINT0/1, thermal, PMC, CMCI).
    pub const MODE: u32 = 0x700;
    /// Delivery status (read-only; always 0 here: delivery is immediate).
    pub const STATUS: u32 = 1 << 12;
    /// Input pin polarity, active low (LINT0/1).
    pub const POLARITY: u32 = 1 << 13;
    /// Remote IRR (read-only; not modelled, reads 0).
    pub const REMOTE_IRR: u32 = 1 << 14;
    /// Trigger mode, level (LINT0/1).
    pub const LEVEL: u32 = 1 << 15;
    /// Mask.
    pub const MASKED: u32 = 1 << 16;
    /// Timer mode, bits 18:17 (LVT timer).
    pub const TIMER_MODE: u32 = 3 << 17;
}

/// Error status register bits this model sets.
pub mod esr {
    /// The APIC was asked to send a fixed or lowest-priority IPI with a
    /// vector below 16.
    pub const SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
    /// The APIC received, or its LVT generated, a fixed interrupt with a
    /// vector below 16.
    pub const RECEIVE_ILLEGAL_VECTOR: u32 = 1 << 6;
}

/// ICR bit 12: delivery status (send pending); always clear here.
const ICR_BUSY: u32 = 1 << 12;
/// The x2APIC ICR's reserved bits (a write with any set is #GP, as in KVM):
/// 31:20, 17:16 and 13.
const X2APIC_ICR_RESERVED: u64 = 0xfff0_0000 | 0x3_0000 | 1 << 13;

/// The LVT entries, in the order of their registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lvt {
    /// Corrected machine-check interrupt (0x2f0).
    Cmci,
    /// Timer (0x320).
    Timer,
    /// Thermal sensor (0x330).
    Thermal,
    /// Performance-monitoring counters (0x340).
    Pmc,
    /// LINT0 pin (0x350).
    Lint0,
    /// LINT1 pin (0x360).
    Lint1,
    /// Error (0x370).
    Error,
}

impl Lvt {
    /// All entries.
    pub const ALL: [Lvt; 7] = [
        Lvt::Cmci,
        Lvt::Timer,
        Lvt::Thermal,
        Lvt::Pmc,
        Lvt::Lint0,
        Lvt::Lint1,
        Lvt::Error,
    ];

    /// The entry's register offset.
    pub fn offset(self) -> u32 {
        match self {
            Lvt::Cmci => reg::LVT_CMCI,
            Lvt::Timer => reg::LVT_TIMER,
            Lvt::Thermal => reg::LVT_THERMAL,
            Lvt::Pmc => reg::LVT_PMC,
            Lvt::Lint0 => reg::LVT_LINT0,
            Lvt::Lint1 => reg::LVT_LINT1,
            Lvt::Error => reg::LVT_ERROR,
        }
    }

    /// The bits a write keeps. The delivery status and remote IRR bits are
    /// read-only (SDM; KVM lets the guest write them) and the delivery mode
    /// exists only where the SDM gives the entry one.
    fn writable(self, timer_modes: u32) -> u32 {
        let common = lvt::VECTOR | lvt::MASKED;
        match self {
            Lvt::Timer => common | timer_modes,
            Lvt::Thermal | Lvt::Pmc | Lvt::Cmci => common | lvt::MODE,
            Lvt::Lint0 | Lvt::Lint1 => common | lvt::MODE | lvt::POLARITY | lvt::LEVEL,
            Lvt::Error => common,
        }
    }

    fn from_offset(offset: u32) -> Option<Lvt> {
        Lvt::ALL.into_iter().find(|l| l.offset() == offset)
    }
}

/// A delivery mode: ICR, LVT and MSI bits 10:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// 000: the vector, to every destination.
    Fixed,
    /// 001: the vector, to one of the destinations.
    LowestPriority,
    /// 010: SMI.
    Smi,
    /// 011: remote read (reserved; dropped).
    RemoteRead,
    /// 100: NMI.
    Nmi,
    /// 101: INIT (with level de-assert, an INIT the receivers ignore).
    Init,
    /// 110: start-up IPI (SIPI); the vector is the start page.
    StartUp,
    /// 111: ExtINT: the vector comes from the 8259A PIC.
    ExtInt,
}

impl DeliveryMode {
    /// The mode in bits 10:8 of `value`.
    pub fn from_bits(value: u32) -> Self {
        match (value >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            3 => DeliveryMode::RemoteRead,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            _ => DeliveryMode::ExtInt,
        }
    }

    /// The mode as bits 10:8.
    pub fn bits(self) -> u32 {
        let n = match self {
            DeliveryMode::Fixed => 0,
            DeliveryMode::LowestPriority => 1,
            DeliveryMode::Smi => 2,
            DeliveryMode::RemoteRead => 3,
            DeliveryMode::Nmi => 4,
            DeliveryMode::Init => 5,
            DeliveryMode::StartUp => 6,
            DeliveryMode::ExtInt => 7,
        };
        n << 8
    }
}

/// An ICR destination shorthand (bits 19:18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// 00: the destination field.
    None,
    /// 01: the sender only.
    ToSelf,
    /// 10: every APIC, the sender included.
    AllIncludingSelf,
    /// 11: every APIC but the sender.
    AllExcludingSelf,
}

/// The interrupt a message carries, whoever sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupt {
    /// Vector (the start page for a SIPI; ignored for NMI, SMI, INIT).
    pub vector: u8,
    /// Delivery mode.
    pub mode: DeliveryMode,
    /// Level: assert (ICR bit 14). An edge is always an assert.
    pub level: bool,
    /// Trigger mode: level (ICR bit 15), edge when false.
    pub trigger_level: bool,
}

/// Where a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The destination field: an 8-bit xAPIC ID or logical mask, or a 32-bit
    /// x2APIC one.
    pub id: u32,
    /// Logical destination mode (ICR bit 11), physical when false.
    pub logical: bool,
    /// Shorthand.
    pub shorthand: Shorthand,
}

/// A decoded ICR: an IPI to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icr {
    /// What it carries.
    pub interrupt: Interrupt,
    /// Where it goes.
    pub destination: Destination,
}

impl Icr {
    /// Decodes ICR bits 31:0 (`low`) and 63:32 (`high`): in xAPIC mode the
    /// destination is `high` bits 31:24, in x2APIC mode all of `high`.
    pub fn decode(low: u32, high: u32, x2apic: bool) -> Self {
        let shorthand = match (low >> 18) & 3 {
            0 => Shorthand::None,
            1 => Shorthand::ToSelf,
            2 => Shorthand::AllIncludingSelf,
            _ => Shorthand::AllExcludingSelf,
        };
        Icr {
            interrupt: Interrupt {
                vector: low as u8,
                mode: DeliveryMode::from_bits(low),
                level: low & (1 << 14) != 0,
                trigger_level: low & (1 << 15) != 0,
            },
            destination: Destination {
                id: if x2apic { high } else { high >> 24 },
                logical: low & (1 << 11) != 0,
                shorthand,
            },
        }
    }
}

/// An EOI: the vector that left service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eoi {
    /// The vector.
    pub vector: u8,
    /// Its TMR bit was set: it was accepted level-triggered, so the IOAPIC
    /// line that sent it must hear of the EOI (`KVM_EXIT_IOAPIC_EOI` with a
    /// split irqchip).
    pub level: bool,
    /// SVR bit 12 is set: the guest asked for no EOI broadcast, it will EOI
    /// the IOAPIC itself (directed EOI).
    pub suppress_broadcast: bool,
}

/// What the glue's timer must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerAction {
    /// Cancel it: nothing is armed.
    Cancel,
    /// Fire at this time (nanoseconds of the glue's clock).
    At(u64),
    /// TSC-deadline mode: fire when the guest's TSC reaches this value.
    AtTsc(u64),
}

/// The timer mode of LVT timer bits 18:17.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimerMode {
    /// 00: counts down once from the initial count.
    #[default]
    OneShot,
    /// 01: reloads the initial count at zero.
    Periodic,
    /// 10: fires at `IA32_TSC_DEADLINE` (only if the guest's CPUID has it).
    TscDeadline,
    /// 11: reserved; a write of the initial count arms nothing.
    Reserved,
}

impl TimerMode {
    /// The mode of an LVT timer value.
    pub fn from_lvt(value: u32) -> Self {
        match (value >> 17) & 3 {
            0 => TimerMode::OneShot,
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::Reserved,
        }
    }
}

/// The APIC's mode, from `IA32_APIC_BASE` EN and EXTD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// EN=0: no APIC; its MMIO page reads all ones, its MSRs #GP.
    Disabled,
    /// EN=1, EXTD=0: registers in the MMIO page.
    XApic,
    /// EN=1, EXTD=1: registers as MSRs 0x800-0x8FF.
    X2Apic,
}

impl Mode {
    /// The mode of an `IA32_APIC_BASE` value; `None` for EXTD without EN.
    pub fn of(apic_base: u64) -> Option<Mode> {
        match (apic_base & base::EN != 0, apic_base & base::EXTD != 0) {
            (false, false) => Some(Mode::Disabled),
            (true, false) => Some(Mode::XApic),
            (true, true) => Some(Mode::X2Apic),
            (false, true) => None,
        }
    }
}

/// What the caller of a register access must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing.
    None,
    /// Inject #GP(0) (an MSR access; MMIO never faults).
    Gp,
    /// Send this IPI.
    Ipi(Icr),
    /// Program the timer.
    Timer(TimerAction),
    /// An EOI took this vector out of service.
    Eoi(Eoi),
    /// The TPR changed: a pending interrupt may be deliverable, or no
    /// longer.
    Tpr,
    /// SVR bit 8 changed to this: recompute routing (a software-disabled
    /// APIC takes no fixed interrupts; all its LVT entries are now masked).
    SoftwareEnable(bool),
    /// The APIC ID, LDR or DFR changed: recompute routing.
    Routing,
    /// `IA32_APIC_BASE` changed (mode or MMIO base): recompute routing and
    /// the MMIO range. When [`Mode::Disabled`], the registers were reset and
    /// the timer stopped: cancel it.
    ApicBase(Mode),
}

/// What an APIC did with a message ([`Lapic::deliver`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Nothing: refused (disabled APIC, illegal vector, de-assert, reserved
    /// mode).
    Dropped,
    /// Its IRR bit is set: kick the vCPU.
    Fixed,
    /// Inject an NMI.
    Nmi,
    /// Inject an SMI.
    Smi,
    /// Latch an INIT ([`InitSipi::receive`]).
    Init,
    /// A SIPI with this vector ([`InitSipi::receive`]).
    Sipi(u8),
    /// Take the vector from the PIC (LINT0 in ExtINT mode).
    ExtInt,
}

/// What [`Lapic::timer_expired`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// The LVT timer's vector was accepted into the IRR: kick the vCPU.
    pub interrupt: bool,
    /// Rearm the timer at this time (periodic mode, or a call before the
    /// expiry time).
    pub next: Option<u64>,
}

/// A decoded LVT entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LvtEntry {
    /// Vector.
    pub vector: u8,
    /// Delivery mode (always fixed for the timer and error entries).
    pub mode: DeliveryMode,
    /// Masked.
    pub masked: bool,
    /// Level-triggered (LINT0/1).
    pub trigger_level: bool,
    /// Active low (LINT0/1).
    pub active_low: bool,
}

/// What the APIC depends on outside it: the vCPU, its CPUID and the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The vCPU's id: its x2APIC ID and initial xAPIC ID (KVM's model: the
    /// x2APIC ID is read-only and equals the vCPU id).
    pub vcpu_id: u32,
    /// This vCPU is the VM's BSP at RESET (`KVM_SET_BOOT_CPU_ID`, 0 by
    /// default): `IA32_APIC_BASE.BSP` and, with `lint0_extint`, LINT0.
    pub bsp: bool,
    /// The guest's CPUID has x2APIC: EXTD may be set.
    pub x2apic: bool,
    /// The guest's CPUID has the TSC-deadline timer: LVT timer bit 18 is
    /// writable.
    pub tsc_deadline: bool,
    /// `MCG_CAP.MCG_CMCI_P`: the CMCI LVT entry exists (seven LVT entries,
    /// else six).
    pub cmci: bool,
    /// Offer directed EOI (version bit 24, SVR bit 12): KVM does with x2APIC
    /// in CPUID and a split irqchip.
    pub directed_eoi: bool,
    /// The APIC bus cycle in ns (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`); 0 is
    /// taken as 1.
    pub bus_cycle_ns: u64,
    /// The guest's physical address width: bits of `IA32_APIC_BASE` above
    /// it are reserved.
    pub maxphyaddr: u32,
    /// `KVM_X86_QUIRK_LINT0_REENABLED` (on unless userspace disables it):
    /// the BSP's LINT0 is unmasked ExtINT after RESET and INIT, so the PIC
    /// reaches it before the guest programs its APIC.
    pub lint0_extint: bool,
}

impl Config {
    /// KVM's defaults for vCPU `vcpu_id`: BSP if 0, x2APIC and TSC deadline
    /// in CPUID, no CMCI, no directed EOI, a 1 GHz bus, 36 physical address
    /// bits, the LINT0 quirk.
    pub fn new(vcpu_id: u32) -> Self {
        Config {
            vcpu_id,
            bsp: vcpu_id == 0,
            x2apic: true,
            tsc_deadline: true,
            cmci: false,
            directed_eoi: false,
            bus_cycle_ns: BUS_CYCLE_NS,
            maxphyaddr: 36,
            lint0_extint: true,
        }
    }
}

/// Why `KVM_SET_LAPIC` fails (`EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// In x2APIC mode with `KVM_X2APIC_API_USE_32BIT_IDS`, the ID register
    /// is not the vCPU's x2APIC ID.
    X2apicIdMismatch,
}

/// The interrupt and destination of a message from the IOAPIC or an MSI
/// (`super::msi::IrqMessage`, which has no shorthand): as KVM's
/// `kvm_irq_delivery_to_apic()` takes a `struct kvm_lapic_irq`. A logical
/// destination with the MSI redirection hint is lowest priority.
pub fn from_message(m: &super::msi::IrqMessage) -> (Interrupt, Destination) {
    use super::msi::{
        DestMode,
        Trigger, //
    };
    let logical = m.dest_mode == DestMode::Logical;
    let mut mode = DeliveryMode::from_bits(u32::from(m.delivery_mode.bits()) << 8);
    if m.redirect_hint && logical && mode == DeliveryMode::Fixed {
        mode = DeliveryMode::LowestPriority;
    }
    (
        Interrupt {
            vector: m.vector,
            mode,
            level: m.level,
            trigger_level: m.trigger == Trigger::Level,
        },
        Destination {
            id: m.dest_id,
            logical,
            shorthand: Shorthand::None,
        },
    )
}

/// The divisor of a divide configuration register value: bits 3, 1:0 (bit
/// 2 is not part of it) encode 2, 4, 8, 16, 32, 64, 128, 1 for 000 to 111.
pub fn divisor(tdcr: u32) -> u32 {
    1 << divide_shift(tdcr)
}

fn divide_shift(tdcr: u32) -> u32 {
    let code = (tdcr & 3) | ((tdcr & 8) >> 1);
    (code + 1) & 7
}

/// The time `count` timer ticks take at `divisor` and a bus cycle of
/// `bus_cycle_ns` (KVM: count x bus cycle x divisor). Saturates.
pub fn timer_period_ns(count: u32, divisor: u32, bus_cycle_ns: u64) -> u64 {
    u64::from(count)
        .saturating_mul(bus_cycle_ns.max(1))
        .saturating_mul(u64::from(divisor))
}

/// The current count when `remaining_ns` are left before the counter
/// reaches zero.
pub fn current_count(remaining_ns: u64, divisor: u32, bus_cycle_ns: u64) -> u64 {
    remaining_ns
        .checked_div(bus_cycle_ns.max(1).saturating_mul(u64::from(divisor)))
        .unwrap_or(0)
}

/// The processor priority for a task priority and the highest in-service
/// vector (SDM): the higher class of the two, with the TPR's low bits if the
/// TPR's class wins.
pub fn ppr(tpr: u8, highest_isr: Option<u8>) -> u8 {
    let isrv = highest_isr.unwrap_or(0);
    if tpr & 0xf0 >= isrv & 0xf0 {
        tpr
    } else {
        isrv & 0xf0
    }
}

/// The x2APIC logical ID of x2APIC ID `id`: the cluster (`id` / 16) in bits
/// 31:16, one bit for `id` mod 16 in bits 15:0.
pub fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xf))
}

/// Which of `candidates` matching APICs gets a lowest-priority interrupt,
/// as KVM's default "vector hashing": the (vector mod n)-th. `None` if
/// there are none.
pub fn lowest_priority_target(vector: u8, candidates: usize) -> Option<usize> {
    usize::from(vector).checked_rem(candidates)
}

/// The timer beyond its registers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TimerState {
    /// The mode in effect (LVT timer bits 18:17 the CPUID allows).
    mode: TimerMode,
    /// The initial count's time at the current divisor, stretched to
    /// [`MIN_PERIODIC_NS`] in periodic mode; 0 when stopped.
    period_ns: u64,
    /// When the armed one-shot or periodic timer reaches zero.
    target_ns: Option<u64>,
    /// `IA32_TSC_DEADLINE`; 0 is disarmed.
    tsc_deadline: u64,
}

/// One vCPU's local APIC.
#[derive(Clone, Debug)]
pub struct Lapic {
    config: Config,
    /// The register page: the first 4 bytes of each 16-byte slot.
    regs: [u32; STATE_SIZE / 16],
    /// `IA32_APIC_BASE`.
    apic_base: u64,
    timer: TimerState,
    /// Errors detected since the last ESR write.
    esr_pending: u32,
}

impl Lapic {
    /// An APIC after power-on RESET.
    pub fn new(config: Config) -> Self {
        let mut apic = Lapic {
            config,
            regs: [0; STATE_SIZE / 16],
            apic_base: 0,
            timer: TimerState::default(),
            esr_pending: 0,
        };
        apic.reset(false);
        apic
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Changes the configuration (after `KVM_SET_CPUID2` or
    /// `KVM_X86_SETUP_MCE`; the vCPU id stays): the version register
    /// follows, a CMCI entry that appears is masked, and a timer mode the
    /// CPUID no longer allows stops the timer (the returned effect).
    pub fn set_config(&mut self, config: Config) -> Effect {
        let had_cmci = self.config.cmci;
        self.config = config;
        if config.cmci && !had_cmci {
            self.put(reg::LVT_CMCI, lvt::MASKED);
        }
        self.update_version();
        self.update_timer_mode()
    }

    /// RESET (`init` false: power-on, `IA32_APIC_BASE` and the ID too) or
    /// INIT (`init` true: the mode and ID are kept, in x2APIC mode the LDR
    /// too). The timer is stopped: the glue cancels its own.
    pub fn reset(&mut self, init: bool) {
        if !init {
            self.apic_base = DEFAULT_BASE | base::EN;
            if self.config.bsp {
                self.apic_base |= base::BSP;
            }
            self.put(reg::ID, self.config.vcpu_id << 24);
        }
        self.reset_registers();
    }

    fn reset_registers(&mut self) {
        let x2apic = self.x2apic();
        let id = self.get(reg::ID);
        let ldr = self.get(reg::LDR);
        self.regs = [0; STATE_SIZE / 16];
        self.put(reg::ID, id);
        if x2apic {
            self.put(reg::LDR, ldr);
        }
        self.update_version();
        for l in Lvt::ALL {
            self.put(l.offset(), lvt::MASKED);
        }
        if self.config.bsp && self.config.lint0_extint {
            self.put(reg::LVT_LINT0, DeliveryMode::ExtInt.bits());
        }
        self.put(reg::DFR, 0xffff_ffff);
        self.put(reg::SVR, 0xff);
        self.timer = TimerState::default();
        self.esr_pending = 0;
    }

    // Registers.

    fn get(&self, offset: u32) -> u32 {
        self.regs.get((offset >> 4) as usize).copied().unwrap_or(0)
    }

    fn put(&mut self, offset: u32, value: u32) {
        if let Some(r) = self.regs.get_mut((offset >> 4) as usize) {
            *r = value;
        }
    }

    /// The raw value of the register at `offset` (no side effect; the
    /// current count register holds 0, see [`Lapic::read`]).
    pub fn register(&self, offset: u32) -> u32 {
        self.get(offset)
    }

    fn test_vector(&self, bitmap: u32, vector: u8) -> bool {
        let v = u32::from(vector);
        self.get(bitmap + (v >> 5) * 0x10) & (1 << (v & 31)) != 0
    }

    fn set_vector(&mut self, bitmap: u32, vector: u8, on: bool) {
        let v = u32::from(vector);
        let offset = bitmap + (v >> 5) * 0x10;
        let old = self.get(offset);
        let new = if on {
            old | 1 << (v & 31)
        } else {
            old & !(1 << (v & 31))
        };
        self.put(offset, new);
    }

    fn highest_vector(&self, bitmap: u32) -> Option<u8> {
        (0..8u32).rev().find_map(|i| {
            let bits = self.get(bitmap + i * 0x10);
            let top = 31u32.checked_sub(bits.leading_zeros())?;
            u8::try_from(i * 32 + top).ok()
        })
    }

    fn update_version(&mut self) {
        let entries: u32 = if self.config.cmci { 7 } else { 6 };
        let mut v = VERSION | (entries - 1) << 16;
        if self.config.directed_eoi {
            v |= VERSION_DIRECTED_EOI;
        }
        self.put(reg::VERSION, v);
    }

    fn update_ppr(&mut self) {
        let p = ppr(self.get(reg::TPR) as u8, self.highest_isr());
        self.put(reg::PPR, u32::from(p));
    }

    fn timer_modes(&self) -> u32 {
        if self.config.tsc_deadline {
            lvt::TIMER_MODE
        } else {
            1 << 17
        }
    }

    // Mode and identity.

    /// `IA32_APIC_BASE`.
    pub fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        Mode::of(self.apic_base).unwrap_or(Mode::Disabled)
    }

    fn hw_enabled(&self) -> bool {
        self.apic_base & base::EN != 0
    }

    fn x2apic(&self) -> bool {
        self.mode() == Mode::X2Apic
    }

    /// SVR bit 8.
    pub fn sw_enabled(&self) -> bool {
        self.get(reg::SVR) & SVR_ENABLE != 0
    }

    /// Enabled in `IA32_APIC_BASE` and by software: it takes fixed
    /// interrupts.
    pub fn enabled(&self) -> bool {
        self.hw_enabled() && self.sw_enabled()
    }

    /// `IA32_APIC_BASE.BSP`.
    pub fn is_bsp(&self) -> bool {
        self.apic_base & base::BSP != 0
    }

    /// The APIC ID destinations are matched against: the x2APIC ID in
    /// x2APIC mode, else the xAPIC ID (ID bits 31:24, which the guest may
    /// change).
    pub fn id(&self) -> u32 {
        if self.x2apic() {
            self.config.vcpu_id
        } else {
            self.get(reg::ID) >> 24
        }
    }

    /// The guest-physical address of the MMIO page.
    pub fn mmio_base(&self) -> u64 {
        self.apic_base & !(MMIO_SIZE - 1) & !self.reserved_address_bits()
    }

    /// The MMIO page holds the registers: xAPIC mode. Otherwise (disabled or
    /// x2APIC) [`Lapic::read`] returns all ones and [`Lapic::write`] does
    /// nothing, as KVM with `KVM_X86_QUIRK_LAPIC_MMIO_HOLE`.
    pub fn mmio_active(&self) -> bool {
        self.mode() == Mode::XApic
    }

    fn reserved_address_bits(&self) -> u64 {
        u64::MAX.checked_shl(self.config.maxphyaddr).unwrap_or(0)
    }

    /// The spurious-interrupt vector (SVR bits 7:0). A CPU takes it when an
    /// interrupt it was signalled is masked before it acknowledges it; here
    /// [`Lapic::ack`] is atomic, so the glue never needs it.
    pub fn spurious_vector(&self) -> u8 {
        self.get(reg::SVR) as u8
    }

    /// LVT entry `which`, decoded.
    pub fn lvt(&self, which: Lvt) -> LvtEntry {
        let v = self.get(which.offset());
        LvtEntry {
            vector: v as u8,
            mode: DeliveryMode::from_bits(v),
            masked: v & lvt::MASKED != 0,
            trigger_level: v & lvt::LEVEL != 0,
            active_low: v & lvt::POLARITY != 0,
        }
    }

    /// The 8259A PIC's INTR reaches this vCPU: the APIC is disabled in
    /// `IA32_APIC_BASE`, or LINT0 is unmasked ExtINT (KVM's
    /// `kvm_apic_accept_pic_intr()`).
    pub fn accepts_pic_interrupt(&self) -> bool {
        let lint0 = self.lvt(Lvt::Lint0);
        !self.hw_enabled() || (!lint0.masked && lint0.mode == DeliveryMode::ExtInt)
    }

    /// `IA32_APIC_BASE` is written with `value` by the guest's WRMSR
    /// (`host_initiated` false) or by userspace. #GP: reserved bits (7:0, 9,
    /// above MAXPHYADDR, EXTD without x2APIC in CPUID), EXTD without EN, and
    /// for the guest the transitions the SDM forbids: x2APIC to xAPIC (go
    /// through disabled) and disabled to x2APIC. Enabling sets the xAPIC ID
    /// to the vCPU id, entering x2APIC mode sets the x2APIC ID and its LDR,
    /// as KVM. Disabling resets the registers and stops the timer: the SDM
    /// keeps only the ID across it (KVM keeps all registers, but delivers
    /// nothing to a disabled APIC).
    pub fn set_apic_base(&mut self, value: u64, host_initiated: bool) -> Effect {
        if value == self.apic_base {
            return Effect::None;
        }
        let mut reserved = base::RESERVED | self.reserved_address_bits();
        if !self.config.x2apic {
            reserved |= base::EXTD;
        }
        let Some(new) = Mode::of(value) else {
            return Effect::Gp;
        };
        let old = self.mode();
        if value & reserved != 0
            || (!host_initiated
                && matches!(
                    (old, new),
                    (Mode::X2Apic, Mode::XApic) | (Mode::Disabled, Mode::X2Apic)
                ))
        {
            return Effect::Gp;
        }
        self.apic_base = value;
        let id = self.config.vcpu_id;
        match (old, new) {
            (Mode::XApic | Mode::X2Apic, Mode::Disabled) => {
                self.put(reg::ID, id << 24);
                self.reset_registers();
            }
            (Mode::Disabled | Mode::X2Apic, Mode::XApic) => self.put(reg::ID, id << 24),
            (Mode::Disabled | Mode::XApic, Mode::X2Apic) => {
                self.put(reg::ID, id);
                self.put(reg::LDR, x2apic_ldr(id));
            }
            _ => {}
        }
        Effect::ApicBase(new)
    }

    // Register accesses.

    fn readable(&self, offset: u32) -> bool {
        match offset {
            reg::ID
            | reg::VERSION
            | reg::TPR
            | reg::PPR
            | reg::LDR
            | reg::SVR
            | reg::ESR
            | reg::ICR
            | reg::LVT_TIMER
            | reg::LVT_THERMAL
            | reg::LVT_PMC
            | reg::LVT_LINT0
            | reg::LVT_LINT1
            | reg::LVT_ERROR
            | reg::TIMER_INITIAL
            | reg::TIMER_CURRENT
            | reg::TIMER_DIVIDE => true,
            0x100..=0x270 => offset & 0xf == 0,
            reg::LVT_CMCI => self.config.cmci,
            reg::APR | reg::DFR | reg::ICR2 => !self.x2apic(),
            _ => false,
        }
    }

    fn read_register(&self, offset: u32, now_ns: u64) -> Option<u32> {
        if !self.readable(offset) {
            return None;
        }
        Some(match offset {
            reg::APR => 0,
            reg::TIMER_CURRENT => self.current_count(now_ns),
            _ => self.get(offset),
        })
    }

    /// A guest MMIO read of `len` bytes at `offset` in the page. As KVM: 1,
    /// 2 or 4 bytes within the first 4 of a register's 16 (anything else
    /// reads 0); write-only, reserved and absent registers read 0 (EOI, RRD,
    /// self IPI, CMCI without `MCG_CMCI_P`); all ones when the page is not
    /// active ([`Lapic::mmio_active`]).
    pub fn read(&self, offset: u32, len: u32, now_ns: u64) -> u64 {
        if !self.mmio_active() {
            return u64::MAX
                .checked_shr(64u32.saturating_sub(len.saturating_mul(8)))
                .unwrap_or(0);
        }
        let align = offset & 0xf;
        if !matches!(len, 1 | 2 | 4) || align + len > 4 || offset >= 0x400 {
            return 0;
        }
        let Some(value) = self.read_register(offset & !0xf, now_ns) else {
            return 0;
        };
        let bytes = u64::from(value) >> (align * 8);
        bytes & (u64::MAX >> (64 - len * 8))
    }

    /// A guest MMIO write of `len` bytes of `value` at `offset` in the page.
    /// As KVM (SDM: registers are accessed as aligned dwords): anything but
    /// a 4-byte write at a register's start is ignored, and so are writes to
    /// read-only and absent registers; never #GP.
    pub fn write(&mut self, offset: u32, len: u32, value: u32, now_ns: u64) -> Effect {
        if !self.mmio_active() || len != 4 || offset & 0xf != 0 || offset >= 0x400 {
            return Effect::None;
        }
        self.write_register(offset, value, now_ns)
            .unwrap_or(Effect::None)
    }

    /// A guest RDMSR of x2APIC MSR `msr` (0x800-0x8FF); `None` is #GP: not in
    /// x2APIC mode, a write-only (EOI, self IPI), reserved or xAPIC-only
    /// (APR, DFR, ICR2) register. The ICR is one 64-bit register.
    pub fn rdmsr(&self, msr: u32, now_ns: u64) -> Option<u64> {
        let offset = self.msr_offset(msr)?;
        if offset == reg::ICR {
            return Some(u64::from(self.get(reg::ICR)) | u64::from(self.get(reg::ICR2)) << 32);
        }
        self.read_register(offset, now_ns).map(u64::from)
    }

    /// A guest WRMSR of x2APIC MSR `msr`. #GP: not in x2APIC mode, bits 63:32
    /// set (but in the ICR), reserved ICR bits, read-only registers (ID,
    /// version, PPR, LDR, ISR, TMR, IRR, current count), absent ones (APR,
    /// DFR, ICR2, RRD), a non-zero EOI or ESR, a self IPI beyond bits 7:0.
    /// Other reserved bits are dropped silently, as KVM does.
    pub fn wrmsr(&mut self, msr: u32, value: u64, now_ns: u64) -> Effect {
        let Some(offset) = self.msr_offset(msr) else {
            return Effect::Gp;
        };
        if offset == reg::ICR {
            if value & X2APIC_ICR_RESERVED != 0 {
                return Effect::Gp;
            }
            let low = value as u32 & !ICR_BUSY;
            let high = (value >> 32) as u32;
            self.put(reg::ICR, low);
            self.put(reg::ICR2, high);
            return self.send(low, high);
        }
        let Ok(value) = u32::try_from(value) else {
            return Effect::Gp;
        };
        // SDM: a non-zero write to the x2APIC EOI MSR is #GP (KVM ignores
        // the value).
        if offset == reg::EOI && value != 0 {
            return Effect::Gp;
        }
        self.write_register(offset, value, now_ns)
            .unwrap_or(Effect::Gp)
    }

    fn msr_offset(&self, msr: u32) -> Option<u32> {
        if !self.x2apic() || !(X2APIC_MSR_FIRST..=X2APIC_MSR_LAST).contains(&msr) {
            return None;
        }
        Some((msr - X2APIC_MSR_FIRST) << 4)
    }

    /// A register write, `Err` for an access that is #GP as an MSR (and
    /// ignored as MMIO).
    fn write_register(&mut self, offset: u32, value: u32, now_ns: u64) -> Result<Effect, ()> {
        let x2apic = self.x2apic();
        Ok(match offset {
            reg::ID if !x2apic => {
                self.put(reg::ID, value & 0xff00_0000);
                Effect::Routing
            }
            reg::TPR => {
                self.put(reg::TPR, value & 0xff);
                self.update_ppr();
                Effect::Tpr
            }
            reg::EOI => self.eoi(),
            reg::LDR if !x2apic => {
                self.put(reg::LDR, value & 0xff00_0000);
                Effect::Routing
            }
            reg::DFR if !x2apic => {
                self.put(reg::DFR, value | 0x0fff_ffff);
                Effect::Routing
            }
            reg::SVR => self.write_svr(value),
            reg::ICR if !x2apic => {
                let low = value & !ICR_BUSY;
                self.put(reg::ICR, low);
                self.send(low, self.get(reg::ICR2))
            }
            reg::ICR2 if !x2apic => {
                self.put(reg::ICR2, value & 0xff00_0000);
                Effect::None
            }
            reg::LVT_TIMER => {
                let mut value = value;
                if !self.sw_enabled() {
                    value |= lvt::MASKED;
                }
                self.put(
                    reg::LVT_TIMER,
                    value & Lvt::Timer.writable(self.timer_modes()),
                );
                self.update_timer_mode()
            }
            reg::LVT_CMCI
            | reg::LVT_THERMAL
            | reg::LVT_PMC
            | reg::LVT_LINT0
            | reg::LVT_LINT1
            | reg::LVT_ERROR => {
                let which = Lvt::from_offset(offset).ok_or(())?;
                if which == Lvt::Cmci && !self.config.cmci {
                    return Err(());
                }
                let mut value = value;
                if !self.sw_enabled() {
                    value |= lvt::MASKED;
                }
                self.put(offset, value & which.writable(0));
                Effect::None
            }
            reg::TIMER_INITIAL => {
                if self.timer.mode == TimerMode::TscDeadline {
                    return Ok(Effect::None);
                }
                self.put(reg::TIMER_INITIAL, value);
                Effect::Timer(self.start_timer(now_ns, value))
            }
            reg::TIMER_DIVIDE => self.write_divide(value, now_ns),
            reg::ESR => {
                if x2apic && value != 0 {
                    return Err(());
                }
                // A write latches the errors seen since the last one.
                self.put(reg::ESR, self.esr_pending);
                self.esr_pending = 0;
                Effect::None
            }
            reg::SELF_IPI if x2apic && value & !0xff == 0 => self.send(value | 1 << 18, 0),
            _ => return Err(()),
        })
    }

    fn write_svr(&mut self, value: u32) -> Effect {
        let mut mask = 0x3ff;
        if self.config.directed_eoi {
            mask |= SVR_SUPPRESS_EOI_BROADCAST;
        }
        let was = self.sw_enabled();
        self.put(reg::SVR, value & mask);
        let now = self.sw_enabled();
        if !now {
            for l in Lvt::ALL {
                let v = self.get(l.offset());
                self.put(l.offset(), v | lvt::MASKED);
            }
        }
        if was == now {
            Effect::None
        } else {
            Effect::SoftwareEnable(now)
        }
    }

    /// The ICR was written: the IPI, unless it is a fixed or lowest-priority
    /// one with a vector below 16, which sets ESR bit 5 and is not sent
    /// (its receivers would refuse it anyway).
    fn send(&mut self, low: u32, high: u32) -> Effect {
        let icr = Icr::decode(low, high, self.x2apic());
        let i = icr.interrupt;
        if matches!(i.mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority) && i.vector < 16 {
            self.raise_error(esr::SEND_ILLEGAL_VECTOR);
            return Effect::None;
        }
        Effect::Ipi(icr)
    }

    /// Records an error; the LVT error entry, unmasked, interrupts (unless
    /// its own vector is illegal, which is not reported again).
    fn raise_error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let e = self.lvt(Lvt::Error);
        if !e.masked && e.vector >= 16 && self.enabled() {
            self.set_irr(e.vector, false);
        }
    }

    // Interrupts.

    fn set_irr(&mut self, vector: u8, trigger_level: bool) {
        self.set_vector(reg::TMR, vector, trigger_level);
        self.set_vector(reg::IRR, vector, true);
    }

    /// A message (IPI, MSI, IOAPIC or LVT) reaches this APIC; what it does
    /// with it. Fixed and lowest priority: refused if the APIC is not
    /// enabled (IA32_APIC_BASE and SVR), for a level-triggered de-assert,
    /// and for vectors below 16 (ESR bit 6); else IRR set and TMR set to the
    /// trigger mode. INIT: refused for a level-triggered de-assert. The
    /// others are the glue's (SMI, NMI, SIPI, ExtINT); remote read is
    /// dropped.
    pub fn deliver(&mut self, irq: Interrupt) -> Accepted {
        match irq.mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                if (irq.trigger_level && !irq.level) || !self.enabled() {
                    return Accepted::Dropped;
                }
                if irq.vector < 16 {
                    self.raise_error(esr::RECEIVE_ILLEGAL_VECTOR);
                    return Accepted::Dropped;
                }
                self.set_irr(irq.vector, irq.trigger_level);
                Accepted::Fixed
            }
            DeliveryMode::Init if irq.trigger_level && !irq.level => Accepted::Dropped,
            DeliveryMode::Init => Accepted::Init,
            DeliveryMode::StartUp => Accepted::Sipi(irq.vector),
            DeliveryMode::Nmi => Accepted::Nmi,
            DeliveryMode::Smi => Accepted::Smi,
            DeliveryMode::ExtInt => Accepted::ExtInt,
            DeliveryMode::RemoteRead => Accepted::Dropped,
        }
    }

    /// A fixed interrupt: [`Lapic::deliver`] of an asserted `vector`; true
    /// if its IRR bit is now set.
    pub fn accept(&mut self, vector: u8, trigger_level: bool) -> bool {
        let irq = Interrupt {
            vector,
            mode: DeliveryMode::Fixed,
            level: true,
            trigger_level,
        };
        self.deliver(irq) == Accepted::Fixed
    }

    /// The local interrupt of LVT entry `which` (the timer, a LINT pin, ...):
    /// delivered to this APIC as its entry says, unless masked or the APIC
    /// is disabled in `IA32_APIC_BASE`.
    pub fn local_interrupt(&mut self, which: Lvt) -> Accepted {
        let e = self.lvt(which);
        if !self.hw_enabled() || e.masked || (which == Lvt::Cmci && !self.config.cmci) {
            return Accepted::Dropped;
        }
        self.deliver(Interrupt {
            vector: e.vector,
            mode: e.mode,
            level: true,
            trigger_level: e.trigger_level,
        })
    }

    /// The highest requested vector.
    pub fn highest_irr(&self) -> Option<u8> {
        self.highest_vector(reg::IRR)
    }

    /// The highest in-service vector.
    pub fn highest_isr(&self) -> Option<u8> {
        self.highest_vector(reg::ISR)
    }

    /// The processor priority.
    pub fn ppr(&self) -> u8 {
        self.get(reg::PPR) as u8
    }

    /// The vector the CPU would take now: the highest in the IRR, if its
    /// priority class is above the PPR's. `None` when the APIC is disabled
    /// in `IA32_APIC_BASE` (a software-disabled APIC still delivers what it
    /// had accepted, as KVM).
    pub fn has_interrupt(&self) -> Option<u8> {
        if !self.hw_enabled() {
            return None;
        }
        let v = self.highest_irr()?;
        (v & 0xf0 > self.ppr() & 0xf0).then_some(v)
    }

    /// The CPU takes the interrupt [`Lapic::has_interrupt`] offers: its IRR
    /// bit moves to the ISR and the PPR rises. The glue injects the vector.
    pub fn ack(&mut self) -> Option<u8> {
        let v = self.has_interrupt()?;
        self.set_vector(reg::IRR, v, false);
        self.set_vector(reg::ISR, v, true);
        self.update_ppr();
        Some(v)
    }

    /// End of interrupt: the highest in-service vector leaves service.
    /// [`Effect::Eoi`], or [`Effect::None`] if nothing was in service.
    pub fn eoi(&mut self) -> Effect {
        let Some(vector) = self.highest_isr() else {
            return Effect::None;
        };
        self.set_vector(reg::ISR, vector, false);
        self.update_ppr();
        Effect::Eoi(Eoi {
            vector,
            level: self.test_vector(reg::TMR, vector),
            suppress_broadcast: self.get(reg::SVR) & SVR_SUPPRESS_EOI_BROADCAST != 0,
        })
    }

    /// CR8: TPR bits 7:4.
    pub fn cr8(&self) -> u64 {
        u64::from((self.get(reg::TPR) >> 4) & 0xf)
    }

    /// A CR8 write (or `kvm_run->cr8`): TPR = `cr8` bits 3:0 << 4 (the
    /// caller #GPs on bits 63:4 for a guest MOV).
    pub fn set_cr8(&mut self, cr8: u64) -> Effect {
        self.put(reg::TPR, ((cr8 & 0xf) as u32) << 4);
        self.update_ppr();
        Effect::Tpr
    }

    /// The whole TPR set to `tpr`, in any mode (KVM's `apic_set_tpr()`, as
    /// the vAPIC page gives it back: `KVM_SET_VAPIC_ADDR`).
    pub fn set_tpr(&mut self, tpr: u8) -> Effect {
        self.put(reg::TPR, u32::from(tpr));
        self.update_ppr();
        Effect::Tpr
    }

    // Destinations.

    /// Whether a message for `dest` reaches this APIC. `is_source`: this
    /// APIC sent it (an IPI; false for IOAPIC and MSI messages).
    /// `ioapic_broadcast_quirk`: the message is an IOAPIC or MSI one and
    /// the VM has not set `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`, so, as
    /// in KVM, an x2APIC-mode APIC takes destination 0xFF as broadcast.
    ///
    /// Physical: the APIC ID, or broadcast (0xFF xAPIC, 0xFFFFFFFF x2APIC);
    /// a destination above 0xFF is matched against the x2APIC ID even in
    /// xAPIC mode (KVM's hotplug rule). Logical: the LDR; xAPIC flat (DFR
    /// 0xFFFFFFFF) is any common bit of the 8-bit masks, cluster (DFR
    /// 0x0FFFFFFF) the same cluster (bits 7:4) and a common bit in 3:0,
    /// x2APIC the same cluster (bits 31:16) and a common bit in 15:0. An
    /// APIC disabled in `IA32_APIC_BASE` matches nothing.
    pub fn matches(
        &self,
        dest: &Destination,
        is_source: bool,
        ioapic_broadcast_quirk: bool,
    ) -> bool {
        if !self.hw_enabled() {
            return false;
        }
        let x2apic = self.x2apic();
        let broadcast = if x2apic { u32::MAX } else { 0xff };
        let mda = if ioapic_broadcast_quirk && !is_source && x2apic && dest.id == 0xff {
            u32::MAX
        } else {
            dest.id
        };
        match dest.shorthand {
            Shorthand::ToSelf => is_source,
            Shorthand::AllIncludingSelf => true,
            Shorthand::AllExcludingSelf => !is_source,
            Shorthand::None if mda == broadcast => true,
            Shorthand::None if !dest.logical => {
                if x2apic || mda > 0xff {
                    mda == self.config.vcpu_id
                } else {
                    mda == self.get(reg::ID) >> 24
                }
            }
            Shorthand::None if x2apic => {
                let ldr = self.get(reg::LDR);
                ldr >> 16 == mda >> 16 && ldr & mda & 0xffff != 0
            }
            Shorthand::None => {
                let ldr = self.get(reg::LDR) >> 24;
                match self.get(reg::DFR) {
                    0xffff_ffff => ldr & mda != 0,
                    0x0fff_ffff => ldr >> 4 == mda >> 4 && ldr & mda & 0xf != 0,
                    _ => false,
                }
            }
        }
    }

    // Timer.

    /// The timer mode in effect.
    pub fn timer_mode(&self) -> TimerMode {
        self.timer.mode
    }

    /// What the glue's timer should be doing now (e.g. after
    /// [`Lapic::set_state`] or a migration to another host CPU).
    pub fn timer(&self) -> TimerAction {
        match self.timer.mode {
            TimerMode::TscDeadline if self.timer.tsc_deadline != 0 => {
                TimerAction::AtTsc(self.timer.tsc_deadline)
            }
            TimerMode::TscDeadline => TimerAction::Cancel,
            _ => self
                .timer
                .target_ns
                .map_or(TimerAction::Cancel, TimerAction::At),
        }
    }

    fn divisor(&self) -> u32 {
        divisor(self.get(reg::TIMER_DIVIDE))
    }

    fn count_ns(&self, count: u32) -> u64 {
        timer_period_ns(count, self.divisor(), self.config.bus_cycle_ns)
    }

    fn limit_period(&mut self) {
        if self.timer.mode == TimerMode::Periodic && self.timer.period_ns != 0 {
            self.timer.period_ns = self.timer.period_ns.max(MIN_PERIODIC_NS);
        }
    }

    /// The LVT timer's mode may have changed. Into or out of TSC-deadline
    /// mode the timer stops and the initial count and deadline are cleared,
    /// as KVM; between one-shot and periodic it runs on.
    fn update_timer_mode(&mut self) -> Effect {
        let new = self.lvt_timer_mode();
        let old = self.timer.mode;
        if old == new {
            return Effect::None;
        }
        let mut effect = Effect::None;
        if (old == TimerMode::TscDeadline) != (new == TimerMode::TscDeadline) {
            self.timer.target_ns = None;
            self.timer.period_ns = 0;
            self.timer.tsc_deadline = 0;
            self.put(reg::TIMER_INITIAL, 0);
            effect = Effect::Timer(TimerAction::Cancel);
        }
        self.timer.mode = new;
        self.limit_period();
        effect
    }

    fn lvt_timer_mode(&self) -> TimerMode {
        TimerMode::from_lvt(self.get(reg::LVT_TIMER) & self.timer_modes())
    }

    /// Starts a one-shot or periodic count: the period from the initial
    /// count, the first expiry after `count` ticks (the initial count, or
    /// what is left of it at `KVM_SET_LAPIC`).
    fn start_timer(&mut self, now_ns: u64, count: u32) -> TimerAction {
        let initial = self.get(reg::TIMER_INITIAL);
        self.timer.period_ns = self.count_ns(initial);
        self.limit_period();
        self.timer.target_ns = None;
        let periodic = match self.timer.mode {
            TimerMode::OneShot => false,
            TimerMode::Periodic => true,
            _ => return TimerAction::Cancel,
        };
        if self.timer.period_ns == 0 || (count == 0 && !periodic) {
            return TimerAction::Cancel;
        }
        let first = if count == 0 || count >= initial {
            self.timer.period_ns
        } else {
            self.count_ns(count)
        };
        let at = now_ns.saturating_add(first);
        self.timer.target_ns = Some(at);
        TimerAction::At(at)
    }

    /// A new divisor: the period follows, and the time left of a running
    /// count is rescaled by new / old divisor.
    fn write_divide(&mut self, value: u32, now_ns: u64) -> Effect {
        let old = divide_shift(self.get(reg::TIMER_DIVIDE));
        self.put(reg::TIMER_DIVIDE, value & 0xb);
        let new = divide_shift(value);
        if old == new || self.timer.period_ns == 0 {
            return Effect::None;
        }
        self.timer.period_ns = self.count_ns(self.get(reg::TIMER_INITIAL));
        self.limit_period();
        let Some(target) = self.timer.target_ns else {
            return Effect::None;
        };
        let left = target.saturating_sub(now_ns);
        let left = if new > old {
            left.checked_shl(new - old)
                .filter(|l| l >> (new - old) == left)
                .unwrap_or(u64::MAX)
        } else {
            left >> (old - new)
        };
        let at = now_ns.saturating_add(left);
        self.timer.target_ns = Some(at);
        Effect::Timer(TimerAction::At(at))
    }

    /// The current count at `now_ns`: what is left of the count down, at
    /// most the initial count; 0 when stopped, expired or in TSC-deadline
    /// mode.
    fn current_count(&self, now_ns: u64) -> u32 {
        let initial = self.get(reg::TIMER_INITIAL);
        let Some(target) = self.timer.target_ns else {
            return 0;
        };
        if self.timer.mode == TimerMode::TscDeadline || self.timer.period_ns == 0 {
            return 0;
        }
        let left = current_count(
            target.saturating_sub(now_ns),
            self.divisor(),
            self.config.bus_cycle_ns,
        );
        u32::try_from(left).unwrap_or(u32::MAX).min(initial)
    }

    /// The glue's timer fired at `now_ns`. Delivers the LVT timer interrupt
    /// (unless masked or the APIC disabled) and says whether to rearm:
    /// periodic mode reloads (the next expiry one period after this one, or
    /// now if that is already past: missed periods are not made up, as
    /// KVM); one-shot stops (the current count reads 0); TSC-deadline mode
    /// disarms and clears the deadline MSR. A call for a stopped timer, or
    /// before its time, delivers nothing.
    pub fn timer_expired(&mut self, now_ns: u64) -> Expiry {
        let mut expiry = Expiry {
            interrupt: false,
            next: None,
        };
        match self.timer.mode {
            TimerMode::TscDeadline => {
                if self.timer.tsc_deadline == 0 {
                    return expiry;
                }
                self.timer.tsc_deadline = 0;
            }
            _ => {
                let Some(target) = self.timer.target_ns else {
                    return expiry;
                };
                if now_ns < target {
                    expiry.next = Some(target);
                    return expiry;
                }
                if self.timer.mode == TimerMode::Periodic {
                    let next = target.saturating_add(self.timer.period_ns).max(now_ns);
                    self.timer.target_ns = Some(next);
                    expiry.next = Some(next);
                } else {
                    self.timer.target_ns = None;
                }
            }
        }
        expiry.interrupt = self.local_interrupt(Lvt::Timer) == Accepted::Fixed;
        expiry
    }

    /// RDMSR of `IA32_TSC_DEADLINE`: the armed deadline, 0 unless enabled in
    /// `IA32_APIC_BASE` and in TSC-deadline mode.
    pub fn tsc_deadline(&self) -> u64 {
        if self.hw_enabled() && self.timer.mode == TimerMode::TscDeadline {
            self.timer.tsc_deadline
        } else {
            0
        }
    }

    /// WRMSR of `IA32_TSC_DEADLINE` (the caller checks CPUID): ignored
    /// unless enabled and in TSC-deadline mode; 0 disarms, another value
    /// (re)arms. A deadline already past fires at once (the glue's
    /// business: it knows the TSC).
    pub fn set_tsc_deadline(&mut self, value: u64) -> Effect {
        if !self.hw_enabled() || self.timer.mode != TimerMode::TscDeadline {
            return Effect::None;
        }
        self.timer.tsc_deadline = value;
        Effect::Timer(self.timer())
    }

    // KVM_GET_LAPIC and KVM_SET_LAPIC.

    /// `KVM_GET_LAPIC` at `now_ns`: the register page with the current count
    /// computed. `x2apic_ids`: the VM set `KVM_X2APIC_API_USE_32BIT_IDS`;
    /// without it an x2APIC-mode APIC's ID is shown as xAPIC IDs are, in
    /// bits 31:24 (KVM's `kvm_apic_state_fixup()`).
    pub fn get_state(&self, now_ns: u64, x2apic_ids: bool) -> [u8; STATE_SIZE] {
        let mut regs = self.regs;
        let mut fix = |offset: u32, value: u32| {
            if let Some(r) = regs.get_mut((offset >> 4) as usize) {
                *r = value;
            }
        };
        fix(reg::TIMER_CURRENT, self.current_count(now_ns));
        if self.x2apic() && !x2apic_ids {
            fix(reg::ID, self.config.vcpu_id << 24);
        }
        let mut state = [0u8; STATE_SIZE];
        for (slot, r) in state.chunks_exact_mut(16).zip(regs) {
            if let Some(b) = slot.first_chunk_mut::<4>() {
                *b = r.to_le_bytes();
            }
        }
        state
    }

    /// `KVM_SET_LAPIC` at `now_ns`, in the mode `IA32_APIC_BASE` already
    /// gives (userspace sets it first, with `KVM_SET_SREGS`). As KVM, the
    /// registers are taken as they are, but: in x2APIC mode the ID must be
    /// the x2APIC ID with `x2apic_ids` (`KVM_X2APIC_API_USE_32BIT_IDS`), else
    /// [`StateError`] (`EINVAL`) and nothing changes; without it the ID
    /// given is ignored; and the LDR is derived from the ID. The version
    /// and PPR are recomputed, the current count restarts the timer (one
    /// period for a periodic timer whose count reads 0; none for a one-shot
    /// one, where KVM would fire it once more), the current count register
    /// reads back as computed, the TSC deadline is kept unless the timer
    /// mode changed into or out of TSC-deadline mode (KVM also clears the
    /// initial count then, losing a restored one-shot or periodic count).
    /// Returns what the glue's timer must do; the glue also recomputes its
    /// routing (ID, LDR, DFR, SVR may all have changed).
    pub fn set_state(
        &mut self,
        state: &[u8; STATE_SIZE],
        now_ns: u64,
        x2apic_ids: bool,
    ) -> Result<TimerAction, StateError> {
        let mut regs = [0u32; STATE_SIZE / 16];
        for (r, slot) in regs.iter_mut().zip(state.chunks_exact(16)) {
            if let Some(b) = slot.first_chunk::<4>() {
                *r = u32::from_le_bytes(*b);
            }
        }
        let id = self.config.vcpu_id;
        let x2apic = self.x2apic();
        if x2apic && x2apic_ids && regs.get((reg::ID >> 4) as usize) != Some(&id) {
            return Err(StateError::X2apicIdMismatch);
        }
        self.regs = regs;
        if x2apic {
            self.put(reg::ID, id);
            self.put(reg::LDR, x2apic_ldr(id));
        }
        self.update_version();
        self.update_ppr();
        self.esr_pending = 0;
        self.timer.target_ns = None;
        let count = self.get(reg::TIMER_CURRENT);
        self.put(reg::TIMER_CURRENT, 0);
        let mode = self.lvt_timer_mode();
        if (mode == TimerMode::TscDeadline) != (self.timer.mode == TimerMode::TscDeadline) {
            self.timer.tsc_deadline = 0;
        }
        self.timer.mode = mode;
        Ok(match mode {
            TimerMode::OneShot | TimerMode::Periodic => self.start_timer(now_ns, count),
            _ => {
                self.timer.period_ns = 0;
                self.timer()
            }
        })
    }
}

/// `KVM_MP_STATE_*`: a vCPU's multiprocessing state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MpState {
    /// `KVM_MP_STATE_RUNNABLE` (0): runs.
    Runnable,
    /// `KVM_MP_STATE_UNINITIALIZED` (1): an AP before its first INIT.
    Uninitialized,
    /// `KVM_MP_STATE_INIT_RECEIVED` (2): wait-for-SIPI.
    InitReceived,
    /// `KVM_MP_STATE_HALTED` (3): HLT, until an interrupt.
    Halted,
    /// `KVM_MP_STATE_AP_RESET_HOLD` (9): SEV-ES AP reset hold; kept as set.
    ApResetHold,
}

impl MpState {
    /// The `KVM_MP_STATE_*` number.
    pub fn to_abi(self) -> u32 {
        match self {
            MpState::Runnable => 0,
            MpState::Uninitialized => 1,
            MpState::InitReceived => 2,
            MpState::Halted => 3,
            MpState::ApResetHold => 9,
        }
    }
}

/// What [`InitSipi::accept_events`] did, for the glue to carry out in this
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Events {
    /// An INIT: reset the vCPU (its registers, [`Lapic::reset`] with `init`).
    pub init: bool,
    /// A SIPI with this vector: start at [`sipi_entry`] of it.
    pub sipi: Option<u8>,
}

/// The start of a vCPU woken by a SIPI with `vector`: CS selector
/// `vector << 8`, CS base `vector << 12`, IP 0 (real mode).
pub fn sipi_entry(vector: u8) -> (u16, u64) {
    (u16::from(vector) << 8, u64::from(vector) << 12)
}

/// INIT and SIPI as KVM handles them: latched by [`InitSipi::receive`],
/// acted on by the vCPU itself before it enters ([`InitSipi::accept_events`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitSipi {
    state: MpState,
    init_pending: bool,
    sipi_pending: bool,
    sipi_vector: u8,
}

impl InitSipi {
    /// A new vCPU with an in-kernel APIC: the BSP runs, an AP waits for
    /// INIT.
    pub fn new(bsp: bool) -> Self {
        InitSipi {
            state: if bsp {
                MpState::Runnable
            } else {
                MpState::Uninitialized
            },
            init_pending: false,
            sipi_pending: false,
            sipi_vector: 0,
        }
    }

    /// The state.
    pub fn state(&self) -> MpState {
        self.state
    }

    /// The vector of the last SIPI (`kvm_vcpu_events.sipi_vector`).
    pub fn sipi_vector(&self) -> u8 {
        self.sipi_vector
    }

    /// Sets the SIPI vector (`KVM_VCPUEVENT_VALID_SIPI_VECTOR`).
    pub fn set_sipi_vector(&mut self, vector: u8) {
        self.sipi_vector = vector;
    }

    /// An INIT is latched (`kvm_vcpu_events.smi.latched_init`).
    pub fn init_pending(&self) -> bool {
        self.init_pending
    }

    /// Sets or clears a latched INIT (`KVM_SET_VCPU_EVENTS`).
    pub fn set_init_pending(&mut self, pending: bool) {
        self.init_pending = pending;
    }

    /// An INIT or SIPI waits for [`InitSipi::accept_events`].
    pub fn has_events(&self) -> bool {
        self.init_pending || self.sipi_pending
    }

    /// What [`Lapic::deliver`] accepted: an INIT is latched (dropping a SIPI
    /// not yet taken), a SIPI is latched with its vector; anything else is
    /// not for this type.
    pub fn receive(&mut self, accepted: Accepted) {
        match accepted {
            Accepted::Init => {
                self.init_pending = true;
                self.sipi_pending = false;
            }
            Accepted::Sipi(vector) => {
                self.sipi_vector = vector;
                self.sipi_pending = true;
            }
            _ => {}
        }
    }

    /// The vCPU takes its pending INIT and SIPI. `bsp`: its
    /// `IA32_APIC_BASE.BSP`; `allowed`: INIT and SIPI are not blocked (SMM,
    /// VMX root operation, GIF=0), else a SIPI is dropped and an INIT stays
    /// latched. An INIT resets the vCPU, which then runs if it is the BSP and
    /// waits for SIPI otherwise; a SIPI starts a vCPU that waits for one and
    /// is dropped by any other.
    pub fn accept_events(&mut self, bsp: bool, allowed: bool) -> Events {
        let mut events = Events {
            init: false,
            sipi: None,
        };
        if !allowed {
            self.sipi_pending = false;
            return events;
        }
        if self.init_pending {
            self.init_pending = false;
            events.init = true;
            self.state = if bsp {
                MpState::Runnable
            } else {
                MpState::InitReceived
            };
        }
        if self.sipi_pending {
            self.sipi_pending = false;
            if self.state == MpState::InitReceived {
                events.sipi = Some(self.sipi_vector);
                self.state = MpState::Runnable;
            }
        }
        events
    }

    /// HLT with an in-kernel APIC: the vCPU sleeps until [`InitSipi::wake`].
    pub fn halt(&mut self) {
        if self.state == MpState::Runnable {
            self.state = MpState::Halted;
        }
    }

    /// An interrupt, NMI or other event for a halted vCPU: it runs again.
    pub fn wake(&mut self) {
        if matches!(self.state, MpState::Halted | MpState::ApResetHold) {
            self.state = MpState::Runnable;
        }
    }

    /// `KVM_SET_MP_STATE` with an in-kernel APIC: RUNNABLE, UNINITIALIZED,
    /// INIT_RECEIVED, HALTED, AP_RESET_HOLD as given; SIPI_RECEIVED (4), which
    /// KVM no longer uses, as INIT_RECEIVED with a SIPI pending (of the
    /// vector last received or set); anything else is refused (false: `EINVAL`).
    pub fn set_abi(&mut self, value: u32) -> bool {
        self.state = match value {
            0 => MpState::Runnable,
            1 => MpState::Uninitialized,
            2 => MpState::InitReceived,
            3 => MpState::Halted,
            4 => {
                self.sipi_pending = true;
                MpState::InitReceived
            }
            9 => MpState::ApResetHold,
            _ => return false,
        };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_becomes_an_interrupt_for_the_lapics() {
        use super::super::msi::MsiMessage;
        // Vector 0x31, fixed, edge, to physical APIC 2.
        let m = MsiMessage {
            address_lo: 0xfee0_2000,
            address_hi: 0,
            data: 0x31,
        };
        let (irq, dest) = from_message(&m.message(false));
        assert_eq!(
            irq,
            Interrupt {
                vector: 0x31,
                mode: DeliveryMode::Fixed,
                level: true,
                trigger_level: false
            }
        );
        assert_eq!(
            dest,
            Destination {
                id: 2,
                logical: false,
                shorthand: Shorthand::None
            }
        );
        // Logical with the redirection hint: lowest priority; level trigger kept.
        let m = MsiMessage {
            address_lo: 0xfee0_100c,
            address_hi: 0,
            data: 0x8041,
        };
        let (irq, dest) = from_message(&m.message(false));
        assert_eq!(irq.mode, DeliveryMode::LowestPriority);
        assert!(irq.trigger_level);
        assert_eq!(
            dest,
            Destination {
                id: 1,
                logical: true,
                shorthand: Shorthand::None
            }
        );
        // NMI stays NMI, hint or not.
        let m = MsiMessage {
            address_lo: 0xfee0_000c,
            address_hi: 0,
            data: 0x400,
        };
        assert_eq!(from_message(&m.message(false)).0.mode, DeliveryMode::Nmi);
    }

    /// vCPU `id` in xAPIC mode, software-enabled (SVR 0x1ff).
    fn xapic(id: u32) -> Lapic {
        let mut a = Lapic::new(Config::new(id));
        assert_eq!(w(&mut a, reg::SVR, 0x1ff), Effect::SoftwareEnable(true));
        a
    }

    /// vCPU `id` in x2APIC mode, software-enabled.
    fn x2apic(id: u32) -> Lapic {
        let mut a = xapic(id);
        let value = a.apic_base() | base::EXTD;
        assert_eq!(
            a.set_apic_base(value, false),
            Effect::ApicBase(Mode::X2Apic)
        );
        a
    }

    fn w(a: &mut Lapic, offset: u32, value: u32) -> Effect {
        a.write(offset, 4, value, 0)
    }

    fn r(a: &Lapic, offset: u32) -> u32 {
        a.read(offset, 4, 0) as u32
    }

    fn msr(offset: u32) -> u32 {
        X2APIC_MSR_FIRST + offset / 16
    }

    fn icr_of(e: Effect) -> Icr {
        match e {
            Effect::Ipi(icr) => icr,
            e => panic!("not an IPI: {e:?}"),
        }
    }

    #[test]
    fn power_on_reset() {
        let bsp = Lapic::new(Config::new(0));
        assert_eq!(bsp.apic_base(), crate::x86::reset_apic_base(true));
        assert_eq!(bsp.mmio_base(), 0xfee0_0000);
        assert!(bsp.is_bsp() && !bsp.sw_enabled() && bsp.mmio_active());
        assert_eq!(r(&bsp, reg::VERSION), 0x5_0014);
        assert_eq!(r(&bsp, reg::DFR), 0xffff_ffff);
        assert_eq!(r(&bsp, reg::SVR), 0xff);
        assert_eq!(bsp.spurious_vector(), 0xff);
        for offset in [reg::TPR, reg::PPR, reg::LDR, reg::ESR, reg::ICR, reg::ICR2] {
            assert_eq!(r(&bsp, offset), 0, "{offset:#x}");
        }
        for offset in [
            reg::LVT_TIMER,
            reg::LVT_THERMAL,
            reg::LVT_PMC,
            reg::LVT_LINT1,
            reg::LVT_ERROR,
        ] {
            assert_eq!(r(&bsp, offset), lvt::MASKED, "{offset:#x}");
        }
        // KVM_X86_QUIRK_LINT0_REENABLED: the BSP's LINT0 is unmasked ExtINT.
        assert_eq!(r(&bsp, reg::LVT_LINT0), 0x700);
        assert!(bsp.accepts_pic_interrupt());
        assert_eq!(bsp.timer_mode(), TimerMode::OneShot);
        assert_eq!(divisor(r(&bsp, reg::TIMER_DIVIDE)), 2);

        let ap = Lapic::new(Config::new(3));
        assert_eq!(ap.apic_base(), crate::x86::reset_apic_base(false));
        assert_eq!(r(&ap, reg::ID), 0x0300_0000);
        assert_eq!(ap.id(), 3);
        assert_eq!(r(&ap, reg::LVT_LINT0), lvt::MASKED);
        assert!(!ap.accepts_pic_interrupt());

        let mut c = Config::new(1);
        c.cmci = true;
        c.directed_eoi = true;
        let a = Lapic::new(c);
        assert_eq!(r(&a, reg::VERSION), 0x106_0014);
        assert_eq!(r(&a, reg::LVT_CMCI), lvt::MASKED);
    }

    #[test]
    fn init_keeps_id_mode_and_x2apic_ldr() {
        let mut a = xapic(1);
        w(&mut a, reg::ID, 0x0700_0000);
        w(&mut a, reg::TPR, 0x20);
        w(&mut a, reg::LDR, 0x0100_0000);
        assert!(a.accept(0x40, false));
        a.reset(true);
        assert_eq!(r(&a, reg::ID), 0x0700_0000);
        assert_eq!(
            (r(&a, reg::TPR), r(&a, reg::LDR), r(&a, reg::SVR)),
            (0, 0, 0xff)
        );
        assert_eq!(a.highest_irr(), None);
        assert_eq!(a.mode(), Mode::XApic);

        let mut a = x2apic(0x23);
        a.reset(true);
        assert_eq!(a.mode(), Mode::X2Apic);
        assert_eq!(a.rdmsr(msr(reg::ID), 0), Some(0x23));
        assert_eq!(a.rdmsr(msr(reg::LDR), 0), Some(0x2_0008));
        // RESET goes back to xAPIC with the initial ID.
        a.reset(false);
        assert_eq!((a.mode(), r(&a, reg::ID)), (Mode::XApic, 0x2300_0000));
    }

    #[test]
    fn writable_bits() {
        let mut a = xapic(0);
        assert_eq!(w(&mut a, reg::ID, 0x1234_5678), Effect::Routing);
        assert_eq!(r(&a, reg::ID), 0x1200_0000);
        assert_eq!(w(&mut a, reg::TPR, 0x1234), Effect::Tpr);
        assert_eq!(r(&a, reg::TPR), 0x34);
        assert_eq!(w(&mut a, reg::LDR, 0x1234_5678), Effect::Routing);
        assert_eq!(r(&a, reg::LDR), 0x1200_0000);
        w(&mut a, reg::DFR, 0);
        assert_eq!(r(&a, reg::DFR), 0x0fff_ffff);
        w(&mut a, reg::ICR2, 0xabcd_ef12);
        assert_eq!(r(&a, reg::ICR2), 0xab00_0000);
        w(&mut a, reg::SVR, 0xffff_ffff);
        assert_eq!(r(&a, reg::SVR), 0x3ff);
        w(&mut a, reg::TIMER_DIVIDE, 0xffff_ffff);
        assert_eq!(r(&a, reg::TIMER_DIVIDE), 0xb);
        let cases = [
            (reg::LVT_LINT0, 0x1_a7ff),
            (reg::LVT_LINT1, 0x1_a7ff),
            (reg::LVT_ERROR, 0x1_00ff),
            (reg::LVT_THERMAL, 0x1_07ff),
            (reg::LVT_PMC, 0x1_07ff),
            (reg::LVT_TIMER, 0x7_00ff),
        ];
        for (offset, value) in cases {
            w(&mut a, offset, 0xffff_ffff);
            assert_eq!(r(&a, offset), value, "{offset:#x}");
        }
        // Read-only and absent registers ignore MMIO writes.
        let ppr = r(&a, reg::PPR);
        for offset in [
            reg::VERSION,
            reg::PPR,
            reg::ISR,
            reg::TMR,
            reg::IRR,
            reg::TIMER_CURRENT,
        ] {
            assert_eq!(w(&mut a, offset, 0xffff_ffff), Effect::None);
        }
        assert_eq!((r(&a, reg::VERSION), r(&a, reg::PPR)), (0x5_0014, ppr));
        assert_eq!((r(&a, reg::IRR), a.highest_irr()), (0, None));
        w(&mut a, reg::LVT_CMCI, 0x30);
        assert_eq!(a.register(reg::LVT_CMCI), lvt::MASKED);
        // Without the TSC-deadline timer in CPUID, bit 18 is not writable.
        let mut c = Config::new(0);
        c.tsc_deadline = false;
        let mut b = Lapic::new(c);
        w(&mut b, reg::SVR, 0x100);
        w(&mut b, reg::LVT_TIMER, 0x4_0020);
        assert_eq!(
            (r(&b, reg::LVT_TIMER), b.timer_mode()),
            (0x20, TimerMode::OneShot)
        );
    }

    #[test]
    fn mmio_access_sizes() {
        let mut a = xapic(0);
        w(&mut a, reg::TPR, 0xa5);
        w(&mut a, reg::ID, 0x1200_0000);
        assert_eq!(a.read(reg::ID + 3, 1, 0), 0x12);
        assert_eq!(a.read(reg::ID + 2, 2, 0), 0x1200);
        assert_eq!(a.read(reg::TPR, 1, 0), 0xa5);
        // Past the first 4 bytes, across them, or an odd size: 0.
        assert_eq!(a.read(reg::TPR + 4, 4, 0), 0);
        assert_eq!(a.read(reg::ID + 3, 2, 0), 0);
        assert_eq!(a.read(reg::TPR, 3, 0), 0);
        assert_eq!(a.read(reg::TPR, 8, 0), 0);
        assert_eq!(a.read(0x400, 4, 0), 0);
        // Write-only, unimplemented, reserved and x2APIC-only registers.
        for offset in [
            reg::EOI,
            reg::RRD,
            reg::SELF_IPI,
            reg::LVT_CMCI,
            0,
            0x10,
            0x40,
            0x3a0,
        ] {
            assert_eq!(r(&a, offset), 0, "{offset:#x}");
        }
        assert_eq!(r(&a, reg::APR), 0);
        // Only 4-byte writes at a register's start count.
        assert_eq!(a.write(reg::TPR, 2, 0x10, 0), Effect::None);
        assert_eq!(a.write(reg::TPR + 1, 4, 0x10, 0), Effect::None);
        assert_eq!(a.write(reg::SELF_IPI, 4, 0x40, 0), Effect::None);
        assert_eq!(r(&a, reg::TPR), 0xa5);
        // In x2APIC mode or disabled, the page reads all ones.
        let mut b = x2apic(1);
        assert_eq!(
            (b.read(reg::TPR, 4, 0), b.read(reg::TPR, 1, 0)),
            (0xffff_ffff, 0xff)
        );
        assert_eq!(b.read(reg::TPR, 8, 0), u64::MAX);
        assert_eq!(w(&mut b, reg::TPR, 0x30), Effect::None);
        assert_eq!(b.rdmsr(msr(reg::TPR), 0), Some(0));
        let mut c = xapic(2);
        c.set_apic_base(0, false);
        assert_eq!(r(&c, reg::VERSION), 0xffff_ffff);
    }

    #[test]
    fn software_disable_masks_the_lvt() {
        let mut a = xapic(0);
        w(&mut a, reg::LVT_TIMER, 0x20);
        w(&mut a, reg::LVT_LINT1, 0x400);
        assert_eq!(w(&mut a, reg::SVR, 0xff), Effect::SoftwareEnable(false));
        assert_eq!(r(&a, reg::LVT_TIMER), 0x1_0020);
        assert_eq!(r(&a, reg::LVT_LINT1), 0x1_0400);
        assert_eq!(r(&a, reg::LVT_LINT0), 0x1_0700);
        // Writes while disabled stay masked, and enabling unmasks nothing.
        w(&mut a, reg::LVT_ERROR, 0xfe);
        assert_eq!(r(&a, reg::LVT_ERROR), 0x1_00fe);
        assert_eq!(w(&mut a, reg::SVR, 0xff), Effect::None);
        assert_eq!(w(&mut a, reg::SVR, 0x1ff), Effect::SoftwareEnable(true));
        assert_eq!(r(&a, reg::LVT_TIMER), 0x1_0020);
        assert_eq!(a.local_interrupt(Lvt::Lint1), Accepted::Dropped);
        w(&mut a, reg::LVT_LINT1, 0x400);
        assert_eq!(a.local_interrupt(Lvt::Lint1), Accepted::Nmi);
    }

    #[test]
    fn processor_priority() {
        assert_eq!(ppr(0, None), 0);
        assert_eq!(ppr(0x35, None), 0x35);
        assert_eq!(ppr(0x35, Some(0x41)), 0x40);
        assert_eq!(ppr(0x45, Some(0x41)), 0x45);
        assert_eq!(ppr(0x40, Some(0x4f)), 0x40);
        assert_eq!(ppr(0x3f, Some(0x40)), 0x40);
        assert_eq!(ppr(0xff, Some(0x20)), 0xff);
        let mut a = xapic(0);
        a.accept(0x51, false);
        a.ack();
        w(&mut a, reg::TPR, 0x3c);
        assert_eq!(r(&a, reg::PPR), 0x50);
        w(&mut a, reg::TPR, 0x5c);
        assert_eq!(r(&a, reg::PPR), 0x5c);
        a.eoi();
        assert_eq!(r(&a, reg::PPR), 0x5c);
        w(&mut a, reg::TPR, 0);
        assert_eq!(a.ppr(), 0);
    }

    #[test]
    fn highest_irr_against_tpr() {
        let mut a = xapic(0);
        assert_eq!(a.has_interrupt(), None);
        for v in [0x31, 0x85, 0x40, 0xff] {
            assert!(a.accept(v, false));
        }
        assert_eq!(r(&a, reg::IRR + 0x10), 1 << 0x11);
        assert_eq!(r(&a, reg::IRR + 0x70), 1 << 31);
        assert_eq!(a.highest_irr(), Some(0xff));
        w(&mut a, reg::TPR, 0xf0);
        assert_eq!(a.has_interrupt(), None);
        w(&mut a, reg::TPR, 0xef);
        assert_eq!(a.has_interrupt(), Some(0xff));
        // The same class as the TPR is blocked: 0x85 under TPR 0x80.
        assert_eq!(a.ack(), Some(0xff));
        a.eoi();
        w(&mut a, reg::TPR, 0x80);
        assert_eq!((a.highest_irr(), a.has_interrupt()), (Some(0x85), None));
        w(&mut a, reg::TPR, 0x7f);
        assert_eq!(a.has_interrupt(), Some(0x85));
        // Disabled in IA32_APIC_BASE: nothing.
        a.set_apic_base(0, false);
        assert_eq!(a.has_interrupt(), None);
    }

    #[test]
    fn ack_and_eoi_nest() {
        let mut a = xapic(0);
        a.accept(0x40, false);
        a.accept(0x90, false);
        assert_eq!(a.ack(), Some(0x90));
        assert_eq!(
            (r(&a, reg::ISR + 0x40), r(&a, reg::IRR + 0x40)),
            (1 << 16, 0)
        );
        assert_eq!(a.ppr(), 0x90);
        assert_eq!(a.has_interrupt(), None);
        a.accept(0x95, false);
        assert_eq!(a.has_interrupt(), None, "same class as the one in service");
        a.accept(0xa0, false);
        assert_eq!(a.ack(), Some(0xa0));
        assert_eq!(a.ppr(), 0xa0);
        let eoi = |v| {
            Effect::Eoi(Eoi {
                vector: v,
                level: false,
                suppress_broadcast: false,
            })
        };
        assert_eq!(w(&mut a, reg::EOI, 0), eoi(0xa0));
        assert_eq!(a.ppr(), 0x90);
        assert_eq!(w(&mut a, reg::EOI, 0x1234), eoi(0x90));
        assert_eq!(a.ack(), Some(0x95));
        assert_eq!(a.eoi(), eoi(0x95));
        assert_eq!(a.ack(), Some(0x40));
        assert_eq!(a.eoi(), eoi(0x40));
        assert_eq!(a.eoi(), Effect::None);
        assert_eq!(a.ack(), None);
    }

    #[test]
    fn set_tpr_keeps_all_eight_bits_and_blocks_by_class() {
        let mut a = Lapic::new(Config::new(0));
        a.set_tpr(0x85);
        assert_eq!(a.register(reg::TPR), 0x85);
        assert_eq!(a.cr8(), 8);
        assert_eq!(a.ppr(), 0x85);
        a.set_cr8(2);
        assert_eq!(a.register(reg::TPR), 0x20);
    }

    #[test]
    fn eoi_reports_level_and_directed_eoi() {
        let mut c = Config::new(0);
        c.directed_eoi = true;
        let mut a = Lapic::new(c);
        w(&mut a, reg::SVR, 0x1ff);
        assert!(a.accept(0x50, true));
        assert_eq!(r(&a, reg::TMR + 0x20), 1 << 16);
        a.ack();
        let level = Eoi {
            vector: 0x50,
            level: true,
            suppress_broadcast: false,
        };
        assert_eq!(a.eoi(), Effect::Eoi(level));
        // Accepted edge-triggered, the TMR bit clears.
        a.accept(0x50, false);
        assert_eq!(r(&a, reg::TMR + 0x20), 0);
        w(&mut a, reg::SVR, 0x11ff);
        assert_eq!(r(&a, reg::SVR), 0x11ff);
        a.accept(0x50, true);
        a.ack();
        let directed = Eoi {
            suppress_broadcast: true,
            ..level
        };
        assert_eq!(a.eoi(), Effect::Eoi(directed));
    }

    #[test]
    fn illegal_vectors_and_the_esr() {
        let mut a = xapic(0);
        assert!(!a.accept(5, false));
        assert_eq!(a.highest_irr(), None);
        assert_eq!(r(&a, reg::ESR), 0, "not latched before a write");
        w(&mut a, reg::ESR, 0);
        assert_eq!(r(&a, reg::ESR), esr::RECEIVE_ILLEGAL_VECTOR);
        w(&mut a, reg::ESR, 0);
        assert_eq!(r(&a, reg::ESR), 0);
        // A fixed IPI with vector 3 is not sent; the error LVT interrupts.
        w(&mut a, reg::LVT_ERROR, 0xee);
        assert_eq!(w(&mut a, reg::ICR, 0x4003), Effect::None);
        w(&mut a, reg::ESR, 0);
        assert_eq!(r(&a, reg::ESR), esr::SEND_ILLEGAL_VECTOR);
        assert_eq!(a.highest_irr(), Some(0xee));
        // NMI and INIT carry no vector.
        assert!(matches!(w(&mut a, reg::ICR, 0x4400), Effect::Ipi(_)));
        // In x2APIC mode, only 0 may be written to the ESR.
        let mut b = x2apic(1);
        assert_eq!(b.wrmsr(msr(reg::ESR), 1, 0), Effect::Gp);
        assert_eq!(b.wrmsr(msr(reg::ESR), 0, 0), Effect::None);
    }

    #[test]
    fn delivery_modes() {
        let mut a = xapic(0);
        let irq = |mode, vector, level, trigger_level| Interrupt {
            vector,
            mode,
            level,
            trigger_level,
        };
        use DeliveryMode::*;
        assert_eq!(a.deliver(irq(Fixed, 0x30, false, true)), Accepted::Dropped);
        assert_eq!(
            a.deliver(irq(LowestPriority, 0x30, true, true)),
            Accepted::Fixed
        );
        assert_eq!(a.highest_irr(), Some(0x30));
        assert_eq!(a.deliver(irq(Init, 0, true, true)), Accepted::Init);
        assert_eq!(a.deliver(irq(Init, 0, false, true)), Accepted::Dropped);
        assert_eq!(a.deliver(irq(Init, 0, false, false)), Accepted::Init);
        assert_eq!(
            a.deliver(irq(StartUp, 0x9a, true, false)),
            Accepted::Sipi(0x9a)
        );
        assert_eq!(a.deliver(irq(Nmi, 0, true, false)), Accepted::Nmi);
        assert_eq!(a.deliver(irq(Smi, 0, true, false)), Accepted::Smi);
        assert_eq!(a.deliver(irq(ExtInt, 0, true, false)), Accepted::ExtInt);
        assert_eq!(
            a.deliver(irq(RemoteRead, 0x30, true, false)),
            Accepted::Dropped
        );
        // Software-disabled: no fixed interrupts, the rest still.
        w(&mut a, reg::SVR, 0xff);
        assert!(!a.accept(0x40, false));
        assert_eq!(a.deliver(irq(Nmi, 0, true, false)), Accepted::Nmi);
        assert_eq!(
            a.deliver(irq(StartUp, 0x10, true, false)),
            Accepted::Sipi(0x10)
        );
        assert_eq!(a.has_interrupt(), Some(0x30), "what was accepted stays");
        for bits in 0..8 {
            assert_eq!(DeliveryMode::from_bits(bits << 8).bits(), bits << 8);
        }
    }

    #[test]
    fn xapic_icr() {
        let mut a = xapic(0);
        w(&mut a, reg::ICR2, 0x0300_0000);
        // Linux's INIT assert: level-triggered, assert, INIT.
        let init = icr_of(w(&mut a, reg::ICR, 0xc500));
        assert_eq!(
            init,
            Icr {
                interrupt: Interrupt {
                    vector: 0,
                    mode: DeliveryMode::Init,
                    level: true,
                    trigger_level: true,
                },
                destination: Destination {
                    id: 3,
                    logical: false,
                    shorthand: Shorthand::None,
                },
            }
        );
        let sipi = icr_of(w(&mut a, reg::ICR, 0x0698));
        assert_eq!(sipi.interrupt.mode, DeliveryMode::StartUp);
        assert_eq!(sipi.interrupt.vector, 0x98);
        // Logical, all excluding self, and the busy bit is never kept.
        let all = icr_of(w(&mut a, reg::ICR, 0xc_1830));
        assert_eq!(all.destination.shorthand, Shorthand::AllExcludingSelf);
        assert!(all.destination.logical);
        assert_eq!(
            (all.interrupt.vector, all.interrupt.mode),
            (0x30, DeliveryMode::Fixed)
        );
        assert_eq!(r(&a, reg::ICR), 0xc_0830);
        let to_self = Icr::decode(0x4_0041, 0, false);
        assert_eq!(to_self.destination.shorthand, Shorthand::ToSelf);
        assert_eq!(
            Icr::decode(0x8_0041, 0, false).destination.shorthand,
            Shorthand::AllIncludingSelf
        );
        assert_eq!(
            Icr::decode(0, 0x1234_5678, true).destination.id,
            0x1234_5678
        );
        assert_eq!(Icr::decode(0, 0x1234_5678, false).destination.id, 0x12);
    }

    #[test]
    fn x2apic_icr_and_self_ipi() {
        let mut a = x2apic(1);
        let icr = icr_of(a.wrmsr(msr(reg::ICR), 7 << 32 | 0x5031, 0));
        assert_eq!(icr.destination.id, 7);
        assert_eq!((icr.interrupt.vector, icr.interrupt.level), (0x31, true));
        assert_eq!(a.rdmsr(msr(reg::ICR), 0), Some(7 << 32 | 0x4031));
        assert_eq!(r(&a, reg::ICR), 0xffff_ffff, "not through MMIO");
        for bit in [13, 16, 17, 20, 31] {
            assert_eq!(
                a.wrmsr(msr(reg::ICR), 0x31 | 1 << bit, 0),
                Effect::Gp,
                "bit {bit}"
            );
        }
        let to_self = icr_of(a.wrmsr(msr(reg::SELF_IPI), 0x45, 0));
        assert_eq!(to_self.destination.shorthand, Shorthand::ToSelf);
        assert_eq!(to_self.interrupt.vector, 0x45);
        assert_eq!(to_self.interrupt.mode, DeliveryMode::Fixed);
        assert!(!to_self.interrupt.trigger_level);
        assert_eq!(a.wrmsr(msr(reg::SELF_IPI), 0x145, 0), Effect::Gp);
        assert_eq!(
            a.wrmsr(msr(reg::SELF_IPI), 0x5, 0),
            Effect::None,
            "illegal vector"
        );
        assert_eq!(a.rdmsr(msr(reg::SELF_IPI), 0), None);
    }

    #[test]
    fn x2apic_msrs() {
        let mut a = x2apic(0x23);
        assert_eq!(a.rdmsr(msr(reg::ID), 0), Some(0x23));
        assert_eq!(a.rdmsr(msr(reg::VERSION), 0), Some(0x5_0014));
        assert_eq!(a.rdmsr(msr(reg::LDR), 0), Some(0x2_0008));
        assert_eq!(a.rdmsr(msr(reg::SVR), 0), Some(0x1ff));
        // Write-only, xAPIC-only, reserved and absent: #GP.
        for offset in [
            reg::EOI,
            reg::APR,
            reg::DFR,
            reg::ICR2,
            reg::RRD,
            0,
            0x10,
            0x40,
            reg::LVT_CMCI,
            0x3a0,
        ] {
            assert_eq!(a.rdmsr(msr(offset), 0), None, "{offset:#x}");
        }
        assert_eq!(a.rdmsr(X2APIC_MSR_LAST, 0), None);
        let read_only = [
            reg::ID,
            reg::VERSION,
            reg::APR,
            reg::PPR,
            reg::LDR,
            reg::DFR,
            reg::ISR,
            reg::TMR + 0x10,
            reg::IRR,
            reg::ICR2,
            reg::TIMER_CURRENT,
            reg::RRD,
            reg::LVT_CMCI,
        ];
        for offset in read_only {
            assert_eq!(a.wrmsr(msr(offset), 0, 0), Effect::Gp, "{offset:#x}");
        }
        assert_eq!(a.wrmsr(msr(reg::EOI), 1, 0), Effect::Gp);
        assert_eq!(a.wrmsr(msr(reg::EOI), 0, 0), Effect::None);
        assert_eq!(a.wrmsr(msr(reg::TPR), 1 << 32, 0), Effect::Gp);
        assert_eq!(a.wrmsr(msr(reg::TPR), 0x120, 0), Effect::Tpr);
        assert_eq!(a.rdmsr(msr(reg::TPR), 0), Some(0x20));
        assert_eq!(a.wrmsr(0x900, 0, 0), Effect::Gp);
        assert_eq!(a.rdmsr(0x7ff, 0), None);
        // Not in x2APIC mode: every x2APIC MSR is #GP.
        let mut b = xapic(0);
        assert_eq!(b.rdmsr(msr(reg::TPR), 0), None);
        assert_eq!(b.wrmsr(msr(reg::TPR), 0, 0), Effect::Gp);
    }

    #[test]
    fn x2apic_logical_ids() {
        assert_eq!(x2apic_ldr(0), 1);
        assert_eq!(x2apic_ldr(5), 0x20);
        assert_eq!(x2apic_ldr(0xf), 0x8000);
        assert_eq!(x2apic_ldr(0x10), 0x1_0001);
        assert_eq!(x2apic_ldr(0x23), 0x2_0008);
        assert_eq!(x2apic_ldr(u32::MAX), 0xffff_8000);
    }

    fn dest(id: u32, logical: bool) -> Destination {
        Destination {
            id,
            logical,
            shorthand: Shorthand::None,
        }
    }

    #[test]
    fn physical_destinations() {
        let a = xapic(3);
        assert!(a.matches(&dest(3, false), false, false));
        assert!(!a.matches(&dest(4, false), false, false));
        assert!(a.matches(&dest(0xff, false), false, false));
        // A vCPU whose x2APIC ID does not fit 8 bits, in xAPIC mode.
        let b = xapic(300);
        assert_eq!(b.id(), 300 & 0xff);
        assert!(b.matches(&dest(300, false), false, false));
        assert!(b.matches(&dest(44, false), false, false));
        assert!(!xapic(44).matches(&dest(300, false), false, false));
        let c = x2apic(300);
        assert!(c.matches(&dest(300, false), false, false));
        assert!(!c.matches(&dest(44, false), false, false));
        assert!(c.matches(&dest(u32::MAX, false), false, false));
        // 0xFF: x2APIC ID 255, or (KVM's quirk, IOAPIC/MSI only) broadcast.
        assert!(!c.matches(&dest(0xff, false), false, false));
        assert!(c.matches(&dest(0xff, false), false, true));
        assert!(!c.matches(&dest(0xff, false), true, true));
        assert!(x2apic(255).matches(&dest(0xff, false), false, false));
    }

    #[test]
    fn logical_destinations() {
        // Flat: any common bit of the 8-bit masks.
        let mut a = xapic(0);
        w(&mut a, reg::LDR, 0x0200_0000);
        for (mda, hit) in [
            (0x02, true),
            (0x03, true),
            (0x01, false),
            (0xff, true),
            (0x100, false),
        ] {
            assert_eq!(
                a.matches(&dest(mda, true), false, false),
                hit,
                "flat {mda:#x}"
            );
        }
        // Cluster: cluster 2, member bit 0.
        w(&mut a, reg::DFR, 0x0fff_ffff);
        w(&mut a, reg::LDR, 0x2100_0000);
        for (mda, hit) in [
            (0x21, true),
            (0x23, true),
            (0x11, false),
            (0x22, false),
            (0xff, true),
        ] {
            assert_eq!(
                a.matches(&dest(mda, true), false, false),
                hit,
                "cluster {mda:#x}"
            );
        }
        // A DFR model that is neither matches nothing.
        w(&mut a, reg::DFR, 0x5000_0000);
        assert!(!a.matches(&dest(0x21, true), false, false));
        // x2APIC: cluster in 31:16, member bits in 15:0, from the ID.
        let b = x2apic(0x23);
        for (mda, hit) in [
            (0x2_0008, true),
            (0x2_000c, true),
            (0x1_0008, false),
            (0x2_0004, false),
            (u32::MAX, true),
        ] {
            assert_eq!(
                b.matches(&dest(mda, true), false, false),
                hit,
                "x2apic {mda:#x}"
            );
        }
    }

    #[test]
    fn shorthands_and_disabled() {
        let mut a = xapic(1);
        let sh = |shorthand| Destination {
            id: 0,
            logical: false,
            shorthand,
        };
        assert!(a.matches(&sh(Shorthand::ToSelf), true, false));
        assert!(!a.matches(&sh(Shorthand::ToSelf), false, false));
        assert!(a.matches(&sh(Shorthand::AllIncludingSelf), true, false));
        assert!(a.matches(&sh(Shorthand::AllIncludingSelf), false, false));
        assert!(!a.matches(&sh(Shorthand::AllExcludingSelf), true, false));
        assert!(a.matches(&sh(Shorthand::AllExcludingSelf), false, false));
        a.set_apic_base(0, false);
        assert!(!a.matches(&sh(Shorthand::AllIncludingSelf), false, false));
        assert!(!a.matches(&dest(1, false), false, false));
        assert_eq!(lowest_priority_target(0x31, 3), Some(1));
        assert_eq!(lowest_priority_target(0x31, 0), None);
    }

    #[test]
    fn divide_configuration() {
        let table = [
            (0, 2),
            (1, 4),
            (2, 8),
            (3, 16),
            (8, 32),
            (9, 64),
            (0xa, 128),
            (0xb, 1),
        ];
        for (tdcr, div) in table {
            assert_eq!(divisor(tdcr), div, "{tdcr:#x}");
            // Bit 2 is not part of the encoding.
            assert_eq!(divisor(tdcr | 4), div, "{tdcr:#x}");
            assert_eq!(
                timer_period_ns(1000, div, BUS_CYCLE_NS),
                1000 * u64::from(div)
            );
            assert_eq!(timer_period_ns(1000, div, 10), 10_000 * u64::from(div));
        }
        assert_eq!(timer_period_ns(u32::MAX, 128, u64::MAX), u64::MAX);
        assert_eq!(
            timer_period_ns(7, 1, 0),
            7,
            "a zero bus cycle counts as 1 ns"
        );
        assert_eq!(current_count(2400, 4, 1), 600);
        assert_eq!(current_count(2401, 4, 0), 600);
        // Through the register, with the ICR set from a 1 GHz bus.
        let mut a = xapic(0);
        w(&mut a, reg::LVT_TIMER, 0x20);
        for (tdcr, div) in table {
            w(&mut a, reg::TIMER_DIVIDE, tdcr);
            let at = 100 + 1000 * u64::from(div);
            assert_eq!(
                w(&mut a, reg::TIMER_INITIAL, 1000),
                Effect::Timer(TimerAction::At(at - 100))
            );
            assert_eq!(
                a.write(reg::TIMER_INITIAL, 4, 1000, 100),
                Effect::Timer(TimerAction::At(at))
            );
        }
    }

    #[test]
    fn one_shot_timer() {
        let mut a = xapic(0);
        w(&mut a, reg::LVT_TIMER, 0x20);
        w(&mut a, reg::TIMER_DIVIDE, 0xb);
        assert_eq!(
            a.write(reg::TIMER_INITIAL, 4, 1000, 5000),
            Effect::Timer(TimerAction::At(6000))
        );
        assert_eq!(a.timer(), TimerAction::At(6000));
        assert_eq!(a.read(reg::TIMER_CURRENT, 4, 5000), 1000);
        assert_eq!(a.read(reg::TIMER_CURRENT, 4, 5500), 500);
        assert_eq!(a.read(reg::TIMER_CURRENT, 4, 6000), 0);
        assert_eq!(a.register(reg::TIMER_CURRENT), 0);
        // Early: nothing yet, rearm.
        let early = a.timer_expired(5999);
        assert_eq!((early.interrupt, early.next), (false, Some(6000)));
        let e = a.timer_expired(6001);
        assert_eq!((e.interrupt, e.next), (true, None));
        assert_eq!(r(&a, reg::IRR + 0x10), 1);
        assert_eq!(
            (a.timer(), a.read(reg::TIMER_CURRENT, 4, 6001)),
            (TimerAction::Cancel, 0)
        );
        assert!(!a.timer_expired(7000).interrupt);
        assert_eq!(r(&a, reg::TIMER_INITIAL), 1000);
        // A zero initial count stops it.
        w(&mut a, reg::TIMER_INITIAL, 50);
        assert_eq!(
            w(&mut a, reg::TIMER_INITIAL, 0),
            Effect::Timer(TimerAction::Cancel)
        );
        assert_eq!(a.timer(), TimerAction::Cancel);
    }

    #[test]
    fn periodic_timer() {
        let mut a = xapic(0);
        w(&mut a, reg::LVT_TIMER, 0x2_0030);
        w(&mut a, reg::TIMER_DIVIDE, 0xb);
        assert_eq!(a.timer_mode(), TimerMode::Periodic);
        assert_eq!(
            w(&mut a, reg::TIMER_INITIAL, 300_000),
            Effect::Timer(TimerAction::At(300_000))
        );
        let e = a.timer_expired(300_100);
        assert_eq!((e.interrupt, e.next), (true, Some(600_000)));
        assert_eq!(a.read(reg::TIMER_CURRENT, 4, 450_000), 150_000);
        // Late by several periods: once, and the next from now.
        let e = a.timer_expired(2_000_000);
        assert_eq!((e.interrupt, e.next), (true, Some(2_000_000)));
        // Masked: it keeps counting, interrupts nothing.
        w(&mut a, reg::LVT_TIMER, 0x3_0030);
        let e = a.timer_expired(2_300_000);
        assert_eq!((e.interrupt, e.next), (false, Some(2_300_000)));
        // Periodic to one-shot: runs to its end, then stops.
        w(&mut a, reg::LVT_TIMER, 0x30);
        assert_eq!(a.timer_expired(2_300_000).next, None);
        // Periods shorter than 200 us are stretched; one-shot ones are not.
        w(&mut a, reg::LVT_TIMER, 0x2_0030);
        assert_eq!(
            w(&mut a, reg::TIMER_INITIAL, 1000),
            Effect::Timer(TimerAction::At(MIN_PERIODIC_NS))
        );
        assert_eq!(
            a.read(reg::TIMER_CURRENT, 4, 0),
            1000,
            "at most the initial count"
        );
        w(&mut a, reg::LVT_TIMER, 0x30);
        assert_eq!(
            w(&mut a, reg::TIMER_INITIAL, 1000),
            Effect::Timer(TimerAction::At(1000))
        );
    }

    #[test]
    fn divide_change_rescales_a_running_count() {
        let mut a = xapic(0);
        w(&mut a, reg::LVT_TIMER, 0x20);
        w(&mut a, reg::TIMER_DIVIDE, 0xb);
        w(&mut a, reg::TIMER_INITIAL, 1000);
        assert_eq!(
            a.write(reg::TIMER_DIVIDE, 4, 1, 400),
            Effect::Timer(TimerAction::At(2800))
        );
        assert_eq!(a.read(reg::TIMER_CURRENT, 4, 400), 600);
        assert_eq!(
            a.write(reg::TIMER_DIVIDE, 4, 0xb, 2000),
            Effect::Timer(TimerAction::At(2200))
        );
        // The same divisor, or no count running: nothing.
        assert_eq!(a.write(reg::TIMER_DIVIDE, 4, 0xf, 2000), Effect::None);
        a.timer_expired(2200);
        assert_eq!(a.write(reg::TIMER_DIVIDE, 4, 0, 3000), Effect::None);
    }

    #[test]
    fn tsc_deadline_timer() {
        let mut a = xapic(0);
        w(&mut a, reg::LVT_TIMER, 0x20);
        w(&mut a, reg::TIMER_INITIAL, 1000);
        // Not in TSC-deadline mode: the MSR is ignored and reads 0.
        assert_eq!(a.set_tsc_deadline(5000), Effect::None);
        assert_eq!(a.tsc_deadline(), 0);
        // Into TSC-deadline mode: the count stops and is cleared.
        assert_eq!(
            w(&mut a, reg::LVT_TIMER, 0x4_0020),
            Effect::Timer(TimerAction::Cancel)
        );
        assert_eq!(
            (a.timer_mode(), r(&a, reg::TIMER_INITIAL)),
            (TimerMode::TscDeadline, 0)
        );
        assert_eq!(
            a.set_tsc_deadline(5000),
            Effect::Timer(TimerAction::AtTsc(5000))
        );
        assert_eq!(
            (a.tsc_deadline(), a.timer()),
            (5000, TimerAction::AtTsc(5000))
        );
        // The initial count is ignored, the current count reads 0.
        assert_eq!(w(&mut a, reg::TIMER_INITIAL, 77), Effect::None);
        assert_eq!(
            (r(&a, reg::TIMER_INITIAL), r(&a, reg::TIMER_CURRENT)),
            (0, 0)
        );
        let e = a.timer_expired(0);
        assert_eq!((e.interrupt, e.next), (true, None));
        assert_eq!((a.tsc_deadline(), a.timer()), (0, TimerAction::Cancel));
        assert!(!a.timer_expired(0).interrupt);
        a.set_tsc_deadline(9000);
        assert_eq!(a.set_tsc_deadline(0), Effect::Timer(TimerAction::Cancel));
        // Out of TSC-deadline mode: the deadline is cleared.
        a.set_tsc_deadline(9000);
        assert_eq!(
            w(&mut a, reg::LVT_TIMER, 0x2_0020),
            Effect::Timer(TimerAction::Cancel)
        );
        w(&mut a, reg::LVT_TIMER, 0x4_0020);
        assert_eq!(a.tsc_deadline(), 0);
        // Disabled in IA32_APIC_BASE: ignored.
        a.set_apic_base(0, false);
        assert_eq!(a.set_tsc_deadline(1), Effect::None);
    }

    #[test]
    fn apic_base_transitions() {
        let mut a = xapic(5);
        let xapic_base = a.apic_base();
        let x2apic_base = xapic_base | base::EXTD;
        assert_eq!(a.set_apic_base(xapic_base, false), Effect::None);
        for bad in [
            xapic_base | 1,
            xapic_base | 1 << 9,
            xapic_base | 1 << 36,
            base::EXTD,
        ] {
            assert_eq!(a.set_apic_base(bad, false), Effect::Gp, "{bad:#x}");
        }
        assert_eq!(
            a.set_apic_base(x2apic_base, false),
            Effect::ApicBase(Mode::X2Apic)
        );
        assert_eq!((a.rdmsr(msr(reg::ID), 0), a.id()), (Some(5), 5));
        assert_eq!(a.rdmsr(msr(reg::LDR), 0), Some(0x20));
        // x2APIC to xAPIC: only userspace, else through disabled.
        assert_eq!(a.set_apic_base(xapic_base, false), Effect::Gp);
        a.wrmsr(msr(reg::TPR), 0x40, 0);
        assert_eq!(a.set_apic_base(0, false), Effect::ApicBase(Mode::Disabled));
        assert_eq!(
            (a.register(reg::TPR), a.register(reg::ID)),
            (0, 0x0500_0000)
        );
        assert_eq!(a.set_apic_base(x2apic_base, false), Effect::Gp);
        assert_eq!(
            a.set_apic_base(DEFAULT_BASE | base::EXTD, false),
            Effect::Gp
        );
        assert_eq!(
            a.set_apic_base(0xfed0_0000 | base::EN, false),
            Effect::ApicBase(Mode::XApic)
        );
        assert_eq!((a.mmio_base(), r(&a, reg::ID)), (0xfed0_0000, 0x0500_0000));
        a.set_apic_base(x2apic_base, false);
        assert_eq!(
            a.set_apic_base(xapic_base, true),
            Effect::ApicBase(Mode::XApic)
        );
        assert_eq!(a.set_apic_base(0, true), Effect::ApicBase(Mode::Disabled));
        assert_eq!(
            a.set_apic_base(x2apic_base, true),
            Effect::ApicBase(Mode::X2Apic)
        );
        // Without x2APIC in CPUID, EXTD is reserved.
        let mut c = Config::new(1);
        c.x2apic = false;
        c.maxphyaddr = 40;
        let mut b = Lapic::new(c);
        assert_eq!(
            b.set_apic_base(b.apic_base() | base::EXTD, false),
            Effect::Gp
        );
        assert_eq!(
            b.set_apic_base(1 << 39 | base::EN, false),
            Effect::ApicBase(Mode::XApic)
        );
        // The BSP flag is the guest's to write.
        assert_eq!(
            b.set_apic_base(1 << 39 | base::EN | base::BSP, false),
            Effect::ApicBase(Mode::XApic)
        );
        assert!(b.is_bsp());
    }

    #[test]
    fn hardware_disable_resets_and_stops() {
        let mut a = xapic(0);
        w(&mut a, reg::LVT_TIMER, 0x2_0030);
        w(&mut a, reg::TIMER_INITIAL, 1_000_000);
        a.accept(0x50, false);
        w(&mut a, reg::LDR, 0x0100_0000);
        assert_eq!(a.set_apic_base(0, false), Effect::ApicBase(Mode::Disabled));
        assert_eq!(a.timer(), TimerAction::Cancel);
        assert_eq!(
            a.timer_expired(2_000_000),
            Expiry {
                interrupt: false,
                next: None
            }
        );
        assert_eq!((a.highest_irr(), a.register(reg::LDR)), (None, 0));
        assert!(!a.accept(0x50, false));
        assert!(a.accepts_pic_interrupt());
        assert_eq!(a.local_interrupt(Lvt::Lint0), Accepted::Dropped);
    }

    fn bytes_at(state: &[u8; STATE_SIZE], offset: u32) -> u32 {
        let o = offset as usize;
        u32::from_le_bytes(state[o..o + 4].try_into().unwrap())
    }

    fn set_bytes(state: &mut [u8; STATE_SIZE], offset: u32, value: u32) {
        let o = offset as usize;
        state[o..o + 4].copy_from_slice(&value.to_le_bytes());
    }

    #[test]
    fn state_round_trip() {
        let mut a = xapic(2);
        w(&mut a, reg::TPR, 0x20);
        w(&mut a, reg::LDR, 0x0400_0000);
        w(&mut a, reg::LVT_TIMER, 0x2_00ec);
        w(&mut a, reg::TIMER_DIVIDE, 0xb);
        w(&mut a, reg::TIMER_INITIAL, 1_000_000);
        a.accept(0x41, true);
        a.accept(0x62, false);
        a.ack();
        let s = a.get_state(250_000, false);
        assert_eq!(bytes_at(&s, reg::ID), 0x0200_0000);
        assert_eq!(bytes_at(&s, reg::VERSION), 0x5_0014);
        assert_eq!(bytes_at(&s, reg::PPR), 0x60);
        assert_eq!(bytes_at(&s, reg::ISR + 0x30), 1 << 2);
        assert_eq!(bytes_at(&s, reg::IRR + 0x20), 1 << 1);
        assert_eq!(bytes_at(&s, reg::TMR + 0x20), 1 << 1);
        assert_eq!(bytes_at(&s, reg::TIMER_CURRENT), 750_000);
        assert_eq!(
            bytes_at(&s, reg::ID + 4),
            0,
            "only the first 4 bytes of a slot"
        );
        let mut b = Lapic::new(Config::new(2));
        assert_eq!(b.set_state(&s, 1_000, false), Ok(TimerAction::At(751_000)));
        assert_eq!(b.get_state(1_000, false), s);
        assert_eq!((b.ack(), b.eoi()), (None, a.eoi()));
        let e = b.timer_expired(751_000);
        assert_eq!((e.interrupt, e.next), (true, Some(1_751_000)));
    }

    #[test]
    fn set_state_fixups() {
        let a = xapic(0);
        let mut s = a.get_state(0, false);
        set_bytes(&mut s, reg::VERSION, 0xdead);
        set_bytes(&mut s, reg::PPR, 0xdead);
        set_bytes(&mut s, reg::TPR, 0x31);
        set_bytes(&mut s, reg::LVT_TIMER, 0x20);
        set_bytes(&mut s, reg::TIMER_DIVIDE, 0x1);
        set_bytes(&mut s, reg::TIMER_INITIAL, 1000);
        set_bytes(&mut s, reg::TIMER_CURRENT, 250);
        let mut b = Lapic::new(Config::new(0));
        assert_eq!(b.set_state(&s, 10, false), Ok(TimerAction::At(1010)));
        assert_eq!((r(&b, reg::VERSION), b.ppr()), (0x5_0014, 0x31));
        assert_eq!(b.register(reg::TIMER_CURRENT), 0);
        assert_eq!(b.read(reg::TIMER_CURRENT, 4, 10), 250);
        // A count above the initial count restarts the period.
        set_bytes(&mut s, reg::TIMER_CURRENT, 5000);
        assert_eq!(b.set_state(&s, 0, false), Ok(TimerAction::At(4000)));
        // Count 0: a one-shot timer has expired, a periodic one reloads.
        set_bytes(&mut s, reg::TIMER_CURRENT, 0);
        assert_eq!(b.set_state(&s, 0, false), Ok(TimerAction::Cancel));
        set_bytes(&mut s, reg::LVT_TIMER, 0x2_0020);
        set_bytes(&mut s, reg::TIMER_INITIAL, 100_000);
        assert_eq!(b.set_state(&s, 0, false), Ok(TimerAction::At(400_000)));
        // TSC-deadline mode keeps the deadline across KVM_SET_LAPIC.
        set_bytes(&mut s, reg::LVT_TIMER, 0x4_0020);
        assert_eq!(b.set_state(&s, 0, false), Ok(TimerAction::Cancel));
        b.set_tsc_deadline(1234);
        assert_eq!(b.set_state(&s, 0, false), Ok(TimerAction::AtTsc(1234)));
        set_bytes(&mut s, reg::LVT_TIMER, 0x20);
        b.set_state(&s, 0, false).unwrap();
        assert_eq!((b.tsc_deadline(), r(&b, reg::TIMER_INITIAL)), (0, 100_000));
    }

    #[test]
    fn x2apic_state_ids() {
        let mut a = x2apic(5);
        let s = a.get_state(0, false);
        assert_eq!(bytes_at(&s, reg::ID), 0x0500_0000);
        assert_eq!(bytes_at(&s, reg::LDR), 0x20);
        let s32 = a.get_state(0, true);
        assert_eq!(bytes_at(&s32, reg::ID), 5);
        // Without 32-bit IDs the ID given is ignored; the LDR is derived.
        let mut t = s;
        set_bytes(&mut t, reg::ID, 0x0900_0000);
        set_bytes(&mut t, reg::LDR, 0x1234);
        set_bytes(&mut t, reg::TPR, 0x40);
        assert!(a.set_state(&t, 0, false).is_ok());
        assert_eq!(a.rdmsr(msr(reg::ID), 0), Some(5));
        assert_eq!(a.rdmsr(msr(reg::LDR), 0), Some(0x20));
        assert_eq!(a.rdmsr(msr(reg::TPR), 0), Some(0x40));
        // With them it must be the x2APIC ID, else EINVAL and no change.
        let before = a.get_state(0, true);
        assert_eq!(a.set_state(&t, 0, true), Err(StateError::X2apicIdMismatch));
        assert_eq!(a.get_state(0, true), before);
        assert!(a.set_state(&s32, 0, true).is_ok());
        assert_eq!(a.rdmsr(msr(reg::TPR), 0), Some(0));
        // The ICR reads back as ICR and ICR2.
        a.wrmsr(msr(reg::ICR), 9 << 32 | 0x4030, 0);
        let s = a.get_state(0, true);
        assert_eq!(
            (bytes_at(&s, reg::ICR), bytes_at(&s, reg::ICR2)),
            (0x4030, 9)
        );
    }

    #[test]
    fn cr8_is_the_tpr() {
        let mut a = xapic(0);
        assert_eq!(a.set_cr8(0x19), Effect::Tpr);
        assert_eq!((r(&a, reg::TPR), a.cr8(), a.ppr()), (0x90, 9, 0x90));
        w(&mut a, reg::TPR, 0x5f);
        assert_eq!(a.cr8(), 5);
    }

    #[test]
    fn local_interrupts() {
        let mut a = xapic(0);
        assert_eq!(a.local_interrupt(Lvt::Lint0), Accepted::ExtInt);
        w(&mut a, reg::LVT_LINT0, 0x1_0700);
        assert!(!a.accepts_pic_interrupt());
        assert_eq!(a.local_interrupt(Lvt::Lint0), Accepted::Dropped);
        w(&mut a, reg::LVT_LINT1, 0x400);
        assert_eq!(a.local_interrupt(Lvt::Lint1), Accepted::Nmi);
        assert_eq!(a.lvt(Lvt::Lint1).mode, DeliveryMode::Nmi);
        w(&mut a, reg::LVT_LINT0, 0xa031);
        let lint0 = a.lvt(Lvt::Lint0);
        assert!(lint0.trigger_level && lint0.active_low && !lint0.masked);
        assert_eq!(a.local_interrupt(Lvt::Lint0), Accepted::Fixed);
        assert_eq!(r(&a, reg::TMR + 0x10), 1 << 0x11);
        assert_eq!(a.local_interrupt(Lvt::Cmci), Accepted::Dropped);
        // A CMCI entry that appears with MCG_CMCI_P starts masked.
        let mut c = *a.config();
        c.cmci = true;
        assert_eq!(a.set_config(c), Effect::None);
        assert_eq!(
            (r(&a, reg::LVT_CMCI), r(&a, reg::VERSION)),
            (lvt::MASKED, 0x6_0014)
        );
        w(&mut a, reg::LVT_CMCI, 0x50);
        assert_eq!(a.local_interrupt(Lvt::Cmci), Accepted::Fixed);
    }

    #[test]
    fn init_sipi() {
        let mut ap = InitSipi::new(false);
        assert_eq!(ap.state(), MpState::Uninitialized);
        // A SIPI before INIT is dropped.
        ap.receive(Accepted::Sipi(0x10));
        assert_eq!(
            ap.accept_events(false, true),
            Events {
                init: false,
                sipi: None
            }
        );
        ap.receive(Accepted::Init);
        assert!(ap.has_events() && ap.init_pending());
        assert_eq!(
            ap.accept_events(false, true),
            Events {
                init: true,
                sipi: None
            }
        );
        assert_eq!(ap.state(), MpState::InitReceived);
        ap.receive(Accepted::Sipi(0x9a));
        assert_eq!(
            ap.accept_events(false, true),
            Events {
                init: false,
                sipi: Some(0x9a)
            }
        );
        assert_eq!((ap.state(), ap.sipi_vector()), (MpState::Runnable, 0x9a));
        assert_eq!(sipi_entry(0x9a), (0x9a00, 0x9_a000));
        // A second SIPI to a running vCPU is dropped.
        ap.receive(Accepted::Sipi(0x20));
        assert_eq!(ap.accept_events(false, true).sipi, None);
        // INIT and SIPI together, as Linux sends them.
        ap.receive(Accepted::Init);
        ap.receive(Accepted::Sipi(0x30));
        assert_eq!(
            ap.accept_events(false, true),
            Events {
                init: true,
                sipi: Some(0x30)
            }
        );
        // Blocked: the SIPI is dropped, the INIT stays latched.
        ap.receive(Accepted::Init);
        ap.receive(Accepted::Sipi(0x40));
        ap.receive(Accepted::Nmi);
        assert_eq!(
            ap.accept_events(false, false),
            Events {
                init: false,
                sipi: None
            }
        );
        assert!(ap.init_pending());
        assert_eq!(
            ap.accept_events(false, true),
            Events {
                init: true,
                sipi: None
            }
        );
        // The BSP runs after INIT.
        let mut bsp = InitSipi::new(true);
        assert_eq!(bsp.state(), MpState::Runnable);
        bsp.receive(Accepted::Init);
        assert!(bsp.accept_events(true, true).init);
        assert_eq!(bsp.state(), MpState::Runnable);
        bsp.halt();
        assert_eq!(bsp.state().to_abi(), 3);
        bsp.wake();
        assert_eq!(bsp.state(), MpState::Runnable);
    }

    #[test]
    fn set_mp_state() {
        let mut m = InitSipi::new(false);
        assert!(!m.set_abi(5) && !m.set_abi(10));
        m.set_sipi_vector(0x12);
        assert!(m.set_abi(4));
        assert_eq!(m.state(), MpState::InitReceived);
        assert_eq!(m.accept_events(false, true).sipi, Some(0x12));
        for (abi, state) in [
            (0, MpState::Runnable),
            (1, MpState::Uninitialized),
            (2, MpState::InitReceived),
            (3, MpState::Halted),
            (9, MpState::ApResetHold),
        ] {
            assert!(m.set_abi(abi));
            assert_eq!((m.state(), m.state().to_abi()), (state, abi));
        }
        m.set_init_pending(true);
        assert!(m.has_events());
    }

    /// Whatever the guest and userspace do, nothing panics (overflow checks
    /// are on in tests) and the invariants hold.
    #[test]
    fn arbitrary_accesses_do_not_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..64u32 {
            let mut c = Config::new(next() as u32);
            c.cmci = round & 1 != 0;
            c.tsc_deadline = round & 2 != 0;
            c.bus_cycle_ns = next() >> (next() & 63);
            c.maxphyaddr = (next() & 127) as u32;
            let mut a = Lapic::new(c);
            let mut now = 0u64;
            for _ in 0..400 {
                let v = next();
                now = now.saturating_add(v >> 40);
                let offset = (v >> 8) as u32 & 0xfff;
                match v & 15 {
                    0 | 1 => {
                        a.write(offset & 0x3f0, 4, (v >> 20) as u32, now);
                    }
                    2 => {
                        a.read(offset, (v >> 32) as u32 & 15, now);
                    }
                    3 => {
                        a.wrmsr(0x800 | (offset & 0xff), next(), now);
                    }
                    4 => {
                        a.rdmsr(0x800 | (offset & 0xff), now);
                    }
                    5 => {
                        a.set_apic_base(next() & 0xffff_fc00_0000_0d00, round & 4 != 0);
                    }
                    6 => {
                        let mut s = [0u8; STATE_SIZE];
                        for chunk in s.chunks_mut(8) {
                            chunk.copy_from_slice(&next().to_le_bytes());
                        }
                        let _ = a.set_state(&s, now, v & 16 != 0);
                    }
                    7 => {
                        a.timer_expired(now.saturating_add(next() >> 1));
                    }
                    8 => {
                        a.deliver(Icr::decode(next() as u32, 0, false).interrupt);
                    }
                    9 => {
                        a.set_tsc_deadline(next());
                    }
                    10 => {
                        a.ack();
                        a.eoi();
                    }
                    11 => {
                        let d = Icr::decode(next() as u32, next() as u32, v & 16 != 0).destination;
                        a.matches(&d, v & 32 != 0, v & 64 != 0);
                    }
                    12 => {
                        a.write(reg::TIMER_DIVIDE, 4, (v >> 20) as u32, now);
                    }
                    _ => {
                        a.get_state(now.wrapping_sub(v >> 50), v & 16 != 0);
                    }
                }
                if let Some(v) = a.has_interrupt() {
                    assert!(v & 0xf0 > a.ppr() & 0xf0);
                }
            }
        }
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The vCPU's side of its in-kernel local APIC (`KVM_CAP_SPLIT_IRQCHIP`):
//! what the run loop does before each entry (the timer's expiry, NMIs,
//! INIT and SIPI from other APICs, the interrupt to inject), HLT in the
//! kernel, the APIC's MMIO page and MSRs, and what a register access asks
//! for ([`pure::lapic::Effect`]: an IPI, the timer, an EOI for userspace's
//! IOAPIC).

use kernel::{
    prelude::*,
    sync::Arc, //
};

use crate::{
    abi::{
        self,
        uapi, //
    },
    apic::VcpuApic,
    backend::SegReg,
    emulate::{
        self,
        Mmio, //
    },
    memory::GuestMemory,
    pure::{
        cpuid,
        lapic::{
            self,
            Effect,
            MpState,
            Shorthand,
            TimerAction, //
        },
        msr,
        paging::GuestPhys, //
    },
    stats::VcpuStat,
    sys, //
};

use super::{
    exits::Next,
    run_page::RunPage,
    Vcpu,
    VcpuState, //
};

/// Nanoseconds until a guest TSC of `now_tsc` reaches `deadline` at
/// `tsc_khz`; `None` if it has (or the rate is unknown).
fn tsc_delay_ns(deadline: u64, now_tsc: u64, tsc_khz: u32) -> Option<u64> {
    let ticks = deadline.checked_sub(now_tsc).filter(|&t| t > 0)?;
    // In two parts, without 128-bit division (not in the kernel): whole
    // milliseconds, then the rest (below one millisecond of ticks, so the
    // product cannot overflow).
    let khz = u64::from(tsc_khz.max(1));
    let ms = ticks / khz;
    let rest = (ticks % khz) * 1_000_000 / khz;
    Some(ms.saturating_mul(1_000_000).saturating_add(rest))
}

impl Vcpu {
    /// Takes in what happened to the APIC since the vCPU last looked: the
    /// timer's expiry (the model accepts its interrupt, a periodic timer is
    /// armed again), NMIs, INIT and SIPI.
    pub(super) fn apic_events(&self, st: &mut VcpuState, apic: &Arc<VcpuApic>) {
        apic.kick().take();
        if apic.take_timer_fired() {
            let now = sys::ktime_ns();
            let expiry = apic.with(|s| s.lapic.timer_expired(now));
            if let Some(next) = expiry.next {
                apic.program_timer(&mut st.apic_timer, TimerAction::At(next), now, |_| None);
            }
        }
        let gif = st.gif;
        let (nmis, events) = apic.with(|s| {
            let nmis = core::mem::take(&mut s.nmis);
            let bsp = s.lapic.is_bsp();
            (nmis, s.mp.accept_events(bsp, gif))
        });
        st.nmi_pending = st.nmi_pending.saturating_add(nmis).min(2);
        if events.init {
            // INIT: the processor's RESET state but for its APIC's
            // configuration (which INIT keeps, `Lapic::reset`).
            st.arch.reset();
            st.nmi_pending = 0;
            st.pending_irq = None;
            apic.program_timer(&mut st.apic_timer, TimerAction::Cancel, 0, |_| None);
            apic.with(|s| s.lapic.reset(true));
        }
        if let Some(vector) = events.sipi {
            let (selector, base) = lapic::sipi_entry(vector);
            let mut cs = st.arch.segment(SegReg::Cs);
            cs.selector = selector;
            cs.base = base;
            st.arch.set_segment(SegReg::Cs, &cs);
            st.arch.set_rip(0);
        }
    }

    /// Whether the vCPU may run: it is runnable, or halted with something
    /// to wake it (an interrupt it can take, an NMI), which makes it
    /// runnable. `kvm_vcpu_has_events()`.
    pub(super) fn apic_runnable(&self, st: &mut VcpuState, apic: &Arc<VcpuApic>) -> bool {
        let allowed = st.gif && st.arch.interrupt_allowed();
        // An NMI, or an interrupt the guest takes: its APIC's, the one
        // userspace's PIC gave with KVM_INTERRUPT, or the in-kernel PIC's.
        let event = st.nmi_pending > 0
            || (allowed && (st.pending_irq.is_some() || self.extint_pending(apic)));
        apic.with(|s| match s.mp.state() {
            MpState::Runnable => true,
            MpState::Halted if event || (allowed && s.lapic.has_interrupt().is_some()) => {
                s.mp.wake();
                true
            }
            _ => false,
        })
    }

    /// Whether the in-kernel PIC has an interrupt for this vCPU: its INTR
    /// is up and the vCPU's APIC takes it on LINT0, or is disabled
    /// (`kvm_cpu_has_extint()`).
    fn extint_pending(&self, apic: &VcpuApic) -> bool {
        self.full_irqchip && apic.with(|s| s.lapic.accepts_pic_interrupt()) && self.vm.pic_output()
    }

    /// Before an entry: the APIC's TPR as CR8, and the interrupt to inject
    /// if the guest can take it now: the in-kernel PIC's first (its INTA
    /// cycle gives the vector; `kvm_cpu_get_interrupt()`), else the APIC's
    /// highest. Returns whether an interrupt waits for a window.
    pub(super) fn apic_inject(&self, st: &mut VcpuState, apic: &Arc<VcpuApic>) -> bool {
        let allowed = st.gif && st.pending_irq.is_none() && st.arch.interrupt_allowed();
        let cr8 = apic.with(|s| s.lapic.cr8());
        st.arch.set_cr8(cr8);
        if self.extint_pending(apic) {
            if !allowed {
                return true;
            }
            // Kept as KVM_INTERRUPT's vector is if the entry cannot take it
            // now: the PIC has acknowledged it.
            let vector = self.vm.pic_read_irq();
            if st.arch.inject_interrupt(vector) {
                self.stats.inc(VcpuStat::IrqInjections);
            } else {
                st.pending_irq = Some(vector);
            }
            self.sync_to_vapic(st, apic);
            return false;
        }
        let arch = &mut st.arch;
        let waits = apic.with(|s| {
            let Some(vector) = s.lapic.has_interrupt() else {
                return false;
            };
            if allowed && arch.inject_interrupt(vector) {
                s.lapic.ack();
                return false;
            }
            true
        });
        self.sync_to_vapic(st, apic);
        waits
    }

    /// After an exit: CR8 as the guest left it is the APIC's TPR, then the
    /// vAPIC word's.
    pub(super) fn apic_after_exit(&self, st: &VcpuState, apic: &VcpuApic) {
        let cr8 = st.arch.cr8();
        apic.with(|s| s.lapic.set_cr8(cr8));
        self.sync_from_vapic(st, apic);
    }

    /// What a register access asks for. `Some(Next::User)` for an EOI of a
    /// level-triggered vector, which userspace's IOAPIC must see
    /// (`KVM_EXIT_IOAPIC_EOI`); `Err(())` for a #GP.
    pub(super) fn apic_effect(
        &self,
        st: &mut VcpuState,
        apic: &Arc<VcpuApic>,
        effect: Effect,
        run: Option<&RunPage<'_>>,
    ) -> core::result::Result<Option<Next>, ()> {
        match effect {
            Effect::Gp => return Err(()),
            Effect::Ipi(icr) => {
                let irq = icr.interrupt;
                if icr.destination.shorthand == Shorthand::ToSelf {
                    apic.deliver(irq);
                } else {
                    let source = self.vm.apic_index(apic);
                    self.vm.deliver_irq(irq, &icr.destination, source);
                }
            }
            Effect::Timer(action) => self.apic_timer(st, apic, action),
            // As KVM's kvm_ioapic_send_eoi() with the full irqchip: the
            // in-kernel IOAPIC sees the EOIs of the vectors it handles.
            Effect::Eoi(eoi) if self.full_irqchip => self.vm.ioapic_eoi(apic, eoi),
            // With the split irqchip: the vectors of the IOAPIC's
            // level-triggered routes to this APIC, unless the guest
            // suppresses EOI broadcasts.
            Effect::Eoi(eoi)
                if !eoi.suppress_broadcast && self.vm.ioapic_handles(apic, eoi.vector) =>
            {
                if let Some(run) = run {
                    run.set_ioapic_eoi(eoi.vector);
                    return Ok(Some(Next::User));
                }
            }
            Effect::ApicBase(mode) => {
                if mode == lapic::Mode::Disabled {
                    apic.program_timer(&mut st.apic_timer, TimerAction::Cancel, 0, |_| None);
                }
                let base = apic.with(|s| s.lapic.apic_base());
                st.arch.set_apic_base(base);
            }
            Effect::None
            | Effect::Eoi(_)
            | Effect::Tpr
            | Effect::SoftwareEnable(_)
            | Effect::Routing => {}
        }
        Ok(None)
    }

    /// After `KVM_SET_CPUID2`: the APIC has what the guest's CPUID says (as
    /// KVM's `kvm_vcpu_after_set_cpuid()`): x2APIC mode only with CPUID's
    /// x2APIC (else EXTD is #GP), the TSC-deadline timer mode only with its
    /// bit, `IA32_APIC_BASE`'s address bits up to MAXPHYADDR.
    pub(super) fn apic_follow_cpuid(&self, st: &mut VcpuState, apic: &Arc<VcpuApic>) {
        let ecx = st
            .cpuid
            .iter()
            .find(|e| e.function == 1 && e.index == 0)
            .map_or(0, |e| e.ecx);
        let maxphyaddr = cpuid::maxphyaddr(&st.cpuid);
        let effect = apic.with(|s| {
            let mut config = *s.lapic.config();
            config.x2apic = ecx & cpuid::LEAF1_ECX_X2APIC != 0;
            config.tsc_deadline = ecx & cpuid::LEAF1_ECX_TSC_DEADLINE != 0;
            config.maxphyaddr = maxphyaddr;
            s.lapic.set_config(config)
        });
        // What a configuration change asks for is never a #GP.
        let _ = self.apic_effect(st, apic, effect, None);
    }

    /// Arms or cancels the APIC timer as the model asks.
    fn apic_timer(&self, st: &mut VcpuState, apic: &Arc<VcpuApic>, action: TimerAction) {
        let now = sys::ktime_ns();
        let guest_tsc = self.read_msr(st, msr::TSC, true).unwrap_or(0);
        let khz = sys::tsc_khz();
        apic.program_timer(&mut st.apic_timer, action, now, |deadline| {
            tsc_delay_ns(deadline, guest_tsc, khz)
        });
    }

    /// An MMIO access at `gpa`, if it is the APIC's page: emulated here.
    /// `None`: not the APIC's; userspace's as any MMIO.
    pub(super) fn apic_mmio(
        &self,
        st: &mut VcpuState,
        mem: &GuestMemory,
        apic: &Arc<VcpuApic>,
        gpa: u64,
        write: bool,
        run: &RunPage<'_>,
    ) -> Option<Next> {
        let offset = apic.with(|s| {
            let base = s.lapic.mmio_base();
            (s.lapic.mmio_active() && gpa >= base && gpa - base < lapic::MMIO_SIZE)
                .then(|| (gpa - base) as u32)
        })?;
        let now = sys::ktime_ns();
        Some(match emulate::start(mem, &mut *st.arch, write) {
            Some(Mmio::Write { data, len }) => {
                let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                let effect = apic.with(|s| s.lapic.write(offset, u32::from(len), value, now));
                // MMIO never faults (the model never says #GP for it).
                self.apic_effect(st, apic, effect, Some(run))
                    .ok()
                    .flatten()
                    .unwrap_or(Next::Reenter)
            }
            Some(Mmio::Read(load)) => {
                let value = apic.with(|s| s.lapic.read(offset, u32::from(load.len), now));
                load.complete(&mut *st.arch, value.to_le_bytes());
                Next::Reenter
            }
            None => {
                let rip = st.arch.rip();
                run.set_internal_error(uapi::KVM_INTERNAL_ERROR_EMULATION, &[gpa, rip]);
                Next::User
            }
        })
    }

    /// An MMIO access at `gpa`, if it is the in-kernel IOAPIC's (with the
    /// full irqchip): emulated here. `None`: not the IOAPIC's.
    pub(super) fn ioapic_mmio(
        &self,
        st: &mut VcpuState,
        mem: &GuestMemory,
        gpa: u64,
        write: bool,
        run: &RunPage<'_>,
    ) -> Option<Next> {
        if !crate::vm::in_ioapic_window(gpa) {
            return None;
        }
        Some(match emulate::start(mem, &mut *st.arch, write) {
            Some(Mmio::Write { data, len }) => {
                let bytes = data.get(..usize::from(len)).unwrap_or(&data);
                self.vm.ioapic_mmio(gpa, bytes.len(), Some(bytes));
                Next::Reenter
            }
            Some(Mmio::Read(load)) => {
                let len = usize::from(load.len);
                // 0 for a length the IOAPIC does not answer (KVM's data is
                // then whatever its buffer held).
                let value = self.vm.ioapic_mmio(gpa, len, None).flatten();
                load.complete(&mut *st.arch, value.unwrap_or(0).to_le_bytes());
                Next::Reenter
            }
            None => {
                let rip = st.arch.rip();
                run.set_internal_error(uapi::KVM_INTERNAL_ERROR_EMULATION, &[gpa, rip]);
                Next::User
            }
        })
    }

    /// RDMSR of an MSR the APIC owns (`IA32_APIC_BASE`, the x2APIC
    /// registers, `IA32_TSC_DEADLINE`): `Some(None)` is a #GP, `None` not
    /// the APIC's.
    pub(super) fn apic_rdmsr(&self, apic: &VcpuApic, index: u32) -> Option<Option<u64>> {
        let now = sys::ktime_ns();
        apic.with(|s| match index {
            msr::APIC_BASE => Some(Some(s.lapic.apic_base())),
            lapic::TSC_DEADLINE_MSR => Some(Some(s.lapic.tsc_deadline())),
            lapic::X2APIC_MSR_FIRST..=lapic::X2APIC_MSR_LAST => Some(s.lapic.rdmsr(index, now)),
            _ => None,
        })
    }

    /// WRMSR of an MSR the APIC owns (`host`: `KVM_SET_MSRS`): `None` if it
    /// is not the APIC's, else whether it was taken (false: #GP) and, for
    /// the guest's EOI of a level-triggered vector, `Next::User`.
    pub(super) fn apic_wrmsr(
        &self,
        st: &mut VcpuState,
        apic: &Arc<VcpuApic>,
        index: u32,
        value: u64,
        host: bool,
        run: Option<&RunPage<'_>>,
    ) -> Option<(bool, Option<Next>)> {
        let now = sys::ktime_ns();
        let effect = apic.with(|s| match index {
            msr::APIC_BASE => Some(s.lapic.set_apic_base(value, host)),
            lapic::TSC_DEADLINE_MSR => Some(s.lapic.set_tsc_deadline(value)),
            lapic::X2APIC_MSR_FIRST..=lapic::X2APIC_MSR_LAST => {
                Some(s.lapic.wrmsr(index, value, now))
            }
            _ => None,
        })?;
        Some(match self.apic_effect(st, apic, effect, run) {
            Ok(next) => (true, next),
            Err(()) => (false, None),
        })
    }

    /// `KVM_GET_LAPIC`: EINVAL without an in-kernel APIC, as KVM.
    pub(super) fn get_lapic(&self, arg: usize) -> Result<isize> {
        let apic = self.apic.as_ref().ok_or(EINVAL)?;
        let _st = self.state.lock();
        let now = sys::ktime_ns();
        let regs = apic.with(|s| s.lapic.get_state(now, false));
        abi::write_arg(arg, &regs)?;
        Ok(0)
    }

    /// `KVM_SET_LAPIC`: EINVAL without an in-kernel APIC or for a state the
    /// model refuses; the timer runs on from the state's current count.
    pub(super) fn set_lapic(&self, arg: usize) -> Result<isize> {
        let apic = self.apic.as_ref().ok_or(EINVAL)?;
        let regs: [u8; lapic::STATE_SIZE] = abi::read_arg(arg)?;
        let mut st = self.state.lock();
        let now = sys::ktime_ns();
        let action = apic
            .with(|s| s.lapic.set_state(&regs, now, false))
            .map_err(|_| EINVAL)?;
        self.apic_timer(&mut st, apic, action);
        let base = apic.with(|s| s.lapic.apic_base());
        st.arch.set_apic_base(base);
        apic.kick().kick();
        Ok(0)
    }

    /// The segment and control registers as `KVM_GET_SREGS` and `kvm_run`
    /// report them: with an in-kernel APIC, CR8 and `IA32_APIC_BASE` are
    /// its own (`kvm_get_cr8()`, `kvm_get_apic_base()`), which
    /// `KVM_SET_LAPIC` or the vAPIC word may have changed since the vCPU's
    /// registers last followed them.
    pub(super) fn sregs(&self, st: &VcpuState) -> uapi::kvm_sregs {
        let mut sregs = st.arch.sregs();
        if let Some(apic) = &self.apic {
            apic.with(|s| {
                sregs.cr8 = s.lapic.cr8();
                sregs.apic_base = s.lapic.apic_base();
            });
        }
        sregs
    }

    /// `KVM_SET_VAPIC_ADDR` (`kvm_lapic_set_vapic_addr()`): EINVAL without
    /// an in-kernel APIC (before the argument is read, as KVM), EFAULT if
    /// it cannot be read, EINVAL for an address whose 4 bytes are not
    /// guest RAM. 0 stops the mirroring.
    pub(super) fn set_vapic_addr(&self, arg: usize) -> Result<isize> {
        if self.apic.is_none() {
            return Err(EINVAL);
        }
        let addr: u64 = abi::read_arg(arg)?;
        if addr != 0 {
            let mut word = [0u8; 4];
            self.vm
                .with_memory(|mem| mem.read(GuestPhys(addr), &mut word))
                .map_err(|_| EINVAL)?;
        }
        self.state.lock().vapic_addr = addr;
        Ok(0)
    }

    /// Before an entry, with a vAPIC address and the APIC enabled (as
    /// KVM's `vcpu_enter_guest()` asks): the word QEMU's option ROM reads
    /// there (`kvm_lapic_sync_to_vapic()`): TPR in bits 7:0, the highest
    /// in-service vector's class in 15:12, the highest requested vector in
    /// 31:24. A word that cannot be written is skipped, as KVM's cached
    /// write fails silently.
    fn sync_to_vapic(&self, st: &VcpuState, apic: &VcpuApic) {
        if st.vapic_addr == 0 {
            return;
        }
        let word = apic.with(|s| {
            let l = &s.lapic;
            if !l.enabled() {
                return None;
            }
            let tpr = l.register(lapic::reg::TPR) & 0xff;
            let isr = u32::from(l.highest_isr().unwrap_or(0));
            let irr = u32::from(l.highest_irr().unwrap_or(0));
            Some(tpr | ((isr & 0xf0) << 8) | (irr << 24))
        });
        let Some(word) = word else {
            return;
        };
        let _ = self
            .vm
            .with_memory(|mem| mem.write(GuestPhys(st.vapic_addr), &word.to_le_bytes()));
    }

    /// After an exit, with a vAPIC address: the TPR the guest wrote there
    /// (`kvm_lapic_sync_from_vapic()`).
    fn sync_from_vapic(&self, st: &VcpuState, apic: &VcpuApic) {
        if st.vapic_addr == 0 {
            return;
        }
        let mut word = [0u8; 4];
        let read = self
            .vm
            .with_memory(|mem| mem.read(GuestPhys(st.vapic_addr), &mut word));
        if read.is_ok() {
            // A TPR change asks for nothing the vCPU must act on.
            let _ = apic.with(|s| s.lapic.set_tpr(word[0]));
        }
    }

    /// `KVM_GET_MP_STATE` with an in-kernel APIC.
    pub(super) fn apic_mp_state(&self, apic: &VcpuApic) -> u32 {
        apic.with(|s| s.mp.state().to_abi())
    }

    /// `KVM_SET_MP_STATE` with an in-kernel APIC: false (EINVAL) for a
    /// state the model refuses.
    pub(super) fn set_apic_mp_state(&self, apic: &VcpuApic, value: u32) -> bool {
        let done = apic.with(|s| s.mp.set_abi(value));
        apic.kick().kick();
        done
    }
}

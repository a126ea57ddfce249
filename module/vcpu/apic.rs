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
        msr, //
    },
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
        // An NMI, or an interrupt the guest takes: its APIC's, or the one
        // userspace's PIC gave with KVM_INTERRUPT.
        let event = st.nmi_pending > 0 || (allowed && st.pending_irq.is_some());
        apic.with(|s| match s.mp.state() {
            MpState::Runnable => true,
            MpState::Halted if event || (allowed && s.lapic.has_interrupt().is_some()) => {
                s.mp.wake();
                true
            }
            _ => false,
        })
    }

    /// Before an entry: the APIC's TPR as CR8, and its highest interrupt
    /// injected if the guest can take it now. Returns whether an interrupt
    /// waits for a window.
    pub(super) fn apic_inject(&self, st: &mut VcpuState, apic: &Arc<VcpuApic>) -> bool {
        let allowed = st.gif && st.pending_irq.is_none() && st.arch.interrupt_allowed();
        let arch = &mut st.arch;
        apic.with(|s| {
            arch.set_cr8(s.lapic.cr8());
            let Some(vector) = s.lapic.has_interrupt() else {
                return false;
            };
            if allowed && arch.inject_interrupt(vector) {
                s.lapic.ack();
                return false;
            }
            true
        })
    }

    /// After an exit: CR8 as the guest left it is the APIC's TPR.
    pub(super) fn apic_after_exit(&self, st: &VcpuState, apic: &VcpuApic) {
        let cr8 = st.arch.cr8();
        apic.with(|s| s.lapic.set_cr8(cr8));
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
            // As KVM's kvm_ioapic_send_eoi() with the split irqchip: the
            // vectors of the IOAPIC's level-triggered routes to this APIC,
            // unless the guest suppresses EOI broadcasts.
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

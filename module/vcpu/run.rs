// SPDX-License-Identifier: GPL-2.0

//! `KVM_RUN`: the run loop (enter the guest, handle the exit in `exits.rs`,
//! enter again or return to userspace), the completion at the next
//! `KVM_RUN` of an exit userspace handled, and the accounting of each trip
//! (statistics, the exit trace).

use kernel::prelude::*;

use crate::{
    abi::uapi,
    backend::{
        gpr,
        ArchVcpu,
        Exit, //
    },
    pure::{
        decode::{
            self,
            Reg, //
        },
        lapic::MpState,
        trace::{
            ExitRecord,
            TO_USER, //
        },
        x86, //
    },
    stats::VcpuStat,
    sys, //
};

use super::{
    exits::Next,
    run_page::{
        PioPage,
        RunPage, //
    },
    Vcpu,
    VcpuState, //
};

impl Vcpu {
    /// `KVM_RUN`: completes what userspace did for the last exit, then
    /// runs the guest until an exit userspace must see (described in
    /// `kvm_run`), a signal or `immediate_exit`.
    pub(super) fn run(&self) -> Result<isize> {
        let mut st = self.state.lock();
        let run = RunPage(&self.run_page);
        // With no in-kernel local APIC the VMM's APIC owns the TPR: it comes
        // in through kvm_run->cr8 at every KVM_RUN, before anything else, and
        // a value CR8 cannot hold is EINVAL (kvm_arch_vcpu_ioctl_run()).
        // With one in the kernel, its TPR is CR8, and kvm_run->cr8 is only
        // reported.
        let cr8 = run.cr8();
        let uninitialized = self
            .apic
            .as_ref()
            .is_some_and(|a| a.with(|s| s.mp.state()) == MpState::Uninitialized);
        let result = if uninitialized {
            self.wait_for_init(&mut st, &run)
        } else if self.apic.is_some() {
            self.complete_and_run(&mut st, &run)
        } else if cr8 > 15 {
            Err(EINVAL)
        } else {
            st.arch.set_cr8(cr8);
            self.complete_and_run(&mut st, &run)
        };
        let regs = st.arch.regs();
        let sregs = self.sregs(&st);
        let ready = st.ready_for_interrupt();
        run.set_common(
            regs.rflags & x86::RFLAGS_IF != 0,
            ready,
            sregs.cr8,
            sregs.apic_base,
        );
        result
    }

    /// `KVM_RUN` of an AP that has had no INIT yet
    /// (`KVM_MP_STATE_UNINITIALIZED`), as KVM's: it waits for INIT or SIPI,
    /// takes it, and returns EAGAIN for userspace to run it again (EINTR
    /// at once with `immediate_exit`, or for a signal, as `KVM_EXIT_INTR`).
    fn wait_for_init(&self, st: &mut VcpuState, run: &RunPage<'_>) -> Result<isize> {
        let Some(apic) = self.apic.clone() else {
            return Err(EINVAL);
        };
        if run.immediate_exit() {
            return Err(EINTR);
        }
        if apic
            .kick()
            .wait(|| apic.with(|s| s.mp.has_events()))
            .is_err()
        {
            self.stats.inc(VcpuStat::SignalExits);
            run.set_exit_reason(uapi::KVM_EXIT_INTR);
            return Err(EINTR);
        }
        self.apic_events(st, &apic);
        Err(EAGAIN)
    }

    /// `KVM_RUN` with the TPR loaded: completes what userspace did for the
    /// last exit, then runs the guest.
    fn complete_and_run(&self, st: &mut VcpuState, run: &RunPage<'_>) -> Result<isize> {
        let rip = st.arch.rip();
        self.complete_userspace(st, run);
        // Single-stepping: an instruction that userspace just completed
        // (I/O, MMIO load) is one step, reported before anything else runs.
        if st.single_step() && st.arch.rip() != rip {
            run.set_debug(st.step_exit());
            return Ok(0);
        }
        // As kvm_arch_vcpu_ioctl_run(): a pending I/O completes first, then
        // immediate_exit returns EINTR without touching exit_reason.
        if run.immediate_exit() {
            return Err(EINTR);
        }
        st.host_since = sys::ktime_ns();
        let result = self.run_loop(st, run);
        self.stats.add(
            VcpuStat::HostTimeNs,
            sys::ktime_ns().saturating_sub(st.host_since),
        );
        result
    }

    /// Enters the guest and handles its exits until one is for userspace
    /// (described in `kvm_run`), a signal is pending or handling fails.
    fn run_loop(&self, st: &mut VcpuState, run: &RunPage<'_>) -> Result<isize> {
        loop {
            if kernel::current!().signal_pending() {
                self.stats.inc(VcpuStat::SignalExits);
                run.set_exit_reason(uapi::KVM_EXIT_INTR);
                return Err(EINTR);
            }
            sys::cond_resched();
            if core::mem::take(&mut st.shutdown_pending) {
                run.set_exit_reason(uapi::KVM_EXIT_SHUTDOWN);
                return Ok(0);
            }
            // An in-kernel APIC: what others did for it; a halted vCPU (or
            // one waiting for INIT or SIPI) sleeps here until woken, as
            // KVM's kvm_vcpu_halt().
            if let Some(apic) = self.apic.clone() {
                self.apic_events(st, &apic);
                if !self.apic_runnable(st, &apic) {
                    let woken = apic.kick().wait(|| {
                        self.apic_events(st, &apic);
                        self.apic_runnable(st, &apic)
                    });
                    if woken.is_err() {
                        self.stats.inc(VcpuStat::SignalExits);
                        run.set_exit_reason(uapi::KVM_EXIT_INTR);
                        return Err(EINTR);
                    }
                    continue;
                }
            }
            // An NMI before an interrupt: it has the higher priority.
            if st.nmi_pending > 0 && st.gif && st.arch.nmi_allowed() {
                st.arch.inject_nmi();
                st.nmi_pending -= 1;
                self.stats.inc(VcpuStat::NmiInjections);
            }
            st.arch.set_nmi_window(st.nmi_pending > 0 && st.gif);
            self.update_clock(st);
            // What userspace queued is injected at this entry: KVM treats a
            // KVM_INTERRUPT vector as already accepted (userspace asks only
            // when ready_for_interrupt_injection says so).
            if let Some(vector) = st.pending_irq.filter(|_| st.gif) {
                if st.arch.inject_interrupt(vector) {
                    st.pending_irq = None;
                    self.stats.inc(VcpuStat::IrqInjections);
                }
            }
            // The in-kernel APIC's highest interrupt, if the guest can take
            // it now (else it waits for a window).
            let apic_waits = match self.apic.clone() {
                Some(apic) => self.apic_inject(st, &apic),
                None => false,
            };
            // An event the processor cannot deliver (a real-mode guest in
            // virtual-8086 mode) is delivered here, before the entry.
            if let Some((vector, return_ip)) = st.arch.take_real_mode_event() {
                if let Next::User = self.real_mode_deliver(st, vector, return_ip, run) {
                    return Ok(0);
                }
            }
            // While userspace waits for a window, ask the hardware for an exit
            // when it opens.
            let want_window =
                st.gif && self.user_window(run) && !st.ready_for_interrupt() || apic_waits;
            st.arch.set_irq_window(want_window);
            let entered = sys::ktime_ns();
            self.stats
                .add(VcpuStat::HostTimeNs, entered.saturating_sub(st.host_since));
            // No MMU lock in guest mode: vCPUs run in parallel with each
            // other and with changes to the mappings (`mmu::EntryGate`).
            // After an entry that had to be abandoned, the next one is made
            // with the mappings held still (the MMU lock, which every
            // change takes), so that a VMM changing them without pause
            // cannot keep the vCPU out of the guest.
            let (gate, tdp_root) = self.vm.entry_gate();
            let kick = self.apic.as_ref().map(|a| a.kick());
            let mut enter = || {
                let entry = st
                    .mmu
                    .entry(gate, tdp_root, &st.arch.paging())
                    .with_kick(kick);
                st.arch.run(entry)
            };
            let exit = if st.entry_cancelled {
                self.vm.with_mappings_held(enter)
            } else {
                enter()
            };
            st.entry_cancelled = matches!(exit, Exit::Cancelled);
            // The mappings changed while the entry was being prepared: it
            // is prepared again, with what is pending checked again.
            if st.entry_cancelled {
                // Host time so far is counted; count on from here.
                st.host_since = entered;
                continue;
            }
            let exited = sys::ktime_ns();
            st.host_since = exited;
            if let Some(apic) = &self.apic {
                self.apic_after_exit(st, apic);
            }
            let guest_ns = exited.saturating_sub(entered);
            st.has_run = true;
            self.stats.inc(VcpuStat::Exits);
            self.stats.add(VcpuStat::GuestTimeNs, guest_ns);
            let rip = st.arch.rip();
            let next = self.handle(st, exit, run);
            let to_user = matches!(next, Ok(Next::User));
            self.account_exit(st, run, to_user, exited, guest_ns, rip);
            if let Next::User = next? {
                return Ok(0);
            }
            // An instruction emulated here (CPUID, RDMSR, ...) is one step too.
            if st.single_step() && st.arch.rip() != rip {
                run.set_debug(st.step_exit());
                return Ok(0);
            }
            // As KVM's vcpu_run(): after an exit handled in the kernel, a
            // window userspace asked for that is now open returns to it.
            if self.user_window(run) && st.ready_for_interrupt() {
                run.set_exit_reason(uapi::KVM_EXIT_IRQ_WINDOW_OPEN);
                return Ok(0);
            }
        }
    }

    /// Userspace asks for an exit when the guest can take an interrupt; not
    /// heard with the PIC in the kernel, which has the external interrupts
    /// (KVM's `dm_request_for_irq_injection()`).
    fn user_window(&self, run: &RunPage<'_>) -> bool {
        run.request_interrupt_window() && !self.full_irqchip
    }

    /// The exit counted by its raw code and, with the `exit_trace`
    /// parameter, recorded in the trace: at `exited`, after `guest_ns` in
    /// the guest, at `rip`, and whether it went to userspace (`to_user`,
    /// with the `kvm_run` exit reason).
    fn account_exit(
        &self,
        st: &VcpuState,
        run: &RunPage<'_>,
        to_user: bool,
        exited: u64,
        guest_ns: u64,
        rip: u64,
    ) {
        if to_user {
            self.stats.inc(VcpuStat::ExitsToUser);
        }
        let (code, info1, info2) = st.arch.raw_exit();
        self.stats.exit_code(code);
        if crate::module_parameters::exit_trace.value() {
            let outcome = if to_user {
                TO_USER | u64::from(run.exit_reason())
            } else {
                0
            };
            self.trace.record(ExitRecord {
                time_ns: exited,
                code,
                info1,
                info2,
                rip,
                guest_ns,
                outcome,
                seq: 0,
            });
        }
    }

    /// What userspace did for the last exit, finished at the next
    /// `KVM_RUN` (KVM's `complete_userspace_io`): an IN's data and the
    /// step past IN or OUT, a round of INS or OUTS, an MMIO load.
    fn complete_userspace(&self, st: &mut VcpuState, run: &RunPage<'_>) {
        self.complete_io(st);
        if let Some(sio) = st.pending_string.take() {
            PioPage(&self.pio_page).read(&mut st.io_buf);
            self.vm
                .with_memory(|mem| sio.complete(mem, &mut *st.arch, &st.io_buf));
        }
        if let Some(load) = st.pending_mmio.take() {
            load.complete(&mut *st.arch, run.mmio_data());
        }
    }

    /// Completes an IN or OUT (see `PendingIo`).
    fn complete_io(&self, st: &mut VcpuState) {
        let Some(io) = st.pending_io.take() else {
            return;
        };
        let arch = &mut st.arch;
        if let Some(size) = io.input {
            let mut data = [0u8; 8];
            let n = usize::from(size).min(data.len());
            PioPage(&self.pio_page).read(&mut data[..n]);
            complete_in(&mut **arch, size, u64::from_le_bytes(data));
        }
        // Userspace may have moved RIP (KVM_SET_REGS) meanwhile: then the
        // instruction is not skipped.
        if arch.rip() == io.rip {
            arch.set_rip(io.next_rip);
        }
    }
}

/// The `size` bytes an IN read, `value`, into RAX: IN to AL or AX keeps
/// the rest of RAX, IN to EAX zero-extends.
pub(super) fn complete_in(arch: &mut dyn ArchVcpu, size: u8, value: u64) {
    let rax = Reg {
        index: gpr::RAX,
        high8: false,
    };
    let merged = decode::write_reg(arch.gpr(gpr::RAX), rax, size, value);
    arch.set_gpr(gpr::RAX, merged);
}

// SPDX-License-Identifier: GPL-2.0

//! The run loop: `KVM_RUN` until the run is over, with the devices' time
//! and interrupts between entries, and each exit that reaches userspace
//! dispatched to the port bus or the MMIO bus, or ending the run.

use std::cell::RefCell;
use std::os::fd::AsRawFd;

use kvm_ioctls::{VcpuExit, VcpuFd};

use super::board::{mmio_read, mmio_write, now_ns, Board};
use super::report::Stats;
use super::trace::{describe, Trace};
use super::vm::Vm;
use super::Outcome;
use crate::console::Input;
use crate::devices::pic::Pic;
use crate::error::{Error, Result};
use crate::signals::{self, Kick};

nix::ioctl_write_ptr!(
    kvm_interrupt,
    kvm_bindings::KVMIO,
    0x86,
    kvm_bindings::kvm_interrupt
);

/// Before each `KVM_RUN`: if the PIC raises INTR, inject its vector when the
/// vCPU can take it, else ask for an interrupt-window exit (the protocol of
/// a VMM without an in-kernel irqchip).
fn inject_interrupt(vcpu: &mut VcpuFd, pic: &RefCell<Pic>) -> Result<()> {
    let mut pic = pic.borrow_mut();
    let ready = vcpu.get_kvm_run().ready_for_interrupt_injection != 0;
    let mut want_window = false;
    if pic.interrupt_pending() {
        if ready {
            if let Some(vector) = pic.acknowledge() {
                let irq = kvm_bindings::kvm_interrupt {
                    irq: u32::from(vector),
                };
                // SAFETY: KVM_INTERRUPT reads one `struct kvm_interrupt`
                // from the pointer, which is valid for the call.
                unsafe { kvm_interrupt(vcpu.as_raw_fd(), &irq) }
                    .map_err(Error::sys("KVM_INTERRUPT"))?;
            }
            want_window = pic.interrupt_pending();
        } else {
            want_window = true;
        }
    }
    vcpu.get_kvm_run().request_interrupt_window = u8::from(want_window);
    Ok(())
}

/// With the local APICs in the kernel, how often the run loop looks
/// whether the guest halted for good.
const HALT_POLL_NS: u64 = 100_000_000;

/// With the local APICs in the kernel, where HLT never reaches userspace:
/// whether the vCPU is halted with interrupts off, which nothing here can
/// end (no NMI source): how a guest without ACPI powers off.
fn halted_for_good(vcpu: &mut VcpuFd) -> Result<bool> {
    if vcpu.get_kvm_run().if_flag != 0 {
        return Ok(false);
    }
    let mp = vcpu
        .get_mp_state()
        .map_err(Error::ioctl("KVM_GET_MP_STATE"))?;
    Ok(mp.mp_state == kvm_bindings::KVM_MP_STATE_HALTED)
}

/// Why [`run_loop`] returned.
#[derive(Debug)]
pub enum Stop {
    /// The run is over.
    Over(Outcome),
    /// `KVM_EXIT_DEBUG`: a breakpoint, a watchpoint or a step (`--gdb`).
    Debug(kvm_bindings::kvm_debug_exit_arch),
    /// The debugger has something to say (`--gdb`: a byte from gdb, such
    /// as its interrupt).
    Attention,
    /// `--save`: the guest is to be saved now; its last exit is complete.
    Save,
}

/// What the run loop keeps from one call to the next (a debugger stops
/// and resumes it).
pub struct LoopState {
    kick: Kick,
    halted: bool,
    /// No interrupt is injected (a debugger single-steps: the step is the
    /// instruction's, not an interrupt handler's; KVM's
    /// `KVM_GUESTDBG_BLOCKIRQ`, done here in userspace).
    pub block_irqs: bool,
    /// Exits to userspace so far.
    pub exits: u64,
    /// `--save`: stop to save the guest after this many exits (u64::MAX:
    /// on SIGUSR2 only); None: never.
    pub save_after: Option<u64>,
    /// `--smp`: the APs' exits for the devices, served here.
    pub ap_requests: Option<std::sync::mpsc::Receiver<super::aps::Request>>,
}

impl LoopState {
    pub fn new() -> Result<Self> {
        Ok(LoopState {
            kick: Kick::new()?,
            halted: false,
            block_irqs: false,
            exits: 0,
            save_after: None,
            ap_requests: None,
        })
    }
}

/// With a debugger: how often at most the loop looks at its connection
/// (the vCPU is kicked out of the guest this often).
const ATTENTION_POLL_NS: u64 = 10_000_000;

/// Runs the vCPU until the guest or the user ends the run; `input` is
/// the console's. With `attention` (a debugger), also returns at a
/// `KVM_EXIT_DEBUG` and when `attention()` says the debugger has
/// something to say, which it is asked at least every 10 ms.
pub fn run_loop(
    vm: &mut Vm,
    board: &mut Board,
    input: &mut Input,
    stats: &mut Stats,
    trace: &mut Trace,
    state: &mut LoopState,
    mut attention: Option<&mut dyn FnMut() -> bool>,
) -> Result<Stop> {
    let Vm {
        vcpu,
        mem,
        fd: vm_fd,
        irqchip,
        ..
    } = vm;
    let kernel_irqchip = *irqchip == super::vm::Irqchip::Kernel;
    let apics_in_kernel = irqchip.apics_in_kernel();
    let Board {
        ports,
        virtio,
        virtio_console,
        pic,
        ioapic,
        pit,
        uart,
        i8042,
        status,
        ..
    } = board;
    let virtio_console = *virtio_console;
    let set_irq = |irq: u8, level: bool| pic.borrow_mut().set_irq(irq, level);
    let LoopState {
        kick,
        halted,
        block_irqs,
        exits,
        save_after,
        ap_requests,
    } = state;
    let debugging = attention.is_some();
    // The next kick: the PIT's next tick, and with a debugger at most
    // ATTENTION_POLL_NS away.
    let next_kick = |timer: Option<u64>| {
        let poll = debugging.then_some(ATTENTION_POLL_NS);
        match (timer.map(|at| at.saturating_sub(now_ns())), poll) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    };
    let mut internal_error = false;
    loop {
        if let Some(signal) = signals::stop_signal() {
            return Ok(Stop::Over(Outcome::Signal(signal)));
        }
        if save_after.is_some_and(|n| *exits >= n || signals::save_requested()) {
            complete_last_exit(vcpu)?;
            return Ok(Stop::Save);
        }
        if let Some(attention) = attention.as_mut() {
            if attention() {
                return Ok(Stop::Attention);
            }
        }
        if let Some(requests) = ap_requests {
            use super::aps::Request;
            for request in requests.try_iter() {
                let answer = match request {
                    Request::IoOut(port, data, answer) => {
                        ports.write(port, &data);
                        (answer, Vec::new())
                    }
                    Request::IoIn(port, len, answer) => {
                        let mut data = vec![0; len];
                        ports.read(port, &mut data);
                        (answer, data)
                    }
                    Request::MmioWrite(addr, data, answer) => {
                        mmio_write(ioapic, vm_fd, virtio, (addr, &data), mem, set_irq);
                        (answer, Vec::new())
                    }
                    Request::MmioRead(addr, len, answer) => {
                        let mut data = vec![0; len];
                        mmio_read(ioapic, virtio, addr, &mut data);
                        (answer, data)
                    }
                    Request::IoapicEoi(id, vector, answer) => {
                        if let Some(io) = ioapic {
                            io.borrow_mut().eoi(vm_fd, id.into(), vector);
                        }
                        (answer, Vec::new())
                    }
                    Request::Shutdown(id) => {
                        eprintln!("rkvm: vCPU {id} shut down (a triple fault)");
                        return Ok(Stop::Over(Outcome::Shutdown));
                    }
                    Request::Failed(id, what) => return Err(Error::ApFailed { id, what }),
                };
                // An AP gone meanwhile needs no answer.
                let _ = answer.0.send(answer.1);
            }
            if let Some(s) = status.get() {
                return Ok(Stop::Over(Outcome::DebugExit(s)));
            }
        }
        if pit.borrow_mut().poll_irq0(now_ns()) > 0 {
            pic.borrow_mut().pulse_irq(0);
        }
        if virtio_console {
            input.feed(|bytes| virtio.receive(bytes));
        } else {
            input.feed(|bytes| uart.borrow_mut().receive(bytes));
        }
        virtio.poll(mem, set_irq);
        if *halted {
            // HLT: an interrupt to deliver wakes the guest. Otherwise, with
            // interrupts on, wait for what could raise one (the timer,
            // console input); with nothing that can, the run is over.
            if pic.borrow().interrupt_pending() {
                *halted = false;
            } else {
                let if_flag = vcpu.get_kvm_run().if_flag != 0;
                let timer = pit.borrow().next_irq0(now_ns());
                let typing = input.may_have_more()
                    && (virtio_console || uart.borrow().rx_interrupt_enabled());
                if !if_flag || (timer.is_none() && !typing) {
                    *halted = false;
                    return Ok(Stop::Over(Outcome::Halted));
                }
                kick.arm(next_kick(timer));
                signals::wait_for_wakeup();
                signals::clear_wakeup();
                continue;
            }
        }
        if kernel_irqchip {
            // The devices' lines go to the device's PIC and IOAPIC, which
            // inject on their own (block_irqs cannot stop them).
            for (irq, level) in pic.borrow_mut().take_forwarded() {
                vm_fd
                    .set_irq_line(irq.into(), level)
                    .map_err(Error::ioctl("KVM_IRQ_LINE"))?;
            }
            // HLT stays in the kernel: look now and then whether the guest
            // halted for good (powered off).
            kick.arm(next_kick(Some(now_ns() + HALT_POLL_NS)));
        } else if let Some(io) = ioapic {
            // The split irqchip: the lines reach the IOAPIC here (its
            // interrupts go to the APICs at once) and the PIC, whose
            // interrupt goes in as without an irqchip (KVM_INTERRUPT, an
            // ExtINT the APIC takes on LINT0). HLT stays in the kernel:
            // the vCPU is kicked out for the PIT's ticks and to look
            // whether the guest halted for good.
            for (irq, level) in pic.borrow_mut().take_forwarded() {
                io.borrow_mut().set_irq(vm_fd, irq, level);
            }
            if *block_irqs {
                vcpu.get_kvm_run().request_interrupt_window = 0;
            } else {
                inject_interrupt(vcpu, pic)?;
            }
            let poll = now_ns() + HALT_POLL_NS;
            let tick = pit
                .borrow()
                .next_irq0(now_ns())
                .map_or(poll, |t| t.min(poll));
            kick.arm(next_kick(Some(tick)));
        } else {
            if *block_irqs {
                vcpu.get_kvm_run().request_interrupt_window = 0;
            } else {
                inject_interrupt(vcpu, pic)?;
            }
            kick.arm(next_kick(pit.borrow().next_irq0(now_ns())));
        }
        let vcpu_fd = vcpu.as_raw_fd();
        let result = vcpu.run();
        signals::clear_wakeup();
        trace.kernel_exits(vcpu_fd, mem);
        let exit = match result {
            Ok(exit) => exit,
            // A signal (the timer, input, Ctrl-C): deal with it, then go on.
            Err(e) if e.errno() == nix::libc::EINTR => {
                stats.count("intr");
                if apics_in_kernel && halted_for_good(vcpu)? {
                    return Ok(Stop::Over(Outcome::Halted));
                }
                continue;
            }
            Err(e) => return Err(Error::ioctl("KVM_RUN")(e)),
        };
        *exits += 1;
        let (reason, line) = describe(&exit);
        stats.count(reason);
        trace.exit(reason, &line, vcpu_fd);
        match exit {
            VcpuExit::IoOut(port, data) => ports.write(port, data),
            VcpuExit::IoIn(port, data) => ports.read(port, data),
            VcpuExit::MmioRead(addr, data) => mmio_read(ioapic, virtio, addr, data),
            VcpuExit::MmioWrite(addr, data) => {
                mmio_write(ioapic, vm_fd, virtio, (addr, data), mem, set_irq)
            }
            VcpuExit::IrqWindowOpen => {} // injected before the next entry
            VcpuExit::IoapicEoi(vector) => {
                if let Some(io) = ioapic {
                    io.borrow_mut().eoi(vm_fd, 0, vector);
                }
            }
            VcpuExit::Hlt => *halted = true,
            VcpuExit::Shutdown => return Ok(Stop::Over(Outcome::Shutdown)),
            VcpuExit::Debug(arch) if debugging => return Ok(Stop::Debug(arch)),
            VcpuExit::FailEntry(reason, cpu) => {
                return Err(Error::FailEntry { reason, cpu });
            }
            VcpuExit::InternalError => internal_error = true,
            other => return Err(Error::UnexpectedExit(format!("{other:?}"))),
        }
        if let Some(s) = status.get() {
            return Ok(Stop::Over(Outcome::DebugExit(s)));
        }
        if i8042.borrow().reset_requested() {
            return Ok(Stop::Over(Outcome::Reset));
        }
        if internal_error {
            return Err(describe_internal_error(vcpu));
        }
    }
}

/// Completes the exit userspace last handled, as api.rst asks before the
/// vCPU's state is read for saving: an I/O or MMIO read's data reaches the
/// guest's register only at the next `KVM_RUN`. With `immediate_exit` set,
/// that `KVM_RUN` completes it and returns `EINTR` without entering the
/// guest.
fn complete_last_exit(vcpu: &mut VcpuFd) -> Result<()> {
    vcpu.set_kvm_immediate_exit(1);
    let result = vcpu.run().map(|_| ());
    vcpu.set_kvm_immediate_exit(0);
    match result {
        Err(e) if e.errno() == nix::libc::EINTR => Ok(()),
        Ok(()) => Err(Error::UnexpectedExit(
            "KVM_RUN with immediate_exit entered the guest".into(),
        )),
        Err(e) => Err(Error::ioctl("KVM_RUN")(e)),
    }
}

/// `KVM_EXIT_INTERNAL_ERROR`, with its suberror, data and the guest's RIP.
fn describe_internal_error(vcpu: &mut VcpuFd) -> Error {
    let run = vcpu.get_kvm_run();
    // SAFETY: the exit reason was KVM_EXIT_INTERNAL_ERROR, so `internal` is
    // the member of the exit union the kernel filled.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    Error::Internal {
        suberror: internal.suberror,
        data: internal.data[..n].to_vec(),
        rip: vcpu.get_regs().ok().map(|r| r.rip),
    }
}

// SPDX-License-Identifier: GPL-2.0

//! `rkvm run --gdb PORT`: a gdb remote stub (the `gdbstub` crate, x86-64
//! registers from `gdbstub_arch`) in front of the run loop.
//!
//! The guest is stopped before its first instruction until gdb connects
//! and continues it; gdb's interrupt (Ctrl-C) stops it again. Registers
//! are `KVM_GET/SET_REGS`, `KVM_GET_SREGS` and `KVM_GET/SET_FPU`; memory
//! is read and written by guest-virtual address, translated through the
//! guest's page tables as they are at that moment (`rkvm_pure::walk`, the
//! module's own walker). Breakpoints go through `KVM_SET_GUEST_DEBUG`:
//! software ones are an INT3 the stub writes into guest memory
//! (`KVM_GUESTDBG_USE_SW_BP`), hardware breakpoints and watchpoints take
//! the four debug registers (`KVM_GUESTDBG_USE_HW_BP`), single steps are
//! `KVM_GUESTDBG_SINGLESTEP`. An INT3 of the guest's own (not the stub's)
//! goes back to the guest with `KVM_GUESTDBG_INJECT_BP` where the device
//! offers it. The same code works through /dev/rkvm and /dev/kvm.

mod hw;
mod regs;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};

use gdbstub::common::Signal;
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::{run_blocking, DisconnectReason, GdbStub, SingleThreadStopReason};
use gdbstub::target::ext::base::singlethread::{
    SingleThreadBase, SingleThreadResume, SingleThreadResumeOps, SingleThreadSingleStep,
    SingleThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint, HwBreakpointOps, HwWatchpoint, HwWatchpointOps,
    SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use gdbstub_arch::x86::reg::X86_64CoreRegs;
use gdbstub_arch::x86::X86_64_SSE;
use kvm_bindings::{
    kvm_debug_exit_arch, kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_INJECT_BP,
    KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW_BP, KVM_GUESTDBG_USE_SW_BP,
};
use vm_memory::{Bytes, GuestAddress};

use crate::console::Input;
use crate::error::{Error, Result};
use crate::run::exits::{run_loop, LoopState, Stop};
use crate::run::{board::Board, report::Stats, trace::Trace, vm::Vm, Outcome};

/// INT3.
const INT3: u8 = 0xcc;
/// DR6.BS: a single step.
const DR6_BS: u64 = 1 << 14;
/// RFLAGS.TF.
const RFLAGS_TF: u64 = 1 << 8;

/// What the run loop needs, borrowed from `run::run` for the session.
pub struct Machine<'a> {
    pub vm: &'a mut Vm,
    pub board: &'a mut Board,
    pub input: &'a mut Input,
    pub stats: &'a mut Stats,
    pub trace: &'a mut Trace,
    pub state: &'a mut LoopState,
}

impl Machine<'_> {
    fn run(&mut self, attention: Option<&mut dyn FnMut() -> bool>) -> Result<Stop> {
        run_loop(
            self.vm, self.board, self.input, self.stats, self.trace, self.state, attention,
        )
    }
}

/// Where an INT3 of the guest's own pushes its #BP frame
/// ([`Guest::int3_frame`]).
struct Int3Frame {
    /// The RFLAGS image, with the step's TF.
    rflags: u64,
    /// The CS image.
    cs: u64,
    /// The stack's top when the INT3 ran (16-byte aligned).
    top: u64,
}

/// The target gdb debugs: the machine, the breakpoints and how to resume.
struct Guest<'a> {
    m: Machine<'a>,
    /// Software breakpoints: address, and the byte the INT3 replaced.
    sw: BTreeMap<u64, u8>,
    hw: hw::Slots,
    /// The next resume is a single step.
    step: bool,
    /// The device takes `KVM_GUESTDBG_INJECT_BP` (`KVM_CAP_SET_GUEST_DEBUG2`).
    inject_bp: bool,
    /// How the run ended, once it has.
    outcome: Option<Outcome>,
}

impl Guest<'_> {
    /// `KVM_SET_GUEST_DEBUG` for what is set now.
    fn apply(&self, step: bool, sw: bool) -> Result<()> {
        self.apply_with(step, sw, 0)
    }

    /// The same, with `extra` control bits (`KVM_GUESTDBG_INJECT_BP`).
    fn apply_with(&self, step: bool, sw: bool, extra: u32) -> Result<()> {
        let mut dbg = kvm_guest_debug {
            control: KVM_GUESTDBG_ENABLE | extra,
            ..Default::default()
        };
        if step {
            dbg.control |= KVM_GUESTDBG_SINGLESTEP;
        }
        if sw && !self.sw.is_empty() {
            dbg.control |= KVM_GUESTDBG_USE_SW_BP;
        }
        if !self.hw.is_empty() {
            dbg.control |= KVM_GUESTDBG_USE_HW_BP;
            dbg.arch.debugreg = self.hw.debugreg();
        }
        self.m
            .vm
            .vcpu
            .set_guest_debug(&dbg)
            .map_err(Error::ioctl("KVM_SET_GUEST_DEBUG"))
    }

    /// Guest-physical address of the linear address `addr`, through the
    /// guest's page tables as they are now.
    fn translate(&self, addr: u64) -> Option<u64> {
        use rkvm_pure::walk::{translate, Paging};
        let s = self.m.vm.vcpu.get_sregs().ok()?;
        let mem = &self.m.vm.mem;
        let read_entry = |gpa: u64, size: u8| match size {
            4 => mem.read_obj::<u32>(GuestAddress(gpa)).ok().map(u64::from),
            _ => mem.read_obj::<u64>(GuestAddress(gpa)).ok(),
        };
        translate(Paging::of(s.cr0, s.cr4, s.efer), s.cr3, addr, read_entry)
    }

    /// Calls `f` with each piece of `[addr, addr + len)` that lies in one
    /// guest page: its offset in the range and its guest-physical address.
    /// Stops at the first page that is not mapped or where `f` fails;
    /// returns how many bytes were done.
    fn pages(&self, addr: u64, len: usize, mut f: impl FnMut(usize, u64, usize) -> bool) -> usize {
        let mut done = 0;
        while done < len {
            let at = addr.wrapping_add(done as u64);
            let chunk = ((0x1000 - (at & 0xfff)) as usize).min(len - done);
            match self.translate(at) {
                Some(gpa) if f(done, gpa, chunk) => done += chunk,
                _ => break,
            }
        }
        done
    }

    fn read_byte(&self, addr: u64) -> Option<u8> {
        let gpa = self.translate(addr)?;
        self.m.vm.mem.read_obj::<u8>(GuestAddress(gpa)).ok()
    }

    fn write_byte(&self, addr: u64, byte: u8) -> bool {
        self.translate(addr)
            .is_some_and(|gpa| self.m.vm.mem.write_obj(byte, GuestAddress(gpa)).is_ok())
    }

    /// What a `KVM_EXIT_DEBUG` means to gdb; `None` for a trap that is the
    /// guest's own (an INT3 the stub did not write).
    fn stop_reason(&self, arch: &kvm_debug_exit_arch) -> Option<SingleThreadStopReason<u64>> {
        Some(match arch.exception {
            3 if self.sw.contains_key(&arch.pc) => SingleThreadStopReason::SwBreak(()),
            3 => return None,
            _ => match self.hw.hit(arch.dr6) {
                Some(hw::Slot {
                    kind: hw::Kind::Execute,
                    ..
                }) => SingleThreadStopReason::HwBreak(()),
                Some(hw::Slot {
                    kind: hw::Kind::Watch(kind),
                    addr,
                    ..
                }) => SingleThreadStopReason::Watch {
                    tid: (),
                    kind,
                    addr,
                },
                None if arch.dr6 & DR6_BS != 0 && self.step => SingleThreadStopReason::DoneStep,
                None => SingleThreadStopReason::Signal(Signal::SIGTRAP),
            },
        })
    }

    /// Before stepping the guest's own INT3 at RIP into its #BP handler:
    /// what the RFLAGS image in the #BP frame will be (RFLAGS with the
    /// step's TF), the frame's CS, and how far up the stack it can be (64-bit
    /// mode at CPL 0 without a stack switch, Linux's #BP: RSP aligned to 16,
    /// then SS, RSP, RFLAGS, CS, RIP). `None` when the guest has TF set
    /// itself (then it stays) or is in another mode.
    fn int3_frame(&self) -> Option<Int3Frame> {
        let vcpu = &self.m.vm.vcpu;
        let (r, s) = (vcpu.get_regs().ok()?, vcpu.get_sregs().ok()?);
        let cpl0_64 = s.cs.l != 0 && s.cs.selector & 3 == 0;
        (cpl0_64 && r.rflags & RFLAGS_TF == 0).then_some(Int3Frame {
            rflags: r.rflags | RFLAGS_TF,
            cs: s.cs.selector.into(),
            top: r.rsp & !0xf,
        })
    }

    /// After single-stepping the guest's own INT3 into its #BP handler:
    /// the RFLAGS image the processor pushed carries the step's TF, which
    /// the handler's IRET would bring back into the guest. The handler may
    /// have copied the frame already (Linux's INT3 entry makes room to
    /// emulate a CALL) and the step may have ended a few instructions in
    /// (an exit on the way re-arms TF): every CS, RFLAGS pair of the frame
    /// between RSP and the frame's top gets TF cleared.
    fn clear_pushed_tf(&self, frame: &Int3Frame) {
        let Ok(r) = self.m.vm.vcpu.get_regs() else {
            return;
        };
        let bottom = r.rsp & !7;
        if bottom >= frame.top || frame.top - bottom > 4096 {
            return;
        }
        let len = (frame.top - bottom) as usize;
        let mut stack = vec![0u8; len];
        let mem = &self.m.vm.mem;
        if self.pages(bottom, len, |off, gpa, n| {
            mem.read_slice(&mut stack[off..off + n], GuestAddress(gpa))
                .is_ok()
        }) < len
        {
            return;
        }
        let words: Vec<u64> = stack
            .chunks_exact(8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])))
            .collect();
        for i in 1..words.len() {
            if words[i] == frame.rflags && words[i - 1] == frame.cs {
                let at = bottom + 8 * i as u64;
                let image = (frame.rflags & !RFLAGS_TF).to_le_bytes();
                self.pages(at, 8, |off, gpa, n| {
                    mem.write_slice(&image[off..off + n], GuestAddress(gpa))
                        .is_ok()
                });
            }
        }
    }

    /// Puts back the bytes under the software breakpoints and ends guest
    /// debugging (gdb went away).
    fn forget_breakpoints(&mut self) -> Result<()> {
        for (addr, byte) in std::mem::take(&mut self.sw) {
            self.write_byte(addr, byte);
        }
        self.hw = hw::Slots::default();
        self.m
            .vm
            .vcpu
            .set_guest_debug(&kvm_guest_debug::default())
            .map_err(Error::ioctl("KVM_SET_GUEST_DEBUG"))
    }
}

impl Target for Guest<'_> {
    type Arch = X86_64_SSE;
    type Error = Error;

    fn base_ops(&mut self) -> BaseOps<'_, Self::Arch, Self::Error> {
        BaseOps::SingleThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }
}

fn fatal(e: Error) -> TargetError<Error> {
    TargetError::Fatal(e)
}

impl SingleThreadBase for Guest<'_> {
    fn read_registers(&mut self, regs: &mut X86_64CoreRegs) -> TargetResult<(), Self> {
        let vcpu = &self.m.vm.vcpu;
        let r = vcpu
            .get_regs()
            .map_err(Error::ioctl("KVM_GET_REGS"))
            .map_err(fatal)?;
        let s = vcpu
            .get_sregs()
            .map_err(Error::ioctl("KVM_GET_SREGS"))
            .map_err(fatal)?;
        let f = vcpu
            .get_fpu()
            .map_err(Error::ioctl("KVM_GET_FPU"))
            .map_err(fatal)?;
        *regs = regs::to_gdb(&r, &s, &f);
        Ok(())
    }

    fn write_registers(&mut self, regs: &X86_64CoreRegs) -> TargetResult<(), Self> {
        let vcpu = &self.m.vm.vcpu;
        let mut r = vcpu
            .get_regs()
            .map_err(Error::ioctl("KVM_GET_REGS"))
            .map_err(fatal)?;
        let mut f = vcpu
            .get_fpu()
            .map_err(Error::ioctl("KVM_GET_FPU"))
            .map_err(fatal)?;
        regs::from_gdb(regs, &mut r, &mut f);
        vcpu.set_regs(&r)
            .map_err(Error::ioctl("KVM_SET_REGS"))
            .map_err(fatal)?;
        vcpu.set_fpu(&f)
            .map_err(Error::ioctl("KVM_SET_FPU"))
            .map_err(fatal)?;
        Ok(())
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8]) -> TargetResult<usize, Self> {
        let mem = &self.m.vm.mem;
        let n = self.pages(start, data.len(), |off, gpa, len| {
            mem.read_slice(&mut data[off..off + len], GuestAddress(gpa))
                .is_ok()
        });
        if n == 0 && !data.is_empty() {
            return Err(TargetError::NonFatal);
        }
        // gdb sees the guest's bytes, not the stub's INT3s.
        for (&addr, &byte) in self.sw.range(start..start.saturating_add(n as u64)) {
            data[(addr - start) as usize] = byte;
        }
        Ok(n)
    }

    fn write_addrs(&mut self, start: u64, data: &[u8]) -> TargetResult<(), Self> {
        let mem = &self.m.vm.mem;
        let n = self.pages(start, data.len(), |off, gpa, len| {
            mem.write_slice(&data[off..off + len], GuestAddress(gpa))
                .is_ok()
        });
        // Under a software breakpoint the new byte is the one to put back,
        // and the INT3 stays.
        let end = start.saturating_add(n as u64);
        let under: Vec<u64> = self.sw.range(start..end).map(|(&a, _)| a).collect();
        for addr in under {
            self.sw.insert(addr, data[(addr - start) as usize]);
            self.write_byte(addr, INT3);
        }
        if n < data.len() {
            return Err(TargetError::NonFatal);
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<SingleThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadResume for Guest<'_> {
    fn resume(&mut self, _signal: Option<Signal>) -> Result<()> {
        self.step = false;
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<SingleThreadSingleStepOps<'_, Self>> {
        Some(self)
    }
}

impl SingleThreadSingleStep for Guest<'_> {
    fn step(&mut self, _signal: Option<Signal>) -> Result<()> {
        self.step = true;
        Ok(())
    }
}

impl Breakpoints for Guest<'_> {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }

    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Guest<'_> {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.sw.contains_key(&addr) {
            return Ok(true);
        }
        // Not mapped (yet): gdb says it cannot insert the breakpoint.
        let Some(byte) = self.read_byte(addr) else {
            return Ok(false);
        };
        if !self.write_byte(addr, INT3) {
            return Ok(false);
        }
        self.sw.insert(addr, byte);
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        let Some(byte) = self.sw.remove(&addr) else {
            return Ok(false);
        };
        Ok(self.write_byte(addr, byte))
    }
}

impl HwBreakpoint for Guest<'_> {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.hw.add(hw::Slot {
            addr,
            len: 1,
            kind: hw::Kind::Execute,
        }))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.hw.remove(&hw::Slot {
            addr,
            len: 1,
            kind: hw::Kind::Execute,
        }))
    }
}

impl HwWatchpoint for Guest<'_> {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self.hw.add(hw::Slot {
            addr,
            len,
            kind: hw::Kind::Watch(kind),
        }))
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self.hw.remove(&hw::Slot {
            addr,
            len,
            kind: hw::Kind::Watch(kind),
        }))
    }
}

/// gdbstub's blocking event loop over a [`Guest`] borrowing for `'a`.
struct EventLoop<'a>(std::marker::PhantomData<&'a ()>);

type StopReason = SingleThreadStopReason<u64>;
type WaitError = run_blocking::WaitForStopReasonError<Error, std::io::Error>;

impl<'a> run_blocking::BlockingEventLoop for EventLoop<'a> {
    type Target = Guest<'a>;
    type Connection = TcpStream;
    type StopReason = StopReason;

    fn wait_for_stop_reason(
        target: &mut Guest<'a>,
        conn: &mut TcpStream,
    ) -> Result<run_blocking::Event<StopReason>, WaitError> {
        wait(target, conn)
    }

    fn on_interrupt(_target: &mut Guest<'a>) -> Result<Option<StopReason>> {
        Ok(Some(SingleThreadStopReason::Signal(Signal::SIGINT)))
    }
}

/// Runs the guest as gdb asked until it stops, or gdb has something to
/// say.
fn wait(
    g: &mut Guest<'_>,
    conn: &mut TcpStream,
) -> Result<run_blocking::Event<StopReason>, WaitError> {
    let target = WaitError::Target;
    // An INT3 of the guest's own goes to the guest: stepped over with the
    // software breakpoints off (into its #BP handler), then the resume goes
    // on. Where the RFLAGS image of its #BP frame will be, if known.
    let mut pass_int3: Option<Option<Int3Frame>> = None;
    loop {
        g.apply(g.step || pass_int3.is_some(), pass_int3.is_none())
            .map_err(target)?;
        g.m.state.block_irqs = g.step;
        let mut incoming = || conn.peek().map(|b| b.is_some()).unwrap_or(true);
        let stop = g.m.run(Some(&mut incoming)).map_err(target)?;
        match stop {
            // The options keep --save from --gdb: never asked for here.
            Stop::Save => {
                return Err(WaitError::Target(crate::error::Error::Gdb(
                    "--save does not work with --gdb".into(),
                )))
            }
            Stop::Attention => {
                let byte = conn.read().map_err(WaitError::Connection)?;
                return Ok(run_blocking::Event::IncomingData(byte));
            }
            Stop::Over(outcome) => {
                let status = outcome.status();
                g.outcome = Some(outcome);
                return Ok(run_blocking::Event::TargetStopped(
                    SingleThreadStopReason::Exited(status),
                ));
            }
            Stop::Debug(_) if pass_int3.is_some() => {
                if let Some(Some(frame)) = pass_int3.take() {
                    g.clear_pushed_tf(&frame);
                }
                if g.step {
                    return Ok(run_blocking::Event::TargetStopped(
                        SingleThreadStopReason::DoneStep,
                    ));
                }
            }
            Stop::Debug(arch) => match g.stop_reason(&arch) {
                Some(reason) => return Ok(run_blocking::Event::TargetStopped(reason)),
                // The guest's own INT3 goes back to it: delivered by the
                // device as it would have run (`INJECT_BP`, as QEMU does),
                // or, where the device lacks that or gdb steps, stepped
                // over with the software breakpoints off.
                None if g.inject_bp && !g.step => g
                    .apply_with(false, true, KVM_GUESTDBG_INJECT_BP)
                    .map_err(target)?,
                None => pass_int3 = Some(g.int3_frame()),
            },
        }
    }
}

/// Waits for gdb on 127.0.0.1:`port`, then serves it until it detaches,
/// kills the guest or the run ends; after a detach the guest runs on to
/// its end.
pub fn serve(port: u16, m: Machine<'_>) -> Result<Outcome> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .map_err(|source| Error::GdbListen { port, source })?;
    eprintln!("rkvm: waiting for gdb on 127.0.0.1:{port} (gdb: target remote :{port})");
    let (stream, peer) = listener.accept().map_err(Error::GdbAccept)?;
    let _ = stream.set_nodelay(true);
    eprintln!("rkvm: gdb connected from {peer}; the guest waits at its first instruction");
    let debug2 =
        m.vm.kvm
            .check_extension_raw(kvm_bindings::KVM_CAP_SET_GUEST_DEBUG2.into());
    let inject_bp = debug2 as u32 & KVM_GUESTDBG_INJECT_BP != 0;
    let mut guest = Guest {
        m,
        sw: BTreeMap::new(),
        hw: hw::Slots::default(),
        step: false,
        inject_bp,
        outcome: None,
    };
    let result = GdbStub::new(stream).run_blocking::<EventLoop<'_>>(&mut guest);
    let reason = match result {
        Ok(reason) => reason,
        // gdb went away without detaching (killed, or the connection
        // broke): as a detach.
        Err(e) if e.is_connection_error() => {
            eprintln!("rkvm: lost the connection to gdb ({e})");
            DisconnectReason::Disconnect
        }
        Err(e) => return Err(Error::Gdb(e.to_string())),
    };
    match reason {
        DisconnectReason::TargetExited(_) | DisconnectReason::TargetTerminated(_) => {}
        DisconnectReason::Kill => {
            eprintln!("rkvm: gdb killed the guest");
            guest.outcome = Some(Outcome::Killed);
        }
        DisconnectReason::Disconnect => {
            eprintln!("rkvm: gdb detached; the guest runs on");
            guest.forget_breakpoints()?;
        }
    }
    match guest.outcome.take() {
        Some(outcome) => Ok(outcome),
        None => loop {
            if let Stop::Over(outcome) = guest.m.run(None)? {
                return Ok(outcome);
            }
        },
    }
}

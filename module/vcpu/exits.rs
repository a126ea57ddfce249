// SPDX-License-Identifier: GPL-2.0

//! The exit handlers: what follows each kind of exit from the guest
//! ([`Exit`]), handled here and the guest entered again, or described in
//! `kvm_run` for userspace. [`Vcpu::handle`] dispatches, one function per
//! kind of exit.

use kernel::prelude::*;

use crate::{
    abi::uapi,
    backend::{
        gpr,
        ArchVcpu,
        Event,
        Exit, //
    },
    emulate::{
        self,
        Mmio,
        RealModeDelivery,
        StringStart, //
    },
    memory::GuestMemory,
    mmu::{
        shadow::PageFault,
        Fault,
        Mmu, //
    },
    pure::{
        cpuid,
        debug,
        decode::{
            PortIo,
            V86Op, //
        },
        iobus::BusKind,
        paging::GuestPhys,
        shadow::Flush,
        walk::Access,
        x86::vector::{
            DF as DF_VECTOR,
            GP as GP_VECTOR,
            OF as OF_VECTOR,
            PF as PF_VECTOR,
            UD as UD_VECTOR, //
        }, //
    },
    stats::VcpuStat, //
};

use super::{
    reload_pdptes,
    run_page::{
        PioPage,
        RunPage, //
    },
    PendingIo,
    Vcpu,
    VcpuState, //
};

/// What the run loop does after an exit.
pub(super) enum Next {
    /// Enter the guest again.
    Reenter,
    /// Return to userspace; the exit is described in `kvm_run`.
    User,
}

const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;
const KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON: u32 = 4;
/// The instruction at RIP could not be emulated (or the state cannot be
/// run without emulating): `KVM_EXIT_INTERNAL_ERROR` with
/// `KVM_INTERNAL_ERROR_EMULATION` and RIP, as KVM reports an emulation
/// failure.
fn emulation_failed(arch: &dyn ArchVcpu, run: &RunPage<'_>) -> Next {
    run.set_internal_error(KVM_INTERNAL_ERROR_EMULATION, &[arch.rip()]);
    Next::User
}

/// `-KVM_ENOSYS`: the answer to a hypercall rkvm does not implement.
const KVM_ENOSYS: u64 = 1000;
/// `kvm_run.internal.data[0]` when the guest state was lost
/// (`Exit::StateLost`): "rkvmLOST".
const STATE_LOST: u64 = 0x7473_4f4c_6d76_6b72;
/// `kvm_run.internal.data[0]` when guest mode was not entered
/// (`Exit::NotEntered`), in place of an exit code: no raw exit code of
/// either backend is `u64::MAX - 1` (SVM's `VMEXIT_INVALID` is -1).
const NOT_ENTERED: u64 = u64::MAX - 1;

impl Vcpu {
    /// Handles one exit: one function per kind of exit, as KVM's
    /// `svm_exit_handlers[]` and `kvm_vmx_exit_handlers[]`.
    pub(super) fn handle(&self, st: &mut VcpuState, exit: Exit, run: &RunPage<'_>) -> Result<Next> {
        Ok(match exit {
            Exit::Host => self.handle_host_interrupt(),
            // Not an exit (the run loop prepares the entry again).
            Exit::Cancelled => Next::Reenter,
            Exit::Io { io, next_rip } if io.string => self.handle_string_io(st, io, next_rip, run),
            Exit::Io { io, next_rip } => self.handle_io(st, io, next_rip, run),
            Exit::Hlt => self.handle_hlt(st, run),
            Exit::IrqWindow => self.handle_interrupt_window(),
            Exit::NmiWindow => {
                self.stats.inc(VcpuStat::NmiWindowExits);
                Next::Reenter
            }
            Exit::Debug { payload } => self.handle_debug(st, payload, run),
            Exit::Breakpoint => self.handle_breakpoint(st, run),
            Exit::SoftInt => self.handle_soft_int(st, run),
            Exit::Dr => self.handle_dr(st, run),
            Exit::NestedFault { gpa, write } => self.handle_nested_fault(st, gpa, write, run)?,
            Exit::PageFault { addr, error } => self.handle_page_fault(st, addr, error, run)?,
            Exit::CrAccess => self.handle_cr(st, run),
            Exit::Invlpg { reported } => self.handle_invlpg(st, reported, run),
            Exit::Cpuid => self.handle_cpuid(st),
            Exit::Nop { len } => {
                st.arch.skip(u64::from(len));
                Next::Reenter
            }
            Exit::Xsetbv { len } => self.handle_xsetbv(st, len),
            Exit::Msr { write } => self.handle_msr(st, write, run),
            Exit::Hypercall => self.handle_hypercall(st),
            Exit::InvalidOpcode => self.handle_invalid_opcode(st),
            Exit::Shutdown => self.handle_shutdown(st, run),
            Exit::StateLost => self.handle_state_lost(run),
            Exit::InvalidState(reason) => self.handle_invalid_state(st, reason, run),
            Exit::NotEntered { detail } => self.handle_not_entered(st, detail, run),
            Exit::RealModeException { vector, error, len } => {
                self.handle_real_mode_exception(st, vector, error, len, run)?
            }
            Exit::RealModeUnsupported => emulation_failed(&*st.arch, run),
            Exit::Unhandled(code, info1, info2) => self.unexpected(st, (code, info1, info2), run),
        })
    }

    /// A host interrupt (or NMI, SMI, INIT) ended guest mode: the host has
    /// handled it, the guest goes on.
    fn handle_host_interrupt(&self) -> Next {
        self.stats.inc(VcpuStat::IrqExits);
        Next::Reenter
    }

    /// IN or OUT: `KVM_EXIT_IO` for userspace, the data of an OUT in the PIO
    /// page. The next `KVM_RUN` completes it (`complete_io`).
    fn handle_io(&self, st: &mut VcpuState, io: PortIo, next_rip: u64, run: &RunPage<'_>) -> Next {
        let PortIo {
            port, input, size, ..
        } = io;
        self.stats.inc(VcpuStat::IoExits);
        // The in-kernel PIC's and PIT's ports.
        if self.full_irqchip {
            let rax = st.arch.gpr(gpr::RAX);
            let taken = self
                .vm
                .pic_io(port, input, size, rax)
                .or_else(|| self.vm.pit_io(port, input, size, rax));
            if let Some(value) = taken {
                if input {
                    super::run::complete_in(&mut *st.arch, size, value);
                }
                st.arch.set_rip(next_rip);
                return Next::Reenter;
            }
        }
        // An OUT an ioeventfd or a coalesced PIO zone takes: done, no exit.
        if !input {
            let data = st.arch.gpr(gpr::RAX).to_le_bytes();
            if self.vm.io_write(BusKind::Pio, u64::from(port), size, data) {
                st.arch.set_rip(next_rip);
                return Next::Reenter;
            }
        }
        let arch = &st.arch;
        if !input {
            let data = arch.gpr(gpr::RAX).to_le_bytes();
            PioPage(&self.pio_page).write(data.get(..usize::from(size)).unwrap_or(&data));
        }
        st.pending_io = Some(PendingIo {
            rip: arch.rip(),
            next_rip,
            input: input.then_some(size),
        });
        run.set_io(input, size, port, 1);
        Next::User
    }

    /// INS or OUTS: emulated between guest memory and the PIO page, one
    /// round of `KVM_EXIT_IO` for userspace at a time (the next `KVM_RUN`
    /// completes it).
    fn handle_string_io(
        &self,
        st: &mut VcpuState,
        io: PortIo,
        next_rip: u64,
        run: &RunPage<'_>,
    ) -> Next {
        let PortIo {
            port,
            input,
            size,
            rep,
            addr_size,
            segment,
            ..
        } = io;
        self.stats.inc(VcpuStat::IoExits);
        self.vm.with_memory(|mem| {
            let start = emulate::start_string_io(
                mem,
                &mut *st.arch,
                input,
                size,
                rep,
                addr_size,
                segment,
                next_rip,
                &mut st.io_buf,
            );
            match start {
                Some(StringStart::Done) => Next::Reenter,
                Some(StringStart::Exit(sio)) => {
                    if !input {
                        let bytes = (sio.count as usize).saturating_mul(usize::from(size));
                        PioPage(&self.pio_page).write(st.io_buf.get(..bytes).unwrap_or(&st.io_buf));
                    }
                    run.set_io(input, size, port, sio.count);
                    st.pending_string = Some(sio);
                    Next::User
                }
                None => {
                    let rip = st.arch.rip();
                    run.set_internal_error(KVM_INTERNAL_ERROR_EMULATION, &[u64::from(port), rip]);
                    Next::User
                }
            }
        })
    }

    /// HLT: `KVM_EXIT_HLT`, past the instruction; with an in-kernel APIC
    /// the vCPU halts in the kernel instead (the run loop sleeps until an
    /// interrupt or NMI wakes it).
    fn handle_hlt(&self, st: &mut VcpuState, run: &RunPage<'_>) -> Next {
        self.stats.inc(VcpuStat::HaltExits);
        st.arch.skip(1);
        if let Some(apic) = &self.apic {
            apic.with(|s| s.mp.halt());
            return Next::Reenter;
        }
        // No in-kernel local APIC: userspace decides when to wake.
        run.set_exit_reason(uapi::KVM_EXIT_HLT);
        Next::User
    }

    /// The interrupt window rkvm asked for opened: the run loop injects or
    /// tells userspace.
    fn handle_interrupt_window(&self) -> Next {
        self.stats.inc(VcpuStat::IrqWindowExits);
        Next::Reenter
    }

    /// A #DB (KVM's `db_interception`): while userspace single-steps or
    /// uses hardware breakpoints, `KVM_EXIT_DEBUG` with the cause in DR6;
    /// else the guest's own (its breakpoints, its TF), delivered to it with
    /// its DR6 updated.
    fn handle_debug(&self, st: &mut VcpuState, payload: u64, run: &RunPage<'_>) -> Next {
        let arch = &mut st.arch;
        if arch.debug_regs().guest_debug().db_to_user() {
            run.set_debug(uapi::kvm_debug_exit_arch {
                exception: u32::from(debug::DB_VECTOR),
                pad: 0,
                pc: arch.linear_rip(),
                dr6: payload ^ debug::DR6_ACTIVE_LOW,
                dr7: arch.debug_regs().armed().dr7,
            });
            return Next::User;
        }
        arch.debug_regs_mut().deliver_db(payload);
        arch.inject_exception(debug::DB_VECTOR, None);
        Next::Reenter
    }

    /// An INT3 while userspace uses software breakpoints (KVM's
    /// `bp_interception`): `KVM_EXIT_DEBUG` with exception 3 and the INT3's
    /// address; the guest does not see it.
    fn handle_breakpoint(&self, st: &VcpuState, run: &RunPage<'_>) -> Next {
        run.set_debug(uapi::kvm_debug_exit_arch {
            exception: u32::from(debug::BP_VECTOR),
            pad: 0,
            pc: st.arch.linear_rip(),
            dr6: 0,
            dr7: 0,
        });
        Next::User
    }

    /// An INT3, INT n or INTO intercepted as an instruction (see
    /// `Exit::SoftInt`): INT3 is a breakpoint, the others are delivered.
    fn handle_soft_int(&self, st: &mut VcpuState, run: &RunPage<'_>) -> Next {
        let insn = self.vm.with_memory(|mem| emulate::soft_int(mem, &*st.arch));
        match insn {
            Some(emulate::SoftInt::Breakpoint) => self.handle_breakpoint(st, run),
            Some(emulate::SoftInt::Int { vector, len }) => {
                if st.arch.inject_soft_interrupt(vector, len) {
                    Next::Reenter
                } else {
                    emulation_failed(&*st.arch, run)
                }
            }
            Some(emulate::SoftInt::Overflow) => {
                st.arch.skip(1);
                st.arch.inject_exception(OF_VECTOR, None);
                Next::Reenter
            }
            None => emulation_failed(&*st.arch, run),
        }
    }

    /// A `mov` to or from a debug register, emulated on the vCPU's own
    /// DR0-DR7. With DR7.GD set it raises #DB (DR6.BD) instead, as the
    /// processor does (or, while the debugger's hardware breakpoints are
    /// armed, a `KVM_EXIT_DEBUG`, as KVM's `handle_dr`).
    fn handle_dr(&self, st: &mut VcpuState, run: &RunPage<'_>) -> Next {
        let arch = &mut st.arch;
        let dr7 = arch.debug_regs().armed().dr7;
        if dr7 & debug::DR7_GD != 0 {
            if arch.debug_regs().guest_debug().hw_bp.is_some() {
                run.set_debug(uapi::kvm_debug_exit_arch {
                    exception: u32::from(debug::DB_VECTOR),
                    pad: 0,
                    pc: arch.linear_rip(),
                    dr6: debug::DR6_BD | debug::DR6_ACTIVE_LOW,
                    dr7,
                });
                return Next::User;
            }
            arch.debug_regs_mut().deliver_db(debug::DR6_BD);
            arch.inject_exception(debug::DB_VECTOR, None);
            return Next::Reenter;
        }
        self.vm.with_memory(|mem| {
            self.stats.inc(VcpuStat::InsnEmulation);
            match emulate::mov_dr(mem, &mut **arch) {
                emulate::MovDrResult::Done => Next::Reenter,
                emulate::MovDrResult::Fault => {
                    arch.inject_exception(GP_VECTOR, Some(0));
                    Next::Reenter
                }
                emulate::MovDrResult::Undefined => {
                    arch.inject_exception(UD_VECTOR, None);
                    Next::Reenter
                }
                emulate::MovDrResult::NotEmulated => emulation_failed(&**arch, run),
            }
        })
    }

    /// A nested page fault (NPF, EPT violation): RAM is mapped and the
    /// guest goes on; anything else is MMIO.
    fn handle_nested_fault(
        &self,
        st: &mut VcpuState,
        gpa: GuestPhys,
        write: bool,
        run: &RunPage<'_>,
    ) -> Result<Next> {
        // With the MMU lock held: map the page, or hand the access to MMIO.
        let resolve = |mmu: &mut Mmu, st: &mut VcpuState| -> Result<Next> {
            if let Fault::Mapped = mmu.fault(gpa, write)? {
                self.stats.inc(VcpuStat::PfFixed);
                return Ok(Next::Reenter);
            }
            Ok(self.mmio(st, &mmu.memory, gpa.0, write, run))
        };
        // A page touched for the first time is pinned without the MMU lock
        // (see `PinRequest`), between two holds of it; any other fault (an
        // MMIO access, a page pinned before) takes the lock once. A failed
        // pin is left to `resolve`, which pins again and reports it as it
        // always has.
        let request = match self
            .vm
            .with_mmu(|mmu| match mmu.memory.unpinned(gpa, write) {
                Some(request) => Ok(Err(request)),
                None => resolve(mmu, st).map(Ok),
            })? {
            Ok(next) => return Ok(next),
            Err(request) => request,
        };
        let page = request.pin().ok();
        self.vm.with_mmu(|mmu| {
            if let Some(page) = page {
                mmu.memory.install(&request, page);
            }
            resolve(mmu, st)
        })
    }

    /// A page fault with shadow paging: the shadow table is filled in, or
    /// the fault is the guest's own (reflected to it), or MMIO.
    fn handle_page_fault(
        &self,
        st: &mut VcpuState,
        addr: u64,
        error: u64,
        run: &RunPage<'_>,
    ) -> Result<Next> {
        self.vm.with_mmu(|mmu| {
            let maxphyaddr = cpuid::maxphyaddr(&st.cpuid);
            let paging = st.arch.paging();
            let Some(fault) = st.mmu.page_fault(mmu, &paging, maxphyaddr, addr, error)? else {
                // A #PF intercept without shadow paging cannot happen.
                return Ok(self.unexpected(st, st.arch.raw_exit(), run));
            };
            Ok(match fault {
                PageFault::Fixed { emptied } => {
                    self.stats.inc(VcpuStat::PfFixed);
                    if emptied {
                        self.stats.inc(VcpuStat::TlbFlush);
                    }
                    Next::Reenter
                }
                PageFault::Guest(code) => {
                    self.stats.inc(VcpuStat::PfGuest);
                    self.reflect_page_fault(st, addr, code, run)
                }
                PageFault::Mmio(gpa) => self.mmio(
                    st,
                    &mmu.memory,
                    gpa.0,
                    Access::from_error_code(error).write,
                    run,
                ),
            })
        })
    }

    /// A read or write of CR0, CR3 or CR4 with shadow paging: emulated, and
    /// the shadow translations flushed as the write requires.
    fn handle_cr(&self, st: &mut VcpuState, run: &RunPage<'_>) -> Next {
        let arch = &mut st.arch;
        self.vm.with_memory(|mem| {
            self.stats.inc(VcpuStat::InsnEmulation);
            match emulate::mov_cr(
                mem,
                &mut **arch,
                cpuid::maxphyaddr(&st.cpuid),
                cpuid::cr4_allowed(&st.cpuid),
            ) {
                emulate::CrResult::Done { flush } => {
                    reload_pdptes(&mut **arch, mem);
                    if st.mmu.flush(flush) {
                        self.stats.inc(VcpuStat::TlbFlush);
                    }
                }
                emulate::CrResult::Fault => arch.inject_exception(GP_VECTOR, Some(0)),
                emulate::CrResult::NotEmulated => return emulation_failed(&**arch, run),
            }
            Next::Reenter
        })
    }

    /// INVLPG with shadow paging: the page's shadow translation goes.
    fn handle_invlpg(
        &self,
        st: &mut VcpuState,
        reported: Option<(u8, u64)>,
        run: &RunPage<'_>,
    ) -> Next {
        self.stats.inc(VcpuStat::Invlpg);
        let decoded =
            reported.or_else(|| self.vm.with_memory(|mem| emulate::invlpg(mem, &*st.arch)));
        match decoded {
            Some((len, linear)) => {
                st.mmu.invlpg(linear);
                st.arch.skip(u64::from(len));
                Next::Reenter
            }
            None => emulation_failed(&*st.arch, run),
        }
    }

    /// XSETBV (`kvm_emulate_xsetbv()`): at CPL 0, a valid value for XCR0
    /// (`xsave::valid_xcr0`, within the XCR0 bits the guest's CPUID
    /// allows) becomes the guest's XCR0; anything else is a #GP. A #UD for
    /// CR4.OSXSAVE clear is the processor's, before the intercept.
    fn handle_xsetbv(&self, st: &mut VcpuState, len: u8) -> Next {
        let arch = &mut st.arch;
        let index = arch.gpr(gpr::RCX) as u32;
        let value = (arch.gpr(gpr::RDX) << 32) | (arch.gpr(gpr::RAX) & 0xffff_ffff);
        let supported = cpuid::guest_supported_xcr0(&st.cpuid, u64::MAX);
        let cpl = arch.sregs().ss.dpl;
        if cpl != 0 || !arch.guest_fpu_mut().set_xcr0(index, value, supported) {
            arch.inject_exception(GP_VECTOR, Some(0));
        } else {
            arch.skip(u64::from(len));
        }
        Next::Reenter
    }

    /// CPUID: answered from the `KVM_SET_CPUID2` table, with the bits that
    /// follow the vCPU's state (`cpuid::Runtime`).
    fn handle_cpuid(&self, st: &mut VcpuState) -> Next {
        let rt = st.cpuid_runtime();
        let arch = &mut st.arch;
        let (leaf, sub) = (arch.gpr(gpr::RAX) as u32, arch.gpr(gpr::RCX) as u32);
        let out = cpuid::lookup_runtime(&st.cpuid, leaf, sub, &rt);
        for (reg, value) in [gpr::RAX, gpr::RBX, gpr::RCX, gpr::RDX]
            .into_iter()
            .zip(out)
        {
            arch.set_gpr(reg, u64::from(value));
        }
        arch.skip(2);
        Next::Reenter
    }

    /// RDMSR or WRMSR (`write`), of the MSRs rkvm has.
    fn handle_msr(&self, st: &mut VcpuState, write: bool, run: &RunPage<'_>) -> Next {
        let index = st.arch.gpr(gpr::RCX) as u32;
        let value = (st.arch.gpr(gpr::RDX) << 32) | (st.arch.gpr(gpr::RAX) & 0xffff_ffff);
        // The in-kernel APIC's: an EOI may be for userspace's IOAPIC, after
        // the instruction.
        if let (true, Some(apic)) = (write, self.apic.clone()) {
            if let Some((done, next)) = self.apic_wrmsr(st, &apic, index, value, false, Some(run)) {
                if !done {
                    st.arch.inject_exception(GP_VECTOR, Some(0));
                    return Next::Reenter;
                }
                st.arch.skip(2);
                return next.unwrap_or(Next::Reenter);
            }
        }
        let done = if write {
            let before = st.arch.paging();
            let done = self.write_msr(st, index, value, false);
            if before.flushes(&st.arch.paging()) && st.mmu.flush(Flush::All) {
                self.stats.inc(VcpuStat::TlbFlush);
            }
            done
        } else if let Some(value) = self.read_msr(st, index, false) {
            st.arch.set_gpr(gpr::RAX, value & 0xffff_ffff);
            st.arch.set_gpr(gpr::RDX, value >> 32);
            true
        } else {
            false
        };
        let arch = &mut st.arch;
        // An MSR rkvm does not have, or a value it may not hold: #GP,
        // as KVM does by default (ignore_msrs=0).
        if done {
            arch.skip(2);
        } else {
            arch.inject_exception(GP_VECTOR, Some(0));
        }
        Next::Reenter
    }

    /// VMMCALL or VMCALL: rkvm implements no hypercall (`-KVM_ENOSYS`).
    fn handle_hypercall(&self, st: &mut VcpuState) -> Next {
        self.stats.inc(VcpuStat::Hypercalls);
        st.arch.set_gpr(gpr::RAX, KVM_ENOSYS.wrapping_neg());
        st.arch.skip(3);
        Next::Reenter
    }

    /// An instruction the guest may not use (VMX's): #UD.
    fn handle_invalid_opcode(&self, st: &mut VcpuState) -> Next {
        st.arch.inject_exception(UD_VECTOR, None);
        Next::Reenter
    }

    /// A triple fault: `KVM_EXIT_SHUTDOWN`.
    fn handle_shutdown(&self, st: &mut VcpuState, run: &RunPage<'_>) -> Next {
        // The VMCB is undefined after a shutdown intercept: reset it,
        // as KVM does, before telling userspace.
        st.arch.reset();
        run.set_exit_reason(uapi::KVM_EXIT_SHUTDOWN);
        Next::User
    }

    /// The guest state was lost (`Exit::StateLost`): logged, and
    /// `KVM_EXIT_INTERNAL_ERROR` with [`STATE_LOST`].
    fn handle_state_lost(&self, run: &RunPage<'_>) -> Next {
        pr_warn!(
            "vCPU {}: guest state lost (its VMCB held host state)\n",
            self.id
        );
        run.set_internal_error(KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, &[STATE_LOST]);
        Next::User
    }

    /// The hardware refused the guest state: `KVM_EXIT_FAIL_ENTRY` with its
    /// reason and the CPU, as KVM reports a failed entry.
    fn handle_invalid_state(&self, st: &VcpuState, reason: u64, run: &RunPage<'_>) -> Next {
        run.set_fail_entry(reason, st.arch.last_cpu());
        Next::User
    }

    /// Guest mode was not entered (`Exit::NotEntered`): reported as an
    /// unexpected exit whose code is [`NOT_ENTERED`].
    fn handle_not_entered(&self, st: &VcpuState, detail: u64, run: &RunPage<'_>) -> Next {
        self.unexpected(st, (NOT_ENTERED, detail, 0), run)
    }

    /// An exception of a real-mode guest in virtual-8086 mode (see
    /// `Exit::RealModeException`): the work of the instruction behind a
    /// #GP, or the exception delivered through the guest's vector table.
    fn handle_real_mode_exception(
        &self,
        st: &mut VcpuState,
        vector: u8,
        error: Option<u32>,
        len: u8,
        run: &RunPage<'_>,
    ) -> Result<Next> {
        // #GP(0): a privileged or I/O instruction; an error code naming the
        // IDT (bit 1): INT n meeting the IDT of limit 0.
        let int_n = error.filter(|e| e & 2 != 0).map(|e| (e >> 3) as u8);
        if vector == GP_VECTOR && (error == Some(0) || int_n.is_some()) {
            self.stats.inc(VcpuStat::InsnEmulation);
            let insn = self
                .vm
                .with_memory(|mem| emulate::v86_instruction(mem, &*st.arch));
            if let Some(insn) = insn {
                let next_rip = st.arch.rip().wrapping_add(u64::from(insn.len));
                let exit = match insn.op {
                    V86Op::Int(v) if int_n == Some(v) => {
                        return Ok(self.real_mode_deliver(st, v, next_rip, run))
                    }
                    _ if int_n.is_some() => None,
                    V86Op::Int(_) => None,
                    V86Op::Hlt => Some(Exit::Hlt),
                    V86Op::Io(io) => Some(Exit::Io { io, next_rip }),
                    V86Op::Msr { write } => Some(Exit::Msr { write }),
                    V86Op::Cr => Some(Exit::CrAccess),
                    V86Op::Dr => Some(Exit::Dr),
                    V86Op::Invlpg => Some(Exit::Invlpg { reported: None }),
                    V86Op::Nop => {
                        st.arch.skip(u64::from(insn.len));
                        return Ok(Next::Reenter);
                    }
                    V86Op::LoadTable { idt, operand, op32 } => {
                        return Ok(self.vm.with_memory(|mem| {
                            if emulate::real_mode_load_table(
                                mem,
                                &mut *st.arch,
                                &operand,
                                idt,
                                op32,
                                insn.len,
                            ) {
                                return Next::Reenter;
                            }
                            emulation_failed(&*st.arch, run)
                        }));
                    }
                };
                if let Some(exit) = exit {
                    return self.handle(st, exit, run);
                }
            }
        }
        // Anything else is the guest's own exception (a software one, INT3
        // or INTO, returns past its instruction).
        let return_ip = st.arch.rip().wrapping_add(u64::from(len));
        Ok(self.real_mode_deliver(st, vector, return_ip, run))
    }

    /// Delivers `vector` to a real-mode guest (`emulate::real_mode_interrupt`),
    /// or reports why it could not be.
    pub(super) fn real_mode_deliver(
        &self,
        st: &mut VcpuState,
        vector: u8,
        return_ip: u64,
        run: &RunPage<'_>,
    ) -> Next {
        let delivery = self
            .vm
            .with_memory(|mem| emulate::real_mode_interrupt(mem, &mut *st.arch, vector, return_ip));
        match delivery {
            RealModeDelivery::Delivered => Next::Reenter,
            RealModeDelivery::Shutdown => {
                st.arch.reset();
                run.set_exit_reason(uapi::KVM_EXIT_SHUTDOWN);
                Next::User
            }
            RealModeDelivery::NotRam => {
                run.set_internal_error(
                    KVM_INTERNAL_ERROR_EMULATION,
                    &[u64::from(vector), return_ip],
                );
                Next::User
            }
        }
    }

    /// An exit rkvm has no handling for: `KVM_EXIT_INTERNAL_ERROR` with the
    /// raw exit code and information.
    fn unexpected(
        &self,
        st: &VcpuState,
        (code, info1, info2): (u64, u64, u64),
        run: &RunPage<'_>,
    ) -> Next {
        run.set_internal_error(
            KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON,
            &[code, u64::from(st.arch.last_cpu()), info1, info2],
        );
        Next::User
    }

    /// An access to guest physical address `gpa` that is not RAM: the
    /// instruction at RIP is decoded and the access handed to userspace as
    /// `KVM_EXIT_MMIO` (a load completes at the next `KVM_RUN`).
    fn mmio(
        &self,
        st: &mut VcpuState,
        mem: &GuestMemory,
        gpa: u64,
        write: bool,
        run: &RunPage<'_>,
    ) -> Next {
        self.stats.inc(VcpuStat::InsnEmulation);
        if let Some(apic) = self.apic.clone() {
            if let Some(next) = self.apic_mmio(st, mem, &apic, gpa, write, run) {
                return next;
            }
        }
        if self.full_irqchip {
            if let Some(next) = self.ioapic_mmio(st, mem, gpa, write, run) {
                return next;
            }
        }
        self.stats.inc(VcpuStat::MmioExits);
        match emulate::start(mem, &mut *st.arch, write) {
            // An ioeventfd or a coalesced zone takes it: the store is done
            // (RIP is past it), the guest goes on.
            Some(Mmio::Write { data, len }) if self.vm.io_write(BusKind::Mmio, gpa, len, data) => {
                return Next::Reenter
            }
            Some(Mmio::Write { data, len }) => run.set_mmio(gpa, data, len, true),
            Some(Mmio::Read(load)) => {
                run.set_mmio(gpa, [0; 8], load.len, false);
                st.pending_mmio = Some(load);
            }
            None => {
                let rip = st.arch.rip();
                run.set_internal_error(KVM_INTERNAL_ERROR_EMULATION, &[gpa, rip]);
            }
        }
        Next::User
    }

    /// Delivers a page fault the guest's own tables caused, as the
    /// processor would have: CR2 and the error code, or a double fault if
    /// it happened while delivering a page fault or a contributory
    /// exception, or a triple fault (shutdown) during a double fault. An
    /// external interrupt whose delivery it interrupted is queued again.
    fn reflect_page_fault(
        &self,
        st: &mut VcpuState,
        addr: u64,
        code: u32,
        run: &RunPage<'_>,
    ) -> Next {
        let arch = &mut st.arch;
        match arch.take_event() {
            Some(Event::Exception(DF_VECTOR)) => {
                arch.reset();
                run.set_exit_reason(uapi::KVM_EXIT_SHUTDOWN);
                return Next::User;
            }
            Some(Event::Exception(v)) if v == PF_VECTOR || v == 0 || (10..=13).contains(&v) => {
                arch.inject_exception(DF_VECTOR, Some(0));
                return Next::Reenter;
            }
            Some(Event::Interrupt(vector)) if st.pending_irq.is_none() => {
                st.pending_irq = Some(vector)
            }
            // A software interrupt or a benign exception happens again when
            // the instruction is executed again, after the page fault.
            _ => {}
        }
        arch.set_cr2(addr);
        arch.inject_exception(PF_VECTOR, Some(code));
        Next::Reenter
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The vCPU fd's ioctls: their dispatch ([`Vcpu::handle_ioctl`]) and each
//! request but `KVM_RUN` (`run.rs`): registers, special registers, FPU,
//! MSRs, CPUID, guest debugging and debug registers, `KVM_INTERRUPT`, the
//! statistics fd.

use kernel::{
    prelude::*,
    transmute::AsBytes, //
};

use crate::{
    abi::{
        self,
        uapi, //
    },
    pure::{
        cpuid,
        debug::{
            self,
            GuestDebug, //
        },
        shadow::Flush,
        x86::{
            self,
            ControlRegs, //
        }, //
    },
    stats::StatsFile, //
};

use super::{
    read_msr,
    reload_pdptes,
    write_msr,
    Vcpu,
    VcpuState, //
};

impl Vcpu {
    /// A vCPU fd's ioctl: only from the VM owner's mm, only KVM's requests.
    pub(super) fn handle_ioctl(&self, cmd: u32, arg: usize) -> Result<isize> {
        self.vm.check_owner()?;
        if crate::pure::ioctl::type_of(cmd) != crate::pure::ioctl::KVMIO {
            return Err(EINVAL);
        }
        match cmd {
            abi::vcpu::RUN if arg == 0 => self.run(),
            abi::vcpu::GET_REGS => self.get(arg, |st| st.arch.regs()),
            abi::vcpu::SET_REGS => self.set_regs(arg),
            abi::vcpu::GET_SREGS => self.get(arg, |st| st.arch.sregs()),
            abi::vcpu::SET_SREGS => self.set_sregs(arg),
            abi::vcpu::INTERRUPT => self.interrupt(arg),
            abi::vcpu::SET_CPUID2 => self.set_cpuid(arg),
            abi::vcpu::GET_FPU => self.get(arg, |st| st.arch.fpu()),
            abi::vcpu::SET_FPU => self.set_fpu(arg),
            abi::vcpu::SET_GUEST_DEBUG => self.set_guest_debug(arg),
            abi::vcpu::GET_DEBUGREGS => self.get(arg, |st| {
                let (db, dr6, dr7) = st.arch.debug_regs().kvm();
                uapi::kvm_debugregs {
                    db,
                    dr6,
                    dr7,
                    flags: 0,
                    reserved: [0; 9],
                }
            }),
            abi::vcpu::SET_DEBUGREGS => self.set_debugregs(arg),
            abi::vcpu::GET_MSRS => self.get_msrs(arg),
            abi::vcpu::SET_MSRS => self.set_msrs(arg),
            abi::vcpu::GET_CPUID2 => self.get_cpuid(arg),
            // The same request as on a VM fd.
            abi::vm::GET_STATS_FD => StatsFile::create(self.stats.clone(), Some(self.id)),
            // kvm_arch_vcpu_ioctl(): an unknown vCPU request is EINVAL.
            _ => Err(EINVAL),
        }
    }

    /// `KVM_INTERRUPT` without an in-kernel irqchip: queue one external
    /// interrupt for the next entry. As in KVM, a second call before that
    /// entry replaces the first.
    fn interrupt(&self, arg: usize) -> Result<isize> {
        let irq: uapi::kvm_interrupt = abi::read_arg(arg)?;
        if irq.irq >= abi::NR_INTERRUPTS {
            return Err(EINVAL);
        }
        self.state.lock().pending_irq = Some(irq.irq as u8);
        Ok(0)
    }

    /// A `KVM_GET_*` of vCPU state: `read` takes it, userspace gets it.
    fn get<T: AsBytes>(&self, arg: usize, read: impl FnOnce(&VcpuState) -> T) -> Result<isize> {
        let value = read(&self.state.lock());
        abi::write_arg(arg, &value)?;
        Ok(0)
    }

    /// `KVM_SET_FPU`. An MXCSR with reserved bits set would make the
    /// kernel's FXRSTOR fault: refused.
    fn set_fpu(&self, arg: usize) -> Result<isize> {
        let fpu: uapi::kvm_fpu = abi::read_arg(arg)?;
        if fpu.mxcsr >> 16 != 0 {
            return Err(EINVAL);
        }
        self.state.lock().arch.set_fpu(&fpu);
        Ok(0)
    }

    /// `KVM_SET_GUEST_DEBUG`: single-step, software breakpoints (INT3 is
    /// an exit), hardware breakpoints (the debugger's DR0-DR3 and DR7 armed
    /// in place of the guest's). A control bit KVM knows and rkvm does not
    /// implement (`INJECT_DB`, `INJECT_BP`, `BLOCKIRQ`) is EINVAL rather
    /// than silently not done; `KVM_CAP_SET_GUEST_DEBUG2` says which.
    fn set_guest_debug(&self, arg: usize) -> Result<isize> {
        let dbg: uapi::kvm_guest_debug = abi::read_arg(arg)?;
        let dbg = GuestDebug::from_kvm(dbg.control, &dbg.arch.debugreg).map_err(|_| EINVAL)?;
        self.state.lock().arch.debug_regs_mut().set_guest_debug(dbg);
        Ok(0)
    }

    /// `KVM_SET_DEBUGREGS`: the guest's DR0-DR3, DR6, DR7, checked as KVM
    /// checks them (flags 0, DR6 and DR7 fit in 32 bits: else EINVAL) and
    /// stored as given.
    fn set_debugregs(&self, arg: usize) -> Result<isize> {
        let r: uapi::kvm_debugregs = abi::read_arg(arg)?;
        if !debug::valid_debugregs(r.flags, r.dr6, r.dr7) {
            return Err(EINVAL);
        }
        self.state
            .lock()
            .arch
            .debug_regs_mut()
            .set_kvm(r.db, r.dr6, r.dr7);
        Ok(0)
    }

    fn set_regs(&self, arg: usize) -> Result<isize> {
        let regs: uapi::kvm_regs = abi::read_arg(arg)?;
        let mut st = self.state.lock();
        st.arch.set_regs(&regs);
        Ok(0)
    }

    fn set_sregs(&self, arg: usize) -> Result<isize> {
        let sregs: uapi::kvm_sregs = abi::read_arg(arg)?;
        let c = ControlRegs {
            cr0: sregs.cr0,
            cr3: sregs.cr3,
            cr4: sregs.cr4,
            efer: sregs.efer,
            cs_l: sregs.cs.l != 0,
        };
        let mut st = self.state.lock();
        if !x86::valid_sregs(&c, cpuid::maxphyaddr(&st.cpuid)) {
            return Err(EINVAL);
        }
        st.arch.set_sregs(&sregs);
        self.vm.with_memory(|mem| reload_pdptes(&mut *st.arch, mem));
        // The guest's paging state changed from outside.
        st.mmu.flush(Flush::All);
        Ok(0)
    }

    /// `KVM_SET_CPUID2`. After the first `KVM_RUN` only the same table is
    /// accepted (EINVAL otherwise), as KVM does.
    fn set_cpuid(&self, arg: usize) -> Result<isize> {
        let entries = abi::read_cpuid(arg)?;
        let mut st = self.state.lock();
        if st.has_run {
            return if st.cpuid[..] == entries[..] {
                Ok(0)
            } else {
                Err(EINVAL)
            };
        }
        st.cpuid = entries;
        Ok(0)
    }

    fn get_cpuid(&self, arg: usize) -> Result<isize> {
        let st = self.state.lock();
        abi::write_cpuid(arg, &st.cpuid)?;
        Ok(0)
    }

    /// `KVM_GET_MSRS`: how many were read, up to the first unknown MSR.
    fn get_msrs(&self, arg: usize) -> Result<isize> {
        let st = self.state.lock();
        abi::msr_io(arg, true, |e| {
            read_msr(&*st.arch, e.index).map(|v| e.data = v).is_some()
        })
    }

    /// `KVM_SET_MSRS`: how many were written, up to the first refused. One
    /// of them may have changed paging (EFER): the vCPU's MMU is flushed.
    fn set_msrs(&self, arg: usize) -> Result<isize> {
        let mut st = self.state.lock();
        let done = abi::msr_io(arg, false, |e| {
            write_msr(&mut *st.arch, e.index, e.data, true)
        });
        st.mmu.flush(Flush::All);
        done
    }
}

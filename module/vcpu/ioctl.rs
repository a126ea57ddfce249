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
    apic::VcpuApic,
    emulate,
    guest_state,
    pure::{
        cpuid,
        debug::{
            self,
            GuestDebug, //
        },
        msr,
        shadow::Flush,
        x86::{
            self,
            ControlRegs, //
        },
        xsave, //
    },
    stats::StatsFile, //
};

use super::{
    reload_pdptes,
    Vcpu,
    VcpuState, //
};

/// `KVM_GET_VCPU_EVENTS` (`kvm_vcpu_ioctl_x86_get_vcpu_events()`): the
/// event queued for the next entry, the interrupt from `KVM_INTERRUPT`
/// not yet delivered, NMIs waiting and the NMI mask, the interrupt shadow.
/// No SMM, no payloads; with an in-kernel APIC (`apic`), a latched INIT.
fn vcpu_events(st: &VcpuState, apic: Option<&VcpuApic>) -> uapi::kvm_vcpu_events {
    use crate::backend::Injection;
    let mut e = uapi::kvm_vcpu_events {
        flags: uapi::KVM_VCPUEVENT_VALID_NMI_PENDING
            | uapi::KVM_VCPUEVENT_VALID_SHADOW
            | uapi::KVM_VCPUEVENT_VALID_SMM,
        ..Default::default()
    };
    match st.arch.injection() {
        Some(Injection::Exception { vector, error }) => {
            e.exception.injected = 1;
            e.exception.nr = vector;
            e.exception.has_error_code = u8::from(error.is_some());
            e.exception.error_code = error.unwrap_or(0);
        }
        Some(Injection::Interrupt(vector)) => {
            e.interrupt.injected = 1;
            e.interrupt.nr = vector;
        }
        Some(Injection::Nmi) => e.nmi.injected = 1,
        None => {}
    }
    if let Some(vector) = st.pending_irq {
        e.interrupt.injected = 1;
        e.interrupt.nr = vector;
    }
    e.interrupt.shadow = st.arch.interrupt_shadow();
    e.nmi.pending = st.nmi_pending;
    e.nmi.masked = u8::from(st.arch.nmi_masked());
    // An INIT latched by the in-kernel APIC; the SIPI vector is never
    // reported (KVM: "never valid when reporting to user space").
    if let Some(apic) = apic {
        e.smi.latched_init = u8::from(apic.with(|s| s.mp.init_pending()));
    }
    e
}

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
            abi::vcpu::GET_SREGS => self.get(arg, |st| self.sregs(st)),
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
            abi::vcpu::GET_XSAVE => self.get_xsave(arg, false),
            abi::vcpu::GET_XSAVE2 => self.get_xsave(arg, true),
            abi::vcpu::SET_XSAVE => self.set_xsave(arg),
            abi::vcpu::GET_XCRS => self.get_xcrs(arg),
            abi::vcpu::SET_XCRS => self.set_xcrs(arg),
            // Without an in-kernel local APIC the vCPU is always runnable
            // (HLT exits to userspace), and that is the only state it takes.
            abi::vcpu::GET_MP_STATE => {
                let _st = self.state.lock();
                let mp_state = self
                    .apic
                    .as_ref()
                    .map_or(uapi::KVM_MP_STATE_RUNNABLE, |a| self.apic_mp_state(a));
                abi::write_arg(arg, &uapi::kvm_mp_state { mp_state })?;
                Ok(0)
            }
            abi::vcpu::SET_MP_STATE => {
                let state: uapi::kvm_mp_state = abi::read_arg(arg)?;
                let _st = self.state.lock();
                let done = match &self.apic {
                    Some(apic) => self.set_apic_mp_state(apic, state.mp_state),
                    None => state.mp_state == uapi::KVM_MP_STATE_RUNNABLE,
                };
                if !done {
                    return Err(EINVAL);
                }
                Ok(0)
            }
            abi::vcpu::GET_LAPIC => self.get_lapic(arg),
            abi::vcpu::SET_LAPIC => self.set_lapic(arg),
            abi::vcpu::SET_VAPIC_ADDR => self.set_vapic_addr(arg),
            abi::vcpu::X86_SETUP_MCE => {
                let mcg_cap: u64 = abi::read_arg(arg)?;
                let mut st = self.state.lock();
                let vendor_mask = st.arch.mcg_cap_mask();
                if !st.msrs.setup_mce(mcg_cap, vendor_mask) {
                    return Err(EINVAL);
                }
                Ok(0)
            }
            abi::vcpu::X86_SET_MCE => self.set_mce(arg),
            abi::vcpu::GET_NESTED_STATE => self.get_nested_state(arg),
            abi::vcpu::SET_NESTED_STATE => self.set_nested_state(arg),
            abi::vcpu::TRANSLATE => self.translate(arg),
            abi::vcpu::GET_VCPU_EVENTS => {
                let apic = self.apic.as_deref();
                self.get(arg, |st| vcpu_events(st, apic))
            }
            abi::vcpu::SET_VCPU_EVENTS => self.set_vcpu_events(arg),
            abi::vcpu::GET_TSC_KHZ => abi::get_tsc_khz(),
            abi::vcpu::SET_TSC_KHZ => abi::set_tsc_khz(arg),
            // kvm_arch_vcpu_ioctl(): the argument is not looked at.
            abi::vcpu::NMI => {
                let mut st = self.state.lock();
                // As KVM's process_nmi(): one NMI can wait behind one being
                // handled; more collapse into those, as on hardware.
                let limit = if st.arch.nmi_masked() { 1 } else { 2 };
                st.nmi_pending = (st.nmi_pending + 1).min(limit);
                Ok(0)
            }
            // The same request as on a VM fd.
            abi::vm::GET_STATS_FD => StatsFile::create(self.stats.clone(), Some(self.id)),
            // kvm_arch_vcpu_ioctl(): an unknown vCPU request is EINVAL.
            _ => Err(EINVAL),
        }
    }

    /// `KVM_GET_NESTED_STATE` (`kvm_arch_vcpu_ioctl()` and the vendor's
    /// `get_nested_state()`): the `size` userspace offers is read (EFAULT);
    /// below the 128-byte header, the size needed is written back and the
    /// answer is E2BIG; else the header (`pure::nested::get_header`) is
    /// written (EFAULT). There is never any data after it.
    fn get_nested_state(&self, arg: usize) -> Result<isize> {
        use crate::pure::nested;
        let format = abi::nested_format().ok_or(EINVAL)?;
        let size_field = arg.wrapping_add(core::mem::offset_of!(uapi::kvm_nested_state, size));
        let size: u32 = abi::read_arg(size_field)?;
        let needed = nested::HEADER_SIZE as u32;
        if size < needed {
            abi::write_arg(size_field, &needed)?;
            return Err(E2BIG);
        }
        let header = nested::get_header(format, self.state.lock().gif);
        abi::write_arg(arg, &header)?;
        Ok(0)
    }

    /// `KVM_SET_NESTED_STATE`: the header is read whole (EFAULT), then
    /// checked as KVM does (`pure::nested::set_outcome`: every refusal is
    /// EINVAL); SVM's GIF is the only state it sets.
    fn set_nested_state(&self, arg: usize) -> Result<isize> {
        let format = abi::nested_format().ok_or(EINVAL)?;
        let header: [u8; crate::pure::nested::HEADER_SIZE] = abi::read_arg(arg)?;
        let mut st = self.state.lock();
        let svme = st.arch.sregs().efer & x86::efer::SVME != 0;
        match crate::pure::nested::set_outcome(format, &header, svme) {
            None => Err(EINVAL),
            Some(gif) => {
                if let Some(gif) = gif {
                    st.gif = gif;
                }
                Ok(0)
            }
        }
    }

    /// `KVM_INTERRUPT` with userspace's PIC: queue one external interrupt
    /// for the next entry. As in KVM, a second call before that entry
    /// replaces the first. ENXIO with the PIC in the kernel.
    fn interrupt(&self, arg: usize) -> Result<isize> {
        let irq: uapi::kvm_interrupt = abi::read_arg(arg)?;
        if irq.irq >= abi::NR_INTERRUPTS {
            return Err(EINVAL);
        }
        // With the PIC in the kernel, external interrupts are its own
        // (kvm_vcpu_ioctl_interrupt()).
        if self.full_irqchip {
            return Err(ENXIO);
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

    /// `KVM_GET_XSAVE` (`xsave2` false: a `struct kvm_xsave`, EINVAL if
    /// the image does not fit in it) and `KVM_GET_XSAVE2` (the image's
    /// size, `KVM_CAP_XSAVE2` at most): the guest's x87, SSE and AVX state
    /// in the standard XSAVE format, the components its CPUID has (x87
    /// and SSE always), as KVM's `kvm_vcpu_ioctl_x86_get_xsave2()`.
    fn get_xsave(&self, arg: usize, xsave2: bool) -> Result<isize> {
        use kernel::uaccess::{
            UserPtr,
            UserSlice, //
        };
        let size = guest_state::host_xsave().uabi_size;
        if !xsave2 && size > xsave::KVM_XSAVE_SIZE {
            return Err(EINVAL);
        }
        let len = if xsave2 { size } else { xsave::KVM_XSAVE_SIZE };
        let mut buf = KVec::with_capacity(len, GFP_KERNEL)?;
        buf.resize(len, 0u8, GFP_KERNEL)?;
        {
            let st = self.state.lock();
            let mask = cpuid::guest_supported_xcr0(&st.cpuid, u64::MAX) | xsave::FPSSE;
            let image = buf.get_mut(..size.min(len)).ok_or(EINVAL)?;
            st.arch.guest_fpu().to_uabi(mask, image);
        }
        UserSlice::new(UserPtr::from_addr(arg), len)
            .writer()
            .write_slice(&buf)?;
        Ok(0)
    }

    /// `KVM_SET_XSAVE`: the image's size is read (as KVM, not the whole
    /// `struct kvm_xsave`), checked and loaded (`xsave::from_uabi`):
    /// EINVAL for components the host cannot give guests, a compacted or
    /// reserved header, a bad MXCSR.
    fn set_xsave(&self, arg: usize) -> Result<isize> {
        use kernel::uaccess::{
            UserPtr,
            UserSlice, //
        };
        let size = guest_state::host_xsave().uabi_size;
        let mut buf = KVec::with_capacity(size, GFP_KERNEL)?;
        buf.resize(size, 0u8, GFP_KERNEL)?;
        UserSlice::new(UserPtr::from_addr(arg), size)
            .reader()
            .read_slice(&mut buf)?;
        let mut st = self.state.lock();
        st.arch
            .guest_fpu_mut()
            .set_from_uabi(&buf)
            .map_err(|_| EINVAL)?;
        Ok(0)
    }

    /// `KVM_GET_XCRS`: XCR0, or no register at all where the host has no
    /// XSAVE.
    fn get_xcrs(&self, arg: usize) -> Result<isize> {
        let mut x = uapi::kvm_xcrs::default();
        if guest_state::host_xsave().xcr0 != 0 {
            x.nr_xcrs = 1;
            x.xcrs[0].xcr = 0;
            x.xcrs[0].value = self.state.lock().arch.guest_fpu().xcr0();
        }
        abi::write_arg(arg, &x)?;
        Ok(0)
    }

    /// `KVM_SET_XCRS` (`kvm_vcpu_ioctl_x86_set_xcrs()`): EINVAL without
    /// XSAVE on the host, for more than `KVM_MAX_XCRS` entries or flags;
    /// the first entry for XCR0 is set as XSETBV would (EINVAL if
    /// invalid, without the CPL check); other XCRs are ignored.
    fn set_xcrs(&self, arg: usize) -> Result<isize> {
        let x: uapi::kvm_xcrs = abi::read_arg(arg)?;
        if guest_state::host_xsave().xcr0 == 0 {
            return Err(EINVAL);
        }
        if x.nr_xcrs > uapi::KVM_MAX_XCRS || x.flags != 0 {
            return Err(EINVAL);
        }
        let n = x.nr_xcrs as usize;
        let Some(xcr0) = x.xcrs.iter().take(n).find(|e| e.xcr == 0) else {
            return Ok(0);
        };
        let mut st = self.state.lock();
        let supported = cpuid::guest_supported_xcr0(&st.cpuid, u64::MAX);
        if !st.arch.guest_fpu_mut().set_xcr0(0, xcr0.value, supported) {
            return Err(EINVAL);
        }
        Ok(0)
    }

    /// `KVM_SET_FPU`. An MXCSR with bits the processor does not allow
    /// would make the kernel's XRSTOR fault: refused.
    fn set_fpu(&self, arg: usize) -> Result<isize> {
        let fpu: uapi::kvm_fpu = abi::read_arg(arg)?;
        if fpu.mxcsr & !guest_state::mxcsr_mask() != 0 {
            return Err(EINVAL);
        }
        self.state.lock().arch.set_fpu(&fpu);
        Ok(0)
    }

    /// `KVM_SET_GUEST_DEBUG`: single-step, software breakpoints (INT3 is
    /// an exit), hardware breakpoints (the debugger's DR0-DR3 and DR7 armed
    /// in place of the guest's), and `INJECT_BP`: the guest's own INT3, which
    /// the breakpoint exit kept from it, delivered to it at the next entry
    /// (its #BP frame returns past the INT3), as KVM does whether or not
    /// `ENABLE` is set, and `EBUSY` while an event is already queued
    /// (KVM: an exception; rkvm queues one event of any kind). A control
    /// bit KVM knows and rkvm does not implement (`INJECT_DB`, `BLOCKIRQ`)
    /// is EINVAL rather than silently not done; `KVM_CAP_SET_GUEST_DEBUG2`
    /// says which.
    fn set_guest_debug(&self, arg: usize) -> Result<isize> {
        let dbg: uapi::kvm_guest_debug = abi::read_arg(arg)?;
        let inject_bp = dbg.control & debug::control::INJECT_BP != 0;
        let dbg = GuestDebug::from_kvm(dbg.control, &dbg.arch.debugreg).map_err(|_| EINVAL)?;
        let mut st = self.state.lock();
        if inject_bp {
            if st.arch.injection().is_some() {
                return Err(EBUSY);
            }
            let len = self
                .vm
                .with_memory(|mem| emulate::breakpoint_len(mem, &*st.arch));
            st.arch.inject_breakpoint(len);
        }
        st.arch.debug_regs_mut().set_guest_debug(dbg);
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
        if !x86::valid_sregs(
            &c,
            cpuid::maxphyaddr(&st.cpuid),
            cpuid::cr4_allowed(&st.cpuid),
        ) {
            return Err(EINVAL);
        }
        // With an in-kernel APIC, IA32_APIC_BASE and CR8 are its
        // (`kvm_set_apic_base()`, `kvm_set_cr8()`); a base it refuses is
        // EINVAL.
        if let Some(apic) = self.apic.clone() {
            let effect = apic.with(|s| {
                let effect = s.lapic.set_apic_base(sregs.apic_base, true);
                s.lapic.set_cr8(sregs.cr8);
                effect
            });
            if self.apic_effect(&mut st, &apic, effect, None).is_err() {
                return Err(EINVAL);
            }
        }
        st.arch.set_sregs(&sregs);
        self.vm.with_memory(|mem| reload_pdptes(&mut *st.arch, mem));
        // The guest's paging state changed from outside.
        st.mmu.flush(Flush::All);
        Ok(0)
    }

    /// `KVM_SET_CPUID2`. After the first `KVM_RUN` only the same table is
    /// accepted (EINVAL otherwise), as KVM does, comparing with the bits
    /// that follow the vCPU's state (`cpuid::Runtime`) applied to both.
    /// Before, as KVM's `kvm_check_cpuid()`: AMX tile data in leaf 0xD
    /// needs a permission rkvm never has (EPERM).
    fn set_cpuid(&self, arg: usize) -> Result<isize> {
        let entries = abi::read_cpuid(arg)?;
        let mut st = self.state.lock();
        if st.has_run {
            let rt = st.cpuid_runtime();
            let same = st.cpuid.len() == entries.len()
                && st
                    .cpuid
                    .iter()
                    .zip(entries.iter())
                    .all(|(a, b)| rt.apply(a) == rt.apply(b));
            return if same { Ok(0) } else { Err(EINVAL) };
        }
        if cpuid::wants_dynamic_xfeatures(&entries) {
            return Err(EPERM);
        }
        st.cpuid = entries;
        if let Some(apic) = self.apic.clone() {
            self.apic_follow_cpuid(&mut st, &apic);
        }
        Ok(0)
    }

    /// `KVM_GET_CPUID2`: the table, with the bits that follow the vCPU's
    /// state as the guest reads them (KVM updates its table in place).
    fn get_cpuid(&self, arg: usize) -> Result<isize> {
        let st = self.state.lock();
        let rt = st.cpuid_runtime();
        let mut table = KVec::with_capacity(st.cpuid.len(), GFP_KERNEL)?;
        for e in st.cpuid.iter() {
            table.push(rt.apply(e), GFP_KERNEL)?;
        }
        abi::write_cpuid(arg, &table)?;
        Ok(0)
    }

    /// `KVM_SET_VCPU_EVENTS`, with KVM's rules
    /// (`kvm_vcpu_ioctl_x86_set_vcpu_events()`): flags rkvm does not know or
    /// whose capability is off (exception payloads, triple-fault events) are
    /// EINVAL, as is an exception vector above 31 or the NMI vector, and
    /// any SMM state (rkvm has no SMM, as KVM built without it). An event
    /// not marked injected is dropped: the set replaces what was queued.
    fn set_vcpu_events(&self, arg: usize) -> Result<isize> {
        use crate::backend::Injection;
        let e: uapi::kvm_vcpu_events = abi::read_arg(arg)?;
        let known = uapi::KVM_VCPUEVENT_VALID_NMI_PENDING
            | uapi::KVM_VCPUEVENT_VALID_SIPI_VECTOR
            | uapi::KVM_VCPUEVENT_VALID_SHADOW
            | uapi::KVM_VCPUEVENT_VALID_SMM;
        if e.flags & !known != 0 {
            return Err(EINVAL);
        }
        let ex = e.exception;
        if ex.injected != 0 && (ex.nr > 31 || ex.nr == x86::vector::NMI) {
            return Err(EINVAL);
        }
        let smi = e.smi;
        if e.flags & uapi::KVM_VCPUEVENT_VALID_SMM != 0
            && (smi.smm != 0 || smi.pending != 0 || smi.smm_inside_nmi != 0)
        {
            return Err(EINVAL);
        }
        let mut st = self.state.lock();
        // One event goes to the hardware, by priority; an interrupt behind
        // an exception or NMI waits as one from KVM_INTERRUPT would.
        let interrupt = (e.interrupt.injected != 0).then_some(e.interrupt.nr);
        let nmi = e.nmi.injected != 0;
        let injection = if ex.injected != 0 {
            Some(Injection::Exception {
                vector: ex.nr,
                error: (ex.has_error_code != 0).then_some(ex.error_code),
            })
        } else if nmi {
            Some(Injection::Nmi)
        } else {
            interrupt.map(Injection::Interrupt)
        };
        st.pending_irq = interrupt.filter(|_| !matches!(injection, Some(Injection::Interrupt(_))));
        st.arch.set_injection(injection);
        if e.flags & uapi::KVM_VCPUEVENT_VALID_SHADOW != 0 {
            st.arch.set_interrupt_shadow(e.interrupt.shadow);
        }
        // An NMI being injected masks NMIs itself (on VMX at the entry, which
        // refuses the mask already set); one behind an exception waits.
        let extra = u8::from(nmi && ex.injected != 0);
        if injection != Some(Injection::Nmi) {
            st.arch.set_nmi_masked(e.nmi.masked != 0);
        }
        if e.flags & uapi::KVM_VCPUEVENT_VALID_NMI_PENDING != 0 {
            let limit = if st.arch.nmi_masked() { 1 } else { 2 };
            st.nmi_pending = e.nmi.pending.saturating_add(extra).min(limit);
        } else {
            st.nmi_pending = st.nmi_pending.saturating_add(extra).min(2);
        }
        // With an in-kernel APIC: the SIPI vector, and a latched INIT (in
        // the SMM flags' block), as KVM keeps them.
        if let Some(apic) = &self.apic {
            apic.with(|s| {
                if e.flags & uapi::KVM_VCPUEVENT_VALID_SIPI_VECTOR != 0 {
                    // A vector is 8 bits: KVM uses the low ones too.
                    s.mp.set_sipi_vector(e.sipi_vector as u8);
                }
                if e.flags & uapi::KVM_VCPUEVENT_VALID_SMM != 0 {
                    s.mp.set_init_pending(smi.latched_init != 0);
                }
            });
            apic.kick().kick();
        }
        Ok(0)
    }

    /// `KVM_TRANSLATE` (`kvm_arch_vcpu_ioctl_translate()`): a linear address
    /// through the guest's page tables as a supervisor read that checks no
    /// permission, setting the accessed bits the walk passes as KVM's walker
    /// does; without paging the address itself. Not mapped: `valid` 0 and
    /// the physical address all ones (`INVALID_GPA`). `writeable` is always
    /// 1 and `usermode` 0, as in KVM.
    fn translate(&self, arg: usize) -> Result<isize> {
        use crate::pure::walk::{
            self,
            Access,
            Paging, //
        };
        let mut tr: uapi::kvm_translation = abi::read_arg(arg)?;
        let st = self.state.lock();
        let paging = st.arch.paging();
        let maxphyaddr = cpuid::maxphyaddr(&st.cpuid);
        let gpa = if paging.mode() == Paging::Off {
            Some(tr.linear_address)
        } else {
            self.vm.with_memory(|mem| {
                let read = |gpa: u64, size: u8| mem.read_entry(gpa, size);
                let walked = walk::walk(
                    paging.mode(),
                    paging.cr3,
                    tr.linear_address,
                    Access::default(),
                    paging.controls(maxphyaddr),
                    read,
                )
                .ok()?;
                mem.write_walk_updates(&walked);
                Some(walked.gpa)
            })
        };
        tr.physical_address = gpa.unwrap_or(u64::MAX);
        tr.valid = u8::from(gpa.is_some());
        tr.writeable = 1;
        tr.usermode = 0;
        abi::write_arg(arg, &tr)?;
        Ok(0)
    }

    /// `KVM_X86_SET_MCE`: a machine check for the guest, logged in its
    /// bank and, for an uncorrected error, delivered as #MC (or a shutdown
    /// at the next `KVM_RUN` when one is already in progress).
    fn set_mce(&self, arg: usize) -> Result<isize> {
        let m: uapi::kvm_x86_mce = abi::read_arg(arg)?;
        let mce = msr::Mce {
            status: m.status,
            addr: m.addr,
            misc: m.misc,
            mcg_status: m.mcg_status,
            bank: m.bank,
        };
        let mut st = self.state.lock();
        let cr4_mce = st.arch.paging().cr4 & x86::cr4::MCE != 0;
        match st.msrs.set_mce(&mce, cr4_mce).ok_or(EINVAL)? {
            msr::MceOutcome::Logged => {}
            msr::MceOutcome::Exception => st.arch.inject_exception(x86::vector::MC, None),
            msr::MceOutcome::Shutdown => st.shutdown_pending = true,
        }
        Ok(0)
    }

    /// `KVM_GET_MSRS`: how many were read, up to the first unknown MSR.
    fn get_msrs(&self, arg: usize) -> Result<isize> {
        let st = self.state.lock();
        abi::msr_io(arg, true, |e| {
            self.read_msr(&st, e.index, true)
                .map(|v| e.data = v)
                .is_some()
        })
    }

    /// `KVM_SET_MSRS`: how many were written, up to the first refused. One
    /// of them may have changed paging (EFER): the vCPU's MMU is flushed.
    fn set_msrs(&self, arg: usize) -> Result<isize> {
        let mut st = self.state.lock();
        let done = abi::msr_io(arg, false, |e| {
            self.write_msr(&mut st, e.index, e.data, true)
        });
        st.mmu.flush(Flush::All);
        done
    }
}

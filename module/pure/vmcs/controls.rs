// SPDX-License-Identifier: GPL-2.0

//! The VM-execution, exit and entry controls, and the capability MSRs
//! that say which of them the processor allows.

/// Pin-based execution controls.
pub mod pin {
    /// External interrupts cause exits.
    pub const EXT_INTR_EXITING: u32 = 1 << 0;
    /// NMIs cause exits.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// The guest's NMI blocking is virtual: set by an injected NMI, cleared
    /// by the guest's IRET, with NMI-window exiting available.
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// The VMX-preemption timer counts down in guest mode and exits at 0.
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

/// Primary processor-based execution controls.
pub mod proc {
    /// Exit as soon as the guest can take an interrupt.
    pub const INTR_WINDOW_EXITING: u32 = 1 << 2;
    /// Exit as soon as the guest can take an NMI (virtual NMIs only).
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    /// Add the TSC offset to the guest's TSC reads.
    pub const TSC_OFFSETTING: u32 = 1 << 3;
    /// HLT exits.
    pub const HLT_EXITING: u32 = 1 << 7;
    /// INVLPG exits.
    pub const INVLPG_EXITING: u32 = 1 << 9;
    /// MWAIT exits.
    pub const MWAIT_EXITING: u32 = 1 << 10;
    /// Loads of CR3 exit.
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// Stores of CR3 exit.
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    /// Loads of CR8 exit.
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    /// Stores of CR8 exit.
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    /// MOV DR exits.
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Every IN, OUT, INS and OUTS exits.
    pub const UNCOND_IO_EXITING: u32 = 1 << 24;
    /// MONITOR exits.
    pub const MONITOR_EXITING: u32 = 1 << 29;
    /// The secondary controls apply.
    pub const SECONDARY_CONTROLS: u32 = 1 << 31;
}

/// Secondary processor-based execution controls.
pub mod proc2 {
    /// Extended page tables.
    pub const EPT: u32 = 1 << 1;
    /// Virtual-processor identifiers tag the guest's TLB entries.
    pub const VPID: u32 = 1 << 5;
    /// Real mode and unpaged protected mode run without emulation.
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
}

/// VM-exit controls.
pub mod exit_ctl {
    /// DR7 and IA32_DEBUGCTL are saved.
    pub const SAVE_DEBUG: u32 = 1 << 2;
    /// The host runs in 64-bit mode after the exit.
    pub const HOST_ADDR_SPACE_SIZE: u32 = 1 << 9;
    /// IA32_PAT is saved.
    pub const SAVE_PAT: u32 = 1 << 18;
    /// IA32_PAT is loaded from the host field.
    pub const LOAD_PAT: u32 = 1 << 19;
    /// IA32_EFER is saved.
    pub const SAVE_EFER: u32 = 1 << 20;
    /// IA32_EFER is loaded from the host field.
    pub const LOAD_EFER: u32 = 1 << 21;
}

/// VM-entry controls.
pub mod entry_ctl {
    /// DR7 and IA32_DEBUGCTL are loaded.
    pub const LOAD_DEBUG: u32 = 1 << 2;
    /// The guest is in IA-32e mode (EFER.LMA).
    pub const IA32E_MODE: u32 = 1 << 9;
    /// IA32_PAT is loaded.
    pub const LOAD_PAT: u32 = 1 << 14;
    /// IA32_EFER is loaded.
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// VMX capability MSRs (SDM appendix A).
pub mod cap_msr {
    /// IA32_VMX_BASIC: VMCS revision, TRUE-controls support.
    pub const BASIC: u32 = 0x480;
    /// IA32_VMX_PINBASED_CTLS.
    pub const PINBASED: u32 = 0x481;
    /// IA32_VMX_PROCBASED_CTLS.
    pub const PROCBASED: u32 = 0x482;
    /// IA32_VMX_EXIT_CTLS.
    pub const EXIT: u32 = 0x483;
    /// IA32_VMX_ENTRY_CTLS.
    pub const ENTRY: u32 = 0x484;
    /// IA32_VMX_MISC: bits 4:0, the preemption timer's rate (it counts
    /// once every 2^n TSC cycles).
    pub const MISC: u32 = 0x485;
    /// IA32_VMX_CR0_FIXED0: CR0 bits that must be 1 in VMX operation.
    pub const CR0_FIXED0: u32 = 0x486;
    /// IA32_VMX_CR0_FIXED1: CR0 bits that may be 1.
    pub const CR0_FIXED1: u32 = 0x487;
    /// IA32_VMX_CR4_FIXED0.
    pub const CR4_FIXED0: u32 = 0x488;
    /// IA32_VMX_CR4_FIXED1.
    pub const CR4_FIXED1: u32 = 0x489;
    /// IA32_VMX_PROCBASED_CTLS2.
    pub const PROCBASED2: u32 = 0x48b;
    /// IA32_VMX_EPT_VPID_CAP.
    pub const EPT_VPID_CAP: u32 = 0x48c;
    /// The TRUE forms of PINBASED, PROCBASED, EXIT, ENTRY: they allow some
    /// default-1 controls (CR3 exiting, among others) to be 0.
    pub const TRUE_PINBASED: u32 = 0x48d;
    /// See [`TRUE_PINBASED`].
    pub const TRUE_PROCBASED: u32 = 0x48e;
    /// See [`TRUE_PINBASED`].
    pub const TRUE_EXIT: u32 = 0x48f;
    /// See [`TRUE_PINBASED`].
    pub const TRUE_ENTRY: u32 = 0x490;
}

/// IA32_VMX_BASIC decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Basic(pub u64);

impl Basic {
    /// The VMCS revision identifier (first word of the VMXON region and of
    /// every VMCS).
    pub fn revision(self) -> u32 {
        (self.0 & 0x7fff_ffff) as u32
    }

    /// The TRUE control MSRs exist.
    pub fn true_controls(self) -> bool {
        self.0 & (1 << 55) != 0
    }

    /// INS/OUTS exits report the address size and segment in the
    /// instruction-information field.
    pub fn ins_outs_info(self) -> bool {
        self.0 & (1 << 54) != 0
    }

    /// The write-back memory type may be used for the VMCS (the only one
    /// rkvm supports).
    pub fn write_back(self) -> bool {
        (self.0 >> 50) & 0xf == 6
    }
}

/// A control word from a capability MSR: bits 31:0 must be 1 if set there
/// (allowed 0-settings), bits 63:32 may be 1 only if set there (allowed
/// 1-settings). Returns the value with `want` and every required bit set,
/// or `None` if the processor forbids a bit of `want`.
pub fn adjust_controls(want: u32, cap: u64) -> Option<u32> {
    let must = cap as u32;
    let may = (cap >> 32) as u32;
    let value = (want | must) & may;
    (value & want == want).then_some(value)
}

/// The capability MSRs' values (the TRUE forms where IA32_VMX_BASIC says
/// they exist).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapMsrs {
    /// IA32_VMX_BASIC.
    pub basic: u64,
    /// Pin-based controls.
    pub pin: u64,
    /// Primary processor-based controls.
    pub proc: u64,
    /// Secondary processor-based controls.
    pub proc2: u64,
    /// VM-exit controls.
    pub exit: u64,
    /// VM-entry controls.
    pub entry: u64,
    /// IA32_VMX_MISC.
    pub misc: u64,
    /// IA32_VMX_EPT_VPID_CAP.
    pub ept_vpid: u64,
    /// CR0 bits fixed to 1, and allowed to be 1.
    pub cr0_fixed: (u64, u64),
    /// CR4 bits fixed to 1, and allowed to be 1.
    pub cr4_fixed: (u64, u64),
}

/// The control values rkvm runs every guest with (dynamic bits, such as
/// interrupt-window exiting and IA-32e mode, are added per entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls {
    /// Pin-based.
    pub pin: u32,
    /// Primary processor-based.
    pub proc: u32,
    /// Secondary processor-based.
    pub proc2: u32,
    /// VM-exit.
    pub exit: u32,
    /// VM-entry.
    pub entry: u32,
    /// VPIDs are used.
    pub vpid: bool,
    /// INVEPT can flush one EPT context (else all of them).
    pub invept_single: bool,
    /// INS/OUTS exits say their address size and segment.
    pub ins_outs_info: bool,
    /// CR0 bits the host owns (must stay 1 in VMX operation; PE and PG are
    /// free with unrestricted guest).
    pub cr0_host_owned: u64,
    /// CR0 bits forced to 1 in the processor's CR0.
    pub cr0_fixed1: u64,
    /// CR4 bits the host owns (VMXE).
    pub cr4_host_owned: u64,
    /// CR4 bits forced to 1 in the processor's CR4 (VMXE).
    pub cr4_fixed1: u64,
    /// The preemption timer is on; it counts once every 2^n TSC cycles.
    pub preemption_timer_rate: Option<u8>,
    /// Virtual NMIs with NMI-window exiting: `KVM_NMI` works.
    pub virtual_nmis: bool,
}

/// IA32_VMX_EPT_VPID_CAP bits.
pub mod ept_vpid_cap {
    /// INVEPT is supported.
    pub const INVEPT: u64 = 1 << 20;
    /// Single-context INVEPT.
    pub const INVEPT_SINGLE: u64 = 1 << 25;
    /// All-context INVEPT.
    pub const INVEPT_ALL: u64 = 1 << 26;
}

impl Controls {
    /// What rkvm needs, checked against what the processor allows: `Err`
    /// names the first control word that cannot hold it.
    pub fn derive(c: &CapMsrs) -> Result<Controls, &'static str> {
        use self::{
            entry_ctl as en,
            exit_ctl as ex, //
        };
        // The preemption timer where the processor has it: a guest then
        // leaves guest mode at least once per timer period even if an
        // interrupt does not make it (see `vmx/mod.rs`).
        let timer = (c.pin >> 32) as u32 & pin::PREEMPTION_TIMER != 0;
        // Virtual NMIs where the processor has them and the NMI window with
        // them (every VMX processor KVM still runs on does).
        let virtual_nmis = (c.pin >> 32) as u32 & pin::VIRTUAL_NMIS != 0
            && (c.proc >> 32) as u32 & proc::NMI_WINDOW_EXITING != 0;
        let pin = adjust_controls(
            pin::EXT_INTR_EXITING
                | pin::NMI_EXITING
                | if timer { pin::PREEMPTION_TIMER } else { 0 }
                | if virtual_nmis { pin::VIRTUAL_NMIS } else { 0 },
            c.pin,
        )
        .ok_or("pin-based controls")?;
        let want = proc::HLT_EXITING
            | proc::MWAIT_EXITING
            | proc::MONITOR_EXITING
            | proc::MOV_DR_EXITING
            | proc::UNCOND_IO_EXITING
            | proc::TSC_OFFSETTING
            | proc::CR8_LOAD_EXITING
            | proc::CR8_STORE_EXITING
            | proc::SECONDARY_CONTROLS;
        let proc = adjust_controls(want, c.proc).ok_or("processor-based controls")?;
        if (c.proc >> 32) as u32 & proc::INTR_WINDOW_EXITING == 0 {
            return Err("interrupt-window exiting");
        }
        let want2 = proc2::EPT | proc2::UNRESTRICTED_GUEST;
        let vpid = (c.proc2 >> 32) as u32 & proc2::VPID != 0;
        let proc2 = adjust_controls(want2 | if vpid { proc2::VPID } else { 0 }, c.proc2)
            .ok_or("secondary controls (EPT, unrestricted guest)")?;
        if c.ept_vpid & ept_vpid_cap::INVEPT == 0
            || c.ept_vpid & (ept_vpid_cap::INVEPT_SINGLE | ept_vpid_cap::INVEPT_ALL) == 0
        {
            return Err("INVEPT");
        }
        let exit = adjust_controls(
            ex::HOST_ADDR_SPACE_SIZE | ex::SAVE_EFER | ex::LOAD_EFER | ex::SAVE_PAT | ex::LOAD_PAT,
            c.exit,
        )
        .ok_or("VM-exit controls")?;
        let entry = adjust_controls(en::LOAD_EFER | en::LOAD_PAT | en::LOAD_DEBUG, c.entry)
            .ok_or("VM-entry controls")?;
        if (c.entry >> 32) as u32 & en::IA32E_MODE == 0 {
            return Err("IA-32e mode guests");
        }
        const PE: u64 = 1;
        const PG: u64 = 1 << 31;
        let cr0_fixed1 = c.cr0_fixed.0 & !(PE | PG);
        Ok(Controls {
            pin,
            proc,
            proc2,
            exit,
            entry,
            vpid,
            invept_single: c.ept_vpid & ept_vpid_cap::INVEPT_SINGLE != 0,
            ins_outs_info: Basic(c.basic).ins_outs_info(),
            cr0_host_owned: cr0_fixed1,
            cr0_fixed1,
            cr4_host_owned: c.cr4_fixed.0,
            cr4_fixed1: c.cr4_fixed.0,
            preemption_timer_rate: timer.then_some((c.misc & 0x1f) as u8),
            virtual_nmis,
        })
    }
}

impl Controls {
    /// The controls for shadow paging. No EPT, hence no unrestricted guest
    /// (which requires it): real mode runs in virtual-8086 mode (see
    /// [`v86_segment`]). No VPID: every VM entry and exit then flushes the
    /// guest's translations, so the processor never uses one the shadow
    /// table no longer has. CR3 loads and stores and INVLPG exit, and the
    /// host owns every bit of CR0 and CR4: the processor's values are
    /// derived from the guest's (`pure::shadow::GuestPaging`), and the
    /// guest reads its own from the read shadows.
    pub fn for_shadow_paging(&self) -> Controls {
        Controls {
            proc: self.proc
                | proc::CR3_LOAD_EXITING
                | proc::CR3_STORE_EXITING
                | proc::INVLPG_EXITING,
            proc2: self.proc2 & !(proc2::EPT | proc2::UNRESTRICTED_GUEST | proc2::VPID),
            vpid: false,
            cr0_host_owned: u64::MAX,
            cr4_host_owned: u64::MAX,
            ..*self
        }
    }
}

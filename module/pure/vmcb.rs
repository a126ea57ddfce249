// SPDX-License-Identifier: GPL-2.0

//! The AMD SVM virtual machine control block (VMCB), typed.
//!
//! Layout from the AMD64 APM vol. 2, appendix B ("Layout of VMCB"): a control
//! area at offset 0 and the guest state save area at 0x400, in one 4 KiB page.
//! Every field the module touches has a name and a type here; the offsets are
//! checked at compile time against the manual's table.

use core::mem::offset_of;

/// An intercept: a bit in one of the intercept vectors at the start of the
/// control area (word = vector index, bit = bit in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intercept {
    word: u8,
    bit: u8,
}

macro_rules! intercepts {
    ($($(#[$m:meta])* $name:ident = ($w:expr, $b:expr);)*) => {
        impl Intercept {
            $($(#[$m])* pub const $name: Intercept = Intercept { word: $w, bit: $b };)*
        }
    };
}

intercepts! {
    /// Vector 3 (offset 0x0C): physical INTR.
    INTR = (3, 0);
    /// Physical NMI.
    NMI = (3, 1);
    /// Physical SMI.
    SMI = (3, 2);
    /// INIT.
    INIT = (3, 3);
    /// Virtual interrupt (V_IRQ taken): the interrupt window.
    VINTR = (3, 4);
    /// CPUID.
    CPUID = (3, 18);
    /// RSM.
    RSM = (3, 19);
    /// IRET.
    IRET = (3, 20);
    /// INT n (under QEMU's emulation also INT3 and INTO).
    INTN = (3, 21);
    /// INVD.
    INVD = (3, 22);
    /// HLT.
    HLT = (3, 24);
    /// INVLPG.
    INVLPG = (3, 25);
    /// INVLPGA.
    INVLPGA = (3, 26);
    /// IN/OUT/INS/OUTS through the I/O permission map.
    IOIO_PROT = (3, 27);
    /// RDMSR/WRMSR through the MSR permission map.
    MSR_PROT = (3, 28);
    /// Task switch.
    TASK_SWITCH = (3, 29);
    /// Shutdown (triple fault).
    SHUTDOWN = (3, 31);
    /// Vector 4 (offset 0x10): VMRUN (must be set, or VMRUN fails).
    VMRUN = (4, 0);
    /// VMMCALL.
    VMMCALL = (4, 1);
    /// VMLOAD.
    VMLOAD = (4, 2);
    /// VMSAVE.
    VMSAVE = (4, 3);
    /// STGI.
    STGI = (4, 4);
    /// CLGI.
    CLGI = (4, 5);
    /// SKINIT.
    SKINIT = (4, 6);
    /// RDTSCP.
    RDTSCP = (4, 7);
    /// ICEBP.
    ICEBP = (4, 8);
    /// WBINVD.
    WBINVD = (4, 9);
    /// MONITOR.
    MONITOR = (4, 10);
    /// MWAIT.
    MWAIT = (4, 11);
    /// XSETBV.
    XSETBV = (4, 13);
}

/// `#VMEXIT` codes (APM vol. 2, appendix C).
pub mod exit {
    /// Read of control register `n`: `CR_READ_BASE + n`; writes follow at
    /// 0x10 + `n`, up to `CR_WRITE_LAST`.
    pub const CR_READ_BASE: u64 = 0x00;
    /// Write of CR15.
    pub const CR_WRITE_LAST: u64 = 0x1f;
    /// INVLPG.
    pub const INVLPG: u64 = 0x79;
    /// Read of debug register `n`: `DR_READ_BASE + n`.
    pub const DR_READ_BASE: u64 = 0x20;
    /// Write of debug register `n`: `DR_WRITE_BASE + n`.
    pub const DR_WRITE_BASE: u64 = 0x30;
    /// Write of debug register 15, the last of the range.
    pub const DR_WRITE_LAST: u64 = 0x3f;
    /// Exception vector `n` intercepted: `EXCP_BASE + n`.
    pub const EXCP_BASE: u64 = 0x40;
    /// Physical interrupt.
    pub const INTR: u64 = 0x60;
    /// Physical NMI.
    pub const NMI: u64 = 0x61;
    /// SMI.
    pub const SMI: u64 = 0x62;
    /// INIT.
    pub const INIT: u64 = 0x63;
    /// Virtual interrupt window.
    pub const VINTR: u64 = 0x64;
    /// CPUID.
    pub const CPUID: u64 = 0x72;
    /// HLT.
    pub const HLT: u64 = 0x78;
    /// INVD.
    pub const INVD: u64 = 0x76;
    /// IRET.
    pub const IRET: u64 = 0x74;
    /// WBINVD.
    pub const WBINVD: u64 = 0x89;
    /// MONITOR.
    pub const MONITOR: u64 = 0x8a;
    /// MWAIT.
    pub const MWAIT: u64 = 0x8b;
    /// XSETBV.
    pub const XSETBV: u64 = 0x8d;
    /// INT n (intercept `INTN`).
    pub const SWINT: u64 = 0x75;
    /// IN/OUT/INS/OUTS.
    pub const IOIO: u64 = 0x7B;
    /// RDMSR/WRMSR.
    pub const MSR: u64 = 0x7C;
    /// Task switch.
    pub const TASK_SWITCH: u64 = 0x7D;
    /// Shutdown (triple fault).
    pub const SHUTDOWN: u64 = 0x7F;
    /// VMRUN.
    pub const VMRUN: u64 = 0x80;
    /// VMMCALL.
    pub const VMMCALL: u64 = 0x81;
    /// Nested page fault.
    pub const NPF: u64 = 0x400;
    /// Invalid guest state: VMRUN refused the VMCB.
    pub const INVALID: u64 = u64::MAX;
}

/// One segment register in the save area.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Attributes in the VMCB's packed form (see [`SegAttrib`]).
    pub attrib: u16,
    /// Limit, in bytes (already scaled by G).
    pub limit: u32,
    /// Base.
    pub base: u64,
}

/// The control area: 1 KiB at offset 0.
#[repr(C)]
pub struct Control {
    /// Intercept vectors 0..=5: CR reads/writes, DR reads/writes, exceptions,
    /// misc 1, misc 2, misc 3.
    pub intercepts: [u32; 6],
    _reserved_18: [u32; 9],
    /// PAUSE filter threshold.
    pub pause_filter_thresh: u16,
    /// PAUSE filter count.
    pub pause_filter_count: u16,
    /// Physical address of the I/O permission map (12 KiB).
    pub iopm_base_pa: u64,
    /// Physical address of the MSR permission map (8 KiB).
    pub msrpm_base_pa: u64,
    /// Added to the TSC the guest reads.
    pub tsc_offset: u64,
    /// Guest ASID (never 0).
    pub asid: u32,
    /// TLB control: [`TLB_FLUSH_ALL`] etc.
    pub tlb_ctl: u8,
    _reserved_5d: [u8; 3],
    /// V_TPR, V_IRQ, V_INTR_PRIO, V_IGN_TPR, V_INTR_MASKING, ...
    pub int_ctl: u32,
    /// V_INTR_VECTOR.
    pub int_vector: u32,
    /// Bit 0: interrupt shadow.
    pub int_state: u32,
    _reserved_6c: u32,
    /// `#VMEXIT` code.
    pub exit_code: u64,
    /// Exit information 1.
    pub exit_info_1: u64,
    /// Exit information 2.
    pub exit_info_2: u64,
    /// Event being delivered when the exit happened.
    pub exit_int_info: u32,
    /// Its error code.
    pub exit_int_info_err: u32,
    /// Bit 0: nested paging enable.
    pub nested_ctl: u64,
    _avic_vapic_bar: u64,
    _ghcb_gpa: u64,
    /// Event to inject at VMRUN.
    pub event_inj: u32,
    /// Its error code.
    pub event_inj_err: u32,
    /// Nested page table root (nCR3).
    pub nested_cr3: u64,
    /// LBR virtualization, virtual VMSAVE/VMLOAD.
    pub virt_ext: u64,
    /// VMCB clean bits.
    pub clean: u32,
    _reserved_c4: u32,
    /// Next sequential RIP (with NRIP-save).
    pub next_rip: u64,
    /// Number of instruction bytes fetched (decode assists).
    pub insn_len: u8,
    /// The bytes.
    pub insn_bytes: [u8; 15],
    _reserved_e0: [u8; 0x400 - 0xe0],
}

/// The state save area: guest state, at offset 0x400.
#[repr(C)]
pub struct Save {
    /// ES.
    pub es: Segment,
    /// CS.
    pub cs: Segment,
    /// SS.
    pub ss: Segment,
    /// DS.
    pub ds: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
    /// GDTR (base and limit only).
    pub gdtr: Segment,
    /// LDTR.
    pub ldtr: Segment,
    /// IDTR (base and limit only).
    pub idtr: Segment,
    /// TR.
    pub tr: Segment,
    _reserved_a0: [u8; 43],
    /// Current privilege level.
    pub cpl: u8,
    _reserved_cc: u32,
    /// EFER (SVME must be set).
    pub efer: u64,
    _reserved_d8: [u8; 112],
    /// CR4.
    pub cr4: u64,
    /// CR3.
    pub cr3: u64,
    /// CR0.
    pub cr0: u64,
    /// DR7.
    pub dr7: u64,
    /// DR6.
    pub dr6: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// RIP.
    pub rip: u64,
    _reserved_180: [u8; 88],
    /// RSP.
    pub rsp: u64,
    _s_cet: u64,
    _ssp: u64,
    _isst_addr: u64,
    /// RAX.
    pub rax: u64,
    /// STAR.
    pub star: u64,
    /// LSTAR.
    pub lstar: u64,
    /// CSTAR.
    pub cstar: u64,
    /// SFMASK.
    pub sfmask: u64,
    /// KernelGSBase.
    pub kernel_gs_base: u64,
    /// SYSENTER_CS.
    pub sysenter_cs: u64,
    /// SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// CR2.
    pub cr2: u64,
    _reserved_248: [u8; 32],
    /// Guest PAT (used with nested paging).
    pub g_pat: u64,
    /// DEBUGCTL.
    pub dbgctl: u64,
    _lbr: [u64; 4],
    _reserved_298: [u8; 0xc00 - 0x298],
}

/// The whole VMCB: one page.
#[repr(C, align(4096))]
pub struct Vmcb {
    /// Control area.
    pub control: Control,
    /// State save area.
    pub save: Save,
}

const _: () = {
    assert!(core::mem::size_of::<Vmcb>() == 4096);
    assert!(core::mem::size_of::<Control>() == 0x400);
    assert!(offset_of!(Control, pause_filter_thresh) == 0x3c);
    assert!(offset_of!(Control, iopm_base_pa) == 0x40);
    assert!(offset_of!(Control, asid) == 0x58);
    assert!(offset_of!(Control, tlb_ctl) == 0x5c);
    assert!(offset_of!(Control, int_ctl) == 0x60);
    assert!(offset_of!(Control, int_state) == 0x68);
    assert!(offset_of!(Control, exit_code) == 0x70);
    assert!(offset_of!(Control, exit_int_info) == 0x88);
    assert!(offset_of!(Control, nested_ctl) == 0x90);
    assert!(offset_of!(Control, event_inj) == 0xa8);
    assert!(offset_of!(Control, nested_cr3) == 0xb0);
    assert!(offset_of!(Control, clean) == 0xc0);
    assert!(offset_of!(Control, next_rip) == 0xc8);
    assert!(offset_of!(Control, insn_len) == 0xd0);
    assert!(offset_of!(Save, tr) == 0x90);
    assert!(offset_of!(Save, cpl) == 0xcb);
    assert!(offset_of!(Save, efer) == 0xd0);
    assert!(offset_of!(Save, cr4) == 0x148);
    assert!(offset_of!(Save, rflags) == 0x170);
    assert!(offset_of!(Save, rip) == 0x178);
    assert!(offset_of!(Save, rsp) == 0x1d8);
    assert!(offset_of!(Save, rax) == 0x1f8);
    assert!(offset_of!(Save, star) == 0x200);
    assert!(offset_of!(Save, cr2) == 0x240);
    assert!(offset_of!(Save, g_pat) == 0x268);
    assert!(offset_of!(Vmcb, save) == 0x400);
};

impl Control {
    /// Sets an intercept.
    pub fn intercept(&mut self, i: Intercept) {
        self.intercepts[i.word as usize] |= 1 << i.bit;
    }

    /// Clears an intercept.
    pub fn clear_intercept(&mut self, i: Intercept) {
        self.intercepts[i.word as usize] &= !(1 << i.bit);
    }

    /// Whether an intercept is set.
    pub fn intercepted(&self, i: Intercept) -> bool {
        self.intercepts[i.word as usize] & (1 << i.bit) != 0
    }

    /// Intercepts exception `vector`.
    pub fn intercept_exception(&mut self, vector: u8) {
        self.intercepts[2] |= 1 << vector;
    }

    /// Intercepts reads and writes of control register `n`.
    pub fn intercept_cr(&mut self, n: u8) {
        self.intercepts[0] |= (1 << n) | (1 << (16 + n));
    }

    /// Intercepts every read and write of every debug register, so that the
    /// guest can never load the host's DR0-DR3 with its own breakpoints.
    pub fn intercept_all_dr(&mut self) {
        self.intercepts[1] = u32::MAX;
    }
}

/// `tlb_ctl`: leave the TLB alone.
pub const TLB_DO_NOTHING: u8 = 0;
/// `tlb_ctl`: flush the whole TLB at VMRUN (always allowed; QEMU has no
/// flush-by-ASID).
pub const TLB_FLUSH_ALL: u8 = 1;
/// `int_ctl`: V_IRQ, a virtual interrupt is pending.
pub const V_IRQ: u32 = 1 << 8;
/// `int_ctl`: V_IGN_TPR.
pub const V_IGN_TPR: u32 = 1 << 20;
/// `int_ctl`: V_INTR_MASKING: the guest's IF masks only virtual interrupts;
/// physical ones always exit (and host EFLAGS.IF governs them).
pub const V_INTR_MASKING: u32 = 1 << 24;
/// `int_state`: the guest is in an interrupt shadow (after STI/MOV SS).
pub const INT_SHADOW: u32 = 1 << 0;
/// `nested_ctl`: nested paging.
pub const NP_ENABLE: u64 = 1 << 0;
/// `event_inj`: valid.
pub const EVENT_VALID: u32 = 1 << 31;
/// `event_inj` type: external interrupt.
pub const EVENT_TYPE_INTR: u32 = 0 << 8;
/// `event_inj` type: NMI.
pub const EVENT_TYPE_NMI: u32 = 2 << 8;
/// `event_inj` type: exception.
pub const EVENT_TYPE_EXCEPTION: u32 = 3 << 8;
/// `event_inj` type: software interrupt (INT n; the return address is RIP).
pub const EVENT_TYPE_SOFT_INT: u32 = 4 << 8;
/// `event_inj`: push an error code.
pub const EVENT_ERROR_VALID: u32 = 1 << 11;

/// IOIO exit information 1 (APM 15.10.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoExit {
    /// Port.
    pub port: u16,
    /// IN (true) or OUT.
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefix.
    pub rep: bool,
    /// Operand size in bytes: 1, 2 or 4.
    pub size: u8,
    /// Address size in bits of a string instruction: 16, 32 or 64.
    pub addr_bits: u8,
    /// Effective segment of a string instruction (0 = ES ... 5 = GS).
    pub segment: u8,
}

impl IoExit {
    /// Decodes EXITINFO1 of an IOIO exit.
    pub fn decode(info1: u64) -> Self {
        let size = if info1 & (1 << 4) != 0 {
            1
        } else if info1 & (1 << 5) != 0 {
            2
        } else {
            4
        };
        let addr_bits = if info1 & (1 << 7) != 0 {
            16
        } else if info1 & (1 << 8) != 0 {
            32
        } else {
            64
        };
        IoExit {
            port: (info1 >> 16) as u16,
            input: info1 & 1 != 0,
            string: info1 & (1 << 2) != 0,
            rep: info1 & (1 << 3) != 0,
            size,
            addr_bits,
            segment: ((info1 >> 10) & 7) as u8,
        }
    }
}

pub use super::x86::SegAttrib;

/// The VMCB packs a segment's attributes into 12 bits.
impl SegAttrib {
    /// Packs into the VMCB format: type 3:0, S 4, DPL 6:5, P 7, AVL 8, L 9,
    /// DB 10, G 11.
    pub fn pack(&self) -> u16 {
        u16::from(self.type_ & 0xf)
            | u16::from(self.s) << 4
            | u16::from(self.dpl & 3) << 5
            | u16::from(self.present) << 7
            | u16::from(self.avl) << 8
            | u16::from(self.l) << 9
            | u16::from(self.db) << 10
            | u16::from(self.g) << 11
    }

    /// Unpacks the VMCB format.
    pub fn unpack(attrib: u16) -> Self {
        SegAttrib {
            type_: (attrib & 0xf) as u8,
            s: attrib & (1 << 4) != 0,
            dpl: ((attrib >> 5) & 3) as u8,
            present: attrib & (1 << 7) != 0,
            avl: attrib & (1 << 8) != 0,
            l: attrib & (1 << 9) != 0,
            db: attrib & (1 << 10) != 0,
            g: attrib & (1 << 11) != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrib_round_trip() {
        // A 64-bit code segment: type 0xb, S, P, L, G.
        let a = SegAttrib {
            type_: 0xb,
            s: true,
            dpl: 0,
            present: true,
            avl: false,
            l: true,
            db: false,
            g: true,
        };
        assert_eq!(a.pack(), 0xa9b);
        assert_eq!(SegAttrib::unpack(0xa9b), a);
        // Real-mode data segment as KVM's init_seg() makes it: P | S | W.
        assert_eq!(SegAttrib::unpack(0x93).type_, 3);
        for raw in [0u16, 0x93, 0x9b, 0xc93, 0x8b, 0x82, 0xfff] {
            assert_eq!(SegAttrib::unpack(raw).pack(), raw);
        }
    }

    #[test]
    fn io_exit_decode() {
        // out %al, $0x10: port 0x10, size 1, OUT, 16-bit address.
        let io = IoExit::decode(0x0010_0090);
        assert_eq!(
            (io.port, io.input, io.size, io.string, io.rep),
            (0x10, false, 1, false, false)
        );
        // rep insw with 32-bit addresses, port 0x1f0, ES.
        let io = IoExit::decode(0x01f0_0000 | 1 | 4 | 8 | (1 << 5) | (1 << 8));
        assert_eq!(
            (io.port, io.input, io.size, io.string, io.rep, io.addr_bits),
            (0x1f0, true, 2, true, true, 32)
        );
        // in %eax, %dx in 64-bit code.
        let io = IoExit::decode(0x0cf8_0000 | 1 | (1 << 6) | (1 << 9));
        assert_eq!((io.size, io.addr_bits), (4, 64));
    }

    #[test]
    fn intercept_bits() {
        let mut c = zeroed_control();
        c.intercept(Intercept::VMRUN);
        c.intercept(Intercept::HLT);
        assert_eq!(c.intercepts[4], 1);
        assert_eq!(c.intercepts[3], 1 << 24);
        assert!(c.intercepted(Intercept::HLT) && !c.intercepted(Intercept::CPUID));
        c.clear_intercept(Intercept::HLT);
        assert!(!c.intercepted(Intercept::HLT) && c.intercepted(Intercept::VMRUN));
        c.intercept_exception(14);
        assert_eq!(c.intercepts[2], 1 << 14);
    }

    fn zeroed_control() -> Control {
        // SAFETY: `Control` is plain integers and byte arrays: all-zero bytes
        // are a valid value (the module allocates VMCBs zeroed for the same reason).
        unsafe { core::mem::zeroed() }
    }
}

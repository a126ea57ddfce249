// SPDX-License-Identifier: GPL-2.0

//! After a VM exit: the exit information and the guest state read back
//! from the VMCS, and the exit decoded into a vendor-neutral [`Exit`].

use crate::{
    backend::{
        gpr,
        ArchVcpu,
        Exit, //
    },
    pure::{
        debug::{
            BP_VECTOR,
            DB_VECTOR, //
        },
        decode::{
            Mode,
            PortIo, //
        },
        paging::GuestPhys,
        vmcs::{
            self,
            field,
            reason,
            IntrInfo,
            IoQualification,
            Seg,
            Segment, //
        },
        walk::Paging,
        x86::{
            efer,
            vector, //
        }, //
    }, //
};

use super::{
    ops,
    ExitInfo,
    VmxVcpu,
    RFLAGS_IOPL,
    RFLAGS_VM, //
};

impl VmxVcpu {
    pub(super) fn read_exit(&mut self, v: &ops::Current<'_>) {
        let c = self.controls;
        let reason = v.read(field::EXIT_REASON) as u32;
        // Only an exception has an error code to read.
        let exception = reason as u16 == reason::EXCEPTION_NMI;
        self.exit = ExitInfo {
            reason,
            qualification: v.read(field::EXIT_QUALIFICATION),
            intr_info: v.read(field::EXIT_INTR_INFO) as u32,
            intr_error: if exception {
                v.read(field::EXIT_INTR_ERROR_CODE) as u32
            } else {
                0
            },
            idt_info: v.read(field::IDT_VECTORING_INFO) as u32,
            idt_error: v.read(field::IDT_VECTORING_ERROR_CODE) as u32,
            insn_len: v.read(field::EXIT_INSTRUCTION_LEN) as u32,
            insn_info: v.read(field::EXIT_INSTRUCTION_INFO) as u32,
            gpa: v.read(field::GUEST_PHYSICAL_ADDRESS),
        };
        let s = &mut self.state;
        for (seg, written) in Seg::ALL.into_iter().zip(self.written_segs.iter_mut()) {
            let hw = Segment {
                selector: v.read(seg.selector()) as u16,
                base: v.read(seg.base()),
                limit: v.read(seg.limit()) as u32,
                ar: v.read(seg.access_rights()) as u32,
            };
            // What stands for the guest's segment changes only when the
            // guest loads it; in virtual-8086 mode only selector and base
            // change (the limit and attributes stay, as in real mode).
            if hw != *written {
                let view = s.seg_mut(seg);
                *view = if self.v86 {
                    Segment {
                        selector: hw.selector,
                        base: hw.base,
                        ..*view
                    }
                } else {
                    hw
                };
                *written = hw;
            }
        }
        // LGDT and LIDT exit in virtual-8086 mode (IDTR holds limit 0 there).
        if !self.v86 {
            s.gdtr = (
                v.read(field::GUEST_GDTR_BASE),
                v.read(field::GUEST_GDTR_LIMIT) as u32,
            );
            s.idtr = (
                v.read(field::GUEST_IDTR_BASE),
                v.read(field::GUEST_IDTR_LIMIT) as u32,
            );
        }
        // The guest changes the CR0 and CR4 bits it owns without an exit.
        let merge = |hw: u64, view: u64, owned: u64| (hw & !owned) | (view & owned);
        s.cr0 = merge(v.read(field::GUEST_CR0), s.cr0, c.cr0_host_owned);
        s.cr4 = merge(v.read(field::GUEST_CR4), s.cr4, c.cr4_host_owned);
        // With shadow paging CR3 and EFER are the shadow table's; the
        // guest's change only through exits.
        if !self.shadow {
            s.cr3 = v.read(field::GUEST_CR3);
            s.efer = v.read(field::GUEST_EFER);
        }
        self.gprs.set(gpr::RSP, v.read(field::GUEST_RSP));
        s.rip = v.read(field::GUEST_RIP);
        let rflags = v.read(field::GUEST_RFLAGS);
        // Virtual-8086 mode's VM and IOPL are rkvm's, not the guest's.
        s.rflags = if self.v86 {
            (rflags & !(RFLAGS_VM | RFLAGS_IOPL)) | (s.rflags & RFLAGS_IOPL)
        } else {
            rflags
        };
        s.interruptibility = v.read(field::GUEST_INTERRUPTIBILITY) as u32;
        s.pending_dbg = v.read(field::GUEST_PENDING_DBG);
        // The PDPTEs mean something in PAE paging with EPT only.
        if !self.shadow && Paging::of(s.cr0, s.cr4, s.efer) == Paging::Pae {
            for (i, pdpte) in s.pdptes.iter_mut().enumerate() {
                *pdpte = v.read(field::guest_pdpte(i as u32));
            }
        }
    }

    pub(super) fn decode_exit(&mut self) -> Exit {
        let e = self.exit;
        if e.reason & reason::ENTRY_FAILURE != 0 {
            return Exit::InvalidState(u64::from(e.reason));
        }
        // An event whose delivery the exit interrupted is delivered again at
        // the next entry.
        // In virtual-8086 mode the processor delivers nothing itself: the
        // event it was delivering was an INT n, whose #GP rkvm handles.
        let idt = IntrInfo(e.idt_info);
        if idt.valid() && e.reason as u16 != reason::TRIPLE_FAULT && !self.v86 {
            let len = if idt.needs_length() { e.insn_len } else { 0 };
            self.event = (idt.reinjection(), e.idt_error, len);
        }
        let next_rip = self.state.rip.wrapping_add(u64::from(e.insn_len));
        match e.reason as u16 {
            reason::EXTERNAL_INTERRUPT | reason::PREEMPTION_TIMER => Exit::Host,
            reason::EXCEPTION_NMI => {
                let info = IntrInfo(e.intr_info);
                let error = info.has_error().then_some(e.intr_error);
                match (info.kind(), info.vector()) {
                    (IntrInfo::TYPE_NMI, _) => Exit::Host,
                    (IntrInfo::TYPE_HW_EXCEPTION, DB_VECTOR)
                        if self.debug.guest_debug().db_to_user() || !self.v86 =>
                    {
                        Exit::Debug {
                            payload: e.qualification,
                        }
                    }
                    (IntrInfo::TYPE_SW_EXCEPTION, BP_VECTOR) if self.debug.guest_debug().sw_bp => {
                        Exit::Breakpoint
                    }
                    (IntrInfo::TYPE_HW_EXCEPTION, vector::PF) if self.shadow => Exit::PageFault {
                        addr: e.qualification,
                        error: u64::from(e.intr_error),
                    },
                    (IntrInfo::TYPE_HW_EXCEPTION, vector) if self.v86 => Exit::RealModeException {
                        vector,
                        error,
                        len: 0,
                    },
                    (IntrInfo::TYPE_SW_EXCEPTION | IntrInfo::TYPE_PRIV_SW_EXCEPTION, vector)
                        if self.v86 =>
                    {
                        Exit::RealModeException {
                            vector,
                            error: None,
                            len: e.insn_len as u8,
                        }
                    }
                    _ => self.unhandled(),
                }
            }
            reason::TRIPLE_FAULT => Exit::Shutdown,
            reason::INTERRUPT_WINDOW => Exit::IrqWindow,
            reason::NMI_WINDOW => Exit::NmiWindow,
            reason::CPUID => Exit::Cpuid,
            reason::INVD | reason::WBINVD | reason::MONITOR | reason::MWAIT => Exit::Nop {
                len: e.insn_len as u8,
            },
            reason::XSETBV => Exit::Xsetbv {
                len: e.insn_len as u8,
            },
            reason::HLT => Exit::Hlt,
            reason::VMCALL => Exit::Hypercall,
            reason::CR_ACCESS => Exit::CrAccess,
            reason::INVLPG => Exit::Invlpg {
                reported: Some((e.insn_len as u8, e.qualification)),
            },
            reason::DR_ACCESS => Exit::Dr,
            reason::IO => {
                let q = IoQualification::decode(e.qualification);
                let (addr_size, segment) = if q.string && self.controls.ins_outs_info {
                    vmcs::string_io_info(e.insn_info)
                } else {
                    // Without the information: the mode's address size and
                    // DS (an OUTS with a segment override then goes wrong;
                    // every VMX processor with unrestricted guest has it).
                    (self.address_size(), 3)
                };
                let io = PortIo {
                    port: q.port,
                    input: q.input,
                    size: q.size,
                    string: q.string,
                    rep: q.rep,
                    addr_size,
                    segment,
                };
                Exit::Io { io, next_rip }
            }
            reason::RDMSR => Exit::Msr { write: false },
            reason::WRMSR => Exit::Msr { write: true },
            reason::EPT_VIOLATION => Exit::NestedFault {
                gpa: GuestPhys(e.gpa),
                write: vmcs::ept_violation_write(e.qualification),
            },
            reason::VMCLEAR..=reason::VMXON | reason::INVEPT | reason::INVVPID | reason::VMFUNC => {
                Exit::InvalidOpcode
            }
            _ => self.unhandled(),
        }
    }

    pub(super) fn unhandled(&self) -> Exit {
        let (code, info1, info2) = self.raw_exit();
        Exit::Unhandled(code, info1, info2)
    }

    /// The address size of the code segment, in bytes.
    pub(super) fn address_size(&self) -> u8 {
        let (cs, _) = vmcs::attributes(self.state.seg(Seg::Cs).ar);
        Mode::of(self.state.efer & efer::LMA != 0, cs.l, cs.db).address_bytes()
    }
}

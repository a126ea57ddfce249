// SPDX-License-Identifier: GPL-2.0

//! Emulating the one guest instruction behind an MMIO access.
//!
//! The nested page fault gives the guest physical address; the instruction
//! is fetched from guest memory (walking the guest's page tables in
//! software), decoded (`pure::decode`) and carried out against the vCPU's
//! registers. A store is complete when userspace sees it (RIP is already past
//! the instruction, as in KVM); a load waits for userspace's data and is
//! completed by the next `KVM_RUN`.

use crate::{
    backend::{gpr, ArchVcpu},
    memory::GuestMemory,
    pure::{
        decode::{self, Extend, Mode, Op, Reg},
        paging::GuestPhys,
        walk::{self, Paging},
        x86::efer,
    },
};

/// The longest x86 instruction.
const MAX_INSN: usize = 15;
/// RFLAGS.DF.
const RFLAGS_DF: u64 = 1 << 10;

/// An MMIO access for userspace.
pub(crate) enum Mmio {
    /// A store of `len` bytes of `data`; the instruction is done.
    Write {
        /// The bytes, little-endian.
        data: [u8; 8],
        /// How many.
        len: u8,
    },
    /// A load; [`PendingLoad::complete`] finishes it.
    Read(PendingLoad),
}

/// A load waiting for userspace's data.
pub(crate) struct PendingLoad {
    rip: u64,
    next_rip: u64,
    /// Access size in bytes.
    pub(crate) len: u8,
    dst: Reg,
    dst_size: u8,
    extend: Extend,
}

impl PendingLoad {
    /// Stores the data userspace supplied (`kvm_run.mmio.data`) and moves RIP
    /// past the instruction (unless userspace moved RIP meanwhile).
    pub(crate) fn complete(&self, arch: &mut dyn ArchVcpu, data: [u8; 8]) {
        let len = usize::from(self.len);
        let mut bytes = [0u8; 8];
        bytes[..len].copy_from_slice(&data[..len]);
        let raw = u64::from_le_bytes(bytes);
        let value = match self.extend {
            Extend::Sign => decode::sign_extend(raw, self.len),
            Extend::None | Extend::Zero => raw,
        };
        let old = arch.gpr(self.dst.index);
        arch.set_gpr(self.dst.index, decode::write_reg(old, self.dst, self.dst_size, value));
        if arch.rip() == self.rip {
            arch.set_rip(self.next_rip);
        }
    }
}

/// Starts emulating the access at the current RIP; `write` is the fault's
/// direction. `None`: the instruction could not be fetched or is not one
/// rkvm emulates.
pub(crate) fn start(mem: &GuestMemory, arch: &mut dyn ArchVcpu, write: bool) -> Option<Mmio> {
    let (bytes, n, mode) = fetch(mem, arch)?;
    let insn = decode::decode(&bytes[..n], mode).ok()?;
    let rip = arch.rip();
    let next_rip = rip.wrapping_add(u64::from(insn.len));
    let size = insn.size;
    let is_store = !matches!(insn.op, Op::Load { .. });
    if is_store != write {
        return None;
    }
    let value = match insn.op {
        Op::Load { dst, dst_size, extend } => {
            return Some(Mmio::Read(PendingLoad { rip, next_rip, len: size, dst, dst_size, extend }));
        }
        Op::StoreReg(reg) => decode::read_reg(arch.gpr(reg.index), reg, size),
        Op::StoreImm(imm) => imm,
        Op::Stos { addr_size } => {
            let rdi_reg = Reg { index: gpr::RDI, high8: false };
            let rdi = arch.gpr(gpr::RDI);
            let step = u64::from(size);
            let moved = if arch.regs().rflags & RFLAGS_DF != 0 { rdi.wrapping_sub(step) } else { rdi.wrapping_add(step) };
            arch.set_gpr(gpr::RDI, decode::write_reg(rdi, rdi_reg, addr_size, moved));
            let rax = Reg { index: gpr::RAX, high8: false };
            decode::read_reg(arch.gpr(gpr::RAX), rax, size)
        }
    };
    arch.set_rip(next_rip);
    Some(Mmio::Write { data: value.to_le_bytes(), len: size })
}

/// Fetches up to 15 instruction bytes at CS:RIP.
fn fetch(mem: &GuestMemory, arch: &dyn ArchVcpu) -> Option<([u8; MAX_INSN], usize, Mode)> {
    let s = arch.sregs();
    let rip = arch.rip();
    let mode = if s.efer & efer::LMA != 0 && s.cs.l != 0 {
        Mode::Bits64
    } else if s.cs.db != 0 {
        Mode::Bits32
    } else {
        Mode::Bits16
    };
    let linear = match mode {
        Mode::Bits64 => rip,
        Mode::Bits32 => s.cs.base.wrapping_add(rip & 0xffff_ffff) & 0xffff_ffff,
        Mode::Bits16 => s.cs.base.wrapping_add(rip & 0xffff) & 0xffff_ffff,
    };
    let paging = Paging::of(s.cr0, s.cr4, s.efer);
    let read_entry = |gpa: u64, size: u8| {
        let mut b = [0u8; 8];
        mem.read(GuestPhys(gpa), &mut b[..usize::from(size)]).ok()?;
        Some(u64::from_le_bytes(b))
    };
    let mut buf = [0u8; MAX_INSN];
    let mut n = 0usize;
    while n < MAX_INSN {
        let Some(gpa) = walk::translate(paging, s.cr3, linear.wrapping_add(n as u64), read_entry) else {
            break;
        };
        let chunk = (MAX_INSN - n).min(4096 - (gpa & 0xfff) as usize);
        if mem.read(GuestPhys(gpa), &mut buf[n..n + chunk]).is_err() {
            break;
        }
        n += chunk;
    }
    (n > 0).then_some((buf, n, mode))
}

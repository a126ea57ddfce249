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
    abi::uapi,
    backend::{
        gpr,
        ArchVcpu, //
    },
    memory::GuestMemory,
    pure::{
        decode::{
            self,
            CrOp,
            Extend,
            MemOperand,
            Mode,
            Op,
            Reg,
            V86Insn, //
        },
        paging::GuestPhys,
        shadow::Flush,
        walk::{
            self,
            Paging, //
        },
        x86::{
            self,
            cr0,
            cr4,
            efer, //
        }, //
    }, //
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
        let len = usize::from(self.len).min(8);
        let mut bytes = [0u8; 8];
        bytes[..len].copy_from_slice(&data[..len]);
        let raw = u64::from_le_bytes(bytes);
        let value = match self.extend {
            Extend::Sign => decode::sign_extend(raw, self.len),
            Extend::None | Extend::Zero => raw,
        };
        let old = arch.gpr(self.dst.index);
        arch.set_gpr(
            self.dst.index,
            decode::write_reg(old, self.dst, self.dst_size, value),
        );
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
        Op::Load {
            dst,
            dst_size,
            extend,
        } => {
            return Some(Mmio::Read(PendingLoad {
                rip,
                next_rip,
                len: size,
                dst,
                dst_size,
                extend,
            }));
        }
        Op::StoreReg(reg) => decode::read_reg(arch.gpr(reg.index), reg, size),
        Op::StoreImm(imm) => imm,
        Op::Stos { addr_size } => {
            let rdi_reg = Reg {
                index: gpr::RDI,
                high8: false,
            };
            let rdi = arch.gpr(gpr::RDI);
            let step = u64::from(size);
            let moved = if arch.regs().rflags & RFLAGS_DF != 0 {
                rdi.wrapping_sub(step)
            } else {
                rdi.wrapping_add(step)
            };
            arch.set_gpr(gpr::RDI, decode::write_reg(rdi, rdi_reg, addr_size, moved));
            let rax = Reg {
                index: gpr::RAX,
                high8: false,
            };
            decode::read_reg(arch.gpr(gpr::RAX), rax, size)
        }
    };
    arch.set_rip(next_rip);
    Some(Mmio::Write {
        data: value.to_le_bytes(),
        len: size,
    })
}

/// A string I/O instruction (INS/OUTS, with or without REP) in progress:
/// each exit to userspace moves one element (OUTS) or up to 1 KiB (REP INS)
/// through the PIO page.
pub(crate) struct StringIo {
    rip: u64,
    next_rip: u64,
    input: bool,
    size: u8,
    /// Transfers in this round.
    pub(crate) count: u32,
    rep: bool,
    addr_size: u8,
    /// Where an INS stores its data (guest physical, within one page).
    dest: GuestPhys,
}

/// What `start_string_io` decided.
pub(crate) enum StringStart {
    /// REP with a zero count: nothing to do, the instruction is done.
    Done,
    /// Data for userspace: `count` transfers (an OUTS's data already copied
    /// into the buffer given to `start_string_io`).
    Exit(StringIo),
}

/// The register holding a string instruction's address.
fn index_reg(input: bool) -> u8 {
    if input {
        gpr::RDI
    } else {
        gpr::RSI
    }
}

fn addr_mask(addr_size: u8) -> u64 {
    match addr_size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Starts an INS/OUTS round. For an OUTS the data is read from guest memory
/// into `pio` (the PIO page). `None`: the guest address is not RAM (string
/// I/O to or from MMIO is not emulated).
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_string_io(
    mem: &GuestMemory,
    arch: &mut dyn ArchVcpu,
    input: bool,
    size: u8,
    rep: bool,
    addr_size: u8,
    segment: u8,
    next_rip: u64,
    pio: &mut [u8],
) -> Option<StringStart> {
    let mask = addr_mask(addr_size);
    let rcx = arch.gpr(gpr::RCX) & mask;
    if rep && rcx == 0 {
        arch.set_rip(next_rip);
        return Some(StringStart::Done);
    }
    let s = arch.sregs();
    let long = s.efer & efer::LMA != 0 && s.cs.l != 0;
    // INS always uses ES.
    let base = segment_base(&s, if input { 0 } else { segment }, long);
    let index = arch.gpr(index_reg(input)) & mask;
    let linear = base.wrapping_add(index);
    let backwards = arch.regs().rflags & RFLAGS_DF != 0;
    let size64 = u64::from(size.max(1));
    // As KVM's emulator: OUTS goes out one element per exit; a forward
    // REP INS reads ahead up to 1 KiB (and, here, up to the end of the page).
    let mut count = 1u64;
    if input && rep && !backwards {
        let room = (4096 - (linear & 0xfff)) / size64;
        count = rcx.min(room).min(1024 / size64).max(1);
    }
    let paging = Paging::of(s.cr0, s.cr4, s.efer);
    let read_entry = |gpa: u64, size: u8| mem.read_entry(gpa, size);
    let gpa = walk::translate(paging, s.cr3, linear, read_entry)?;
    // A transfer that crosses a page (only a single misaligned one can):
    // not emulated.
    let bytes = count.saturating_mul(size64);
    if (gpa & 0xfff).saturating_add(bytes) > 4096 {
        return None;
    }
    let bytes = bytes as usize;
    if !input {
        mem.read(GuestPhys(gpa), pio.get_mut(..bytes)?).ok()?;
    }
    Some(StringStart::Exit(StringIo {
        rip: arch.rip(),
        next_rip,
        input,
        size,
        count: count as u32,
        rep,
        addr_size,
        dest: GuestPhys(gpa),
    }))
}

impl StringIo {
    /// Completes the round once userspace has handled it: stores an INS's
    /// data, advances rSI/rDI and rCX, and moves RIP past the instruction
    /// when the count is exhausted (a REP with more to do re-executes it).
    pub(crate) fn complete(&self, mem: &GuestMemory, arch: &mut dyn ArchVcpu, pio: &[u8]) {
        if arch.rip() != self.rip {
            return; // userspace moved RIP: the instruction is abandoned
        }
        let bytes = (self.count as usize).saturating_mul(usize::from(self.size));
        if self.input {
            // A failed store (the slot went away) drops the data, as a
            // write to absent memory does.
            let _ = pio.get(..bytes).map(|data| mem.write(self.dest, data));
        }
        let mask = addr_mask(self.addr_size);
        let delta = bytes as u64;
        let reg = index_reg(self.input);
        let old = arch.gpr(reg);
        let moved = if arch.regs().rflags & RFLAGS_DF != 0 {
            old.wrapping_sub(delta)
        } else {
            old.wrapping_add(delta)
        };
        let full = Reg {
            index: reg,
            high8: false,
        };
        arch.set_gpr(
            reg,
            decode::write_reg(old, full, self.addr_size, moved & mask),
        );
        let mut done = true;
        if self.rep {
            let rcx = arch.gpr(gpr::RCX);
            let left = (rcx & mask).wrapping_sub(u64::from(self.count)) & mask;
            let rcx_reg = Reg {
                index: gpr::RCX,
                high8: false,
            };
            arch.set_gpr(
                gpr::RCX,
                decode::write_reg(rcx, rcx_reg, self.addr_size, left),
            );
            done = left == 0;
        }
        if done {
            arch.set_rip(self.next_rip);
        }
    }
}

/// Emulates a `mov` to or from a debug register at RIP: false if the
/// instruction is not one (or could not be fetched).
pub(crate) fn mov_dr(mem: &GuestMemory, arch: &mut dyn ArchVcpu) -> MovDrResult {
    let Some((bytes, n, mode)) = fetch(mem, arch) else {
        return MovDrResult::NotEmulated;
    };
    let Some(insn) = decode::decode_mov_dr(&bytes[..n], mode) else {
        return MovDrResult::NotEmulated;
    };
    // With CR4.DE set, DR4 and DR5 are reserved rather than DR6 and DR7.
    if matches!(insn.dr, 4 | 5) && arch.sregs().cr4 & cr4::DE != 0 {
        return MovDrResult::Undefined;
    }
    // In 64-bit mode the whole register moves, else its low 32 bits.
    let mask = if mode == Mode::Bits64 {
        u64::MAX
    } else {
        0xffff_ffff
    };
    let done = if insn.to_dr {
        let value = arch.gpr(insn.gpr) & mask;
        arch.set_dr(insn.dr, value)
    } else {
        match arch.get_dr(insn.dr) {
            Some(value) => {
                arch.set_gpr(insn.gpr, value & mask);
                true
            }
            None => false,
        }
    };
    if done {
        arch.skip(u64::from(insn.len));
        MovDrResult::Done
    } else {
        MovDrResult::Fault
    }
}

/// Emulates the control-register instruction at RIP (shadow paging
/// intercepts CR0, CR3 and CR4): `mov` to or from them, CLTS, LMSW and
/// SMSW. A write goes through the architecture's checks
/// (`GuestPaging::write_cr`); `maxphyaddr` is the guest's address width,
/// `cr4_allowed` the CR4 bits its CPUID allows.
pub(crate) fn mov_cr(
    mem: &GuestMemory,
    arch: &mut dyn ArchVcpu,
    maxphyaddr: u32,
    cr4_allowed: u64,
) -> CrResult {
    let Some((bytes, n, mode)) = fetch(mem, arch) else {
        return CrResult::NotEmulated;
    };
    let Some(insn) = decode::decode_cr(&bytes[..n], mode) else {
        return CrResult::NotEmulated;
    };
    let paging = arch.paging();
    // In 64-bit mode the whole register moves, else its low 32 bits.
    let mask = if mode == Mode::Bits64 {
        u64::MAX
    } else {
        0xffff_ffff
    };
    let cs_l = mode == Mode::Bits64;
    let write = |arch: &mut dyn ArchVcpu, cr: u8, value: u64| match paging.write_cr(
        cr,
        value,
        cs_l,
        maxphyaddr,
        cr4_allowed,
    ) {
        Some((next, flush)) => {
            arch.set_paging(next);
            CrResult::Done { flush }
        }
        None => CrResult::Fault,
    };
    let result = match insn.op {
        CrOp::Write {
            cr: cr @ (0 | 3 | 4),
            gpr,
        } => {
            let value = arch.gpr(gpr) & mask;
            write(arch, cr, value)
        }
        // CR8 (VMX intercepts it: the processor's TPR is the host's):
        // bits 63:4 are reserved.
        CrOp::Write { cr: 8, gpr } => {
            let value = arch.gpr(gpr) & mask;
            if value >> 4 != 0 {
                return CrResult::Fault;
            }
            arch.set_cr8(value);
            CrResult::Done { flush: Flush::None }
        }
        CrOp::Read { cr, gpr } => {
            let value = match cr {
                0 => paging.cr0,
                2 => arch.sregs().cr2,
                3 => paging.cr3,
                4 => paging.cr4,
                8 => arch.cr8(),
                _ => return CrResult::NotEmulated,
            };
            arch.set_gpr(gpr, value & mask);
            CrResult::Done { flush: Flush::None }
        }
        CrOp::Clts => write(arch, 0, paging.cr0 & !cr0::TS),
        // LMSW loads PE, MP, EM and TS, and can set PE but not clear it.
        CrOp::Lmsw { gpr } => {
            let value = (paging.cr0 & !0xe) | (arch.gpr(gpr) & 0xf);
            write(arch, 0, value)
        }
        CrOp::Smsw { gpr } => {
            let full = Reg {
                index: gpr,
                high8: false,
            };
            let size = if mode == Mode::Bits64 { 8 } else { 4 };
            let old = arch.gpr(gpr);
            arch.set_gpr(gpr, decode::write_reg(old, full, size, paging.cr0));
            CrResult::Done { flush: Flush::None }
        }
        CrOp::Write { .. } => return CrResult::NotEmulated,
    };
    if let CrResult::Done { .. } = result {
        arch.skip(u64::from(insn.len));
    }
    result
}

/// What `mov_cr` did.
pub(crate) enum CrResult {
    /// Emulated; RIP moved on. `flush`: what goes from the shadow table
    /// (the guest's translations changed, or it flushed its TLB).
    Done {
        /// What to empty.
        flush: Flush,
    },
    /// The value is invalid: a #GP for the guest.
    Fault,
    /// Not an instruction rkvm emulates (CR8, or a memory operand).
    NotEmulated,
}

/// The INVLPG at RIP: its length and the linear address it invalidates,
/// `None` if it is not one.
pub(crate) fn invlpg(mem: &GuestMemory, arch: &dyn ArchVcpu) -> Option<(u8, u64)> {
    let (bytes, n, mode) = fetch(mem, arch)?;
    let insn = decode::decode_invlpg(&bytes[..n], mode)?;
    let next_rip = arch.rip().wrapping_add(u64::from(insn.len));
    let offset = insn.operand.offset(|r| arch.gpr(r), next_rip);
    let long = mode == Mode::Bits64;
    let linear = segment_base(&arch.sregs(), insn.operand.segment, long).wrapping_add(offset);
    // Outside 64-bit mode linear addresses wrap at 4 GiB.
    Some((insn.len, if long { linear } else { linear & 0xffff_ffff }))
}

/// The base of segment `n` (0 = ES, 1 = CS, 2 = SS, 3 = DS, 4 = FS,
/// 5 = GS). In 64-bit mode (`long`) only FS and GS have one.
fn segment_base(s: &uapi::kvm_sregs, n: u8, long: bool) -> u64 {
    let seg = match n {
        0 => &s.es,
        1 => &s.cs,
        2 => &s.ss,
        4 => &s.fs,
        5 => &s.gs,
        _ => &s.ds,
    };
    if long && n < 4 {
        0
    } else {
        seg.base
    }
}

/// The software interrupt instruction at RIP (`Exit::SoftInt`).
pub(crate) enum SoftInt {
    /// INT3 (0xcc) or `int $3` (0xcd 0x03): a breakpoint.
    Breakpoint,
    /// INT n of `len` bytes.
    Int {
        /// The vector.
        vector: u8,
        /// The instruction's length.
        len: u64,
    },
    /// INTO: #OF, past the instruction.
    Overflow,
}

/// The length of the breakpoint instruction at RIP: 1 for INT3 (0xcc),
/// 2 for `int $3` (0xcd 0x03), 0 if there is none (or it could not be
/// fetched): what `KVM_GUESTDBG_INJECT_BP` returns past.
pub(crate) fn breakpoint_len(mem: &GuestMemory, arch: &dyn ArchVcpu) -> u64 {
    let Some((bytes, n, _)) = fetch(mem, arch) else {
        return 0;
    };
    match bytes.get(..n) {
        Some([0xcc, ..]) => 1,
        Some([0xcd, 0x03, ..]) => 2,
        _ => 0,
    }
}

/// Decodes the INT3, INT n or INTO at RIP; `None` if it is none of them
/// (or could not be fetched).
pub(crate) fn soft_int(mem: &GuestMemory, arch: &dyn ArchVcpu) -> Option<SoftInt> {
    let (bytes, n, _) = fetch(mem, arch)?;
    match bytes.get(..n)? {
        [0xcc, ..] | [0xcd, 0x03, ..] => Some(SoftInt::Breakpoint),
        [0xcd, vector, ..] => Some(SoftInt::Int {
            vector: *vector,
            len: 2,
        }),
        [0xce, ..] => Some(SoftInt::Overflow),
        _ => None,
    }
}

/// What `mov_dr` did.
pub(crate) enum MovDrResult {
    /// Emulated; RIP moved on.
    Done,
    /// The access is invalid: a #GP for the guest.
    Fault,
    /// DR4 or DR5 with CR4.DE set: a #UD for the guest.
    Undefined,
    /// Not a `mov` to or from a debug register.
    NotEmulated,
}

/// The instruction at CS:IP that a real-mode guest in virtual-8086 mode
/// faulted on, if it is one rkvm carries out (`decode::decode_v86`).
pub(crate) fn v86_instruction(mem: &GuestMemory, arch: &dyn ArchVcpu) -> Option<V86Insn> {
    let (bytes, n, _) = fetch(mem, arch)?;
    decode::decode_v86(bytes.get(..n)?, arch.gpr(gpr::RDX) as u16)
}

/// What `real_mode_interrupt` did.
pub(crate) enum RealModeDelivery {
    /// The guest's handler runs next.
    Delivered,
    /// No vector table entry for the interrupt, for the #GP that raises,
    /// nor for the double fault after it: a triple fault.
    Shutdown,
    /// The stack or the table is not RAM.
    NotRam,
}

/// Delivers interrupt `vector` to a real-mode guest as the processor
/// would: FLAGS, CS and `return_ip` pushed on its stack, IF, TF and AC
/// cleared, CS:IP loaded from its interrupt vector table. An entry past
/// the IDT limit raises #GP instead, and one for that a double fault.
pub(crate) fn real_mode_interrupt(
    mem: &GuestMemory,
    arch: &mut dyn ArchVcpu,
    vector: u8,
    return_ip: u64,
) -> RealModeDelivery {
    use crate::pure::x86::vector::{
        DF,
        GP, //
    };
    let mut s = arch.sregs();
    let mut regs = arch.regs();
    let Some(vector) = [vector, GP, DF]
        .into_iter()
        .find(|&v| u32::from(v) * 4 + 3 <= u32::from(s.idt.limit))
    else {
        return RealModeDelivery::Shutdown;
    };
    let mut entry = [0u8; 4];
    let entry_addr = s.idt.base.wrapping_add(u64::from(vector) * 4) & 0xffff_ffff;
    if mem.read(GuestPhys(entry_addr), &mut entry).is_err() {
        return RealModeDelivery::NotRam;
    }
    let (stores, sp) = x86::real_mode_frame(
        s.ss.base,
        regs.rsp as u16,
        regs.rflags,
        s.cs.selector,
        return_ip,
    );
    for (linear, word) in stores {
        if mem.write(GuestPhys(linear), &word.to_le_bytes()).is_err() {
            return RealModeDelivery::NotRam;
        }
    }
    regs.rsp = (regs.rsp & !0xffff) | u64::from(sp);
    regs.rflags = x86::real_mode_interrupt_flags(regs.rflags);
    regs.rip = u64::from(u16::from_le_bytes([entry[0], entry[1]]));
    s.cs.selector = u16::from_le_bytes([entry[2], entry[3]]);
    s.cs.base = u64::from(s.cs.selector) << 4;
    arch.set_regs(&regs);
    arch.set_sregs(&s);
    // A new instruction stream: no interrupt shadow.
    arch.set_rip(regs.rip);
    RealModeDelivery::Delivered
}

/// LGDT or LIDT (`idt`) in real mode, of the 6 bytes at `operand`: the
/// limit, and a 24-bit base (32-bit with `op32`). False if the operand is
/// not RAM.
pub(crate) fn real_mode_load_table(
    mem: &GuestMemory,
    arch: &mut dyn ArchVcpu,
    operand: &MemOperand,
    idt: bool,
    op32: bool,
    len: u8,
) -> bool {
    let mut s = arch.sregs();
    let next_ip = arch.rip().wrapping_add(u64::from(len));
    let offset = operand.offset(|r| arch.gpr(r), next_ip);
    // Paging is off in real mode: the linear address is the physical one.
    let linear = segment_base(&s, operand.segment, false).wrapping_add(offset) & 0xffff_ffff;
    let mut bytes = [0u8; 6];
    if mem.read(GuestPhys(linear), &mut bytes).is_err() {
        return false;
    }
    let limit = u16::from_le_bytes([bytes[0], bytes[1]]);
    let base = u32::from_le_bytes([bytes[2], bytes[3], bytes[4], bytes[5]])
        & if op32 { u32::MAX } else { 0xff_ffff };
    let table = if idt { &mut s.idt } else { &mut s.gdt };
    table.base = base.into();
    table.limit = limit;
    arch.set_sregs(&s);
    arch.skip(u64::from(len));
    true
}

/// Fetches up to 15 instruction bytes at CS:RIP, from the pages the guest
/// ran them from (`GuestMemory::read_as_guest_sees`).
fn fetch(mem: &GuestMemory, arch: &dyn ArchVcpu) -> Option<([u8; MAX_INSN], usize, Mode)> {
    let s = arch.sregs();
    let rip = arch.rip();
    let mode = Mode::of(s.efer & efer::LMA != 0, s.cs.l != 0, s.cs.db != 0);
    let linear = match mode {
        Mode::Bits64 => rip,
        Mode::Bits32 => s.cs.base.wrapping_add(rip & 0xffff_ffff) & 0xffff_ffff,
        Mode::Bits16 => s.cs.base.wrapping_add(rip & 0xffff) & 0xffff_ffff,
    };
    let paging = Paging::of(s.cr0, s.cr4, s.efer);
    let read_entry = |gpa: u64, size: u8| mem.read_entry(gpa, size);
    let mut buf = [0u8; MAX_INSN];
    let mut n = 0usize;
    while n < MAX_INSN {
        let Some(gpa) = walk::translate(paging, s.cr3, linear.wrapping_add(n as u64), read_entry)
        else {
            break;
        };
        let chunk = (MAX_INSN - n).min(4096 - (gpa & 0xfff) as usize);
        let Some(dest) = buf.get_mut(n..n + chunk) else {
            break;
        };
        if mem.read_as_guest_sees(GuestPhys(gpa), dest).is_err() {
            break;
        }
        n += chunk;
    }
    (n > 0).then_some((buf, n, mode))
}

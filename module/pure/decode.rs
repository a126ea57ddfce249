// SPDX-License-Identifier: GPL-2.0

//! Decoding the instructions a guest uses to touch MMIO.
//!
//! When a guest access hits a guest physical address with no memory slot (or
//! writes a read-only slot), the hardware reports the address but, on CPUs
//! without decode assists (QEMU's SVM), not the instruction. rkvm fetches the
//! instruction bytes itself and decodes them here. Only the data movement
//! forms that device drivers use are handled: `mov` in all its register,
//! immediate and moffs forms, `movzx`, `movsx`, `movsxd` and a single `stos`.
//! The address comes from the fault, so the decoder only needs the access
//! size and direction, the register or immediate involved, and the length of
//! the instruction.

/// Code segment size: selects default operand and address sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real mode, or a 16-bit code segment.
    Bits16,
    /// A 32-bit code segment.
    Bits32,
    /// 64-bit mode (CS.L in long mode).
    Bits64,
}

/// A general-purpose register operand, by its encoding (0 = rAX ... 15 = r15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reg {
    /// Register number in x86 encoding order.
    pub index: u8,
    /// AH, CH, DH or BH: bits 15:8 of register `index` (0-3).
    pub high8: bool,
}

/// How a loaded value reaches the destination register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extend {
    /// `mov`: the access size is the register size.
    None,
    /// `movzx`.
    Zero,
    /// `movsx`, `movsxd`.
    Sign,
}

/// What an MMIO instruction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Store a register.
    StoreReg(Reg),
    /// Store an immediate (already sign-extended to the access size).
    StoreImm(u64),
    /// Load into a register of `dst_size` bytes.
    Load {
        /// Destination.
        dst: Reg,
        /// Destination size in bytes (1, 2, 4, 8).
        dst_size: u8,
        /// Extension from the access size to `dst_size`.
        extend: Extend,
    },
    /// `stos`: store rAX to ES:rDI, then step rDI by the size (DF = 0) or
    /// back (DF = 1). `addr_size` is the size of rDI in bytes.
    Stos {
        /// Address size in bytes (2, 4, 8).
        addr_size: u8,
    },
}

/// A decoded MMIO instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Length in bytes.
    pub len: u8,
    /// Size of the memory access in bytes.
    pub size: u8,
    /// The operation.
    pub op: Op,
}

/// Why an instruction is not emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// The bytes ended before the instruction did.
    Truncated,
    /// Not one of the forms above (or a register operand where memory is needed).
    Opcode,
    /// A REP prefix on a string instruction (count > 1 is not emulated).
    Rep,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn next(&mut self) -> Result<u8, Unsupported> {
        let b = *self.bytes.get(self.pos).ok_or(Unsupported::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn imm(&mut self, size: u8) -> Result<u64, Unsupported> {
        let mut v = 0u64;
        for i in 0..size {
            v |= u64::from(self.next()?) << (8 * i);
        }
        Ok(v)
    }

    fn skip(&mut self, n: usize) -> Result<(), Unsupported> {
        for _ in 0..n {
            self.next()?;
        }
        Ok(())
    }
}

/// Sign-extends the low `size` bytes of `v` to 64 bits.
pub fn sign_extend(v: u64, size: u8) -> u64 {
    match size {
        1..=7 => {
            let shift = 64 - 8 * u32::from(size);
            (((v << shift) as i64) >> shift) as u64
        }
        0 => 0,
        _ => v,
    }
}

/// The value of register operand `reg` of `size` bytes, given the whole
/// register's value `full`.
pub fn read_reg(full: u64, reg: Reg, size: u8) -> u64 {
    if reg.high8 {
        return (full >> 8) & 0xff;
    }
    match size {
        1 => full & 0xff,
        2 => full & 0xffff,
        4 => full & 0xffff_ffff,
        _ => full,
    }
}

/// Writes `value` to register operand `reg` of `size` bytes, as hardware
/// does: 8- and 16-bit writes keep the rest of the register, a 32-bit write
/// clears bits 63:32. Returns the whole register's new value.
pub fn write_reg(full: u64, reg: Reg, size: u8, value: u64) -> u64 {
    if reg.high8 {
        return (full & !0xff00) | ((value & 0xff) << 8);
    }
    match size {
        1 => (full & !0xff) | (value & 0xff),
        2 => (full & !0xffff) | (value & 0xffff),
        4 => value & 0xffff_ffff,
        _ => value,
    }
}

/// Decodes the instruction at the start of `bytes` (up to 15 bytes).
pub fn decode(bytes: &[u8], mode: Mode) -> Result<Insn, Unsupported> {
    let mut c = Cursor { bytes, pos: 0 };
    let mut opsize_prefix = false;
    let mut addrsize_prefix = false;
    let mut rep = false;
    let mut rex = 0u8;
    let mut op = c.next()?;
    loop {
        match op {
            0x66 => opsize_prefix = true,
            0x67 => addrsize_prefix = true,
            0xf2 | 0xf3 => rep = true,
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0xf0 => {}
            _ => break,
        }
        op = c.next()?;
    }
    if mode == Mode::Bits64 && op & 0xf0 == 0x40 {
        rex = op;
        op = c.next()?;
    }
    let rex_w = rex & 8 != 0;
    let operand_size: u8 = match (mode, rex_w, opsize_prefix) {
        (Mode::Bits64, true, _) => 8,
        (Mode::Bits16, _, false) | (Mode::Bits32 | Mode::Bits64, _, true) => 2,
        _ => 4,
    };
    let addr_size: u8 = match (mode, addrsize_prefix) {
        (Mode::Bits16, false) | (Mode::Bits32, true) => 2,
        (Mode::Bits32, false) | (Mode::Bits64, true) => 4,
        (Mode::Bits64, false) => 8,
        (Mode::Bits16, true) => 4,
    };
    // An 8-bit register: with any REX prefix, 4-7 are SPL..DIL, else AH..BH.
    let reg8 = |index: u8| {
        if rex == 0 && (4..8).contains(&index) {
            Reg { index: index - 4, high8: true }
        } else {
            Reg { index, high8: false }
        }
    };
    let full = |index: u8| Reg { index, high8: false };

    let (size, op) = match op {
        0x88 | 0x89 | 0x8a | 0x8b | 0xc6 | 0xc7 | 0x63 => {
            let reg = modrm(&mut c, rex, addr_size)?;
            match op {
                0x88 => (1, Op::StoreReg(reg8(reg))),
                0x89 => (operand_size, Op::StoreReg(full(reg))),
                0x8a => (1, Op::Load { dst: reg8(reg), dst_size: 1, extend: Extend::None }),
                0x8b => (operand_size, Op::Load { dst: full(reg), dst_size: operand_size, extend: Extend::None }),
                0x63 if mode == Mode::Bits64 => {
                    let size = operand_size.min(4);
                    (size, Op::Load { dst: full(reg), dst_size: operand_size, extend: Extend::Sign })
                }
                0xc6 if reg & 7 == 0 => (1, Op::StoreImm(c.imm(1)?)),
                0xc7 if reg & 7 == 0 => {
                    let imm = c.imm(operand_size.min(4))?;
                    (operand_size, Op::StoreImm(sign_extend(imm, operand_size.min(4))))
                }
                _ => return Err(Unsupported::Opcode),
            }
        }
        0x0f => {
            let op2 = c.next()?;
            let size = match op2 {
                0xb6 | 0xbe => 1,
                0xb7 | 0xbf => 2,
                _ => return Err(Unsupported::Opcode),
            };
            let reg = modrm(&mut c, rex, addr_size)?;
            let extend = if op2 & 8 != 0 { Extend::Sign } else { Extend::Zero };
            (size, Op::Load { dst: full(reg), dst_size: operand_size, extend })
        }
        0xa0..=0xa3 => {
            c.skip(usize::from(addr_size))?;
            let size = if op & 1 == 0 { 1 } else { operand_size };
            let rax = full(0);
            if op & 2 == 0 {
                (size, Op::Load { dst: rax, dst_size: size, extend: Extend::None })
            } else {
                (size, Op::StoreReg(rax))
            }
        }
        0xaa | 0xab => {
            if rep {
                return Err(Unsupported::Rep);
            }
            (if op == 0xaa { 1 } else { operand_size }, Op::Stos { addr_size })
        }
        _ => return Err(Unsupported::Opcode),
    };
    Ok(Insn { len: c.pos as u8, size, op })
}

/// A `mov` between a general-purpose register and a debug register
/// (`0F 21 /r`: DRn to GPR; `0F 23 /r`: GPR to DRn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovDr {
    /// Length in bytes.
    pub len: u8,
    /// The debug register (0-7).
    pub dr: u8,
    /// The general-purpose register (x86 encoding order, 0-15).
    pub gpr: u8,
    /// Towards the debug register.
    pub to_dr: bool,
}

/// Decodes a `mov` to or from a debug register (prefixes and REX allowed).
pub fn decode_mov_dr(bytes: &[u8], mode: Mode) -> Option<MovDr> {
    let mut i = 0;
    let mut rex = 0u8;
    loop {
        let b = *bytes.get(i)?;
        match b {
            0x66 | 0x67 | 0xf2 | 0xf3 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => i += 1,
            0x40..=0x4f if mode == Mode::Bits64 => {
                rex = b;
                i += 1;
            }
            _ => break,
        }
    }
    if *bytes.get(i)? != 0x0f {
        return None;
    }
    let to_dr = match *bytes.get(i + 1)? {
        0x21 => false,
        0x23 => true,
        _ => return None,
    };
    let modrm = *bytes.get(i + 2)?;
    // The operand is always a register, whatever the mod bits say; REX.R
    // would name DR8-DR15, which do not exist.
    if rex & 4 != 0 {
        return None;
    }
    let gpr = (modrm & 7) | if rex & 1 != 0 { 8 } else { 0 };
    Some(MovDr { len: (i + 3) as u8, dr: (modrm >> 3) & 7, gpr, to_dr })
}

/// Consumes a ModRM byte (with SIB and displacement) that must name memory;
/// returns the reg field (extended by REX.R).
fn modrm(c: &mut Cursor<'_>, rex: u8, addr_size: u8) -> Result<u8, Unsupported> {
    let m = c.next()?;
    let (md, reg, rm) = (m >> 6, (m >> 3) & 7, m & 7);
    if md == 3 {
        return Err(Unsupported::Opcode); // a register operand: not a memory access
    }
    let reg = reg | if rex & 4 != 0 { 8 } else { 0 };
    if addr_size == 2 {
        let disp = match (md, rm) {
            (0, 6) => 2,
            (0, _) => 0,
            (1, _) => 1,
            _ => 2,
        };
        c.skip(disp)?;
        return Ok(reg);
    }
    let mut disp = match md {
        0 => 0,
        1 => 1,
        _ => 4,
    };
    if rm == 4 {
        let sib = c.next()?;
        if md == 0 && sib & 7 == 5 {
            disp = 4;
        }
    } else if md == 0 && rm == 5 {
        disp = 4; // disp32, or RIP-relative in 64-bit mode
    }
    c.skip(disp)?;
    Ok(reg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d64(bytes: &[u8]) -> Insn {
        decode(bytes, Mode::Bits64).unwrap()
    }

    const RAX: Reg = Reg { index: 0, high8: false };

    #[test]
    fn mov_store_forms() {
        // mov %eax, (%rbx)
        assert_eq!(d64(&[0x89, 0x03]), Insn { len: 2, size: 4, op: Op::StoreReg(RAX) });
        // mov %rcx, 0x10(%rdx)  (REX.W)
        assert_eq!(d64(&[0x48, 0x89, 0x4a, 0x10]).size, 8);
        assert_eq!(d64(&[0x48, 0x89, 0x4a, 0x10]).len, 4);
        // mov %r9w, (%rax)  (66 REX.R)
        let i = d64(&[0x66, 0x44, 0x89, 0x08]);
        assert_eq!((i.len, i.size, i.op), (4, 2, Op::StoreReg(Reg { index: 9, high8: false })));
        // mov %ah, (%rbx) vs mov %spl, (%rbx)
        assert_eq!(d64(&[0x88, 0x23]).op, Op::StoreReg(Reg { index: 0, high8: true }));
        assert_eq!(d64(&[0x40, 0x88, 0x23]).op, Op::StoreReg(Reg { index: 4, high8: false }));
        // movl $0x12345678, 0xfee000b0 (absolute disp32 via SIB)
        let i = d64(&[0xc7, 0x04, 0x25, 0xb0, 0x00, 0xe0, 0xfe, 0x78, 0x56, 0x34, 0x12]);
        assert_eq!((i.len, i.size, i.op), (11, 4, Op::StoreImm(0x1234_5678)));
        // movq $-1, (%rax): imm32 sign-extended
        assert_eq!(d64(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff]).op, Op::StoreImm(u64::MAX));
        // movb $0x99, 0x2000 in real mode (16-bit disp)
        let i = decode(&[0xc6, 0x06, 0x00, 0x20, 0x99], Mode::Bits16).unwrap();
        assert_eq!((i.len, i.size, i.op), (5, 1, Op::StoreImm(0x99)));
    }

    #[test]
    fn mov_load_forms() {
        // mov 0x8(%rip), %edx
        let i = d64(&[0x8b, 0x15, 0x08, 0, 0, 0]);
        assert_eq!((i.len, i.size), (6, 4));
        assert_eq!(i.op, Op::Load { dst: Reg { index: 2, high8: false }, dst_size: 4, extend: Extend::None });
        // movzbl (%rsi), %eax ; movswq (%rsi), %rax ; movslq (%rsi), %rax
        assert_eq!(d64(&[0x0f, 0xb6, 0x06]).op, Op::Load { dst: RAX, dst_size: 4, extend: Extend::Zero });
        let i = d64(&[0x48, 0x0f, 0xbf, 0x06]);
        assert_eq!((i.size, i.op), (2, Op::Load { dst: RAX, dst_size: 8, extend: Extend::Sign }));
        let i = d64(&[0x48, 0x63, 0x06]);
        assert_eq!((i.size, i.op), (4, Op::Load { dst: RAX, dst_size: 8, extend: Extend::Sign }));
        // mov 0x1000, %al in 32-bit mode (moffs)
        let i = decode(&[0xa0, 0x00, 0x10, 0x00, 0x00], Mode::Bits32).unwrap();
        assert_eq!((i.len, i.size), (5, 1));
        // mov %ax, moffs16 in real mode
        let i = decode(&[0xa3, 0x00, 0x20], Mode::Bits16).unwrap();
        assert_eq!((i.len, i.size, i.op), (3, 2, Op::StoreReg(RAX)));
        // 32-bit: mov 0x4(%esp,%ecx,4), %ebx with disp8
        let i = decode(&[0x8b, 0x5c, 0x8c, 0x04], Mode::Bits32).unwrap();
        assert_eq!((i.len, i.size), (4, 4));
    }

    #[test]
    fn stos_and_refusals() {
        assert_eq!(d64(&[0xab]), Insn { len: 1, size: 4, op: Op::Stos { addr_size: 8 } });
        assert_eq!(decode(&[0xaa], Mode::Bits16).unwrap().op, Op::Stos { addr_size: 2 });
        assert_eq!(decode(&[0xf3, 0xab], Mode::Bits64), Err(Unsupported::Rep));
        assert_eq!(decode(&[0x89, 0xc3], Mode::Bits64), Err(Unsupported::Opcode)); // register form
        assert_eq!(decode(&[0x01, 0x03], Mode::Bits64), Err(Unsupported::Opcode)); // add
        assert_eq!(decode(&[0xc7, 0x00, 0x01], Mode::Bits64), Err(Unsupported::Truncated));
        assert_eq!(decode(&[], Mode::Bits64), Err(Unsupported::Truncated));
        assert_eq!(decode(&[0xc7, 0x08, 0, 0, 0, 0], Mode::Bits64), Err(Unsupported::Opcode)); // /1
    }

    #[test]
    fn mov_to_and_from_debug_registers() {
        // mov %rax, %db7 ; mov %db6, %rcx ; mov %r9, %db0 (REX.B)
        assert_eq!(d64dr(&[0x0f, 0x23, 0xf8]), Some(MovDr { len: 3, dr: 7, gpr: 0, to_dr: true }));
        assert_eq!(d64dr(&[0x0f, 0x21, 0xf1]), Some(MovDr { len: 3, dr: 6, gpr: 1, to_dr: false }));
        assert_eq!(d64dr(&[0x41, 0x0f, 0x23, 0xc1]), Some(MovDr { len: 4, dr: 0, gpr: 9, to_dr: true }));
        assert_eq!(d64dr(&[0x44, 0x0f, 0x23, 0xc1]), None, "DR8 does not exist");
        assert_eq!(d64dr(&[0x0f, 0x20, 0xc0]), None, "mov from CR0 is not this");
        assert_eq!(d64dr(&[0x0f]), None);
    }

    fn d64dr(bytes: &[u8]) -> Option<MovDr> {
        decode_mov_dr(bytes, Mode::Bits64)
    }

    #[test]
    fn register_writes_follow_hardware() {
        let ah = Reg { index: 0, high8: true };
        assert_eq!(write_reg(u64::MAX, RAX, 1, 0x5a), 0xffff_ffff_ffff_ff5a);
        assert_eq!(write_reg(u64::MAX, ah, 1, 0x5a), 0xffff_ffff_ffff_5aff);
        assert_eq!(write_reg(u64::MAX, RAX, 2, 0x1234), 0xffff_ffff_ffff_1234);
        assert_eq!(write_reg(u64::MAX, RAX, 4, 0x1234_5678), 0x1234_5678);
        assert_eq!(write_reg(0, RAX, 8, u64::MAX), u64::MAX);
        assert_eq!(read_reg(0x1122_3344_5566_7788, ah, 1), 0x77);
        assert_eq!(read_reg(0x1122_3344_5566_7788, RAX, 2), 0x7788);
        assert_eq!(read_reg(0x1122_3344_5566_7788, RAX, 4), 0x5566_7788);
    }

    #[test]
    fn extension() {
        assert_eq!(sign_extend(0x80, 1), 0xffff_ffff_ffff_ff80);
        assert_eq!(sign_extend(0x7fff, 2), 0x7fff);
        assert_eq!(sign_extend(0x8000_0000, 4), 0xffff_ffff_8000_0000);
        assert_eq!(sign_extend(5, 8), 5);
    }
}

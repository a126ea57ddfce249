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

impl Mode {
    /// The mode of code running with EFER.LMA `long` and a code segment
    /// with L `cs_l` and D `cs_db`.
    pub fn of(long: bool, cs_l: bool, cs_db: bool) -> Mode {
        if long && cs_l {
            Mode::Bits64
        } else if cs_db {
            Mode::Bits32
        } else {
            Mode::Bits16
        }
    }

    /// The default address size, in bytes.
    pub fn address_bytes(self) -> u8 {
        match self {
            Mode::Bits16 => 2,
            Mode::Bits32 => 4,
            Mode::Bits64 => 8,
        }
    }
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
            Reg {
                index: index - 4,
                high8: true,
            }
        } else {
            Reg {
                index,
                high8: false,
            }
        }
    };
    let full = |index: u8| Reg {
        index,
        high8: false,
    };

    let (size, op) = match op {
        0x88 | 0x89 | 0x8a | 0x8b | 0xc6 | 0xc7 | 0x63 => {
            let reg = modrm(&mut c, rex, addr_size)?;
            match op {
                0x88 => (1, Op::StoreReg(reg8(reg))),
                0x89 => (operand_size, Op::StoreReg(full(reg))),
                0x8a => (
                    1,
                    Op::Load {
                        dst: reg8(reg),
                        dst_size: 1,
                        extend: Extend::None,
                    },
                ),
                0x8b => (
                    operand_size,
                    Op::Load {
                        dst: full(reg),
                        dst_size: operand_size,
                        extend: Extend::None,
                    },
                ),
                0x63 if mode == Mode::Bits64 => {
                    let size = operand_size.min(4);
                    (
                        size,
                        Op::Load {
                            dst: full(reg),
                            dst_size: operand_size,
                            extend: Extend::Sign,
                        },
                    )
                }
                0xc6 if reg & 7 == 0 => (1, Op::StoreImm(c.imm(1)?)),
                0xc7 if reg & 7 == 0 => {
                    let imm = c.imm(operand_size.min(4))?;
                    (
                        operand_size,
                        Op::StoreImm(sign_extend(imm, operand_size.min(4))),
                    )
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
            let extend = if op2 & 8 != 0 {
                Extend::Sign
            } else {
                Extend::Zero
            };
            (
                size,
                Op::Load {
                    dst: full(reg),
                    dst_size: operand_size,
                    extend,
                },
            )
        }
        0xa0..=0xa3 => {
            c.skip(usize::from(addr_size))?;
            let size = if op & 1 == 0 { 1 } else { operand_size };
            let rax = full(0);
            if op & 2 == 0 {
                (
                    size,
                    Op::Load {
                        dst: rax,
                        dst_size: size,
                        extend: Extend::None,
                    },
                )
            } else {
                (size, Op::StoreReg(rax))
            }
        }
        0xaa | 0xab => {
            if rep {
                return Err(Unsupported::Rep);
            }
            (
                if op == 0xaa { 1 } else { operand_size },
                Op::Stos { addr_size },
            )
        }
        _ => return Err(Unsupported::Opcode),
    };
    Ok(Insn {
        len: c.pos as u8,
        size,
        op,
    })
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

/// Skips the legacy prefixes and a REX prefix (64-bit mode) of an
/// instruction: the index of its opcode, the REX byte (0 if none), and
/// whether a LOCK prefix and an address-size prefix were seen.
fn prefixes(bytes: &[u8], mode: Mode) -> Option<(usize, u8, bool, bool)> {
    let (mut i, mut rex, mut lock, mut addr) = (0, 0u8, false, false);
    loop {
        let b = *bytes.get(i)?;
        match b {
            0xf0 => lock = true,
            0x67 => addr = true,
            0x66 | 0xf2 | 0xf3 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            0x40..=0x4f if mode == Mode::Bits64 => rex = b,
            _ => return Some((i, rex, lock, addr)),
        }
        // A REX prefix counts only right before the opcode.
        if !(0x40..=0x4f).contains(&b) || mode != Mode::Bits64 {
            rex = 0;
        }
        i += 1;
    }
}

/// Decodes a `mov` to or from a debug register (prefixes and REX allowed).
pub fn decode_mov_dr(bytes: &[u8], mode: Mode) -> Option<MovDr> {
    let (i, rex, _, _) = prefixes(bytes, mode)?;
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
    Some(MovDr {
        len: (i + 3) as u8,
        dr: (modrm >> 3) & 7,
        gpr,
        to_dr,
    })
}

/// An instruction that reads or writes a control register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrOp {
    /// `mov crN, reg` (`0F 22 /r`).
    Write {
        /// The control register.
        cr: u8,
        /// The source (x86 encoding order).
        gpr: u8,
    },
    /// `mov reg, crN` (`0F 20 /r`).
    Read {
        /// The control register.
        cr: u8,
        /// The destination.
        gpr: u8,
    },
    /// `clts`: clears CR0.TS.
    Clts,
    /// `lmsw reg`: loads CR0 bits 3:0 (PE cannot be cleared this way).
    Lmsw {
        /// The source register.
        gpr: u8,
    },
    /// `smsw reg`: CR0's low bits into a register.
    Smsw {
        /// The destination register.
        gpr: u8,
    },
}

/// A decoded control-register instruction and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrInsn {
    /// Length in bytes.
    pub len: u8,
    /// What it does.
    pub op: CrOp,
}

/// Decodes an instruction that accesses CR0-CR15 through a register (the
/// memory forms of LMSW and SMSW are not decoded). A LOCK prefix on `mov`
/// with CR0 names CR8 (AMD's alternative encoding).
pub fn decode_cr(bytes: &[u8], mode: Mode) -> Option<CrInsn> {
    let (i, rex, lock, _) = prefixes(bytes, mode)?;
    if *bytes.get(i)? != 0x0f {
        return None;
    }
    let op2 = *bytes.get(i + 1)?;
    if op2 == 0x06 {
        return Some(CrInsn {
            len: (i + 2) as u8,
            op: CrOp::Clts,
        });
    }
    let modrm = *bytes.get(i + 2)?;
    let len = (i + 3) as u8;
    let rm = (modrm & 7) | if rex & 1 != 0 { 8 } else { 0 };
    let reg = (modrm >> 3) & 7;
    let op = match op2 {
        0x20 | 0x22 => {
            let cr = reg | if rex & 4 != 0 || lock { 8 } else { 0 };
            if op2 == 0x22 {
                CrOp::Write { cr, gpr: rm }
            } else {
                CrOp::Read { cr, gpr: rm }
            }
        }
        0x01 if modrm >> 6 == 3 && reg == 6 => CrOp::Lmsw { gpr: rm },
        0x01 if modrm >> 6 == 3 && reg == 4 => CrOp::Smsw { gpr: rm },
        _ => return None,
    };
    Some(CrInsn { len, op })
}

/// A memory operand: `segment:[base + index * scale + disp]`, computed in
/// `addr_size` bytes (RIP-relative: from the next instruction's RIP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOperand {
    /// Base register (x86 encoding order), if any.
    pub base: Option<u8>,
    /// Index register, if any.
    pub index: Option<u8>,
    /// 1, 2, 4 or 8.
    pub scale: u8,
    /// Displacement, sign-extended.
    pub disp: i64,
    /// Relative to the next instruction (64-bit mode, `[rip + disp32]`).
    pub rip_relative: bool,
    /// Segment (0 = ES, 1 = CS, 2 = SS, 3 = DS, 4 = FS, 5 = GS): an
    /// override, or SS for rBP/rSP-based forms, else DS.
    pub segment: u8,
    /// Address size in bytes (2, 4, 8).
    pub addr_size: u8,
}

impl MemOperand {
    /// The offset within the segment, given the registers and the next
    /// instruction's RIP.
    pub fn offset(&self, gpr: impl Fn(u8) -> u64, next_rip: u64) -> u64 {
        let mut ea = self.disp as u64;
        if self.rip_relative {
            ea = ea.wrapping_add(next_rip);
        }
        if let Some(b) = self.base {
            ea = ea.wrapping_add(gpr(b));
        }
        if let Some(i) = self.index {
            ea = ea.wrapping_add(gpr(i).wrapping_mul(u64::from(self.scale)));
        }
        match self.addr_size {
            2 => ea & 0xffff,
            4 => ea & 0xffff_ffff,
            _ => ea,
        }
    }
}

/// An `invlpg m` (`0F 01 /7` with a memory operand).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invlpg {
    /// Length in bytes.
    pub len: u8,
    /// The address operand.
    pub operand: MemOperand,
}

/// Decodes an INVLPG.
pub fn decode_invlpg(bytes: &[u8], mode: Mode) -> Option<Invlpg> {
    let mut segment = None;
    let mut i = 0;
    let mut rex = 0u8;
    let mut addr_prefix = false;
    loop {
        let b = *bytes.get(i)?;
        match b {
            0x26 | 0x2e | 0x36 | 0x3e => segment = Some((b >> 3) & 3),
            0x64 => segment = Some(4),
            0x65 => segment = Some(5),
            0x67 => addr_prefix = true,
            0x66 | 0xf0 | 0xf2 | 0xf3 => {}
            0x40..=0x4f if mode == Mode::Bits64 => {
                rex = b;
                i += 1;
                break;
            }
            _ => break,
        }
        i += 1;
    }
    if bytes.get(i..i + 2)? != [0x0f, 0x01] {
        return None;
    }
    let addr_size = match (mode, addr_prefix) {
        (Mode::Bits16, false) | (Mode::Bits32, true) => 2,
        (Mode::Bits32, false) | (Mode::Bits64, true) | (Mode::Bits16, true) => 4,
        (Mode::Bits64, false) => 8,
    };
    let mut c = Cursor { bytes, pos: i + 2 };
    let (reg, mut operand) = mem_operand(&mut c, rex, addr_size, mode).ok()?;
    if reg & 7 != 7 {
        return None;
    }
    if let Some(seg) = segment {
        operand.segment = seg;
    }
    Some(Invlpg {
        len: c.pos as u8,
        operand,
    })
}

/// Decodes a ModRM memory operand (with SIB and displacement): the reg
/// field (extended by REX.R) and the operand. A register operand is refused.
fn mem_operand(
    c: &mut Cursor<'_>,
    rex: u8,
    addr_size: u8,
    mode: Mode,
) -> Result<(u8, MemOperand), Unsupported> {
    const SS: u8 = 2;
    const DS: u8 = 3;
    let m = c.next()?;
    let (md, reg, rm) = (m >> 6, (m >> 3) & 7, m & 7);
    if md == 3 {
        return Err(Unsupported::Opcode);
    }
    let reg = reg | if rex & 4 != 0 { 8 } else { 0 };
    let mut op = MemOperand {
        base: None,
        index: None,
        scale: 1,
        disp: 0,
        rip_relative: false,
        segment: DS,
        addr_size,
    };
    let disp = |c: &mut Cursor<'_>, size: u8| -> Result<i64, Unsupported> {
        Ok(sign_extend(c.imm(size)?, size) as i64)
    };
    if addr_size == 2 {
        // BX+SI, BX+DI, BP+SI, BP+DI, SI, DI, BP (or disp16), BX.
        const BX: u8 = 3;
        const BP: u8 = 5;
        const SI: u8 = 6;
        const DI: u8 = 7;
        let (base, index) = match rm {
            0 => (Some(BX), Some(SI)),
            1 => (Some(BX), Some(DI)),
            2 => (Some(BP), Some(SI)),
            3 => (Some(BP), Some(DI)),
            4 => (Some(SI), None),
            5 => (Some(DI), None),
            6 if md == 0 => (None, None),
            6 => (Some(BP), None),
            _ => (Some(BX), None),
        };
        op.base = base;
        op.index = index;
        if base == Some(BP) {
            op.segment = SS;
        }
        op.disp = match (md, rm) {
            (0, 6) | (2, _) => disp(c, 2)?,
            (1, _) => disp(c, 1)?,
            _ => 0,
        };
        return Ok((reg, op));
    }
    let rex_b = if rex & 1 != 0 { 8 } else { 0 };
    let mut no_base = false;
    if rm == 4 {
        let sib = c.next()?;
        let (scale, index, base) = (
            sib >> 6,
            ((sib >> 3) & 7) | if rex & 2 != 0 { 8 } else { 0 },
            sib & 7,
        );
        op.scale = 1 << scale;
        op.index = (index != 4).then_some(index);
        if md == 0 && base == 5 {
            no_base = true;
        } else {
            op.base = Some(base | rex_b);
        }
    } else if md == 0 && rm == 5 {
        no_base = true;
        op.rip_relative = mode == Mode::Bits64;
    } else {
        op.base = Some(rm | rex_b);
    }
    if matches!(op.base, Some(4 | 5)) {
        op.segment = SS; // rSP and rBP (not r12, r13) address the stack
    }
    op.disp = match md {
        1 => disp(c, 1)?,
        2 => disp(c, 4)?,
        _ if no_base => disp(c, 4)?,
        _ => 0,
    };
    Ok((reg, op))
}

/// Consumes a ModRM byte (with SIB and displacement) that must name memory;
/// returns the reg field (extended by REX.R).
fn modrm(c: &mut Cursor<'_>, rex: u8, addr_size: u8) -> Result<u8, Unsupported> {
    mem_operand(c, rex, addr_size, Mode::Bits64).map(|(reg, _)| reg)
}

/// What a real-mode guest's instruction that faulted in virtual-8086 mode
/// asks for. On VMX without unrestricted guest (shadow paging) real mode
/// runs in virtual-8086 mode at CPL 3, where these raise #GP instead of
/// running: rkvm does their work (see `vmx/mod.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V86Op {
    /// HLT.
    Hlt,
    /// IN, OUT, INS or OUTS.
    Io(PortIo),
    /// INT n, INT3, INTO or INT1: a software interrupt through the
    /// real-mode interrupt vector table.
    Int(u8),
    /// LGDT or LIDT (`idt`) of a memory operand; `op32`: a 32-bit operand
    /// size (the whole base loads, else its low 24 bits).
    LoadTable {
        /// LIDT.
        idt: bool,
        /// The 6-byte operand.
        operand: MemOperand,
        /// Operand-size prefix.
        op32: bool,
    },
    /// RDMSR or WRMSR (`write`).
    Msr {
        /// WRMSR.
        write: bool,
    },
    /// A control-register instruction (`decode_cr` has the rest).
    Cr,
    /// A `mov` to or from a debug register (`decode_mov_dr`).
    Dr,
    /// INVLPG (`decode_invlpg`).
    Invlpg,
    /// WBINVD or INVD: nothing to do for a guest.
    Nop,
}

/// A port I/O instruction: what an I/O exit reports of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortIo {
    /// The port.
    pub port: u16,
    /// IN or INS.
    pub input: bool,
    /// Bytes per transfer: 1, 2 or 4.
    pub size: u8,
    /// INS or OUTS.
    pub string: bool,
    /// A REP prefix (string forms).
    pub rep: bool,
    /// Address size in bytes of a string form (2, 4, 8).
    pub addr_size: u8,
    /// OUTS's source segment (0 = ES ... 5 = GS; INS always uses ES).
    pub segment: u8,
}

/// A decoded [`V86Op`] and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V86Insn {
    /// Length in bytes.
    pub len: u8,
    /// What it asks for.
    pub op: V86Op,
}

/// Decodes the 16-bit instruction a real-mode guest faulted on in
/// virtual-8086 mode (`dx`: DX, the port of the forms without one);
/// `None` for any other (its #GP is the guest's).
pub fn decode_v86(bytes: &[u8], dx: u16) -> Option<V86Insn> {
    let (mut op32, mut addr32, mut rep, mut segment) = (false, false, false, None);
    let mut i = 0;
    let opcode = loop {
        let b = *bytes.get(i)?;
        i += 1;
        match b {
            0x66 => op32 = true,
            0x67 => addr32 = true,
            0xf2 | 0xf3 => rep = true,
            0xf0 => {}
            0x26 | 0x2e | 0x36 | 0x3e => segment = Some((b >> 3) & 3),
            0x64 => segment = Some(4),
            0x65 => segment = Some(5),
            _ => break b,
        }
    };
    let wide = if op32 { 4 } else { 2 };
    let io = |port: Option<u8>, input, size, string| {
        V86Op::Io(PortIo {
            port: port.map_or(dx, u16::from),
            input,
            size,
            string,
            rep: rep && string,
            addr_size: if addr32 { 4 } else { 2 },
            segment: segment.unwrap_or(3),
        })
    };
    let (len, op) = match opcode {
        0xf4 => (i, V86Op::Hlt),
        0xe4..=0xe7 => {
            let port = *bytes.get(i)?;
            let size = if opcode & 1 == 0 { 1 } else { wide };
            (i + 1, io(Some(port), opcode & 2 == 0, size, false))
        }
        0xec..=0xef => (
            i,
            io(
                None,
                opcode & 2 == 0,
                if opcode & 1 == 0 { 1 } else { wide },
                false,
            ),
        ),
        0x6c..=0x6f => (
            i,
            io(
                None,
                opcode & 2 == 0,
                if opcode & 1 == 0 { 1 } else { wide },
                true,
            ),
        ),
        0xcd => (i + 1, V86Op::Int(*bytes.get(i)?)),
        0xcc => (i, V86Op::Int(3)),
        0xce => (i, V86Op::Int(4)),
        0xf1 => (i, V86Op::Int(1)),
        0x0f => {
            let op2 = *bytes.get(i)?;
            match op2 {
                0x06 | 0x20 | 0x22 => {
                    return decode_cr(bytes, Mode::Bits16).map(|c| V86Insn {
                        len: c.len,
                        op: V86Op::Cr,
                    })
                }
                0x21 | 0x23 => {
                    return decode_mov_dr(bytes, Mode::Bits16).map(|d| V86Insn {
                        len: d.len,
                        op: V86Op::Dr,
                    })
                }
                0x08 | 0x09 => (i + 1, V86Op::Nop),
                0x30 => (i + 1, V86Op::Msr { write: true }),
                0x32 => (i + 1, V86Op::Msr { write: false }),
                0x01 => {
                    let reg = (*bytes.get(i + 1)? >> 3) & 7;
                    match reg {
                        2 | 3 => {
                            let mut c = Cursor { bytes, pos: i + 1 };
                            let (_, mut operand) =
                                mem_operand(&mut c, 0, if addr32 { 4 } else { 2 }, Mode::Bits16)
                                    .ok()?;
                            if let Some(seg) = segment {
                                operand.segment = seg;
                            }
                            (
                                c.pos,
                                V86Op::LoadTable {
                                    idt: reg == 3,
                                    operand,
                                    op32,
                                },
                            )
                        }
                        6 => {
                            return decode_cr(bytes, Mode::Bits16).map(|c| V86Insn {
                                len: c.len,
                                op: V86Op::Cr,
                            })
                        }
                        7 => {
                            return decode_invlpg(bytes, Mode::Bits16).map(|d| V86Insn {
                                len: d.len,
                                op: V86Op::Invlpg,
                            })
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        _ => return None,
    };
    Some(V86Insn {
        len: u8::try_from(len).ok()?,
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d64(bytes: &[u8]) -> Insn {
        decode(bytes, Mode::Bits64).unwrap()
    }

    const RAX: Reg = Reg {
        index: 0,
        high8: false,
    };

    #[test]
    fn mov_store_forms() {
        // mov %eax, (%rbx)
        assert_eq!(
            d64(&[0x89, 0x03]),
            Insn {
                len: 2,
                size: 4,
                op: Op::StoreReg(RAX)
            }
        );
        // mov %rcx, 0x10(%rdx)  (REX.W)
        assert_eq!(d64(&[0x48, 0x89, 0x4a, 0x10]).size, 8);
        assert_eq!(d64(&[0x48, 0x89, 0x4a, 0x10]).len, 4);
        // mov %r9w, (%rax)  (66 REX.R)
        let i = d64(&[0x66, 0x44, 0x89, 0x08]);
        assert_eq!(
            (i.len, i.size, i.op),
            (
                4,
                2,
                Op::StoreReg(Reg {
                    index: 9,
                    high8: false
                })
            )
        );
        // mov %ah, (%rbx) vs mov %spl, (%rbx)
        assert_eq!(
            d64(&[0x88, 0x23]).op,
            Op::StoreReg(Reg {
                index: 0,
                high8: true
            })
        );
        assert_eq!(
            d64(&[0x40, 0x88, 0x23]).op,
            Op::StoreReg(Reg {
                index: 4,
                high8: false
            })
        );
        // movl $0x12345678, 0xfee000b0 (absolute disp32 via SIB)
        let i = d64(&[
            0xc7, 0x04, 0x25, 0xb0, 0x00, 0xe0, 0xfe, 0x78, 0x56, 0x34, 0x12,
        ]);
        assert_eq!((i.len, i.size, i.op), (11, 4, Op::StoreImm(0x1234_5678)));
        // movq $-1, (%rax): imm32 sign-extended
        assert_eq!(
            d64(&[0x48, 0xc7, 0x00, 0xff, 0xff, 0xff, 0xff]).op,
            Op::StoreImm(u64::MAX)
        );
        // movb $0x99, 0x2000 in real mode (16-bit disp)
        let i = decode(&[0xc6, 0x06, 0x00, 0x20, 0x99], Mode::Bits16).unwrap();
        assert_eq!((i.len, i.size, i.op), (5, 1, Op::StoreImm(0x99)));
    }

    #[test]
    fn mov_load_forms() {
        // mov 0x8(%rip), %edx
        let i = d64(&[0x8b, 0x15, 0x08, 0, 0, 0]);
        assert_eq!((i.len, i.size), (6, 4));
        assert_eq!(
            i.op,
            Op::Load {
                dst: Reg {
                    index: 2,
                    high8: false
                },
                dst_size: 4,
                extend: Extend::None
            }
        );
        // movzbl (%rsi), %eax ; movswq (%rsi), %rax ; movslq (%rsi), %rax
        assert_eq!(
            d64(&[0x0f, 0xb6, 0x06]).op,
            Op::Load {
                dst: RAX,
                dst_size: 4,
                extend: Extend::Zero
            }
        );
        let i = d64(&[0x48, 0x0f, 0xbf, 0x06]);
        assert_eq!(
            (i.size, i.op),
            (
                2,
                Op::Load {
                    dst: RAX,
                    dst_size: 8,
                    extend: Extend::Sign
                }
            )
        );
        let i = d64(&[0x48, 0x63, 0x06]);
        assert_eq!(
            (i.size, i.op),
            (
                4,
                Op::Load {
                    dst: RAX,
                    dst_size: 8,
                    extend: Extend::Sign
                }
            )
        );
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
        assert_eq!(
            d64(&[0xab]),
            Insn {
                len: 1,
                size: 4,
                op: Op::Stos { addr_size: 8 }
            }
        );
        assert_eq!(
            decode(&[0xaa], Mode::Bits16).unwrap().op,
            Op::Stos { addr_size: 2 }
        );
        assert_eq!(decode(&[0xf3, 0xab], Mode::Bits64), Err(Unsupported::Rep));
        assert_eq!(
            decode(&[0x89, 0xc3], Mode::Bits64),
            Err(Unsupported::Opcode)
        ); // register form
        assert_eq!(
            decode(&[0x01, 0x03], Mode::Bits64),
            Err(Unsupported::Opcode)
        ); // add
        assert_eq!(
            decode(&[0xc7, 0x00, 0x01], Mode::Bits64),
            Err(Unsupported::Truncated)
        );
        assert_eq!(decode(&[], Mode::Bits64), Err(Unsupported::Truncated));
        assert_eq!(
            decode(&[0xc7, 0x08, 0, 0, 0, 0], Mode::Bits64),
            Err(Unsupported::Opcode)
        ); // /1
    }

    #[test]
    fn mov_to_and_from_debug_registers() {
        // mov %rax, %db7 ; mov %db6, %rcx ; mov %r9, %db0 (REX.B)
        assert_eq!(
            d64dr(&[0x0f, 0x23, 0xf8]),
            Some(MovDr {
                len: 3,
                dr: 7,
                gpr: 0,
                to_dr: true
            })
        );
        assert_eq!(
            d64dr(&[0x0f, 0x21, 0xf1]),
            Some(MovDr {
                len: 3,
                dr: 6,
                gpr: 1,
                to_dr: false
            })
        );
        assert_eq!(
            d64dr(&[0x41, 0x0f, 0x23, 0xc1]),
            Some(MovDr {
                len: 4,
                dr: 0,
                gpr: 9,
                to_dr: true
            })
        );
        assert_eq!(d64dr(&[0x44, 0x0f, 0x23, 0xc1]), None, "DR8 does not exist");
        assert_eq!(d64dr(&[0x0f, 0x20, 0xc0]), None, "mov from CR0 is not this");
        assert_eq!(d64dr(&[0x0f]), None);
    }

    #[test]
    fn control_register_instructions() {
        let cr = |b: &[u8], m| decode_cr(b, m);
        // mov %rax, %cr3 ; mov %cr0, %r12 ; mov %r8, %cr8 (REX.R) ; lock mov %eax, %cr0 = CR8
        assert_eq!(
            cr(&[0x0f, 0x22, 0xd8], Mode::Bits64),
            Some(CrInsn {
                len: 3,
                op: CrOp::Write { cr: 3, gpr: 0 }
            })
        );
        assert_eq!(
            cr(&[0x41, 0x0f, 0x20, 0xc4], Mode::Bits64),
            Some(CrInsn {
                len: 4,
                op: CrOp::Read { cr: 0, gpr: 12 }
            })
        );
        assert_eq!(
            cr(&[0x45, 0x0f, 0x22, 0xc0], Mode::Bits64),
            Some(CrInsn {
                len: 4,
                op: CrOp::Write { cr: 8, gpr: 8 }
            })
        );
        assert_eq!(
            cr(&[0xf0, 0x0f, 0x22, 0xc0], Mode::Bits32),
            Some(CrInsn {
                len: 4,
                op: CrOp::Write { cr: 8, gpr: 0 }
            })
        );
        // The mod bits are ignored: 0F 22 18 is still mov %eax, %cr3.
        assert_eq!(
            cr(&[0x0f, 0x22, 0x18], Mode::Bits32),
            Some(CrInsn {
                len: 3,
                op: CrOp::Write { cr: 3, gpr: 0 }
            })
        );
        assert_eq!(
            cr(&[0x0f, 0x06], Mode::Bits16),
            Some(CrInsn {
                len: 2,
                op: CrOp::Clts
            })
        );
        assert_eq!(
            cr(&[0x0f, 0x01, 0xf0], Mode::Bits16),
            Some(CrInsn {
                len: 3,
                op: CrOp::Lmsw { gpr: 0 }
            })
        );
        assert_eq!(
            cr(&[0x0f, 0x01, 0xe3], Mode::Bits32),
            Some(CrInsn {
                len: 3,
                op: CrOp::Smsw { gpr: 3 }
            })
        );
        assert_eq!(
            cr(&[0x0f, 0x01, 0x30], Mode::Bits16),
            None,
            "lmsw from memory is not decoded"
        );
        assert_eq!(cr(&[0x0f, 0x21, 0xc0], Mode::Bits64), None);
        assert_eq!(cr(&[0x0f, 0x22], Mode::Bits64), None);
    }

    #[test]
    fn invlpg_lengths() {
        let regs = |r: u8| {
            [
                0x1000u64, 0x20, 0x300, 0x4000, 0x8000, 0x5_0000, 0x60_0000, 0x700_0000,
            ][usize::from(r & 7)]
        };
        let at = |b: &[u8], m| {
            decode_invlpg(b, m)
                .map(|i| (i.len, i.operand.offset(regs, 0x1_0000), i.operand.segment))
        };
        // invlpg (%rax) ; invlpg 0x10(%rbx,%rcx,4) ; invlpg 0x12345678(%rip) ; invlpg -8(%rbp)
        assert_eq!(at(&[0x0f, 0x01, 0x38], Mode::Bits64), Some((3, 0x1000, 3)));
        assert_eq!(
            at(&[0x0f, 0x01, 0x7c, 0x8b, 0x10], Mode::Bits64),
            Some((5, 0x4000 + 4 * 0x20 + 0x10, 3))
        );
        assert_eq!(
            at(&[0x0f, 0x01, 0x3d, 0x78, 0x56, 0x34, 0x12], Mode::Bits64),
            Some((7, 0x1234_5678 + 0x1_0000, 3))
        );
        assert_eq!(
            at(&[0x0f, 0x01, 0x7d, 0xf8], Mode::Bits64),
            Some((4, 0x5_0000 - 8, 2)),
            "rBP: stack segment"
        );
        // invlpg (%r13) needs mod 01 with disp8 0; REX.B: r13 is not rBP's segment.
        assert_eq!(
            at(&[0x41, 0x0f, 0x01, 0x7d, 0x00], Mode::Bits64),
            Some((5, 0x5_0000, 3))
        );
        // 16-bit: (bx+si), [disp16], fs override, 32-bit address prefix.
        assert_eq!(
            at(&[0x0f, 0x01, 0x38], Mode::Bits16),
            Some((3, (0x4000 + 0x60_0000) & 0xffff, 3))
        );
        assert_eq!(
            at(&[0x0f, 0x01, 0x3e, 0x00, 0x10], Mode::Bits16),
            Some((5, 0x1000, 3)),
            "disp16"
        );
        assert_eq!(
            at(&[0x64, 0x0f, 0x01, 0x3e, 0x00, 0x10], Mode::Bits16)
                .unwrap()
                .2,
            4,
            "FS override"
        );
        assert_eq!(
            at(
                &[0x67, 0x0f, 0x01, 0x3d, 0x44, 0x33, 0x22, 0x11],
                Mode::Bits16
            ),
            Some((8, 0x1122_3344, 3))
        );
        // 32-bit: disp32 alone (no RIP-relative outside 64-bit mode), SIB without base.
        assert_eq!(
            at(&[0x0f, 0x01, 0x3d, 0, 0x20, 0, 0], Mode::Bits32),
            Some((7, 0x2000, 3))
        );
        assert_eq!(
            at(&[0x0f, 0x01, 0x3c, 0x8d, 0, 0x10, 0, 0], Mode::Bits32),
            Some((8, 0x1000 + 4 * 0x20, 3))
        );
        assert_eq!(
            at(&[0x0f, 0x01, 0xf8], Mode::Bits64),
            None,
            "swapgs, not invlpg"
        );
        assert_eq!(at(&[0x0f, 0x01, 0x30], Mode::Bits64), None, "lmsw");
    }

    fn d64dr(bytes: &[u8]) -> Option<MovDr> {
        decode_mov_dr(bytes, Mode::Bits64)
    }

    #[test]
    fn register_writes_follow_hardware() {
        let ah = Reg {
            index: 0,
            high8: true,
        };
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

    #[test]
    fn v86_sensitive_instructions() {
        let d = |b: &[u8]| decode_v86(b, 0x3f8).unwrap();
        assert_eq!(
            d(&[0xf4]),
            V86Insn {
                len: 1,
                op: V86Op::Hlt
            }
        );
        // out 0xe9, al; in ax, dx; o32 in eax, 0x60
        let plain = PortIo {
            port: 0,
            input: false,
            size: 1,
            string: false,
            rep: false,
            addr_size: 2,
            segment: 3,
        };
        let io = |port, input, size| {
            V86Op::Io(PortIo {
                port,
                input,
                size,
                ..plain
            })
        };
        assert_eq!(
            d(&[0xe6, 0xe9]),
            V86Insn {
                len: 2,
                op: io(0xe9, false, 1)
            }
        );
        assert_eq!(
            d(&[0xed]),
            V86Insn {
                len: 1,
                op: io(0x3f8, true, 2)
            }
        );
        assert_eq!(
            d(&[0x66, 0xe5, 0x60]),
            V86Insn {
                len: 3,
                op: io(0x60, true, 4)
            }
        );
        // rep outsb with an ES override; a32 rep insw
        let string = PortIo {
            port: 0x3f8,
            string: true,
            rep: true,
            ..plain
        };
        assert_eq!(
            d(&[0xf3, 0x26, 0x6e]).op,
            V86Op::Io(PortIo {
                segment: 0,
                ..string
            })
        );
        assert_eq!(
            d(&[0x67, 0xf3, 0x6d]).op,
            V86Op::Io(PortIo {
                input: true,
                size: 2,
                addr_size: 4,
                ..string
            })
        );
        assert_eq!(
            d(&[0xcd, 0x10]),
            V86Insn {
                len: 2,
                op: V86Op::Int(0x10)
            }
        );
        assert_eq!(d(&[0xcc]).op, V86Op::Int(3));
        // lgdt [0x1234]; o32 lidt [bp+2] (SS-relative)
        let V86Op::LoadTable {
            idt: false,
            operand,
            op32: false,
        } = d(&[0x0f, 0x01, 0x16, 0x34, 0x12]).op
        else {
            panic!("lgdt")
        };
        assert_eq!(
            (operand.disp, operand.base, operand.segment),
            (0x1234, None, 3)
        );
        let i = d(&[0x66, 0x0f, 0x01, 0x5e, 0x02]);
        assert_eq!(i.len, 5);
        let V86Op::LoadTable {
            idt: true,
            operand,
            op32: true,
        } = i.op
        else {
            panic!("lidt")
        };
        assert_eq!((operand.base, operand.segment), (Some(5), 2));
        assert_eq!(
            d(&[0x0f, 0x22, 0xc0]),
            V86Insn {
                len: 3,
                op: V86Op::Cr
            }
        );
        assert_eq!(
            d(&[0x0f, 0x23, 0xf8]),
            V86Insn {
                len: 3,
                op: V86Op::Dr
            }
        );
        assert_eq!(d(&[0x0f, 0x01, 0x38]).op, V86Op::Invlpg);
        assert_eq!(
            d(&[0x0f, 0x30]),
            V86Insn {
                len: 2,
                op: V86Op::Msr { write: true }
            }
        );
        assert_eq!(d(&[0x0f, 0x09]).op, V86Op::Nop);
        // An ordinary instruction, and one cut short.
        assert_eq!(decode_v86(&[0x89, 0xc0], 0), None);
        assert_eq!(decode_v86(&[0xcd], 0), None);
    }
}

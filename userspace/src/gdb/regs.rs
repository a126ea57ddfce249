// SPDX-License-Identifier: GPL-2.0

//! gdb's x86-64 registers (`64bit-core.xml` and `64bit-sse.xml`, gdbstub's
//! `X86_64CoreRegs`) from and to KVM's `kvm_regs`, `kvm_sregs` and
//! `kvm_fpu`.

use gdbstub_arch::x86::reg::X86_64CoreRegs;
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

/// The vCPU's registers as gdb numbers them.
pub fn to_gdb(r: &kvm_regs, s: &kvm_sregs, f: &kvm_fpu) -> X86_64CoreRegs {
    let mut g = X86_64CoreRegs {
        regs: [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ],
        eflags: r.rflags as u32,
        rip: r.rip,
        ..Default::default()
    };
    let seg = &mut g.segments;
    seg.cs = s.cs.selector.into();
    seg.ss = s.ss.selector.into();
    seg.ds = s.ds.selector.into();
    seg.es = s.es.selector.into();
    seg.fs = s.fs.selector.into();
    seg.gs = s.gs.selector.into();
    for (st, fpr) in g.st.iter_mut().zip(&f.fpr) {
        st.copy_from_slice(&fpr[..10]);
    }
    g.fpu.fctrl = f.fcw.into();
    g.fpu.fstat = f.fsw.into();
    g.fpu.ftag = full_tag_word(f.ftwx);
    g.fpu.fioff = f.last_ip as u32;
    g.fpu.fiseg = (f.last_ip >> 32) as u32 & 0xffff;
    g.fpu.fooff = f.last_dp as u32;
    g.fpu.foseg = (f.last_dp >> 32) as u32 & 0xffff;
    g.fpu.fop = f.last_opcode.into();
    for (x, xmm) in g.xmm.iter_mut().zip(&f.xmm) {
        *x = u128::from_le_bytes(*xmm);
    }
    g.mxcsr = f.mxcsr;
    g
}

/// What gdb wrote: the general-purpose registers, RIP, RFLAGS and the
/// x87/SSE state. Segment selectors are left as they are (a selector
/// alone would not load its descriptor).
pub fn from_gdb(g: &X86_64CoreRegs, r: &mut kvm_regs, f: &mut kvm_fpu) {
    let [rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8, r9, r10, r11, r12, r13, r14, r15] = g.regs;
    *r = kvm_regs {
        rax,
        rbx,
        rcx,
        rdx,
        rsi,
        rdi,
        rbp,
        rsp,
        r8,
        r9,
        r10,
        r11,
        r12,
        r13,
        r14,
        r15,
        rip: g.rip,
        // The upper half of RFLAGS is reserved (zero).
        rflags: u64::from(g.eflags),
    };
    for (fpr, st) in f.fpr.iter_mut().zip(&g.st) {
        fpr[..10].copy_from_slice(st);
    }
    f.fcw = g.fpu.fctrl as u16;
    f.fsw = g.fpu.fstat as u16;
    f.ftwx = abridged_tag_word(g.fpu.ftag);
    f.last_opcode = g.fpu.fop as u16;
    f.last_ip = u64::from(g.fpu.fioff) | u64::from(g.fpu.fiseg & 0xffff) << 32;
    f.last_dp = u64::from(g.fpu.fooff) | u64::from(g.fpu.foseg & 0xffff) << 32;
    for (xmm, x) in f.xmm.iter_mut().zip(&g.xmm) {
        *xmm = x.to_le_bytes();
    }
    f.mxcsr = g.mxcsr;
}

/// FXSAVE's abridged tag (one bit per register, 1 = in use) as the x87 tag
/// word gdb shows (two bits per register: 11 empty, 00 valid; rkvm does
/// not tell zero and special values apart).
fn full_tag_word(abridged: u8) -> u32 {
    (0..8)
        .map(|i| {
            if abridged & (1 << i) != 0 {
                0
            } else {
                3 << (2 * i)
            }
        })
        .sum()
}

/// The x87 tag word as FXSAVE's abridged tag.
fn abridged_tag_word(full: u32) -> u8 {
    (0..8)
        .filter(|i| full >> (2 * i) & 3 != 3)
        .map(|i| 1u8 << i)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_round_trip() {
        let r = kvm_regs {
            rax: 1,
            rbx: 2,
            rsp: 0x8000,
            r15: 15,
            rip: 0xffff_ffff_8100_0000,
            rflags: 0x246,
            ..Default::default()
        };
        let mut s = kvm_sregs::default();
        s.cs.selector = 0x10;
        s.ss.selector = 0x18;
        let mut f = kvm_fpu {
            fcw: 0x37f,
            ftwx: 0b1000_0001,
            mxcsr: 0x1f80,
            last_ip: 0x1234_0000_5678,
            ..Default::default()
        };
        f.xmm[3][0] = 0xaa;
        f.fpr[7][9] = 0x40;
        let g = to_gdb(&r, &s, &f);
        assert_eq!(g.regs[0], 1);
        assert_eq!(g.regs[1], 2, "gdb's order: rax, rbx, rcx, rdx, ...");
        assert_eq!(g.regs[7], 0x8000, "rsp is the eighth");
        assert_eq!(g.regs[15], 15);
        assert_eq!((g.rip, g.eflags), (0xffff_ffff_8100_0000, 0x246));
        assert_eq!((g.segments.cs, g.segments.ss), (0x10, 0x18));
        assert_eq!(g.fpu.ftag, 0x3ffc, "ST0 and ST7 valid, the rest empty");
        assert_eq!(g.xmm[3], 0xaa);
        assert_eq!(g.st[7][9], 0x40);
        let (mut r2, mut f2) = (kvm_regs::default(), kvm_fpu::default());
        from_gdb(&g, &mut r2, &mut f2);
        assert_eq!(r2, r);
        assert_eq!(f2.ftwx, f.ftwx);
        assert_eq!(f2.xmm, f.xmm);
        assert_eq!((f2.fcw, f2.mxcsr, f2.last_ip), (0x37f, 0x1f80, f.last_ip));
    }
}

// SPDX-License-Identifier: GPL-2.0

//! A flat program and the CPU state it starts in: loaded at 0x1000 and
//! entered in real mode or in long mode, on page tables that identity-map
//! the first GiB. The long-mode setup is also the Linux boot protocol's
//! (`linux`).

use std::path::Path;

use kvm_bindings::kvm_segment;
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::error::{Error, Result};

/// Where a flat program is loaded and starts.
const LOAD_ADDR: u64 = 0x1000;
/// Long mode: page tables (PML4, PDPT, PD) identity-mapping the first GiB.
const PML4: u64 = 0x10_0000;
/// Initial stack pointer.
const STACK: u64 = 0x8_0000;

/// The CPU mode a flat program starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// 16-bit real mode, CS:IP = 0000:1000.
    Real,
    /// 64-bit long mode, identity-mapped first GiB, RIP = 0x1000.
    Long,
}

/// Loads the flat program at `path` into `mem` and sets `vcpu` up to run
/// it in `mode`.
pub fn load_flat(vcpu: &VcpuFd, mem: &GuestMemoryMmap, path: &Path, mode: Mode) -> Result<()> {
    let program = std::fs::read(path).map_err(|source| Error::Read {
        path: path.into(),
        source,
    })?;
    if LOAD_ADDR as usize + program.len() > 0x8_0000 {
        return Err(Error::FlatTooLarge(path.into()));
    }
    mem.write_slice(&program, GuestAddress(LOAD_ADDR))
        .map_err(Error::guest_memory("loading the program"))?;
    match mode {
        Mode::Real => setup_real_mode(vcpu),
        Mode::Long => setup_long_mode(vcpu, mem),
    }
}

fn setup_real_mode(vcpu: &VcpuFd) -> Result<()> {
    let mut sregs = vcpu.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(Error::ioctl("KVM_SET_SREGS"))?;
    set_entry(vcpu)
}

fn setup_long_mode(vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> Result<()> {
    enter_long_mode(vcpu, mem, PML4, 8, None)?;
    set_entry(vcpu)
}

/// Puts `vcpu` in 64-bit mode: page tables at `pml4` (three pages) that
/// identity-map the first GiB with 2 MiB pages, flat code and data segments
/// with selectors `cs` and `cs + 8`, and, given `gdt`, a GDT there whose
/// descriptors match those segments (entries below `cs` null).
pub fn enter_long_mode(
    vcpu: &VcpuFd,
    mem: &GuestMemoryMmap,
    pml4: u64,
    cs: u16,
    gdt: Option<u64>,
) -> Result<()> {
    let write = |addr: u64, val: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(Error::guest_memory("guest memory"))
    };
    write(pml4, (pml4 + 0x1000) | 3)?;
    write(pml4 + 0x1000, (pml4 + 0x2000) | 3)?;
    for i in 0..512u64 {
        write(pml4 + 0x2000 + i * 8, (i << 21) | 0x83)?; // 2 MiB, present, writable
    }
    let ds = cs + 8;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: cs,
        type_: 0xb,
        present: 1,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    let data = kvm_segment {
        selector: ds,
        type_: 3,
        l: 0,
        db: 1,
        ..code
    };
    let mut sregs = vcpu.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))?;
    if let Some(base) = gdt {
        for sel in (0..cs).step_by(8) {
            write(base + u64::from(sel), 0)?;
        }
        write(base + u64::from(cs), 0x00af_9b00_0000_ffff)?; // 64-bit code, DPL 0
        write(base + u64::from(ds), 0x00cf_9300_0000_ffff)?; // 4 GiB data, DPL 0
        sregs.gdt.base = base;
        sregs.gdt.limit = ds + 7;
    }
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.cr3 = pml4;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 0x8000_0011; // PG, ET, PE
    sregs.efer = (1 << 8) | (1 << 10); // LME, LMA
    vcpu.set_sregs(&sregs)
        .map_err(Error::ioctl("KVM_SET_SREGS"))
}

fn set_entry(vcpu: &VcpuFd) -> Result<()> {
    let mut regs = vcpu.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))?;
    regs.rip = LOAD_ADDR;
    regs.rsp = STACK;
    regs.rflags = 2;
    vcpu.set_regs(&regs).map_err(Error::ioctl("KVM_SET_REGS"))
}

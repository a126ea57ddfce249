// SPDX-License-Identifier: GPL-2.0

//! `--trace-exits` and `--trace-regs`: a line per exit that reaches
//! userspace, the exits the kernel handled before it (from its exit ring in
//! debugfs), the registers and the bytes of the instructions.

use std::os::fd::RawFd;
use std::path::Path;

use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::debugfs;

/// What `--trace-exits` (and `--trace-regs`) print.
pub struct Trace {
    exits: bool,
    regs: bool,
    /// The kernel's own record of every exit, when it keeps one we can read.
    kernel: Option<debugfs::TraceReader>,
}

impl Trace {
    /// `exits` and `regs` as the options say, for the VM `vm_fd`.
    pub fn new(exits: bool, regs: bool, vm_fd: RawFd) -> Trace {
        let kernel = if exits {
            debugfs::own_vm(Path::new(debugfs::ROOT), vm_fd)
                .map(|dir| debugfs::TraceReader::new(&dir.join("vcpu0")))
        } else {
            None
        };
        Trace {
            exits,
            regs,
            kernel,
        }
    }

    /// After a `KVM_RUN`: the exits the kernel handled since the last one.
    pub fn kernel_exits(&mut self, vcpu: RawFd, mem: &GuestMemoryMmap) {
        if let Some(reader) = self.kernel.as_mut() {
            print_kernel_exits(reader, self.regs.then_some((vcpu, mem)));
        }
    }

    /// An exit that reached userspace, `reason` and `line` from [`describe`].
    pub fn exit(&self, reason: &str, line: &str, vcpu: RawFd) {
        if self.exits {
            eprintln!("rkvm: exit {reason:<6} {line}");
        }
        if self.regs {
            trace_registers(vcpu, "       ");
        }
    }

    /// When the run is over: the registers at the end.
    pub fn end(&self, vcpu: &VcpuFd) {
        if self.exits {
            trace_final_state(vcpu);
        }
    }
}

/// The exits the kernel recorded since the last call, one line each; with
/// `insn`, the bytes at each exit's RIP too.
fn print_kernel_exits(reader: &mut debugfs::TraceReader, insn: Option<(RawFd, &GuestMemoryMmap)>) {
    match reader.read_new() {
        Ok((records, lost)) => {
            if lost > 0 {
                eprintln!("rkvm: kexit ... {lost} exits overwritten before they were read");
            }
            for r in &records {
                let bytes = insn.and_then(|(vcpu, mem)| instruction_bytes(vcpu, mem, r.rip));
                let bytes = bytes
                    .map(|b| format!(" insn={}", hex_bytes(&b)))
                    .unwrap_or_default();
                eprintln!("rkvm: kexit {}{bytes}", rkvm_pure::trace::describe(r));
            }
        }
        Err(e) => eprintln!("rkvm: kexit (cannot read the kernel's exit trace: {e})"),
    }
}

fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Up to 15 bytes (the longest x86 instruction) at `rip` in the code
/// segment, read through the guest's page tables as they are now.
fn instruction_bytes(vcpu: RawFd, mem: &GuestMemoryMmap, rip: u64) -> Option<Vec<u8>> {
    use rkvm_pure::walk::{translate, Paging};
    let mut sregs = kvm_bindings::kvm_sregs::default();
    // SAFETY: KVM_GET_SREGS fills one `struct kvm_sregs`, valid for the call.
    unsafe { kvm_get_sregs(vcpu, &mut sregs) }.ok()?;
    let mode = Paging::of(sregs.cr0, sregs.cr4, sregs.efer);
    let long = mode == Paging::Long && sregs.cs.l != 0;
    let linear = if long {
        rip
    } else {
        sregs.cs.base.wrapping_add(rip)
    };
    let read_entry = |gpa: u64, size: u8| match size {
        4 => mem.read_obj::<u32>(GuestAddress(gpa)).ok().map(u64::from),
        _ => mem.read_obj::<u64>(GuestAddress(gpa)).ok(),
    };
    let mut out = Vec::with_capacity(15);
    while out.len() < 15 {
        let at = linear.wrapping_add(out.len() as u64);
        let gpa = translate(mode, sregs.cr3, at, read_entry)?;
        let in_page = (0x1000 - (at & 0xfff)) as usize;
        let mut chunk = vec![0u8; in_page.min(15 - out.len())];
        mem.read_slice(&mut chunk, GuestAddress(gpa)).ok()?;
        out.extend_from_slice(&chunk);
    }
    Some(out)
}

// By fd: a `VcpuExit` holds the `VcpuFd` borrowed while the trace reads them.
nix::ioctl_read!(
    kvm_get_regs,
    kvm_bindings::KVMIO,
    0x81,
    kvm_bindings::kvm_regs
);
nix::ioctl_read!(
    kvm_get_sregs,
    kvm_bindings::KVMIO,
    0x83,
    kvm_bindings::kvm_sregs
);

/// `--trace-regs`: the general-purpose registers, two lines.
fn trace_registers(vcpu: RawFd, indent: &str) {
    let mut r = kvm_bindings::kvm_regs::default();
    // SAFETY: KVM_GET_REGS fills one `struct kvm_regs`, valid for the call.
    if unsafe { kvm_get_regs(vcpu, &mut r) }.is_ok() {
        eprintln!(
            "rkvm: {indent}rip={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x}",
            r.rip, r.rflags, r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi
        );
        eprintln!(
            "rkvm: {indent}rsp={:#x} rbp={:#x} r8={:#x} r9={:#x} r10={:#x} r11={:#x} r12={:#x} r13={:#x} r14={:#x} r15={:#x}",
            r.rsp, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15
        );
    }
}

/// With `--trace-exits`: the registers at the end, so that two runs (through
/// /dev/kvm and /dev/rkvm) can be compared to the last bit.
fn trace_final_state(vcpu: &VcpuFd) {
    match vcpu.get_regs() {
        Ok(r) => {
            eprintln!(
                "rkvm: final rip={:#x} rflags={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x}",
                r.rip, r.rflags, r.rax, r.rbx, r.rcx, r.rdx
            );
            eprintln!(
                "rkvm: final rsi={:#x} rdi={:#x} rsp={:#x} rbp={:#x} r8={:#x} r9={:#x}",
                r.rsi, r.rdi, r.rsp, r.rbp, r.r8, r.r9
            );
        }
        Err(e) => eprintln!("rkvm: KVM_GET_REGS: {e}"),
    }
}

/// The exit's reason and a readable line about it.
pub fn describe(exit: &VcpuExit<'_>) -> (&'static str, String) {
    let hex = |d: &[u8]| {
        d.iter()
            .rev()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    match exit {
        VcpuExit::IoOut(port, d) => (
            "io",
            format!("out port={port:#06x} size={} data=0x{}", d.len(), hex(d)),
        ),
        VcpuExit::IoIn(port, d) => ("io", format!("in  port={port:#06x} size={}", d.len())),
        VcpuExit::MmioWrite(a, d) => (
            "mmio",
            format!("write addr={a:#x} size={} data=0x{}", d.len(), hex(d)),
        ),
        VcpuExit::MmioRead(a, d) => ("mmio", format!("read  addr={a:#x} size={}", d.len())),
        VcpuExit::Hlt => ("hlt", String::new()),
        VcpuExit::IrqWindowOpen => ("irq_window", String::new()),
        VcpuExit::Shutdown => ("shutdown", String::new()),
        VcpuExit::FailEntry(r, cpu) => ("fail_entry", format!("reason={r:#x} cpu={cpu}")),
        VcpuExit::InternalError => ("internal_error", String::new()),
        _ => ("other", format!("{exit:?}")),
    }
}

// SPDX-License-Identifier: GPL-2.0

//! The one FFI surface of rkvm.ko: every C or assembly function the module
//! calls that the kernel crate does not cover, declared once, and the
//! structs they share with Rust, whose layouts are checked at compile time
//! against `layout.h`, the offsets the C and assembly sides use.
//!
//! Nothing here is called directly by the rest of the module but through
//! safe wrappers: `sys` (helpers.c), `fd` (anonymous inodes), and the two
//! backends (their entry stubs, `svm/vmrun.S` and `vmx/vmenter.S`).

use core::mem::{
    offset_of,
    size_of, //
};

use kernel::{
    bindings,
    ffi::{
        c_char,
        c_int,
        c_void, //
    }, //
};

use crate::pure::{
    vmcb::Vmcb,
    vmcs::field, //
};

/// `struct rkvm_irqfd_hook` (helpers.c): a wait-queue entry and a poll
/// table, only ever behind a pointer.
#[repr(C)]
pub(crate) struct IrqfdHook {
    _opaque: [u8; 0],
}

// `struct page` and friends contain members bindgen cannot express as
// FFI-safe types; only pointers to them cross this boundary.
#[allow(improper_ctypes)]
extern "C" {
    // helpers.c: kernel inlines and macros with no symbol and no binding
    // in the kernel crate (prototypes in helpers.h).
    pub(crate) fn rkvm_rdmsr_safe(msr: u32, val: *mut u64) -> c_int;
    pub(crate) fn rkvm_wrmsr_safe(msr: u32, val: u64) -> c_int;
    pub(crate) fn rkvm_page_to_phys(page: *mut bindings::page) -> u64;
    pub(crate) fn rkvm_page_address(page: *mut bindings::page) -> *mut c_void;
    pub(crate) fn rkvm_phys_to_virt(pa: u64) -> *mut c_void;
    pub(crate) fn rkvm_access_ok(addr: usize, size: usize) -> bool;
    pub(crate) fn rkvm_page_in_huge_folio(page: *mut bindings::page) -> bool;
    pub(crate) fn rkvm_file_allow_pread(file: *mut bindings::file);
    pub(crate) fn rkvm_local_irq_disable();
    pub(crate) fn rkvm_local_irq_enable();
    pub(crate) fn rkvm_kernel_fpu_begin();
    pub(crate) fn rkvm_kernel_fpu_end();
    pub(crate) fn rkvm_cond_resched();
    pub(crate) fn rkvm_kick_cpu(cpu: c_int);
    pub(crate) fn rkvm_current_pid() -> c_int;
    pub(crate) fn rkvm_guest_enter_irqoff();
    pub(crate) fn rkvm_current_mm() -> *const bindings::mm_struct;
    pub(crate) fn rkvm_vma_pgoff(vma: *const bindings::vm_area_struct) -> usize;
    pub(crate) fn rkvm_vmx_host_save(h: *mut VmxHostState);
    pub(crate) fn rkvm_vmx_host_restore(h: *const VmxHostState);
    pub(crate) fn rkvm_irqfd_hook_alloc() -> *mut IrqfdHook;
    pub(crate) fn rkvm_irqfd_hook_free(h: *mut IrqfdHook);
    pub(crate) fn rkvm_irqfd_hook_attach(
        h: *mut IrqfdHook,
        fd: c_int,
        owner: *const c_void,
        pending: *mut bool,
    ) -> c_int;
    pub(crate) fn rkvm_irqfd_hook_detach(h: *mut IrqfdHook);
    pub(crate) fn rkvm_irqfd_hook_ctx(h: *const IrqfdHook) -> *mut bindings::eventfd_ctx;
    pub(crate) fn rkvm_wq_create() -> c_int;
    pub(crate) fn rkvm_wq_get() -> *mut bindings::workqueue_struct;
    pub(crate) fn rkvm_wq_flush();
    pub(crate) fn rkvm_wq_destroy();

    // Exported by the kernel, but not in the kernel crate's bindings.
    pub(crate) fn anon_inode_getfile(
        name: *const c_char,
        fops: *const bindings::file_operations,
        priv_: *mut c_void,
        flags: c_int,
    ) -> *mut bindings::file;

    /// `svm/vmrun.S`. `vmcb` is not used by the code: passing it tells the
    /// compiler that the VMCB may change during the call. `dr7`, unless 0,
    /// is moved to DR7 just before the guest's GPRs are loaded.
    pub(crate) fn rkvm_svm_vmrun(
        vmcb_pa: u64,
        gprs: *mut Gprs,
        host_save_pa: u64,
        vmcb: *mut Vmcb,
        dr7: u64,
    );

    /// The guest's breakpoint addresses into DR0-DR3 before an entry, the
    /// host's saved to `host` (`helpers.c`).
    pub(crate) fn rkvm_debugregs_load(addr: *const u64, host: *mut u64);
    /// The host's breakpoints back after the exit (`helpers.c`).
    pub(crate) fn rkvm_debugregs_restore(host: *const u64);

    /// `vmx/vmenter.S`: 0 after a VM exit, 1 if VMLAUNCH failed, 2 if a
    /// VMWRITE of the host RSP/RIP failed.
    pub(crate) fn rkvm_vmx_vmlaunch(gprs: *mut Gprs) -> u64;
}

/// The guest's 16 GPRs in x86 encoding order (RAX, RCX, RDX, RBX, RSP,
/// RBP, RSI, RDI, R8-R15): one array for both backends, as KVM's
/// `vcpu->arch.regs`. The entry stubs load and store every one but RSP
/// (and, on SVM, RAX): while the guest runs the VMCS or VMCB holds those,
/// and the backend copies them in and out (`GPRS_*` in `layout.h`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct Gprs {
    pub(crate) regs: [u64; 16],
}

impl Gprs {
    /// The register with x86 number `index` (0-15; higher bits ignored).
    pub(crate) fn get(&self, index: u8) -> u64 {
        self.regs[usize::from(index & 15)]
    }

    /// Sets the register with x86 number `index` (0-15; higher bits ignored).
    pub(crate) fn set(&mut self, index: u8, value: u64) {
        self.regs[usize::from(index & 15)] = value;
    }
}

/// `struct rkvm_vmx_host` of `helpers.h` (`VMX_HOST_*` in `layout.h`):
/// host state read before a VMX run and put back after it.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct VmxHostState {
    pub(crate) fs_base: u64,
    pub(crate) gs_base: u64,
    pub(crate) kernel_gs_base: u64,
    pub(crate) tr_base: u64,
    pub(crate) gdt_base: u64,
    pub(crate) idt_base: u64,
    pub(crate) cr0: u64,
    pub(crate) cr3: u64,
    pub(crate) ds: u16,
    pub(crate) es: u16,
    pub(crate) fs: u16,
    pub(crate) gs: u16,
}

/// `layout.h`, read at compile time.
const LAYOUT_H: &[u8] = include_bytes!("layout.h");

/// Whether `s[at..]` starts with `prefix`.
const fn starts_with(s: &[u8], at: usize, prefix: &[u8]) -> bool {
    if at + prefix.len() > s.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if s[at + i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// The number (`0x` hexadecimal or decimal) at `s[at..]`, up to the end of
/// the line.
const fn number(s: &[u8], mut at: usize) -> Option<usize> {
    let hex = starts_with(s, at, b"0x");
    if hex {
        at += 2;
    }
    let (mut value, mut digits) = (0usize, 0);
    while at < s.len() && s[at] != b'\n' {
        let c = s[at];
        let digit = match c {
            b'0'..=b'9' => (c - b'0') as usize,
            b'a'..=b'f' if hex => (c - b'a' + 10) as usize,
            b'A'..=b'F' if hex => (c - b'A' + 10) as usize,
            _ if is_blank(c) => break,
            _ => return None,
        };
        value = value * if hex { 16 } else { 10 } + digit;
        digits += 1;
        at += 1;
    }
    if digits == 0 {
        None
    } else {
        Some(value)
    }
}

/// The value of `#define NAME VALUE` in `layout.h`.
const fn define(name: &str) -> Option<usize> {
    let (s, name) = (LAYOUT_H, name.as_bytes());
    let mut line = 0;
    while line < s.len() {
        if starts_with(s, line, b"#define") {
            let mut at = line + b"#define".len();
            while at < s.len() && is_blank(s[at]) {
                at += 1;
            }
            if starts_with(s, at, name) {
                at += name.len();
                if at < s.len() && is_blank(s[at]) {
                    while at < s.len() && is_blank(s[at]) {
                        at += 1;
                    }
                    return number(s, at);
                }
            }
        }
        while line < s.len() && s[line] != b'\n' {
            line += 1;
        }
        line += 1;
    }
    None
}

/// Whether `layout.h` defines `name` as `value`.
const fn defined_as(name: &str, value: usize) -> bool {
    matches!(define(name), Some(v) if v == value)
}

/// Fails the build unless each `NAME => value` is `#define NAME value` in
/// `layout.h`.
macro_rules! check_layout {
    ($($name:literal => $value:expr,)*) => {
        const _: () = {
            $(assert!(defined_as($name, $value), concat!("layout.h disagrees: ", $name));)*
        };
    };
}

/// Offset in [`Gprs`] of the register with x86 number `n`.
const fn gpr(n: usize) -> usize {
    offset_of!(Gprs, regs) + n * size_of::<u64>()
}

check_layout! {
    "GPRS_RAX" => gpr(0),
    "GPRS_RCX" => gpr(1),
    "GPRS_RDX" => gpr(2),
    "GPRS_RBX" => gpr(3),
    "GPRS_RSP" => gpr(4),
    "GPRS_RBP" => gpr(5),
    "GPRS_RSI" => gpr(6),
    "GPRS_RDI" => gpr(7),
    "GPRS_R8" => gpr(8),
    "GPRS_R9" => gpr(9),
    "GPRS_R10" => gpr(10),
    "GPRS_R11" => gpr(11),
    "GPRS_R12" => gpr(12),
    "GPRS_R13" => gpr(13),
    "GPRS_R14" => gpr(14),
    "GPRS_R15" => gpr(15),
    "GPRS_SIZE" => size_of::<Gprs>(),
    "VMCS_HOST_RSP" => field::HOST_RSP.0 as usize,
    "VMCS_HOST_RIP" => field::HOST_RIP.0 as usize,
}

check_layout! {
    "VMX_HOST_FS_BASE" => offset_of!(VmxHostState, fs_base),
    "VMX_HOST_GS_BASE" => offset_of!(VmxHostState, gs_base),
    "VMX_HOST_KERNEL_GS_BASE" => offset_of!(VmxHostState, kernel_gs_base),
    "VMX_HOST_TR_BASE" => offset_of!(VmxHostState, tr_base),
    "VMX_HOST_GDT_BASE" => offset_of!(VmxHostState, gdt_base),
    "VMX_HOST_IDT_BASE" => offset_of!(VmxHostState, idt_base),
    "VMX_HOST_CR0" => offset_of!(VmxHostState, cr0),
    "VMX_HOST_CR3" => offset_of!(VmxHostState, cr3),
    "VMX_HOST_DS" => offset_of!(VmxHostState, ds),
    "VMX_HOST_ES" => offset_of!(VmxHostState, es),
    "VMX_HOST_FS" => offset_of!(VmxHostState, fs),
    "VMX_HOST_GS" => offset_of!(VmxHostState, gs),
    "VMX_HOST_SIZE" => size_of::<VmxHostState>(),
}

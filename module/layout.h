/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The layout of every struct rkvm's Rust shares with C (helpers.c) or with
 * assembly (svm/vmrun.S, vmx/vmenter.S), kept in one place: the assembly
 * addresses fields with these offsets, helpers.c checks its struct against
 * them (static_assert), and module/ffi.rs checks the Rust structs against
 * them (offset_of!/size_of in const assertions, reading this file at
 * compile time). So a field moved on one side only fails the build.
 *
 * Only `#define NAME VALUE` lines (hexadecimal 0x... or decimal) below.
 */
#ifndef RKVM_LAYOUT_H
#define RKVM_LAYOUT_H

/*
 * `Gprs` (ffi.rs), for svm/vmrun.S and vmx/vmenter.S: the 16 GPRs in x86
 * encoding order. Neither stub touches RSP's slot (the VMCB or VMCS holds
 * it), nor svm/vmrun.S RAX's (the VMCB holds it).
 */
#define GPRS_RAX	0x00
#define GPRS_RCX	0x08
#define GPRS_RDX	0x10
#define GPRS_RBX	0x18
#define GPRS_RSP	0x20
#define GPRS_RBP	0x28
#define GPRS_RSI	0x30
#define GPRS_RDI	0x38
#define GPRS_R8		0x40
#define GPRS_R9		0x48
#define GPRS_R10	0x50
#define GPRS_R11	0x58
#define GPRS_R12	0x60
#define GPRS_R13	0x68
#define GPRS_R14	0x70
#define GPRS_R15	0x78
#define GPRS_SIZE	0x80

/* The VMCS fields vmx/vmenter.S writes (`pure::vmcs::field`). */
#define VMCS_HOST_RSP	0x6c14
#define VMCS_HOST_RIP	0x6c16

/* struct rkvm_vmx_host (helpers.h), `VmxHostState` (ffi.rs). */
#define VMX_HOST_FS_BASE	0x00
#define VMX_HOST_GS_BASE	0x08
#define VMX_HOST_KERNEL_GS_BASE	0x10
#define VMX_HOST_TR_BASE	0x18
#define VMX_HOST_GDT_BASE	0x20
#define VMX_HOST_IDT_BASE	0x28
#define VMX_HOST_CR0		0x30
#define VMX_HOST_CR3		0x38
#define VMX_HOST_DS		0x40
#define VMX_HOST_ES		0x42
#define VMX_HOST_FS		0x44
#define VMX_HOST_GS		0x46
#define VMX_HOST_SIZE		0x48

#endif

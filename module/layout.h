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

/* `SvmGprs` (ffi.rs), for svm/vmrun.S: the GPRs the VMCB does not hold. */
#define SVM_GPRS_RBX	0x00
#define SVM_GPRS_RCX	0x08
#define SVM_GPRS_RDX	0x10
#define SVM_GPRS_RSI	0x18
#define SVM_GPRS_RDI	0x20
#define SVM_GPRS_RBP	0x28
#define SVM_GPRS_R8	0x30
#define SVM_GPRS_R9	0x38
#define SVM_GPRS_R10	0x40
#define SVM_GPRS_R11	0x48
#define SVM_GPRS_R12	0x50
#define SVM_GPRS_R13	0x58
#define SVM_GPRS_R14	0x60
#define SVM_GPRS_R15	0x68
#define SVM_GPRS_SIZE	0x70

/*
 * `VmxGprs` (ffi.rs), for vmx/vmenter.S: the 16 GPRs in x86 encoding order
 * (RSP's slot unused: the VMCS holds it), then CR2.
 */
#define VMX_GPRS_RAX	0x00
#define VMX_GPRS_RCX	0x08
#define VMX_GPRS_RDX	0x10
#define VMX_GPRS_RBX	0x18
#define VMX_GPRS_RBP	0x28
#define VMX_GPRS_RSI	0x30
#define VMX_GPRS_RDI	0x38
#define VMX_GPRS_R8	0x40
#define VMX_GPRS_R9	0x48
#define VMX_GPRS_R10	0x50
#define VMX_GPRS_R11	0x58
#define VMX_GPRS_R12	0x60
#define VMX_GPRS_R13	0x68
#define VMX_GPRS_R14	0x70
#define VMX_GPRS_R15	0x78
#define VMX_GPRS_CR2	0x80
#define VMX_GPRS_SIZE	0x88

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

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * One trip into VMX guest mode and back.
 *
 *   u64 rkvm_vmx_vmlaunch(struct rkvm_vmx_gprs *gprs);
 *
 * Called with interrupts disabled, in VMX root operation, with the vCPU's
 * VMCS current and clear (rkvm clears it after every exit, so every entry
 * is a VMLAUNCH). Writes HOST_RSP and HOST_RIP (the exit lands at
 * .Lvmexit below with this stack), loads the guest's CR2 and GPRs, and
 * launches. After the exit stores the guest's GPRs and CR2.
 *
 * Returns 0 after a VM exit, 1 if VMLAUNCH failed (the VM-instruction
 * error field says why, when the VMCS is valid), 2 if a VMWRITE failed.
 *
 * struct rkvm_vmx_gprs is `VmxGprs` in ffi.rs: the 16 GPRs in x86
 * encoding order (RSP's slot unused: the VMCS holds it), then CR2, at the
 * offsets VMX_GPRS_* of layout.h (which ffi.rs checks).
 */
#include <linux/linkage.h>
#include <asm/asm.h>

#include "../entry.h"
#include "../layout.h"

.section .text, "ax"

SYM_FUNC_START(rkvm_vmx_vmlaunch)
	push	%rbp
	push	%r15
	push	%r14
	push	%r13
	push	%r12
	push	%rbx
	push	%rdi		/* 0(%rsp): gprs, found again after the exit */

	mov	$VMCS_HOST_RSP, %eax
	vmwrite	%rsp, %rax
	jbe	.Lwrite_failed	/* CF or ZF: VMfail */
	lea	.Lvmexit(%rip), %rdx
	mov	$VMCS_HOST_RIP, %eax
	vmwrite	%rdx, %rax
	jbe	.Lwrite_failed

	mov	VMX_GPRS_CR2(%rdi), %rax
	mov	%rax, %cr2

	mov	VMX_GPRS_RAX(%rdi), %rax
	mov	VMX_GPRS_RCX(%rdi), %rcx
	mov	VMX_GPRS_RDX(%rdi), %rdx
	mov	VMX_GPRS_RBX(%rdi), %rbx
	mov	VMX_GPRS_RBP(%rdi), %rbp
	mov	VMX_GPRS_RSI(%rdi), %rsi
	mov	VMX_GPRS_R8(%rdi),  %r8
	mov	VMX_GPRS_R9(%rdi),  %r9
	mov	VMX_GPRS_R10(%rdi), %r10
	mov	VMX_GPRS_R11(%rdi), %r11
	mov	VMX_GPRS_R12(%rdi), %r12
	mov	VMX_GPRS_R13(%rdi), %r13
	mov	VMX_GPRS_R14(%rdi), %r14
	mov	VMX_GPRS_R15(%rdi), %r15
	mov	VMX_GPRS_RDI(%rdi), %rdi

	vmlaunch

	/* Still here: VMLAUNCH failed. The registers hold guest values. */
	mov	$1, %eax
	jmp	.Lout

.Lvmexit:
	/* RSP is HOST_RSP again; RFLAGS is 0x2 (interrupts stay off). */
	xchg	%rdi, (%rsp)	/* gprs in RDI, the guest's RDI on the stack */
	mov	%rax, VMX_GPRS_RAX(%rdi)
	mov	%rcx, VMX_GPRS_RCX(%rdi)
	mov	%rdx, VMX_GPRS_RDX(%rdi)
	mov	%rbx, VMX_GPRS_RBX(%rdi)
	mov	%rbp, VMX_GPRS_RBP(%rdi)
	mov	%rsi, VMX_GPRS_RSI(%rdi)
	mov	%r8,  VMX_GPRS_R8(%rdi)
	mov	%r9,  VMX_GPRS_R9(%rdi)
	mov	%r10, VMX_GPRS_R10(%rdi)
	mov	%r11, VMX_GPRS_R11(%rdi)
	mov	%r12, VMX_GPRS_R12(%rdi)
	mov	%r13, VMX_GPRS_R13(%rdi)
	mov	%r14, VMX_GPRS_R14(%rdi)
	mov	%r15, VMX_GPRS_R15(%rdi)
	mov	(%rsp), %rax
	mov	%rax, VMX_GPRS_RDI(%rdi)
	mov	%cr2, %rax
	mov	%rax, VMX_GPRS_CR2(%rdi)
	xor	%eax, %eax
	jmp	.Lout

.Lwrite_failed:
	mov	$2, %eax

.Lout:
	RKVM_CLEAR_CALLER_SAVED

	add	$8, %rsp
	pop	%rbx
	pop	%r12
	pop	%r13
	pop	%r14
	pop	%r15
	pop	%rbp
	RET
SYM_FUNC_END(rkvm_vmx_vmlaunch)

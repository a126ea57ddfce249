/* SPDX-License-Identifier: GPL-2.0 */
/*
 * One trip into VMX guest mode and back.
 *
 *   u64 rkvm_vmx_vmlaunch(struct rkvm_gprs *gprs);
 *
 * Called with interrupts disabled, in VMX root operation, with the vCPU's
 * VMCS current and clear (rkvm clears it after every exit, so every entry
 * is a VMLAUNCH). Writes HOST_RSP and HOST_RIP (the exit lands at
 * .Lvmexit below with this stack), loads the guest's GPRs, and launches.
 * After the exit stores the guest's GPRs. The caller loads the guest's
 * CR2 before and reads it after (interrupts are off in between).
 *
 * Returns 0 after a VM exit, 1 if VMLAUNCH failed (the VM-instruction
 * error field says why, when the VMCS is valid), 2 if a VMWRITE failed.
 *
 * struct rkvm_gprs is `Gprs` in ffi.rs: the 16 GPRs in x86 encoding
 * order (RSP's slot unused: the VMCS holds it), at the offsets GPRS_* of
 * layout.h (which ffi.rs checks).
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


	mov	GPRS_RAX(%rdi), %rax
	mov	GPRS_RCX(%rdi), %rcx
	mov	GPRS_RDX(%rdi), %rdx
	mov	GPRS_RBX(%rdi), %rbx
	mov	GPRS_RBP(%rdi), %rbp
	mov	GPRS_RSI(%rdi), %rsi
	mov	GPRS_R8(%rdi),  %r8
	mov	GPRS_R9(%rdi),  %r9
	mov	GPRS_R10(%rdi), %r10
	mov	GPRS_R11(%rdi), %r11
	mov	GPRS_R12(%rdi), %r12
	mov	GPRS_R13(%rdi), %r13
	mov	GPRS_R14(%rdi), %r14
	mov	GPRS_R15(%rdi), %r15
	mov	GPRS_RDI(%rdi), %rdi

	vmlaunch

	/* Still here: VMLAUNCH failed. The registers hold guest values. */
	mov	$1, %eax
	jmp	.Lout

.Lvmexit:
	/* RSP is HOST_RSP again; RFLAGS is 0x2 (interrupts stay off). */
	xchg	%rdi, (%rsp)	/* gprs in RDI, the guest's RDI on the stack */
	mov	%rax, GPRS_RAX(%rdi)
	mov	%rcx, GPRS_RCX(%rdi)
	mov	%rdx, GPRS_RDX(%rdi)
	mov	%rbx, GPRS_RBX(%rdi)
	mov	%rbp, GPRS_RBP(%rdi)
	mov	%rsi, GPRS_RSI(%rdi)
	mov	%r8,  GPRS_R8(%rdi)
	mov	%r9,  GPRS_R9(%rdi)
	mov	%r10, GPRS_R10(%rdi)
	mov	%r11, GPRS_R11(%rdi)
	mov	%r12, GPRS_R12(%rdi)
	mov	%r13, GPRS_R13(%rdi)
	mov	%r14, GPRS_R14(%rdi)
	mov	%r15, GPRS_R15(%rdi)
	mov	(%rsp), %rax
	mov	%rax, GPRS_RDI(%rdi)
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

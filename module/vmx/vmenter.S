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
 * struct rkvm_vmx_gprs is `Gprs` in vmx/mod.rs: the 16 GPRs in x86
 * encoding order (RSP's slot unused: the VMCS holds it), then CR2.
 */
#include <linux/linkage.h>
#include <asm/asm.h>

#include "../entry.h"

#define G_RAX	0x00
#define G_RCX	0x08
#define G_RDX	0x10
#define G_RBX	0x18
#define G_RBP	0x28
#define G_RSI	0x30
#define G_RDI	0x38
#define G_R8	0x40
#define G_R9	0x48
#define G_R10	0x50
#define G_R11	0x58
#define G_R12	0x60
#define G_R13	0x68
#define G_R14	0x70
#define G_R15	0x78
#define G_CR2	0x80

#define HOST_RSP 0x6c14
#define HOST_RIP 0x6c16

.section .text, "ax"

SYM_FUNC_START(rkvm_vmx_vmlaunch)
	push	%rbp
	push	%r15
	push	%r14
	push	%r13
	push	%r12
	push	%rbx
	push	%rdi		/* 0(%rsp): gprs, found again after the exit */

	mov	$HOST_RSP, %eax
	vmwrite	%rsp, %rax
	jbe	.Lwrite_failed	/* CF or ZF: VMfail */
	lea	.Lvmexit(%rip), %rdx
	mov	$HOST_RIP, %eax
	vmwrite	%rdx, %rax
	jbe	.Lwrite_failed

	mov	G_CR2(%rdi), %rax
	mov	%rax, %cr2

	mov	G_RAX(%rdi), %rax
	mov	G_RCX(%rdi), %rcx
	mov	G_RDX(%rdi), %rdx
	mov	G_RBX(%rdi), %rbx
	mov	G_RBP(%rdi), %rbp
	mov	G_RSI(%rdi), %rsi
	mov	G_R8(%rdi),  %r8
	mov	G_R9(%rdi),  %r9
	mov	G_R10(%rdi), %r10
	mov	G_R11(%rdi), %r11
	mov	G_R12(%rdi), %r12
	mov	G_R13(%rdi), %r13
	mov	G_R14(%rdi), %r14
	mov	G_R15(%rdi), %r15
	mov	G_RDI(%rdi), %rdi

	vmlaunch

	/* Still here: VMLAUNCH failed. The registers hold guest values. */
	mov	$1, %eax
	jmp	.Lout

.Lvmexit:
	/* RSP is HOST_RSP again; RFLAGS is 0x2 (interrupts stay off). */
	xchg	%rdi, (%rsp)	/* gprs in RDI, the guest's RDI on the stack */
	mov	%rax, G_RAX(%rdi)
	mov	%rcx, G_RCX(%rdi)
	mov	%rdx, G_RDX(%rdi)
	mov	%rbx, G_RBX(%rdi)
	mov	%rbp, G_RBP(%rdi)
	mov	%rsi, G_RSI(%rdi)
	mov	%r8,  G_R8(%rdi)
	mov	%r9,  G_R9(%rdi)
	mov	%r10, G_R10(%rdi)
	mov	%r11, G_R11(%rdi)
	mov	%r12, G_R12(%rdi)
	mov	%r13, G_R13(%rdi)
	mov	%r14, G_R14(%rdi)
	mov	%r15, G_R15(%rdi)
	mov	(%rsp), %rax
	mov	%rax, G_RDI(%rdi)
	mov	%cr2, %rax
	mov	%rax, G_CR2(%rdi)
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

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * One trip into SVM guest mode and back.
 *
 *   void rkvm_svm_vmrun(u64 vmcb_pa, struct rkvm_gprs *gprs, u64 host_save_pa,
 *                       struct vmcb *vmcb, u64 dr7);
 *
 * `dr7`, unless 0, is moved to DR7 just before the guest GPRs are loaded:
 * the guest's armed DR7 for QEMU's emulation, which arms breakpoints on a
 * MOV to DR7 only (see pure::debug::host_preload_dr7).
 *
 * With GIF clear (no interrupt, NMI or SMI can arrive in between):
 * save the host's VMSAVE state (FS/GS/TR/LDTR bases, KernelGsBase, STAR and
 * friends, SYSENTER) to host_save_pa, load the guest's, load the guest GPRs
 * that the VMCB does not hold, VMRUN; after #VMEXIT store the guest GPRs and
 * VMSAVE state, reload the host's, and set GIF again. VMRUN itself saves and
 * restores RAX, RSP, RIP, RFLAGS, CR0/3/4, EFER and the descriptor tables
 * through the VM_HSAVE_PA area.
 *
 * struct rkvm_gprs is `Gprs` in svm/mod.rs: rbx, rcx, rdx, rsi, rdi, rbp,
 * r8..r15, 8 bytes each in that order.
 */
#include <linux/linkage.h>
#include <asm/asm.h>
#include <asm/ibt.h>

#include "../entry.h"

#define G_RBX	0x00
#define G_RCX	0x08
#define G_RDX	0x10
#define G_RSI	0x18
#define G_RDI	0x20
#define G_RBP	0x28
#define G_R8	0x30
#define G_R9	0x38
#define G_R10	0x40
#define G_R11	0x48
#define G_R12	0x50
#define G_R13	0x58
#define G_R14	0x60
#define G_R15	0x68

.section .text, "ax"

SYM_FUNC_START(rkvm_svm_vmrun)
	ENDBR			/* its address is taken (svm/mod.rs, host_state_in_vmcb) */
	/*
	 * RBP is saved like any callee-saved register, not set up as a frame
	 * pointer: it holds the guest's RBP until the final pops, and GIF stays
	 * clear until then, so nothing can unwind through this frame meanwhile.
	 */
	push	%rbp
	push	%r15
	push	%r14
	push	%r13
	push	%r12
	push	%rbx
	push	%rdx		/* 16(%rsp): host save area */
	push	%rsi		/*  8(%rsp): gprs */
	push	%rdi		/*  0(%rsp): vmcb */

	clgi

	mov	%rdx, %rax
	vmsave	%rax		/* host FS/GS/TR/LDTR/syscall MSRs */
	mov	%rdi, %rax
	vmload	%rax		/* the guest's */

	test	%r8, %r8
	jz	1f
	mov	%r8, %dr7
1:

	mov	G_RBX(%rsi), %rbx
	mov	G_RCX(%rsi), %rcx
	mov	G_RDX(%rsi), %rdx
	mov	G_RDI(%rsi), %rdi
	mov	G_RBP(%rsi), %rbp
	mov	G_R8(%rsi),  %r8
	mov	G_R9(%rsi),  %r9
	mov	G_R10(%rsi), %r10
	mov	G_R11(%rsi), %r11
	mov	G_R12(%rsi), %r12
	mov	G_R13(%rsi), %r13
	mov	G_R14(%rsi), %r14
	mov	G_R15(%rsi), %r15
	mov	G_RSI(%rsi), %rsi

	/*
	 * With V_INTR_MASKING the host's RFLAGS.IF decides whether a physical
	 * interrupt ends guest mode: set it for the guest's run. GIF is clear,
	 * so no interrupt is taken here; #VMEXIT clears GIF again, and CLI
	 * restores the caller's IF=0 before STGI.
	 */
	sti
	vmrun	%rax
	cli

	/* #VMEXIT: RAX (= vmcb_pa) and RSP are the host's again. */
	vmsave	%rax
	mov	%rsi, %rax
	mov	8(%rsp), %rsi
	mov	%rax, G_RSI(%rsi)
	mov	%rbx, G_RBX(%rsi)
	mov	%rcx, G_RCX(%rsi)
	mov	%rdx, G_RDX(%rsi)
	mov	%rdi, G_RDI(%rsi)
	mov	%rbp, G_RBP(%rsi)
	mov	%r8,  G_R8(%rsi)
	mov	%r9,  G_R9(%rsi)
	mov	%r10, G_R10(%rsi)
	mov	%r11, G_R11(%rsi)
	mov	%r12, G_R12(%rsi)
	mov	%r13, G_R13(%rsi)
	mov	%r14, G_R14(%rsi)
	mov	%r15, G_R15(%rsi)

	mov	16(%rsp), %rax
	vmload	%rax		/* host FS/GS/... back */

	xor	%eax, %eax
	RKVM_CLEAR_CALLER_SAVED

	add	$24, %rsp
	pop	%rbx
	pop	%r12
	pop	%r13
	pop	%r14
	pop	%r15
	pop	%rbp

	stgi
	RET
SYM_FUNC_END(rkvm_svm_vmrun)

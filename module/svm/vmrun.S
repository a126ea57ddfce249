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
 * struct rkvm_gprs is `Gprs` in ffi.rs, the 16 GPRs in x86 encoding
 * order at the offsets GPRS_* of layout.h (which ffi.rs checks); RAX and
 * RSP are the VMCB's, so their slots are left alone here.
 */
#include <linux/linkage.h>
#include <asm/asm.h>
#include <asm/ibt.h>

#include "../entry.h"
#include "../layout.h"


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

	mov	GPRS_RBX(%rsi), %rbx
	mov	GPRS_RCX(%rsi), %rcx
	mov	GPRS_RDX(%rsi), %rdx
	mov	GPRS_RDI(%rsi), %rdi
	mov	GPRS_RBP(%rsi), %rbp
	mov	GPRS_R8(%rsi),  %r8
	mov	GPRS_R9(%rsi),  %r9
	mov	GPRS_R10(%rsi), %r10
	mov	GPRS_R11(%rsi), %r11
	mov	GPRS_R12(%rsi), %r12
	mov	GPRS_R13(%rsi), %r13
	mov	GPRS_R14(%rsi), %r14
	mov	GPRS_R15(%rsi), %r15
	mov	GPRS_RSI(%rsi), %rsi

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
	mov	%rax, GPRS_RSI(%rsi)
	mov	%rbx, GPRS_RBX(%rsi)
	mov	%rcx, GPRS_RCX(%rsi)
	mov	%rdx, GPRS_RDX(%rsi)
	mov	%rdi, GPRS_RDI(%rsi)
	mov	%rbp, GPRS_RBP(%rsi)
	mov	%r8,  GPRS_R8(%rsi)
	mov	%r9,  GPRS_R9(%rsi)
	mov	%r10, GPRS_R10(%rsi)
	mov	%r11, GPRS_R11(%rsi)
	mov	%r12, GPRS_R12(%rsi)
	mov	%r13, GPRS_R13(%rsi)
	mov	%r14, GPRS_R14(%rsi)
	mov	%r15, GPRS_R15(%rsi)

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

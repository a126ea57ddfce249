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
 * struct rkvm_gprs is `SvmGprs` in ffi.rs: rbx, rcx, rdx, rsi, rdi, rbp,
 * r8..r15, at the offsets SVM_GPRS_* of layout.h (which ffi.rs checks).
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

	mov	SVM_GPRS_RBX(%rsi), %rbx
	mov	SVM_GPRS_RCX(%rsi), %rcx
	mov	SVM_GPRS_RDX(%rsi), %rdx
	mov	SVM_GPRS_RDI(%rsi), %rdi
	mov	SVM_GPRS_RBP(%rsi), %rbp
	mov	SVM_GPRS_R8(%rsi),  %r8
	mov	SVM_GPRS_R9(%rsi),  %r9
	mov	SVM_GPRS_R10(%rsi), %r10
	mov	SVM_GPRS_R11(%rsi), %r11
	mov	SVM_GPRS_R12(%rsi), %r12
	mov	SVM_GPRS_R13(%rsi), %r13
	mov	SVM_GPRS_R14(%rsi), %r14
	mov	SVM_GPRS_R15(%rsi), %r15
	mov	SVM_GPRS_RSI(%rsi), %rsi

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
	mov	%rax, SVM_GPRS_RSI(%rsi)
	mov	%rbx, SVM_GPRS_RBX(%rsi)
	mov	%rcx, SVM_GPRS_RCX(%rsi)
	mov	%rdx, SVM_GPRS_RDX(%rsi)
	mov	%rdi, SVM_GPRS_RDI(%rsi)
	mov	%rbp, SVM_GPRS_RBP(%rsi)
	mov	%r8,  SVM_GPRS_R8(%rsi)
	mov	%r9,  SVM_GPRS_R9(%rsi)
	mov	%r10, SVM_GPRS_R10(%rsi)
	mov	%r11, SVM_GPRS_R11(%rsi)
	mov	%r12, SVM_GPRS_R12(%rsi)
	mov	%r13, SVM_GPRS_R13(%rsi)
	mov	%r14, SVM_GPRS_R14(%rsi)
	mov	%r15, SVM_GPRS_R15(%rsi)

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

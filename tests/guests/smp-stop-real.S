/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Two vCPUs (rkvm run --smp 2 with an in-kernel local APIC), real mode:
 * the BSP turns on x2APIC mode, starts the AP with INIT and SIPI (vector 2:
 * the AP begins at 0x2000), waits until the AP has counted 100 rounds at
 * 0x500, each with a port write (an exit that the AP's thread hands to the
 * main thread), says so on COM1 and ends the run through the debug-exit
 * port while the AP goes on writing. The run must end there: the runner's
 * `*:smp_stop` tests (an AP waiting for the main thread's answer once hung
 * rkvm run at its end).
 */
	.code16
	.globl _start
_start:
	xor	%ax, %ax
	mov	%ax, %ds
	movw	$0, 0x500
	/* Interrupts on (none comes: nothing is programmed to send one), so
	 * that the spin below is not a guest-mode stretch with IF=0, which
	 * Bochs 2.7 does not interrupt (runner.sh, the reference under Bochs). */
	sti
	/* IA32_APIC_BASE: enabled (bit 11), x2APIC mode (bit 10). */
	mov	$0x1b, %ecx
	rdmsr
	or	$0xc00, %eax
	wrmsr
	/* The ICR (x2APIC MSR 0x830): EDX the destination, APIC ID 1. */
	mov	$0x830, %ecx
	mov	$1, %edx
	mov	$0x4500, %eax		/* INIT, level assert */
	wrmsr
	mov	$0x4602, %eax		/* start-up, vector 2: 0x2000 */
	wrmsr
	wrmsr				/* the second SIPI of the MP spec */
1:	cmpw	$100, 0x500
	jb	1b

	mov	$msg, %si
	call	puts
	mov	$0, %al
	out	%al, $0xf4
	hlt

msg:	.asciz	"The AP runs; the BSP ends the run.\n"
	.include "puts16.inc"

	/* The AP, from the SIPI: CS 0x200, IP 0. Counts and writes port 0x80
	 * (the POST port: an exit to userspace) without end. */
	.org	0x1000
ap:
	xor	%ax, %ax
	mov	%ax, %ds
5:	lock incw 0x500
	out	%al, $0x80
	jmp	5b

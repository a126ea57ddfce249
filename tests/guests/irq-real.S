/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Real mode: program the master 8259 (vectors 0x20-0x27, only IRQ5
 * unmasked), install a handler for vector 0x25, raise IRQ5 through the test
 * port 0xf5 and wait for the handler, which acknowledges with an EOI. Checks
 * the PIC model and the KVM_INTERRUPT / interrupt-window path end to end.
 */
	.code16
	.include "pic16.inc"
	.globl _start
_start:
	cli
	pic_route 5, handler

	mov	$msg_before, %si
	call	puts
	sti
	mov	$5, %al
	out	%al, $0xf5		/* raise IRQ5 */
1:	cmpb	$1, done
	jne	1b
	mov	$msg_after, %si
	call	puts
	mov	$0, %al
	out	%al, $0xf4

handler:
	push	%ax
	push	%si
	mov	$msg_handler, %si
	call	puts
	movb	$1, done
	mov	$0x20, %al		/* non-specific EOI */
	out	%al, $0x20
	pop	%si
	pop	%ax
	iret

	.include "puts16.inc"

done:		.byte	0
msg_before:	.asciz	"before the interrupt\n"
msg_handler:	.asciz	"in the IRQ5 handler (vector 0x25)\n"
msg_after:	.asciz	"after the interrupt\n"

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Real mode: interrupt-driven output. With the UART's transmitter-empty
 * interrupt on IRQ4 (vector 0x24), the handler sends the next byte of the
 * message each time the transmitter is empty, as an 8250 driver does.
 * Checks the UART's interrupt, the PIC and injection together.
 */
	.code16
	.include "pic16.inc"
	.globl _start
_start:
	cli
	pic_route 4, com1

	mov	$0x3f9, %dx		/* IER: transmitter-empty interrupt */
	mov	$0x02, %al
	out	%al, %dx
	sti
1:	cmpb	$1, done
	jne	1b
	mov	$0, %al
	out	%al, $0xf4

com1:
	push	%ax
	push	%dx
	push	%si
	mov	$0x3fa, %dx		/* IIR: which interrupt (and acknowledge it) */
	in	%dx, %al
	mov	next, %si
	lodsb
	test	%al, %al
	jz	2f
	mov	$0x3f8, %dx
	out	%al, %dx		/* the next byte */
	mov	%si, next
	jmp	3f
2:	mov	$0x3f9, %dx		/* all sent: interrupts off, done */
	xor	%al, %al
	out	%al, %dx
	movb	$1, done
3:	mov	$0x20, %al		/* EOI */
	out	%al, $0x20
	pop	%si
	pop	%dx
	pop	%ax
	iret

done:	.byte	0
next:	.word	msg
msg:	.asciz	"sent byte by byte from the COM1 interrupt handler\n"

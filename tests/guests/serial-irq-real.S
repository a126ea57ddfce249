/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Real mode: interrupt-driven output. With the UART's transmitter-empty
 * interrupt on IRQ4 (vector 0x24), the handler sends the next byte of the
 * message each time the transmitter is empty, as an 8250 driver does.
 * Checks the UART's interrupt, the PIC and injection together.
 */
	.code16
	.globl _start
_start:
	cli
	mov	$0x11, %al		/* 8259: vectors 0x20-0x27 */
	out	%al, $0x20
	mov	$0x20, %al
	out	%al, $0x21
	mov	$0x04, %al
	out	%al, $0x21
	mov	$0x01, %al
	out	%al, $0x21
	mov	$0xef, %al		/* only IRQ4 unmasked */
	out	%al, $0x21
	movw	$com1, 0x24 * 4		/* IVT[0x24] = 0000:com1 */
	movw	$0, 0x24 * 4 + 2

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

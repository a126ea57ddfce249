/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Real mode: program the 8254's channel 0 as Linux does for its 100 Hz tick
 * (mode 2, count 11932), route IRQ0 through the 8259 to vector 0x20, and
 * sleep in HLT until three ticks have arrived. Checks the PIT model, the
 * timer kick of KVM_RUN and HLT waiting for an interrupt.
 */
	.code16
	.globl _start
_start:
	cli
	mov	$0x11, %al		/* 8259: ICW1-4, vectors 0x20-0x27 */
	out	%al, $0x20
	mov	$0x20, %al
	out	%al, $0x21
	mov	$0x04, %al
	out	%al, $0x21
	mov	$0x01, %al
	out	%al, $0x21
	mov	$0xfe, %al		/* only IRQ0 unmasked */
	out	%al, $0x21
	movw	$tick, 0x20 * 4		/* IVT[0x20] = 0000:tick */
	movw	$0, 0x20 * 4 + 2

	mov	$0x34, %al		/* 8254: channel 0, lo/hi, mode 2 */
	out	%al, $0x43
	mov	$11932 & 0xff, %al
	out	%al, $0x40
	mov	$11932 >> 8, %al
	out	%al, $0x40

	mov	$msg_start, %si
	call	puts
	sti
1:	hlt
	cmpb	$3, ticks
	jb	1b
	cli
	mov	$msg_done, %si
	call	puts
	mov	$0, %al
	out	%al, $0xf4

tick:
	push	%ax
	incb	ticks
	mov	$0x20, %al		/* EOI */
	out	%al, $0x20
	pop	%ax
	iret

	.include "puts16.inc"

ticks:		.byte	0
msg_start:	.asciz	"timer programmed: 100 Hz\n"
msg_done:	.asciz	"3 ticks\n"

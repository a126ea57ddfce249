/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Real mode: program the 8254's channel 0 as Linux does for its 100 Hz tick
 * (mode 2, count 11932), route IRQ0 through the 8259 to vector 0x20, and
 * sleep in HLT until three ticks have arrived. Checks the PIT model, the
 * timer kick of KVM_RUN and HLT waiting for an interrupt.
 */
	.code16
	.include "pic16.inc"
	.globl _start
_start:
	cli
	pic_route 0, tick

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

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Real mode: print a line on COM1, polling the UART's line status, then end
 * the run through the debug-exit port with status 0.
 */
	.code16
	.globl _start
_start:
	mov	$msg, %si
1:	mov	$0x3fd, %dx		/* line status register */
2:	in	%dx, %al
	test	$0x20, %al		/* transmitter holding register empty? */
	jz	2b
	lodsb
	test	%al, %al
	jz	3f
	mov	$0x3f8, %dx
	out	%al, %dx
	jmp	1b
3:	mov	$0, %al
	out	%al, $0xf4
	hlt

msg:	.asciz	"Hello from real mode, through KVM_EXIT_IO.\n"

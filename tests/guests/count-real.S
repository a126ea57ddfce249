/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Real mode: counts from 0 to 99, a line on COM1 each, keeping state in
 * every place a saved guest must get back (rkvm run --save / --restore,
 * t_save_restore): the count in %bx, a running checksum in %edi, the sum
 * of the counts on the x87 stack (st0), and memory (the digits). At the
 * end it prints the sum (4950) and the checksum, then exits with status
 * 0 through the debug-exit port. Each byte is an IN (line status, its
 * value completed by the next KVM_RUN) and an OUT: 759 I/O exits to
 * userspace, any of which may be the one a save follows.
 */
	.code16
	.globl _start
_start:
	fninit
	fldz				/* st0: the sum */
	xor	%ebx, %ebx		/* the count */
	mov	$0x12345678, %edi	/* the checksum */
1:	mov	%bx, %ax
	mov	$10, %cl
	div	%cl			/* al = tens, ah = units */
	add	$0x3030, %ax
	mov	%ax, line		/* "NN\n" in memory */
	mov	$line, %si
	call	puts
	mov	%bx, count
	fiadds	count			/* st0 += count */
	rol	$3, %edi
	xor	%ebx, %edi
	inc	%bx
	cmp	$100, %bx
	jne	1b

	fistps	count			/* the sum, off the x87 stack */
	mov	$sum, %si
	call	puts
	mov	%edi, %ebp		/* keep the checksum from %di's use */
	mov	count, %ax		/* four decimal digits */
	mov	$digits + 4, %di
2:	xor	%dx, %dx
	mov	$10, %cx
	div	%cx
	add	$0x30, %dl
	dec	%di
	mov	%dl, (%di)
	cmp	$digits, %di
	jne	2b
	mov	$digits, %si
	call	puts
	mov	$check, %si
	call	puts
	mov	$hex + 8, %di		/* eight hex digits of the checksum */
3:	mov	%ebp, %eax
	and	$0xf, %al
	add	$0x30, %al
	cmp	$0x39, %al
	jbe	4f
	add	$7, %al
4:	dec	%di
	mov	%al, (%di)
	shr	$4, %ebp
	cmp	$hex, %di
	jne	3b
	mov	$hex, %si
	call	puts
	mov	$0, %al
	out	%al, $0xf4
	hlt

	.include "puts16.inc"

line:	.ascii	"00\n"
	.byte	0
count:	.word	0
sum:	.asciz	"sum "
digits:	.ascii	"0000\n"
	.byte	0
check:	.asciz	"checksum "
hex:	.ascii	"00000000\n"
	.byte	0

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Real mode: read the debug registers' reset values, write DR0-DR3, DR6 and
 * DR7 and read them back (DR4 and DR5 alias DR6 and DR7 while CR4.DE is
 * clear; with CR4.DE set they raise #UD), printing each value in hex. The
 * fixed bits of DR6 and DR7 must survive the writes. No breakpoint is ever
 * enabled.
 *
 * The values avoid DR6 bit 12 and DR7 bits 12, 14 and 15: the APM has them
 * read as zero (rkvm and KVM's emulator mask them), but QEMU's TCG, which
 * the reference KVM lets the guest reach directly, keeps what was written.
 */
	.code16
	.globl _start
_start:
	mov	$msg_reset, %si
	call	puts
	mov	%dr6, %eax
	call	hex32
	mov	%dr7, %eax
	call	hex32
	call	newline

	mov	$msg_dr03, %si
	call	puts
	mov	$0x12345678, %eax
	mov	%eax, %dr0
	mov	$0x9abcdef0, %eax
	mov	%eax, %dr1
	mov	$0x0badf00d, %eax
	mov	%eax, %dr2
	mov	$0xfffffffc, %eax
	mov	%eax, %dr3
	mov	%dr0, %eax
	call	hex32
	mov	%dr1, %eax
	call	hex32
	mov	%dr2, %eax
	call	hex32
	mov	%dr3, %eax
	call	hex32
	call	newline

	mov	$msg_dr6, %si
	call	puts
	mov	$0xffffefff, %eax	/* all but bit 12 (see below) */
	mov	%eax, %dr6
	mov	%dr6, %eax
	call	hex32
	xor	%eax, %eax		/* the fixed ones stay one */
	mov	%eax, %dr6
	mov	%dr6, %eax
	call	hex32
	mov	%dr4, %eax		/* DR4 is DR6 */
	call	hex32
	call	newline

	mov	$msg_dr7, %si
	call	puts
	mov	$0xffff0300, %eax	/* no L/G enables, no GD */
	mov	%eax, %dr7
	mov	%dr7, %eax
	call	hex32
	mov	%dr5, %eax		/* DR5 is DR7 */
	call	hex32
	xor	%eax, %eax
	mov	%eax, %dr7
	mov	%dr7, %eax
	call	hex32
	call	newline

	/* With CR4.DE set, DR4 and DR5 are reserved: both moves raise #UD. */
	movw	$ud_handler, 6 * 4	/* IVT[6] = 0000:ud_handler */
	movw	$0, 6 * 4 + 2
	mov	%cr4, %eax
	or	$8, %eax		/* CR4.DE */
	mov	%eax, %cr4
	mov	%dr4, %eax
	mov	%eax, %dr5
	mov	$msg_de, %si
	call	puts
	movzbl	ud_count, %eax
	call	hex32
	call	newline

	mov	$0, %al
	out	%al, $0xf4
	hlt

/* #UD: count it and skip the 3-byte mov. */
ud_handler:
	push	%bp
	mov	%sp, %bp
	addw	$3, 2(%bp)
	incb	ud_count
	pop	%bp
	iret

/* Prints a space and %eax as eight hex digits. Clobbers %eax. */
hex32:	push	%cx
	push	%ax
	mov	$' ', %al
	call	putc
	pop	%ax
	mov	$8, %cx
1:	rol	$4, %eax
	push	%ax
	and	$0xf, %al
	add	$'0', %al
	cmp	$'9', %al
	jbe	2f
	add	$'a' - '0' - 10, %al
2:	call	putc
	pop	%ax
	loop	1b
	pop	%cx
	ret

newline:
	mov	$'\n', %al
/* Prints %al on COM1. */
putc:	push	%dx
	mov	%al, %ah
	mov	$0x3fd, %dx
1:	in	%dx, %al
	test	$0x20, %al
	jz	1b
	mov	%ah, %al
	mov	$0x3f8, %dx
	out	%al, %dx
	pop	%dx
	ret

	.include "puts16.inc"

msg_reset:	.asciz	"reset   dr6 dr7:"
msg_dr03:	.asciz	"dr0-dr3:        "
msg_dr6:	.asciz	"dr6 dr6 dr4:    "
msg_dr7:	.asciz	"dr7 dr5 dr7:    "
msg_de:		.asciz	"#UD with DE:    "
ud_count:	.byte	0

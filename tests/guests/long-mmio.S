/* SPDX-License-Identifier: GPL-2.0 */
/*
 * 64-bit mode: compute fib(90) with 64-bit arithmetic, print it in hex on
 * COM1, touch an MMIO address (no device: reads return all ones), print
 * what was read, and end with status 42 through the debug-exit port.
 */
	.code64
	.globl _start
_start:
	xor	%eax, %eax		/* fib(0) */
	mov	$1, %ebx		/* fib(1) */
	mov	$90, %ecx
1:	lea	(%rax,%rbx), %rdx
	mov	%rbx, %rax
	mov	%rdx, %rbx
	loop	1b
	push	%rax
	lea	msg_fib(%rip), %rsi
	call	puts			/* clobbers %al */
	pop	%rax
	call	puthex			/* fib(90) in %rax */

	mov	$0x3f000000, %edi	/* mapped, but no memory slot there: MMIO */
	movl	$0x12345678, (%rdi)
	mov	(%rdi), %eax
	push	%rax
	lea	msg_mmio(%rip), %rsi
	call	puts
	pop	%rax
	call	puthex

	mov	$42, %al
	out	%al, $0xf4
	hlt

/* Prints the NUL-terminated string at %rsi. */
puts:	lodsb
	test	%al, %al
	jz	2f
	mov	$0x3f8, %dx
	out	%al, %dx
	jmp	puts
2:	ret

/* Prints %rax as 16 hex digits and a newline. */
puthex:	mov	%rax, %r8
	mov	$16, %ecx
3:	rol	$4, %r8
	mov	%r8d, %eax
	and	$0xf, %eax
	lea	digits(%rip), %rbx
	mov	(%rbx,%rax), %al
	mov	$0x3f8, %dx
	out	%al, %dx
	loop	3b
	mov	$'\n', %al
	out	%al, %dx
	ret

digits:		.ascii	"0123456789abcdef"
msg_fib:	.asciz	"fib(90) = 0x"
msg_mmio:	.asciz	"MMIO read = 0x"

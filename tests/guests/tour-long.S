/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The guest of Documentation/execution-model.md: one exit of each kind that
 * reaches userspace, and one (CPUID) that the kernel handles by itself.
 * It prints nothing and ends with HLT (status 0).
 */
	.code64
	.globl _start
_start:
	mov	$0x41, %al
	out	%al, $0x80		/* port I/O out: no device there */
	mov	$0x3fd, %dx
	in	%dx, %al		/* port I/O in: the UART's line status */
	movl	$0xfeedf00d, 0x3f000000	/* MMIO write: no memory slot there */
	mov	0x3f000004, %ebx	/* MMIO read */
	xor	%eax, %eax
	cpuid				/* handled in the kernel: no exit to userspace */
	/*
	 * The answer is each hypervisor's own (rkvm and KVM support different
	 * leaves): clear it, so that the differential check of the final
	 * registers compares only what must be equal.
	 */
	xor	%eax, %eax
	xor	%ebx, %ebx
	xor	%ecx, %ecx
	xor	%edx, %edx
	hlt				/* KVM_EXIT_HLT */

/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Real mode: 20000 CPUIDs, each an exit the kernel handles by itself, then
 * the debug-exit port with status 0. The exit-heavy load of the test that
 * measures what recording exits costs (exit_trace_overhead); as a guest
 * test it checks that none of those exits reaches userspace.
 */
	.code16
	.globl _start
_start:
	mov	$20000, %esi
1:	xor	%eax, %eax
	cpuid
	dec	%esi
	jnz	1b
	mov	$0, %al
	out	%al, $0xf4

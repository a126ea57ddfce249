/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the two guest-entry stubs (svm/vmrun.S, vmx/vmenter.S) share.
 */
#ifndef RKVM_ENTRY_H
#define RKVM_ENTRY_H

/*
 * After guest mode: no guest value survives in a caller-saved register
 * (RAX aside: a stub's return value, or cleared by the caller of this).
 */
.macro RKVM_CLEAR_CALLER_SAVED
	xor	%ecx, %ecx
	xor	%edx, %edx
	xor	%esi, %esi
	xor	%edi, %edi
	xor	%r8d, %r8d
	xor	%r9d, %r9d
	xor	%r10d, %r10d
	xor	%r11d, %r11d
.endm

#endif

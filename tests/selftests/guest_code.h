/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Guest code for the selftests and the microbenchmarks, written in
 * assembler and assembled with the test (GCC's AT&T syntax):
 *
 *	GUEST_CODE16(hello_code,
 *		"	mov $0x42, %al\n"
 *		"	out %al, $0x10\n"
 *		"	hlt\n");
 *
 * at file scope defines `const uint8_t hello_code[], hello_code_end[]`
 * around the bytes, in a read-only data section of its own; then
 * LOAD_GUEST_CODE(vm->mem, 0x1000, hello_code) copies them to guest
 * physical 0x1000. GUEST_CODE16 assembles for real mode (and 16-bit
 * protected mode), GUEST_CODE32 for 32-bit protected mode, GUEST_CODE64
 * for long mode; a blob may switch with .code16/.code32/.code64 itself,
 * and the assembler is back in 64-bit mode after every blob, so the C
 * code after it is unaffected.
 *
 * The bytes are position-independent unless written otherwise: jumps go
 * to labels inside the blob (local ones such as `1:` and `jmp 1b`, or the
 * blob's own name), which the assembler turns into relative jumps. An
 * absolute address (a far jump's target, a memory operand) is where the
 * blob is loaded plus a label's offset in it, e.g.
 * `ljmp $8, $0x1000 + (1f - name)`, or a constant.
 *
 * The symbols are local to the file's assembly (no .globl): a name may be
 * used again in another test file, not twice in one, and must not be the
 * name of a C function or object of the file (the harness's TEST_F(f, t)
 * defines f_t and others), hence the _code suffix by convention.
 */
#ifndef RKVM_SELFTEST_GUEST_CODE_H
#define RKVM_SELFTEST_GUEST_CODE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define GUEST_CODE(name, mode, body)					\
	extern const uint8_t name[], name##_end[];			\
	__asm__(".pushsection .rodata.guest_code, \"a\"\n"		\
		mode "\n"						\
		#name ":\n"						\
		body							\
		"\n" #name "_end:\n"					\
		".code64\n"						\
		".popsection\n")

#define GUEST_CODE16(name, body)	GUEST_CODE(name, ".code16", body)
#define GUEST_CODE32(name, body)	GUEST_CODE(name, ".code32", body)
#define GUEST_CODE64(name, body)	GUEST_CODE(name, ".code64", body)

/* The size in bytes of the guest code `name`. */
#define GUEST_CODE_SIZE(name)	((size_t)((uintptr_t)name##_end - (uintptr_t)name))

/* Copies the guest code `name` to guest physical `gpa` of guest memory `mem`. */
#define LOAD_GUEST_CODE(mem, gpa, name)					\
	memcpy((mem) + (gpa), name, GUEST_CODE_SIZE(name))

#endif

// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for rkvm: kernel facilities that are static inlines or macros and
 * so have no symbol Rust could call. Each is a one-line wrapper; the logic
 * stays in Rust.
 */

#include <linux/types.h>
#include <asm/msr.h>

/* Reads an MSR; returns 0, or -EIO if the RDMSR faulted (#GP). */
int rkvm_rdmsr_safe(u32 msr, u64 *val)
{
	return rdmsrq_safe(msr, val);
}

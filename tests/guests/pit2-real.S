/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Real mode: the 8254's channel 2 through port 0x61, the way Linux's
 * pit_calibrate_tsc() uses it: gate on and speaker off at port 0x61,
 * channel 2 in mode 0, then poll port 0x61 bit 5 (OUT2) until the count
 * runs out. Checks that OUT2 starts low, that a latched count goes down
 * between two reads, and that OUT2 rises; the guest counts its polls in
 * %ecx (timing-dependent, so no exit-trace diff). The count is the
 * longest, 65536 (55 ms of the host's time, which the PIT model follows).
 * The checks before the polling must see the count still running: on a
 * loaded host the guest can be held up longer than that between two of
 * them (a regression: with 10 ms they once were), so an attempt whose
 * count already ran out says nothing and is made again, up to 8 times.
 * Only OUT2 high at once in every attempt, or a count that does not go
 * down while OUT2 is still low, is a failure: no speed limit.
 */
	.code16
	.globl _start
_start:
	cli
	in	$0x61, %al
	and	$~0x02, %al		/* speaker off */
	or	$0x01, %al		/* gate 2 on */
	out	%al, $0x61
	mov	$8, %di			/* attempts */
attempt:
	mov	$0xb0, %al		/* channel 2, lo/hi, mode 0, binary: OUT2 low */
	out	%al, $0x43
	xor	%al, %al		/* count 0: 65536, 55 ms */
	out	%al, $0x42
	out	%al, $0x42

	in	$0x61, %al
	test	$0x20, %al
	jnz	ran_out
	call	read_count2
	mov	%ax, %bx
	call	read_count2
	mov	%ax, %dx
	in	$0x61, %al		/* still running: the two counts are comparable */
	test	$0x20, %al
	jnz	ran_out
	cmp	%bx, %dx
	jae	fail_count
	mov	$msg_low, %si
	call	puts
	mov	$msg_counts, %si
	call	puts

	xor	%ecx, %ecx
1:	inc	%ecx
	in	$0x61, %al
	test	$0x20, %al
	jz	1b
	mov	$msg_high, %si
	call	puts
	mov	$0, %al
	out	%al, $0xf4

/* Latches channel 2 and reads its count into %ax. */
read_count2:
	mov	$0x80, %al		/* counter latch, channel 2 */
	out	%al, $0x43
	in	$0x42, %al
	mov	%al, %ah
	in	$0x42, %al
	xchg	%al, %ah
	ret

/* The count ran out before the checks were done: again, or give up. */
ran_out:
	dec	%di
	jnz	attempt
	mov	$msg_fail_early, %si
	jmp	fail
fail_count:
	mov	$msg_fail_count, %si
fail:	call	puts
	mov	$1, %al
	out	%al, $0xf4

	.include "puts16.inc"

msg_low:	.asciz	"OUT2 low after programming\n"
msg_counts:	.asciz	"channel 2 counts down\n"
msg_high:	.asciz	"OUT2 high: the 55 ms count ran out\n"
msg_fail_early:	.asciz	"FAIL: OUT2 high at once, in 8 attempts\n"
msg_fail_count:	.asciz	"FAIL: the latched count did not go down\n"

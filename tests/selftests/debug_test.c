// SPDX-License-Identifier: GPL-2.0
/*
 * FPU state (KVM_GET/SET_FPU, kept across exits) and single-stepping with
 * KVM_SET_GUEST_DEBUG (KVM_EXIT_DEBUG after every instruction).
 */
#include "harness.h"
#include "vm.h"
#include "guest_code.h"

VM_FIXTURE(vcpu)

/*
 * KVM_GET/SET_FPU read and write the legacy FXSAVE image. On real KVM with
 * XSAVE they do not see state the XSAVE "init optimization" left out (the
 * reference reads MXCSR as 0 and loses SET_FPU's XMM values; VMMs use
 * KVM_GET/SET_XSAVE there), so these checks run on rkvm only.
 */
TEST_F(vcpu, fpu_reset_state)
{
	struct kvm_fpu fpu;

	if (!testing_rkvm())
		SKIP(return, "KVM's legacy FPU view misses XSAVE init state");
	ASSERT_EQ(0, ioctl(self->vm.vcpu, KVM_GET_FPU, &fpu));
	EXPECT_EQ(0x37f, fpu.fcw);
	EXPECT_EQ(0x1f80, fpu.mxcsr);
}

/*
 * XMM registers set by userspace reach the guest, and what the guest puts
 * in them survives an exit to userspace and back.
 */
GUEST_CODE16(sse_code,
	"	movd %xmm0, %eax\n"		/* set by KVM_SET_FPU */
	"	out %al, $0x10\n"
	"	mov $0x5a5a5a5a, %eax\n"
	"	movd %eax, %xmm1\n"
	"	out %al, $0x11\n"		/* XMM1 must survive this exit */
	"	movd %xmm1, %ebx\n"
	"	hlt\n");

TEST_F(vcpu, sse_state_survives_exits)
{
	struct vm *vm = &self->vm;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_fpu fpu;
	uint32_t x;

	LOAD_GUEST_CODE(vm->mem, 0x1000, sse_code);
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_SREGS, &sregs));
	sregs.cr4 |= 1 << 9;			/* OSFXSR: SSE allowed */
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_SREGS, &sregs));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_FPU, &fpu));
	x = 0xc0ffee11;
	memcpy(fpu.xmm[0], &x, 4);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_FPU, &fpu));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	if (testing_rkvm())
		EXPECT_EQ(0xc0ffee11, regs.rax & 0xffffffff);

	/* The guest's own XMM1 survives this exit to userspace (on both). */
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x11, vm->run->io.port);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_FPU, &fpu));
	memcpy(&x, fpu.xmm[1], 4);
	if (testing_rkvm())
		EXPECT_EQ(0x5a5a5a5a, x);

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0x5a5a5a5a, regs.rbx & 0xffffffff);
}

/* rkvm refuses an MXCSR with reserved bits: its FXRSTOR would fault. */
TEST_F(vcpu, set_fpu_checks_mxcsr)
{
	struct kvm_fpu fpu;

	if (!testing_rkvm())
		SKIP(return, "KVM takes this value and resets the FPU later");
	ASSERT_EQ(0, ioctl(self->vm.vcpu, KVM_GET_FPU, &fpu));
	fpu.mxcsr = 0xffffffff;
	EXPECT_ERRNO(EINVAL, ioctl(self->vm.vcpu, KVM_SET_FPU, &fpu));
}

/*
 * KVM_GUESTDBG_SINGLESTEP: one KVM_EXIT_DEBUG per instruction, with the
 * linear address of the next one; TF never shows in RFLAGS; turning it off
 * lets the guest run on.
 */
GUEST_CODE16(single_step_code,			/* one byte each: 0x1000-0x1003 */
	"	nop\n"
	"	inc %ax\n"
	"	nop\n"
	"	hlt\n");

TEST_F(vcpu, single_step)
{
	struct kvm_guest_debug dbg = {
		.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP,
	};
	struct vm *vm = &self->vm;
	struct kvm_regs regs;
	uint64_t pc;

	LOAD_GUEST_CODE(vm->mem, 0x1000, single_step_code);
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_GUEST_DEBUG, &dbg));
	for (pc = 0x1001; pc <= 0x1003; pc++) {
		ASSERT_EQ(0, vm_run(vm));
		ASSERT_EQ(KVM_EXIT_DEBUG, vm->run->exit_reason);
		EXPECT_EQ(1, vm->run->debug.arch.exception);
		EXPECT_EQ(pc, vm->run->debug.arch.pc);
		EXPECT_NE(0, vm->run->debug.arch.dr6 & (1 << 14));	/* BS */
		ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
		EXPECT_EQ(pc, regs.rip);
		EXPECT_EQ(0, regs.rflags & (1 << 8));			/* no TF */
	}
	EXPECT_EQ(1, regs.rax & 0xffff);
	dbg.control = 0;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_GUEST_DEBUG, &dbg));
	ASSERT_EQ(0, vm_run(vm));
	EXPECT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);

	/* A bit KVM does not know is ignored, by both. */
	dbg.control = 0x80000000;
	EXPECT_EQ(0, ioctl(vm->vcpu, KVM_SET_GUEST_DEBUG, &dbg));
	/* Breakpoints: rkvm refuses what it does not implement (CAP_SET_GUEST_DEBUG2 says so). */
	dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP;
	if (testing_rkvm())
		EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_SET_GUEST_DEBUG, &dbg));
}

TEST_HARNESS_MAIN

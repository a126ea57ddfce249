// SPDX-License-Identifier: GPL-2.0
/*
 * FPU state (KVM_GET/SET_FPU, kept across exits); guest debugging with
 * KVM_SET_GUEST_DEBUG (single-stepping, software breakpoints, hardware
 * breakpoints and watchpoints: KVM_EXIT_DEBUG); KVM_GET/SET_DEBUGREGS; and a
 * guest whose own hardware breakpoints fire inside it.
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
	/*
	 * rkvm refuses what it does not implement (INJECT_DB, BLOCKIRQ), and
	 * KVM_CAP_SET_GUEST_DEBUG2 says so.
	 */
	dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_DB;
	if (testing_rkvm()) {
		int fd = open_device();
		int caps;

		EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_SET_GUEST_DEBUG, &dbg));
		caps = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_SET_GUEST_DEBUG2);
		EXPECT_EQ(KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP |
			  KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_USE_HW_BP |
			  KVM_GUESTDBG_INJECT_BP, caps);
		close(fd);
	}
}

/* Where the long-mode debug guests keep things (guest physical = linear). */
#define DBG_CODE	0x1000
#define DBG_GDT		0x3000
#define DBG_IDT		0x4000
#define DBG_DATA	0x6000
#define DBG_AT(name, label)	(DBG_CODE + (uint64_t)((label) - (name)))

static void set_debug(struct __test_metadata *_metadata, struct vm *vm,
		      uint32_t control, const uint64_t debugreg[8])
{
	struct kvm_guest_debug dbg = { .control = control };

	if (debugreg)
		memcpy(dbg.arch.debugreg, debugreg, sizeof(dbg.arch.debugreg));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_GUEST_DEBUG, &dbg));
}

/*
 * For a long-mode debug guest with a handler of its own: a GDT (0x08 64-bit
 * code, 0x10 data), CS from it, and an IDT whose entry `vector` is a 64-bit
 * interrupt gate to `handler`.
 */
static void set_idt_gate(struct __test_metadata *_metadata, struct vm *vm,
			 unsigned int vector, uint64_t handler)
{
	struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = 8, .type = 0xb,
		.present = 1, .s = 1, .l = 1, .g = 1,
	};
	uint64_t *gdt = (uint64_t *)(vm->mem + DBG_GDT);
	uint64_t *idt = (uint64_t *)(vm->mem + DBG_IDT);
	struct kvm_sregs sregs;

	gdt[1] = 0x00209b0000000000ULL;			/* 0x08: 64-bit code */
	gdt[2] = 0x0000930000000000ULL;			/* 0x10: data */
	idt[2 * vector] = (handler & 0xffff) | (8ULL << 16) | (0x8eULL << 40) |
			  ((handler >> 16 & 0xffff) << 48);
	idt[2 * vector + 1] = handler >> 32;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_SREGS, &sregs));
	sregs.cs = code;
	sregs.gdt.base = DBG_GDT;
	sregs.gdt.limit = 3 * 8 - 1;
	sregs.idt.base = DBG_IDT;
	sregs.idt.limit = 256 * 16 - 1;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_SREGS, &sregs));
}

/*
 * KVM_GUESTDBG_USE_SW_BP: the INT3 is a KVM_EXIT_DEBUG with exception 3 and
 * its own address; the guest never sees it (it has no IDT: a #BP delivered
 * to it would end in a triple fault). The debugger steps past it.
 */
GUEST_CODE64(sw_bp_code,
	"	nop\n"
	"	int3\n"				/* 0x1001 */
	"	mov $0x42, %eax\n"
	"	out %al, $0x10\n"
	"	hlt\n");

TEST_F(vcpu, sw_breakpoint)
{
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	LOAD_GUEST_CODE(vm->mem, DBG_CODE, sw_bp_code);
	ASSERT_EQ(0, vm_long_mode(vm, DBG_CODE));
	set_debug(_metadata, vm, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP, NULL);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_DEBUG, vm->run->exit_reason);
	EXPECT_EQ(3, vm->run->debug.arch.exception);
	EXPECT_EQ(DBG_CODE + 1, vm->run->debug.arch.pc);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(DBG_CODE + 1, regs.rip);
	/* Again at the same place: the INT3 has not run. */
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_DEBUG, vm->run->exit_reason);
	EXPECT_EQ(DBG_CODE + 1, vm->run->debug.arch.pc);
	/* The debugger moves past it (as if it had put back the original byte). */
	regs.rip++;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_REGS, &regs));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x10, vm->run->io.port);
	EXPECT_EQ(0x42, *vm_pio_data(vm));
}

/*
 * KVM_GUESTDBG_INJECT_BP: an INT3 of the guest's own, which USE_SW_BP made a
 * KVM_EXIT_DEBUG, given back to the guest as a debugger does with one that
 * is not its breakpoint (QEMU's kvm_handle_debug). The guest's #BP handler
 * (IDT[3]) reports the return address of its frame (port 0x11): past the
 * INT3, as when the INT3 runs natively. Then the guest goes on (0x12).
 * With the #BP queued, another INJECT_BP is EBUSY, as in KVM.
 */
GUEST_CODE64(inject_bp_code,
	"	nop\n"
	"	int3\n"				/* 0x1001 */
	"	out %al, $0x12\n"
	"	hlt\n"
	"inject_bp_handler:\n"
	"	mov (%rsp), %rax\n"
	"	out %eax, $0x11\n"
	"	iretq\n");
extern const uint8_t inject_bp_handler[];

TEST_F(vcpu, inject_bp)
{
	struct vm *vm = &self->vm;
	struct kvm_guest_debug dbg = {
		.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_INJECT_BP,
	};

	LOAD_GUEST_CODE(vm->mem, DBG_CODE, inject_bp_code);
	ASSERT_EQ(0, vm_long_mode(vm, DBG_CODE));
	set_idt_gate(_metadata, vm, 3, DBG_AT(inject_bp_code, inject_bp_handler));

	set_debug(_metadata, vm, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP, NULL);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_DEBUG, vm->run->exit_reason);
	EXPECT_EQ(3, vm->run->debug.arch.exception);
	EXPECT_EQ(DBG_CODE + 1, vm->run->debug.arch.pc);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_GUEST_DEBUG, &dbg));
	EXPECT_ERRNO(EBUSY, ioctl(vm->vcpu, KVM_SET_GUEST_DEBUG, &dbg));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason)
		TH_LOG("exit reason %u", vm->run->exit_reason);
	ASSERT_EQ(0x11, vm->run->io.port);
	EXPECT_EQ(DBG_CODE + 2, *(uint32_t *)vm_pio_data(vm));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x12, vm->run->io.port);
}

/*
 * KVM_GUESTDBG_USE_HW_BP: the debugger's DR0-DR3/DR7 are armed in guest
 * mode. An execute breakpoint (DR0) stops before the instruction (a fault:
 * RIP is its address); a write watchpoint (DR1, 4 bytes) after the write
 * (a trap). DR6 in kvm_run says which; DR7 is the debugger's. The guest's
 * own DR7 is untouched.
 */
GUEST_CODE64(hw_bp_code,
	"	nop\n"
	"hw_bp_exec:\n"
	"	mov $0x1234, %eax\n"
	"	mov %eax, 0x6000\n"
	"hw_bp_after_write:\n"
	"	nop\n"
	"	out %al, $0x10\n"
	"	hlt\n");
extern const uint8_t hw_bp_exec[], hw_bp_after_write[];

TEST_F(vcpu, hw_breakpoint_and_watchpoint)
{
	uint64_t debugreg[8] = { 0 };
	struct vm *vm = &self->vm;
	struct kvm_debugregs dregs;
	struct kvm_regs regs;

	LOAD_GUEST_CODE(vm->mem, DBG_CODE, hw_bp_code);
	ASSERT_EQ(0, vm_long_mode(vm, DBG_CODE));
	debugreg[0] = DBG_AT(hw_bp_code, hw_bp_exec);
	debugreg[1] = DBG_DATA;
	/* L0 (execute, length 1); L1 with R/W1 = 01 (write), LEN1 = 11 (4 bytes). */
	debugreg[7] = 0x400 | 1 << 0 | 1 << 2 | 1 << 20 | 3 << 22;
	set_debug(_metadata, vm, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, debugreg);

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_DEBUG, vm->run->exit_reason);
	EXPECT_EQ(1, vm->run->debug.arch.exception);
	EXPECT_EQ(debugreg[0], vm->run->debug.arch.pc);
	EXPECT_EQ(1, vm->run->debug.arch.dr6 & 0xf);		/* B0 */
	EXPECT_EQ(debugreg[7], vm->run->debug.arch.dr7);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(debugreg[0], regs.rip);

	/* Step over the instruction breakpoint: disarm DR0, keep DR1. */
	debugreg[7] &= ~1ULL;
	set_debug(_metadata, vm, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, debugreg);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_DEBUG, vm->run->exit_reason);
	EXPECT_EQ(1, vm->run->debug.arch.exception);
	EXPECT_EQ(DBG_AT(hw_bp_code, hw_bp_after_write), vm->run->debug.arch.pc);
	EXPECT_EQ(2, vm->run->debug.arch.dr6 & 0xf);		/* B1 */
	EXPECT_EQ(0x1234, *(uint32_t *)(vm->mem + DBG_DATA));

	/* The guest's own debug registers never saw the debugger's. */
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_DEBUGREGS, &dregs));
	EXPECT_EQ(0, dregs.db[0]);
	EXPECT_EQ(0, dregs.db[1]);
	EXPECT_EQ(0x400, dregs.dr7);

	set_debug(_metadata, vm, 0, NULL);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x10, vm->run->io.port);
}

/*
 * KVM_GET/SET_DEBUGREGS: a round trip (stored as given, as KVM does), the
 * guest reading what was set, and KVM's errnos: flags other than 0, DR6 or
 * DR7 with bits 63:32 set are EINVAL.
 */
GUEST_CODE64(debugregs_code,
	"	mov %dr0, %rax\n"
	"	mov %dr3, %rbx\n"
	"	mov %dr7, %rcx\n"
	"	hlt\n");

TEST_F(vcpu, debugregs)
{
	struct kvm_debugregs set = {
		.db = { 0x1000, 0x2000, 0x3000, 0xffffffff81000000ULL },
		.dr6 = 0xffff0ff1,
		.dr7 = 0x700,				/* LE, GE; nothing enabled */
	}, get;
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_DEBUGREGS, &get));
	EXPECT_EQ(0, get.db[0]);
	EXPECT_EQ(0xffff0ff0, get.dr6);
	EXPECT_EQ(0x400, get.dr7);
	EXPECT_EQ(0, get.flags);

	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_DEBUGREGS, &set));
	memset(&get, 0xa5, sizeof(get));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_DEBUGREGS, &get));
	EXPECT_EQ(0, memcmp(set.db, get.db, sizeof(set.db)));
	EXPECT_EQ(set.dr6, get.dr6);
	EXPECT_EQ(set.dr7, get.dr7);
	EXPECT_EQ(0, get.flags);
	EXPECT_EQ(0, get.reserved[0]);
	EXPECT_EQ(0, get.reserved[8]);

	LOAD_GUEST_CODE(vm->mem, DBG_CODE, debugregs_code);
	ASSERT_EQ(0, vm_long_mode(vm, DBG_CODE));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(set.db[0], regs.rax);
	EXPECT_EQ(set.db[3], regs.rbx);
	EXPECT_EQ(set.dr7, regs.rcx);

	get = set;
	get.flags = 1;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_SET_DEBUGREGS, &get));
	get = set;
	get.dr6 = 1ULL << 32;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_SET_DEBUGREGS, &get));
	get = set;
	get.dr7 = 0x400 | 1ULL << 40;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_SET_DEBUGREGS, &get));
	/* The reserved words are not checked. */
	get = set;
	get.reserved[3] = 7;
	EXPECT_EQ(0, ioctl(vm->vcpu, KVM_SET_DEBUGREGS, &get));
	EXPECT_ERRNO(EFAULT, ioctl(vm->vcpu, KVM_SET_DEBUGREGS, (void *)8));
	EXPECT_ERRNO(EFAULT, ioctl(vm->vcpu, KVM_GET_DEBUGREGS, (void *)8));
}

/*
 * The guest's own hardware breakpoints, armed for real: it sets DR0 to a
 * 4-byte write watchpoint and DR1 to an execute breakpoint, and its #DB
 * handler (an IDT gate) reports DR6 on port 0x11, disarms the breakpoint
 * that fired, clears DR6 and returns. No debugger is involved.
 */
GUEST_CODE64(own_bp_code,
	"	mov $0x6000, %rax\n"
	"	mov %rax, %dr0\n"
	"	mov $0x1000 + (own_bp_exec - own_bp_code), %rax\n"
	"	mov %rax, %dr1\n"
	/* L0, R/W0 = 01 (write), LEN0 = 11 (4 bytes); L1 (execute). */
	"	mov $(0x400 | 1 | 4 | 1 << 16 | 3 << 18), %rax\n"
	"	mov %rax, %dr7\n"
	"	movl $0x99, 0x6000\n"			/* #DB, B0, after the write */
	"	out %al, $0x12\n"
	"own_bp_exec:\n"
	"	nop\n"					/* #DB, B1, before the nop */
	"	out %al, $0x13\n"
	"	hlt\n"
	"own_bp_handler:\n"
	"	mov %dr6, %rax\n"
	"	out %eax, $0x11\n"
	"	mov %dr7, %rcx\n"
	"	test $1, %al\n"
	"	jz 1f\n"
	"	and $~1, %rcx\n"
	"1:	test $2, %al\n"
	"	jz 2f\n"
	"	and $~4, %rcx\n"
	"2:	mov %rcx, %dr7\n"
	"	xor %eax, %eax\n"
	"	mov %rax, %dr6\n"
	"	iretq\n");
extern const uint8_t own_bp_handler[];

TEST_F(vcpu, guest_own_breakpoints)
{
	struct vm *vm = &self->vm;
	struct kvm_debugregs dregs;
	const uint16_t ports[] = { 0x11, 0x12, 0x11, 0x13 };
	const uint32_t trap[] = { 1, 0, 2, 0 };
	unsigned int i;

	LOAD_GUEST_CODE(vm->mem, DBG_CODE, own_bp_code);
	ASSERT_EQ(0, vm_long_mode(vm, DBG_CODE));
	set_idt_gate(_metadata, vm, 1, DBG_AT(own_bp_code, own_bp_handler));

	for (i = 0; i < 4; i++) {
		ASSERT_EQ(0, vm_run(vm));
		ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason)
			TH_LOG("exit %u: reason %u", i, vm->run->exit_reason);
		ASSERT_EQ(ports[i], vm->run->io.port) TH_LOG("exit %u", i);
		if (ports[i] == 0x11)
			EXPECT_EQ(trap[i], *(uint32_t *)vm_pio_data(vm) & 0xf)
				TH_LOG("DR6 in the handler: %#x", *(uint32_t *)vm_pio_data(vm));
	}
	EXPECT_EQ(0x99, *(uint32_t *)(vm->mem + DBG_DATA));
	ASSERT_EQ(0, vm_run(vm));
	EXPECT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	/* Both disarmed by the handler; DR0 and DR1 still hold the addresses. */
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_DEBUGREGS, &dregs));
	EXPECT_EQ(0, dregs.dr7 & 0xff);
	EXPECT_EQ(DBG_DATA, dregs.db[0]);
}

TEST_HARNESS_MAIN

// SPDX-License-Identifier: GPL-2.0
/*
 * CPUID: KVM_GET_SUPPORTED_CPUID and its E2BIG probing, KVM_SET_CPUID2 and
 * KVM_GET_CPUID2, and what the guest's CPUID instruction returns.
 */
#include "harness.h"
#include "vm.h"
#include "guest_code.h"

struct cpuid_buf {
	struct kvm_cpuid2 head;
	struct kvm_cpuid_entry2 entries[300];
};

static struct kvm_cpuid_entry2 *find(struct cpuid_buf *b, uint32_t function)
{
	uint32_t i;

	for (i = 0; i < b->head.nent; i++)
		if (b->entries[i].function == function)
			return &b->entries[i];
	return NULL;
}

TEST(supported_cpuid)
{
	static struct cpuid_buf b;
	struct kvm_cpuid_entry2 *e;
	int sys = open_device();

	ASSERT_LE(0, sys);
	/* Too small a buffer is E2BIG, and nent is left as it was. */
	b.head.nent = 0;
	EXPECT_ERRNO(E2BIG, ioctl(sys, KVM_GET_SUPPORTED_CPUID, &b));
	b.head.nent = 1;
	EXPECT_ERRNO(E2BIG, ioctl(sys, KVM_GET_SUPPORTED_CPUID, &b));
	EXPECT_EQ(1, b.head.nent);
	b.head.nent = 300;
	ASSERT_EQ(0, ioctl(sys, KVM_GET_SUPPORTED_CPUID, &b));
	EXPECT_LT(1, b.head.nent);
	EXPECT_GE(256, b.head.nent);
	e = find(&b, 0);
	ASSERT_NE(NULL, e);
	EXPECT_LE(1, e->eax);			/* leaf 1 exists */
	e = find(&b, 1);
	ASSERT_NE(NULL, e);
	EXPECT_NE(0, e->edx & (1 << 6));	/* PAE */
	EXPECT_NE(0, e->ecx & (1u << 31));	/* running under a hypervisor */
	e = find(&b, 0x80000001);
	ASSERT_NE(NULL, e);
	EXPECT_NE(0, e->edx & (1 << 29));	/* long mode */
	close(sys);
}

VM_FIXTURE(vcpu)

/* Vendor "rkvmtestcpu!", max leaf 0xd, and a leaf 3 with known values. */
static void test_table(struct cpuid_buf *b)
{
	memset(b, 0, sizeof(*b));
	b->head.nent = 2;
	b->entries[0] = (struct kvm_cpuid_entry2) {
		.function = 0, .eax = 0xd,
		.ebx = 0x766b7272, .edx = 0x73657474, .ecx = 0x21757063,
	};
	b->entries[1] = (struct kvm_cpuid_entry2) {
		.function = 3, .eax = 0x11111111, .ebx = 0x22222222,
		.ecx = 0x33333333, .edx = 0x44444444,
	};
}

TEST_F(vcpu, set_and_get_cpuid2)
{
	static struct cpuid_buf b, out;

	b.head.nent = 257;
	EXPECT_ERRNO(E2BIG, ioctl(self->vm.vcpu, KVM_SET_CPUID2, &b));
	test_table(&b);
	ASSERT_EQ(0, ioctl(self->vm.vcpu, KVM_SET_CPUID2, &b));
	out.head.nent = 1;
	EXPECT_ERRNO(E2BIG, ioctl(self->vm.vcpu, KVM_GET_CPUID2, &out));
	out.head.nent = 300;
	ASSERT_EQ(0, ioctl(self->vm.vcpu, KVM_GET_CPUID2, &out));
	ASSERT_EQ(2, out.head.nent);
	EXPECT_EQ(0x33333333, find(&out, 3)->ecx);
	EXPECT_EQ(0x766b7272, find(&out, 0)->ebx);
}

/* The guest's CPUID returns the table; a leaf not in it returns zeros. */
GUEST_CODE16(cpuid_code,
	"	mov $3, %eax\n"
	"	cpuid\n"
	"	out %al, $0x10\n"
	"	mov $5, %eax\n"		/* not in the table */
	"	cpuid\n"
	"	hlt\n");

TEST_F(vcpu, guest_cpuid_uses_the_table)
{
	static struct cpuid_buf b;
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	test_table(&b);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_CPUID2, &b));
	LOAD_GUEST_CODE(vm->mem, 0x1000, cpuid_code);
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0x11111111, regs.rax);
	EXPECT_EQ(0x22222222, regs.rbx);
	EXPECT_EQ(0x33333333, regs.rcx);
	EXPECT_EQ(0x44444444, regs.rdx);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0, regs.rax | regs.rbx | regs.rcx | regs.rdx);

	/* After KVM_RUN the table is frozen: the same is fine, another is EINVAL. */
	EXPECT_EQ(0, ioctl(vm->vcpu, KVM_SET_CPUID2, &b));
	b.entries[1].eax = 0;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_SET_CPUID2, &b));
}

/*
 * Regression: a guest address width of 255 (CPUID 0x80000008) once made
 * rkvm's KVM_SET_SREGS shift a u64 by 255 bits, a kernel panic. Whatever the
 * answer, the call must return (and the kernel log stay clean).
 */
TEST_F(vcpu, absurd_address_width_in_cpuid)
{
	static struct cpuid_buf b;
	struct kvm_sregs sregs;
	int r;

	test_table(&b);
	b.head.nent = 3;
	b.entries[2] = (struct kvm_cpuid_entry2) { .function = 0x80000008, .eax = 0xff };
	ASSERT_EQ(0, ioctl(self->vm.vcpu, KVM_SET_CPUID2, &b));
	ASSERT_EQ(0, ioctl(self->vm.vcpu, KVM_GET_SREGS, &sregs));
	sregs.cr0 = 0x80000011;
	sregs.cr4 = 1 << 5;
	sregs.efer = (1 << 8) | (1 << 10);
	sregs.cr3 = 1ULL << 62;
	sregs.cs.l = 1;
	r = ioctl(self->vm.vcpu, KVM_SET_SREGS, &sregs);
	EXPECT_TRUE(r == 0 || errno == EINVAL) TH_LOG("KVM_SET_SREGS: %s", strerror(errno));
}

TEST_HARNESS_MAIN

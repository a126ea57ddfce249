// SPDX-License-Identifier: GPL-2.0
/*
 * MSRs: KVM_GET_MSR_INDEX_LIST probing, KVM_GET_MSRS/KVM_SET_MSRS counting
 * what they did, and the guest's RDMSR/WRMSR (with #GP for what is not there).
 */
#include "harness.h"
#include "vm.h"
#include "guest_code.h"

#define MSR_STAR		0xc0000081
#define MSR_LSTAR		0xc0000082
#define MSR_EFER		0xc0000080
#define MSR_SYSENTER_EIP	0x176

struct msr_buf {
	struct kvm_msrs head;
	struct kvm_msr_entry entries[4];
};

TEST(index_list)
{
	struct { struct kvm_msr_list head; uint32_t indices[2048]; } list;
	int sys = open_device();
	uint32_t i, n, found = 0;

	ASSERT_LE(0, sys);
	/* nmsrs is written back even when the list does not fit. */
	list.head.nmsrs = 0;
	EXPECT_ERRNO(E2BIG, ioctl(sys, KVM_GET_MSR_INDEX_LIST, &list));
	n = list.head.nmsrs;
	ASSERT_LT(0, n);
	ASSERT_GE(2048, n);
	ASSERT_EQ(0, ioctl(sys, KVM_GET_MSR_INDEX_LIST, &list));
	EXPECT_EQ(n, list.head.nmsrs);
	/* The syscall MSRs are there; EFER is not (it is part of kvm_sregs). */
	for (i = 0; i < n; i++)
		found |= (list.indices[i] == MSR_EFER) | (list.indices[i] == MSR_LSTAR) << 1 |
			 (list.indices[i] == MSR_STAR) << 2;
	EXPECT_EQ(6, found);
	close(sys);
}

VM_FIXTURE(vcpu)

TEST_F(vcpu, set_and_get)
{
	struct msr_buf b = { .head.nmsrs = 3 };

	b.entries[0] = (struct kvm_msr_entry) { .index = MSR_LSTAR, .data = 0xffffffff81000000ULL };
	b.entries[1] = (struct kvm_msr_entry) { .index = MSR_STAR, .data = 0x0023001000000000ULL };
	b.entries[2] = (struct kvm_msr_entry) { .index = MSR_SYSENTER_EIP, .data = 0x1234 };
	EXPECT_EQ(3, ioctl(self->vm.vcpu, KVM_SET_MSRS, &b));
	memset(b.entries, 0, sizeof(b.entries));
	b.entries[0].index = MSR_SYSENTER_EIP;
	b.entries[1].index = MSR_LSTAR;
	b.entries[2].index = MSR_STAR;
	EXPECT_EQ(3, ioctl(self->vm.vcpu, KVM_GET_MSRS, &b));
	EXPECT_EQ(0x1234, b.entries[0].data);
	EXPECT_EQ(0xffffffff81000000ULL, b.entries[1].data);
	EXPECT_EQ(0x0023001000000000ULL, b.entries[2].data);

	/* Processing stops at the first MSR refused: unknown, or non-canonical. */
	b.entries[1].index = 0xdeadbeef;
	EXPECT_EQ(1, ioctl(self->vm.vcpu, KVM_GET_MSRS, &b));
	b.head.nmsrs = 1;
	b.entries[0] = (struct kvm_msr_entry) { .index = MSR_LSTAR, .data = 0x0000800000000000ULL };
	EXPECT_EQ(0, ioctl(self->vm.vcpu, KVM_SET_MSRS, &b));
	b.head.nmsrs = 256;
	EXPECT_ERRNO(E2BIG, ioctl(self->vm.vcpu, KVM_GET_MSRS, &b));
}

/*
 * Real mode: WRMSR then RDMSR of LSTAR round-trips, RDMSR of an MSR that
 * does not exist is #GP (the IVT handler for vector 13 reports it on 0x13).
 */
GUEST_CODE16(rdmsr_wrmsr_code,
	"	mov $0xc0000082, %ecx\n"	/* LSTAR */
	"	mov $0x11223344, %eax\n"
	"	mov $0xffffffff, %edx\n"
	"	wrmsr\n"
	"	xor %eax, %eax\n"
	"	xor %edx, %edx\n"
	"	rdmsr\n"
	"	out %al, $0x10\n"
	"	mov $0xdeadbeef, %ecx\n"	/* no such MSR */
	"	rdmsr\n"			/* at 0x1024: #GP */
	"	hlt\n");			/* not reached */

GUEST_CODE16(gp_handler_code,			/* at 0x3000 */
	"	out %al, $0x13\n"
	"	hlt\n");

TEST_F(vcpu, guest_rdmsr_wrmsr)
{
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	LOAD_GUEST_CODE(vm->mem, 0x1000, rdmsr_wrmsr_code);
	LOAD_GUEST_CODE(vm->mem, 0x3000, gp_handler_code);
	vm->mem[13 * 4 + 1] = 0x30;		/* IVT[13] = 0000:3000 */
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	ASSERT_EQ(0x10, vm->run->io.port);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0x11223344, regs.rax);
	EXPECT_EQ(0xffffffff, regs.rdx);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x13, vm->run->io.port);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	/* The #GP pushed the faulting IP: the RDMSR. */
	EXPECT_EQ(0x1024, *(uint16_t *)(vm->mem + regs.rsp));
}

/*
 * Runs real-mode `code` at 0x1000, with the #GP vector (IVT[13]) on a hlt
 * at 0x3000, to its first exit, which must be an I/O exit (the OUT after
 * the MSR access; a #GP would end in the hlt), and reads the registers.
 */
static void run_to_out(struct __test_metadata *_metadata, struct vm *vm, const uint8_t *code, size_t size,
		       struct kvm_regs *regs)
{
	memcpy(vm->mem + 0x1000, code, size);
	vm->mem[0x3000] = 0xf4;			/* hlt: a #GP would land there */
	vm->mem[13 * 4 + 1] = 0x30;		/* IVT[13] = 0000:3000 */
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, regs));
}

/*
 * Machine-configuration MSRs a guest kernel touches without rdmsr_safe
 * (Linux's init_amd() sets bit 46 of NB_CFG): the write is dropped and the
 * read gives 0, as in KVM, instead of a #GP (a call trace in the guest). A
 * regression test: the Linux guest under rkvm printed "unchecked MSR access
 * error: RDMSR from 0xc001001f".
 */
GUEST_CODE16(nb_cfg_code,
	"	mov $0xc001001f, %ecx\n"	/* NB_CFG */
	"	xor %eax, %eax\n"
	"	mov $0x4000, %edx\n"		/* bit 46, as Linux sets it */
	"	wrmsr\n"
	"	or $-1, %eax\n"
	"	or $-1, %edx\n"
	"	rdmsr\n"
	"	out %al, $0x10\n"		/* at 0x101b */
	"	hlt\n");

TEST_F(vcpu, machine_config_msrs_read_zero)
{
	struct msr_buf b = { .head.nmsrs = 1 };
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	run_to_out(_metadata, vm, nb_cfg_code, GUEST_CODE_SIZE(nb_cfg_code), &regs);
	EXPECT_EQ(0x10, vm->run->io.port);
	EXPECT_EQ(0, regs.rax);
	EXPECT_EQ(0, regs.rdx);
	EXPECT_EQ(0x101b, regs.rip);	/* no #GP: stopped at the OUT */
	/* The host sees the same fixed value. */
	b.entries[0].index = 0xc001001f;
	b.entries[0].data = 0xffff;
	EXPECT_EQ(1, ioctl(vm->vcpu, KVM_GET_MSRS, &b));
	EXPECT_EQ(0, b.entries[0].data);
}

/*
 * IA32_MISC_ENABLE: Linux's verify_cpu reads it on Intel (to clear
 * XD_DISABLE) before any IDT could survive a #GP. A regression test: the
 * Linux guest on rkvm's VMX backend triple-faulted there. Both KVM and rkvm
 * report PEBS and BTS unavailable (bits 12 and 11), and XD_DISABLE (bit 34)
 * clear.
 */
GUEST_CODE16(misc_enable_code,
	"	mov $0x1a0, %ecx\n"		/* IA32_MISC_ENABLE */
	"	rdmsr\n"
	"	out %al, $0x10\n"		/* at 0x1008 */
	"	hlt\n");

TEST_F(vcpu, misc_enable_reads_without_gp)
{
	struct kvm_regs regs;

	run_to_out(_metadata, &self->vm, misc_enable_code, GUEST_CODE_SIZE(misc_enable_code), &regs);
	EXPECT_EQ(0x1008, regs.rip);	/* no #GP */
	EXPECT_EQ(0x1800, regs.rax & 0x1800);
	EXPECT_EQ(0, regs.rdx & (1 << 2));	/* XD_DISABLE */
}

TEST_HARNESS_MAIN

// SPDX-License-Identifier: GPL-2.0
/*
 * The vCPU state a VMM such as QEMU syncs with its own (userspace) interrupt
 * controllers: KVM_GET/SET_MP_STATE, the answers with no in-kernel irqchip
 * (KVM_SET_GSI_ROUTING, KVM_IRQ_LINE), machine checks (KVM_X86_SETUP_MCE,
 * KVM_X86_SET_MCE, the MCG and bank MSRs), the MTRRs, IA32_MISC_ENABLE, the
 * kvmclock MSRs as the VMM sees them, and the TPR in kvm_run->cr8. Each
 * errno and value as real KVM gives it (the same tests run against it).
 */
#include "harness.h"
#include "vm.h"
#include "guest_code.h"

#define MSR_MTRRCAP		0xfe
#define MSR_MCG_CAP		0x179
#define MSR_MCG_STATUS		0x17a
#define MSR_MCG_CTL		0x17b
#define MSR_MISC_ENABLE		0x1a0
#define MSR_MTRR_PHYSBASE0	0x200
#define MSR_MTRR_PHYSMASK0	0x201
#define MSR_MTRR_FIX64K		0x250
#define MSR_MTRR_DEF_TYPE	0x2ff
#define MSR_MC0_CTL		0x400
#define MSR_KVM_WALL_CLOCK	0x11
#define MSR_KVM_SYSTEM_TIME	0x12

#define MCG_CTL_P		(1ULL << 8)
#define MCG_SER_P		(1ULL << 24)
#define MCI_STATUS_VAL		(1ULL << 63)
#define MCI_STATUS_OVER		(1ULL << 62)
#define MCI_STATUS_UC		(1ULL << 61)
#define MCI_STATUS_PCC		(1ULL << 57)

struct msr_buf {
	struct kvm_msrs head;
	struct kvm_msr_entry entries[4];
};

/* KVM_GET_MSRS of one MSR: the value, or ~0 with *ok false if refused. */
static uint64_t get_msr(int vcpu, uint32_t index, bool *ok)
{
	struct msr_buf b = { .head.nmsrs = 1, .entries[0].index = index };

	*ok = ioctl(vcpu, KVM_GET_MSRS, &b) == 1;
	return *ok ? b.entries[0].data : ~0ULL;
}

/* KVM_SET_MSRS of one MSR: whether it was taken. */
static bool set_msr(int vcpu, uint32_t index, uint64_t value)
{
	struct msr_buf b = { .head.nmsrs = 1, .entries[0] = { .index = index, .data = value } };

	return ioctl(vcpu, KVM_SET_MSRS, &b) == 1;
}

TEST(capabilities)
{
	int sys = open_device();

	ASSERT_LE(0, sys);
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_MP_STATE));
	/* KVM_MAX_IRQ_ROUTES and KVM_MAX_MCE_BANKS. */
	EXPECT_EQ(4096, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_IRQ_ROUTING));
	EXPECT_EQ(32, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_MCE));
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_USER_NMI));
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_VCPU_EVENTS));
	/* KVM_CLOCK_VALID_FLAGS. */
	EXPECT_EQ(KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC,
		  ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_ADJUST_CLOCK));
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_GET_TSC_KHZ));
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY2));
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_SET_IDENTITY_MAP_ADDR));
	close(sys);
}

/*
 * KVM_GET_EMULATED_CPUID (what the device emulates beyond the processor:
 * nothing on rkvm) and the feature MSRs the system fd's KVM_GET_MSRS reads.
 */
TEST(emulated_cpuid_and_feature_msrs)
{
	struct { struct kvm_cpuid2 head; struct kvm_cpuid_entry2 e[64]; } c = { .head.nent = 0 };
	struct { struct kvm_msr_list head; uint32_t idx[256]; } list = { .head.nmsrs = 0 };
	struct msr_buf b = { .head.nmsrs = 1 };
	int sys = open_device();
	uint32_t i, n, ucode = 0;

	ASSERT_LE(0, sys);
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_EXT_EMUL_CPUID));
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_GET_MSR_FEATURES));
	EXPECT_ERRNO(E2BIG, ioctl(sys, KVM_GET_EMULATED_CPUID, &c));
	c.head.nent = 64;
	c.e[3].padding[1] = 1;			/* padding must be zero */
	EXPECT_ERRNO(EINVAL, ioctl(sys, KVM_GET_EMULATED_CPUID, &c));
	c.e[3].padding[1] = 0;
	ASSERT_EQ(0, ioctl(sys, KVM_GET_EMULATED_CPUID, &c));
	EXPECT_GE(64, c.head.nent);
	if (testing_rkvm())
		EXPECT_EQ(0, c.head.nent);

	EXPECT_ERRNO(E2BIG, ioctl(sys, KVM_GET_MSR_FEATURE_INDEX_LIST, &list));
	n = list.head.nmsrs;
	ASSERT_LT(0, n);
	ASSERT_GE(256, n);
	ASSERT_EQ(0, ioctl(sys, KVM_GET_MSR_FEATURE_INDEX_LIST, &list));
	for (i = 0; i < n; i++)
		ucode |= list.idx[i] == 0x8b;		/* IA32_UCODE_REV */
	EXPECT_TRUE(ucode);
	b.entries[0].index = 0x8b;
	EXPECT_EQ(1, ioctl(sys, KVM_GET_MSRS, &b));
	b.entries[0].index = 0xdeadbeef;
	EXPECT_EQ(0, ioctl(sys, KVM_GET_MSRS, &b));
	close(sys);
}

VM_FIXTURE(vcpu)

/* No in-kernel local APIC: RUNNABLE is the only state, and it is kept. */
TEST_F(vcpu, mp_state_is_runnable_only)
{
	struct kvm_mp_state mp = { .mp_state = 77 };

	ASSERT_EQ(0, ioctl(self->vm.vcpu, KVM_GET_MP_STATE, &mp));
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, mp.mp_state);
	mp.mp_state = KVM_MP_STATE_RUNNABLE;
	EXPECT_EQ(0, ioctl(self->vm.vcpu, KVM_SET_MP_STATE, &mp));
	mp.mp_state = KVM_MP_STATE_HALTED;
	EXPECT_ERRNO(EINVAL, ioctl(self->vm.vcpu, KVM_SET_MP_STATE, &mp));
	mp.mp_state = KVM_MP_STATE_INIT_RECEIVED;
	EXPECT_ERRNO(EINVAL, ioctl(self->vm.vcpu, KVM_SET_MP_STATE, &mp));
	mp.mp_state = 1000;
	EXPECT_ERRNO(EINVAL, ioctl(self->vm.vcpu, KVM_SET_MP_STATE, &mp));
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.vcpu, KVM_SET_MP_STATE, NULL));
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.vcpu, KVM_GET_MP_STATE, NULL));
	ASSERT_EQ(0, ioctl(self->vm.vcpu, KVM_GET_MP_STATE, &mp));
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, mp.mp_state);
}

/*
 * Without KVM_CREATE_IRQCHIP: routing is EINVAL and a line ENXIO, after the
 * argument was read (EFAULT first), as QEMU's userspace irqchip expects.
 */
TEST_F(vcpu, irq_routing_without_irqchip)
{
	struct kvm_irq_routing routing = { .nr = 0 };
	struct kvm_irq_level level = { .irq = 4, .level = 1 };

	EXPECT_ERRNO(EINVAL, ioctl(self->vm.fd, KVM_SET_GSI_ROUTING, &routing));
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.fd, KVM_SET_GSI_ROUTING, NULL));
	EXPECT_ERRNO(ENXIO, ioctl(self->vm.fd, KVM_IRQ_LINE, &level));
	EXPECT_ERRNO(ENXIO, ioctl(self->vm.fd, KVM_IRQ_LINE_STATUS, &level));
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.fd, KVM_IRQ_LINE, NULL));
}

TEST_F(vcpu, mtrrs)
{
	int vcpu = self->vm.vcpu;
	bool ok;

	/* Write-combining and fixed ranges, 8 variable ranges, no SMRR. */
	EXPECT_EQ(0x508, get_msr(vcpu, MSR_MTRRCAP, &ok));
	EXPECT_FALSE(set_msr(vcpu, MSR_MTRRCAP, 0x508));
	EXPECT_EQ(0, get_msr(vcpu, MSR_MTRR_DEF_TYPE, &ok));
	EXPECT_TRUE(set_msr(vcpu, MSR_MTRR_DEF_TYPE, 0xc06));	/* enabled, fixed on, WB */
	EXPECT_EQ(0xc06, get_msr(vcpu, MSR_MTRR_DEF_TYPE, &ok));
	EXPECT_FALSE(set_msr(vcpu, MSR_MTRR_DEF_TYPE, 0x1006));	/* reserved bit */
	EXPECT_FALSE(set_msr(vcpu, MSR_MTRR_DEF_TYPE, 0xc02));	/* type 2 is reserved */
	EXPECT_EQ(0xc06, get_msr(vcpu, MSR_MTRR_DEF_TYPE, &ok));
	EXPECT_TRUE(set_msr(vcpu, MSR_MTRR_FIX64K, 0x0606060606060606ULL));
	EXPECT_EQ(0x0606060606060606ULL, get_msr(vcpu, MSR_MTRR_FIX64K, &ok));
	EXPECT_FALSE(set_msr(vcpu, MSR_MTRR_FIX64K, 0x0706060606060606ULL));
	/* A variable range: base type WB, mask with its valid bit (11). */
	EXPECT_TRUE(set_msr(vcpu, MSR_MTRR_PHYSBASE0, 0x80000006));
	EXPECT_TRUE(set_msr(vcpu, MSR_MTRR_PHYSMASK0, 0xff80000800ULL));
	EXPECT_EQ(0xff80000800ULL, get_msr(vcpu, MSR_MTRR_PHYSMASK0, &ok));
	EXPECT_FALSE(set_msr(vcpu, MSR_MTRR_PHYSMASK0, 0xff80000400ULL));	/* bit 10 */
	EXPECT_FALSE(set_msr(vcpu, MSR_MTRR_PHYSBASE0, 0x80000106));	/* bit 8 */
	/* Eight pairs and no more. */
	EXPECT_EQ(0, get_msr(vcpu, MSR_MTRR_PHYSBASE0 + 15, &ok));
	EXPECT_TRUE(ok);
	get_msr(vcpu, MSR_MTRR_PHYSBASE0 + 16, &ok);
	EXPECT_FALSE(ok);
}

TEST_F(vcpu, misc_enable_for_the_vmm)
{
	int vcpu = self->vm.vcpu;
	bool ok;

	EXPECT_EQ(0x1800, get_msr(vcpu, MSR_MISC_ENABLE, &ok) & 0x1800);
	/* The VMM sets any value (QEMU writes its default, fast strings on). */
	EXPECT_TRUE(set_msr(vcpu, MSR_MISC_ENABLE, 0x1801));
	EXPECT_EQ(0x1801, get_msr(vcpu, MSR_MISC_ENABLE, &ok));
	EXPECT_TRUE(set_msr(vcpu, MSR_MISC_ENABLE, 0x1));
	EXPECT_EQ(0x1, get_msr(vcpu, MSR_MISC_ENABLE, &ok));
}

/* QEMU writes both kvmclock MSRs at reset and reads them at every sync
 * (0: the guest has no clock page yet). */
TEST_F(vcpu, kvmclock_msrs_for_the_vmm)
{
	int vcpu = self->vm.vcpu;
	bool ok;

	EXPECT_TRUE(set_msr(vcpu, MSR_KVM_SYSTEM_TIME, 0));
	EXPECT_TRUE(set_msr(vcpu, MSR_KVM_WALL_CLOCK, 0));
	EXPECT_EQ(0, get_msr(vcpu, MSR_KVM_SYSTEM_TIME, &ok));
	EXPECT_TRUE(ok);
	EXPECT_EQ(0, get_msr(vcpu, MSR_KVM_WALL_CLOCK, &ok));
	EXPECT_TRUE(ok);
}

TEST_F(vcpu, mce_setup)
{
	int vcpu = self->vm.vcpu;
	uint64_t cap, supported = 0;
	bool ok;

	ASSERT_EQ(0, ioctl(self->vm.sys, KVM_X86_GET_MCE_CAP_SUPPORTED, &supported));
	EXPECT_EQ(MCG_CTL_P | MCG_SER_P, supported & (MCG_CTL_P | MCG_SER_P));
	if (testing_rkvm())
		EXPECT_EQ(MCG_CTL_P | MCG_SER_P, supported);
	/* Before KVM_X86_SETUP_MCE: 32 banks, no MCG_CTL for the guest. */
	EXPECT_EQ(32, get_msr(vcpu, MSR_MCG_CAP, &ok));
	EXPECT_FALSE(set_msr(vcpu, MSR_MCG_CTL, 1));
	EXPECT_TRUE(set_msr(vcpu, MSR_MCG_CTL, 0));	/* the VMM may write 0 */

	cap = 0;
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_X86_SETUP_MCE, &cap));	/* no bank */
	cap = 33;
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_X86_SETUP_MCE, &cap));	/* too many */
	cap = 10 | (1ULL << 9);
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_X86_SETUP_MCE, &cap));	/* MCG_EXT_P: not offered */
	EXPECT_ERRNO(EFAULT, ioctl(vcpu, KVM_X86_SETUP_MCE, NULL));
	cap = MCG_CTL_P | MCG_SER_P | 10;		/* what QEMU asks for */
	ASSERT_EQ(0, ioctl(vcpu, KVM_X86_SETUP_MCE, &cap));
	/* AMD reserves MCG_CAP[63:9]: KVM drops MCG_SER_P there. */
	EXPECT_EQ(host_is_intel() ? cap : cap & 0x1ff, get_msr(vcpu, MSR_MCG_CAP, &ok));
	EXPECT_FALSE(set_msr(vcpu, MSR_MCG_CAP, cap));	/* read-only */
	/* MCG_CTL and every bank's CTL start as all ones. */
	EXPECT_EQ(~0ULL, get_msr(vcpu, MSR_MCG_CTL, &ok));
	EXPECT_EQ(~0ULL, get_msr(vcpu, MSR_MC0_CTL, &ok));
	EXPECT_EQ(~0ULL, get_msr(vcpu, MSR_MC0_CTL + 4 * 9, &ok));
	get_msr(vcpu, MSR_MC0_CTL + 4 * 10, &ok);
	EXPECT_FALSE(ok);				/* bank 10 of 10 */
	/* CTL: 0 or all ones; MCG_CTL likewise. */
	EXPECT_FALSE(set_msr(vcpu, MSR_MC0_CTL, 0x1234));
	EXPECT_TRUE(set_msr(vcpu, MSR_MC0_CTL, 0));
	EXPECT_FALSE(set_msr(vcpu, MSR_MCG_CTL, 0x1234));
	/* STATUS, ADDR and MISC: the VMM writes what it restores. */
	EXPECT_TRUE(set_msr(vcpu, MSR_MC0_CTL + 1, MCI_STATUS_VAL | 5));
	EXPECT_EQ(MCI_STATUS_VAL | 5, get_msr(vcpu, MSR_MC0_CTL + 1, &ok));
	EXPECT_TRUE(set_msr(vcpu, MSR_MC0_CTL + 2, 0x1000));
	EXPECT_EQ(0x1000, get_msr(vcpu, MSR_MC0_CTL + 2, &ok));
}

/*
 * An uncorrected error is delivered as #MC (vector 18) when CR4.MCE is set:
 * the real-mode handler reports on port 0x18, and the bank and MCG_STATUS
 * hold the error. A corrected one is only logged (and marked as overwritten
 * the second time).
 */
GUEST_CODE16(mce_spin_code,			/* at 0x1000 */
	"1:	out %al, $0x10\n"
	"	jmp 1b\n");

GUEST_CODE16(mc_handler_code,			/* at 0x3000 */
	"	out %al, $0x18\n"
	"	hlt\n");

TEST_F(vcpu, set_mce)
{
	struct vm *vm = &self->vm;
	struct kvm_x86_mce uc = {
		.status = MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_PCC | 0x17,
		.addr = 0x123000, .misc = 0x86, .mcg_status = 0x5 /* RIPV, MCIP */, .bank = 2,
	};
	struct kvm_x86_mce ce = { .status = MCI_STATUS_VAL | 0x42, .addr = 0x4000, .bank = 3 };
	uint64_t cap = MCG_CTL_P | MCG_SER_P | 10;
	struct kvm_sregs sregs;
	bool ok;

	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_X86_SETUP_MCE, &cap));
	LOAD_GUEST_CODE(vm->mem, 0x1000, mce_spin_code);
	LOAD_GUEST_CODE(vm->mem, 0x3000, mc_handler_code);
	vm->mem[18 * 4 + 1] = 0x30;		/* IVT[18] = 0000:3000 */
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_SREGS, &sregs));
	sregs.cr4 |= 1 << 6;			/* CR4.MCE */
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_SREGS, &sregs));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	ASSERT_EQ(0x10, vm->run->io.port);

	uc.bank = 10;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_X86_SET_MCE, &uc));
	uc.bank = 2;
	uc.status &= ~MCI_STATUS_VAL;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_X86_SET_MCE, &uc));
	uc.status |= MCI_STATUS_VAL;
	EXPECT_ERRNO(EFAULT, ioctl(vm->vcpu, KVM_X86_SET_MCE, NULL));

	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_X86_SET_MCE, &ce));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_X86_SET_MCE, &ce));
	EXPECT_EQ(MCI_STATUS_VAL | MCI_STATUS_OVER | 0x42, get_msr(vm->vcpu, MSR_MC0_CTL + 4 * 3 + 1, &ok));
	EXPECT_EQ(0x4000, get_msr(vm->vcpu, MSR_MC0_CTL + 4 * 3 + 2, &ok));
	/* Corrected errors raise nothing: the guest goes on spinning. */
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x10, vm->run->io.port);

	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_X86_SET_MCE, &uc));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x18, vm->run->io.port);
	EXPECT_EQ(uc.status, get_msr(vm->vcpu, MSR_MC0_CTL + 4 * 2 + 1, &ok));
	EXPECT_EQ(0x123000, get_msr(vm->vcpu, MSR_MC0_CTL + 4 * 2 + 2, &ok));
	EXPECT_EQ(0x86, get_msr(vm->vcpu, MSR_MC0_CTL + 4 * 2 + 3, &ok));
	EXPECT_EQ(0x5, get_msr(vm->vcpu, MSR_MCG_STATUS, &ok));
	/* A second one while MCG_STATUS.MCIP is set: the vCPU shuts down. */
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_X86_SET_MCE, &uc));
	ASSERT_EQ(0, vm_run(vm));
	EXPECT_EQ(KVM_EXIT_SHUTDOWN, vm->run->exit_reason);
}

/*
 * The TPR belongs to the VMM's local APIC: KVM_RUN loads CR8 from
 * kvm_run->cr8 and reports the guest's on exit; more than 15 is EINVAL.
 */
GUEST_CODE64(cr8_code,
	"	mov %cr8, %rax\n"
	"	out %al, $0x10\n"
	"	mov $9, %rax\n"
	"	mov %rax, %cr8\n"
	"	out %al, $0x11\n"
	"	hlt\n");

TEST_F(vcpu, cr8_from_kvm_run)
{
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	vm_set_supported_cpuid(vm);
	LOAD_GUEST_CODE(vm->mem, 0x1000, cr8_code);
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	vm->run->cr8 = 16;
	EXPECT_ERRNO(EINVAL, vm_run(vm));
	EXPECT_EQ(0, vm->run->cr8);		/* written back from the vCPU */
	EXPECT_EQ(0x1000, vm_rip(vm));		/* nothing ran */
	vm->run->cr8 = 5;
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	ASSERT_EQ(0x10, vm->run->io.port);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(5, regs.rax);
	EXPECT_EQ(5, vm->run->cr8);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	ASSERT_EQ(0x11, vm->run->io.port);
	EXPECT_EQ(9, vm->run->cr8);
}

/*
 * KVM_NMI: the NMI goes through IVT[2] to a handler that counts how deep
 * it is nested (byte 0x500) and reports it on port 2. A second NMI that
 * arrives while the handler runs waits for its IRET: the count is never 2.
 */
GUEST_CODE16(nmi_main_code,			/* at 0x1000 */
	"1:	out %al, $0x10\n"
	"	jmp 1b\n");

GUEST_CODE16(nmi_handler_code,			/* at 0x3000 */
	"	incb 0x500\n"
	"	mov 0x500, %al\n"
	"	out %al, $0x02\n"
	"	decb 0x500\n"
	"	iret\n");

/* Runs until the NMI handler's OUT (at most `tries` exits): its count. */
static int run_to_nmi(struct __test_metadata *_metadata, struct vm *vm, int tries)
{
	while (tries-- > 0) {
		if (vm_run(vm) || vm->run->exit_reason != KVM_EXIT_IO)
			return -1;
		if (vm->run->io.port == 0x02)
			return vm_pio_data(vm)[0];
		EXPECT_EQ(0x10, vm->run->io.port);
	}
	return 0;
}

TEST_F(vcpu, nmi)
{
	struct vm *vm = &self->vm;

	LOAD_GUEST_CODE(vm->mem, 0x1000, nmi_main_code);
	LOAD_GUEST_CODE(vm->mem, 0x3000, nmi_handler_code);
	vm->mem[2 * 4 + 1] = 0x30;		/* IVT[2] = 0000:3000 */
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	/* No NMI yet: the main loop's OUT. */
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	ASSERT_EQ(0x10, vm->run->io.port);
	/* The argument is not looked at, as in KVM. */
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_NMI, 0x1234));
	EXPECT_EQ(1, run_to_nmi(_metadata, vm, 1));
	/* In the handler: another NMI waits for its IRET. */
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_NMI, 0));
	EXPECT_EQ(1, run_to_nmi(_metadata, vm, 100));
	/* Three while none is being handled: two are delivered, the third
	 * collapses into them (one handled, one latched). */
	EXPECT_EQ(0, run_to_nmi(_metadata, vm, 3));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_NMI, 0));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_NMI, 0));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_NMI, 0));
	EXPECT_EQ(1, run_to_nmi(_metadata, vm, 1));
	EXPECT_EQ(1, run_to_nmi(_metadata, vm, 100));
	EXPECT_EQ(0, run_to_nmi(_metadata, vm, 300));
}

/*
 * KVM_GET/SET_VCPU_EVENTS: what is queued for the next entry. An exception
 * set there is delivered (through the IVT in real mode) with its error code
 * left out, as real mode does; NMIs pending and the mask round-trip.
 */
TEST_F(vcpu, vcpu_events)
{
	struct vm *vm = &self->vm;
	struct kvm_vcpu_events e;

	LOAD_GUEST_CODE(vm->mem, 0x1000, nmi_main_code);
	LOAD_GUEST_CODE(vm->mem, 0x3000, nmi_handler_code);
	vm->mem[2 * 4 + 1] = 0x30;		/* IVT[2] = 0000:3000 */
	vm->mem[6 * 4 + 1] = 0x30;		/* IVT[6] (#UD) = 0000:3000 too */
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_VCPU_EVENTS, &e));
	EXPECT_EQ(0, e.exception.injected);
	EXPECT_EQ(0, e.interrupt.injected);
	EXPECT_EQ(0, e.nmi.injected);
	EXPECT_EQ(0, e.nmi.pending);
	EXPECT_EQ(0, e.nmi.masked);
	EXPECT_EQ(0, e.interrupt.shadow);
	EXPECT_EQ(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW, e.flags & 7);

	/* Errors: unknown flags, payloads and triple-fault events not enabled,
	 * vectors above 31 and the NMI vector as exceptions. */
	e.flags = 1 << 10;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_SET_VCPU_EVENTS, &e));
	e.flags = KVM_VCPUEVENT_VALID_PAYLOAD;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_SET_VCPU_EVENTS, &e));
	e.flags = KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_SET_VCPU_EVENTS, &e));
	e.flags = 0;
	e.exception.injected = 1;
	e.exception.nr = 32;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_SET_VCPU_EVENTS, &e));
	e.exception.nr = 2;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_SET_VCPU_EVENTS, &e));
	EXPECT_ERRNO(EFAULT, ioctl(vm->vcpu, KVM_SET_VCPU_EVENTS, NULL));

	/* An injected #UD: reported back, then delivered at the next entry. */
	e.exception.nr = 6;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_VCPU_EVENTS, &e));
	memset(&e, 0xff, sizeof(e));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_VCPU_EVENTS, &e));
	EXPECT_EQ(1, e.exception.injected);
	EXPECT_EQ(6, e.exception.nr);
	EXPECT_EQ(0, e.exception.has_error_code);
	EXPECT_EQ(0, e.exception.pending);	/* without KVM_CAP_EXCEPTION_PAYLOAD */
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x02, vm->run->io.port);	/* the handler */
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_VCPU_EVENTS, &e));
	EXPECT_EQ(0, e.exception.injected);
	/* Back from the handler (its IRET) to the loop. */
	EXPECT_EQ(0, run_to_nmi(_metadata, vm, 1));

	/* An NMI pending behind a mask set from outside. */
	memset(&e, 0, sizeof(e));
	e.flags = KVM_VCPUEVENT_VALID_NMI_PENDING;
	e.nmi.pending = 1;
	e.nmi.masked = 1;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_VCPU_EVENTS, &e));
	memset(&e, 0, sizeof(e));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_VCPU_EVENTS, &e));
	EXPECT_EQ(1, e.nmi.pending);
	EXPECT_EQ(1, e.nmi.masked);
	/* Masked: the NMI waits while the guest spins (with no IRET, which
	 * would unmask NMIs whoever masked them)... */
	EXPECT_EQ(0, run_to_nmi(_metadata, vm, 3));
	/* ...and comes once the mask is cleared. */
	memset(&e, 0, sizeof(e));
	e.flags = KVM_VCPUEVENT_VALID_NMI_PENDING;
	e.nmi.pending = 1;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_VCPU_EVENTS, &e));
	EXPECT_EQ(1, run_to_nmi(_metadata, vm, 1));
}

TEST_F(vcpu, tsc_khz)
{
	int khz = ioctl(self->vm.vcpu, KVM_GET_TSC_KHZ, 0);

	ASSERT_LT(0, khz);
	EXPECT_EQ(khz, ioctl(self->vm.fd, KVM_GET_TSC_KHZ, 0));
	TH_LOG("the guest's TSC: %d kHz", khz);
}

/* Only before the first vCPU, as KVM has it. */
TEST(identity_map_addr)
{
	struct vm vm = {};
	uint64_t addr = 0xfffbc000;

	vm.sys = open_device();
	ASSERT_LE(0, vm.sys);
	vm.fd = ioctl(vm.sys, KVM_CREATE_VM, 0);
	ASSERT_LE(0, vm.fd);
	EXPECT_EQ(0, ioctl(vm.fd, KVM_SET_IDENTITY_MAP_ADDR, &addr));
	EXPECT_ERRNO(EFAULT, ioctl(vm.fd, KVM_SET_IDENTITY_MAP_ADDR, NULL));
	vm.vcpu = ioctl(vm.fd, KVM_CREATE_VCPU, 0);
	if (vm.vcpu < 0 && errno == ENODEV && testing_rkvm())
		SKIP(return, NO_BACKEND);
	ASSERT_LE(0, vm.vcpu);
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_SET_IDENTITY_MAP_ADDR, &addr));
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_SET_IDENTITY_MAP_ADDR, NULL));
	close(vm.vcpu);
	close(vm.fd);
	close(vm.sys);
}

/*
 * KVM_SET_USER_MEMORY_REGION2 maps memory as the first one does; the
 * guest_memfd flag (no private memory here) is EINVAL.
 */
GUEST_CODE64(region2_code,
	"	movabs 0x400010, %al\n"
	"	out %al, $0x10\n"
	"	hlt\n");

TEST_F(vcpu, user_memory_region2)
{
	struct vm *vm = &self->vm;
	uint8_t *extra = mmap(NULL, 0x1000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct kvm_userspace_memory_region2 r = {
		.slot = 5, .guest_phys_addr = 0x400000, .memory_size = 0x1000,
		.userspace_addr = (uintptr_t)extra,
	};
	uint64_t *pd = (uint64_t *)(vm->mem + 0x102000);
	struct kvm_regs regs;

	ASSERT_NE(MAP_FAILED, extra);
	r.flags = KVM_MEM_GUEST_MEMFD;
	EXPECT_ERRNO(EINVAL, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION2, &r));
	r.flags = 1 << 7;			/* no such flag */
	EXPECT_ERRNO(EINVAL, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION2, &r));
	EXPECT_ERRNO(EFAULT, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION2, NULL));
	r.flags = 0;
	ASSERT_EQ(0, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION2, &r));
	extra[0x10] = 0x5a;
	vm_set_supported_cpuid(vm);
	LOAD_GUEST_CODE(vm->mem, 0x1000, region2_code);
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	pd[2] = 0x400000 | 0x83;		/* 0x400000: a 2 MiB page, identity */
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0x5a, regs.rax & 0xff);
	/* Deleted through the same call. */
	r.memory_size = 0;
	EXPECT_EQ(0, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION2, &r));
	munmap(extra, 0x1000);
}

/*
 * KVM_TRANSLATE: a linear address through the guest's tables (a system
 * access: no permission checks), setting the accessed bits on the way as
 * KVM's walker does; an unmapped one is not valid, with all ones.
 */
TEST_F(vcpu, translate)
{
	struct vm *vm = &self->vm;
	uint64_t *pml4 = (uint64_t *)(vm->mem + 0x100000);
	uint64_t *pdpt = (uint64_t *)(vm->mem + 0x101000);
	uint64_t *pd = (uint64_t *)(vm->mem + 0x102000);
	struct kvm_translation tr = { .linear_address = 0x12345 };

	/* Real mode: the linear address is the physical one. */
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_TRANSLATE, &tr));
	EXPECT_EQ(1, tr.valid);
	EXPECT_EQ(0x12345, tr.physical_address);
	EXPECT_ERRNO(EFAULT, ioctl(vm->vcpu, KVM_TRANSLATE, NULL));

	vm_set_supported_cpuid(vm);
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	pd[0] &= ~0x20ULL;			/* accessed bits clear */
	tr = (struct kvm_translation) { .linear_address = 0x1abcd };
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_TRANSLATE, &tr));
	EXPECT_EQ(1, tr.valid);
	EXPECT_EQ(0x1abcd, tr.physical_address);
	EXPECT_EQ(1, tr.writeable);
	EXPECT_EQ(0, tr.usermode);
	EXPECT_EQ(0x20, pml4[0] & 0x20);
	EXPECT_EQ(0x20, pdpt[0] & 0x20);
	EXPECT_EQ(0x20, pd[0] & 0x20);
	/* Past the one 2 MiB page mapped. */
	tr = (struct kvm_translation) { .linear_address = 0x40000000 };
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_TRANSLATE, &tr));
	EXPECT_EQ(0, tr.valid);
	EXPECT_EQ(~0ULL, tr.physical_address);
}

/* kvmclock now, from KVM_GET_CLOCK. */
static uint64_t vm_clock(int vm_fd)
{
	struct kvm_clock_data data = {};

	if (ioctl(vm_fd, KVM_GET_CLOCK, &data))
		return 0;
	return data.clock;
}

TEST_F(vcpu, get_set_clock)
{
	struct kvm_clock_data data = {};
	struct timespec now;
	uint64_t c0, c1;

	c0 = vm_clock(self->vm.fd);
	c1 = vm_clock(self->vm.fd);
	EXPECT_LE(c0, c1);
	ASSERT_EQ(0, ioctl(self->vm.fd, KVM_GET_CLOCK, &data));
	EXPECT_EQ(0, data.flags & ~(KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC));
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.fd, KVM_GET_CLOCK, NULL));

	/* Set: the clock goes on from there. */
	data = (struct kvm_clock_data) { .clock = 1000000000000ULL };
	ASSERT_EQ(0, ioctl(self->vm.fd, KVM_SET_CLOCK, &data));
	c0 = vm_clock(self->vm.fd);
	EXPECT_LE(1000000000000ULL, c0);
	EXPECT_GT(1000000000000ULL + 60000000000ULL, c0);	/* a hang guard, not a timing */
	/* With KVM_CLOCK_REALTIME, the real time since `realtime` is added. */
	clock_gettime(CLOCK_REALTIME, &now);
	data = (struct kvm_clock_data) {
		.clock = 1000000000000ULL, .flags = KVM_CLOCK_REALTIME,
		.realtime = (now.tv_sec - 5) * 1000000000ULL + now.tv_nsec,
	};
	ASSERT_EQ(0, ioctl(self->vm.fd, KVM_SET_CLOCK, &data));
	EXPECT_LE(1005000000000ULL, vm_clock(self->vm.fd));
	/* What KVM_GET_CLOCK gives may be handed back; unknown flags may not. */
	ASSERT_EQ(0, ioctl(self->vm.fd, KVM_GET_CLOCK, &data));
	EXPECT_EQ(0, ioctl(self->vm.fd, KVM_SET_CLOCK, &data));
	data.flags = 1 << 0;
	EXPECT_ERRNO(EINVAL, ioctl(self->vm.fd, KVM_SET_CLOCK, &data));
	data.flags = 1 << 5;
	EXPECT_ERRNO(EINVAL, ioctl(self->vm.fd, KVM_SET_CLOCK, &data));
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.fd, KVM_SET_CLOCK, NULL));
}

/*
 * The guest names its kvmclock pages (0x5000 for this vCPU's time, 0x6000
 * for the wall clock) with the second MSR pair; the page is written before
 * the guest runs on, and what a guest computes from it (system time plus
 * the scaled TSC delta) is the clock KVM_GET_CLOCK reads.
 */
GUEST_CODE64(kvmclock_code,
	"	mov $0x4b564d01, %ecx\n"	/* MSR_KVM_SYSTEM_TIME_NEW */
	"	mov $0x5001, %eax\n"		/* enabled */
	"	xor %edx, %edx\n"
	"	wrmsr\n"
	"	mov $0x4b564d00, %ecx\n"	/* MSR_KVM_WALL_CLOCK_NEW */
	"	mov $0x6000, %eax\n"
	"	wrmsr\n"
	"1:	out %al, $0x10\n"
	"	jmp 1b\n");

struct pvclock_time {
	uint32_t version, pad0;
	uint64_t tsc_timestamp, system_time;
	uint32_t mul;
	int8_t shift;
	uint8_t flags, pad[2];
};

/* The clock a guest reads at TSC `tsc` from page `p`. */
static uint64_t pvclock_read(const struct pvclock_time *p, uint64_t tsc)
{
	uint64_t delta = tsc - p->tsc_timestamp;

	delta = p->shift < 0 ? delta >> -p->shift : delta << p->shift;
	return p->system_time + (uint64_t)(((unsigned __int128)delta * p->mul) >> 32);
}

TEST_F(vcpu, kvmclock_pages)
{
	struct vm *vm = &self->vm;
	struct pvclock_time *t = (struct pvclock_time *)(vm->mem + 0x5000);
	uint32_t *wall = (uint32_t *)(vm->mem + 0x6000);
	const uint64_t ms = 1000000;
	uint64_t c0, c1, c2, tsc, guest, epoch;
	struct timespec real;
	bool ok;

	vm_set_supported_cpuid(vm);
	LOAD_GUEST_CODE(vm->mem, 0x1000, kvmclock_code);
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	c0 = vm_clock(vm->fd);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	c1 = vm_clock(vm->fd);
	EXPECT_EQ(0x5001, get_msr(vm->vcpu, 0x4b564d01, &ok));
	EXPECT_EQ(0x6000, get_msr(vm->vcpu, 0x4b564d00, &ok));
	/* Published: an even version, a scale, a (time, TSC) pair no later
	 * than now (KVM's master clock pairs an older snapshot). */
	EXPECT_EQ(0, t->version & 1);
	EXPECT_NE(0, t->version);
	EXPECT_NE(0, t->mul);
	EXPECT_GE(c1, t->system_time);
	EXPECT_LE(c0, pvclock_read(t, get_msr(vm->vcpu, 0x10, &ok)));
	/* The guest's reading at its current TSC agrees with the host's clock
	 * (within a millisecond: the scale's rounding and the reads' gaps). */
	tsc = get_msr(vm->vcpu, 0x10, &ok);
	ASSERT_TRUE(ok);
	c2 = vm_clock(vm->fd);
	guest = pvclock_read(t, tsc);
	EXPECT_LE(c1, guest + ms) TH_LOG("guest clock %llu, host clock %llu before", (unsigned long long)guest, (unsigned long long)c1);
	EXPECT_GE(c2 + ms, guest) TH_LOG("guest clock %llu, host clock %llu after", (unsigned long long)guest, (unsigned long long)c2);
	/* The wall clock: the real time at which kvmclock read 0. */
	clock_gettime(CLOCK_REALTIME, &real);
	epoch = real.tv_sec - c2 / 1000000000ULL;
	EXPECT_EQ(0, wall[0] & 1);
	EXPECT_NE(0, wall[0]);
	EXPECT_GE(2, labs((long)wall[1] - (long)epoch)) TH_LOG("wall clock %u s, expected about %llu", wall[1], (unsigned long long)epoch);

	/* KVM_SET_CLOCK: every vCPU publishes the new time before it runs on. */
	{
		struct kvm_clock_data data = { .clock = 1000000000000ULL };
		uint32_t version = t->version;

		ASSERT_EQ(0, ioctl(vm->fd, KVM_SET_CLOCK, &data));
		ASSERT_EQ(0, vm_run(vm));
		ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
		EXPECT_LE(1000000000000ULL, t->system_time);
		EXPECT_GT(1000000000000ULL + 60000000000ULL, t->system_time);
		EXPECT_LT(version, t->version);
	}
}

TEST_HARNESS_MAIN

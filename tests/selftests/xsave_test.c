// SPDX-License-Identifier: GPL-2.0
/*
 * XSAVE state: the guest's own XCR0 (XSETBV with KVM's #GP rules, switched
 * around each entry), its AVX registers kept across exits, signals,
 * preemption and the host's own AVX use, KVM_GET/SET_XSAVE(2) in the
 * standard format with KVM's errno rules, KVM_GET/SET_XCRS, and the CPUID
 * leaves that describe it. Each value and errno as real KVM gives it (the
 * same tests run against it first).
 */
#include <signal.h>
#include <sched.h>
#include <sys/time.h>
#include <cpuid.h>

#include "harness.h"
#include "vm.h"
#include "guest_code.h"

#define XFEATURE_FP		(1ULL << 0)
#define XFEATURE_SSE		(1ULL << 1)
#define XFEATURE_YMM		(1ULL << 2)

#define CR4_OSFXSR		(1ULL << 9)
#define CR4_OSXMMEXCPT		(1ULL << 10)
#define CR4_OSXSAVE		(1ULL << 18)

/* Offsets in the standard-format XSAVE image. */
#define XS_FCW			0
#define XS_MXCSR		24
#define XS_MXCSR_MASK		28
#define XS_XMM(i)		(160 + 16 * (i))
#define XS_XSTATE_BV		512
#define XS_XCOMP_BV		520
#define XS_YMMH(i)		(576 + 16 * (i))

#define GUEST_DATA		0x2000	/* YMM values the guest loads */
#define GUEST_OUT		0x3000	/* where the guest stores them */

struct cpuid_buf {
	struct kvm_cpuid2 head;
	struct kvm_cpuid_entry2 entries[100];
};

/* KVM_GET_SUPPORTED_CPUID's entry for (function, index), or NULL. */
static struct kvm_cpuid_entry2 *find_entry(struct cpuid_buf *c, uint32_t function,
					   uint32_t index)
{
	for (uint32_t i = 0; i < c->head.nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];

		if (e->function == function &&
		    (!(e->flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e->index == index))
			return e;
	}
	return NULL;
}

static int supported_cpuid(int sys, struct cpuid_buf *c)
{
	memset(c, 0, sizeof(*c));
	c->head.nent = 100;
	return ioctl(sys, KVM_GET_SUPPORTED_CPUID, c);
}

/* The XCR0 bits the device offers guests (leaf 0xD.0 EDX:EAX). */
static uint64_t supported_xcr0(int sys)
{
	struct cpuid_buf c;
	struct kvm_cpuid_entry2 *e;

	if (supported_cpuid(sys, &c))
		return 0;
	e = find_entry(&c, 0xd, 0);
	return e ? e->eax | ((uint64_t)e->edx << 32) : 0;
}

static uint32_t u32_at(const uint8_t *b, size_t at)
{
	uint32_t v;

	memcpy(&v, b + at, 4);
	return v;
}

static uint64_t u64_at(const uint8_t *b, size_t at)
{
	uint64_t v;

	memcpy(&v, b + at, 8);
	return v;
}

static void put_u64(uint8_t *b, size_t at, uint64_t v)
{
	memcpy(b + at, &v, 8);
}

static int set_xcr0(int vcpu, uint64_t value)
{
	struct kvm_xcrs x = { .nr_xcrs = 1, .xcrs[0] = { .xcr = 0, .value = value } };

	return ioctl(vcpu, KVM_SET_XCRS, &x);
}

static uint64_t get_xcr0(int vcpu)
{
	struct kvm_xcrs x;

	memset(&x, 0xff, sizeof(x));
	if (ioctl(vcpu, KVM_GET_XCRS, &x) || x.nr_xcrs != 1)
		return ~0ULL;
	return x.xcrs[0].value;
}

/* 64-bit mode with SSE and XSAVE enabled in CR4 (and OSXSAVE if `osxsave`). */
static int long_mode_xsave(struct vm *vm, uint64_t rip, bool osxsave)
{
	struct kvm_sregs sregs;
	int r = vm_long_mode(vm, rip);

	if (r)
		return r;
	if (ioctl(vm->vcpu, KVM_GET_SREGS, &sregs))
		return -errno;
	sregs.cr4 |= CR4_OSFXSR | CR4_OSXMMEXCPT;
	if (osxsave)
		sregs.cr4 |= CR4_OSXSAVE;
	return ioctl(vm->vcpu, KVM_SET_SREGS, &sregs) ? -errno : 0;
}

/* A distinct byte pattern for YMM register i. */
static void ymm_pattern(uint8_t out[32], int i)
{
	for (int b = 0; b < 32; b++)
		out[b] = (uint8_t)(0x11 * (i + 1) + 7 * b + 1);
}

TEST(capabilities)
{
	int sys = open_device();
	int size;

	ASSERT_LE(0, sys);
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE));
	/* Both test machines (QEMU's EPYC, Bochs's Haswell) have XSAVE. */
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_XCRS));
	/* At least a struct kvm_xsave; more with AVX-512 or AMX. */
	size = ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	EXPECT_LE((int)sizeof(struct kvm_xsave), size);
	close(sys);
}

/*
 * KVM_GET_SUPPORTED_CPUID: XSAVE in leaf 1 (OSXSAVE never: it is the
 * guest's CR4), leaf 0xD.0 with x87 and SSE and the size of their image in
 * EBX and ECX, 0xD.2 (AVX) at its standard offset when AVX is offered, and
 * AVX2 only with AVX.
 */
TEST(supported_cpuid_xsave_leaves)
{
	struct kvm_cpuid_entry2 *l1, *l7, *d0, *d2;
	struct cpuid_buf c;
	int sys = open_device();
	bool avx;

	ASSERT_LE(0, sys);
	ASSERT_EQ(0, supported_cpuid(sys, &c));
	l1 = find_entry(&c, 1, 0);
	ASSERT_NE(NULL, l1);
	EXPECT_NE(0, l1->ecx & (1 << 26));		/* XSAVE */
	EXPECT_EQ(0, l1->ecx & (1 << 27));		/* OSXSAVE */
	avx = l1->ecx & (1 << 28);
	d0 = find_entry(&c, 0xd, 0);
	ASSERT_NE(NULL, d0);
	EXPECT_EQ(XFEATURE_FP | XFEATURE_SSE, d0->eax & (XFEATURE_FP | XFEATURE_SSE));
	EXPECT_EQ(avx, !!(d0->eax & XFEATURE_YMM));
	EXPECT_EQ(d0->ebx, d0->ecx);
	if (d0->eax == 0x7 && d0->edx == 0)
		EXPECT_EQ(832, d0->ebx);
	d2 = find_entry(&c, 0xd, 2);
	if (avx) {
		ASSERT_NE(NULL, d2);
		EXPECT_EQ(256, d2->eax);
		EXPECT_EQ(576, d2->ebx);
	}
	l7 = find_entry(&c, 7, 0);
	if (l7 && !avx)
		EXPECT_EQ(0, l7->ebx & (1 << 5));	/* AVX2 */
	close(sys);
}

/*
 * KVM_GET/SET_XCRS: XCR0 is 1 after RESET; a valid value round-trips; KVM's
 * EINVAL for more than KVM_MAX_XCRS entries, flags, and each invalid XCR0
 * (x87 off, AVX without SSE, bits the guest's CPUID lacks); other XCRs are
 * ignored.
 */
TEST(xcrs_round_trip_and_errno)
{
	struct kvm_xcrs x;
	struct vm vm;
	uint64_t xcr0;

	ASSERT_EQ(0, vm_create(&vm));
	xcr0 = supported_xcr0(vm.sys);
	memset(&x, 0xff, sizeof(x));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_XCRS, &x));
	EXPECT_EQ(1, x.nr_xcrs);
	EXPECT_EQ(0, x.flags);
	EXPECT_EQ(0, x.xcrs[0].xcr);
	EXPECT_EQ(1, x.xcrs[0].value);
	EXPECT_EQ(0, x.xcrs[1].value);
	EXPECT_EQ(0, x.padding[0]);

	EXPECT_EQ(0, set_xcr0(vm.vcpu, XFEATURE_FP | XFEATURE_SSE));
	EXPECT_EQ(XFEATURE_FP | XFEATURE_SSE, get_xcr0(vm.vcpu));
	if (xcr0 & XFEATURE_YMM) {
		EXPECT_EQ(0, set_xcr0(vm.vcpu, 0x7));
		EXPECT_EQ(0x7, get_xcr0(vm.vcpu));
	}
	EXPECT_ERRNO(EINVAL, set_xcr0(vm.vcpu, 0));
	EXPECT_ERRNO(EINVAL, set_xcr0(vm.vcpu, XFEATURE_SSE));
	EXPECT_ERRNO(EINVAL, set_xcr0(vm.vcpu, XFEATURE_FP | XFEATURE_YMM));
	EXPECT_ERRNO(EINVAL, set_xcr0(vm.vcpu, XFEATURE_FP | (1ULL << 63)));
	EXPECT_ERRNO(EINVAL, set_xcr0(vm.vcpu, XFEATURE_FP | (1ULL << 9)));
	EXPECT_NE(~0ULL, get_xcr0(vm.vcpu));

	memset(&x, 0, sizeof(x));
	x.nr_xcrs = KVM_MAX_XCRS + 1;
	EXPECT_ERRNO(EINVAL, ioctl(vm.vcpu, KVM_SET_XCRS, &x));
	x.nr_xcrs = 1;
	x.flags = 1;
	x.xcrs[0].value = 3;
	EXPECT_ERRNO(EINVAL, ioctl(vm.vcpu, KVM_SET_XCRS, &x));
	/* Only XCR0 is looked at; no entry for it changes nothing. */
	x.flags = 0;
	x.xcrs[0].xcr = 1;
	x.xcrs[0].value = 0x12345;
	EXPECT_EQ(0, ioctl(vm.vcpu, KVM_SET_XCRS, &x));
	x.nr_xcrs = 0;
	EXPECT_EQ(0, ioctl(vm.vcpu, KVM_SET_XCRS, &x));
	/* The first entry for XCR0 counts. */
	x.nr_xcrs = 2;
	x.xcrs[1].xcr = 0;
	x.xcrs[1].value = 0x3;
	EXPECT_EQ(0, ioctl(vm.vcpu, KVM_SET_XCRS, &x));
	EXPECT_EQ(0x3, get_xcr0(vm.vcpu));
	EXPECT_ERRNO(EFAULT, ioctl(vm.vcpu, KVM_SET_XCRS, (void *)8));
	EXPECT_ERRNO(EFAULT, ioctl(vm.vcpu, KVM_GET_XCRS, (void *)8));
	vm_destroy(&vm);
}

/* Without leaf 0xD in its CPUID, a guest may have x87 only in XCR0. */
TEST(xcr0_follows_the_guests_cpuid)
{
	struct cpuid_buf c;
	struct vm vm;

	ASSERT_EQ(0, vm_create(&vm));
	ASSERT_EQ(0, supported_cpuid(vm.sys, &c));
	for (uint32_t i = 0; i < c.head.nent; i++)
		if (c.entries[i].function == 0xd)
			c.entries[i].function = 0x4fffffff;
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_CPUID2, &c));
	EXPECT_ERRNO(EINVAL, set_xcr0(vm.vcpu, XFEATURE_FP | XFEATURE_SSE));
	EXPECT_EQ(0, set_xcr0(vm.vcpu, XFEATURE_FP));
	vm_destroy(&vm);
}

/* AMX tile data in leaf 0xD needs a permission this process never asked for. */
TEST(set_cpuid_refuses_amx_without_permission)
{
	struct kvm_cpuid_entry2 *d0;
	struct cpuid_buf c;
	struct vm vm;

	ASSERT_EQ(0, vm_create(&vm));
	ASSERT_EQ(0, supported_cpuid(vm.sys, &c));
	d0 = find_entry(&c, 0xd, 0);
	ASSERT_NE(NULL, d0);
	d0->eax |= 1 << 18;
	EXPECT_ERRNO(EPERM, ioctl(vm.vcpu, KVM_SET_CPUID2, &c));
	d0->eax &= ~(1 << 18);
	EXPECT_EQ(0, ioctl(vm.vcpu, KVM_SET_CPUID2, &c));
	vm_destroy(&vm);
}

/*
 * KVM_GET_XSAVE after RESET: the initial x87 and SSE state in the legacy
 * region, nothing compacted; KVM_GET_XSAVE2 gives the same image.
 */
TEST(xsave_reset_state)
{
	uint8_t *x2, xs[4096];
	struct vm vm;
	int size;

	ASSERT_EQ(0, vm_create(&vm));
	memset(xs, 0xcc, sizeof(xs));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_XSAVE, xs));
	EXPECT_EQ(0x37f, u32_at(xs, XS_FCW) & 0xffff);
	EXPECT_EQ(0x1f80, u32_at(xs, XS_MXCSR));
	EXPECT_NE(0, u32_at(xs, XS_MXCSR_MASK));
	EXPECT_EQ(0, u64_at(xs, XS_XSTATE_BV) & ~(XFEATURE_FP | XFEATURE_SSE | XFEATURE_YMM));
	EXPECT_EQ(0, u64_at(xs, XS_XCOMP_BV));
	EXPECT_EQ(0, u64_at(xs, XS_XMM(0)));
	EXPECT_EQ(0, u64_at(xs, XS_YMMH(0)));
	EXPECT_EQ(0, xs[4095]);

	size = ioctl(vm.sys, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	ASSERT_LE(4096, size);
	x2 = calloc(1, size);
	ASSERT_NE(NULL, x2);
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_XSAVE2, x2));
	EXPECT_EQ(0, memcmp(xs, x2, 1024));
	free(x2);
	vm_destroy(&vm);
}

/*
 * KVM_SET_XSAVE then KVM_GET_XSAVE: x87, SSE and AVX values come back;
 * KVM's EINVAL for a feature the device cannot give, a compacted image,
 * reserved header bytes and a bad MXCSR (nothing changes then).
 */
TEST(xsave_round_trip_and_errno)
{
	uint8_t xs[4096], back[4096];
	struct vm vm;
	uint64_t bv;

	ASSERT_EQ(0, vm_create(&vm));
	bv = supported_xcr0(vm.sys) & (XFEATURE_FP | XFEATURE_SSE | XFEATURE_YMM);
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_XSAVE, xs));
	for (int i = 0; i < 16; i++) {
		uint8_t p[32];

		ymm_pattern(p, i);
		memcpy(xs + XS_XMM(i), p, 16);
		memcpy(xs + XS_YMMH(i), p + 16, 16);
	}
	xs[XS_FCW] = 0x7b;				/* FCW 0x37b */
	memcpy(xs + XS_MXCSR, &(uint32_t){ 0x1fa0 }, 4);	/* PE flag set */
	put_u64(xs, XS_XSTATE_BV, bv);
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_XSAVE, xs));
	memset(back, 0xcc, sizeof(back));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_XSAVE, back));
	EXPECT_EQ(bv, u64_at(back, XS_XSTATE_BV));
	EXPECT_EQ(0x37b, u32_at(back, XS_FCW) & 0xffff);
	EXPECT_EQ(0x1fa0, u32_at(back, XS_MXCSR));
	EXPECT_EQ(0, memcmp(xs + XS_XMM(0), back + XS_XMM(0), 16 * 16));
	if (bv & XFEATURE_YMM)
		EXPECT_EQ(0, memcmp(xs + XS_YMMH(0), back + XS_YMMH(0), 16 * 16));

	/* Errors, in KVM's order; the state stays. */
	put_u64(xs, XS_XSTATE_BV, bv | (1ULL << 63));
	EXPECT_ERRNO(EINVAL, ioctl(vm.vcpu, KVM_SET_XSAVE, xs));
	put_u64(xs, XS_XSTATE_BV, bv);
	put_u64(xs, XS_XCOMP_BV, (1ULL << 63) | bv);
	EXPECT_ERRNO(EINVAL, ioctl(vm.vcpu, KVM_SET_XSAVE, xs));
	put_u64(xs, XS_XCOMP_BV, 0);
	xs[XS_XSTATE_BV + 40] = 1;			/* header reserved bytes */
	EXPECT_ERRNO(EINVAL, ioctl(vm.vcpu, KVM_SET_XSAVE, xs));
	xs[XS_XSTATE_BV + 40] = 0;
	memcpy(xs + XS_MXCSR, &(uint32_t){ 0xffffffff }, 4);
	EXPECT_ERRNO(EINVAL, ioctl(vm.vcpu, KVM_SET_XSAVE, xs));
	EXPECT_ERRNO(EFAULT, ioctl(vm.vcpu, KVM_SET_XSAVE, (void *)8));
	EXPECT_ERRNO(EFAULT, ioctl(vm.vcpu, KVM_GET_XSAVE, (void *)8));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_XSAVE, xs));
	EXPECT_EQ(0x1fa0, u32_at(xs, XS_MXCSR));

	/* Components left out of XSTATE_BV read as initial: zeros. */
	put_u64(xs, XS_XSTATE_BV, XFEATURE_FP);
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_XSAVE, xs));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_XSAVE, back));
	EXPECT_EQ(XFEATURE_FP, u64_at(back, XS_XSTATE_BV));
	EXPECT_EQ(0, u64_at(back, XS_XMM(3)));
	EXPECT_EQ(0, u64_at(back, XS_YMMH(3)));
	EXPECT_EQ(0x1f80, u32_at(back, XS_MXCSR));
	vm_destroy(&vm);
}

/*
 * The guest stores YMM0 and XMM1, which userspace set with KVM_SET_XSAVE
 * (and XCR0 with KVM_SET_XCRS): it sees what userspace put there.
 */
GUEST_CODE64(store_ymm_code,
	"	vmovdqu %ymm0, 0x3000\n"
	"	movdqu %xmm1, 0x3020\n"
	"	out %al, $0x10\n"
	"	hlt\n");

TEST(guest_sees_state_set_by_userspace)
{
	uint8_t xs[4096], p0[32], p1[32];
	struct vm vm;

	ASSERT_EQ(0, vm_create(&vm));
	if (!(supported_xcr0(vm.sys) & XFEATURE_YMM))
		SKIP(return, "no AVX for guests here");
	LOAD_GUEST_CODE(vm.mem, 0x1000, store_ymm_code);
	ASSERT_EQ(0, long_mode_xsave(&vm, 0x1000, true));
	ASSERT_EQ(0, set_xcr0(vm.vcpu, 0x7));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_XSAVE, xs));
	ymm_pattern(p0, 0);
	ymm_pattern(p1, 1);
	memcpy(xs + XS_XMM(0), p0, 16);
	memcpy(xs + XS_YMMH(0), p0 + 16, 16);
	memcpy(xs + XS_XMM(1), p1, 16);
	put_u64(xs, XS_XSTATE_BV, 0x7);
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_XSAVE, xs));
	ASSERT_EQ(0, vm_run(&vm));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x10, vm.run->io.port);
	EXPECT_EQ(0, memcmp(vm.mem + GUEST_OUT, p0, 32));
	EXPECT_EQ(0, memcmp(vm.mem + GUEST_OUT + 32, p1, 16));
	vm_destroy(&vm);
}

/*
 * The guest sets XCR0 itself, loads YMM0-15, sums 1.0 into YMM0 a million
 * times (long enough for timer signals and preemption to land in the
 * middle) and stores all sixteen. Between its runs userspace uses AVX
 * itself, is interrupted by signals whose handler uses AVX, and yields the
 * CPU; the guest's registers must come through it all, and the task's own
 * YMM8 must come through KVM_RUN.
 */
#define SUM_ROUNDS	1000000
GUEST_CODE64(avx_sum_code,
	"	xor %ecx, %ecx\n"
	"	mov $7, %eax\n"
	"	xor %edx, %edx\n"
	"	xsetbv\n"
	"	mov $0x2000, %rsi\n"
	"	vmovdqu 0x000(%rsi), %ymm0\n"
	"	vmovdqu 0x020(%rsi), %ymm1\n"
	"	vmovdqu 0x040(%rsi), %ymm2\n"
	"	vmovdqu 0x060(%rsi), %ymm3\n"
	"	vmovdqu 0x080(%rsi), %ymm4\n"
	"	vmovdqu 0x0a0(%rsi), %ymm5\n"
	"	vmovdqu 0x0c0(%rsi), %ymm6\n"
	"	vmovdqu 0x0e0(%rsi), %ymm7\n"
	"	vmovdqu 0x100(%rsi), %ymm8\n"
	"	vmovdqu 0x120(%rsi), %ymm9\n"
	"	vmovdqu 0x140(%rsi), %ymm10\n"
	"	vmovdqu 0x160(%rsi), %ymm11\n"
	"	vmovdqu 0x180(%rsi), %ymm12\n"
	"	vmovdqu 0x1a0(%rsi), %ymm13\n"
	"	vmovdqu 0x1c0(%rsi), %ymm14\n"
	"	vmovdqu 0x1e0(%rsi), %ymm15\n"
	"	out %al, $0x10\n"		/* userspace looks with KVM_GET_XSAVE */
	"	mov $1000000, %ecx\n"
	"1:	vaddps %ymm1, %ymm0, %ymm0\n"
	"	dec %ecx\n"
	"	jnz 1b\n"
	"	out %al, $0x11\n"
	"	mov $0x3000, %rdi\n"
	"	vmovdqu %ymm0, 0x000(%rdi)\n"
	"	vmovdqu %ymm1, 0x020(%rdi)\n"
	"	vmovdqu %ymm2, 0x040(%rdi)\n"
	"	vmovdqu %ymm3, 0x060(%rdi)\n"
	"	vmovdqu %ymm4, 0x080(%rdi)\n"
	"	vmovdqu %ymm5, 0x0a0(%rdi)\n"
	"	vmovdqu %ymm6, 0x0c0(%rdi)\n"
	"	vmovdqu %ymm7, 0x0e0(%rdi)\n"
	"	vmovdqu %ymm8, 0x100(%rdi)\n"
	"	vmovdqu %ymm9, 0x120(%rdi)\n"
	"	vmovdqu %ymm10, 0x140(%rdi)\n"
	"	vmovdqu %ymm11, 0x160(%rdi)\n"
	"	vmovdqu %ymm12, 0x180(%rdi)\n"
	"	vmovdqu %ymm13, 0x1a0(%rdi)\n"
	"	vmovdqu %ymm14, 0x1c0(%rdi)\n"
	"	vmovdqu %ymm15, 0x1e0(%rdi)\n"
	"	hlt\n");

static volatile sig_atomic_t alarms;

/* Fills YMM0-15 with other values, as any AVX code of the host would. */
static void host_avx_work(uint8_t seed)
{
	uint8_t junk[32];

	memset(junk, seed, sizeof(junk));
	__asm__ volatile("vmovdqu (%0), %%ymm0\n\t"
			 "vmovdqu %%ymm0, %%ymm1\n\t"
			 "vmovdqu %%ymm0, %%ymm2\n\t"
			 "vmovdqu %%ymm0, %%ymm3\n\t"
			 "vmovdqu %%ymm0, %%ymm4\n\t"
			 "vmovdqu %%ymm0, %%ymm5\n\t"
			 "vmovdqu %%ymm0, %%ymm6\n\t"
			 "vmovdqu %%ymm0, %%ymm7\n\t"
			 "vmovdqu %%ymm0, %%ymm8\n\t"
			 "vmovdqu %%ymm0, %%ymm9\n\t"
			 "vmovdqu %%ymm0, %%ymm10\n\t"
			 "vmovdqu %%ymm0, %%ymm11\n\t"
			 "vmovdqu %%ymm0, %%ymm12\n\t"
			 "vmovdqu %%ymm0, %%ymm13\n\t"
			 "vmovdqu %%ymm0, %%ymm14\n\t"
			 "vmovdqu %%ymm0, %%ymm15\n\t"
			 "vaddps %%ymm1, %%ymm2, %%ymm3\n\t"
			 : : "r"(junk)
			 : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
			   "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
			   "xmm13", "xmm14", "xmm15", "memory");
}

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
	host_avx_work(0xa5);
}

/*
 * KVM_RUN by a raw syscall with the task's YMM8 loaded before and read
 * after: the host's own AVX state must survive the guest's. Returns the
 * syscall's result (-errno on failure).
 */
static long run_keeping_ymm8(int vcpu, const uint8_t in[32], uint8_t out[32])
{
	long ret;

	__asm__ volatile("vmovdqu (%[in]), %%ymm8\n\t"
			 "syscall\n\t"
			 "vmovdqu %%ymm8, (%[out])\n\t"
			 : "=a"(ret)
			 : "0"(16L /* __NR_ioctl */), "D"((long)vcpu),
			   "S"((long)KVM_RUN), "d"(0L), [in] "r"(in), [out] "r"(out)
			 : "rcx", "r11", "xmm8", "memory");
	return ret;
}

TEST(avx_state_survives_exits_signals_and_host_use)
{
	uint8_t p[32], mine[32], back[32], xs[4096];
	struct itimerval it = { .it_interval = { 0, 1000 }, .it_value = { 0, 1000 } };
	struct sigaction sa = { .sa_handler = on_alarm };
	int exits = 0, intr = 0, mismatches = 0;
	unsigned int a, b, c, d;
	struct vm vm;
	long r;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1 << 28)) || !(c & (1 << 27)))
		SKIP(return, "the test machine has no AVX");
	ASSERT_EQ(0, vm_create(&vm));
	if (!(supported_xcr0(vm.sys) & XFEATURE_YMM))
		SKIP(return, "no AVX for guests here");
	LOAD_GUEST_CODE(vm.mem, 0x1000, avx_sum_code);
	ASSERT_EQ(0, long_mode_xsave(&vm, 0x1000, true));
	for (int i = 0; i < 16; i++) {
		ymm_pattern(vm.mem + GUEST_DATA + 32 * i, i);
		memset(vm.mem + GUEST_OUT + 32 * i, 0, 32);
	}
	/* YMM0 = 0.0 (the sum), YMM1 = 1.0 in each lane. */
	memset(vm.mem + GUEST_DATA, 0, 32);
	for (int l = 0; l < 8; l++)
		memcpy(vm.mem + GUEST_DATA + 32 + 4 * l, &(float){ 1.0f }, 4);

	/* First stop: the guest's registers as KVM_GET_XSAVE shows them. */
	ASSERT_EQ(0, vm_run(&vm));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	ASSERT_EQ(0x10, vm.run->io.port);
	EXPECT_EQ(0x7, get_xcr0(vm.vcpu));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_XSAVE, xs));
	/* SSE and AVX in use (x87 may read as initial: processors differ). */
	EXPECT_EQ(XFEATURE_SSE | XFEATURE_YMM,
		  u64_at(xs, XS_XSTATE_BV) & (XFEATURE_SSE | XFEATURE_YMM));
	for (int i = 2; i < 16; i++) {
		ymm_pattern(p, i);
		EXPECT_EQ(0, memcmp(xs + XS_XMM(i), p, 16));
		EXPECT_EQ(0, memcmp(xs + XS_YMMH(i), p + 16, 16));
	}

	ASSERT_EQ(0, sigaction(SIGALRM, &sa, NULL));
	ASSERT_EQ(0, setitimer(ITIMER_REAL, &it, NULL));
	memset(mine, 0x3c, sizeof(mine));
	for (;;) {
		host_avx_work((uint8_t)exits);
		sched_yield();
		r = run_keeping_ymm8(vm.vcpu, mine, back);
		if (memcmp(mine, back, 32))
			mismatches++;
		if (r == -EINTR) {
			intr++;
			continue;
		}
		ASSERT_EQ(0, r);
		exits++;
		if (vm.run->exit_reason != KVM_EXIT_IO)
			break;
		ASSERT_EQ(0x11, vm.run->io.port);
	}
	it = (struct itimerval){ 0 };
	setitimer(ITIMER_REAL, &it, NULL);
	signal(SIGALRM, SIG_DFL);
	EXPECT_EQ(KVM_EXIT_HLT, vm.run->exit_reason);
	EXPECT_EQ(0, mismatches);
	TH_LOG("%d exits, %d runs ended by a signal, %d signals", exits, intr, (int)alarms);

	for (int l = 0; l < 8; l++) {
		float sum;

		memcpy(&sum, vm.mem + GUEST_OUT + 4 * l, 4);
		EXPECT_EQ(SUM_ROUNDS, (int)sum);
	}
	for (int i = 1; i < 16; i++) {
		uint8_t want[32];

		if (i == 1) {
			for (int l = 0; l < 8; l++)
				memcpy(want + 4 * l, &(float){ 1.0f }, 4);
		} else {
			ymm_pattern(want, i);
		}
		EXPECT_EQ(0, memcmp(vm.mem + GUEST_OUT + 32 * i, want, 32)) {
			TH_LOG("YMM%d differs", i);
		}
	}
	vm_destroy(&vm);
}

/*
 * XSETBV with KVM's checks: each invalid value is a #GP (the handler
 * reports it on port 0x13 and steps over the instruction), a valid one
 * takes effect; with CR4.OSXSAVE clear it is a #UD (port 0x16); at CPL 3
 * a #GP whatever the value.
 */
GUEST_CODE64(fault_handlers_code,
	/* #GP at +0: report, skip the 3-byte XSETBV, return. */
	"	out %al, $0x13\n"
	"	addq $3, 8(%rsp)\n"
	"	add $8, %rsp\n"
	"	iretq\n"
	".fill 0x40 - (. - fault_handlers_code), 1, 0x90\n"
	/* #UD at +0x40. */
	"	out %al, $0x16\n"
	"	addq $3, (%rsp)\n"
	"	iretq\n");

#define HANDLERS	0x1800
#define IDT		0x5000
#define GDT		0x6000
#define TSS		0x7000

static void set_gate(struct vm *vm, int vector, uint64_t handler)
{
	uint8_t *g = vm->mem + IDT + 16 * vector;
	uint64_t lo = (handler & 0xffff) | (8ULL << 16) | (0x8eULL << 40) |
		      ((handler >> 16 & 0xffff) << 48);

	memcpy(g, &lo, 8);
	memcpy(g + 8, &(uint64_t){ handler >> 32 }, 8);
}

/* IDT (#GP, #UD), GDT (kernel and user code/data), TSS for ring 0's stack. */
static int fault_setup(struct vm *vm)
{
	uint64_t gdt[5] = {
		0,
		0x00af9a000000ffffULL,	/* 0x08: 64-bit code, DPL 0 */
		0x00cf92000000ffffULL,	/* 0x10: data, DPL 0 */
		0x00affa000000ffffULL,	/* 0x18: 64-bit code, DPL 3 */
		0x00cff2000000ffffULL,	/* 0x20: data, DPL 3 */
	};
	struct kvm_sregs sregs;

	LOAD_GUEST_CODE(vm->mem, HANDLERS, fault_handlers_code);
	memset(vm->mem + IDT, 0, 4096);
	set_gate(vm, 13, HANDLERS);
	set_gate(vm, 6, HANDLERS + 0x40);
	memcpy(vm->mem + GDT, gdt, sizeof(gdt));
	memset(vm->mem + TSS, 0, 0x68);
	memcpy(vm->mem + TSS + 4, &(uint64_t){ 0x90000 }, 8);	/* RSP0 */
	if (ioctl(vm->vcpu, KVM_GET_SREGS, &sregs))
		return -errno;
	sregs.idt.base = IDT;
	sregs.idt.limit = 0xfff;
	sregs.gdt.base = GDT;
	sregs.gdt.limit = sizeof(gdt) - 1;
	sregs.tr = (struct kvm_segment){
		.base = TSS, .limit = 0x67, .selector = 0x28, .type = 0xb,
		.present = 1, .s = 0,
	};
	return ioctl(vm->vcpu, KVM_SET_SREGS, &sregs) ? -errno : 0;
}

/* Each case: EDX:EAX, ECX, XSETBV, then port 0x30 + case. */
#define XSETBV_CASE(n, ecx, edx, eax)					\
	"	mov $" #eax ", %eax\n"						\
	"	mov $" #edx ", %edx\n"						\
	"	mov $" #ecx ", %ecx\n"						\
	"	xsetbv\n"							\
	"	out %al, $0x3" #n "\n"

GUEST_CODE64(xsetbv_cases_code,
	XSETBV_CASE(0, 0, 0, 3)			/* valid: x87 | SSE */
	XSETBV_CASE(1, 0, 0, 0)			/* x87 off */
	XSETBV_CASE(2, 0, 0, 2)			/* x87 off */
	XSETBV_CASE(3, 0, 0, 5)			/* AVX without SSE */
	XSETBV_CASE(4, 1, 0, 3)			/* XCR1 */
	XSETBV_CASE(5, 0, 0x80000000, 3)	/* reserved bit 63 */
	XSETBV_CASE(6, 0, 0, 0x203)		/* PKRU: not offered here */
	XSETBV_CASE(7, 0, 0, 7)			/* valid with AVX */
	"	hlt\n");

TEST(xsetbv_faults_as_kvm)
{
	struct vm vm;
	int gp[8] = { 0 };
	bool avx, pkru;
	int n = 0;

	ASSERT_EQ(0, vm_create(&vm));
	avx = supported_xcr0(vm.sys) & XFEATURE_YMM;
	pkru = supported_xcr0(vm.sys) & (1 << 9);
	LOAD_GUEST_CODE(vm.mem, 0x1000, xsetbv_cases_code);
	ASSERT_EQ(0, long_mode_xsave(&vm, 0x1000, true));
	ASSERT_EQ(0, fault_setup(&vm));
	for (;;) {
		ASSERT_EQ(0, vm_run(&vm));
		if (vm.run->exit_reason == KVM_EXIT_HLT)
			break;
		ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
		if (vm.run->io.port == 0x13) {
			gp[n]++;
			continue;
		}
		ASSERT_EQ(0x30 + n, vm.run->io.port);
		if (n == 0)
			EXPECT_EQ(0x3, get_xcr0(vm.vcpu));
		n++;
		ASSERT_GT(9, n);
	}
	EXPECT_EQ(8, n);
	EXPECT_EQ(0, gp[0]);
	for (int i = 1; i <= 5; i++) {
		EXPECT_EQ(1, gp[i]) TH_LOG("case %d", i);
	}
	EXPECT_EQ(pkru ? 0 : 1, gp[6]);
	EXPECT_EQ(avx ? 0 : 1, gp[7]);
	EXPECT_EQ(avx ? 0x7 : 0x3, get_xcr0(vm.vcpu));
	vm_destroy(&vm);
}

GUEST_CODE64(xsetbv_once_code,
	"	xor %ecx, %ecx\n"
	"	xor %edx, %edx\n"
	"	mov $3, %eax\n"
	"	xsetbv\n"
	"	out %al, $0x30\n"
	"	hlt\n");

TEST(xsetbv_without_osxsave_is_ud)
{
	struct vm vm;

	ASSERT_EQ(0, vm_create(&vm));
	LOAD_GUEST_CODE(vm.mem, 0x1000, xsetbv_once_code);
	ASSERT_EQ(0, long_mode_xsave(&vm, 0x1000, false));
	ASSERT_EQ(0, fault_setup(&vm));
	ASSERT_EQ(0, vm_run(&vm));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x16, vm.run->io.port);
	ASSERT_EQ(0, vm_run(&vm));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x30, vm.run->io.port);
	EXPECT_EQ(1, get_xcr0(vm.vcpu));
	vm_destroy(&vm);
}

TEST(xsetbv_at_cpl3_faults)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	uint64_t *pt;
	struct vm vm;

	ASSERT_EQ(0, vm_create(&vm));
	LOAD_GUEST_CODE(vm.mem, 0x1000, xsetbv_once_code);
	ASSERT_EQ(0, long_mode_xsave(&vm, 0x1000, true));
	ASSERT_EQ(0, fault_setup(&vm));
	/* User pages, user segments, IOPL 3 for the OUT. */
	for (int i = 0; i < 3; i++) {
		pt = (uint64_t *)(vm.mem + 0x100000 + 0x1000 * i);
		pt[0] |= 4;
	}
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_SREGS, &sregs));
	sregs.cs.selector = 0x1b;
	sregs.cs.dpl = 3;
	sregs.ss.selector = sregs.ds.selector = sregs.es.selector = 0x23;
	sregs.ss.dpl = sregs.ds.dpl = sregs.es.dpl = 3;
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_SREGS, &sregs));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_REGS, &regs));
	regs.rflags = 0x3002;
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_REGS, &regs));
	ASSERT_EQ(0, vm_run(&vm));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x13, vm.run->io.port);
	EXPECT_EQ(1, get_xcr0(vm.vcpu));
	vm_destroy(&vm);
}

/*
 * CPUID in the guest follows its state, as KVM's runtime CPUID: OSXSAVE
 * is CR4.OSXSAVE, leaf 0xD.0 EBX the size of the image of its XCR0.
 */
GUEST_CODE64(cpuid_runtime_code,
	"	mov $1, %eax\n"
	"	xor %ecx, %ecx\n"
	"	cpuid\n"
	"	mov %ecx, %r8d\n"
	"	mov $0xd, %eax\n"
	"	xor %ecx, %ecx\n"
	"	cpuid\n"
	"	mov %ebx, %r9d\n"
	"	xor %ecx, %ecx\n"
	"	mov $3, %eax\n"
	"	xor %edx, %edx\n"
	"	xsetbv\n"
	"	mov $0xd, %eax\n"
	"	xor %ecx, %ecx\n"
	"	cpuid\n"
	"	mov %ebx, %r10d\n"
	"	hlt\n");

TEST(cpuid_follows_cr4_and_xcr0)
{
	struct kvm_regs regs;
	struct vm vm;

	ASSERT_EQ(0, vm_create(&vm));
	if (!(supported_xcr0(vm.sys) & XFEATURE_YMM))
		SKIP(return, "no AVX for guests here");
	LOAD_GUEST_CODE(vm.mem, 0x1000, cpuid_runtime_code);
	ASSERT_EQ(0, long_mode_xsave(&vm, 0x1000, true));
	ASSERT_EQ(0, set_xcr0(vm.vcpu, 0x7));
	ASSERT_EQ(0, vm_run(&vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm.run->exit_reason);
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_REGS, &regs));
	EXPECT_NE(0, regs.r8 & (1 << 27));
	EXPECT_EQ(832, regs.r9);
	EXPECT_EQ(576, regs.r10);
	vm_destroy(&vm);
}

TEST_HARNESS_MAIN

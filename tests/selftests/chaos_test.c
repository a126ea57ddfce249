// SPDX-License-Identifier: GPL-2.0
/*
 * Guest chaos: random bytes executed as guest code, in real, protected and
 * long mode, with random registers and, in long mode, page tables full of
 * random entries; and random segment and control register state through
 * KVM_SET_SREGS. Every KVM_RUN must end in a KVM exit or an errno (a timer
 * interrupts guests that loop): the kernel log check after the run
 * catches anything else. Seeded like fuzz_test (RKVM_FUZZ_SEED).
 */
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <time.h>

#include "harness.h"
#include "vm.h"

#define ROUNDS 150

static uint64_t rng;

static uint64_t rnd(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dULL;
}

static timer_t timer;

/*
 * KVM_RUN with SIGALRM every 2 ms, so that a looping guest returns; only
 * around KVM_RUN, as other ioctls (KVM's VM creation) may fail with EINTR.
 */
static int run_with_timer(struct vm *vm)
{
	struct itimerspec every_2ms = { .it_interval = { 0, 2000000 }, .it_value = { 0, 2000000 } };
	struct itimerspec off = { 0 };
	int ret, err;

	timer_settime(timer, 0, &every_2ms, NULL);
	ret = ioctl(vm->vcpu, KVM_RUN, 0);
	err = errno;
	timer_settime(timer, 0, &off, NULL);
	errno = err;
	return ret;
}

enum mode { REAL, PROTECTED, LONG, MODES };

static const char *const mode_names[] = { "real", "protected", "long" };

/* Flat 32-bit protected mode, paging off, code at rip. */
static int protected_mode(struct vm *vm, uint64_t rip)
{
	struct kvm_sregs sregs;
	struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = 8, .type = 0xb, .present = 1,
		.s = 1, .db = 1, .g = 1,
	};
	struct kvm_segment data = code;

	if (ioctl(vm->vcpu, KVM_GET_SREGS, &sregs))
		return -errno;
	data.type = 3;
	data.selector = 16;
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.cr0 |= 1;
	if (ioctl(vm->vcpu, KVM_SET_SREGS, &sregs))
		return -errno;
	return vm_set_entry(vm, rip, 0x8000);
}

/* One guest of random code; returns how many KVM_RUNs it took. */
static int run_chaos(struct __test_metadata *_metadata, struct vm *vm, enum mode mode)
{
	struct kvm_regs regs;
	uint64_t *pt;
	int runs, i, r;

	for (i = 0; i < 4096; i++)
		vm->mem[0x1000 + i] = rnd();
	switch (mode) {
	case REAL:
		r = vm_real_mode(vm, 0x1000);
		break;
	case PROTECTED:
		r = protected_mode(vm, 0x1000);
		break;
	default:
		r = vm_long_mode(vm, 0x1000);
		/* Half of the time, absurd page tables below the identity map. */
		pt = (uint64_t *)(vm->mem + 0x100000);
		if (rnd() & 1)
			for (i = 1; i < 512; i++)
				pt[i] = rnd();
		break;
	}
	if (r)
		return r;
	if (ioctl(vm->vcpu, KVM_GET_REGS, &regs))
		return -errno;
	regs.rax = rnd(); regs.rbx = rnd(); regs.rcx = rnd(); regs.rdx = rnd();
	regs.rsi = rnd(); regs.rdi = rnd(); regs.rbp = rnd();
	regs.rflags = 2 | (rnd() & 0x8d5);	/* arithmetic flags, DF, TF, IF */
	if (ioctl(vm->vcpu, KVM_SET_REGS, &regs))
		return -errno;
	for (runs = 0; runs < 20; runs++) {
		int ret = run_with_timer(vm);

		if (ret < 0) {
			/* A signal (the timer) or a refused state: both fine. */
			EXPECT_TRUE(errno == EINTR || errno == EFAULT || errno == EINVAL)
				TH_LOG("%s mode: KVM_RUN: %s", mode_names[mode], strerror(errno));
			break;
		}
		switch (vm->run->exit_reason) {
		case KVM_EXIT_IO:
		case KVM_EXIT_MMIO:
		case KVM_EXIT_HLT:
		case KVM_EXIT_IRQ_WINDOW_OPEN:
		case KVM_EXIT_DEBUG:
			continue;		/* re-enter: the guest goes on */
		case KVM_EXIT_SHUTDOWN:
		case KVM_EXIT_FAIL_ENTRY:
		case KVM_EXIT_INTERNAL_ERROR:
		case KVM_EXIT_INTR:
			return runs + 1;	/* the end of this guest */
		default:
			EXPECT_TRUE(0) TH_LOG("%s mode: exit reason %u", mode_names[mode], vm->run->exit_reason);
			return runs + 1;
		}
	}
	return runs;
}

TEST(random_code_in_every_mode)
{
	const char *env = getenv("RKVM_FUZZ_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	unsigned long guests = 0, runs = 0;
	int m, i;

	rng = seed * 0x9e3779b97f4a7c15ULL + 1;
	TH_LOG("seed %llu (RKVM_FUZZ_SEED reproduces it)", (unsigned long long)seed);
	ASSERT_EQ(0, thread_alarm_timer(&timer));
	for (m = 0; m < MODES; m++) {
		for (i = 0; i < ROUNDS; i++) {
			struct vm vm;
			int r = vm_create(&vm);

			if (r == -ENODEV && testing_rkvm())
				SKIP(return, NO_BACKEND);
			ASSERT_EQ(0, r);
			r = run_chaos(_metadata, &vm, m);
			ASSERT_LE(0, r) TH_LOG("%s mode: setting up: %s", mode_names[m], strerror(-r));
			runs += r;
			guests++;
			vm_destroy(&vm);
		}
	}
	timer_delete(timer);
	printf("# chaos: %lu random guests, %lu KVM_RUNs\n", guests, runs);
}

/*
 * Random segment registers, control registers and EFER: KVM_SET_SREGS
 * takes them or refuses with EINVAL; whatever it took, KVM_RUN ends in an
 * exit (a failed entry, usually) or an errno.
 */
TEST(random_sregs)
{
	unsigned long taken = 0, refused = 0;
	int i;

	rng = 0x5eed;
	ASSERT_EQ(0, thread_alarm_timer(&timer));
	for (i = 0; i < 300; i++) {
		struct kvm_sregs sregs;
		struct vm vm;
		uint64_t *words = (uint64_t *)&sregs;
		size_t w;
		int r = vm_create(&vm);

		if (r == -ENODEV && testing_rkvm())
			SKIP(return, NO_BACKEND);
		ASSERT_EQ(0, r);
		vm.mem[0x1000] = 0xf4;			/* hlt */
		ASSERT_EQ(0, vm_real_mode(&vm, 0x1000));
		ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_SREGS, &sregs));
		/* Flip random bits of a few random words of the structure. */
		for (w = 0; w < 6; w++)
			words[rnd() % (sizeof(sregs) / 8)] ^= rnd() & (rnd() | (1ULL << (rnd() % 64)));
		if (ioctl(vm.vcpu, KVM_SET_SREGS, &sregs)) {
			EXPECT_EQ(EINVAL, errno);
			refused++;
		} else {
			taken++;
			if (run_with_timer(&vm) < 0)
				EXPECT_TRUE(errno == EINTR || errno == EFAULT || errno == EINVAL)
					TH_LOG("KVM_RUN: %s", strerror(errno));
		}
		vm_destroy(&vm);
	}
	timer_delete(timer);
	printf("# sregs: %lu states taken and run, %lu refused\n", taken, refused);
}

TEST_HARNESS_MAIN

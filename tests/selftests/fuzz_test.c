// SPDX-License-Identifier: GPL-2.0
/*
 * An ioctl fuzzer: threads call random KVM ioctls (the ones KVM defines,
 * and random request numbers) on random fds (the device, VMs, vCPUs,
 * statistics fds, closed and bogus numbers) with random and boundary
 * arguments (random buffers, pointers at the edge of a mapping, unmapped
 * and kernel addresses, NULL), run vCPUs with whatever state the calls
 * left (timers interrupt them), create and close VMs, and fork children
 * that use the inherited fds from a foreign mm. The host must answer every
 * call with a result or an errno: the kernel log check after the run
 * catches anything else.
 *
 * Bounded and reproducible: RKVM_FUZZ_SEED (default: the time, printed),
 * RKVM_FUZZ_CALLS per thread (default 4000), 4 threads.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "harness.h"
#include "vm.h"

#define THREADS		4
#define POOL		16

/* Every request KVM defines for x86 that rkvm or KVM clients use. */
static const unsigned long requests[] = {
	KVM_GET_API_VERSION, KVM_CREATE_VM, KVM_CHECK_EXTENSION, KVM_GET_VCPU_MMAP_SIZE,
	KVM_GET_MSR_INDEX_LIST, KVM_GET_SUPPORTED_CPUID, KVM_CREATE_VCPU, KVM_GET_DIRTY_LOG,
	KVM_SET_USER_MEMORY_REGION, KVM_SET_TSS_ADDR, KVM_RUN, KVM_GET_REGS, KVM_SET_REGS,
	KVM_GET_SREGS, KVM_SET_SREGS, KVM_INTERRUPT, KVM_GET_MSRS, KVM_SET_MSRS,
	KVM_SET_CPUID2, KVM_GET_CPUID2, KVM_GET_FPU, KVM_SET_FPU, KVM_SET_GUEST_DEBUG,
	KVM_GET_STATS_FD, KVM_ENABLE_CAP, KVM_GET_MP_STATE, KVM_SET_MP_STATE,
	KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS, KVM_CREATE_IRQCHIP, KVM_IRQ_LINE,
	KVM_SET_IDENTITY_MAP_ADDR, KVM_GET_CLOCK, KVM_SET_CLOCK, KVM_TRANSLATE,
	KVM_GET_DEBUGREGS, KVM_SET_DEBUGREGS,
	KVM_NMI, KVM_X86_SETUP_MCE, KVM_X86_SET_MCE, KVM_X86_GET_MCE_CAP_SUPPORTED,
	KVM_SET_GSI_ROUTING, KVM_IRQ_LINE_STATUS, KVM_GET_TSC_KHZ, KVM_SET_TSC_KHZ,
	KVM_SET_USER_MEMORY_REGION2, KVM_GET_EMULATED_CPUID, KVM_GET_MSR_FEATURE_INDEX_LIST,
	KVM_GET_XSAVE, KVM_SET_XSAVE, KVM_GET_XSAVE2, KVM_GET_XCRS, KVM_SET_XCRS,
	KVM_IOEVENTFD, KVM_REGISTER_COALESCED_MMIO, KVM_UNREGISTER_COALESCED_MMIO,
	KVM_GET_NESTED_STATE, KVM_SET_NESTED_STATE, KVM_GET_LAPIC, KVM_SET_LAPIC, KVM_SIGNAL_MSI,
	KVM_IRQFD, KVM_GET_IRQCHIP, KVM_SET_IRQCHIP, KVM_CREATE_PIT2, KVM_GET_PIT2,
	KVM_SET_PIT2, KVM_GET_PIT, KVM_SET_PIT, KVM_REINJECT_CONTROL, KVM_SET_VAPIC_ADDR,
};

struct fuzzer {
	uint64_t rng;
	int fds[POOL];
	void *runs[POOL];	/* kvm_run mmaps of vCPU fds, to unmap */
	size_t run_size;
	uint8_t *buf;		/* 2 pages, the second PROT_NONE */
	uint8_t *guest;		/* memory for memory slots */
	unsigned long calls, vms, vcpus, runs_done, children;
	timer_t timer;
};

static volatile sig_atomic_t stop;

static uint64_t next(struct fuzzer *f)
{
	/* xorshift64* */
	f->rng ^= f->rng >> 12;
	f->rng ^= f->rng << 25;
	f->rng ^= f->rng >> 27;
	return f->rng * 0x2545f4914f6cdd1dULL;
}

static uint64_t pick(struct fuzzer *f, uint64_t n)
{
	return n ? next(f) % n : 0;
}

/* An interesting integer: small, a boundary, or random. */
static uint64_t some_value(struct fuzzer *f)
{
	static const uint64_t edges[] = {
		0, 1, 2, 0x1000, 0xfff, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ULL,
		~0ULL, 1ULL << 63, 0xffff800000000000ULL, 0x0000800000000000ULL,
	};

	switch (pick(f, 3)) {
	case 0:
		return edges[pick(f, sizeof(edges) / sizeof(edges[0]))];
	case 1:
		return pick(f, 64);
	default:
		return next(f);
	}
}

/* An argument: a value, or a pointer that is good, bad or on the edge. */
static unsigned long some_arg(struct fuzzer *f)
{
	size_t i;

	switch (pick(f, 8)) {
	case 0:
		return 0;
	case 1:
		return 0xffff888000000000UL;			/* kernel direct map */
	case 2:
		return 0x10;					/* unmapped, near NULL */
	case 3:
		return (unsigned long)(f->buf + 4096 - pick(f, 64));	/* runs into PROT_NONE */
	case 4:
		return some_value(f);
	default:
		for (i = 0; i < 4096; i += 8)
			*(uint64_t *)(f->buf + i) = pick(f, 4) ? some_value(f) : 0;
		/* Keep counts in headers small often enough to get past them. */
		if (pick(f, 2))
			*(uint32_t *)f->buf = pick(f, 8);
		return (unsigned long)f->buf;
	}
}

static int some_fd(struct fuzzer *f)
{
	switch (pick(f, 10)) {
	case 0:
		return (int)pick(f, 1024);		/* whatever is (not) there */
	case 1:
		return -1;
	default:
		return f->fds[pick(f, POOL)];
	}
}

static void put_fd(struct fuzzer *f, int fd, void *run)
{
	int slot = (int)pick(f, POOL - 1) + 1;	/* slot 0 keeps the device */

	if (f->fds[slot] >= 0)
		close(f->fds[slot]);
	if (f->runs[slot])
		munmap(f->runs[slot], f->run_size);
	f->fds[slot] = fd;
	f->runs[slot] = run;
}

/* A VM with a slot over random-ish memory and a vCPU, into the pool. */
static void new_vm(struct fuzzer *f)
{
	struct kvm_userspace_memory_region r = {
		.slot = 0, .memory_size = 1 << 20, .userspace_addr = (uintptr_t)f->guest,
	};
	int vm = ioctl(f->fds[0], KVM_CREATE_VM, 0), vcpu;
	void *run;

	if (vm < 0)
		return;
	f->vms++;
	ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r);
	put_fd(f, vm, NULL);
	vcpu = ioctl(vm, KVM_CREATE_VCPU, pick(f, 4));
	if (vcpu < 0)
		return;
	f->vcpus++;
	run = mmap(NULL, f->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	put_fd(f, vcpu, run == MAP_FAILED ? NULL : run);
	if (pick(f, 2))
		put_fd(f, ioctl(vm, KVM_GET_STATS_FD, 0), NULL);
}

/* A child using inherited fds from its own (foreign) mm, then exiting. */
static void child(struct fuzzer *f)
{
	pid_t pid = fork();
	int i;

	if (pid == 0) {
		for (i = 0; i < 50; i++)
			ioctl(some_fd(f), requests[pick(f, sizeof(requests) / sizeof(requests[0]))], some_arg(f));
		_exit(0);
	}
	if (pid > 0) {
		waitpid(pid, NULL, 0);
		f->children++;
	}
}

static void *fuzz(void *arg)
{
	struct fuzzer *f = arg;
	struct itimerspec every_5ms = { .it_interval = { 0, 5000000 }, .it_value = { 0, 5000000 } };
	unsigned long calls = strtoul(getenv("RKVM_FUZZ_CALLS") ?: "4000", NULL, 0), i;

	/* KVM_RUN is interrupted every 5 ms (a guest may loop forever). */
	if (!thread_alarm_timer(&f->timer))
		timer_settime(f->timer, 0, &every_5ms, NULL);
	for (i = 0; i < calls && !stop; i++) {
		unsigned long req;

		switch (pick(f, 40)) {
		case 0:
			new_vm(f);
			continue;
		case 1:
			put_fd(f, -1, NULL);
			continue;
		case 2:
			if (pick(f, 10) == 0)
				child(f);
			continue;
		case 3:
			/* Random guest code: the memory every slot maps. */
			f->guest[pick(f, 1 << 20)] = (uint8_t)next(f);
			continue;
		}
		req = pick(f, 8) ? requests[pick(f, sizeof(requests) / sizeof(requests[0]))]
				 : (unsigned long)next(f) & 0xffffffff;
		if (req == KVM_RUN)
			f->runs_done++;
		ioctl(some_fd(f), req, req == KVM_RUN ? 0 : some_arg(f));
		f->calls++;
	}
	timer_delete(f->timer);
	return NULL;
}

TEST(ioctls_survive_anything)
{
	const char *env = getenv("RKVM_FUZZ_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	struct fuzzer f[THREADS];
	pthread_t t[THREADS];
	unsigned long calls = 0, vms = 0, vcpus = 0, runs = 0, children = 0;
	int sys = open_device(), i, j;

	ASSERT_LE(0, sys);
	TH_LOG("seed %llu (RKVM_FUZZ_SEED=%llu reproduces this run)", (unsigned long long)seed,
	       (unsigned long long)seed);
	for (i = 0; i < THREADS; i++) {
		memset(&f[i], 0, sizeof(f[i]));
		f[i].rng = seed * 0x9e3779b97f4a7c15ULL + i + 1;
		f[i].run_size = ioctl(sys, KVM_GET_VCPU_MMAP_SIZE, 0);
		f[i].buf = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		f[i].guest = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ASSERT_NE(MAP_FAILED, f[i].buf);
		ASSERT_NE(MAP_FAILED, f[i].guest);
		ASSERT_EQ(0, mprotect(f[i].buf + 4096, 4096, PROT_NONE));
		f[i].fds[0] = dup(sys);
		for (j = 1; j < POOL; j++)
			f[i].fds[j] = -1;
		ASSERT_EQ(0, pthread_create(&t[i], NULL, fuzz, &f[i]));
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(t[i], NULL);
		calls += f[i].calls;
		vms += f[i].vms;
		vcpus += f[i].vcpus;
		runs += f[i].runs_done;
		children += f[i].children;
		for (j = 0; j < POOL; j++) {
			if (f[i].runs[j])
				munmap(f[i].runs[j], f[i].run_size);
			if (f[i].fds[j] >= 0)
				close(f[i].fds[j]);
		}
	}
	printf("# fuzz: %lu ioctls (%lu KVM_RUN), %lu VMs and %lu vCPUs created, %lu foreign-mm children\n",
	       calls, runs, vms, vcpus, children);
	/* Everything is closed: the device still answers. */
	EXPECT_EQ(KVM_API_VERSION, ioctl(sys, KVM_GET_API_VERSION, 0));
	close(sys);
}

TEST_HARNESS_MAIN

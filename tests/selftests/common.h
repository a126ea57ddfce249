/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by rkvm's selftests. Every test runs against the device named by
 * $RKVM_DEVICE (default /dev/rkvm), so the same binary checks rkvm and, as the
 * reference, real KVM (/dev/kvm).
 */
#ifndef RKVM_SELFTEST_COMMON_H
#define RKVM_SELFTEST_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline const char *test_device(void)
{
	const char *dev = getenv("RKVM_DEVICE");

	return dev && *dev ? dev : "/dev/rkvm";
}

/* True when the device under test is rkvm rather than the KVM reference. */
static inline bool testing_rkvm(void)
{
	return strstr(test_device(), "rkvm") != NULL;
}

/* What a test says when the CPU has no virtualization rkvm can use. */
#define NO_BACKEND "no SVM or VMX (with EPT and unrestricted guest) on this CPU"

/* An Intel processor (rkvm's VMX backend): from the CPUID vendor string. */
static inline bool host_is_intel(void)
{
	unsigned int eax = 0, ebx, ecx, edx;

	__asm__ volatile("cpuid" : "+a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx));
	return ebx == 0x756e6547 && edx == 0x49656e69 && ecx == 0x6c65746e;	/* GenuineIntel */
}

/*
 * The test VM is QEMU's (TCG, AMD SVM), from the firmware's DMI vendor, or
 * where the kernel has no DMI (the debug kernel), from the test VM's
 * command line (rkvm.emu=qemu, scripts/vm.sh).
 */
static inline bool under_qemu(void)
{
	char buf[512] = "";
	int fd = open("/sys/class/dmi/id/sys_vendor", O_RDONLY);
	ssize_t n;

	if (fd >= 0) {
		n = read(fd, buf, 15);
		close(fd);
		return n >= 4 && strncmp(buf, "QEMU", 4) == 0;
	}
	fd = open("/proc/cmdline", O_RDONLY);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	return strstr(buf, "rkvm.emu=qemu") != NULL;
}

/* A call that must fail with errno `err`. */
#define EXPECT_ERRNO(err, call) do {					\
	errno = 0;							\
	EXPECT_EQ(-1, (call));						\
	EXPECT_EQ(err, errno);						\
} while (0)

static inline void ignore_alarm(int sig)
{
	(void)sig;
}

/*
 * A timer that sends SIGALRM to the calling thread (with a handler that
 * does nothing, so a KVM_RUN in progress returns EINTR): what the fuzz and
 * chaos tests arm around guests that may loop forever. 0 or -errno.
 */
static inline int thread_alarm_timer(timer_t *timer)
{
	struct sigevent ev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGALRM };
	struct sigaction sa = { .sa_handler = ignore_alarm };

	if (sigaction(SIGALRM, &sa, NULL))
		return -errno;
	ev._sigev_un._tid = syscall(SYS_gettid);
	return timer_create(CLOCK_MONOTONIC, &ev, timer) ? -errno : 0;
}

static inline int open_device(void)
{
	return open(test_device(), O_RDWR | O_CLOEXEC);
}

#endif

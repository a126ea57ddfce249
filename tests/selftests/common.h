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
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
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

/* What a test says when rkvm has no backend for the CPU (VMX, for now). */
#define NO_BACKEND "rkvm has no backend for this CPU yet (VMX is its own issue)"

/* A call that must fail with errno `err`. */
#define EXPECT_ERRNO(err, call) do {					\
	errno = 0;							\
	EXPECT_EQ(-1, (call));						\
	EXPECT_EQ(err, errno);						\
} while (0)

static inline int open_device(void)
{
	return open(test_device(), O_RDWR | O_CLOEXEC);
}

#endif

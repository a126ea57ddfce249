/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared by rkvm's selftests. Every test runs against the device named by
 * $RKVM_DEVICE (default /dev/rkvm), so the same binary checks rkvm and, as the
 * reference, real KVM (/dev/kvm).
 */
#ifndef RKVM_SELFTEST_COMMON_H
#define RKVM_SELFTEST_COMMON_H

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

static inline int open_device(void)
{
	return open(test_device(), O_RDWR | O_CLOEXEC);
}

#endif

// SPDX-License-Identifier: GPL-2.0
/*
 * The system fd (/dev/rkvm, /dev/kvm): KVM_GET_API_VERSION, KVM_CHECK_EXTENSION
 * and the errno rules of kvm_dev_ioctl(). Runs against rkvm and against real
 * KVM; where the two are meant to differ (capabilities rkvm does not have yet),
 * the test says so explicitly.
 */
#include <errno.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <linux/kvm.h>

#include "harness.h"
#include "common.h"

FIXTURE(sys) {
	int fd;
};

FIXTURE_SETUP(sys)
{
	self->fd = open_device();
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", test_device(), strerror(errno));
}

FIXTURE_TEARDOWN(sys)
{
	close(self->fd);
}

TEST_F(sys, api_version_is_12)
{
	EXPECT_EQ(12, ioctl(self->fd, KVM_GET_API_VERSION, 0));
	EXPECT_EQ(KVM_API_VERSION, ioctl(self->fd, KVM_GET_API_VERSION, 0));
}

/* kvm_dev_ioctl(): KVM_GET_API_VERSION takes no argument; any other is EINVAL. */
TEST_F(sys, api_version_rejects_an_argument)
{
	errno = 0;
	EXPECT_EQ(-1, ioctl(self->fd, KVM_GET_API_VERSION, 1));
	EXPECT_EQ(EINVAL, errno);
	errno = 0;
	EXPECT_EQ(-1, ioctl(self->fd, KVM_GET_API_VERSION, ~0UL));
	EXPECT_EQ(EINVAL, errno);
}

/* An unknown capability, even a negative or huge one, answers 0, not an error. */
TEST_F(sys, unknown_capability_answers_zero)
{
	EXPECT_EQ(0, ioctl(self->fd, KVM_CHECK_EXTENSION, 0x7fffffffL));
	EXPECT_EQ(0, ioctl(self->fd, KVM_CHECK_EXTENSION, -1L));
	EXPECT_EQ(0, ioctl(self->fd, KVM_CHECK_EXTENSION, 1UL << 40));
}

/*
 * Capabilities are answered honestly: rkvm announces exactly what it
 * implements (this table grows with each feature) and 0 for the rest. Real
 * KVM has the basics (reference values).
 */
static const struct { long cap; int value; } rkvm_caps[] = {
	{ KVM_CAP_USER_MEMORY, 1 },
	{ KVM_CAP_SET_TSS_ADDR, 1 },
	{ KVM_CAP_DESTROY_MEMORY_REGION_WORKS, 1 },
	{ KVM_CAP_JOIN_MEMORY_REGIONS_WORKS, 1 },
	{ KVM_CAP_NR_VCPUS, 64 },
	{ KVM_CAP_MAX_VCPUS, 64 },
	{ KVM_CAP_MAX_VCPU_ID, 64 },
	{ KVM_CAP_NR_MEMSLOTS, 32764 },
	{ KVM_CAP_READONLY_MEM, 1 },
	{ KVM_CAP_EXT_CPUID, 1 },
	{ KVM_CAP_SET_GUEST_DEBUG, 1 },
	{ KVM_CAP_SET_GUEST_DEBUG2, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP |
				    KVM_GUESTDBG_USE_SW_BP | KVM_GUESTDBG_USE_HW_BP |
				    KVM_GUESTDBG_INJECT_BP },
	{ KVM_CAP_IMMEDIATE_EXIT, 1 },
	{ KVM_CAP_BINARY_STATS_FD, 1 },
	{ KVM_CAP_ENABLE_CAP_VM, 1 },
	{ KVM_CAP_MP_STATE, 1 },
	{ KVM_CAP_IRQ_ROUTING, 4096 },
	{ KVM_CAP_MCE, 32 },
	{ KVM_CAP_USER_NMI, 1 },
	{ KVM_CAP_USER_MEMORY2, 1 },
	{ KVM_CAP_SET_IDENTITY_MAP_ADDR, 1 },
	{ KVM_CAP_GET_TSC_KHZ, 1 },
	{ KVM_CAP_VCPU_EVENTS, 1 },
	{ KVM_CAP_ADJUST_CLOCK, KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC },
	{ KVM_CAP_EXT_EMUL_CPUID, 1 },
	{ KVM_CAP_GET_MSR_FEATURES, 1 },
	{ KVM_CAP_DEBUGREGS, 1 },
	{ KVM_CAP_XSAVE, 1 },
	{ KVM_CAP_XCRS, 1 },		/* the test machines have XSAVE */
	{ KVM_CAP_XSAVE2, 4096 },	/* x87, SSE, AVX: a struct kvm_xsave */
	{ KVM_CAP_IOEVENTFD, 1 },
	{ KVM_CAP_IOEVENTFD_NO_LENGTH, 1 },
	{ KVM_CAP_IOEVENTFD_ANY_LENGTH, 1 },
	{ KVM_CAP_COALESCED_MMIO, KVM_COALESCED_MMIO_PAGE_OFFSET },
	{ KVM_CAP_COALESCED_PIO, 1 },
	/* Set apart: the value depends on the vendor (see nested_state_test). */
	{ KVM_CAP_NESTED_STATE, -1 },
	/*
	 * The in-kernel irqchips, offered unless rkvm.ko is loaded with
	 * irqchip=0 (a parameter sysfs does not show): all or none, and
	 * apic_test checks what they offer.
	 */
	{ KVM_CAP_SPLIT_IRQCHIP, -2 },
	{ KVM_CAP_IRQCHIP, -2 },
	{ KVM_CAP_IRQ_INJECT_STATUS, -2 },
	{ KVM_CAP_PIT2, -2 },
	{ KVM_CAP_PIT_STATE2, -2 },
	{ KVM_CAP_REINJECT_CONTROL, -2 },
	{ KVM_CAP_SIGNAL_MSI, -2 },
	{ KVM_CAP_IRQFD, -2 },
	{ KVM_CAP_IRQFD_RESAMPLE, -2 },
};

TEST_F(sys, capabilities_are_honest)
{
	long cap;
	size_t i;

	if (!testing_rkvm()) {
		EXPECT_EQ(1, ioctl(self->fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY));
		EXPECT_EQ(1, ioctl(self->fd, KVM_CHECK_EXTENSION, KVM_CAP_IMMEDIATE_EXIT));
		return;
	}
	for (cap = 0; cap < 1024; cap++) {
		int want = 0;

		for (i = 0; i < sizeof(rkvm_caps) / sizeof(rkvm_caps[0]); i++)
			if (rkvm_caps[i].cap == cap)
				want = rkvm_caps[i].value;
		if (want == -1)
			want = host_is_intel() ? 128 + 2 * 4096 : 128 + 4096;
		if (want == -2)
			want = ioctl(self->fd, KVM_CHECK_EXTENSION, KVM_CAP_SPLIT_IRQCHIP) == 1;
		EXPECT_EQ(want, ioctl(self->fd, KVM_CHECK_EXTENSION, cap))
			TH_LOG("capability %ld", cap);
	}
}

/*
 * A request the device does not know is EINVAL on the system fd, as in
 * kvm_dev_ioctl()/kvm_arch_dev_ioctl(): KVM-type requests and foreign ones alike.
 */
TEST_F(sys, unknown_request_is_einval)
{
	struct termios t;

	errno = 0;
	EXPECT_EQ(-1, ioctl(self->fd, _IO(KVMIO, 0x7f), 0));
	EXPECT_EQ(EINVAL, errno);
	errno = 0;
	EXPECT_EQ(-1, ioctl(self->fd, _IOW(KVMIO, 0x03, int), 0));
	EXPECT_EQ(EINVAL, errno);
	errno = 0;
	EXPECT_EQ(-1, ioctl(self->fd, TCGETS, &t));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_FALSE(isatty(self->fd));
}

/* Several opens are independent; closing one leaves the others working. */
TEST(independent_opens)
{
	int a = open_device(), b = open_device();

	ASSERT_LE(0, a);
	ASSERT_LE(0, b);
	EXPECT_EQ(12, ioctl(a, KVM_GET_API_VERSION, 0));
	EXPECT_EQ(0, close(a));
	EXPECT_EQ(12, ioctl(b, KVM_GET_API_VERSION, 0));
	EXPECT_EQ(0, close(b));
}

/* Read and write on the system fd are not supported, as on /dev/kvm. */
TEST_F(sys, read_write_fail)
{
	char buf[8];

	EXPECT_EQ(-1, read(self->fd, buf, sizeof(buf)));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, write(self->fd, buf, sizeof(buf)));
	EXPECT_EQ(EINVAL, errno);
}

TEST_HARNESS_MAIN

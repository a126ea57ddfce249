// SPDX-License-Identifier: GPL-2.0
/*
 * The in-kernel local APIC of a split irqchip (KVM_CAP_SPLIT_IRQCHIP): the
 * capability's rules, the APIC timer waking a vCPU halted in the kernel,
 * an MSI from userspace (KVM_SIGNAL_MSI), INIT and SIPI from one vCPU to
 * another, KVM_GET/SET_LAPIC and the MP states, x2APIC mode only with
 * CPUID's x2APIC, GSI routes raised by KVM_IRQ_LINE and by an irqfd
 * (KVM_IRQFD). The guests are real-mode
 * code using the x2APIC MSRs and the interrupt vector table at 0.
 */
#include <pthread.h>
#include <sys/eventfd.h>

#include "harness.h"
#include "vm.h"
#include "guest_code.h"
#include "stats.h"
#include "apic_guest.h"

/* IOAPIC pins userspace routes, as QEMU gives KVM_CAP_SPLIT_IRQCHIP. */
#define IOAPIC_PINS	24

/* Offsets in struct kvm_lapic_state (the xAPIC register page). */
#define APIC_SVR	0xf0
#define APIC_LVTT	0x320

FIXTURE(apic) {
};

FIXTURE_SETUP(apic)
{
}

FIXTURE_TEARDOWN(apic)
{
}

/* Whether the device has the split irqchip (rkvm: irqchip=1). */
static int has_split_irqchip(void)
{
	int sys = open_device();
	int r = sys < 0 ? 0 : ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_SPLIT_IRQCHIP);

	if (sys >= 0)
		close(sys);
	return r > 0;
}

#define NO_SPLIT_IRQCHIP "no KVM_CAP_SPLIT_IRQCHIP (rkvm.ko without irqchip=1)"

static int enable_split_irqchip(int vm_fd, uint64_t pins)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_SPLIT_IRQCHIP, .args = { pins } };

	return ioctl(vm_fd, KVM_ENABLE_CAP, &cap) ? -errno : 0;
}

/* As vm_create(), with the split irqchip enabled before vCPU 0 exists. */
static int vm_create_split(struct vm *vm)
{
	return vm_create_full(vm, 0, IOAPIC_PINS);
}

/*
 * Waits until the vCPU's HLTs counted reach `n` while KVM_RUN has not
 * returned: it is halted in the kernel. `st` is the vCPU's statistics
 * fd, opened before KVM_RUN started: KVM takes the vCPU's mutex for
 * KVM_GET_STATS_FD, which KVM_RUN holds, while reading the fd needs no
 * lock. Up to 60 s: a hang guard, the guests need microseconds. 0, or -1
 * if it never got there.
 */
static int wait_halts(struct stats *st, uint64_t n)
{
	int i;

	for (i = 0; i < 1200 && stats_value(st, "halt_exits") < n; i++)
		usleep(50000);
	return i < 1200 ? 0 : -1;
}

/*
 * The capability: only before the first vCPU (EEXIST after, and once
 * enabled), at most KVM_MAX_IRQ_ROUTES (4096) pins (EINVAL); without it
 * there is no APIC to get (EINVAL) and no MSI to signal (EINVAL).
 */
TEST_F(apic, split_irqchip_capability_rules)
{
	struct kvm_lapic_state lapic;
	struct kvm_msi msi = { .address_lo = 0xfee00000, .data = 0x41 };
	struct vm vm;

	if (!has_split_irqchip())
		SKIP(return, NO_SPLIT_IRQCHIP);
	ASSERT_EQ(0, vm_create(&vm));
	EXPECT_ERRNO(EINVAL, ioctl(vm.vcpu, KVM_GET_LAPIC, &lapic));
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_SIGNAL_MSI, &msi));
	EXPECT_EQ(-EEXIST, enable_split_irqchip(vm.fd, IOAPIC_PINS)) TH_LOG("after a vCPU");
	vm_destroy(&vm);

	ASSERT_EQ(0, vm_create_split(&vm));
	EXPECT_EQ(-EEXIST, enable_split_irqchip(vm.fd, IOAPIC_PINS)) TH_LOG("twice");
	EXPECT_EQ(0, ioctl(vm.vcpu, KVM_GET_LAPIC, &lapic));
	vm_destroy(&vm);

	memset(&vm, 0, sizeof(vm));
	vm.sys = open_device();
	ASSERT_LE(0, vm.sys);
	vm.fd = ioctl(vm.sys, KVM_CREATE_VM, 0);
	ASSERT_LE(0, vm.fd);
	EXPECT_EQ(-EINVAL, enable_split_irqchip(vm.fd, 4097));
	EXPECT_EQ(0, enable_split_irqchip(vm.fd, 4096));
	vm_destroy(&vm);
}

/*
 * The APIC timer, one-shot, vector 0x40, 20,000,000 bus cycles (20 ms) at
 * divide 1, then STI and HLT: the vCPU halts in the kernel (if it gets
 * there first, as it does unless the host holds it back for 20 ms) until
 * the timer's interrupt, whose handler outputs 0x40.
 */
GUEST_CODE16(apic_timer_code,
	X2APIC_ON("apic_timer_code", 0x40, "2f")
	"	mov $0x83e, %ecx\n"		/* divide configuration: by 1 */
	"	mov $0xb, %eax\n"
	"	wrmsr\n"
	"	mov $0x832, %ecx\n"		/* LVT timer: vector 0x40, one-shot */
	"	mov $0x40, %eax\n"
	"	wrmsr\n"
	"	mov $0x838, %ecx\n"		/* initial count */
	"	mov $20000000, %eax\n"
	"	wrmsr\n"
	"	sti\n"
	"1:	hlt\n"
	"	jmp 1b\n"
	"2:\n"
	EOI_AND_OUT(0x40));

/* KVM_RUN until an exit for userspace: 0, or -errno. */
static int run_vcpu(int vcpu)
{
	return ioctl(vcpu, KVM_RUN, 0) ? -errno : 0;
}

static uint8_t pio_byte(struct kvm_run *run)
{
	return *((uint8_t *)run + run->io.data_offset);
}

TEST_F(apic, timer_interrupt_reaches_the_guest)
{
	struct kvm_lapic_state lapic;
	struct kvm_mp_state mp;
	struct stats st;
	struct vm vm;

	if (!has_split_irqchip())
		SKIP(return, NO_SPLIT_IRQCHIP);
	ASSERT_EQ(0, vm_create_split(&vm));
	LOAD_GUEST_CODE(vm.mem, 0x1000, apic_timer_code);
	ASSERT_EQ(0, vm_real_mode(&vm, 0x1000));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_MP_STATE, &mp));
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, mp.mp_state) TH_LOG("vCPU 0 is the BSP");
	ASSERT_EQ(0, stats_open(&st, vm.vcpu));
	ASSERT_EQ(0, run_vcpu(vm.vcpu));
	/*
	 * Not KVM_EXIT_HLT: the HLT, if the guest got there before the
	 * timer fired (how often depends on the host's speed, so it is only
	 * shown; msi_wakes_a_halted_vcpu waits until it did), waited in the
	 * kernel for the interrupt.
	 */
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x10, vm.run->io.port);
	EXPECT_EQ(0x40, pio_byte(vm.run));
	TH_LOG("HLT exits before the timer's interrupt: %llu",
	       (unsigned long long)stats_value(&st, "halt_exits"));
	stats_close(&st);

	/* The state shows what the guest programmed. */
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_LAPIC, &lapic));
	EXPECT_EQ(0x1ff, *(uint32_t *)&lapic.regs[APIC_SVR]);
	EXPECT_EQ(0x40, *(uint32_t *)&lapic.regs[APIC_LVTT]);
	/* And takes what userspace sets: the LVT timer masked. */
	*(uint32_t *)&lapic.regs[APIC_LVTT] = 0x10040;
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_LAPIC, &lapic));
	memset(&lapic, 0, sizeof(lapic));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_LAPIC, &lapic));
	EXPECT_EQ(0x10040, *(uint32_t *)&lapic.regs[APIC_LVTT]);
	vm_destroy(&vm);
}

/* The APIC on and STI; HLT until an interrupt of vector 0x51 comes. */
GUEST_CODE16(apic_msi_code,
	X2APIC_ON("apic_msi_code", 0x51, "2f")
	"	sti\n"
	"1:	hlt\n"
	"	jmp 1b\n"
	"2:\n"
	EOI_AND_OUT(0x51));

struct runner {
	int vcpu;
	int ret;
};

/*
 * KVM_RUN on its own thread. EAGAIN is KVM_RUN's answer for a vCPU that
 * waited for INIT (KVM_MP_STATE_UNINITIALIZED) and got it: it runs again,
 * as QEMU does.
 */
static void *run_thread(void *arg)
{
	struct runner *r = arg;

	do {
		r->ret = run_vcpu(r->vcpu);
	} while (r->ret == -EAGAIN);
	return NULL;
}

/*
 * Loads `code` (len bytes) at 0x1000 in real mode, opens the vCPU's
 * statistics (before KVM_RUN: see wait_halts()), starts KVM_RUN on its own
 * thread `t` and waits until the vCPU is halted in the kernel. 0, or which
 * step failed: -1 real mode, -2 the statistics, -3 the thread, -4 no HLT.
 */
static int start_halted(struct vm *vm, const uint8_t *code, size_t len,
			struct runner *r, pthread_t *t, struct stats *st)
{
	memcpy(vm->mem + 0x1000, code, len);
	if (vm_real_mode(vm, 0x1000))
		return -1;
	r->vcpu = vm->vcpu;
	if (stats_open(st, vm->vcpu))
		return -2;
	if (pthread_create(t, NULL, run_thread, r))
		return -3;
	return wait_halts(st, 1) ? -4 : 0;
}

/*
 * KVM_SIGNAL_MSI to APIC 0 once its vCPU is halted in KVM_RUN on another
 * thread (its APIC enabled, interrupts on): the MSI is taken (1: one APIC
 * took it) and wakes the vCPU, whose handler runs. A destination no APIC has: 0, as KVM's delivery through
 * its APIC map answers.
 */
TEST_F(apic, msi_wakes_a_halted_vcpu)
{
	struct kvm_msi msi = { .address_lo = 0xfee00000, .data = 0x51 };
	struct runner r;
	pthread_t t;
	struct stats st;
	struct vm vm;
	int n;

	if (!has_split_irqchip())
		SKIP(return, NO_SPLIT_IRQCHIP);
	ASSERT_EQ(0, vm_create_split(&vm));
	ASSERT_EQ(0, start_halted(&vm, apic_msi_code, GUEST_CODE_SIZE(apic_msi_code), &r, &t, &st))
		TH_LOG("the vCPU did not start and halt");
	n = ioctl(vm.fd, KVM_SIGNAL_MSI, &msi);
	EXPECT_EQ(1, n) TH_LOG("KVM_SIGNAL_MSI: %s", n < 0 ? strerror(errno) : "taken by no APIC");
	pthread_join(t, NULL);
	ASSERT_EQ(0, r.ret);
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x10, vm.run->io.port);
	EXPECT_EQ(0x51, pio_byte(vm.run));

	msi.address_lo = 0xfee00000 | (7 << 12);	/* APIC ID 7: no such vCPU */
	EXPECT_EQ(0, ioctl(vm.fd, KVM_SIGNAL_MSI, &msi));
	msi.flags = 2;
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_SIGNAL_MSI, &msi));
	stats_close(&st);
	vm_destroy(&vm);
}

/*
 * vCPU 0 (the BSP) starts vCPU 1 as firmware starts an AP: INIT, then a
 * start-up IPI of vector 2 (x2APIC ICR, MSR 0x830, destination APIC 1).
 * vCPU 1 waits in KVM_RUN until then, and starts at 0x0200:0000.
 */
GUEST_CODE16(apic_bsp_code,
	X2APIC_ON("apic_bsp_code", 0x20, "1f")
	"	mov $0x830, %ecx\n"
	"	mov $1, %edx\n"
	"	mov $0x4500, %eax\n"		/* INIT, assert */
	"	wrmsr\n"
	"	mov $0x4602, %eax\n"		/* start-up, vector 2 */
	"	wrmsr\n"
	"	mov $0x99, %al\n"
	"	out %al, $0x10\n"
	"1:	hlt\n"
	"	jmp 1b\n");

GUEST_CODE16(apic_ap_code,			/* at 0x2000 */
	"	mov $0x77, %al\n"
	"	out %al, $0x11\n"
	"	hlt\n");

TEST_F(apic, init_and_sipi_start_an_ap)
{
	struct kvm_mp_state mp;
	struct kvm_run *ap_run;
	struct runner r;
	pthread_t t;
	struct vm vm;
	int ap;

	if (!has_split_irqchip())
		SKIP(return, NO_SPLIT_IRQCHIP);
	ASSERT_EQ(0, vm_create_split(&vm));
	LOAD_GUEST_CODE(vm.mem, 0x1000, apic_bsp_code);
	LOAD_GUEST_CODE(vm.mem, 0x2000, apic_ap_code);
	ASSERT_EQ(0, vm_real_mode(&vm, 0x1000));
	ap = ioctl(vm.fd, KVM_CREATE_VCPU, 1);
	ASSERT_LE(0, ap);
	ap_run = mmap(NULL, vm.run_size, PROT_READ | PROT_WRITE, MAP_SHARED, ap, 0);
	ASSERT_NE(MAP_FAILED, ap_run);
	ASSERT_EQ(0, ioctl(ap, KVM_GET_MP_STATE, &mp));
	EXPECT_EQ(KVM_MP_STATE_UNINITIALIZED, mp.mp_state) TH_LOG("an AP waits for INIT");

	r.vcpu = ap;
	ASSERT_EQ(0, pthread_create(&t, NULL, run_thread, &r));
	ASSERT_EQ(0, run_vcpu(vm.vcpu));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x99, pio_byte(vm.run));
	pthread_join(t, NULL);
	ASSERT_EQ(0, r.ret);
	ASSERT_EQ(KVM_EXIT_IO, ap_run->exit_reason);
	EXPECT_EQ(0x11, ap_run->io.port);
	EXPECT_EQ(0x77, pio_byte(ap_run));
	ASSERT_EQ(0, ioctl(ap, KVM_GET_MP_STATE, &mp));
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, mp.mp_state);

	munmap(ap_run, vm.run_size);
	close(ap);
	vm_destroy(&vm);
}

/*
 * IA32_APIC_BASE with EXTD set (x2APIC mode) by a guest whose CPUID has
 * no x2APIC: #GP, as KVM (kvm_apic_set_base()); the IVT's #GP handler
 * outputs 0x0d.
 */
GUEST_CODE16(apic_no_x2apic_code,
	"	xor %ax, %ax\n"
	"	mov %ax, %ds\n"
	"	movw $0x1000 + (2f - apic_no_x2apic_code), 13 * 4\n"
	"	movw $0, 13 * 4 + 2\n"
	"	mov $0x1b, %ecx\n"
	"	rdmsr\n"
	"	or $0xc00, %eax\n"
	"	wrmsr\n"
	"	mov $0x99, %al\n"
	"	out %al, $0x10\n"
	"1:	hlt\n"
	"	jmp 1b\n"
	"2:	mov $0x0d, %al\n"
	"	out %al, $0x10\n"
	"	hlt\n");

TEST_F(apic, x2apic_mode_needs_cpuid_x2apic)
{
	struct {
		struct kvm_cpuid2 head;
		struct kvm_cpuid_entry2 entries[100];
	} cpuid = { .head.nent = 100 };
	struct vm vm;
	uint32_t i;

	if (!has_split_irqchip())
		SKIP(return, NO_SPLIT_IRQCHIP);
	ASSERT_EQ(0, vm_create_split(&vm));
	ASSERT_EQ(0, ioctl(vm.sys, KVM_GET_SUPPORTED_CPUID, &cpuid));
	for (i = 0; i < cpuid.head.nent; i++) {
		if (cpuid.entries[i].function == 1) {
			EXPECT_NE(0, cpuid.entries[i].ecx & (1 << 21)) TH_LOG("x2APIC is offered");
			cpuid.entries[i].ecx &= ~(1u << 21);
		}
	}
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_CPUID2, &cpuid));
	LOAD_GUEST_CODE(vm.mem, 0x1000, apic_no_x2apic_code);
	ASSERT_EQ(0, vm_real_mode(&vm, 0x1000));
	ASSERT_EQ(0, run_vcpu(vm.vcpu));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x0d, pio_byte(vm.run)) TH_LOG("0x99: the write went through");
	vm_destroy(&vm);
}

/*
 * KVM_GET/SET_VCPU_EVENTS carry an INIT the APIC latched (in the SMM
 * block, smi.latched_init), as KVM's for save and restore.
 */
TEST_F(apic, vcpu_events_carry_a_latched_init)
{
	struct kvm_vcpu_events e;
	struct vm vm;

	if (!has_split_irqchip())
		SKIP(return, NO_SPLIT_IRQCHIP);
	ASSERT_EQ(0, vm_create_split(&vm));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_VCPU_EVENTS, &e));
	EXPECT_EQ(0, e.smi.latched_init);
	e.flags = KVM_VCPUEVENT_VALID_SMM;
	e.smi.latched_init = 1;
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_VCPU_EVENTS, &e));
	memset(&e, 0, sizeof(e));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_VCPU_EVENTS, &e));
	EXPECT_EQ(1, e.smi.latched_init);
	EXPECT_NE(0, e.flags & KVM_VCPUEVENT_VALID_SMM);
	e.flags = KVM_VCPUEVENT_VALID_SMM;
	e.smi.latched_init = 0;
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_VCPU_EVENTS, &e));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_VCPU_EVENTS, &e));
	EXPECT_EQ(0, e.smi.latched_init);
	vm_destroy(&vm);
}

/* A routing table of up to 4 entries. */
struct routing {
	struct kvm_irq_routing head;
	struct kvm_irq_routing_entry entries[4];
};

static struct kvm_irq_routing_entry msi_route(uint32_t gsi, uint32_t dest, uint32_t data)
{
	struct kvm_irq_routing_entry e = { .gsi = gsi, .type = KVM_IRQ_ROUTING_MSI };

	e.u.msi.address_lo = 0xfee00000 | (dest << 12);
	e.u.msi.data = data;
	return e;
}

/*
 * KVM_SET_GSI_ROUTING with the split irqchip: MSI routes only (an IOAPIC
 * pin route is EINVAL: the IOAPIC is userspace's), at most 4096 entries,
 * no header flags; without an in-kernel irqchip, EINVAL.
 */
TEST_F(apic, gsi_routing_takes_msi_routes)
{
	struct routing r = { .head.nr = 2 };
	struct vm vm;

	if (!has_split_irqchip())
		SKIP(return, NO_SPLIT_IRQCHIP);
	r.entries[0] = msi_route(5, 0, 0x61);
	r.entries[1] = msi_route(30, 0, 0x62);
	ASSERT_EQ(0, vm_create(&vm));
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_SET_GSI_ROUTING, &r));
	vm_destroy(&vm);

	ASSERT_EQ(0, vm_create_split(&vm));
	EXPECT_EQ(0, ioctl(vm.fd, KVM_SET_GSI_ROUTING, &r));
	r.head.flags = 1;
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_SET_GSI_ROUTING, &r));
	r.head.flags = 0;
	r.head.nr = 4097;
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_SET_GSI_ROUTING, &r));
	r.head.nr = 1;
	r.entries[0] = (struct kvm_irq_routing_entry) {
		.gsi = 2, .type = KVM_IRQ_ROUTING_IRQCHIP,
		.u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = 2 },
	};
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_SET_GSI_ROUTING, &r));
	r.head.nr = 0;
	EXPECT_EQ(0, ioctl(vm.fd, KVM_SET_GSI_ROUTING, &r)) TH_LOG("an empty table");
	vm_destroy(&vm);
}

/* The APIC on, STI, HLT until vector 0x61; its handler EOIs, then outputs. */
GUEST_CODE16(apic_level_code,
	X2APIC_ON("apic_level_code", 0x61, "2f")
	"	sti\n"
	"1:	hlt\n"
	"	jmp 1b\n"
	"2:\n"
	EOI_AND_OUT(0x61));

/*
 * A userspace IOAPIC's pin as the split irqchip serves it: GSI 5 (one of
 * the capability's 24 pins) routed to a level-triggered MSI, raised with
 * KVM_IRQ_LINE_STATUS while the vCPU is halted (status 1: one APIC took
 * it). The guest's EOI of that vector returns KVM_EXIT_IOAPIC_EOI for the
 * IOAPIC, then the guest goes on. A lowered line sends nothing (-1).
 */
TEST_F(apic, irq_line_sends_a_level_msi_and_the_eoi_exits)
{
	struct routing r = { .head.nr = 1 };
	struct kvm_irq_level line = { .irq = 5, .level = 1 };
	struct runner run;
	pthread_t t;
	struct stats st;
	struct vm vm;

	if (!has_split_irqchip())
		SKIP(return, NO_SPLIT_IRQCHIP);
	ASSERT_EQ(0, vm_create_split(&vm));
	r.entries[0] = msi_route(5, 0, 0x8061);	/* level-triggered, vector 0x61 */
	ASSERT_EQ(0, ioctl(vm.fd, KVM_SET_GSI_ROUTING, &r));
	ASSERT_EQ(0, start_halted(&vm, apic_level_code, GUEST_CODE_SIZE(apic_level_code), &run, &t, &st))
		TH_LOG("the vCPU did not start and halt");
	ASSERT_EQ(0, ioctl(vm.fd, KVM_IRQ_LINE_STATUS, &line));
	EXPECT_EQ(1, line.status);
	pthread_join(t, NULL);
	ASSERT_EQ(0, run.ret);
	ASSERT_EQ(KVM_EXIT_IOAPIC_EOI, vm.run->exit_reason);
	EXPECT_EQ(0x61, vm.run->eoi.vector);
	ASSERT_EQ(0, run_vcpu(vm.vcpu));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x61, pio_byte(vm.run));

	line = (struct kvm_irq_level) { .irq = 5, .level = 0 };
	ASSERT_EQ(0, ioctl(vm.fd, KVM_IRQ_LINE_STATUS, &line));
	EXPECT_EQ(-1, line.status);
	line = (struct kvm_irq_level) { .irq = 9, .level = 1 };
	ASSERT_EQ(0, ioctl(vm.fd, KVM_IRQ_LINE_STATUS, &line));
	EXPECT_EQ(-1, line.status) TH_LOG("a GSI with no route");
	stats_close(&st);
	vm_destroy(&vm);
}

static int irqfd(int vm_fd, int fd, uint32_t gsi, uint32_t flags)
{
	struct kvm_irqfd req = { .fd = fd, .gsi = gsi, .flags = flags };

	return ioctl(vm_fd, KVM_IRQFD, &req) ? -errno : 0;
}

static void signal_eventfd(int efd)
{
	uint64_t one = 1;

	if (write(efd, &one, sizeof(one)) != sizeof(one))
		perror("write to the eventfd");
}

/* A nonblocking eventfd's count, taken: -EAGAIN if it is 0. */
static int64_t take_count(int efd)
{
	uint64_t count;

	return read(efd, &count, sizeof(count)) == sizeof(count) ? (int64_t)count : -errno;
}

/*
 * KVM_IRQFD with the split irqchip: GSI 7 routed to an MSI (vector 0x51 to
 * APIC 0); a signal of the eventfd sends it and wakes the halted vCPU, the
 * count taken by the irqfd. Errors: EINVAL without an in-kernel irqchip
 * (x86 KVM's answer), for an unknown flag, for RESAMPLE (it needs KVM_CREATE_IRQCHIP's
 * IOAPIC) and for a file that is not an eventfd, EBADF for no file, EBUSY
 * for an eventfd that has an irqfd (in this VM or another). A deassign
 * that matches nothing is not an error; after one, signals stay with the
 * eventfd, and one pending at the next assign is sent at once. The
 * eventfd's close and the VM file's release both end an irqfd (the debug
 * kernel's kmemleak and the module's unload check nothing is left).
 */
TEST_F(apic, irqfd_sends_a_gsi_msi_route)
{
	struct routing r = { .head.nr = 1 };
	struct runner run;
	struct stats st;
	struct vm vm, other;
	pthread_t t;
	int efd, efd2;

	if (!has_split_irqchip())
		SKIP(return, NO_SPLIT_IRQCHIP);
	efd = eventfd(0, EFD_NONBLOCK);
	efd2 = eventfd(0, EFD_NONBLOCK);
	ASSERT_LE(0, efd);
	ASSERT_LE(0, efd2);
	ASSERT_EQ(0, vm_create(&vm));
	EXPECT_EQ(-EINVAL, irqfd(vm.fd, efd, 7, 0)) TH_LOG("no in-kernel irqchip");
	EXPECT_EQ(0, irqfd(vm.fd, efd, 7, KVM_IRQFD_FLAG_DEASSIGN));
	vm_destroy(&vm);

	ASSERT_EQ(0, vm_create_split(&vm));
	r.entries[0] = msi_route(7, 0, 0x51);
	ASSERT_EQ(0, ioctl(vm.fd, KVM_SET_GSI_ROUTING, &r));
	EXPECT_EQ(-EINVAL, irqfd(vm.fd, efd, 7, 4)) TH_LOG("unknown flag");
	EXPECT_EQ(-EINVAL, irqfd(vm.fd, efd, 7, KVM_IRQFD_FLAG_RESAMPLE));
	EXPECT_EQ(-EBADF, irqfd(vm.fd, -1, 7, 0));
	EXPECT_EQ(-EINVAL, irqfd(vm.fd, vm.fd, 7, 0)) TH_LOG("not an eventfd");
	EXPECT_EQ(-EBADF, irqfd(vm.fd, -1, 7, KVM_IRQFD_FLAG_DEASSIGN));
	ASSERT_EQ(0, irqfd(vm.fd, efd, 7, 0));
	EXPECT_EQ(-EBUSY, irqfd(vm.fd, efd, 8, 0)) TH_LOG("one irqfd per eventfd");
	ASSERT_EQ(0, vm_create_split(&other));
	EXPECT_EQ(-EBUSY, irqfd(other.fd, efd, 7, 0)) TH_LOG("of any VM");
	vm_destroy(&other);
	EXPECT_EQ(0, irqfd(vm.fd, efd, 8, KVM_IRQFD_FLAG_DEASSIGN)) TH_LOG("another GSI");
	EXPECT_EQ(-EBUSY, irqfd(vm.fd, efd, 9, 0)) TH_LOG("still assigned to GSI 7");

	ASSERT_EQ(0, start_halted(&vm, apic_msi_code, GUEST_CODE_SIZE(apic_msi_code), &run, &t, &st))
		TH_LOG("the vCPU did not start and halt");
	signal_eventfd(efd);
	pthread_join(t, NULL);
	ASSERT_EQ(0, run.ret);
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x51, pio_byte(vm.run));
	EXPECT_EQ(-EAGAIN, take_count(efd)) TH_LOG("the irqfd took the signal");

	EXPECT_EQ(0, irqfd(vm.fd, efd, 7, KVM_IRQFD_FLAG_DEASSIGN));
	signal_eventfd(efd);
	EXPECT_EQ(1, take_count(efd)) TH_LOG("deassigned: the signal stays with the eventfd");

	/* A signal pending at the assign is sent: the halted vCPU wakes. */
	signal_eventfd(efd);
	ASSERT_EQ(0, pthread_create(&t, NULL, run_thread, &run));
	ASSERT_EQ(0, wait_halts(&st, 2)) TH_LOG("the vCPU never halted again");
	ASSERT_EQ(0, irqfd(vm.fd, efd, 7, 0));
	pthread_join(t, NULL);
	ASSERT_EQ(0, run.ret);
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x51, pio_byte(vm.run));

	/* The eventfd's close ends its irqfd; the VM's release ends efd2's. */
	stats_close(&st);
	ASSERT_EQ(0, irqfd(vm.fd, efd2, 7, 0));
	close(efd);
	vm_destroy(&vm);
	signal_eventfd(efd2);
	EXPECT_EQ(1, take_count(efd2)) TH_LOG("the VM's release unhooked its irqfd");
	ASSERT_EQ(0, vm_create_split(&other));
	EXPECT_EQ(0, irqfd(other.fd, efd2, 7, 0)) TH_LOG("free for another VM");
	vm_destroy(&other);
	close(efd2);
}

TEST_HARNESS_MAIN

// SPDX-License-Identifier: GPL-2.0
/*
 * The in-kernel local APIC of a split irqchip (KVM_CAP_SPLIT_IRQCHIP): the
 * capability's rules, the APIC timer waking a vCPU halted in the kernel,
 * an MSI from userspace (KVM_SIGNAL_MSI), INIT and SIPI from one vCPU to
 * another, KVM_GET/SET_LAPIC and the MP states, x2APIC mode only with
 * CPUID's x2APIC, GSI routes raised by KVM_IRQ_LINE and by an irqfd
 * (KVM_IRQFD). Then the full irqchip (KVM_CREATE_IRQCHIP): its rules and
 * state (KVM_GET/SET_IRQCHIP), the PIC's interrupt through LINT0, an
 * IOAPIC level-triggered pin with its remote IRR and EOI, an irqfd on an
 * IOAPIC pin and one that resamples a level-triggered pin, the vAPIC
 * word; and the in-kernel PIT (KVM_CREATE_PIT2):
 * its rules and state, its ticks into a halted guest. The guests are real-mode code using the x2APIC MSRs and the
 * interrupt vector table at 0, or flat 32-bit code with an IDT where they
 * reach the IOAPIC at 0xfec00000.
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

/* Whether the device has the split irqchip (rkvm: unless irqchip=0). */
static int has_split_irqchip(void)
{
	int sys = open_device();
	int r = sys < 0 ? 0 : ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_SPLIT_IRQCHIP);

	if (sys >= 0)
		close(sys);
	return r > 0;
}

#define NO_SPLIT_IRQCHIP "no KVM_CAP_SPLIT_IRQCHIP (rkvm.ko loaded with irqchip=0)"

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
 * Opens the vCPU's statistics (before KVM_RUN: see wait_halts()), starts
 * KVM_RUN on its own thread `t` and waits until the vCPU is halted in the
 * kernel. 0, or which step failed: -2 the statistics, -3 the thread, -4
 * no HLT.
 */
static int run_until_halted(struct vm *vm, struct runner *r, pthread_t *t, struct stats *st)
{
	r->vcpu = vm->vcpu;
	if (stats_open(st, vm->vcpu))
		return -2;
	if (pthread_create(t, NULL, run_thread, r))
		return -3;
	return wait_halts(st, 1) ? -4 : 0;
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
	return run_until_halted(vm, r, t, st);
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
	EXPECT_EQ(-EINVAL, irqfd(vm.fd, efd, 7, KVM_IRQFD_FLAG_RESAMPLE))
		TH_LOG("resampling needs the in-kernel IOAPIC");
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

/* Whether the device has KVM_CREATE_IRQCHIP (rkvm: unless irqchip=0). */
static int has_full_irqchip(void)
{
	int sys = open_device();
	int r = sys < 0 ? 0 : ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_IRQCHIP);

	if (sys >= 0)
		close(sys);
	return r > 0;
}

#define NO_FULL_IRQCHIP "no KVM_CAP_IRQCHIP (rkvm.ko loaded with irqchip=0)"

/* Bits of an IOAPIC redirection entry. */
#define REDIR_REMOTE_IRR	(1ull << 14)
#define REDIR_MASKED		(1ull << 16)

/* KVM_GET_IRQCHIP of chip `id` into `c`: 0 or -errno. */
static int get_irqchip(int vm_fd, uint32_t id, struct kvm_irqchip *c)
{
	memset(c, 0, sizeof(*c));
	c->chip_id = id;
	return ioctl(vm_fd, KVM_GET_IRQCHIP, c) ? -errno : 0;
}

/* KVM_IRQ_LINE_STATUS: 0 and the status in `status`, or -errno. */
static int line_status(int vm_fd, uint32_t gsi, uint32_t level, int *status)
{
	struct kvm_irq_level l = { .irq = gsi, .level = level };

	if (ioctl(vm_fd, KVM_IRQ_LINE_STATUS, &l))
		return -errno;
	*status = l.status;
	return 0;
}

static struct kvm_irq_routing_entry chip_route(uint32_t gsi, uint32_t chip, uint32_t pin)
{
	struct kvm_irq_routing_entry e = { .gsi = gsi, .type = KVM_IRQ_ROUTING_IRQCHIP };

	e.u.irqchip.irqchip = chip;
	e.u.irqchip.pin = pin;
	return e;
}

/*
 * KVM_CREATE_IRQCHIP: only before the first vCPU (EINVAL after), once
 * (EEXIST, also after or before the split irqchip). KVM_GET_IRQCHIP is
 * ENXIO without it (and with the split one), EINVAL for chip 3. Created:
 * the IOAPIC at 0xfec00000 with every pin masked, the PICs with the PIIX's
 * ELCR masks, the vCPU with a local APIC, KVM_INTERRUPT refused (ENXIO).
 * The default routing sends GSI 4 to IOAPIC pin 4 (masked: ignored) and
 * PIC IRQ 4 (unmasked): raised, 1; lowered, 2 (both chips lowered it);
 * raised again while the PIC still has the first edge, 0 (coalesced).
 * Chip routes can be set. KVM_SET_IRQCHIP's state reads back as set.
 */
TEST_F(apic, create_irqchip_rules_and_state)
{
	struct routing r = { .head.nr = 2 };
	struct kvm_interrupt intr = { .irq = 0x30 };
	struct kvm_lapic_state lapic;
	struct kvm_irqchip chip;
	struct vm vm;
	int i, status = 0;

	if (!has_full_irqchip())
		SKIP(return, NO_FULL_IRQCHIP);
	ASSERT_EQ(0, vm_create(&vm));
	EXPECT_EQ(-ENXIO, get_irqchip(vm.fd, KVM_IRQCHIP_IOAPIC, &chip));
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0));	/* after a vCPU */
	vm_destroy(&vm);

	ASSERT_EQ(0, vm_create_split(&vm));
	EXPECT_ERRNO(EEXIST, ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0));	/* after the split irqchip */
	EXPECT_EQ(-ENXIO, get_irqchip(vm.fd, KVM_IRQCHIP_IOAPIC, &chip));
	vm_destroy(&vm);

	ASSERT_EQ(0, vm_create_full(&vm, 0, VM_FULL_IRQCHIP));
	EXPECT_ERRNO(EEXIST, ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0));	/* twice */
	EXPECT_EQ(-EEXIST, enable_split_irqchip(vm.fd, IOAPIC_PINS));
	EXPECT_EQ(0, ioctl(vm.vcpu, KVM_GET_LAPIC, &lapic)) TH_LOG("the vCPU has a local APIC");
	EXPECT_ERRNO(ENXIO, ioctl(vm.vcpu, KVM_INTERRUPT, &intr));	/* the PIC is the kernel's */
	EXPECT_EQ(-EINVAL, get_irqchip(vm.fd, 3, &chip));

	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_IOAPIC, &chip));
	EXPECT_EQ(0xfec00000, chip.chip.ioapic.base_address);
	for (i = 0; i < IOAPIC_PINS; i++)
		EXPECT_TRUE(chip.chip.ioapic.redirtbl[i].bits & REDIR_MASKED) TH_LOG("pin %d", i);
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_PIC_MASTER, &chip));
	EXPECT_EQ(0xf8, chip.chip.pic.elcr_mask);
	EXPECT_EQ(0, chip.chip.pic.imr);
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_PIC_SLAVE, &chip));
	EXPECT_EQ(0xde, chip.chip.pic.elcr_mask);

	ASSERT_EQ(0, line_status(vm.fd, 4, 1, &status));
	EXPECT_EQ(1, status) TH_LOG("raised");
	ASSERT_EQ(0, line_status(vm.fd, 4, 0, &status));
	EXPECT_EQ(2, status) TH_LOG("lowered");
	ASSERT_EQ(0, line_status(vm.fd, 4, 1, &status));
	EXPECT_EQ(0, status) TH_LOG("raised again, coalesced");
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_PIC_MASTER, &chip));
	EXPECT_EQ(1 << 4, chip.chip.pic.irr);

	r.entries[0] = chip_route(30, KVM_IRQCHIP_IOAPIC, 2);
	r.entries[1] = chip_route(30, KVM_IRQCHIP_PIC_MASTER, 5);
	ASSERT_EQ(0, ioctl(vm.fd, KVM_SET_GSI_ROUTING, &r));
	ASSERT_EQ(0, line_status(vm.fd, 30, 1, &status));
	EXPECT_EQ(1, status) TH_LOG("GSI 30: the PIC's IRQ 5 took it");
	ASSERT_EQ(0, line_status(vm.fd, 4, 1, &status));
	EXPECT_EQ(-1, status) TH_LOG("GSI 4 has no route any more");

	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_IOAPIC, &chip));
	chip.chip.ioapic.redirtbl[5].bits = 0x10045;
	chip.chip.ioapic.id = 3;
	ASSERT_EQ(0, ioctl(vm.fd, KVM_SET_IRQCHIP, &chip));
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_IOAPIC, &chip));
	EXPECT_EQ(0x10045, chip.chip.ioapic.redirtbl[5].bits);
	EXPECT_EQ(3, chip.chip.ioapic.id);
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_PIC_SLAVE, &chip));
	chip.chip.pic.irq_base = 0x70;
	chip.chip.pic.imr = 0xfe;
	ASSERT_EQ(0, ioctl(vm.fd, KVM_SET_IRQCHIP, &chip));
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_PIC_SLAVE, &chip));
	EXPECT_EQ(0x70, chip.chip.pic.irq_base);
	EXPECT_EQ(0xfe, chip.chip.pic.imr);
	chip.chip_id = 3;
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_SET_IRQCHIP, &chip));
	vm_destroy(&vm);
}

/*
 * A real-mode guest programs the PIC as a BIOS does (vectors 0x08-0x0f,
 * only IRQ 3 unmasked) and reads its IMR back, then waits with STI and
 * HLT. IRQ 3's handler reports, sends a non-specific EOI, and reports
 * again. The PIC reaches the vCPU through its APIC's LINT0 (ExtINT at
 * RESET on the BSP).
 */
GUEST_CODE16(pic_extint_code,
	"	xor %ax, %ax\n"
	"	mov %ax, %ds\n"
	"	movw $0x1000 + (2f - pic_extint_code), 0x0b * 4\n"
	"	movw $0, 0x0b * 4 + 2\n"
	"	mov $0x11, %al\n"		/* ICW1: cascade, ICW4 follows */
	"	out %al, $0x20\n"
	"	mov $0x08, %al\n"		/* ICW2: vectors 0x08-0x0f */
	"	out %al, $0x21\n"
	"	mov $0x04, %al\n"		/* ICW3: the slave on IR2 */
	"	out %al, $0x21\n"
	"	mov $0x01, %al\n"		/* ICW4: 8086 mode */
	"	out %al, $0x21\n"
	"	mov $0xf7, %al\n"		/* OCW1: only IRQ 3 */
	"	out %al, $0x21\n"
	"	in $0x21, %al\n"
	"	out %al, $0x12\n"
	"	sti\n"
	"1:	hlt\n"
	"	jmp 1b\n"
	"2:	mov $0x0b, %al\n"
	"	out %al, $0x10\n"
	"	mov $0x20, %al\n"		/* OCW2: non-specific EOI */
	"	out %al, $0x20\n"
	"	mov $0x0c, %al\n"
	"	out %al, $0x10\n"
	"	iret\n");

TEST_F(apic, pic_interrupt_reaches_the_guest_through_lint0)
{
	struct kvm_irqchip chip;
	struct runner run;
	struct stats st;
	pthread_t t;
	struct vm vm;
	int status = 0;

	if (!has_full_irqchip())
		SKIP(return, NO_FULL_IRQCHIP);
	ASSERT_EQ(0, vm_create_full(&vm, 0, VM_FULL_IRQCHIP));
	LOAD_GUEST_CODE(vm.mem, 0x1000, pic_extint_code);
	ASSERT_EQ(0, vm_real_mode(&vm, 0x1000));
	ASSERT_EQ(0, run_vcpu(vm.vcpu));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x12, vm.run->io.port) TH_LOG("the PIC's ports are the kernel's");
	EXPECT_EQ(0xf7, pio_byte(vm.run)) TH_LOG("IMR read back");

	ASSERT_EQ(0, run_until_halted(&vm, &run, &t, &st)) TH_LOG("the vCPU did not halt");
	ASSERT_EQ(0, line_status(vm.fd, 3, 1, &status));
	EXPECT_EQ(1, status) TH_LOG("the PIC took it, the IOAPIC's pin is masked");
	pthread_join(t, NULL);
	ASSERT_EQ(0, run.ret);
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x0b, pio_byte(vm.run)) TH_LOG("vector 0x08 + IRQ 3");
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_PIC_MASTER, &chip));
	EXPECT_EQ(0x08, chip.chip.pic.irq_base);
	EXPECT_EQ(0xf7, chip.chip.pic.imr);
	EXPECT_EQ(1 << 3, chip.chip.pic.isr) TH_LOG("IRQ 3 in service");

	ASSERT_EQ(0, run_vcpu(vm.vcpu));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x0c, pio_byte(vm.run));
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_PIC_MASTER, &chip));
	EXPECT_EQ(0, chip.chip.pic.isr) TH_LOG("the EOI ended it");
	EXPECT_EQ(0, chip.chip.pic.irr) TH_LOG("the edge was taken");
	stats_close(&st);
	vm_destroy(&vm);
}

/*
 * Flat 32-bit protected mode without paging: a GDT at 0x3800 with flat
 * code (selector 8) and data (16) descriptors, which the interrupt's
 * delivery and IRET load, the same in the segment caches; an IDT at 0x3000
 * whose only present gate is `vector`'s, an interrupt gate to `handler`;
 * code at `rip`.
 */
static int vm_flat32(struct vm *vm, uint64_t rip, uint8_t vector, uint32_t handler)
{
	uint64_t *idt = (uint64_t *)(vm->mem + 0x3000);
	uint64_t *gdt = (uint64_t *)(vm->mem + 0x3800);
	struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = 8, .type = 0xb,
		.present = 1, .db = 1, .s = 1, .g = 1,
	};
	struct kvm_segment data = code;
	struct kvm_sregs sregs;

	gdt[0] = 0;
	gdt[1] = 0x00cf9b000000ffffull;		/* code: base 0, 4 GiB, 32-bit */
	gdt[2] = 0x00cf93000000ffffull;		/* data: base 0, 4 GiB, writable */
	memset(idt, 0, 256 * 8);
	idt[vector] = (handler & 0xffff) | (8ull << 16) | (0x8eull << 40) |
		      ((uint64_t)(handler >> 16) << 48);
	if (ioctl(vm->vcpu, KVM_GET_SREGS, &sregs))
		return -errno;
	data.type = 3;
	data.selector = 16;
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.gdt.base = 0x3800;
	sregs.gdt.limit = 3 * 8 - 1;
	sregs.idt.base = 0x3000;
	sregs.idt.limit = 256 * 8 - 1;
	sregs.cr0 = 0x11;				/* ET | PE */
	if (ioctl(vm->vcpu, KVM_SET_SREGS, &sregs))
		return -errno;
	return vm_set_entry(vm, rip, 0x8000);
}

/*
 * The guest turns on its x2APIC, masks the PIC, points IOAPIC pin 9 at
 * vector 0x62, level-triggered, to APIC 0, and reads the IOAPIC's version
 * register (out to port 0x12, 4 bytes); then STI and HLT.
 */
GUEST_CODE32(ioapic_level_code,
	"	mov $0x1b, %ecx\n"
	"	rdmsr\n"
	"	or $0xc00, %eax\n"
	"	wrmsr\n"
	"	mov $0x80f, %ecx\n"
	"	mov $0x1ff, %eax\n"
	"	xor %edx, %edx\n"
	"	wrmsr\n"
	"	mov $0xff, %al\n"
	"	out %al, $0x21\n"
	"	out %al, $0xa1\n"
	"	movl $0x22, 0xfec00000\n"	/* IOREGSEL: pin 9, low half */
	"	movl $0x8062, 0xfec00010\n"	/* level, fixed, vector 0x62 */
	"	movl $0x23, 0xfec00000\n"	/* high half */
	"	movl $0, 0xfec00010\n"		/* destination APIC 0 */
	"	movl $1, 0xfec00000\n"		/* the version register */
	"	mov 0xfec00010, %eax\n"
	"	out %eax, $0x12\n"
	"	sti\n"
	"1:	hlt\n"
	"	jmp 1b\n");

/* Vector 0x62's handler, at 0x2000: reports, EOIs, reports again. */
GUEST_CODE32(ioapic_level_handler,
	"	mov $0x62, %al\n"
	"	out %al, $0x10\n"
	"	mov $0x80b, %ecx\n"
	"	xor %eax, %eax\n"
	"	xor %edx, %edx\n"
	"	wrmsr\n"
	"	mov $0x63, %al\n"
	"	out %al, $0x10\n"
	"	iret\n");

/* Runs the vCPU to its next port output and returns the byte; -1 if not. */
static int run_to_out(struct vm *vm)
{
	if (run_vcpu(vm->vcpu) || vm->run->exit_reason != KVM_EXIT_IO)
		return -1;
	return pio_byte(vm->run);
}

/*
 * An IOAPIC level-triggered pin as an unmodified guest drives it: the
 * guest programs the IOAPIC through its MMIO window (in the kernel). GSI
 * 9 raised while the vCPU is halted: the IOAPIC sends vector 0x62 (status
 * 1; the PIC's IRQ 9 is masked) and sets the pin's remote IRR; raised
 * again before the EOI, nothing is sent (-1). The handler's EOI clears
 * remote IRR, and since the line is still high the IOAPIC sends it again
 * (remote IRR set again): once the line is lowered (status 1) and the
 * handler returns, the second interrupt runs the handler again, whose EOI
 * then ends it (remote IRR and IRR clear). Then an irqfd on GSI 10, an
 * edge pin to the same vector set with KVM_SET_IRQCHIP, wakes the halted
 * vCPU.
 */
TEST_F(apic, ioapic_level_pin_remote_irr_and_eoi)
{
	struct kvm_irqchip chip;
	struct runner run;
	struct stats st;
	pthread_t t;
	struct vm vm;
	int status = 0, efd;

	if (!has_full_irqchip())
		SKIP(return, NO_FULL_IRQCHIP);
	ASSERT_EQ(0, vm_create_full(&vm, 0, VM_FULL_IRQCHIP));
	LOAD_GUEST_CODE(vm.mem, 0x1000, ioapic_level_code);
	LOAD_GUEST_CODE(vm.mem, 0x2000, ioapic_level_handler);
	ASSERT_EQ(0, vm_flat32(&vm, 0x1000, 0x62, 0x2000));
	ASSERT_EQ(0, run_vcpu(vm.vcpu));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason) TH_LOG("at %#llx", (unsigned long long)vm_rip(&vm));
	EXPECT_EQ(0x12, vm.run->io.port) TH_LOG("the IOAPIC's MMIO is the kernel's");
	EXPECT_EQ(4, vm.run->io.size);
	EXPECT_EQ(0x170011, *(uint32_t *)((uint8_t *)vm.run + vm.run->io.data_offset))
		TH_LOG("version 0x11, 24 pins");

	ASSERT_EQ(0, run_until_halted(&vm, &run, &t, &st)) TH_LOG("the vCPU did not halt");
	ASSERT_EQ(0, line_status(vm.fd, 9, 1, &status));
	EXPECT_EQ(1, status);
	pthread_join(t, NULL);
	ASSERT_EQ(0, run.ret);
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x62, pio_byte(vm.run));
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_IOAPIC, &chip));
	EXPECT_EQ(0x8062, chip.chip.ioapic.redirtbl[9].bits & 0x1ffff & ~REDIR_REMOTE_IRR);
	EXPECT_TRUE(chip.chip.ioapic.redirtbl[9].bits & REDIR_REMOTE_IRR);
	ASSERT_EQ(0, line_status(vm.fd, 9, 1, &status));
	EXPECT_EQ(-1, status) TH_LOG("awaiting the EOI");

	EXPECT_EQ(0x63, run_to_out(&vm)) TH_LOG("after the EOI");
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_IOAPIC, &chip));
	EXPECT_TRUE(chip.chip.ioapic.redirtbl[9].bits & REDIR_REMOTE_IRR) TH_LOG("sent again");
	ASSERT_EQ(0, line_status(vm.fd, 9, 0, &status));
	EXPECT_EQ(1, status) TH_LOG("lowered");
	EXPECT_EQ(0x62, run_to_out(&vm)) TH_LOG("the second interrupt");
	EXPECT_EQ(0x63, run_to_out(&vm));
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_IOAPIC, &chip));
	EXPECT_FALSE(chip.chip.ioapic.redirtbl[9].bits & REDIR_REMOTE_IRR);
	EXPECT_EQ(0, chip.chip.ioapic.irr & (1 << 9));

	/* GSI 10: an edge pin to vector 0x62, raised by an irqfd. */
	chip.chip.ioapic.redirtbl[10].bits = 0x62;
	ASSERT_EQ(0, ioctl(vm.fd, KVM_SET_IRQCHIP, &chip));
	efd = eventfd(0, EFD_NONBLOCK);
	ASSERT_LE(0, efd);
	ASSERT_EQ(0, irqfd(vm.fd, efd, 10, 0));
	ASSERT_EQ(0, pthread_create(&t, NULL, run_thread, &run));
	ASSERT_EQ(0, wait_halts(&st, 2)) TH_LOG("the vCPU never halted again");
	signal_eventfd(efd);
	pthread_join(t, NULL);
	ASSERT_EQ(0, run.ret);
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x62, pio_byte(vm.run)) TH_LOG("the irqfd's edge");
	EXPECT_EQ(0x63, run_to_out(&vm));
	EXPECT_EQ(0, irqfd(vm.fd, efd, 10, KVM_IRQFD_FLAG_DEASSIGN));
	close(efd);
	stats_close(&st);
	vm_destroy(&vm);
}

/*
 * KVM_SET_VAPIC_ADDR, which QEMU calls at every reset with an in-kernel
 * APIC: EINVAL without one and for an address outside guest RAM, 0 turns
 * it off. With the APIC enabled, the word there mirrors TPR (bits 7:0)
 * before each entry, and what the guest writes there is the TPR after
 * the exit. (And KVM_GET_SREGS's CR8 is the TPR KVM_SET_LAPIC set: rkvm
 * once reported the vCPU's stale CR8 there, which vm_real_mode() then
 * wrote back over the TPR.)
 */
GUEST_CODE16(vapic_code,
	"	xor %ax, %ax\n"
	"	mov %ax, %ds\n"
	"	mov $0x11, %al\n"
	"	out %al, $0x10\n"
	"	movb $0x20, 0x5000\n"		/* the TPR, through the vAPIC word */
	"	mov $0x12, %al\n"
	"	out %al, $0x10\n"
	"	hlt\n");

TEST_F(apic, vapic_addr_mirrors_the_tpr)
{
	struct kvm_vapic_addr va = { .vapic_addr = 0x5000 };
	struct kvm_lapic_state lapic;
	struct kvm_sregs sregs;
	struct vm vm;
	uint32_t word;

	if (!has_split_irqchip())
		SKIP(return, NO_SPLIT_IRQCHIP);
	ASSERT_EQ(0, vm_create(&vm));
	EXPECT_ERRNO(EINVAL, ioctl(vm.vcpu, KVM_SET_VAPIC_ADDR, &va));	/* no in-kernel APIC */
	vm_destroy(&vm);

	ASSERT_EQ(0, vm_create_split(&vm));
	va.vapic_addr = 0xf0000000;
	EXPECT_ERRNO(EINVAL, ioctl(vm.vcpu, KVM_SET_VAPIC_ADDR, &va));	/* not RAM */
	va.vapic_addr = 0;
	EXPECT_EQ(0, ioctl(vm.vcpu, KVM_SET_VAPIC_ADDR, &va));
	va.vapic_addr = 0x5000;
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_VAPIC_ADDR, &va));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_LAPIC, &lapic));
	*(uint32_t *)&lapic.regs[APIC_SVR] = 0x1ff;
	*(uint32_t *)&lapic.regs[0x80] = 0x30;		/* TPR */
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_SET_LAPIC, &lapic));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_SREGS, &sregs));
	EXPECT_EQ(3, sregs.cr8) TH_LOG("CR8 is the APIC's TPR at once");
	LOAD_GUEST_CODE(vm.mem, 0x1000, vapic_code);
	ASSERT_EQ(0, vm_real_mode(&vm, 0x1000));
	memset(vm.mem + 0x5000, 0xee, 4);
	EXPECT_EQ(0x11, run_to_out(&vm));
	memcpy(&word, vm.mem + 0x5000, 4);
	EXPECT_EQ(0x30, word & 0xff) TH_LOG("the vAPIC word: %#x", word);
	EXPECT_EQ(0x12, run_to_out(&vm));
	ASSERT_EQ(0, ioctl(vm.vcpu, KVM_GET_LAPIC, &lapic));
	EXPECT_EQ(0x20, *(uint32_t *)&lapic.regs[0x80]) TH_LOG("the TPR the guest wrote there");
	vm_destroy(&vm);
}

/*
 * KVM_CREATE_PIT2: ENOENT without the in-kernel PIC (no irqchip, or the
 * split one), EEXIST the second time; KVM_GET_PIT2 and
 * KVM_REINJECT_CONTROL are ENXIO without a PIT. Created: every channel
 * never programmed (mode 0xff), count 0x10000, the gates of channels 0 and
 * 1 high. KVM_SET_PIT2's state reads back.
 */
TEST_F(apic, create_pit2_rules_and_state)
{
	struct kvm_pit_config config = { .flags = 0 };
	struct kvm_reinject_control rc = { .pit_reinject = 0 };
	struct kvm_pit_state2 ps;
	struct vm vm;
	int i;

	if (!has_full_irqchip())
		SKIP(return, NO_FULL_IRQCHIP);
	ASSERT_EQ(0, vm_create(&vm));
	EXPECT_ERRNO(ENOENT, ioctl(vm.fd, KVM_CREATE_PIT2, &config));
	EXPECT_ERRNO(ENXIO, ioctl(vm.fd, KVM_GET_PIT2, &ps));
	EXPECT_ERRNO(ENXIO, ioctl(vm.fd, KVM_REINJECT_CONTROL, &rc));
	vm_destroy(&vm);
	ASSERT_EQ(0, vm_create_split(&vm));
	EXPECT_ERRNO(ENOENT, ioctl(vm.fd, KVM_CREATE_PIT2, &config));
	vm_destroy(&vm);

	ASSERT_EQ(0, vm_create_full(&vm, 0, VM_FULL_IRQCHIP));
	EXPECT_ERRNO(ENXIO, ioctl(vm.fd, KVM_GET_PIT2, &ps));
	ASSERT_EQ(0, ioctl(vm.fd, KVM_CREATE_PIT2, &config));
	EXPECT_ERRNO(EEXIST, ioctl(vm.fd, KVM_CREATE_PIT2, &config));
	memset(&ps, 0xaa, sizeof(ps));
	ASSERT_EQ(0, ioctl(vm.fd, KVM_GET_PIT2, &ps));
	for (i = 0; i < 3; i++) {
		EXPECT_EQ(0xff, ps.channels[i].mode) TH_LOG("channel %d", i);
		EXPECT_EQ(0x10000, ps.channels[i].count) TH_LOG("channel %d", i);
		EXPECT_EQ(i != 2, ps.channels[i].gate) TH_LOG("channel %d", i);
	}
	EXPECT_EQ(0, ps.flags);
	ps.channels[1].mode = 2;
	ps.channels[1].count = 1000;
	ASSERT_EQ(0, ioctl(vm.fd, KVM_SET_PIT2, &ps));
	memset(&ps, 0, sizeof(ps));
	ASSERT_EQ(0, ioctl(vm.fd, KVM_GET_PIT2, &ps));
	EXPECT_EQ(2, ps.channels[1].mode);
	EXPECT_EQ(1000, ps.channels[1].count);
	EXPECT_EQ(0, ioctl(vm.fd, KVM_REINJECT_CONTROL, &rc));
	vm_destroy(&vm);
}

/*
 * A real-mode guest programs the PIC (vectors 0x08-0x0f, only IRQ 0) and
 * the PIT's channel 0 as a rate generator every 11932 ticks (10 ms), reads
 * the count back through a latch command (2 bytes out to port 0x12), then
 * waits with STI and HLT. IRQ 0's handler reports and sends the EOI.
 */
GUEST_CODE16(pit_tick_code,
	"	xor %ax, %ax\n"
	"	mov %ax, %ds\n"
	"	movw $0x1000 + (2f - pit_tick_code), 0x08 * 4\n"
	"	movw $0, 0x08 * 4 + 2\n"
	"	mov $0x11, %al\n"		/* the PIC as pic_extint_code */
	"	out %al, $0x20\n"
	"	mov $0x08, %al\n"
	"	out %al, $0x21\n"
	"	mov $0x04, %al\n"
	"	out %al, $0x21\n"
	"	mov $0x01, %al\n"
	"	out %al, $0x21\n"
	"	mov $0xfe, %al\n"		/* only IRQ 0 */
	"	out %al, $0x21\n"
	"	mov $0x34, %al\n"		/* channel 0, low then high byte, mode 2 */
	"	out %al, $0x43\n"
	"	mov $0x9c, %al\n"		/* 11932 = 0x2e9c */
	"	out %al, $0x40\n"
	"	mov $0x2e, %al\n"
	"	out %al, $0x40\n"
	"	xor %al, %al\n"			/* latch channel 0's count */
	"	out %al, $0x43\n"
	"	in $0x40, %al\n"
	"	mov %al, %bl\n"
	"	in $0x40, %al\n"
	"	mov %al, %ah\n"
	"	mov %bl, %al\n"
	"	out %ax, $0x12\n"
	"	sti\n"
	"1:	hlt\n"
	"	jmp 1b\n"
	"2:	mov $0x08, %al\n"
	"	out %al, $0x10\n"
	"	mov $0x20, %al\n"		/* non-specific EOI */
	"	out %al, $0x20\n"
	"	iret\n");

/*
 * The in-kernel PIT's channel 0 ticks into a vCPU halted in the kernel,
 * through the in-kernel PIC: five ticks with reinjection on (the default),
 * three with it off. The latched count is below the loaded one (it counts
 * down) and not zero; KVM_GET_PIT2 shows what the guest programmed. The
 * ticks are counted, not timed: the kselftest harness's timeout is the
 * hang guard.
 */
TEST_F(apic, pit_ticks_reach_a_halted_guest)
{
	struct kvm_pit_config config = { .flags = 0 };
	struct kvm_reinject_control rc = { .pit_reinject = 0 };
	struct kvm_pit_state2 ps;
	struct vm vm;
	uint16_t count;
	int i;

	if (!has_full_irqchip())
		SKIP(return, NO_FULL_IRQCHIP);
	ASSERT_EQ(0, vm_create_full(&vm, 0, VM_FULL_IRQCHIP));
	ASSERT_EQ(0, ioctl(vm.fd, KVM_CREATE_PIT2, &config));
	LOAD_GUEST_CODE(vm.mem, 0x1000, pit_tick_code);
	ASSERT_EQ(0, vm_real_mode(&vm, 0x1000));
	ASSERT_EQ(0, run_vcpu(vm.vcpu));
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	ASSERT_EQ(0x12, vm.run->io.port) TH_LOG("the PIT's ports are the kernel's");
	memcpy(&count, (uint8_t *)vm.run + vm.run->io.data_offset, 2);
	EXPECT_GT(count, 0);
	EXPECT_LE(count, 11932);
	for (i = 0; i < 5; i++)
		ASSERT_EQ(0x08, run_to_out(&vm)) TH_LOG("tick %d", i);
	ASSERT_EQ(0, ioctl(vm.fd, KVM_GET_PIT2, &ps));
	EXPECT_EQ(2, ps.channels[0].mode);
	EXPECT_EQ(11932, ps.channels[0].count);
	ASSERT_EQ(0, ioctl(vm.fd, KVM_REINJECT_CONTROL, &rc));
	for (i = 0; i < 3; i++)
		ASSERT_EQ(0x08, run_to_out(&vm)) TH_LOG("tick %d without reinjection", i);
	vm_destroy(&vm);
}

/*
 * KVM_IRQFD with KVM_IRQFD_FLAG_RESAMPLE on the full irqchip, for a
 * level-triggered IOAPIC pin (GSI 9, vector 0x62, as the guest programs
 * it): a signal asserts the line and the interrupt is delivered; the
 * resamplefd stays quiet until the guest's EOI, which lowers the line and
 * signals it, and the pin is not delivered again. Errors: EBADF for a bad
 * resamplefd, EINVAL for one that is not an eventfd.
 */
TEST_F(apic, irqfd_resample_lowers_a_level_pin_at_the_eoi)
{
	struct kvm_irqfd req = { .gsi = 9, .flags = KVM_IRQFD_FLAG_RESAMPLE };
	struct kvm_irqchip chip;
	struct runner run;
	struct stats st;
	pthread_t t;
	struct vm vm;
	int efd, rfd;

	if (!has_full_irqchip())
		SKIP(return, NO_FULL_IRQCHIP);
	efd = eventfd(0, EFD_NONBLOCK);
	rfd = eventfd(0, EFD_NONBLOCK);
	ASSERT_LE(0, efd);
	ASSERT_LE(0, rfd);
	ASSERT_EQ(0, vm_create_full(&vm, 0, VM_FULL_IRQCHIP));
	LOAD_GUEST_CODE(vm.mem, 0x1000, ioapic_level_code);
	LOAD_GUEST_CODE(vm.mem, 0x2000, ioapic_level_handler);
	ASSERT_EQ(0, vm_flat32(&vm, 0x1000, 0x62, 0x2000));
	ASSERT_EQ(0, run_vcpu(vm.vcpu));
	ASSERT_EQ(0x12, vm.run->io.port) TH_LOG("pin 9 programmed");

	req.fd = efd;
	req.resamplefd = -1;
	EXPECT_ERRNO(EBADF, ioctl(vm.fd, KVM_IRQFD, &req));
	req.resamplefd = vm.fd;
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_IRQFD, &req));
	req.resamplefd = rfd;
	ASSERT_EQ(0, ioctl(vm.fd, KVM_IRQFD, &req));

	ASSERT_EQ(0, run_until_halted(&vm, &run, &t, &st)) TH_LOG("the vCPU did not halt");
	signal_eventfd(efd);
	pthread_join(t, NULL);
	ASSERT_EQ(0, run.ret);
	ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
	EXPECT_EQ(0x62, pio_byte(vm.run));
	EXPECT_EQ(-EAGAIN, take_count(rfd)) TH_LOG("no EOI yet");
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_IOAPIC, &chip));
	EXPECT_TRUE(chip.chip.ioapic.redirtbl[9].bits & REDIR_REMOTE_IRR);
	EXPECT_TRUE(chip.chip.ioapic.irr & (1 << 9)) TH_LOG("the line is held high");

	EXPECT_EQ(0x63, run_to_out(&vm)) TH_LOG("after the EOI");
	EXPECT_EQ(1, take_count(rfd)) TH_LOG("the EOI signalled the resamplefd");
	ASSERT_EQ(0, get_irqchip(vm.fd, KVM_IRQCHIP_IOAPIC, &chip));
	EXPECT_FALSE(chip.chip.ioapic.redirtbl[9].bits & REDIR_REMOTE_IRR);
	EXPECT_FALSE(chip.chip.ioapic.irr & (1 << 9)) TH_LOG("the line was lowered");

	req.flags = KVM_IRQFD_FLAG_DEASSIGN;
	EXPECT_EQ(0, ioctl(vm.fd, KVM_IRQFD, &req));
	stats_close(&st);
	vm_destroy(&vm);
	close(efd);
	close(rfd);
}

TEST_HARNESS_MAIN

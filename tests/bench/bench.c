// SPDX-License-Identifier: GPL-2.0
/*
 * Microbenchmarks of one KVM device ($RKVM_DEVICE: /dev/rkvm or /dev/kvm),
 * run by tests/vm/bench.sh for both in the same boot of the test VM.
 *
 * Each benchmark is a small real-mode guest doing one kind of exit many
 * times; a round is timed from user mode (CLOCK_MONOTONIC) and divided by
 * the number of operations. Output, one line per round:
 *
 *     bench <name> <ns per operation>
 *
 * and, where the exits are the point, once per benchmark (from the vCPU's
 * "exits" statistic, KVM_GET_STATS_FD: KVM has it too):
 *
 *     exits <name> <exits per operation>
 *
 * `bench ROUNDS NAME` runs only benchmark NAME.
 * `bench time CMD ARGS...` runs a command and prints its wall time (ns),
 * for the Linux boots (busybox's date has no %N).
 * `bench between START END CMD ARGS...` runs a command and prints the time
 * (ns) from the first line of its output containing START to the first
 * later line containing END: the guest's own markers around an I/O
 * benchmark, timed on the host's clock and without the boot around them.
 *
 * The host side (scripts/bench-report.py) takes medians and spreads over
 * the rounds and the rkvm/KVM ratios. Absolute times under QEMU's emulation
 * mean little; the ratio between two hypervisors in the same VM does.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#include "vm.h"
#include "stats.h"
#include "guest_code.h"
#include "apic_guest.h"

static int rounds = 7;
/* Only the benchmark of this name (argv[2]), if given. */
static const char *only;

static int wanted(const char *name)
{
	return !only || !strcmp(only, name);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void report(const char *name, uint64_t ns, uint64_t ops)
{
	printf("bench %s %.0f\n", name, (double)ns / ops);
	fflush(stdout);
}

/* The vCPU's exit counter (KVM_GET_STATS_FD "exits"); ~0 if unreadable. */
static uint64_t vcpu_exits(struct vm *vm)
{
	struct stats s;
	uint64_t v = ~0ULL;

	if (stats_open(&s, vm->vcpu) == 0) {
		v = stats_value(&s, "exits");
		stats_close(&s);
	}
	return v;
}

/* "exits NAME N": exits per operation between two counter readings. */
static void report_exits(const char *name, uint64_t before, uint64_t after, uint64_t ops)
{
	if (before != ~0ULL && after != ~0ULL && after >= before && ops)
		printf("exits %s %.3f\n", name, (double)(after - before) / ops);
	fflush(stdout);
}

/*
 * A fresh VM running `code` at 0x1000 in real mode, with `split_pins`
 * IOAPIC pins of the split irqchip, or VM_NO_IRQCHIP.
 */
static void setup_irqchip(struct vm *vm, int split_pins, const uint8_t *code, size_t len)
{
	if (vm_create_full(vm, 0, split_pins))
		die(split_pins == VM_NO_IRQCHIP ? "creating a VM" :
		    "creating a VM with the split irqchip (not offered by rkvm.ko irqchip=0)");
	memcpy(vm->mem + 0x1000, code, len);
	if (vm_real_mode(vm, 0x1000))
		die("real mode");
}

/* A fresh VM running `code` at 0x1000 in real mode. */
static void setup(struct vm *vm, const uint8_t *code, size_t len)
{
	setup_irqchip(vm, VM_NO_IRQCHIP, code, len);
}

/* setup_irqchip() with a split irqchip of 24 pins, for guest code `name`. */
#define SETUP_SPLIT(vm, name)	setup_irqchip(vm, 24, name, GUEST_CODE_SIZE(name))

/* Runs until an exit to port 0xf4 (the end of a guest loop); every other
 * exit is counted and re-entered. Returns the number of exits. */
static uint64_t run_to_end(struct vm *vm)
{
	uint64_t exits = 0;

	for (;;) {
		if (vm_run(vm))
			die("KVM_RUN");
		exits++;
		if (vm->run->exit_reason == KVM_EXIT_IO && vm->run->io.port == 0xf4)
			return exits;
		if (vm->run->exit_reason != KVM_EXIT_IO && vm->run->exit_reason != KVM_EXIT_MMIO) {
			fprintf(stderr, "bench: unexpected exit %u\n", vm->run->exit_reason);
			exit(1);
		}
	}
}

/*
 * LOOP_GUEST(name, N, prologue, insn) defines the real-mode guest code
 * `name`, a loop of N (a number) instructions of one kind, then out to
 * 0xf4, and again, and name_n = N:
 *   <prologue>; mov $N, %esi; 1: <insn>; dec %esi; jnz 1b; out %al, $0xf4; jmp name
 */
#define LOOP_GUEST(name, n, prologue, insn)				\
	enum { name##_n = n };						\
	GUEST_CODE16(name,						\
		prologue						\
		"	mov $" #n ", %esi\n"				\
		"1:\n"							\
		insn							\
		"	dec %esi\n"					\
		"	jnz 1b\n"					\
		"	out %al, $0xf4\n"				\
		"	jmp " #name "\n")

LOOP_GUEST(cpuid_loop_code, 5000, "",
	"	xor %eax, %eax\n"
	"	cpuid\n");
/* The hypercall instruction of either vendor. */
LOOP_GUEST(vmmcall_loop_code, 5000, "",
	"	vmmcall\n");
LOOP_GUEST(vmcall_loop_code, 5000, "",
	"	vmcall\n");
LOOP_GUEST(out_loop_code, 2000, "",
	"	out %al, $0x80\n");
/* A store to DS:0, with DS = 0x9000: to 0x90000. */
LOOP_GUEST(mmio_loop_code, 2000,
	"	mov $0x9000, %ax\n"
	"	mov %ax, %ds\n",
	"	mov %al, 0\n");

/* Runs the loop guest `guest` (LOOP_GUEST) in `vm` as benchmark `name`. */
#define LOOP_BENCH(vm, name, guest)	loop_bench(vm, name, guest, GUEST_CODE_SIZE(guest), guest##_n)

static void loop_bench(struct vm *vm, const char *name, const uint8_t *code, size_t len, uint32_t n)
{
	uint64_t exits;
	int r;

	memcpy(vm->mem + 0x1000, code, len);
	if (vm_real_mode(vm, 0x1000))
		die("real mode");
	run_to_end(vm);						/* warm up: map the pages */
	exits = vcpu_exits(vm);
	for (r = 0; r < rounds; r++) {
		uint64_t t0 = now_ns();

		run_to_end(vm);
		report(name, now_ns() - t0, n);
	}
	report_exits(name, exits, vcpu_exits(vm), (uint64_t)rounds * n);
	vm_destroy(vm);
}

/* A fresh VM whose slot 0 covers only [0, size): above it, nothing. */
static void create_small(struct vm *vm, uint64_t size)
{
	if (vm_create(vm))
		die("creating a VM");
	if (vm_resize_slot0(vm, size))
		die("resizing slot 0");
}

/*
 * HLT with an interrupt pending: the guest halts in a loop with interrupts
 * on; each HLT exit goes to user mode (no in-kernel interrupt controller),
 * which injects vector 0x20 (its handler: iret) and re-enters.
 */
GUEST_CODE16(hlt_loop_code,
	"	sti\n"
	"1:	hlt\n"
	"	jmp 1b\n");

static void hlt_bench(uint32_t n)
{
	struct vm vm;
	struct kvm_interrupt irq = { .irq = 0x20 };
	uint32_t i;
	int r;

	setup(&vm, hlt_loop_code, GUEST_CODE_SIZE(hlt_loop_code));
	vm.mem[0x2000] = 0xcf;					/* iret */
	*(uint16_t *)(vm.mem + 0x20 * 4) = 0x2000;		/* IVT[0x20] = 0000:2000 */
	for (r = 0; r <= rounds; r++) {
		uint64_t t0 = now_ns();

		for (i = 0; i < n; i++) {
			if (vm_run(&vm))
				die("KVM_RUN");
			if (vm.run->exit_reason != KVM_EXIT_HLT) {
				fprintf(stderr, "bench: hlt: exit %u\n", vm.run->exit_reason);
				exit(1);
			}
			if (ioctl(vm.vcpu, KVM_INTERRUPT, &irq))
				die("KVM_INTERRUPT");
		}
		if (r > 0)					/* round 0 warms up */
			report("hlt_irq_exit", now_ns() - t0, n);
	}
	vm_destroy(&vm);
}

/*
 * Interrupt injection through the window protocol: the guest signals with
 * interrupts off (out 0x10), user mode asks for an interrupt window, the
 * guest turns them on, KVM_EXIT_IRQ_WINDOW_OPEN, user mode injects, and the
 * handler signals (out 0x11). Timed from the first signal to the second.
 */
GUEST_CODE16(window_loop_code,
	"1:	cli\n"
	"	out %al, $0x10\n"
	"	sti\n"
	"	nop\n"				/* the window opens after it */
	"	jmp 1b\n");

GUEST_CODE16(window_handler_code,		/* vector 0x20, at 0x2000 */
	"	out %al, $0x11\n"
	"	iret\n");

static void window_bench(uint32_t n)
{
	struct kvm_interrupt irq = { .irq = 0x20 };
	struct vm vm;
	uint64_t total;
	uint32_t i;
	int r;

	setup(&vm, window_loop_code, GUEST_CODE_SIZE(window_loop_code));
	LOAD_GUEST_CODE(vm.mem, 0x2000, window_handler_code);
	*(uint16_t *)(vm.mem + 0x20 * 4) = 0x2000;
	for (r = 0; r <= rounds; r++) {
		total = 0;
		for (i = 0; i < n; i++) {
			uint64_t t0;

			if (vm_run(&vm) || vm.run->exit_reason != KVM_EXIT_IO || vm.run->io.port != 0x10)
				die("window: the guest's first signal");
			t0 = now_ns();
			vm.run->request_interrupt_window = 1;
			if (vm_run(&vm) || vm.run->exit_reason != KVM_EXIT_IRQ_WINDOW_OPEN)
				die("window: no KVM_EXIT_IRQ_WINDOW_OPEN");
			vm.run->request_interrupt_window = 0;
			if (ioctl(vm.vcpu, KVM_INTERRUPT, &irq))
				die("KVM_INTERRUPT");
			if (vm_run(&vm) || vm.run->exit_reason != KVM_EXIT_IO || vm.run->io.port != 0x11)
				die("window: the handler did not run");
			total += now_ns() - t0;
		}
		if (r > 0)
			report("irq_window_injection", total, n);
	}
	vm_destroy(&vm);
}

/*
 * An MSI through an irqfd (the split irqchip): the guest turns its x2APIC
 * on, says so (out 0x11), and waits in HLT; user mode writes the eventfd, whose irqfd sends GSI 1's
 * MSI route (vector 0x51, APIC 0) to the vCPU; the handler EOIs and
 * outputs, which exits to user mode. Timed from the write to that exit,
 * re-entry included (the guest returns to HLT, or takes the interrupt at
 * once if it is already there).
 */
GUEST_CODE16(irqfd_msi_code,
	X2APIC_ON("irqfd_msi_code", 0x51, "2f")
	"	out %al, $0x11\n"		/* ready: an MSI before is lost */
	"	sti\n"
	"1:	hlt\n"
	"	jmp 1b\n"
	"2:\n"
	EOI_AND_OUT(0x51));

static void irqfd_bench(uint32_t n)
{
	struct {
		struct kvm_irq_routing head;
		struct kvm_irq_routing_entry entry;
	} routing = {
		.head.nr = 1,
		.entry = { .gsi = 1, .type = KVM_IRQ_ROUTING_MSI,
			   .u.msi = { .address_lo = 0xfee00000, .data = 0x51 } },
	};
	struct kvm_irqfd irqfd = { .gsi = 1 };
	uint64_t one = 1;
	struct vm vm;
	uint32_t i;
	int r;

	SETUP_SPLIT(&vm, irqfd_msi_code);
	if (ioctl(vm.fd, KVM_SET_GSI_ROUTING, &routing))
		die("KVM_SET_GSI_ROUTING");
	irqfd.fd = eventfd(0, 0);
	if ((int)irqfd.fd < 0 || ioctl(vm.fd, KVM_IRQFD, &irqfd))
		die("KVM_IRQFD");
	/* Until its APIC is on: a software-disabled APIC drops fixed interrupts. */
	if (vm_run(&vm) || vm.run->exit_reason != KVM_EXIT_IO || vm.run->io.port != 0x11)
		die("irqfd: the guest did not turn its APIC on");
	for (r = 0; r <= rounds; r++) {
		uint64_t t0 = now_ns();

		for (i = 0; i < n; i++) {
			if (write(irqfd.fd, &one, sizeof(one)) != sizeof(one))
				die("write to the eventfd");
			if (vm_run(&vm) || vm.run->exit_reason != KVM_EXIT_IO || vm.run->io.port != 0x10)
				die("irqfd: the handler did not run");
		}
		if (r > 0)					/* round 0 warms up */
			report("irqfd_msi", now_ns() - t0, n);
	}
	close(irqfd.fd);
	vm_destroy(&vm);
}

/*
 * The APIC timer (split irqchip): one-shot, 100 bus cycles (100 ns) at
 * divide 1, armed with interrupts on while the guest spins on a flag its
 * handler sets; 500 interrupts, then out to port 0x10 (one exit to user
 * mode per 500). What an interrupt into a running vCPU costs: the
 * hrtimer, the kick out of guest mode, the injection, the handler's EOI.
 * (A HLT instead of the spin hung under QEMU's emulation, through kvm_amd
 * as through rkvm, when the interrupt was already pending at the HLT.)
 */
/*
 * A handler at label \label that sets the byte at 0x500 (what the guest
 * spins on) and sends the EOI, all registers kept.
 */
#define FLAG_HANDLER(label)							\
	label ":	pushal\n"							\
	"	movb $1, 0x500\n"						\
	"	mov $0x80b, %ecx\n"		/* EOI */			\
	"	xor %eax, %eax\n"						\
	"	xor %edx, %edx\n"						\
	"	wrmsr\n"							\
	"	popal\n"							\
	"	iret\n"

enum { lapic_timer_n = 500 };
GUEST_CODE16(lapic_timer_code,
	X2APIC_ON("lapic_timer_code", 0x42, "2f")
	"	mov $0x83e, %ecx\n"		/* divide configuration: by 1 */
	"	mov $0xb, %eax\n"
	"	wrmsr\n"
	"	mov $0x832, %ecx\n"		/* LVT timer: vector 0x42, one-shot */
	"	mov $0x42, %eax\n"
	"	wrmsr\n"
	"	sti\n"
	"0:	mov $500, %esi\n"
	"1:	movb $0, 0x500\n"		/* the handler's flag */
	"	mov $0x838, %ecx\n"		/* initial count */
	"	mov $100, %eax\n"
	"	xor %edx, %edx\n"
	"	wrmsr\n"
	"3:	cmpb $0, 0x500\n"		/* until the timer's interrupt */
	"	je 3b\n"
	"	dec %esi\n"
	"	jnz 1b\n"
	"	out %al, $0x10\n"
	"	jmp 0b\n"
	FLAG_HANDLER("2"));

static void lapic_timer_bench(void)
{
	struct vm vm;
	int r;

	SETUP_SPLIT(&vm, lapic_timer_code);
	for (r = 0; r <= rounds; r++) {
		uint64_t t0 = now_ns();

		if (vm_run(&vm) || vm.run->exit_reason != KVM_EXIT_IO || vm.run->io.port != 0x10)
			die("lapic_timer: the guest did not finish its interrupts");
		if (r > 0)					/* round 0 warms up */
			report("lapic_timer", now_ns() - t0, lapic_timer_n);
	}
	vm_destroy(&vm);
}

/*
 * An IPI round trip between two vCPUs (split irqchip): vCPU 0 sends
 * vector 0x40 to APIC 1 and spins on a flag; vCPU 1, halted in the
 * kernel, takes it and its handler sends vector 0x41 back to APIC 0,
 * whose handler sets the flag. 500 round trips, then out to port 0x10.
 * Each trip: a wakeup of the halted vCPU 1, a kick of the running vCPU 0.
 * vCPU 0 sends its first IPI only once vCPU 1 has software-enabled its
 * APIC (the flag at 0x504): an APIC drops a fixed IPI before that, and
 * without the wait vCPU 0 spun forever now and then, waiting for an answer
 * to an IPI that had been dropped (about one run in five under QEMU,
 * through kvm_amd as through rkvm: the "hangs" of 2026-12-07 in
 * Documentation/execution-model.md).
 */
enum { ipi_n = 500 };
GUEST_CODE16(ipi_bsp_code,
	X2APIC_ON("ipi_bsp_code", 0x41, "2f")
	"	sti\n"
	"4:	cmpb $0, 0x504\n"		/* until APIC 1 is on */
	"	je 4b\n"
	"0:	mov $500, %esi\n"
	"1:	movb $0, 0x500\n"		/* the answer's flag */
	"	mov $0x830, %ecx\n"		/* ICR: fixed, vector 0x40, to APIC 1 */
	"	mov $1, %edx\n"
	"	mov $0x40, %eax\n"
	"	wrmsr\n"
	"3:	cmpb $0, 0x500\n"		/* until the answer */
	"	je 3b\n"
	"	dec %esi\n"
	"	jnz 1b\n"
	"	out %al, $0x10\n"
	"	jmp 0b\n"
	FLAG_HANDLER("2"));

/* vCPU 1, at 0x2000 (the IVT at 0 is shared: vector 0x40 is its). */
GUEST_CODE16(ipi_ap_code,
	X2APIC_ON_AT("0x2000", "ipi_ap_code", 0x40, "2f")
	"	movb $1, 0x504\n"		/* APIC 1 is on: IPIs may come */
	"	sti\n"
	"1:	hlt\n"
	"	jmp 1b\n"
	"2:	pushal\n"
	"	mov $0x830, %ecx\n"		/* ICR: vector 0x41 to APIC 0 */
	"	xor %edx, %edx\n"
	"	mov $0x41, %eax\n"
	"	wrmsr\n"
	"	mov $0x80b, %ecx\n"		/* EOI */
	"	xor %eax, %eax\n"
	"	wrmsr\n"
	"	popal\n"
	"	iret\n");

static void on_sigusr1(int sig)
{
	(void)sig;
}

/* vCPU 1 and what became of it. */
static struct {
	int fd;
	struct kvm_run *run;
	pthread_t main;		/* vCPU 0's thread, woken if vCPU 1 fails */
	struct kvm_run *main_run;
	volatile int stop;	/* the benchmark is over */
	volatile int failed;	/* vCPU 1 left the guest: its exit reason + 1 */
} ipi_ap;

/*
 * vCPU 1's thread: KVM_RUN until the benchmark ends it (immediate_exit,
 * then a signal). Its guest never exits to user mode: if it does (under
 * QEMU's emulation a vCPU now and then finds its state lost while the other
 * is in guest mode too: Documentation/execution-model.md), vCPU 0 is
 * stopped, so that the benchmark fails at once rather than spin forever.
 */
static void *ipi_ap_thread(void *arg)
{
	(void)arg;
	for (;;) {
		int r = ioctl(ipi_ap.fd, KVM_RUN, 0);

		if (r && errno == EINTR && ipi_ap.stop)
			return NULL;
		if (r == 0 || errno != EINTR) {
			ipi_ap.failed = r ? 1 : (int)ipi_ap.run->exit_reason + 1;
			ipi_ap.main_run->immediate_exit = 1;
			pthread_kill(ipi_ap.main, SIGUSR1);
			return NULL;
		}
	}
}

/*
 * A round that makes no progress for a minute (a hang guard: a round takes
 * well under a second) is stopped here and reported with where both vCPUs
 * were, rather than left to make bench's 300 s timeout: which round trip
 * vCPU 0 waited for, and both APICs' enable bit and vector 0x40-0x5f bits.
 */
static volatile int ipi_rounds_done, ipi_watchdog_fired;

static void *ipi_watchdog(void *arg)
{
	int last = -1;

	(void)arg;
	for (;;) {
		sleep(60);	/* a cancellation point: ipi_bench ends it */
		if (ipi_rounds_done == last)
			break;
		last = ipi_rounds_done;
	}
	ipi_watchdog_fired = 1;
	ipi_ap.main_run->immediate_exit = 1;
	pthread_kill(ipi_ap.main, SIGUSR1);
	return NULL;
}

static void ipi_hang_report(struct vm *vm, int ap, pthread_t t)
{
	struct kvm_lapic_state l0, l1;
	struct kvm_regs r0, r1;

	ipi_ap.stop = 1;
	ipi_ap.run->immediate_exit = 1;
	pthread_kill(t, SIGUSR1);
	pthread_join(t, NULL);
	if (ioctl(vm->vcpu, KVM_GET_REGS, &r0) || ioctl(ap, KVM_GET_REGS, &r1) ||
	    ioctl(vm->vcpu, KVM_GET_LAPIC, &l0) || ioctl(ap, KVM_GET_LAPIC, &l1))
		die("ipi_roundtrip: no progress for 60 s, and the vCPUs' state unreadable");
#define APIC_REG(l, off) (*(uint32_t *)&(l).regs[off])
	fprintf(stderr, "bench: ipi_roundtrip: no progress for 60 s in round %d: vCPU 0 at rip %#llx "
		"waiting for answer %llu of %d (flag %u), vCPU 1 at rip %#llx; "
		"APIC 0 SVR %#x ISR %#x IRR %#x, APIC 1 SVR %#x ISR %#x IRR %#x (vectors 0x40-0x5f)\n",
		ipi_rounds_done, (unsigned long long)r0.rip, ipi_n + 1 - (unsigned long long)r0.rsi, ipi_n,
		vm->mem[0x500], (unsigned long long)r1.rip,
		APIC_REG(l0, 0xf0), APIC_REG(l0, 0x120), APIC_REG(l0, 0x220),
		APIC_REG(l1, 0xf0), APIC_REG(l1, 0x120), APIC_REG(l1, 0x220));
#undef APIC_REG
	exit(1);
}

static void ipi_bench(void)
{
	pthread_t wd;
	struct sigaction sa = { .sa_handler = on_sigusr1 };
	struct kvm_mp_state runnable = { .mp_state = KVM_MP_STATE_RUNNABLE };
	struct kvm_run *ap_run;
	pthread_t t;
	struct vm vm;
	int bsp, ap, r;

	SETUP_SPLIT(&vm, ipi_bsp_code);
	LOAD_GUEST_CODE(vm.mem, 0x2000, ipi_ap_code);
	/* vCPU 1: its own stack, running at once (no INIT and SIPI). */
	ap = ioctl(vm.fd, KVM_CREATE_VCPU, 1);
	if (ap < 0)
		die("KVM_CREATE_VCPU 1");
	ap_run = mmap(NULL, vm.run_size, PROT_READ | PROT_WRITE, MAP_SHARED, ap, 0);
	if (ap_run == MAP_FAILED)
		die("mmap of vCPU 1's kvm_run");
	bsp = vm.vcpu;
	vm.vcpu = ap;
	vm_set_supported_cpuid(&vm);
	if (ioctl(ap, KVM_SET_MP_STATE, &runnable) || vm_real_mode(&vm, 0x2000) ||
	    vm_set_entry(&vm, 0x2000, 0x7000))
		die("vCPU 1's state");
	vm.vcpu = bsp;
	sigaction(SIGUSR1, &sa, NULL);
	ipi_ap.fd = ap;
	ipi_ap.run = ap_run;
	ipi_ap.main = pthread_self();
	ipi_ap.main_run = vm.run;
	if (pthread_create(&t, NULL, ipi_ap_thread, NULL))
		die("vCPU 1's thread");
	if (pthread_create(&wd, NULL, ipi_watchdog, NULL))
		die("the watchdog's thread");
	for (r = 0; r <= rounds; r++) {
		uint64_t t0 = now_ns();
		int ret = vm_run(&vm);

		if (ipi_watchdog_fired)
			ipi_hang_report(&vm, ap, t);
		ipi_rounds_done++;

		if (ipi_ap.failed) {
			fprintf(stderr, "bench: ipi_roundtrip: vCPU 1 left the guest (exit reason %d%s)\n",
				ipi_ap.failed - 1, ipi_ap.failed == 1 ? " or an error" : "");
			exit(1);
		}
		if (ret || vm.run->exit_reason != KVM_EXIT_IO || vm.run->io.port != 0x10)
			die("ipi_roundtrip: vCPU 0 did not finish its round trips");
		if (r > 0)					/* round 0 warms up */
			report("ipi_roundtrip", now_ns() - t0, ipi_n);
	}
	pthread_cancel(wd);
	pthread_join(wd, NULL);
	ipi_ap.stop = 1;
	ap_run->immediate_exit = 1;
	pthread_kill(t, SIGUSR1);
	pthread_join(t, NULL);
	munmap(ap_run, vm.run_size);
	close(ap);
	vm_destroy(&vm);
}

/*
 * Nested page faults: a guest writes one byte to each 4 KiB page of a
 * 1 MiB slot (too small for a huge page to back it), so that each first
 * touch is a nested page fault; the same loop again (no faults) is
 * subtracted. A fresh VM per round.
 */
GUEST_CODE16(npt_fault_code,
	"0:	mov $0x1000, %ax\n"
	"	mov %ax, %ds\n"			/* 0x10000: slot 1 */
	"	xor %bx, %bx\n"
	"	mov $256, %cx\n"
	"1:	mov %al, (%bx)\n"
	"	mov %ds, %dx\n"
	"	add $0x100, %dx\n"
	"	mov %dx, %ds\n"			/* the next 4 KiB */
	"	loop 1b\n"
	"	out %al, $0xf4\n"
	"	jmp 0b\n");

static void npt_fault_bench(void)
{
	const uint64_t size = 1 << 20;
	int r;

	for (r = 0; r < rounds; r++) {
		struct vm vm;
		uint8_t *pages = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		struct kvm_userspace_memory_region slot = {
			.slot = 1, .guest_phys_addr = 0x10000, .memory_size = size,
			.userspace_addr = (uintptr_t)pages,
		};
		uint64_t t0, first, second, exits;
		int i;

		/* 1 MiB cannot hold an aligned 2 MiB: no huge page backs it. */
		if (pages == MAP_FAILED)
			die("guest memory");
		memset(pages, 0, size);				/* the host's own faults: not measured */
		create_small(&vm, 0x10000);
		if (ioctl(vm.fd, KVM_SET_USER_MEMORY_REGION, &slot))
			die("slot 1");
		LOAD_GUEST_CODE(vm.mem, 0x1000, npt_fault_code);
		if (vm_real_mode(&vm, 0x1000))
			die("real mode");
		exits = vcpu_exits(&vm);
		t0 = now_ns();
		run_to_end(&vm);
		first = now_ns() - t0;
		if (r == 0)
			report_exits("npt_fault", exits, vcpu_exits(&vm), 256);
		/* The baseline: the fastest of three passes without faults. */
		second = ~0ULL;
		for (i = 0; i < 3; i++) {
			uint64_t t;

			t0 = now_ns();
			run_to_end(&vm);
			t = now_ns() - t0;
			second = t < second ? t : second;
		}
		report("npt_fault", first > second ? first - second : 0, 256);
		vm_destroy(&vm);
		munmap(pages, size);
	}
}

/*
 * Page touches after a context switch: a 64-bit guest with its own page
 * tables writes one byte in each of 512 pages (4 KiB pages over 2 MiB),
 * reloads CR3 (as a process switch does) and starts again. With nested
 * paging the processor refills its TLB from the guest's tables; with shadow
 * paging each touch after the reload is a page fault that the hypervisor
 * handles by walking the guest's tables. Per touch.
 */
GUEST_CODE64(pf_guest_code,
	"	mov $0x200000, %rdi\n"
	"	mov $512, %ecx\n"
	"1:	movb %al, (%rdi)\n"
	"	add $0x1000, %rdi\n"
	"	loop 1b\n"
	"	mov %cr3, %rax\n"
	"	mov %rax, %cr3\n"
	"	out %al, $0xf4\n"
	"	jmp pf_guest_code\n");

static void guest_pf_bench(void)
{
	const uint64_t size = 2 << 20;
	uint8_t *pages = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct kvm_userspace_memory_region slot = {
		.slot = 1, .guest_phys_addr = size, .memory_size = size, .userspace_addr = (uintptr_t)pages,
	};
	uint64_t *pd, *pt, exits;
	struct vm vm;
	int i, r;

	if (pages == MAP_FAILED)
		die("guest memory");
	if (vm_create(&vm))
		die("creating a VM");
	if (ioctl(vm.fd, KVM_SET_USER_MEMORY_REGION, &slot))
		die("slot 1");
	LOAD_GUEST_CODE(vm.mem, 0x1000, pf_guest_code);
	if (vm_long_mode(&vm, 0x1000))
		die("long mode");
	/* PD[1]: linear 2-4 MiB through a page table of 4 KiB pages. */
	pd = (uint64_t *)(vm.mem + 0x102000);
	pt = (uint64_t *)(vm.mem + 0x103000);
	pd[1] = 0x103000 | 3;
	for (i = 0; i < 512; i++)
		pt[i] = (size + ((uint64_t)i << 12)) | 3;
	run_to_end(&vm);					/* warm up: the host maps its pages */
	exits = vcpu_exits(&vm);
	for (r = 0; r < rounds; r++) {
		uint64_t t0 = now_ns();

		run_to_end(&vm);
		report("guest_pf_touch", now_ns() - t0, 512);
	}
	report_exits("guest_pf_touch", exits, vcpu_exits(&vm), (uint64_t)rounds * 512);
	vm_destroy(&vm);
	munmap(pages, size);
}

/* KVM_CREATE_VM, one memory slot, KVM_CREATE_VCPU, and closing them. */
static void create_bench(uint32_t n)
{
	struct vm vm;
	uint32_t i;
	int r;

	for (r = 0; r < rounds; r++) {
		uint64_t t0 = now_ns();

		for (i = 0; i < n; i++) {
			if (vm_create(&vm))
				die("creating a VM");
			vm_destroy(&vm);
		}
		report("vm_vcpu_create", now_ns() - t0, n);
	}
}

/* `bench time CMD ARGS...`: runs CMD and prints its wall time in ns. */
static int time_command(char **argv)
{
	uint64_t t0 = now_ns();
	int status;
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (pid == 0) {
		execvp(argv[0], argv);
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid");
	printf("%llu\n", (unsigned long long)(now_ns() - t0));
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

/*
 * `bench between START END CMD ARGS...`: the time between two lines of
 * CMD's standard output. The output is read as it comes (the guest's
 * console), so a marker is timed when the guest writes it.
 */
static int between_command(const char *start, const char *end, char **argv)
{
	uint64_t t_start = 0, t_end = 0;
	char *line = NULL;
	size_t cap = 0;
	int fds[2], status;
	FILE *out;
	pid_t pid;

	if (pipe(fds))
		die("pipe");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		close(fds[1]);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(fds[1]);
	out = fdopen(fds[0], "r");
	if (!out)
		die("fdopen");
	while (getline(&line, &cap, out) >= 0) {
		if (!t_start && strstr(line, start))
			t_start = now_ns();
		else if (t_start && !t_end && strstr(line, end))
			t_end = now_ns();
	}
	free(line);
	fclose(out);
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid");
	if (!t_end) {
		fprintf(stderr, "bench: no line with \"%s\" then \"%s\"\n", start, end);
		return 1;
	}
	printf("%llu\n", (unsigned long long)(t_end - t_start));
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(int argc, char **argv)
{
	struct vm vm;

	if (argc > 2 && !strcmp(argv[1], "time"))
		return time_command(argv + 2);
	if (argc > 4 && !strcmp(argv[1], "between"))
		return between_command(argv[2], argv[3], argv + 4);
	if (argc > 1)
		rounds = atoi(argv[1]);
	if (rounds < 1)
		rounds = 1;
	if (argc > 2)
		only = argv[2];
	if (wanted("cpuid_exit")) {
		if (vm_create(&vm))
			die("creating a VM");
		LOOP_BENCH(&vm, "cpuid_exit", cpuid_loop_code);
	}
	if (wanted("vmmcall_exit")) {
		if (vm_create(&vm))
			die("creating a VM");
		/* The hypercall instruction of the processor's vendor. */
		if (host_is_intel())
			LOOP_BENCH(&vm, "vmmcall_exit", vmcall_loop_code);
		else
			LOOP_BENCH(&vm, "vmmcall_exit", vmmcall_loop_code);
	}
	if (wanted("io_exit_to_user")) {
		if (vm_create(&vm))
			die("creating a VM");
		LOOP_BENCH(&vm, "io_exit_to_user", out_loop_code);
	}
	if (wanted("mmio_exit_to_user")) {
		/* Memory only below 0x80000: 0x90000 is MMIO. */
		create_small(&vm, 0x80000);
		LOOP_BENCH(&vm, "mmio_exit_to_user", mmio_loop_code);
	}
	if (wanted("hlt_irq_exit"))
		hlt_bench(2000);
	if (wanted("irq_window_injection"))
		window_bench(1000);
	if (wanted("irqfd_msi"))
		irqfd_bench(1000);
	if (wanted("lapic_timer"))
		lapic_timer_bench();
	if (wanted("ipi_roundtrip"))
		ipi_bench();
	if (wanted("npt_fault"))
		npt_fault_bench();
	if (wanted("guest_pf_touch"))
		guest_pf_bench();
	if (wanted("vm_vcpu_create"))
		create_bench(20);
	return 0;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * Guests that run: real mode and long mode, port I/O in both directions,
 * memory the host sees, HLT, triple fault, failed entry, immediate_exit.
 * Every exit reason, port, size, datum and register is asserted, the same
 * against real KVM and rkvm.
 */
#include <signal.h>

#include <signal.h>

#include "harness.h"
#include "vm.h"

VM_FIXTURE(guest)

#define ASSERT_IO(vm, dir, sz, p) do {						\
	ASSERT_EQ(KVM_EXIT_IO, (vm)->run->exit_reason);				\
	ASSERT_EQ(dir, (vm)->run->io.direction);				\
	ASSERT_EQ(sz, (vm)->run->io.size);					\
	ASSERT_EQ(p, (vm)->run->io.port);					\
	ASSERT_EQ(1, (vm)->run->io.count);					\
} while (0)

/*
 * Real mode: OUT of AL, IN to AL, 16-bit OUT, a store to RAM, HLT.
 * RIP stays on an I/O instruction until the next KVM_RUN completes it.
 */
TEST_F(guest, real_mode_io_memory_hlt)
{
	static const uint8_t code[] = {
		0xb0, 0x42,			/* 1000: mov $0x42, %al */
		0xe6, 0x10,			/* 1002: out %al, $0x10 */
		0xe4, 0x11,			/* 1004: in $0x11, %al */
		0x88, 0xc3,			/* 1006: mov %al, %bl */
		0xb8, 0x34, 0x12,		/* 1008: mov $0x1234, %ax */
		0xe7, 0x12,			/* 100b: out %ax, $0x12 */
		0xc6, 0x06, 0x00, 0x20, 0x99,	/* 100d: movb $0x99, 0x2000 */
		0xf4,				/* 1012: hlt */
	};
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	memcpy(vm->mem + 0x1000, code, sizeof(code));
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 1, 0x10);
	EXPECT_EQ(0x42, vm_pio_data(vm)[0]);
	EXPECT_EQ(0x1002, vm_rip(vm));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_IN, 1, 0x11);
	EXPECT_EQ(0x1004, vm_rip(vm));
	vm_pio_data(vm)[0] = 0x77;

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 2, 0x12);
	EXPECT_EQ(0x34, vm_pio_data(vm)[0]);
	EXPECT_EQ(0x12, vm_pio_data(vm)[1]);

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0x1013, regs.rip);		/* past the HLT */
	EXPECT_EQ(0x77, regs.rbx & 0xff);
	EXPECT_EQ(0x1234, regs.rax & 0xffff);
	EXPECT_EQ(0x99, vm->mem[0x2000]);	/* the guest's store, seen by the host */
}

/* 64-bit mode with the guest's own page tables: a 64-bit immediate, OUT of EAX. */
TEST_F(guest, long_mode_io_hlt)
{
	static const uint8_t code[] = {
		0x48, 0xb8, 0xef, 0xbe, 0xad, 0xde, 0x78, 0x56, 0x34, 0x12,
						/* mov $0x12345678deadbeef, %rax */
		0xe7, 0x20,			/* out %eax, $0x20 */
		0x48, 0x89, 0xc3,		/* mov %rax, %rbx */
		0xf4,				/* hlt */
	};
	struct vm *vm = &self->vm;
	struct kvm_regs regs;
	uint32_t data;

	memcpy(vm->mem + 0x1000, code, sizeof(code));
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 4, 0x20);
	memcpy(&data, vm_pio_data(vm), 4);
	EXPECT_EQ(0xdeadbeef, data);

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0x12345678deadbeefULL, regs.rbx);
	EXPECT_EQ(0x1010, regs.rip);
}

#define ASSERT_MMIO(vm, addr, length, write) do {				\
	ASSERT_EQ(KVM_EXIT_MMIO, (vm)->run->exit_reason)			\
		TH_LOG("exit %u, internal error %u, data %llx %llx",		\
		       (vm)->run->exit_reason, (vm)->run->internal.suberror,	\
		       (unsigned long long)(vm)->run->internal.data[0],	\
		       (unsigned long long)(vm)->run->internal.data[1]);	\
	ASSERT_EQ(addr, (vm)->run->mmio.phys_addr);				\
	ASSERT_EQ(length, (vm)->run->mmio.len);					\
	ASSERT_EQ(write, (vm)->run->mmio.is_write);				\
} while (0)

/*
 * MMIO: a guest physical address with no memory slot. Stores arrive with
 * their data (the instruction already done), loads wait for userspace's data
 * (RIP still on the instruction), movzx and movsx extend it as hardware does.
 */
TEST_F(guest, long_mode_mmio)
{
	static const uint8_t code[] = {
		0x48, 0xc7, 0xc3, 0x00, 0x00, 0x20, 0x00,	/* 1000: mov $0x200000, %rbx */
		0xc7, 0x03, 0x0d, 0xf0, 0xfe, 0xca,		/* 1007: movl $0xcafef00d, (%rbx) */
		0x8b, 0x0b,					/* 100d: mov (%rbx), %ecx */
		0x0f, 0xb6, 0x53, 0x10,				/* 100f: movzbl 0x10(%rbx), %edx */
		0x48, 0x0f, 0xbe, 0x73, 0x11,			/* 1013: movsbq 0x11(%rbx), %rsi */
		0x48, 0x89, 0x4b, 0x08,				/* 1018: mov %rcx, 8(%rbx) */
		0xf4,						/* 101c: hlt */
	};
	uint64_t *pd = (uint64_t *)(self->vm.mem + 0x102000);
	struct vm *vm = &self->vm;
	struct kvm_regs regs;
	uint64_t q;

	memcpy(vm->mem + 0x1000, code, sizeof(code));
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	pd[1] = 0x200000 | 0x83;	/* 2 MiB at 2 MiB: beyond the slot */

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_MMIO(vm, 0x200000, 4, 1);
	EXPECT_EQ(0, memcmp(vm->run->mmio.data, "\x0d\xf0\xfe\xca", 4));
	EXPECT_EQ(0x100d, vm_rip(vm));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_MMIO(vm, 0x200000, 4, 0);
	EXPECT_EQ(0x100d, vm_rip(vm));
	memcpy(vm->run->mmio.data, "\x44\x33\x22\x11", 4);

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_MMIO(vm, 0x200010, 1, 0);
	vm->run->mmio.data[0] = 0xfe;

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_MMIO(vm, 0x200011, 1, 0);
	vm->run->mmio.data[0] = 0x80;

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_MMIO(vm, 0x200008, 8, 1);
	memcpy(&q, vm->run->mmio.data, 8);
	EXPECT_EQ(0x11223344, q);

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0x11223344, regs.rcx);
	EXPECT_EQ(0xfe, regs.rdx);
	EXPECT_EQ(0xffffffffffffff80ULL, regs.rsi);
}

/* Real mode: a store to an address above the slot is MMIO too. */
TEST_F(guest, real_mode_mmio)
{
	static const uint8_t code[] = {
		0xb8, 0x00, 0xf0,		/* mov $0xf000, %ax */
		0x8e, 0xc0,			/* mov %ax, %es */
		0x26, 0xc7, 0x06, 0x00, 0x00, 0x34, 0x12,
						/* movw $0x1234, %es:0 -> 0xf0000 */
		0xf4,				/* hlt */
	};
	struct kvm_userspace_memory_region hole = {
		.slot = 0, .memory_size = 0x10000, .userspace_addr = (uintptr_t)self->vm.mem,
	};
	struct vm *vm = &self->vm;

	/* Shrink RAM to 64 KiB: delete slot 0 and add it back smaller. */
	hole.memory_size = 0;
	ASSERT_EQ(0, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &hole));
	hole.memory_size = 0x10000;
	ASSERT_EQ(0, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &hole));
	memcpy(vm->mem + 0x1000, code, sizeof(code));
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_MMIO(vm, 0xf0000, 2, 1);
	EXPECT_EQ(0x34, vm->run->mmio.data[0]);
	EXPECT_EQ(0x12, vm->run->mmio.data[1]);
	ASSERT_EQ(0, vm_run(vm));
	EXPECT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
}

/* KVM_MEM_READONLY: reads see the memory, writes become MMIO exits. */
TEST_F(guest, readonly_slot_writes_are_mmio)
{
	static const uint8_t code[] = {
		0x8a, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00,	/* mov 0x400000, %al */
		0xc6, 0x04, 0x25, 0x00, 0x00, 0x40, 0x00, 0x01,	/* movb $1, 0x400000 */
		0xf4,						/* hlt */
	};
	uint64_t *pd = (uint64_t *)(self->vm.mem + 0x102000);
	struct vm *vm = &self->vm;
	uint8_t *rom = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct kvm_userspace_memory_region r = {
		.slot = 1, .flags = KVM_MEM_READONLY, .guest_phys_addr = 0x400000,
		.memory_size = 4096, .userspace_addr = (uintptr_t)rom,
	};
	struct kvm_regs regs;

	ASSERT_NE(MAP_FAILED, rom);
	rom[0] = 0x77;
	ASSERT_EQ(0, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r));
	memcpy(vm->mem + 0x1000, code, sizeof(code));
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	pd[2] = 0x400000 | 0x83;
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_MMIO(vm, 0x400000, 1, 1);
	EXPECT_EQ(1, vm->run->mmio.data[0]);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0x77, regs.rax & 0xff);
	EXPECT_EQ(0x77, rom[0]);			/* the write did not reach memory */
	munmap(rom, 4096);
}

/*
 * Real mode with a handler for vector 0x20 at 0x2000: OUT 0x80 from the
 * handler, then IRET. The IVT entry (offset:segment) is at 0x80.
 */
static void install_irq_handler(struct vm *vm)
{
	static const uint8_t handler[] = {
		0xb0, 0x99,			/* 2000: mov $0x99, %al */
		0xe6, 0x80,			/* 2002: out %al, $0x80 */
		0xcf,				/* 2004: iret */
		0xb0, 0x98,			/* 2005: mov $0x98, %al (vector 0x21) */
		0xe6, 0x80,			/* 2007: out %al, $0x80 */
		0xcf,				/* 2009: iret */
	};

	memcpy(vm->mem + 0x2000, handler, sizeof(handler));
	vm->mem[0x80] = 0x00;
	vm->mem[0x81] = 0x20;			/* vector 0x20: 0000:2000 */
	vm->mem[0x82] = vm->mem[0x83] = 0;
	vm->mem[0x84] = 0x05;
	vm->mem[0x85] = 0x20;			/* vector 0x21: 0000:2005 */
	vm->mem[0x86] = vm->mem[0x87] = 0;
}

/*
 * A halted guest with interrupts on: ready_for_interrupt_injection is set,
 * KVM_INTERRUPT queues the vector, the next KVM_RUN delivers it, and the
 * handler returns past the HLT.
 */
TEST_F(guest, interrupt_wakes_a_halted_guest)
{
	static const uint8_t code[] = {
		0xfb,				/* 1000: sti */
		0xf4,				/* 1001: hlt */
		0xe6, 0x81,			/* 1002: out %al, $0x81 */
		0xfa, 0xf4,			/* 1004: cli; hlt */
	};
	struct kvm_interrupt irq = { .irq = 0x20 };
	struct vm *vm = &self->vm;

	memcpy(vm->mem + 0x1000, code, sizeof(code));
	install_irq_handler(vm);
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	EXPECT_EQ(1, vm->run->if_flag);
	EXPECT_EQ(1, vm->run->ready_for_interrupt_injection);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_INTERRUPT, &irq));
	/* Vectors stop at 255; a second vector before the entry replaces the first. */
	irq.irq = 256;
	EXPECT_ERRNO(EINVAL, ioctl(vm->vcpu, KVM_INTERRUPT, &irq));
	irq.irq = 0x21;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_INTERRUPT, &irq));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 1, 0x80);	/* the handler of 0x21 */
	EXPECT_EQ(0x98, vm_pio_data(vm)[0]);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 1, 0x81);	/* back after the HLT */
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	EXPECT_EQ(0, vm->run->if_flag);
	EXPECT_EQ(0, vm->run->ready_for_interrupt_injection);
}

/*
 * The interrupt-window protocol: with IF clear the guest is not ready;
 * userspace sets request_interrupt_window and gets KVM_EXIT_IRQ_WINDOW_OPEN
 * once the guest has executed STI (and the instruction in its shadow).
 */
TEST_F(guest, interrupt_window)
{
	static const uint8_t code[] = {
		0xfa,				/* 1000: cli */
		0xe6, 0x10,			/* 1001: out %al, $0x10 */
		0x90, 0x90,			/* 1003: nop; nop */
		0xfb,				/* 1005: sti */
		0x90,				/* 1006: nop (STI shadow) */
		0x90,				/* 1007: nop */
		0xe6, 0x11,			/* 1008: out %al, $0x11 */
		0xfa, 0xf4,			/* 100a: cli; hlt */
	};
	struct kvm_interrupt irq = { .irq = 0x20 };
	struct vm *vm = &self->vm;

	memcpy(vm->mem + 0x1000, code, sizeof(code));
	install_irq_handler(vm);
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 1, 0x10);
	EXPECT_EQ(0, vm->run->ready_for_interrupt_injection);
	EXPECT_EQ(0, vm->run->if_flag);

	vm->run->request_interrupt_window = 1;
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IRQ_WINDOW_OPEN, vm->run->exit_reason);
	EXPECT_EQ(1, vm->run->ready_for_interrupt_injection);
	EXPECT_EQ(1, vm->run->if_flag);
	EXPECT_EQ(0x1007, vm_rip(vm));
	vm->run->request_interrupt_window = 0;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_INTERRUPT, &irq));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 1, 0x80);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 1, 0x11);
}

/*
 * String I/O, as KVM's emulator does it: REP OUTSB goes out one byte per
 * exit (RIP stays on the instruction until the count is done), REP INSW
 * reads ahead (one exit for all three words), REP with CX = 0 does nothing.
 */
TEST_F(guest, string_io)
{
	static const uint8_t code[] = {
		0xbe, 0x00, 0x30,		/* 1000: mov $0x3000, %si */
		0xb9, 0x03, 0x00,		/* 1003: mov $3, %cx */
		0xba, 0xf8, 0x03,		/* 1006: mov $0x3f8, %dx */
		0xf3, 0x6e,			/* 1009: rep outsb */
		0xbf, 0x00, 0x40,		/* 100b: mov $0x4000, %di */
		0xb9, 0x03, 0x00,		/* 100e: mov $3, %cx */
		0xba, 0x60, 0x00,		/* 1011: mov $0x60, %dx */
		0xf3, 0x6d,			/* 1014: rep insw */
		0x31, 0xc9,			/* 1016: xor %cx, %cx */
		0xf3, 0x6e,			/* 1018: rep outsb (CX = 0) */
		0x6e,				/* 101a: outsb */
		0xf4,				/* 101b: hlt */
	};
	struct vm *vm = &self->vm;
	struct kvm_regs regs;
	int i;

	memcpy(vm->mem + 0x1000, code, sizeof(code));
	memcpy(vm->mem + 0x3000, "abcd", 4);
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, vm_run(vm));
		ASSERT_IO(vm, KVM_EXIT_IO_OUT, 1, 0x3f8);
		EXPECT_EQ('a' + i, vm_pio_data(vm)[0]);
		EXPECT_EQ(0x1009, vm_rip(vm));
	}
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	ASSERT_EQ(KVM_EXIT_IO_IN, vm->run->io.direction);
	ASSERT_EQ(2, vm->run->io.size);
	ASSERT_EQ(0x60, vm->run->io.port);
	ASSERT_EQ(3, vm->run->io.count);
	memcpy(vm_pio_data(vm), "\x11\x22\x33\x44\x55\x66", 6);
	/* CX = 0: no exit for that REP OUTSB; the plain OUTSB sends 'd'. */
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 1, 0x60);
	EXPECT_EQ('d', vm_pio_data(vm)[0]);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	EXPECT_EQ(0, memcmp(vm->mem + 0x4000, "\x11\x22\x33\x44\x55\x66", 6));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0x3004, regs.rsi & 0xffff);
	EXPECT_EQ(0x4006, regs.rdi & 0xffff);
	EXPECT_EQ(0, regs.rcx & 0xffff);
}

/*
 * 32-bit protected mode with flat segments, paging off or with 4 MiB pages
 * (CR4.PSE, identity map): a 32-bit OUT, then an MMIO store that rkvm must
 * fetch and decode through the guest's 2-level page tables.
 */
static void protected_mode_io_mmio(struct __test_metadata *_metadata, struct vm *vm, int paging)
{
	static const uint8_t code[] = {
		0xb8, 0x78, 0x56, 0x34, 0x12,		/* 1000: mov $0x12345678, %eax */
		0xe7, 0x10,				/* 1005: out %eax, $0x10 */
		0xc7, 0x05, 0x00, 0x00, 0x00, 0x3f,	/* 1007: movl $0xabcd, 0x3f000000 */
		0xcd, 0xab, 0x00, 0x00,
		0xf4,					/* 1011: hlt */
	};
	struct kvm_segment code_seg = {
		.base = 0, .limit = 0xffffffff, .selector = 8, .type = 0xb,
		.present = 1, .s = 1, .db = 1, .g = 1,
	};
	struct kvm_segment data_seg = code_seg;
	uint32_t *pd = (uint32_t *)(vm->mem + 0x100000);
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = 0x1000, .rsp = 0x8000, .rflags = 2 };
	uint32_t data;
	int i;

	memcpy(vm->mem + 0x1000, code, sizeof(code));
	for (i = 0; i < 1024; i++)
		pd[i] = (i << 22) | 0x83;		/* 4 MiB, present, writable */
	data_seg.type = 3;
	data_seg.selector = 16;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_SREGS, &sregs));
	sregs.cs = code_seg;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data_seg;
	sregs.cr0 = 0x11;				/* PE | ET */
	if (paging) {
		sregs.cr0 |= 0x80000000;		/* PG */
		sregs.cr4 = 1 << 4;			/* PSE */
		sregs.cr3 = 0x100000;
	}
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_SREGS, &sregs));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_REGS, &regs));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 4, 0x10);
	memcpy(&data, vm_pio_data(vm), 4);
	EXPECT_EQ(0x12345678, data);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_MMIO(vm, 0x3f000000, 4, 1);
	memcpy(&data, vm->run->mmio.data, 4);
	EXPECT_EQ(0xabcd, data);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	EXPECT_EQ(0x1012, vm_rip(vm));
}

TEST_F(guest, protected_mode)
{
	protected_mode_io_mmio(_metadata, &self->vm, 0);
}

TEST_F(guest, protected_mode_paging)
{
	protected_mode_io_mmio(_metadata, &self->vm, 1);
}

/*
 * For the dirty-logging tests: slot 0 shrinks to [0, 1 MiB), and slot 1
 * over the 16 pages at `logged` logs dirty pages at 1 MiB (real mode
 * reaches 0x100000-0x10ffef through DS = 0xffff). 0 or -errno.
 */
static int add_logged_slot(struct vm *vm, uint8_t *logged)
{
	struct kvm_userspace_memory_region r = {
		.slot = 1, .flags = KVM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = 0x100000,
		.memory_size = 16 * 4096, .userspace_addr = (uintptr_t)logged,
	};
	int ret = vm_resize_slot0(vm, 0x100000);

	if (ret)
		return ret;
	return ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) ? -errno : 0;
}

/*
 * Dirty logging: a slot with KVM_MEM_LOG_DIRTY_PAGES reports, through
 * KVM_GET_DIRTY_LOG, exactly the pages the guest wrote since the last call.
 * Real mode reaches 0x100000-0x10ffef through DS = 0xffff.
 */
TEST_F(guest, dirty_log)
{
	static const uint8_t code[] = {
		0xb8, 0xff, 0xff,			/* 1000: mov $0xffff, %ax */
		0x8e, 0xd8,				/* 1003: mov %ax, %ds */
		0xc6, 0x06, 0x10, 0x00, 0x01,		/* 1005: movb $1, 0x0010 -> 0x100000 */
		0xc6, 0x06, 0x10, 0x50, 0x01,		/* 100a: movb $1, 0x5010 -> 0x105000 */
		0xf4,					/* 100f: hlt */
		0xc6, 0x06, 0x10, 0x50, 0x02,		/* 1010: movb $2, 0x5010 */
		0xf4,					/* 1015: hlt */
	};
	struct vm *vm = &self->vm;
	uint8_t *logged = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct kvm_dirty_log log = { .slot = 1 };
	uint64_t bitmap = ~0ULL;

	ASSERT_NE(MAP_FAILED, logged);
	/* RAM is [0, 1 MiB) in slot 0 and a logged slot 1 at 1 MiB. */
	ASSERT_EQ(0, add_logged_slot(vm, logged));

	/* No such slot, a slot without logging: ENOENT; a bad id: EINVAL. */
	log.dirty_bitmap = &bitmap;
	log.slot = 9;
	EXPECT_ERRNO(ENOENT, ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log));
	log.slot = 0;
	EXPECT_ERRNO(ENOENT, ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log));
	log.slot = 40000;
	EXPECT_ERRNO(EINVAL, ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log));
	log.slot = 1;

	memcpy(vm->mem + 0x1000, code, sizeof(code));
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	EXPECT_EQ(1, logged[0]);
	EXPECT_EQ(1, logged[0x5000]);
	ASSERT_EQ(0, ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log));
	EXPECT_EQ((1ULL << 0) | (1ULL << 5), bitmap);
	/* Read and cleared: nothing new since. */
	ASSERT_EQ(0, ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log));
	EXPECT_EQ(0, bitmap);

	/* The pages are write-protected again: the next write is logged too. */
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	EXPECT_EQ(2, logged[0x5000]);
	ASSERT_EQ(0, ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log));
	EXPECT_EQ(1ULL << 5, bitmap);
	munmap(logged, 16 * 4096);
}

/*
 * A dirty-logged page the guest reads before it writes it: the read maps it
 * read-only, the write must then reach the caller's own page (not the shared
 * zero page a read of untouched private memory can map), and the shared
 * zero page must still read as zeros afterwards. rkvm pins such a page for
 * writing at the read already (so that the unpin marks it dirty); this
 * checks the guest-visible half of that.
 */
TEST_F(guest, dirty_log_read_then_write)
{
	static const uint8_t code[] = {
		0xb8, 0xff, 0xff,			/* 1000: mov $0xffff, %ax */
		0x8e, 0xd8,				/* 1003: mov %ax, %ds */
		0xa0, 0x10, 0x20,			/* 1005: mov 0x2010, %al -> 0x102000 */
		0xc6, 0x06, 0x10, 0x20, 0x5a,		/* 1008: movb $0x5a, 0x2010 -> 0x102000 */
		0xf4,					/* 100d: hlt */
	};
	struct vm *vm = &self->vm;
	uint8_t *logged = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *fresh;
	struct kvm_dirty_log log = { .slot = 1 };
	uint64_t bitmap = 0;
	struct kvm_regs regs;

	ASSERT_NE(MAP_FAILED, logged);
	ASSERT_EQ(0, add_logged_slot(vm, logged));
	memcpy(vm->mem + 0x1000, code, sizeof(code));
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0, regs.rax & 0xff);		/* the read saw a zero page */
	EXPECT_EQ(0x5a, logged[0x2000]);	/* the write reached our page */
	log.dirty_bitmap = &bitmap;
	ASSERT_EQ(0, ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log));
	EXPECT_EQ(1ULL << 2, bitmap);
	fresh = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, fresh);
	EXPECT_EQ(0, fresh[0]);			/* the shared zero page is intact */
	munmap(fresh, 4096);
	munmap(logged, 16 * 4096);
}

/* A 32-bit IN zero-extends into RAX; an 8-bit IN keeps the rest of RAX. */
TEST_F(guest, in_merges_like_hardware)
{
	static const uint8_t code[] = {
		0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff,	/* mov $-1, %rax */
		0xe4, 0x30,					/* in $0x30, %al */
		0x48, 0x89, 0xc3,				/* mov %rax, %rbx */
		0xe5, 0x31,					/* in $0x31, %eax */
		0xf4,						/* hlt */
	};
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	memcpy(vm->mem + 0x1000, code, sizeof(code));
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_IN, 1, 0x30);
	vm_pio_data(vm)[0] = 0x5a;
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_IN, 4, 0x31);
	memcpy(vm_pio_data(vm), "\x11\x22\x33\x44", 4);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0xffffffffffffff5aULL, regs.rbx);
	EXPECT_EQ(0x44332211ULL, regs.rax);
}

/*
 * A real-mode guest that uses its interrupt vector table and then enters
 * protected mode itself: INT n to a handler, a #UD delivered through the
 * IVT (the handler steps over the UD2), LGDT, CR0.PE set by MOV to CR0, a
 * far jump to 32-bit code that loads flat segments. With VMX shadow
 * paging, where real mode runs in virtual-8086 mode, rkvm emulates each of
 * these (Documentation/vmx.md); elsewhere the processor does them.
 */
TEST_F(guest, real_mode_ivt_then_protected_mode)
{
	static const uint8_t code[] = {
		0xbc, 0x00, 0x20,			/* 1000: mov $0x2000, %sp */
		0xcd, 0x21,				/* 1003: int $0x21 */
		0x0f, 0x0b,				/* 1005: ud2 */
		0x0f, 0x01, 0x16, 0x18, 0x13,		/* 1007: lgdt 0x1318 */
		0x0f, 0x20, 0xc0,			/* 100c: mov %cr0, %eax */
		0x0c, 0x01,				/* 100f: or $1, %al */
		0x0f, 0x22, 0xc0,			/* 1011: mov %eax, %cr0 */
		0xea, 0x19, 0x10, 0x08, 0x00,		/* 1014: ljmp $8, $0x1019 */
		0x66, 0xb8, 0x10, 0x00,			/* 1019: mov $0x10, %ax (32-bit code) */
		0x8e, 0xd8,				/* 101d: mov %ax, %ds */
		0x8e, 0xd0,				/* 101f: mov %ax, %ss */
		0xb8, 0xee, 0xff, 0xc0, 0x00,		/* 1021: mov $0xc0ffee, %eax */
		0xe7, 0x12,				/* 1026: out %eax, $0x12 */
		0xf4,					/* 1028: hlt */
	};
	static const uint8_t int21[] = {
		0xb0, 0x21, 0xe6, 0x10, 0xcf,		/* 1100: mov $0x21, %al; out %al, $0x10; iret */
	};
	static const uint8_t ud[] = {
		0x55, 0x89, 0xe5,			/* 1200: push %bp; mov %sp, %bp */
		0x83, 0x46, 0x02, 0x02,			/* 1203: addw $2, 2(%bp) (past the UD2) */
		0x5d, 0xb0, 0x06, 0xe6, 0x10, 0xcf,	/* 1207: pop %bp; mov $6, %al; out %al, $0x10; iret */
	};
	static const uint64_t gdt[] = { 0, 0x00cf9a000000ffffULL, 0x00cf92000000ffffULL };
	static const uint8_t gdt_desc[] = { 23, 0, 0x00, 0x13, 0, 0 };
	struct vm *vm = &self->vm;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	uint32_t data;

	memcpy(vm->mem + 0x1000, code, sizeof(code));
	memcpy(vm->mem + 0x1100, int21, sizeof(int21));
	memcpy(vm->mem + 0x1200, ud, sizeof(ud));
	memcpy(vm->mem + 0x1300, gdt, sizeof(gdt));
	memcpy(vm->mem + 0x1318, gdt_desc, sizeof(gdt_desc));
	memcpy(vm->mem + 0x21 * 4, "\x00\x11\x00\x00", 4);	/* IVT: 0000:1100 */
	memcpy(vm->mem + 6 * 4, "\x00\x12\x00\x00", 4);	/* IVT: 0000:1200 */
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 1, 0x10);
	EXPECT_EQ(0x21, *(uint8_t *)vm_pio_data(vm));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 1, 0x10);
	EXPECT_EQ(6, *(uint8_t *)vm_pio_data(vm));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 4, 0x12);
	memcpy(&data, vm_pio_data(vm), 4);
	EXPECT_EQ(0xc0ffee, data);
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	EXPECT_EQ(0x1029, vm_rip(vm));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0x2000, regs.rsp);
	EXPECT_EQ(0, regs.rflags & 0x3000);			/* IOPL 0, as set */
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_SREGS, &sregs));
	EXPECT_EQ(1, sregs.cr0 & 1);
	EXPECT_EQ(8, sregs.cs.selector);
	EXPECT_EQ(1, sregs.cs.db);
	EXPECT_EQ(0x10, sregs.ss.selector);
	EXPECT_EQ(0xffffffff, sregs.ds.limit);
	EXPECT_EQ(0x1300, sregs.gdt.base);
	EXPECT_EQ(23, sregs.gdt.limit);
}

/*
 * Real mode with a CS base that is not its selector times 16 (as after
 * RESET, or after a switch back from protected mode): the processor uses
 * the base. Virtual-8086 mode cannot (rkvm's VMX backend with shadow
 * paging): there the run must end in a clear emulation error, not in
 * wrong code running.
 */
TEST_F(guest, real_mode_cs_base_apart_from_selector)
{
	static const uint8_t code[] = {
		0xb0, 0x5a, 0xe6, 0x10,			/* mov $0x5a, %al; out %al, $0x10 */
		0xf4,					/* hlt */
	};
	struct vm *vm = &self->vm;
	struct kvm_sregs sregs;
	bool v86 = testing_rkvm() && host_is_intel() &&
		   ioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_RKVM_MMU) == RKVM_MMU_SHADOW;

	memcpy(vm->mem + 0x20000, code, sizeof(code));
	ASSERT_EQ(0, vm_real_mode(vm, 0));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_SREGS, &sregs));
	sregs.cs.selector = 0x1000;
	sregs.cs.base = 0x20000;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_SREGS, &sregs));
	ASSERT_EQ(0, vm_run(vm));
	if (v86) {
		ASSERT_EQ(KVM_EXIT_INTERNAL_ERROR, vm->run->exit_reason);
		EXPECT_EQ(KVM_INTERNAL_ERROR_EMULATION, vm->run->internal.suberror);
		EXPECT_EQ(0, vm_rip(vm));
		return;
	}
	ASSERT_IO(vm, KVM_EXIT_IO_OUT, 1, 0x10);
	EXPECT_EQ(0x5a, *(uint8_t *)vm_pio_data(vm));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
}

/* Real mode with an empty IVT: INT3 faults, the fault faults: shutdown. */
TEST_F(guest, triple_fault_is_shutdown)
{
	struct vm *vm = &self->vm;
	struct kvm_sregs sregs;

	vm->mem[0x1000] = 0xcc;				/* int3 */
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_SREGS, &sregs));
	sregs.idt.limit = 0;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_SREGS, &sregs));
	ASSERT_EQ(0, vm_run(vm));
	EXPECT_EQ(KVM_EXIT_SHUTDOWN, vm->run->exit_reason);
}

/* CS.L and CS.D together in long mode: the hardware refuses the entry. */
TEST_F(guest, invalid_state_is_fail_entry)
{
	struct vm *vm = &self->vm;
	struct kvm_sregs sregs;

	vm->mem[0x1000] = 0xf4;
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_SREGS, &sregs));
	sregs.cs.db = 1;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_SREGS, &sregs));
	ASSERT_EQ(0, vm_run(vm));
	EXPECT_EQ(KVM_EXIT_FAIL_ENTRY, vm->run->exit_reason)
		TH_LOG("internal error %u, data %llx %llx", vm->run->internal.suberror,
		       (unsigned long long)vm->run->internal.data[0],
		       (unsigned long long)vm->run->internal.data[1]);
}

/*
 * immediate_exit: KVM_RUN returns EINTR at once without entering the guest
 * and leaves exit_reason as it was (kvm_arch_vcpu_ioctl_run()).
 */
TEST_F(guest, immediate_exit)
{
	struct vm *vm = &self->vm;

	vm->mem[0x1000] = 0xf4;
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	vm->run->immediate_exit = 1;
	vm->run->exit_reason = 0x1234;
	errno = 0;
	EXPECT_EQ(-1, vm_run(vm));
	EXPECT_EQ(EINTR, errno);
	EXPECT_EQ(0x1234, vm->run->exit_reason);
	EXPECT_EQ(0x1000, vm_rip(vm));			/* the guest did not run */
	vm->run->immediate_exit = 0;
	ASSERT_EQ(0, vm_run(vm));
	EXPECT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
}

/* A guest that loops for ever still comes back for a signal (EINTR). */
static void on_alarm(int sig) { (void)sig; }

TEST_F(guest, signal_interrupts_a_spinning_guest)
{
	struct vm *vm = &self->vm;
	struct sigaction sa = { .sa_handler = on_alarm };

	vm->mem[0x1000] = 0xeb;				/* jmp . */
	vm->mem[0x1001] = 0xfe;
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, sigaction(SIGALRM, &sa, NULL));
	alarm(1);
	errno = 0;
	EXPECT_EQ(-1, vm_run(vm));
	EXPECT_EQ(EINTR, errno);
	EXPECT_EQ(KVM_EXIT_INTR, vm->run->exit_reason);
	EXPECT_EQ(0x1000, vm_rip(vm));
}

TEST_HARNESS_MAIN

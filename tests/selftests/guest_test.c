// SPDX-License-Identifier: GPL-2.0
/*
 * Guests that run: real mode and long mode, port I/O in both directions,
 * memory the host sees, HLT, triple fault, failed entry, immediate_exit.
 * Every exit reason, port, size, datum and register is asserted, the same
 * against real KVM and rkvm.
 */
#include <signal.h>

#include "harness.h"
#include "vm.h"
#include "guest_code.h"

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
GUEST_CODE16(real_mode_io_code,
	"	mov $0x42, %al\n"
	"	out %al, $0x10\n"		/* at 0x1002 */
	"	in $0x11, %al\n"		/* at 0x1004 */
	"	mov %al, %bl\n"
	"	mov $0x1234, %ax\n"
	"	out %ax, $0x12\n"		/* 16-bit OUT */
	"	movb $0x99, 0x2000\n"		/* a store the host sees */
	"	hlt\n");			/* at 0x1012 */

TEST_F(guest, real_mode_io_memory_hlt)
{
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	LOAD_GUEST_CODE(vm->mem, 0x1000, real_mode_io_code);
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
GUEST_CODE64(long_mode_io_code,
	"	mov $0x12345678deadbeef, %rax\n"
	"	out %eax, $0x20\n"
	"	mov %rax, %rbx\n"
	"	hlt\n");			/* at 0x100f */

TEST_F(guest, long_mode_io_hlt)
{
	struct vm *vm = &self->vm;
	struct kvm_regs regs;
	uint32_t data;

	LOAD_GUEST_CODE(vm->mem, 0x1000, long_mode_io_code);
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
GUEST_CODE64(long_mode_mmio_code,
	"	mov $0x200000, %rbx\n"		/* MMIO: no slot there */
	"	movl $0xcafef00d, (%rbx)\n"
	"	mov (%rbx), %ecx\n"		/* at 0x100d */
	"	movzbl 0x10(%rbx), %edx\n"
	"	movsbq 0x11(%rbx), %rsi\n"
	"	mov %rcx, 8(%rbx)\n"
	"	hlt\n");

TEST_F(guest, long_mode_mmio)
{
	uint64_t *pd = (uint64_t *)(self->vm.mem + 0x102000);
	struct vm *vm = &self->vm;
	struct kvm_regs regs;
	uint64_t q;

	LOAD_GUEST_CODE(vm->mem, 0x1000, long_mode_mmio_code);
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
GUEST_CODE16(real_mode_mmio_code,
	"	mov $0xf000, %ax\n"
	"	mov %ax, %es\n"
	"	movw $0x1234, %es:0\n"		/* to 0xf0000 */
	"	hlt\n");

TEST_F(guest, real_mode_mmio)
{
	struct kvm_userspace_memory_region hole = {
		.slot = 0, .memory_size = 0x10000, .userspace_addr = (uintptr_t)self->vm.mem,
	};
	struct vm *vm = &self->vm;

	/* Shrink RAM to 64 KiB: delete slot 0 and add it back smaller. */
	hole.memory_size = 0;
	ASSERT_EQ(0, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &hole));
	hole.memory_size = 0x10000;
	ASSERT_EQ(0, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &hole));
	LOAD_GUEST_CODE(vm->mem, 0x1000, real_mode_mmio_code);
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_MMIO(vm, 0xf0000, 2, 1);
	EXPECT_EQ(0x34, vm->run->mmio.data[0]);
	EXPECT_EQ(0x12, vm->run->mmio.data[1]);
	ASSERT_EQ(0, vm_run(vm));
	EXPECT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
}

/* KVM_MEM_READONLY: reads see the memory, writes become MMIO exits. */
GUEST_CODE64(readonly_slot_code,
	"	mov 0x400000, %al\n"
	"	movb $1, 0x400000\n"
	"	hlt\n");

TEST_F(guest, readonly_slot_writes_are_mmio)
{
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
	LOAD_GUEST_CODE(vm->mem, 0x1000, readonly_slot_code);
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
 * Real mode with a handler for vector 0x20 at 0x2000 and one for 0x21 at
 * 0x2005: OUT 0x80 (of 0x99 and 0x98) from the handler, then IRET. The IVT
 * entries (offset:segment) are at 0x80 and 0x84.
 */
GUEST_CODE16(irq_handlers_code,
	"	mov $0x99, %al\n"		/* vector 0x20, at 0x2000 */
	"	out %al, $0x80\n"
	"	iret\n"
	"	mov $0x98, %al\n"		/* vector 0x21, at 0x2005 */
	"	out %al, $0x80\n"
	"	iret\n");

static void install_irq_handler(struct vm *vm)
{
	LOAD_GUEST_CODE(vm->mem, 0x2000, irq_handlers_code);
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
GUEST_CODE16(wake_from_hlt_code,
	"	sti\n"
	"	hlt\n"
	"	out %al, $0x81\n"		/* after the handler */
	"	cli\n"
	"	hlt\n");

TEST_F(guest, interrupt_wakes_a_halted_guest)
{
	struct kvm_interrupt irq = { .irq = 0x20 };
	struct vm *vm = &self->vm;

	LOAD_GUEST_CODE(vm->mem, 0x1000, wake_from_hlt_code);
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
GUEST_CODE16(irq_window_code,
	"	cli\n"
	"	out %al, $0x10\n"
	"	nop\n"
	"	nop\n"
	"	sti\n"
	"	nop\n"				/* in the STI shadow */
	"	nop\n"				/* at 0x1007: the window is open */
	"	out %al, $0x11\n"
	"	cli\n"
	"	hlt\n");

TEST_F(guest, interrupt_window)
{
	struct kvm_interrupt irq = { .irq = 0x20 };
	struct vm *vm = &self->vm;

	LOAD_GUEST_CODE(vm->mem, 0x1000, irq_window_code);
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
GUEST_CODE16(string_io_code,
	"	mov $0x3000, %si\n"
	"	mov $3, %cx\n"
	"	mov $0x3f8, %dx\n"
	"	rep outsb\n"			/* at 0x1009 */
	"	mov $0x4000, %di\n"
	"	mov $3, %cx\n"
	"	mov $0x60, %dx\n"
	"	rep insw\n"
	"	xor %cx, %cx\n"
	"	rep outsb\n"			/* CX = 0: nothing */
	"	outsb\n"
	"	hlt\n");

TEST_F(guest, string_io)
{
	struct vm *vm = &self->vm;
	struct kvm_regs regs;
	int i;

	LOAD_GUEST_CODE(vm->mem, 0x1000, string_io_code);
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
GUEST_CODE32(protected_mode_code,
	"	mov $0x12345678, %eax\n"
	"	out %eax, $0x10\n"
	"	movl $0xabcd, 0x3f000000\n"	/* MMIO: beyond the slot */
	"	hlt\n");			/* at 0x1011 */

static void protected_mode_io_mmio(struct __test_metadata *_metadata, struct vm *vm, int paging)
{
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

	LOAD_GUEST_CODE(vm->mem, 0x1000, protected_mode_code);
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
GUEST_CODE16(dirty_log_code,
	"	mov $0xffff, %ax\n"
	"	mov %ax, %ds\n"
	"	movb $1, 0x0010\n"		/* to 0x100000 */
	"	movb $1, 0x5010\n"		/* to 0x105000 */
	"	hlt\n"
	"	movb $2, 0x5010\n"		/* the same page again */
	"	hlt\n");

TEST_F(guest, dirty_log)
{
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

	LOAD_GUEST_CODE(vm->mem, 0x1000, dirty_log_code);
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
GUEST_CODE16(read_then_write_code,
	"	mov $0xffff, %ax\n"
	"	mov %ax, %ds\n"
	"	mov 0x2010, %al\n"		/* reads 0x102000 */
	"	movb $0x5a, 0x2010\n"		/* writes it */
	"	hlt\n");

TEST_F(guest, dirty_log_read_then_write)
{
	struct vm *vm = &self->vm;
	uint8_t *logged = mmap(NULL, 16 * 4096, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *fresh;
	struct kvm_dirty_log log = { .slot = 1 };
	uint64_t bitmap = 0;
	struct kvm_regs regs;

	ASSERT_NE(MAP_FAILED, logged);
	ASSERT_EQ(0, add_logged_slot(vm, logged));
	LOAD_GUEST_CODE(vm->mem, 0x1000, read_then_write_code);
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
GUEST_CODE64(in_merge_code,
	"	mov $-1, %rax\n"
	"	in $0x30, %al\n"
	"	mov %rax, %rbx\n"
	"	in $0x31, %eax\n"
	"	hlt\n");

TEST_F(guest, in_merges_like_hardware)
{
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	LOAD_GUEST_CODE(vm->mem, 0x1000, in_merge_code);
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
GUEST_CODE16(ivt_pm_code,			/* at 0x1000 */
	"	mov $0x2000, %sp\n"
	"	int $0x21\n"
	"	ud2\n"				/* #UD through the IVT */
	"	lgdt 0x1318\n"			/* ivt_gdt's descriptor */
	"	mov %cr0, %eax\n"
	"	or $1, %al\n"
	"	mov %eax, %cr0\n"		/* PE */
	"	ljmp $8, $0x1000 + (1f - ivt_pm_code)\n"	/* to 1: (0x1019) */
	"	.code32\n"
	"1:	mov $0x10, %ax\n"		/* flat data segments */
	"	mov %ax, %ds\n"
	"	mov %ax, %ss\n"
	"	mov $0xc0ffee, %eax\n"
	"	out %eax, $0x12\n"
	"	hlt\n");			/* at 0x1028 */

GUEST_CODE16(ivt_int21_code,			/* INT 0x21's handler, at 0x1100 */
	"	mov $0x21, %al\n"
	"	out %al, $0x10\n"
	"	iret\n");

GUEST_CODE16(ivt_ud_code,			/* #UD's handler, at 0x1200 */
	"	push %bp\n"
	"	mov %sp, %bp\n"
	"	addw $2, 2(%bp)\n"		/* return past the UD2 */
	"	pop %bp\n"
	"	mov $6, %al\n"
	"	out %al, $0x10\n"
	"	iret\n");

/* At 0x1300: a null descriptor, flat 32-bit code (8) and data (0x10); LGDT's operand at 0x1318. */
GUEST_CODE16(ivt_gdt,
	"	.quad 0\n"
	"	.quad 0x00cf9a000000ffff\n"
	"	.quad 0x00cf92000000ffff\n"
	"	.word 23\n"			/* at 0x1318: limit */
	"	.long 0x1300\n");		/* base */

TEST_F(guest, real_mode_ivt_then_protected_mode)
{
	struct vm *vm = &self->vm;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	uint32_t data;

	LOAD_GUEST_CODE(vm->mem, 0x1000, ivt_pm_code);
	LOAD_GUEST_CODE(vm->mem, 0x1100, ivt_int21_code);
	LOAD_GUEST_CODE(vm->mem, 0x1200, ivt_ud_code);
	LOAD_GUEST_CODE(vm->mem, 0x1300, ivt_gdt);
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
GUEST_CODE16(cs_base_code,
	"	mov $0x5a, %al\n"
	"	out %al, $0x10\n"
	"	hlt\n");

TEST_F(guest, real_mode_cs_base_apart_from_selector)
{
	struct vm *vm = &self->vm;
	struct kvm_sregs sregs;
	bool v86 = testing_rkvm() && host_is_intel() &&
		   ioctl(vm->fd, KVM_CHECK_EXTENSION, KVM_CAP_RKVM_MMU) == RKVM_MMU_SHADOW;

	LOAD_GUEST_CODE(vm->mem, 0x20000, cs_base_code);	/* CS base 0x20000, IP 0 */
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

	vm->mem[0x1000] = 0xf4;				/* hlt */
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

	vm->mem[0x1000] = 0xf4;				/* hlt */
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

GUEST_CODE16(spin_code,
	"	jmp .\n");

TEST_F(guest, signal_interrupts_a_spinning_guest)
{
	struct vm *vm = &self->vm;
	struct sigaction sa = { .sa_handler = on_alarm };

	LOAD_GUEST_CODE(vm->mem, 0x1000, spin_code);
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

// SPDX-License-Identifier: GPL-2.0
/*
 * Guest writes handled in the kernel without an exit (issue 18):
 * KVM_IOEVENTFD (a matching PIO or MMIO write signals an eventfd) and
 * coalesced MMIO/PIO (a write in a registered zone goes to the ring page the
 * vCPU fd maps at KVM_COALESCED_MMIO_PAGE_OFFSET); and the dirty log of a
 * page the kernel writes for the guest (the kvmclock page). Each errno and
 * value as real KVM gives it (the same tests run against it first).
 */
#include <sys/eventfd.h>

#include "harness.h"
#include "vm.h"
#include "guest_code.h"

/* Where the guests below find MMIO: the 2 MiB above guest RAM. */
#define MMIO_BASE	0x200000ULL

/* The eventfd's counter, read (and so reset); 0 if it was not signalled. */
static uint64_t ev_count(int fd)
{
	uint64_t n = 0;

	if (read(fd, &n, sizeof(n)) != sizeof(n))
		return 0;
	return n;
}

static int ioeventfd(int vm_fd, uint64_t addr, uint32_t len, int fd, uint32_t flags,
		     uint64_t datamatch)
{
	struct kvm_ioeventfd io = {
		.datamatch = datamatch, .addr = addr, .len = len, .fd = fd, .flags = flags,
	};

	return ioctl(vm_fd, KVM_IOEVENTFD, &io);
}

static int zone(int vm_fd, unsigned long req, uint64_t addr, uint32_t size, uint32_t pio)
{
	struct kvm_coalesced_mmio_zone z = { .addr = addr, .size = size, .pio = pio };

	return ioctl(vm_fd, req, &z);
}

TEST(capabilities)
{
	int sys = open_device();

	ASSERT_LE(0, sys);
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_IOEVENTFD));
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_IOEVENTFD_NO_LENGTH));
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_IOEVENTFD_ANY_LENGTH));
	/* The ring's page offset in the vCPU mmap: 2 on x86 (after the PIO page). */
	EXPECT_EQ(KVM_COALESCED_MMIO_PAGE_OFFSET, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_COALESCED_MMIO));
	EXPECT_EQ(2, KVM_COALESCED_MMIO_PAGE_OFFSET);
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_COALESCED_PIO));
	/* kvm_run, the PIO page and the ring. */
	EXPECT_EQ(3 * 4096, ioctl(sys, KVM_GET_VCPU_MMAP_SIZE, 0));
	close(sys);
}

VM_FIXTURE(vm)

TEST_F(vm, ioeventfd_errnos)
{
	int vm = self->vm.fd, a = eventfd(0, EFD_NONBLOCK), b = eventfd(0, EFD_NONBLOCK), i;
	const uint32_t DM = KVM_IOEVENTFD_FLAG_DATAMATCH, PIO = KVM_IOEVENTFD_FLAG_PIO;
	const uint32_t DE = KVM_IOEVENTFD_FLAG_DEASSIGN;

	ASSERT_LE(0, a);
	ASSERT_LE(0, b);
	EXPECT_ERRNO(EFAULT, ioctl(vm, KVM_IOEVENTFD, NULL));
	/* Length, range, flags, then the fd. */
	EXPECT_ERRNO(EINVAL, ioeventfd(vm, 0x1000, 3, a, 0, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(vm, 0x1000, 16, a, 0, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(vm, ~0ULL - 1, 4, a, 0, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(vm, 0x1000, 4, a, 1 << 5, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(vm, 0x1000, 0, a, DM, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(vm, 0x1000, 3, -1, 0, 0));
	EXPECT_ERRNO(EBADF, ioeventfd(vm, 0x1000, 4, -1, 0, 0));
	EXPECT_ERRNO(EINVAL, ioeventfd(vm, 0x1000, 4, self->vm.sys, 0, 0));	/* not an eventfd */
	/* The length-0 address is fine at the very top. */
	EXPECT_EQ(0, ioeventfd(vm, ~0ULL, 0, a, 0, 0));

	/* Collisions: same bus and address, and no length on either side, or
	 * the same length with a wildcard or the same value. */
	ASSERT_EQ(0, ioeventfd(vm, 0x1000, 4, a, DM, 1));
	EXPECT_ERRNO(EEXIST, ioeventfd(vm, 0x1000, 4, b, DM, 1));	/* another eventfd too */
	EXPECT_EQ(0, ioeventfd(vm, 0x1000, 4, a, DM, 2));
	EXPECT_ERRNO(EEXIST, ioeventfd(vm, 0x1000, 4, a, 0, 0));
	EXPECT_ERRNO(EEXIST, ioeventfd(vm, 0x1000, 0, a, 0, 0));
	EXPECT_EQ(0, ioeventfd(vm, 0x1000, 2, a, 0, 0));
	EXPECT_EQ(0, ioeventfd(vm, 0x1000, 4, a, PIO | DM, 1));	/* the other bus */
	EXPECT_EQ(0, ioeventfd(vm, 0x1002, 4, a, 0, 0));

	/* Deassign: the fd first (EBADF), then the exact one (ENOENT), its
	 * length and flags not checked. */
	EXPECT_ERRNO(EBADF, ioeventfd(vm, 0x1000, 4, -1, DE | DM, 1));
	EXPECT_ERRNO(ENOENT, ioeventfd(vm, 0x1000, 4, b, DE | DM, 1));	/* other eventfd */
	EXPECT_ERRNO(ENOENT, ioeventfd(vm, 0x1000, 4, a, DE, 1));	/* wildcard */
	EXPECT_ERRNO(ENOENT, ioeventfd(vm, 0x1000, 4, a, DE | DM, 3));
	EXPECT_ERRNO(ENOENT, ioeventfd(vm, 0x1000, 3, a, DE | DM | (1 << 7), 1));
	EXPECT_EQ(0, ioeventfd(vm, 0x1000, 4, a, DE | DM, 1));
	EXPECT_ERRNO(ENOENT, ioeventfd(vm, 0x1000, 4, a, DE | DM, 1));
	EXPECT_EQ(0, ioeventfd(vm, 0x1000, 4, b, DM, 1));		/* free again */
	EXPECT_EQ(0, ioeventfd(vm, 0x1000, 4, a, DE | DM | PIO, 1));
	/* The assignment holds its own reference: closing the fd keeps it. */
	close(b);
	EXPECT_ERRNO(EBADF, ioeventfd(vm, 0x1000, 4, b, DE | DM, 1));

	/* Ioeventfds do not count against a bus's 1000 devices. */
	for (i = 0; i < 1100; i++)
		if (ioeventfd(vm, 0x10000 + i, 1, a, PIO, 0))
			break;
	EXPECT_EQ(1100, i) TH_LOG("errno %d", errno);
	close(a);
}

/*
 * The guest's writes: those an ioeventfd takes signal it and the guest
 * goes on; a miss exits as usual.
 */
GUEST_CODE64(ioeventfd_code,
	"	mov $0x200000, %ebx\n"
	"	mov $0x11, %al\n"
	"	out %al, $0x20\n"	/* PIO, any value */
	"	out %al, $0x24\n"	/* PIO, length 0: any size */
	"	out %ax, $0x24\n"
	"	out %eax, $0x24\n"
	"	mov $0x1234, %ax\n"
	"	out %ax, $0x22\n"	/* PIO, datamatch 0x1234: hit */
	"	mov $0x4321, %ax\n"
	"	out %ax, $0x22\n"	/* miss: exit */
	"	mov $0xcafe, %eax\n"
	"	mov %eax, (%rbx)\n"	/* MMIO, any value */
	"	mov $7, %eax\n"
	"	mov %rax, 8(%rbx)\n"	/* MMIO, datamatch 7: hit */
	"	mov $8, %eax\n"
	"	mov %rax, 8(%rbx)\n"	/* miss: exit */
	"	mov %al, 0x10(%rbx)\n"	/* length 0: any size */
	"	mov %ax, 0x10(%rbx)\n"
	"	mov %eax, 0x11(%rbx)\n"	/* not at its address: exit */
	"	mov %al, 0x20(%rbx)\n"	/* deassigned by then: exit */
	"	out %al, $0x10\n"
	"	hlt\n");

TEST_F(vm, guest_writes_signal_without_exit)
{
	struct vm *vm = &self->vm;
	uint64_t *pd = (uint64_t *)(vm->mem + 0x102000);
	int pio = eventfd(0, EFD_NONBLOCK), pio_dm = eventfd(0, EFD_NONBLOCK);
	int mmio = eventfd(0, EFD_NONBLOCK), mmio_dm = eventfd(0, EFD_NONBLOCK);
	int any = eventfd(0, EFD_NONBLOCK), gone = eventfd(0, EFD_NONBLOCK);
	int pio_any = eventfd(0, EFD_NONBLOCK);
	const uint32_t DM = KVM_IOEVENTFD_FLAG_DATAMATCH, PIO = KVM_IOEVENTFD_FLAG_PIO;

	ASSERT_EQ(0, ioeventfd(vm->fd, 0x20, 1, pio, PIO, 0));
	ASSERT_EQ(0, ioeventfd(vm->fd, 0x22, 2, pio_dm, PIO | DM, 0x1234));
	ASSERT_EQ(0, ioeventfd(vm->fd, 0x24, 0, pio_any, PIO, 0));
	ASSERT_EQ(0, ioeventfd(vm->fd, MMIO_BASE, 4, mmio, 0, 0));
	ASSERT_EQ(0, ioeventfd(vm->fd, MMIO_BASE + 8, 8, mmio_dm, DM, 7));
	ASSERT_EQ(0, ioeventfd(vm->fd, MMIO_BASE + 0x10, 0, any, 0, 0));
	ASSERT_EQ(0, ioeventfd(vm->fd, MMIO_BASE + 0x20, 1, gone, 0, 0));
	ASSERT_EQ(0, ioeventfd(vm->fd, MMIO_BASE + 0x20, 1, gone, KVM_IOEVENTFD_FLAG_DEASSIGN, 0));

	LOAD_GUEST_CODE(vm->mem, 0x1000, ioeventfd_code);
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	pd[1] = MMIO_BASE | 0x83;		/* 2 MiB at 2 MiB: no RAM there */

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x22, vm->run->io.port);
	EXPECT_EQ(KVM_EXIT_IO_OUT, vm->run->io.direction);
	EXPECT_EQ(0x4321, *(uint16_t *)vm_pio_data(vm));
	EXPECT_EQ(1, ev_count(pio));
	EXPECT_EQ(1, ev_count(pio_dm));
	EXPECT_EQ(3, ev_count(pio_any));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_MMIO, vm->run->exit_reason);
	EXPECT_EQ(MMIO_BASE + 8, vm->run->mmio.phys_addr);
	EXPECT_EQ(8, vm->run->mmio.len);
	EXPECT_EQ(1, vm->run->mmio.is_write);
	EXPECT_EQ(8, *(uint64_t *)vm->run->mmio.data);
	EXPECT_EQ(1, ev_count(mmio));
	EXPECT_EQ(1, ev_count(mmio_dm));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_MMIO, vm->run->exit_reason);
	EXPECT_EQ(MMIO_BASE + 0x11, vm->run->mmio.phys_addr);
	EXPECT_EQ(4, vm->run->mmio.len);
	EXPECT_EQ(2, ev_count(any));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_MMIO, vm->run->exit_reason);
	EXPECT_EQ(MMIO_BASE + 0x20, vm->run->mmio.phys_addr);
	EXPECT_EQ(0, ev_count(gone));

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x10, vm->run->io.port);
	EXPECT_EQ(0, ev_count(pio) + ev_count(pio_dm) + ev_count(mmio) + ev_count(mmio_dm));
	close(pio);
	close(pio_dm);
	close(mmio);
	close(mmio_dm);
	close(any);
	close(gone);
	close(pio_any);
}

TEST_F(vm, coalesced_errnos)
{
	int vm = self->vm.fd, ev = eventfd(0, EFD_NONBLOCK), i;

	ASSERT_LE(0, ev);
	EXPECT_ERRNO(EFAULT, ioctl(vm, KVM_REGISTER_COALESCED_MMIO, NULL));
	EXPECT_ERRNO(EFAULT, ioctl(vm, KVM_UNREGISTER_COALESCED_MMIO, NULL));
	EXPECT_ERRNO(EINVAL, zone(vm, KVM_REGISTER_COALESCED_MMIO, 0x1000, 0x100, 2));
	EXPECT_ERRNO(EINVAL, zone(vm, KVM_UNREGISTER_COALESCED_MMIO, 0x1000, 0x100, 2));
	/* Nothing else is checked; unregistering what is not there is fine. */
	EXPECT_EQ(0, zone(vm, KVM_REGISTER_COALESCED_MMIO, 0x1000, 0, 0));
	EXPECT_EQ(0, zone(vm, KVM_REGISTER_COALESCED_MMIO, ~0ULL, 0x100, 0));
	EXPECT_EQ(0, zone(vm, KVM_UNREGISTER_COALESCED_MMIO, 0x5000, 0x100, 0));
	EXPECT_EQ(0, zone(vm, KVM_UNREGISTER_COALESCED_MMIO, 0x1000, 0, 0));
	ASSERT_EQ(0, ioeventfd(vm, 0x3000, 4, ev, 0, 0));	/* not counted */
	/* 1000 devices per bus (the zone at ~0 is one of them). */
	for (i = 1; i < 1000; i++)
		if (zone(vm, KVM_REGISTER_COALESCED_MMIO, 0x100000 + i * 16, 8, 0))
			break;
	EXPECT_EQ(1000, i) TH_LOG("errno %d", errno);
	EXPECT_ERRNO(ENOSPC, zone(vm, KVM_REGISTER_COALESCED_MMIO, 0x1000, 8, 0));
	/* Nor an ioeventfd: they are not counted, but the bus is full. A
	 * collision is found first. */
	EXPECT_ERRNO(ENOSPC, ioeventfd(vm, 0x2000, 4, ev, 0, 0));
	EXPECT_ERRNO(EEXIST, ioeventfd(vm, 0x3000, 4, ev, 0, 0));
	EXPECT_EQ(0, ioeventfd(vm, 0x3000, 4, ev, KVM_IOEVENTFD_FLAG_DEASSIGN, 0));
	/* The PIO bus is another one. */
	EXPECT_EQ(0, zone(vm, KVM_REGISTER_COALESCED_MMIO, 0x60, 2, 1));
	EXPECT_EQ(0, ioeventfd(vm, 0x2000, 4, ev, KVM_IOEVENTFD_FLAG_PIO, 0));
	/* Unregistering a range inside a zone takes the whole zone. */
	EXPECT_EQ(0, zone(vm, KVM_UNREGISTER_COALESCED_MMIO, 0x100000 + 16 + 2, 2, 0));
	EXPECT_EQ(0, zone(vm, KVM_REGISTER_COALESCED_MMIO, 0x1000, 8, 0));
	EXPECT_ERRNO(ENOSPC, zone(vm, KVM_REGISTER_COALESCED_MMIO, 0x1000, 8, 0));
	close(ev);
}

struct ring_entry {
	uint64_t phys_addr;
	uint32_t len, pio;
	uint8_t data[8];
};

struct ring {
	uint32_t first, last;
	struct ring_entry e[];
};

#define RING_MAX	((4096 - 8) / 24)

/* The ring, through the vCPU mmap. */
static struct ring *vm_ring(struct vm *vm)
{
	return (struct ring *)((uint8_t *)vm->run + KVM_COALESCED_MMIO_PAGE_OFFSET * 4096);
}

GUEST_CODE64(coalesced_code,
	"	mov $0x201000, %ebx\n"
	"	mov $0x11223344, %eax\n"
	"	mov %eax, (%rbx)\n"
	"	mov %al, 0x7(%rbx)\n"
	"	mov %ax, 0xffe(%rbx)\n"
	"	out %ax, $0x60\n"
	"	mov %al, 0x1000(%rbx)\n"	/* past the zone: exit */
	/* The ring fills up: the write that finds it full exits. */
	"	xor %ecx, %ecx\n"
	"1:	mov %ecx, 0x100(%rbx)\n"
	"	inc %ecx\n"
	"	cmp $200, %ecx\n"
	"	jne 1b\n"
	"	out %al, $0x10\n"
	"	hlt\n");

TEST_F(vm, coalesced_ring)
{
	struct vm *vm = &self->vm;
	uint64_t *pd = (uint64_t *)(vm->mem + 0x102000);
	struct ring *ring = vm_ring(vm), *alone;
	uint32_t i, n;

	ASSERT_EQ(0, zone(vm->fd, KVM_REGISTER_COALESCED_MMIO, MMIO_BASE + 0x1000, 0x1000, 0));
	ASSERT_EQ(0, zone(vm->fd, KVM_REGISTER_COALESCED_MMIO, 0x60, 2, 1));
	LOAD_GUEST_CODE(vm->mem, 0x1000, coalesced_code);
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	pd[1] = MMIO_BASE | 0x83;
	EXPECT_EQ(0, ring->first);
	EXPECT_EQ(0, ring->last);

	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_MMIO, vm->run->exit_reason);
	EXPECT_EQ(MMIO_BASE + 0x2000, vm->run->mmio.phys_addr);
	EXPECT_EQ(1, vm->run->mmio.len);
	ASSERT_EQ(4, ring->last);
	EXPECT_EQ(0, ring->first);
	EXPECT_EQ(MMIO_BASE + 0x1000, ring->e[0].phys_addr);
	EXPECT_EQ(4, ring->e[0].len);
	EXPECT_EQ(0, ring->e[0].pio);
	EXPECT_EQ(0x11223344, *(uint32_t *)ring->e[0].data);
	EXPECT_EQ(MMIO_BASE + 0x1007, ring->e[1].phys_addr);
	EXPECT_EQ(1, ring->e[1].len);
	EXPECT_EQ(0x44, ring->e[1].data[0]);
	EXPECT_EQ(MMIO_BASE + 0x1ffe, ring->e[2].phys_addr);
	EXPECT_EQ(2, ring->e[2].len);
	EXPECT_EQ(0x3344, *(uint16_t *)ring->e[2].data);
	EXPECT_EQ(0x60, ring->e[3].phys_addr);
	EXPECT_EQ(2, ring->e[3].len);
	EXPECT_EQ(1, ring->e[3].pio);
	EXPECT_EQ(0x3344, *(uint16_t *)ring->e[3].data);

	/* Full: 169 entries (one is kept free), then the next write exits. */
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_MMIO, vm->run->exit_reason);
	EXPECT_EQ(MMIO_BASE + 0x1100, vm->run->mmio.phys_addr);
	n = RING_MAX - 1 - 4;			/* the loop's writes in the ring */
	EXPECT_EQ(n, *(uint32_t *)vm->run->mmio.data);
	EXPECT_EQ(RING_MAX - 1, ring->last);
	for (i = 0; i < n; i++) {
		EXPECT_EQ(i, *(uint32_t *)ring->e[4 + i].data);
		if (i != *(uint32_t *)ring->e[4 + i].data)
			break;
	}
	/* Userspace drains it: the guest goes on without exits, wrapping. */
	ring->first = ring->last;
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x10, vm->run->io.port);
	EXPECT_EQ((RING_MAX - 1 + 200 - n - 1) % RING_MAX, ring->last);
	EXPECT_EQ(n + 1, *(uint32_t *)ring->e[RING_MAX - 1].data);
	EXPECT_EQ(199, *(uint32_t *)ring->e[(ring->last + RING_MAX - 1) % RING_MAX].data);
	/* The same page, mapped alone at its offset. */
	alone = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu,
		     KVM_COALESCED_MMIO_PAGE_OFFSET * 4096);
	ASSERT_NE(MAP_FAILED, alone);
	EXPECT_EQ(ring->last, alone->last);
	EXPECT_EQ(0, memcmp(ring, alone, 4096));
	munmap(alone, 4096);
}

/*
 * A page the kernel writes for the guest (its kvmclock page) is dirty in
 * a dirty-logged slot, as the guest's own writes are.
 */
GUEST_CODE64(dirty_clock_code,
	"	mov $0x4b564d01, %ecx\n"	/* MSR_KVM_SYSTEM_TIME_NEW */
	"	mov $0x401001, %eax\n"		/* the second page of slot 1, enabled */
	"	xor %edx, %edx\n"
	"	wrmsr\n"
	"	out %al, $0x10\n"
	"	hlt\n");

TEST_F(vm, kernel_writes_are_dirty)
{
	struct vm *vm = &self->vm;
	uint8_t *extra = mmap(NULL, 0x4000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct kvm_userspace_memory_region r = {
		.slot = 1, .flags = KVM_MEM_LOG_DIRTY_PAGES, .guest_phys_addr = 0x400000,
		.memory_size = 0x4000, .userspace_addr = (uintptr_t)extra,
	};
	uint64_t bitmap[1] = { ~0ULL };
	struct kvm_dirty_log log = { .slot = 1, .dirty_bitmap = bitmap };

	ASSERT_NE(MAP_FAILED, extra);
	ASSERT_EQ(0, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r));
	ASSERT_EQ(0, ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log));
	EXPECT_EQ(0, bitmap[0]);
	LOAD_GUEST_CODE(vm->mem, 0x1000, dirty_clock_code);
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_NE(0, *(uint32_t *)(extra + 0x1000));	/* the clock's version */
	ASSERT_EQ(0, ioctl(vm->fd, KVM_GET_DIRTY_LOG, &log));
	EXPECT_EQ(2, bitmap[0]);
	munmap(extra, 0x4000);
}

TEST_HARNESS_MAIN

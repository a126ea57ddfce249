// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_GET_STATS_FD on VM and vCPU fds: the binary statistics files with
 * KVM's documented layout (api.rst); the nested page table's leaves by size
 * (guest memory from a 2 MiB huge page is mapped with one 2 MiB leaf,
 * memory that cannot be is mapped in 4 KiB pages); exits counted by kind.
 */
#include <stdio.h>
#include <sys/mman.h>

#include "harness.h"
#include "vm.h"
#include "stats.h"
#include "guest_code.h"

#define HUGE	(2UL << 20)

VM_FIXTURE(vm)

TEST_F(vm, stats_fd_layout)
{
	struct stats s;
	struct kvm_stats_desc *d;
	char id[64] = "", want[64];
	const char *names[] = { "pages_4k", "pages_2m", "pages_1g" };
	unsigned int i;

	ASSERT_EQ(1, ioctl(open_device(), KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD)) TH_LOG("KVM_CAP_BINARY_STATS_FD");
	ASSERT_EQ(0, stats_open(&s, self->vm.fd));
	EXPECT_EQ(0, s.h.flags);
	EXPECT_EQ(KVM_STATS_NAME_SIZE, s.h.name_size);
	EXPECT_EQ(sizeof(s.h), s.h.id_offset);
	EXPECT_LE(s.h.id_offset + s.h.name_size, s.h.desc_offset);
	EXPECT_LE(s.h.desc_offset + s.h.num_desc * (sizeof(*d) + s.h.name_size), s.h.data_offset);
	/* The id is "kvm-<pid of the VM's creator>". */
	ASSERT_EQ(sizeof(id) - 16, (size_t)pread(s.fd, id, sizeof(id) - 16, s.h.id_offset));
	snprintf(want, sizeof(want), "kvm-%d", getpid());
	EXPECT_STREQ(want, id);
	for (i = 0; i < 3; i++) {
		d = stats_desc(&s, names[i]);
		ASSERT_NE(NULL, d) TH_LOG("no %s", names[i]);
		EXPECT_EQ(KVM_STATS_TYPE_INSTANT, d->flags & KVM_STATS_TYPE_MASK);
		EXPECT_EQ(KVM_STATS_UNIT_NONE, d->flags & KVM_STATS_UNIT_MASK);
		EXPECT_EQ(1, d->size);
		EXPECT_EQ(0, d->offset % 8);
	}
	/* KVM's generic VM counters of remote TLB flushes (rkvm's: stress_test). */
	for (i = 0; i < 2; i++) {
		const char *flushes[] = { "remote_tlb_flush_requests", "remote_tlb_flush" };

		d = stats_desc(&s, flushes[i]);
		ASSERT_NE(NULL, d) TH_LOG("no %s", flushes[i]);
		EXPECT_EQ(KVM_STATS_TYPE_CUMULATIVE, d->flags & KVM_STATS_TYPE_MASK);
		EXPECT_EQ(1, d->size);
	}
	/* Read-only: writing is EBADF; read() moves the file position. */
	EXPECT_EQ(O_RDONLY, fcntl(s.fd, F_GETFL) & O_ACCMODE);
	EXPECT_ERRNO(EBADF, write(s.fd, id, 1));
	EXPECT_EQ(4, read(s.fd, id, 4));
	EXPECT_EQ(4, lseek(s.fd, 0, SEEK_CUR));
	/* Nothing mapped before the guest runs. */
	EXPECT_EQ(0, stats_value(&s, "pages_2m"));
	stats_close(&s);
}

/* Makes sure n huge pages of 2 MiB can be had; false if not. */
static bool reserve_huge_pages(int n)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "r+");
	int have = 0;

	if (!f)
		return false;
	if (fscanf(f, "%d", &have) == 1 && have < n) {
		rewind(f);
		fprintf(f, "%d\n", n);
		fflush(f);
		rewind(f);
		if (fscanf(f, "%d", &have) != 1)
			have = 0;
	}
	fclose(f);
	return have >= n;
}

/*
 * 64-bit guest: writes the first and reads the last 4 KiB page of a slot
 * backed by one huge page, at guest physical 2 MiB; a second slot backed by
 * the same kind of page but at a guest address that is not 2 MiB-congruent
 * to it (4 KiB off) must fall back to 4 KiB leaves.
 */
GUEST_CODE64(huge_page_code,
	"	mov $0x200000, %rdi\n"		/* slot 1: the huge page */
	"	movq $0x1234, (%rdi)\n"		/* its first 4 KiB */
	"	mov 0x1ff000(%rdi), %rax\n"	/* its last */
	"	out %al, $0x10\n"
	"	mov 0x600000, %rbx\n"		/* slot 2, misaligned */
	"	hlt\n");

TEST_F(vm, huge_page_is_one_2m_leaf)
{
	struct vm *vm = &self->vm;
	uint64_t *pd = (uint64_t *)(vm->mem + 0x102000);
	uint8_t *huge, *huge2;
	struct kvm_userspace_memory_region r = {
		.slot = 1, .guest_phys_addr = HUGE, .memory_size = HUGE,
	};
	struct kvm_regs regs;
	struct stats s;
	uint64_t before;

	if (!reserve_huge_pages(2))
		SKIP(return, "no 2 MiB huge pages (CONFIG_HUGETLBFS, /proc/sys/vm/nr_hugepages)");
	/* Leaves of the nested page table: with rkvm, NPT whatever the module's default. */
	vm_destroy(vm);
	ASSERT_EQ(0, vm_create_mmu(vm, testing_rkvm() ? RKVM_MMU_TDP : 0));
	huge = mmap(NULL, HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	huge2 = mmap(NULL, HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	ASSERT_NE(MAP_FAILED, huge);
	ASSERT_NE(MAP_FAILED, huge2);
	huge[HUGE - 4096] = 0x5a;
	huge2[4096] = 0xa5;
	r.userspace_addr = (uintptr_t)huge;
	ASSERT_EQ(0, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r));
	/* Slot 2: guest 0x5ff000 is the huge page's start, so 0x600000 is 4 KiB into it. */
	r = (struct kvm_userspace_memory_region) {
		.slot = 2, .guest_phys_addr = 3 * HUGE - 4096, .memory_size = HUGE,
		.userspace_addr = (uintptr_t)huge2,
	};
	ASSERT_EQ(0, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r));

	LOAD_GUEST_CODE(vm->mem, 0x1000, huge_page_code);
	ASSERT_EQ(0, vm_long_mode(vm, 0x1000));
	pd[1] = HUGE | 0x83;
	pd[2] = 2 * HUGE | 0x83;
	pd[3] = 3 * HUGE | 0x83;
	ASSERT_EQ(0, stats_open(&s, vm->fd));
	before = stats_value(&s, "pages_2m");
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	EXPECT_EQ(0x10, vm->run->io.port);
	EXPECT_EQ(0x5a, *vm_pio_data(vm));
	EXPECT_EQ(0x1234, *(uint64_t *)huge);
	EXPECT_LT(before, stats_value(&s, "pages_2m")) TH_LOG("the huge page is not one 2 MiB leaf");

	/* The misaligned slot works, in 4 KiB pages. */
	before = stats_value(&s, "pages_2m");
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0xa5, regs.rbx & 0xff);
	EXPECT_EQ(before, stats_value(&s, "pages_2m"));
	EXPECT_LT(0, stats_value(&s, "pages_4k"));

	/* Deleting the slot unmaps its leaf. */
	before = stats_value(&s, "pages_2m");
	r = (struct kvm_userspace_memory_region) { .slot = 1 };
	ASSERT_EQ(0, ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r));
	EXPECT_GT(before, stats_value(&s, "pages_2m"));
	stats_close(&s);
	munmap(huge, HUGE);
	munmap(huge2, HUGE);
}

/* N OUTs give N I/O exits, a HLT one halt exit, as in KVM. */
GUEST_CODE16(five_outs_code,
	"	.rept 5\n"
	"	out %al, $0x10\n"
	"	.endr\n"
	"	hlt\n");

TEST_F(vm, vcpu_stats_count_exits)
{
	struct vm *vm = &self->vm;
	struct stats s;
	char id[64] = "", want[64];
	uint64_t io, halt, exits;
	int i;

	ASSERT_EQ(0, stats_open(&s, vm->vcpu));
	ASSERT_EQ(sizeof(id) - 16, (size_t)pread(s.fd, id, sizeof(id) - 16, s.h.id_offset));
	snprintf(want, sizeof(want), "kvm-%d/vcpu-0", getpid());
	EXPECT_STREQ(want, id);
	ASSERT_NE(NULL, stats_desc(&s, "io_exits"));
	EXPECT_EQ(KVM_STATS_TYPE_CUMULATIVE, stats_desc(&s, "io_exits")->flags & KVM_STATS_TYPE_MASK);
	io = stats_value(&s, "io_exits");
	halt = stats_value(&s, "halt_exits");
	exits = stats_value(&s, "exits");
	LOAD_GUEST_CODE(vm->mem, 0x1000, five_outs_code);
	ASSERT_EQ(0, vm_real_mode(vm, 0x1000));
	for (i = 0; i < 5; i++) {
		ASSERT_EQ(0, vm_run(vm));
		ASSERT_EQ(KVM_EXIT_IO, vm->run->exit_reason);
	}
	ASSERT_EQ(0, vm_run(vm));
	ASSERT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
	EXPECT_EQ(io + 5, stats_value(&s, "io_exits"));
	EXPECT_EQ(halt + 1, stats_value(&s, "halt_exits"));
	EXPECT_LE(exits + 6, stats_value(&s, "exits"));
	stats_close(&s);
}

TEST_HARNESS_MAIN

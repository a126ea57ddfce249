// SPDX-License-Identifier: GPL-2.0
/*
 * Teardown and isolation: many VMs created and destroyed with the memory
 * coming back; guest memory unmapped by userspace while the vCPU runs;
 * the module refusing to unload while a VM exists; a VM fd taken by
 * another process (its VM ioctls fail with EIO, as in KVM); a guest that
 * cannot reach host memory outside its slot; the device's file mode.
 */
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "harness.h"
#include "vm.h"
#include "guest_code.h"

static long mem_available_kib(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[128];
	long kib = -1;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

/*
 * How many VMs create_destroy_cycles_give_memory_back makes: 1000, or
 * $RKVM_VM_CYCLES (the runner asks for fewer under the debug kernel, where
 * each cycle costs about 16 times as much and kmemleak finds leaks of any
 * size besides).
 */
static int vm_cycles(void)
{
	const char *env = getenv("RKVM_VM_CYCLES");
	int n = env ? atoi(env) : 0;

	return n > 0 ? n : 1000;
}

/*
 * Many VMs (1000 by default), each with a slot, a vCPU that runs once,
 * closed in varying order: MemAvailable ends where it started (within
 * 8 MiB: page cache and slab caches move on their own). With 1000 cycles a
 * leak of 8 KiB per VM shows.
 */
GUEST_CODE16(out_hlt_code,
	"	out %al, $0x10\n"
	"	hlt\n");

TEST(create_destroy_cycles_give_memory_back)
{
	int i, cycles = vm_cycles();
	long before = 0, after;

	/* One round first, so that caches the first VM fills are warm. */
	for (i = 0; i < cycles + 1; i++) {
		struct vm vm;
		int r = vm_create(&vm);

		if (r == -ENODEV && testing_rkvm())
			SKIP(return, NO_BACKEND);
		ASSERT_EQ(0, r);
		LOAD_GUEST_CODE(vm.mem, 0x1000, out_hlt_code);
		ASSERT_EQ(0, vm_real_mode(&vm, 0x1000));
		ASSERT_EQ(0, vm_run(&vm));
		if (i % 2) {			/* the VM before its vCPU */
			close(vm.fd);
			vm.fd = -1;
		}
		vm_destroy(&vm);
		if (i == 0)
			before = mem_available_kib();
	}
	after = mem_available_kib();
	TH_LOG("MemAvailable: %ld kB before, %ld kB after %d VMs", before, after, cycles);
	EXPECT_LT(before - after, 8 * 1024);
}

struct unmapper {
	uint8_t *mem;
	int done;
};

static void *unmap_later(void *arg)
{
	struct unmapper *u = arg;

	usleep(50000);
	munmap(u->mem, GUEST_MEM_SIZE);
	__atomic_store_n(&u->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * Userspace unmaps the guest's memory while the vCPU writes to it in a
 * loop: the host is unharmed (the pages the guest reaches stay pinned until
 * the slot goes), and the guest goes on until its next exit.
 */
GUEST_CODE16(write_loop_code,
	"0:	mov $0, %cx\n"
	"1:	mov %cx, 0x3000\n"		/* 65536 writes */
	"	inc %cx\n"
	"	jnz 1b\n"
	"	out %al, $0x10\n"		/* then an exit */
	"	jmp 0b\n");

TEST(guest_memory_unmapped_while_running)
{
	struct unmapper u;
	struct vm vm;
	pthread_t t;
	int r = vm_create(&vm), runs = 0, after = 0;

	if (r == -ENODEV && testing_rkvm())
		SKIP(return, NO_BACKEND);
	ASSERT_EQ(0, r);
	LOAD_GUEST_CODE(vm.mem, 0x1000, write_loop_code);
	ASSERT_EQ(0, vm_real_mode(&vm, 0x1000));
	u.mem = vm.mem;
	u.done = 0;
	ASSERT_EQ(0, pthread_create(&t, NULL, unmap_later, &u));
	while (after < 3) {
		int unmapped = __atomic_load_n(&u.done, __ATOMIC_ACQUIRE);

		if (vm_run(&vm)) {
			/*
			 * KVM follows the unmap (MMU notifiers) and fails the
			 * access with EFAULT; rkvm keeps the pinned pages the
			 * guest had (Documentation/architecture.md) and goes on.
			 */
			ASSERT_FALSE(testing_rkvm()) TH_LOG("KVM_RUN: %s", strerror(errno));
			ASSERT_EQ(EFAULT, errno);
			/*
			 * The MMU notifier runs inside munmap(): KVM_RUN can
			 * fail before the unmapping thread has noted that it
			 * returned (a flake seen under load). Wait for it.
			 */
			for (int i = 0; i < 5000 && !__atomic_load_n(&u.done, __ATOMIC_ACQUIRE); i++)
				usleep(1000);
			ASSERT_TRUE(u.done);
			break;
		}
		ASSERT_EQ(KVM_EXIT_IO, vm.run->exit_reason);
		runs++;
		after += unmapped;
	}
	pthread_join(t, NULL);
	vm.mem = NULL;		/* already unmapped */
	close(vm.vcpu);
	close(vm.fd);
	close(vm.sys);
	munmap(vm.run, vm.run_size);
	TH_LOG("%d rounds of the guest, %d of them after munmap", runs, after);
}

/* rmmod while a VM exists: EBUSY (or EWOULDBLOCK); afterwards it could. */
TEST(module_stays_while_a_vm_exists)
{
	struct vm vm;
	int r;

	if (!testing_rkvm())
		SKIP(return, "about rkvm.ko");
	r = vm_create(&vm);
	if (r == -ENODEV)
		SKIP(return, NO_BACKEND);
	ASSERT_EQ(0, r);
	errno = 0;
	EXPECT_EQ(-1, syscall(SYS_delete_module, "rkvm", O_NONBLOCK));
	EXPECT_TRUE(errno == EBUSY || errno == EWOULDBLOCK) TH_LOG("errno %d", errno);
	EXPECT_EQ(KVM_API_VERSION, ioctl(vm.sys, KVM_GET_API_VERSION, 0));
	vm_destroy(&vm);
}

/*
 * A VM fd and a vCPU fd taken by another process (pidfd_getfd(), as a
 * debugger or a VMM handing a VM over would): their VM and vCPU ioctls fail
 * with EIO there (guest memory addresses belong to the creator's mm), and
 * the creator's VM is unaffected.
 */
TEST(fd_taken_by_another_process)
{
	int status, r, ready[2];
	struct vm vm;
	pid_t pid;
	char c;

	r = vm_create(&vm);
	if (r == -ENODEV && testing_rkvm())
		SKIP(return, NO_BACKEND);
	ASSERT_EQ(0, r);
	ASSERT_EQ(0, pipe(ready));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct kvm_regs regs;
		int pidfd = syscall(SYS_pidfd_open, getppid(), 0), vm_fd, vcpu_fd;

		if (pidfd < 0)
			_exit(9);
		vm_fd = syscall(SYS_pidfd_getfd, pidfd, vm.fd, 0);
		vcpu_fd = syscall(SYS_pidfd_getfd, pidfd, vm.vcpu, 0);
		if (vm_fd < 0 || vcpu_fd < 0)
			_exit(10);
		/* Closed, so that only the taken copies are used below. */
		close(vm.fd);
		close(vm.vcpu);
		if (ioctl(vm_fd, KVM_CREATE_VCPU, 1) != -1 || errno != EIO)
			_exit(11);
		if (ioctl(vcpu_fd, KVM_GET_REGS, &regs) != -1 || errno != EIO)
			_exit(12);
		if (ioctl(vcpu_fd, KVM_RUN, 0) != -1 || errno != EIO)
			_exit(13);
		_exit(write(ready[1], "x", 1) == 1 ? 0 : 14);
	}
	ASSERT_EQ(1, read(ready[0], &c, 1));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("the other process's check %d failed", WEXITSTATUS(status));
	/* Still the creator's VM. */
	vm.mem[0x1000] = 0xf4;			/* hlt */
	ASSERT_EQ(0, vm_real_mode(&vm, 0x1000));
	ASSERT_EQ(0, vm_run(&vm));
	EXPECT_EQ(KVM_EXIT_HLT, vm.run->exit_reason);
	vm_destroy(&vm);
}

/*
 * Isolation: the guest's slot sits between two canary pages of the same
 * mapping; the guest writes everywhere from 2 MiB below to 2 MiB above its
 * slot (long mode, 4 KiB steps, at offset 0x800 of each page: clear of the
 * code and page tables). Writes inside the slot land there, the ones
 * outside become MMIO exits, and the canaries are untouched.
 */
GUEST_CODE64(write_everywhere_code,
	"	mov $0x800, %rdi\n"
	"1:	movq $0x5a5a5a5a, (%rdi)\n"
	"	add $0x1000, %rdi\n"
	"	cmp $0x600000, %rdi\n"		/* up to 6 MiB */
	"	jb 1b\n"
	"	hlt\n");

TEST(guest_cannot_reach_beyond_its_slot)
{
	const size_t page = 4096, size = GUEST_MEM_SIZE;
	uint8_t *map = mmap(NULL, size + 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *slot = map + page;
	struct kvm_userspace_memory_region r = { .slot = 0, .memory_size = 0 };
	uint64_t *pd;
	unsigned long mmio = 0, i;
	struct vm vm;
	int ret;

	ASSERT_NE(MAP_FAILED, map);
	memset(map, 0xc3, page);
	memset(map + page + size, 0xc3, page);
	ret = vm_create(&vm);
	if (ret == -ENODEV && testing_rkvm())
		SKIP(return, NO_BACKEND);
	ASSERT_EQ(0, ret);
	/* Slot 0 moves into the middle of `map`, at guest physical 2 MiB. */
	r.userspace_addr = (uintptr_t)vm.mem;
	ASSERT_EQ(0, ioctl(vm.fd, KVM_SET_USER_MEMORY_REGION, &r));
	LOAD_GUEST_CODE(slot, 0x1000, write_everywhere_code);
	r = (struct kvm_userspace_memory_region) {
		.slot = 0, .guest_phys_addr = 0, .memory_size = size, .userspace_addr = (uintptr_t)slot,
	};
	ASSERT_EQ(0, ioctl(vm.fd, KVM_SET_USER_MEMORY_REGION, &r));
	/* vm_long_mode's tables live in vm.mem: point it at the new slot. */
	munmap(vm.mem, GUEST_MEM_SIZE);
	vm.mem = slot;
	ASSERT_EQ(0, vm_long_mode(&vm, 0x1000));
	pd = (uint64_t *)(slot + 0x102000);
	for (i = 1; i < 3; i++)
		pd[i] = (i << 21) | 0x83;			/* 2 MiB - 6 MiB identity */
	for (;;) {
		ASSERT_EQ(0, vm_run(&vm));
		if (vm.run->exit_reason == KVM_EXIT_HLT)
			break;
		ASSERT_EQ(KVM_EXIT_MMIO, vm.run->exit_reason);
		EXPECT_LE(size, vm.run->mmio.phys_addr);
		mmio++;
	}
	EXPECT_EQ(1024, mmio) TH_LOG("writes beyond the 2 MiB slot that exited as MMIO");
	for (i = 0; i < page; i++) {
		if (map[i] != 0xc3 || map[page + size + i] != 0xc3) {
			ASSERT_TRUE(0) TH_LOG("canary byte %lu changed", i);
		}
	}
	EXPECT_EQ(0x5a5a5a5a, *(uint32_t *)(slot + 0x1ff800));
	vm.mem = NULL;
	close(vm.vcpu);
	close(vm.fd);
	close(vm.sys);
	munmap(vm.run, vm.run_size);
	munmap(map, size + 2 * page);
}

/*
 * Access follows the device's file mode: with mode 0660 and group 4242, a
 * process of another user opens it only while in that group.
 */
TEST(device_access_follows_file_mode)
{
	const char *dev = test_device();
	struct stat st;
	int status;
	pid_t pid;

	ASSERT_EQ(0, stat(dev, &st));
	TH_LOG("%s: mode %o, uid %d, gid %d", dev, st.st_mode & 07777, st.st_uid, st.st_gid);
	EXPECT_EQ(0, st.st_mode & 0007) TH_LOG("others must not have access");
	ASSERT_EQ(0, chown(dev, 0, 4242));
	ASSERT_EQ(0, chmod(dev, 0660));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int fd;

		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			_exit(10);
		fd = open(dev, O_RDWR);
		if (fd >= 0 || errno != EACCES)
			_exit(11);
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("a user outside the group: check %d", WEXITSTATUS(status));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		gid_t kvm_group = 4242;
		int fd;

		if (setgroups(1, &kvm_group) || setgid(65534) || setuid(65534))
			_exit(10);
		fd = open(dev, O_RDWR);
		if (fd < 0)
			_exit(11);
		if (ioctl(fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
			_exit(12);
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_EQ(0, WEXITSTATUS(status)) TH_LOG("a user in the group: check %d", WEXITSTATUS(status));
	EXPECT_EQ(0, chmod(dev, st.st_mode & 07777));
	EXPECT_EQ(0, chown(dev, st.st_uid, st.st_gid));
}

TEST_HARNESS_MAIN

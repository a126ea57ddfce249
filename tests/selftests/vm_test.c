// SPDX-License-Identifier: GPL-2.0
/*
 * VM and vCPU file descriptors: every ioctl's error paths, the reset state
 * of a new vCPU, the owner-mm rule, and fds closed in every order. Each
 * errno is the one real KVM returns (the reference run checks that).
 */
#include <signal.h>
#include <sys/wait.h>

#include "harness.h"
#include "vm.h"

static int create_vm(int sys)
{
	return ioctl(sys, KVM_CREATE_VM, 0);
}

FIXTURE(fds) {
	int sys, vm;
};

FIXTURE_SETUP(fds)
{
	self->sys = open_device();
	ASSERT_LE(0, self->sys);
	self->vm = create_vm(self->sys);
	if (self->vm < 0 && errno == ENODEV && testing_rkvm())
		SKIP(return, NO_BACKEND);
	ASSERT_LE(0, self->vm) TH_LOG("KVM_CREATE_VM: %s", strerror(errno));
}

FIXTURE_TEARDOWN(fds)
{
	if (self->vm >= 0)
		close(self->vm);
	close(self->sys);
}

TEST_F(fds, create_vm_rejects_unknown_type)
{
	EXPECT_ERRNO(EINVAL, ioctl(self->sys, KVM_CREATE_VM, 0xff));
}

TEST_F(fds, vcpu_mmap_size_takes_no_argument)
{
	int size = ioctl(self->sys, KVM_GET_VCPU_MMAP_SIZE, 0);

	/* kvm_run and the PIO page at least; KVM adds the coalesced-MMIO ring. */
	EXPECT_LE(2 * getpagesize(), size);
	EXPECT_ERRNO(EINVAL, ioctl(self->sys, KVM_GET_VCPU_MMAP_SIZE, 1));
}

TEST_F(fds, unknown_vm_request_is_enotty)
{
	EXPECT_ERRNO(ENOTTY, ioctl(self->vm, _IO(KVMIO, 0xff), 0));
}

TEST_F(fds, check_extension_on_vm_fd)
{
	EXPECT_EQ(1, ioctl(self->vm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY));
	EXPECT_EQ(0, ioctl(self->vm, KVM_CHECK_EXTENSION, 0x7fffffffL));
}

TEST_F(fds, set_tss_addr_is_accepted)
{
	EXPECT_EQ(0, ioctl(self->vm, KVM_SET_TSS_ADDR, 0xfffbd000));
}

static int set_region(int vm, uint32_t slot, uint32_t flags, uint64_t gpa,
		      uint64_t size, void *hva)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .flags = flags, .guest_phys_addr = gpa,
		.memory_size = size, .userspace_addr = (uintptr_t)hva,
	};

	return ioctl(vm, KVM_SET_USER_MEMORY_REGION, &r);
}

TEST_F(fds, memory_region_rules)
{
	size_t size = 16 * getpagesize();
	uint8_t *mem = mmap(NULL, 2 * size, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(MAP_FAILED, mem);
	/* Misaligned size, guest address, host address. */
	EXPECT_ERRNO(EINVAL, set_region(self->vm, 0, 0, 0, size + 1, mem));
	EXPECT_ERRNO(EINVAL, set_region(self->vm, 0, 0, 0x100, size, mem));
	EXPECT_ERRNO(EINVAL, set_region(self->vm, 0, 0, 0, size, mem + 8));
	/* Slot ids at or above KVM_USER_MEM_SLOTS (32764); unknown flags. */
	EXPECT_ERRNO(EINVAL, set_region(self->vm, 32764, 0, 0, size, mem));
	EXPECT_ERRNO(EINVAL, set_region(self->vm, 0, 1 << 7, 0, size, mem));
	/* A kernel address is not guest memory. */
	EXPECT_ERRNO(EINVAL, set_region(self->vm, 0, 0, 0, size, (void *)0xffff888000000000UL));
	/* Deleting a slot that does not exist. */
	EXPECT_ERRNO(EINVAL, set_region(self->vm, 5, 0, 0, 0, NULL));

	ASSERT_EQ(0, set_region(self->vm, 0, 0, 0x100000, size, mem));
	/* The same again is fine; an overlapping other slot is EEXIST. */
	EXPECT_EQ(0, set_region(self->vm, 0, 0, 0x100000, size, mem));
	EXPECT_ERRNO(EEXIST, set_region(self->vm, 1, 0, 0x100000 + size - 4096, size, mem + size));
	EXPECT_ERRNO(EEXIST, set_region(self->vm, 1, 0, 0x100000 - 4096, 8192, mem + size));
	/* Touching is not overlapping. */
	EXPECT_EQ(0, set_region(self->vm, 1, 0, 0x100000 + size, size, mem + size));
	/* An existing slot cannot change size or host address... */
	EXPECT_ERRNO(EINVAL, set_region(self->vm, 0, 0, 0x100000, size / 2, mem));
	EXPECT_ERRNO(EINVAL, set_region(self->vm, 0, 0, 0x100000, size, mem + size));
	/* ...but it can move, and be deleted, and its range reused. */
	EXPECT_EQ(0, set_region(self->vm, 0, 0, 0x400000, size, mem));
	EXPECT_EQ(0, set_region(self->vm, 0, 0, 0, 0, NULL));
	EXPECT_EQ(0, set_region(self->vm, 2, 0, 0x400000, size, mem));
	/* A bad pointer to the struct itself. */
	EXPECT_ERRNO(EFAULT, ioctl(self->vm, KVM_SET_USER_MEMORY_REGION, (void *)8));
	munmap(mem, 2 * size);
}

TEST_F(fds, vcpu_ids)
{
	int a = ioctl(self->vm, KVM_CREATE_VCPU, 0);

	ASSERT_LE(0, a);
	EXPECT_ERRNO(EEXIST, ioctl(self->vm, KVM_CREATE_VCPU, 0));
	EXPECT_ERRNO(EINVAL, ioctl(self->vm, KVM_CREATE_VCPU, 4096));
	EXPECT_ERRNO(EINVAL, ioctl(self->vm, KVM_CREATE_VCPU, -1L));
	/* A vCPU request the vCPU does not know, and a foreign request type. */
	EXPECT_ERRNO(EINVAL, ioctl(a, _IO(KVMIO, 0xff), 0));
	EXPECT_ERRNO(EINVAL, ioctl(a, _IO('x', 1), 0));
	EXPECT_ERRNO(EINVAL, ioctl(a, KVM_RUN, 1));
	EXPECT_ERRNO(EFAULT, ioctl(a, KVM_GET_REGS, (void *)8));
	EXPECT_ERRNO(EFAULT, ioctl(a, KVM_SET_SREGS, (void *)8));
	close(a);
}

/* The architectural RESET state, as KVM reports it before any CPUID is set. */
TEST_F(fds, vcpu_reset_state)
{
	int vcpu = ioctl(self->vm, KVM_CREATE_VCPU, 0);
	int vcpu1 = ioctl(self->vm, KVM_CREATE_VCPU, 1);
	struct kvm_sregs s;
	struct kvm_regs r;

	ASSERT_LE(0, vcpu);
	ASSERT_LE(0, vcpu1);
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_REGS, &r));
	EXPECT_EQ(0xfff0, r.rip);
	EXPECT_EQ(2, r.rflags);
	EXPECT_EQ(0x600, r.rdx);
	EXPECT_EQ(0, r.rax | r.rbx | r.rcx | r.rsp | r.rbp | r.rsi | r.rdi);
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_SREGS, &s));
	EXPECT_EQ(0xf000, s.cs.selector);
	EXPECT_EQ(0xffff0000, s.cs.base);
	EXPECT_EQ(0xffff, s.cs.limit);
	EXPECT_EQ(1, s.cs.present);
	EXPECT_EQ(1, s.cs.s);
	EXPECT_EQ(0, s.ds.selector);
	EXPECT_EQ(0, s.ds.base);
	EXPECT_EQ(0xffff, s.ds.limit);
	EXPECT_EQ(3, s.ds.type);
	EXPECT_EQ(0xffff, s.gdt.limit);
	EXPECT_EQ(0xffff, s.idt.limit);
	EXPECT_EQ(0x60000010, s.cr0);
	EXPECT_EQ(0, s.cr3 | s.cr4 | s.efer | s.cr8);
	EXPECT_EQ(0xfee00900, s.apic_base);		/* vCPU 0 is the BSP */
	ASSERT_EQ(0, ioctl(vcpu1, KVM_GET_SREGS, &s));
	EXPECT_EQ(0xfee00800, s.apic_base);
	close(vcpu1);
	close(vcpu);
}

TEST_F(fds, set_sregs_validates)
{
	int vcpu = ioctl(self->vm, KVM_CREATE_VCPU, 0);
	struct kvm_sregs s, bad;

	ASSERT_LE(0, vcpu);
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_SREGS, &s));
	bad = s;
	bad.cr0 = (1u << 29);				/* NW without CD */
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_SREGS, &bad));
	bad = s;
	bad.cr0 = 0x80000000;				/* PG without PE */
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_SREGS, &bad));
	bad = s;
	bad.efer = 1 << 10;				/* LMA outside long mode */
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_SREGS, &bad));
	bad = s;
	bad.cs.l = 1;					/* 64-bit CS outside long mode */
	EXPECT_ERRNO(EINVAL, ioctl(vcpu, KVM_SET_SREGS, &bad));
	/* A valid state round-trips. */
	s.cr0 = 0x11;
	s.ds.base = 0x12340;
	s.ds.selector = 0x1234;
	EXPECT_EQ(0, ioctl(vcpu, KVM_SET_SREGS, &s));
	ASSERT_EQ(0, ioctl(vcpu, KVM_GET_SREGS, &bad));
	EXPECT_EQ(0x11, bad.cr0);
	EXPECT_EQ(0x12340, bad.ds.base);
	EXPECT_EQ(0x1234, bad.ds.selector);
	close(vcpu);
}

/* VM and vCPU ioctls from another process (another mm) fail with EIO. */
TEST_F(fds, foreign_mm_is_eio)
{
	int vcpu = ioctl(self->vm, KVM_CREATE_VCPU, 0);
	int status;
	pid_t pid;

	ASSERT_LE(0, vcpu);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct kvm_regs r;
		int bad = 0;

		bad |= ioctl(self->vm, KVM_CREATE_VCPU, 1) != -1 || errno != EIO;
		bad |= ioctl(vcpu, KVM_GET_REGS, &r) != -1 || errno != EIO;
		_exit(bad);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status));
	EXPECT_EQ(0, WEXITSTATUS(status));
	/* The owner still can. */
	EXPECT_LE(0, ioctl(self->vm, KVM_CREATE_VCPU, 1));
	close(vcpu);
}

/*
 * Fds closed in every order: a vCPU keeps its VM alive after the VM fd and
 * /dev fd are gone, and still runs its guest.
 */
TEST(close_vm_and_sys_before_vcpu)
{
	struct vm vm;
	int r = vm_create(&vm);

	if (r == -ENODEV && testing_rkvm())
		SKIP(return, NO_BACKEND);
	ASSERT_EQ(0, r);
	vm.mem[0x1000] = 0xf4;				/* hlt */
	ASSERT_EQ(0, vm_real_mode(&vm, 0x1000));
	ASSERT_EQ(0, close(vm.fd));
	ASSERT_EQ(0, close(vm.sys));
	vm.fd = vm.sys = -1;
	ASSERT_EQ(0, vm_run(&vm));
	EXPECT_EQ(KVM_EXIT_HLT, vm.run->exit_reason);
	vm_destroy(&vm);
}

TEST(close_vcpu_before_unmapping_run)
{
	struct vm vm;
	int r = vm_create(&vm);

	if (r == -ENODEV && testing_rkvm())
		SKIP(return, NO_BACKEND);
	ASSERT_EQ(0, r);
	ASSERT_EQ(0, close(vm.vcpu));
	vm.vcpu = -1;
	/* The mapping keeps the page: still readable. */
	EXPECT_EQ(0, vm.run->exit_reason);
	vm_destroy(&vm);
}

TEST_HARNESS_MAIN

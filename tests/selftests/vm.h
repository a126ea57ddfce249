/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A minimal KVM client for the selftests: a VM with one memory slot, one
 * vCPU and its kvm_run mmap, on $RKVM_DEVICE. Guest code is copied into the
 * slot; registers are set as a test needs them.
 */
#ifndef RKVM_SELFTEST_VM_H
#define RKVM_SELFTEST_VM_H

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <linux/kvm.h>

#include "common.h"

#define GUEST_MEM_SIZE	(2UL << 20)	/* 2 MiB at guest physical 0 */

struct vm {
	int sys, fd, vcpu;
	uint8_t *mem;
	struct kvm_run *run;
	size_t run_size;
};

/*
 * Gives the vCPU the CPUID the device supports, as real clients do: KVM
 * allows CR4.PAE and friends only when the guest's CPUID has them. A device
 * without KVM_GET_SUPPORTED_CPUID (rkvm, for now) is left as it is.
 */
static inline void vm_set_supported_cpuid(struct vm *vm)
{
	struct {
		struct kvm_cpuid2 head;
		struct kvm_cpuid_entry2 entries[100];
	} cpuid = { .head.nent = 100 };

	if (ioctl(vm->sys, KVM_GET_SUPPORTED_CPUID, &cpuid) == 0)
		ioctl(vm->vcpu, KVM_SET_CPUID2, &cpuid);
}

/*
 * rkvm's own capability (module/pure/ioctl.rs): KVM_CHECK_EXTENSION gives the
 * MMU modes offered, KVM_ENABLE_CAP on a VM chooses one before its first
 * vCPU. Real KVM answers 0 (it chooses with kvm_amd's npt parameter).
 */
#define KVM_CAP_RKVM_MMU	0x524b0001
#define RKVM_MMU_TDP		(1 << 0)
#define RKVM_MMU_SHADOW		(1 << 1)

/* KVM_ENABLE_CAP(KVM_CAP_RKVM_MMU, mode) on a VM fd: 0 or -errno. */
static inline int vm_choose_mmu(int vm_fd, uint64_t mode)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_RKVM_MMU, .args = { mode } };

	return ioctl(vm_fd, KVM_ENABLE_CAP, &cap) ? -errno : 0;
}

/* vm_create_full()'s irqchip: none, or KVM_CREATE_IRQCHIP's. */
#define VM_NO_IRQCHIP		(-1)
#define VM_FULL_IRQCHIP		(-2)

/*
 * Creates VM, slot 0 over [0, GUEST_MEM_SIZE) and vCPU 0, with the MMU mode
 * `mmu` (0: the device's default) and an in-kernel irqchip: `irqchip` is
 * VM_NO_IRQCHIP, VM_FULL_IRQCHIP (KVM_CREATE_IRQCHIP: PIC, IOAPIC and
 * local APICs) or, if not negative, the split irqchip (KVM_CAP_SPLIT_IRQCHIP
 * with that many IOAPIC pins: every vCPU then has an in-kernel local APIC);
 * 0 or -errno.
 */
static inline int vm_create_full(struct vm *vm, uint64_t mmu, int irqchip)
{
	struct kvm_userspace_memory_region region;
	int size;

	memset(vm, 0, sizeof(*vm));
	vm->sys = open_device();
	if (vm->sys < 0)
		return -errno;
	vm->fd = ioctl(vm->sys, KVM_CREATE_VM, 0);
	if (vm->fd < 0)
		return -errno;
	if (mmu && vm_choose_mmu(vm->fd, mmu))
		return -errno;
	if (irqchip >= 0) {
		struct kvm_enable_cap cap = {
			.cap = KVM_CAP_SPLIT_IRQCHIP, .args = { irqchip },
		};

		if (ioctl(vm->fd, KVM_ENABLE_CAP, &cap))
			return -errno;
	}
	if (irqchip == VM_FULL_IRQCHIP && ioctl(vm->fd, KVM_CREATE_IRQCHIP, 0))
		return -errno;
	/*
	 * As QEMU does: three pages of guest physical address space for the
	 * TSS kvm_intel needs to run real mode in virtual-8086 mode (without
	 * unrestricted guest, e.g. ept=0). rkvm accepts and needs none.
	 */
	if (ioctl(vm->fd, KVM_SET_TSS_ADDR, 0xfffbd000UL))
		return -errno;
	vm->mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (vm->mem == MAP_FAILED)
		return -errno;
	region = (struct kvm_userspace_memory_region) {
		.slot = 0,
		.guest_phys_addr = 0,
		.memory_size = GUEST_MEM_SIZE,
		.userspace_addr = (uintptr_t)vm->mem,
	};
	if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &region))
		return -errno;
	vm->vcpu = ioctl(vm->fd, KVM_CREATE_VCPU, 0);
	if (vm->vcpu < 0)
		return -errno;
	vm_set_supported_cpuid(vm);
	size = ioctl(vm->sys, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (size < 0)
		return -errno;
	vm->run_size = size;
	vm->run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vm->vcpu, 0);
	if (vm->run == MAP_FAILED)
		return -errno;
	return 0;
}

/* A VM in the MMU mode `mmu` (0: the device's default). */
static inline int vm_create_mmu(struct vm *vm, uint64_t mmu)
{
	return vm_create_full(vm, mmu, VM_NO_IRQCHIP);
}

/* A VM in the device's default MMU mode. */
static inline int vm_create(struct vm *vm)
{
	return vm_create_mmu(vm, 0);
}

static inline void vm_destroy(struct vm *vm)
{
	if (vm->run && vm->run != MAP_FAILED)
		munmap(vm->run, vm->run_size);
	if (vm->mem && vm->mem != MAP_FAILED)
		munmap(vm->mem, GUEST_MEM_SIZE);
	if (vm->vcpu > 0)
		close(vm->vcpu);
	if (vm->fd > 0)
		close(vm->fd);
	if (vm->sys > 0)
		close(vm->sys);
}

/*
 * Slot 0 shrinks to [0, size) (deleted and added again, as a slot cannot
 * change size): guest physical memory above it is free for other slots,
 * or left without RAM. 0 or -errno.
 */
static inline int vm_resize_slot0(struct vm *vm, uint64_t size)
{
	struct kvm_userspace_memory_region r = {
		.slot = 0, .memory_size = 0, .userspace_addr = (uintptr_t)vm->mem,
	};

	if (ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r))
		return -errno;
	r.memory_size = size;
	return ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r) ? -errno : 0;
}

/* RIP, RSP and a clean RFLAGS; every other GPR zero. */
static inline int vm_set_entry(struct vm *vm, uint64_t rip, uint64_t rsp)
{
	struct kvm_regs regs;

	memset(&regs, 0, sizeof(regs));
	regs.rip = rip;
	regs.rsp = rsp;
	regs.rflags = 2;
	return ioctl(vm->vcpu, KVM_SET_REGS, &regs) ? -errno : 0;
}

/*
 * A kselftest fixture `name` holding one VM from vm_create(), skipped where
 * rkvm has no backend. Include harness.h first.
 */
#define VM_FIXTURE(name)						\
FIXTURE(name) {								\
	struct vm vm;							\
};									\
FIXTURE_SETUP(name)							\
{									\
	int r = vm_create(&self->vm);					\
									\
	if (r == -ENODEV && testing_rkvm())				\
		SKIP(return, NO_BACKEND);				\
	ASSERT_EQ(0, r) TH_LOG("creating a VM on %s: %s", test_device(), strerror(-r)); \
}									\
FIXTURE_TEARDOWN(name)							\
{									\
	vm_destroy(&self->vm);						\
}

/* Real mode with all segments based at 0, code at rip, stack below 0x8000. */
static inline int vm_real_mode(struct vm *vm, uint64_t rip)
{
	struct kvm_sregs sregs;

	if (ioctl(vm->vcpu, KVM_GET_SREGS, &sregs))
		return -errno;
	sregs.cs.base = 0;
	sregs.cs.selector = 0;
	if (ioctl(vm->vcpu, KVM_SET_SREGS, &sregs))
		return -errno;
	return vm_set_entry(vm, rip, 0x8000);
}

/*
 * 64-bit mode on the caller's page tables at cr3: flat 64-bit code and data
 * segments set directly in the segment caches (no GDT needed), code at rip.
 */
static inline int vm_long_mode_cr3(struct vm *vm, uint64_t rip, uint64_t cr3)
{
	struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = 8, .type = 0xb,
		.present = 1, .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1,
	};
	struct kvm_segment data = code;
	struct kvm_sregs sregs;

	if (ioctl(vm->vcpu, KVM_GET_SREGS, &sregs))
		return -errno;
	data.type = 3;
	data.l = 0;
	data.selector = 16;
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.cr3 = cr3;
	sregs.cr4 = 1 << 5;				/* PAE */
	sregs.cr0 = 0x80000011;				/* PG | ET | PE */
	sregs.efer = (1 << 8) | (1 << 10);		/* LME | LMA */
	if (ioctl(vm->vcpu, KVM_SET_SREGS, &sregs))
		return -errno;
	return vm_set_entry(vm, rip, 0x80000);
}

/*
 * 64-bit mode: identity map of the first 2 MiB with one large page (tables
 * at 0x100000), code at rip.
 */
static inline int vm_long_mode(struct vm *vm, uint64_t rip)
{
	uint64_t *pml4 = (uint64_t *)(vm->mem + 0x100000);
	uint64_t *pdpt = (uint64_t *)(vm->mem + 0x101000);
	uint64_t *pd = (uint64_t *)(vm->mem + 0x102000);

	pml4[0] = 0x101000 | 3;
	pdpt[0] = 0x102000 | 3;
	pd[0] = 0 | 0x83;	/* present, writable, 2 MiB page */
	return vm_long_mode_cr3(vm, rip, 0x100000);
}

static inline int vm_run(struct vm *vm)
{
	return ioctl(vm->vcpu, KVM_RUN, 0);
}

static inline uint8_t *vm_pio_data(struct vm *vm)
{
	return (uint8_t *)vm->run + vm->run->io.data_offset;
}

static inline uint64_t vm_rip(struct vm *vm)
{
	struct kvm_regs regs;

	if (ioctl(vm->vcpu, KVM_GET_REGS, &regs))
		return ~0ULL;
	return regs.rip;
}

#endif

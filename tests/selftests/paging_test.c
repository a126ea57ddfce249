// SPDX-License-Identifier: GPL-2.0
/*
 * Guests that use their own page tables the way operating systems do, run
 * in each MMU mode: with nested paging the processor walks the guest's
 * tables; with shadow paging rkvm does, so every rule below is rkvm's code.
 * The guest remaps a page (INVLPG, CR3 reload), switches CR3 between two
 * address spaces, uses 2 MiB pages, 32-bit and PAE paging, and takes and
 * handles its own page faults (not present, read-only, no-execute,
 * reserved bit, CR0.WP, a user-mode access to a kernel page), with the
 * accessed and dirty bits checked as the processor sets them; and it
 * touches more of its address space than a shadow page table may hold.
 *
 * Variants: the device's default MMU, and (rkvm only) each mode chosen per
 * VM with KVM_CAP_RKVM_MMU.
 */
#include "harness.h"
#include "vm.h"
#include "stats.h"
#include "guest_code.h"

/*
 * Guest code, copied to guest physical 0x1000 (CODE); the tests enter it at
 * its labels (GUEST()).
 */
extern const uint8_t pg_pf_handler[], pg_write[], pg_read[], pg_jump[], pg_remap[], pg_cr3[],
	pg_large[], pg_nx_code[], pg_nx_code_end[], pg_read32[], pg_to_user[], pg_regions[];
GUEST_CODE64(pg_code,
	/*
	 * #PF handler: reports the error code (port 0x31) and CR2 (0x32), stores
	 * the fix the test prepared (%rcx at (%rbx)), invalidates (%rdx) and
	 * returns to retry the access.
	 */
	"pg_pf_handler:\n"
	"	pop %rax\n"
	"	out %eax, $0x31\n"
	"	mov %cr2, %rax\n"
	"	out %eax, $0x32\n"
	"	mov %rcx, (%rbx)\n"
	"	invlpg (%rdx)\n"
	"	iretq\n"
	/* Writes (%rdx), reads it back. */
	"pg_write:\n"
	"	movl $0xabcd, (%rdx)\n"
	"	mov (%rdx), %eax\n"
	"	out %eax, $0x30\n"
	"	hlt\n"
	"pg_read:\n"
	"	mov (%rdx), %eax\n"
	"	out %eax, $0x30\n"
	"	hlt\n"
	"pg_jump:\n"
	"	jmp *%rdx\n"
	/*
	 * Remap: reads (%rdx), points its PTE (%r8) at another page (%r9),
	 * INVLPG, reads; then at a third (%r10) and flushes by reloading CR3.
	 */
	"pg_remap:\n"
	"	mov (%rdx), %eax\n"
	"	out %eax, $0x30\n"
	"	mov %r9, (%r8)\n"
	"	invlpg (%rdx)\n"
	"	mov (%rdx), %eax\n"
	"	out %eax, $0x30\n"
	"	mov %r10, (%r8)\n"
	"	mov %cr3, %rax\n"
	"	mov %rax, %cr3\n"
	"	mov (%rdx), %eax\n"
	"	out %eax, $0x30\n"
	"	hlt\n"
	/* Two address spaces (CR3 %r8 and %r9) map (%rdx) differently. */
	"pg_cr3:\n"
	"	mov (%rdx), %eax\n"
	"	out %eax, $0x30\n"
	"	mov %r9, %cr3\n"
	"	mov (%rdx), %eax\n"
	"	out %eax, $0x30\n"
	"	mov %r8, %cr3\n"
	"	mov (%rdx), %eax\n"
	"	out %eax, $0x30\n"
	"	mov %cr3, %rax\n"
	"	out %eax, $0x30\n"
	"	hlt\n"
	/* A 2 MiB page: its first and last 4 KiB. */
	"pg_large:\n"
	"	mov (%rdx), %eax\n"
	"	out %eax, $0x30\n"
	"	mov 0x1ff000(%rdx), %eax\n"
	"	out %eax, $0x30\n"
	"	hlt\n"
	/*
	 * To user mode (CPL 3, IOPL 3 so that OUT works there) with the stack
	 * at %rsi: reads (%rdx) and reports it, then spins.
	 */
	"pg_to_user:\n"
	"	push $0x23\n"
	"	push %rsi\n"
	"	push $0x3002\n"
	"	push $0x1b\n"
	"	lea 1f(%rip), %rax\n"
	"	push %rax\n"
	"	iretq\n"
	"1:	mov (%rdx), %eax\n"
	"	out %eax, $0x30\n"
	"	jmp .\n"
	/* Reads the first word of %rcx regions of 2 MiB from %rdx on. */
	"pg_regions:\n"
	"1:	mov (%rdx), %eax\n"
	"	add $0x200000, %rdx\n"
	"	loop 1b\n"
	"	out %eax, $0x30\n"
	"	hlt\n"
	/* Copied to a no-execute page. */
	"pg_nx_code:\n"
	"	mov $0x77, %eax\n"
	"	out %eax, $0x30\n"
	"	hlt\n"
	"pg_nx_code_end:\n"
	"	.code32\n"
	"pg_read32:\n"
	"	mov (%edx), %eax\n"
	"	out %eax, $0x30\n"
	"	hlt\n");

#define CODE		0x1000
#define GUEST(sym)	(CODE + (uint64_t)((sym) - pg_code))
#define STACK		0x8000
#define IDT		0x9000
#define GDT		0xa000
#define TSS		0xb000
#define USER_STACK	0x7000		/* user mode's stack top */
#define KERNEL_STACK	0x6000		/* TSS.RSP0: the handler's stack from user mode */
/* Address space A: PML4, PDPT, PD, the identity PT of the first 2 MiB. */
#define PML4_A		0x10000
#define PDPT_A		0x11000
#define PD_A		0x12000
#define PT_LOW		0x13000
/* Address space B: its own PML4, PDPT and PD; the same low PT. */
#define PML4_B		0x14000
#define PDPT_B		0x15000
#define PD_B		0x16000
#define PT_B2		0x17000		/* B: linear 4 MiB */
#define PT_A2		0x18000		/* A: linear 4 MiB */
/* Data pages. */
#define PAGE_1		0x20000
#define PAGE_2		0x21000
#define PAGE_3		0x22000
#define PAGE_NX		0x23000
#define PAGE_32		0x24000

#define LINEAR		0x400000ULL	/* PD index 2, PT index 0 */
#define LARGE		0x600000ULL	/* PD index 3: a 2 MiB page */

#define P	0x1ULL
#define RW	0x2ULL
#define US	0x4ULL
#define A	0x20ULL
#define D	0x40ULL
#define PS	0x80ULL
#define NX	(1ULL << 63)
#define EFER_NXE (1 << 11)

FIXTURE(paging) {
	struct vm vm;
};

FIXTURE_VARIANT(paging) {
	uint64_t mmu;
};

FIXTURE_VARIANT_ADD(paging, default_mmu) { .mmu = 0 };
FIXTURE_VARIANT_ADD(paging, tdp) { .mmu = RKVM_MMU_TDP };
FIXTURE_VARIANT_ADD(paging, shadow) { .mmu = RKVM_MMU_SHADOW };

static uint64_t *at(struct vm *vm, uint64_t gpa)
{
	return (uint64_t *)(vm->mem + gpa);
}

static uint32_t marker(struct vm *vm, uint64_t gpa)
{
	return *(uint32_t *)(vm->mem + gpa);
}

/*
 * Long mode with address spaces A (CR3) and B, a GDT, and an IDT whose #PF
 * gate goes to pg_pf_handler. `efer_extra`: e.g. NXE.
 */
static void long_mode(struct __test_metadata *_metadata, struct vm *vm, uint64_t efer_extra)
{
	struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = 8, .type = 0xb,
		.present = 1, .s = 1, .l = 1, .g = 1,
	};
	struct kvm_segment data = code;
	uint64_t handler = GUEST(pg_pf_handler);
	struct kvm_sregs sregs;
	int i;

	LOAD_GUEST_CODE(vm->mem, CODE, pg_code);
	at(vm, GDT)[1] = 0x00209b0000000000ULL;		/* 0x08: 64-bit code, DPL 0 */
	at(vm, GDT)[2] = 0x0000930000000000ULL;		/* 0x10: data */
	at(vm, GDT)[3] = 0x0020fb0000000000ULL;		/* 0x18: 64-bit code, DPL 3 */
	at(vm, GDT)[4] = 0x0000f30000000000ULL;		/* 0x20: data, DPL 3 */
	*(uint64_t *)(vm->mem + TSS + 4) = KERNEL_STACK;	/* RSP0 */
	/* IDT[14]: a 64-bit interrupt gate to the handler, selector 8. */
	at(vm, IDT)[2 * 14] = (handler & 0xffff) | (8ULL << 16) | (0x8eULL << 40) |
			      ((handler >> 16 & 0xffff) << 48);
	at(vm, IDT)[2 * 14 + 1] = handler >> 32;

	for (i = 0; i < 512; i++)
		at(vm, PT_LOW)[i] = ((uint64_t)i << 12) | P | RW;
	at(vm, PML4_A)[0] = PDPT_A | P | RW;
	at(vm, PDPT_A)[0] = PD_A | P | RW;
	at(vm, PD_A)[0] = PT_LOW | P | RW;
	at(vm, PD_A)[2] = PT_A2 | P | RW;
	at(vm, PD_A)[3] = 0 | P | RW | PS;		/* LARGE: guest physical 0-2 MiB */
	at(vm, PML4_B)[0] = PDPT_B | P | RW;
	at(vm, PDPT_B)[0] = PD_B | P | RW;
	at(vm, PD_B)[0] = PT_LOW | P | RW;
	at(vm, PD_B)[2] = PT_B2 | P | RW;
	at(vm, PT_A2)[0] = PAGE_1 | P | RW;
	at(vm, PT_B2)[0] = PAGE_2 | P | RW;
	*(uint32_t *)(vm->mem + PAGE_1) = 0x1111;
	*(uint32_t *)(vm->mem + PAGE_2) = 0x2222;
	*(uint32_t *)(vm->mem + PAGE_3) = 0x3333;

	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_SREGS, &sregs));
	data.type = 3;
	data.l = 0;
	data.selector = 16;
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.gdt.base = GDT;
	sregs.gdt.limit = 5 * 8 - 1;
	/* A 64-bit TSS (busy), for RSP0: described to the vCPU directly. */
	sregs.tr = (struct kvm_segment) {
		.base = TSS, .limit = 0x67, .selector = 0x28, .type = 0xb, .present = 1,
	};
	sregs.idt.base = IDT;
	sregs.idt.limit = 256 * 16 - 1;
	sregs.cr3 = PML4_A;
	sregs.cr4 = 1 << 5;				/* PAE */
	sregs.cr0 = 0x80010011;				/* PG | WP | ET | PE */
	sregs.efer = (1 << 8) | (1 << 10) | efer_extra;	/* LME | LMA */
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_SREGS, &sregs));
}

/* Enters at `entry` with the given registers (the rest zero). */
static void enter(struct __test_metadata *_metadata, struct vm *vm, uint64_t entry,
		  uint64_t rbx, uint64_t rcx, uint64_t rdx)
{
	struct kvm_regs regs = {
		.rip = entry, .rsp = STACK, .rflags = 2, .rbx = rbx, .rcx = rcx, .rdx = rdx,
	};

	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_REGS, &regs));
}

/* Runs the guest to its next exit, which must be a 4-byte OUT to `port`. */
static uint32_t next_out(struct __test_metadata *_metadata, struct vm *vm, uint16_t port)
{
	uint32_t value = 0;

	if (vm_run(vm))
		return ~0u;
	EXPECT_EQ(KVM_EXIT_IO, vm->run->exit_reason)
		TH_LOG("exit %u (internal error %u, data %llx %llx)", vm->run->exit_reason,
		       vm->run->internal.suberror, (unsigned long long)vm->run->internal.data[0],
		       (unsigned long long)vm->run->internal.data[1]);
	if (vm->run->exit_reason != KVM_EXIT_IO)
		return ~0u;
	EXPECT_EQ(port, vm->run->io.port);
	EXPECT_EQ(4, vm->run->io.size);
	memcpy(&value, vm_pio_data(vm), 4);
	return value;
}

/* The guest's #PF handler reports the error code and CR2 (ports 0x31, 0x32). */
static void expect_page_fault(struct __test_metadata *_metadata, struct vm *vm, uint32_t err, uint64_t cr2)
{
	EXPECT_EQ(err, next_out(_metadata, vm, 0x31)) TH_LOG("error code");
	EXPECT_EQ(cr2, next_out(_metadata, vm, 0x32)) TH_LOG("CR2");
}

static void expect_hlt(struct __test_metadata *_metadata, struct vm *vm)
{
	ASSERT_EQ(0, vm_run(vm));
	EXPECT_EQ(KVM_EXIT_HLT, vm->run->exit_reason);
}

FIXTURE_SETUP(paging)
{
	int r;

	if (variant->mmu && !testing_rkvm())
		SKIP(return, "real KVM chooses its MMU when its module loads (kvm_amd npt=0, kvm_intel ept=0)");
	r = vm_create_mmu(&self->vm, variant->mmu);
	if (r == -ENODEV)
		SKIP(return, NO_BACKEND);
	ASSERT_EQ(0, r) TH_LOG("creating a VM on %s: %s", test_device(), strerror(-r));
}

FIXTURE_TEARDOWN(paging)
{
	vm_destroy(&self->vm);
}

/* The guest points a page at other memory: INVLPG, then a CR3 reload. */
TEST_F(paging, remap_page)
{
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	long_mode(_metadata, vm, 0);
	enter(_metadata, vm, GUEST(pg_remap), 0, 0, LINEAR);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	regs.r8 = PT_A2;
	regs.r9 = PAGE_2 | P | RW;
	regs.r10 = PAGE_3 | P | RW;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_REGS, &regs));
	EXPECT_EQ(0x1111, next_out(_metadata, vm, 0x30));
	EXPECT_EQ(0x2222, next_out(_metadata, vm, 0x30)) TH_LOG("stale after INVLPG");
	EXPECT_EQ(0x3333, next_out(_metadata, vm, 0x30)) TH_LOG("stale after a CR3 reload");
	expect_hlt(_metadata, vm);
	/* The processor set the accessed bits of the entries it used. */
	EXPECT_EQ(A, at(vm, PML4_A)[0] & A);
	EXPECT_EQ(A, at(vm, PD_A)[2] & A);
	EXPECT_EQ(A, at(vm, PT_A2)[0] & A);
	EXPECT_EQ(0, at(vm, PT_A2)[0] & D) TH_LOG("only reads: no dirty bit");
}

/* Two address spaces map the same linear address to different pages. */
TEST_F(paging, cr3_switch)
{
	struct vm *vm = &self->vm;
	struct kvm_regs regs;

	long_mode(_metadata, vm, 0);
	enter(_metadata, vm, GUEST(pg_cr3), 0, 0, LINEAR);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	regs.r8 = PML4_A;
	regs.r9 = PML4_B;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_REGS, &regs));
	EXPECT_EQ(0x1111, next_out(_metadata, vm, 0x30));
	EXPECT_EQ(0x2222, next_out(_metadata, vm, 0x30));
	EXPECT_EQ(0x1111, next_out(_metadata, vm, 0x30));
	EXPECT_EQ(PML4_A, next_out(_metadata, vm, 0x30)) TH_LOG("the guest reads its own CR3");
	expect_hlt(_metadata, vm);
}

/* A 2 MiB page: both ends reach the right guest physical pages. */
TEST_F(paging, large_page)
{
	struct vm *vm = &self->vm;

	long_mode(_metadata, vm, 0);
	*(uint32_t *)(vm->mem + 0) = 0x5a5a;
	*(uint32_t *)(vm->mem + 0x1ff000) = 0xa5a5;
	enter(_metadata, vm, GUEST(pg_large), 0, 0, LARGE);
	EXPECT_EQ(0x5a5a, next_out(_metadata, vm, 0x30));
	EXPECT_EQ(0xa5a5, next_out(_metadata, vm, 0x30));
	expect_hlt(_metadata, vm);
	EXPECT_EQ(A, at(vm, PD_A)[3] & A) TH_LOG("a large page's entry gets the accessed bit");
}

/*
 * A write to a read-only page faults with P|W (3) and CR2; the guest's
 * handler makes the page writable and the write is retried. Afterwards the
 * entry has A and D set, and the data is in the page.
 */
TEST_F(paging, write_protect_fault)
{
	struct vm *vm = &self->vm;

	long_mode(_metadata, vm, 0);
	at(vm, PT_A2)[1] = PAGE_3 | P;			/* read-only */
	enter(_metadata, vm, GUEST(pg_write), PT_A2 + 8, PAGE_3 | P | RW, LINEAR + 0x1000);
	expect_page_fault(_metadata, vm, 3, LINEAR + 0x1000);	/* present, write */
	EXPECT_EQ(0xabcd, next_out(_metadata, vm, 0x30));
	expect_hlt(_metadata, vm);
	EXPECT_EQ(0xabcd, marker(vm, PAGE_3));
	EXPECT_EQ(A | D, at(vm, PT_A2)[1] & (A | D)) TH_LOG("pte %llx", (unsigned long long)at(vm, PT_A2)[1]);
}

/* A page not present: error code W (2), and the handler maps it. */
TEST_F(paging, not_present_fault)
{
	struct vm *vm = &self->vm;

	long_mode(_metadata, vm, 0);
	enter(_metadata, vm, GUEST(pg_write), PT_A2 + 8, PAGE_3 | P | RW, LINEAR + 0x1000);
	expect_page_fault(_metadata, vm, 2, LINEAR + 0x1000);	/* write, not present */
	EXPECT_EQ(0xabcd, next_out(_metadata, vm, 0x30));
	expect_hlt(_metadata, vm);
}

/* With CR0.WP clear the kernel writes read-only pages without a fault. */
TEST_F(paging, wp_clear_allows_kernel_writes)
{
	struct vm *vm = &self->vm;
	struct kvm_sregs sregs;

	long_mode(_metadata, vm, 0);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_SREGS, &sregs));
	sregs.cr0 &= ~(1ULL << 16);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_SREGS, &sregs));
	at(vm, PT_A2)[1] = PAGE_3 | P;			/* read-only */
	enter(_metadata, vm, GUEST(pg_write), 0, 0, LINEAR + 0x1000);
	EXPECT_EQ(0xabcd, next_out(_metadata, vm, 0x30)) TH_LOG("no #PF expected");
	expect_hlt(_metadata, vm);
	EXPECT_EQ(0xabcd, marker(vm, PAGE_3));
	EXPECT_EQ(D, at(vm, PT_A2)[1] & D);
}

/* Executing a no-execute page: error code P|I (0x11); cleared, it runs. */
TEST_F(paging, no_execute_fault)
{
	struct vm *vm = &self->vm;

	long_mode(_metadata, vm, EFER_NXE);
	memcpy(vm->mem + PAGE_NX, pg_nx_code, pg_nx_code_end - pg_nx_code);
	at(vm, PT_A2)[2] = PAGE_NX | P | RW | NX;
	enter(_metadata, vm, GUEST(pg_jump), PT_A2 + 16, PAGE_NX | P | RW, LINEAR + 0x2000);
	expect_page_fault(_metadata, vm, 0x11, LINEAR + 0x2000);	/* present, fetch */
	EXPECT_EQ(0x77, next_out(_metadata, vm, 0x30));
	expect_hlt(_metadata, vm);
}

/*
 * A reserved bit (51, above any MAXPHYADDR here): error code P|RSVD (9), as
 * the manuals say and software walkers (rkvm's shadow paging, kvm_amd npt=0)
 * give. With nested paging the processor reports it, and QEMU's emulated one
 * leaves P out (8): accepted there only.
 */
TEST_F(paging, reserved_bit_fault)
{
	struct vm *vm = &self->vm;
	uint32_t err;

	long_mode(_metadata, vm, 0);
	at(vm, PT_A2)[1] = PAGE_3 | P | RW | (1ULL << 51);
	enter(_metadata, vm, GUEST(pg_read), PT_A2 + 8, PAGE_3 | P | RW, LINEAR + 0x1000);
	err = next_out(_metadata, vm, 0x31);
	if (variant->mmu == RKVM_MMU_SHADOW) {
		EXPECT_EQ(9, err) TH_LOG("error code: present, reserved bit");
	} else {
		EXPECT_EQ(8, err & ~1u) TH_LOG("error code %x: reserved bit", err);
	}
	EXPECT_EQ(LINEAR + 0x1000, next_out(_metadata, vm, 0x32));
	EXPECT_EQ(0x3333, next_out(_metadata, vm, 0x30));
	expect_hlt(_metadata, vm);
}

/*
 * User mode reads a kernel page: error code P|U (5); the handler (entered
 * at CPL 0 on the TSS's stack) makes the page a user page and user mode
 * reads it.
 */
TEST_F(paging, user_mode_fault)
{
	struct vm *vm = &self->vm;
	int i;

	long_mode(_metadata, vm, 0);
	/* Everything user-accessible (code, stacks, tables) but the target page. */
	for (i = 0; i < 512; i++)
		at(vm, PT_LOW)[i] |= US;
	at(vm, PML4_A)[0] |= US;
	at(vm, PDPT_A)[0] |= US;
	at(vm, PD_A)[0] |= US;
	at(vm, PD_A)[2] |= US;
	at(vm, PT_A2)[1] = PAGE_3 | P | RW;		/* kernel only */
	enter(_metadata, vm, GUEST(pg_to_user), PT_A2 + 8, PAGE_3 | P | RW | US, LINEAR + 0x1000);
	{
		struct kvm_regs regs;

		ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
		regs.rsi = USER_STACK;
		ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_REGS, &regs));
	}
	expect_page_fault(_metadata, vm, 5, LINEAR + 0x1000);	/* present, user */
	EXPECT_EQ(0x3333, next_out(_metadata, vm, 0x30));
}

/*
 * The guest reads one word in each of 2000 regions of 2 MiB (4 GiB of
 * linear addresses, all mapped to one page table): a shadow page table
 * needs a table per region, more than one vCPU may hold (1024), so rkvm
 * empties it on the way and refills it; the guest sees nothing of that.
 */
TEST_F(paging, shadow_table_bound)
{
	struct vm *vm = &self->vm;
	struct kvm_regs regs;
	struct stats s;
	int i;

	long_mode(_metadata, vm, 0);
	at(vm, PD_A)[1] = PT_A2 | P | RW;
	for (i = 4; i < 512; i++)
		at(vm, PD_A)[i] = PT_A2 | P | RW;
	for (i = 1; i < 4; i++)
		at(vm, PDPT_A)[i] = PD_A | P | RW;
	enter(_metadata, vm, GUEST(pg_regions), 0, 2000, 4 * 0x200000);
	EXPECT_EQ(0x1111, next_out(_metadata, vm, 0x30));
	expect_hlt(_metadata, vm);
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_REGS, &regs));
	EXPECT_EQ(0, regs.rcx);
	if (variant->mmu != RKVM_MMU_SHADOW)
		return;
	ASSERT_EQ(0, stats_open(&s, vm->vcpu));
	EXPECT_LE(2000, stats_value(&s, "pf_fixed")) TH_LOG("one shadow fault per region at least");
	EXPECT_LE(1, stats_value(&s, "tlb_flush")) TH_LOG("the bound must have emptied the table");
	stats_close(&s);
}

/*
 * 32-bit protected mode, with 2-level paging (4 KiB pages) or PAE paging:
 * linear 0xc0000000 reads PAGE_32, code runs from the identity map.
 */
static void protected_paging(struct __test_metadata *_metadata, struct vm *vm, int pae)
{
	struct kvm_segment code = {
		.base = 0, .limit = 0xffffffff, .selector = 8, .type = 0xb,
		.present = 1, .s = 1, .db = 1, .g = 1,
	};
	struct kvm_segment data = code;
	struct kvm_sregs sregs;
	uint32_t *pd32 = (uint32_t *)(vm->mem + 0x30000);
	uint32_t *pt32 = (uint32_t *)(vm->mem + 0x31000);
	uint32_t *pt32_high = (uint32_t *)(vm->mem + 0x32000);
	int i;

	LOAD_GUEST_CODE(vm->mem, CODE, pg_code);
	*(uint32_t *)(vm->mem + PAGE_32) = 0x3232;
	for (i = 0; i < 512; i++)
		at(vm, PT_LOW)[i] = ((uint64_t)i << 12) | P | RW;
	if (pae) {
		at(vm, 0x33000)[0] = 0x34000 | P;	/* PDPTE 0: low PD */
		at(vm, 0x33000)[3] = 0x35000 | P;	/* PDPTE 3: 0xc0000000 */
		at(vm, 0x34000)[0] = PT_LOW | P | RW;
		at(vm, 0x35000)[0] = 0x36000 | P | RW;
		at(vm, 0x36000)[0] = PAGE_32 | P | RW;
	} else {
		for (i = 0; i < 512; i++)
			pt32[i] = (i << 12) | P | RW;
		pd32[0] = 0x31000 | P | RW;
		pd32[0x300] = 0x32000 | P | RW;
		pt32_high[0] = PAGE_32 | P | RW;
	}
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_GET_SREGS, &sregs));
	data.type = 3;
	data.selector = 16;
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	sregs.cr0 = 0x80000011;				/* PG | ET | PE */
	sregs.cr4 = pae ? 1 << 5 : 0;
	sregs.cr3 = pae ? 0x33000 : 0x30000;
	sregs.efer = 0;
	ASSERT_EQ(0, ioctl(vm->vcpu, KVM_SET_SREGS, &sregs));
	enter(_metadata, vm, GUEST(pg_read32), 0, 0, 0xc0000000);
	EXPECT_EQ(0x3232, next_out(_metadata, vm, 0x30));
	expect_hlt(_metadata, vm);
	if (!pae) {
		EXPECT_EQ(A, pt32_high[0] & A) TH_LOG("4-byte entries get the accessed bit too");
	}
}

TEST_F(paging, two_level_32bit)
{
	protected_paging(_metadata, &self->vm, 0);
}

TEST_F(paging, pae)
{
	protected_paging(_metadata, &self->vm, 1);
}

/*
 * KVM_CAP_RKVM_MMU: rkvm offers both modes (EPT alone on Intel) and takes
 * a choice before the first vCPU only; real KVM knows no such capability.
 */
TEST(mmu_capability)
{
	struct kvm_enable_cap cap = { .cap = KVM_CAP_RKVM_MMU, .args = { RKVM_MMU_SHADOW } };
	int sys = open_device(), vm, vcpu, mode;

	ASSERT_LE(0, sys);
	vm = ioctl(sys, KVM_CREATE_VM, 0);
	if (vm < 0 && errno == ENODEV)
		SKIP(return, NO_BACKEND);
	ASSERT_LE(0, vm);
	if (!testing_rkvm()) {
		EXPECT_EQ(0, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_RKVM_MMU));
		EXPECT_ERRNO(EINVAL, ioctl(vm, KVM_ENABLE_CAP, &cap));
		close(vm);
		close(sys);
		return;
	}
	EXPECT_EQ(RKVM_MMU_TDP | RKVM_MMU_SHADOW, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_RKVM_MMU));
	/* On a VM fd: the VM's own mode, the module's default until chosen. */
	mode = ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_RKVM_MMU);
	EXPECT_TRUE(mode == RKVM_MMU_TDP || mode == RKVM_MMU_SHADOW) TH_LOG("mode %d", mode);
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_ENABLE_CAP_VM));
	cap.args[0] = 4;
	EXPECT_ERRNO(EINVAL, ioctl(vm, KVM_ENABLE_CAP, &cap));	/* no such mode */
	cap.args[0] = RKVM_MMU_SHADOW;
	cap.flags = 1;
	EXPECT_ERRNO(EINVAL, ioctl(vm, KVM_ENABLE_CAP, &cap));	/* flags must be 0 */
	cap.flags = 0;
	cap.cap = KVM_CAP_USER_MEMORY;
	EXPECT_ERRNO(EINVAL, ioctl(vm, KVM_ENABLE_CAP, &cap));	/* not enableable */
	cap.cap = KVM_CAP_RKVM_MMU;
	EXPECT_EQ(0, ioctl(vm, KVM_ENABLE_CAP, &cap));
	EXPECT_EQ(RKVM_MMU_SHADOW, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_RKVM_MMU));
	EXPECT_EQ(0, ioctl(vm, KVM_ENABLE_CAP, &cap));		/* again: still no vCPU */
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	ASSERT_LE(0, vcpu);
	cap.args[0] = RKVM_MMU_TDP;
	EXPECT_ERRNO(EINVAL, ioctl(vm, KVM_ENABLE_CAP, &cap));	/* too late */
	close(vcpu);
	close(vm);
	close(sys);
}

TEST_HARNESS_MAIN

// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for rkvm: kernel facilities that are static inlines or macros and
 * so have no symbol Rust could call. Each is a thin wrapper; the logic stays
 * in Rust.
 */

#include <linux/eventfd.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/mm.h>
#include <linux/poll.h>
#include <linux/rcupdate.h>
#include <linux/slab.h>
#include <linux/sched.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/smp.h>
#include <linux/types.h>
#include <linux/uaccess.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <asm/cpu_entry_area.h>
#include <asm/debugreg.h>
#include <asm/desc.h>
#include <asm/fpu/api.h>
#include <asm/gsseg.h>
#include <asm/io.h>
#include <asm/msr.h>

#include "helpers.h"
#include "layout.h"

/* struct rkvm_vmx_host as layout.h says (and ffi.rs checks `VmxHostState`). */
#define RKVM_VMX_HOST_AT(field, offset) \
	static_assert(offsetof(struct rkvm_vmx_host, field) == (offset))
RKVM_VMX_HOST_AT(fs_base, VMX_HOST_FS_BASE);
RKVM_VMX_HOST_AT(gs_base, VMX_HOST_GS_BASE);
RKVM_VMX_HOST_AT(kernel_gs_base, VMX_HOST_KERNEL_GS_BASE);
RKVM_VMX_HOST_AT(tr_base, VMX_HOST_TR_BASE);
RKVM_VMX_HOST_AT(gdt_base, VMX_HOST_GDT_BASE);
RKVM_VMX_HOST_AT(idt_base, VMX_HOST_IDT_BASE);
RKVM_VMX_HOST_AT(cr0, VMX_HOST_CR0);
RKVM_VMX_HOST_AT(cr3, VMX_HOST_CR3);
RKVM_VMX_HOST_AT(ds, VMX_HOST_DS);
RKVM_VMX_HOST_AT(es, VMX_HOST_ES);
RKVM_VMX_HOST_AT(fs, VMX_HOST_FS);
RKVM_VMX_HOST_AT(gs, VMX_HOST_GS);
static_assert(sizeof(struct rkvm_vmx_host) == VMX_HOST_SIZE);

/* Reads an MSR; returns 0, or -EIO if the RDMSR faulted (#GP). */
int rkvm_rdmsr_safe(u32 msr, u64 *val)
{
	return rdmsrq_safe(msr, val);
}

/* Writes an MSR; returns 0, or -EIO if the WRMSR faulted (#GP). */
int rkvm_wrmsr_safe(u32 msr, u64 val)
{
	return wrmsrq_safe(msr, val);
}

phys_addr_t rkvm_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

void *rkvm_phys_to_virt(phys_addr_t pa)
{
	return __va(pa);
}

void *rkvm_page_address(struct page *page)
{
	return page_address(page);
}

bool rkvm_access_ok(unsigned long addr, unsigned long size)
{
	return access_ok((void __user *)addr, size);
}

/* Statistics files are read with pread(), as KVM's are. */
void rkvm_file_allow_pread(struct file *file)
{
	file->f_mode |= FMODE_PREAD;
}

/* The caller's pid, for the statistics id ("kvm-<pid>", as KVM names it). */
int rkvm_current_pid(void)
{
	return task_pid_nr(current);
}

/* Whether the page is part of a folio of at least 2 MiB (a huge page). */
bool rkvm_page_in_huge_folio(struct page *page)
{
	return folio_size(page_folio(page)) >= PMD_SIZE;
}

void rkvm_local_irq_disable(void)
{
	local_irq_disable();
}

void rkvm_local_irq_enable(void)
{
	local_irq_enable();
}

void rkvm_kernel_fpu_begin(void)
{
	kernel_fpu_begin();
}

void rkvm_kernel_fpu_end(void)
{
	kernel_fpu_end();
}

/*
 * Tells RCU that this CPU is about to run a guest: like a return to user
 * mode, guest mode holds no RCU references, so it counts as a quiescent
 * state. Without this, a vCPU that keeps re-entering a spinning guest (every
 * host tick lands in rkvm's preempt-disabled entry path) stalls RCU.
 */
void rkvm_guest_enter_irqoff(void)
{
	rcu_virt_note_context_switch();
}

/*
 * The guest's (or the debugger's) breakpoint addresses into DR0-DR3 before
 * an entry, with interrupts off; the entry loads DR7 from the VMCB or VMCS.
 * The host's DR0-DR3 go to `host` first (the kernel's own copy of them is
 * private to hw_breakpoint.c and its restore function exported to KVM
 * only), and DR7 is disabled, so that no host breakpoint fires on a guest
 * address meanwhile (as KVM's vcpu_enter_guest does).
 */
void rkvm_debugregs_load(const u64 *addr, u64 *host)
{
	unsigned long v;

	set_debugreg(0UL, 7);
	get_debugreg(v, 0);
	host[0] = v;
	get_debugreg(v, 1);
	host[1] = v;
	get_debugreg(v, 2);
	host[2] = v;
	get_debugreg(v, 3);
	host[3] = v;
	set_debugreg(addr[0], 0);
	set_debugreg(addr[1], 1);
	set_debugreg(addr[2], 2);
	set_debugreg(addr[3], 3);
}

/*
 * After the exit: the kernel's own hardware breakpoints (perf, ptrace,
 * kgdb) back in DR0-DR3, DR6 and DR7 if any is enabled on this CPU, as
 * hw_breakpoint_restore() does; if none is, what DR0-DR3 hold does not
 * matter (the exit left DR7 disabled).
 */
void rkvm_debugregs_restore(const u64 *host)
{
	/* Disarms what vmrun.S may have moved to DR7 (QEMU's emulation). */
	set_debugreg(DR7_FIXED_1, 7);
	if (!hw_breakpoint_active())
		return;
	set_debugreg(host[0], 0);
	set_debugreg(host[1], 1);
	set_debugreg(host[2], 2);
	set_debugreg(host[3], 3);
	set_debugreg(DR6_RESERVED, 6);
	set_debugreg(__this_cpu_read(cpu_dr7), 7);
}

/*
 * The current task's mm (NULL for a kernel thread); sys.rs takes its
 * reference (ARef<Mm>). This reads task_struct in C on purpose: with this
 * project's toolchain the Rust bindings' layout of struct task_struct
 * differs from the C one (Task::mm() and Task::pid() read the wrong
 * fields), see Documentation/architecture.md.
 */
const struct mm_struct *rkvm_current_mm(void)
{
	return current->mm;
}

unsigned long rkvm_vma_pgoff(const struct vm_area_struct *vma)
{
	return vma->vm_pgoff;
}

/* Yields the CPU if the scheduler wants it (between two guest entries). */
void rkvm_cond_resched(void)
{
	cond_resched();
}

/*
 * Interrupts `cpu` (a reschedule IPI, as kvm_vcpu_kick() sends): a vCPU in
 * guest mode there leaves it. Any context.
 */
void rkvm_kick_cpu(int cpu)
{
	if (cpu >= 0 && cpu < nr_cpu_ids && cpu_online(cpu))
		arch_smp_send_reschedule(cpu);
}

/*
 * VMX (vmx/host.rs): the host state a VM exit loads from the VMCS's host
 * fields, read on the current CPU, and what the exit does not restore.
 * Called with interrupts disabled.
 */
void rkvm_vmx_host_save(struct rkvm_vmx_host *h)
{
	struct desc_ptr idt;
	int cpu = smp_processor_id();

	savesegment(ds, h->ds);
	savesegment(es, h->es);
	savesegment(fs, h->fs);
	savesegment(gs, h->gs);
	rdmsrq(MSR_FS_BASE, h->fs_base);
	rdmsrq(MSR_GS_BASE, h->gs_base);
	rdmsrq(MSR_KERNEL_GS_BASE, h->kernel_gs_base);
	h->tr_base = (unsigned long)&get_cpu_entry_area(cpu)->tss.x86_tss;
	h->gdt_base = (unsigned long)get_current_gdt_ro();
	store_idt(&idt);
	h->idt_base = idt.address;
	h->cr0 = read_cr0();
	h->cr3 = __read_cr3();
}

/*
 * After the exit (and VMXOFF): selectors the exit set to 0, the TSS limit
 * it cut to 0x67 (the kernel reloads it if a task needs its I/O bitmap),
 * the GDT limit it set to 0xffff, and the user's GS base, which the guest's
 * KERNEL_GS_BASE replaced.
 */
void rkvm_vmx_host_restore(const struct rkvm_vmx_host *h)
{
	if (h->gs & 7)
		load_gs_index(h->gs);
	if (h->fs & 7)
		loadsegment(fs, h->fs);
	if (h->ds | h->es) {
		loadsegment(ds, h->ds);
		loadsegment(es, h->es);
	}
	wrmsrq(MSR_KERNEL_GS_BASE, h->kernel_gs_base);
	/*
	 * invalidate_tss_limit() without its TIF_IO_BITMAP branch, which
	 * reloads TR through a function exported to KVM only: a task with an
	 * I/O bitmap gets the limit reloaded on its way back to user mode
	 * (tss_update_io_bitmap() in the exit work).
	 */
	this_cpu_write(__tss_limit_invalid, true);
	load_fixmap_gdt(smp_processor_id());
}

/*
 * KVM_IRQFD (module/irqfd.rs): an irqfd's hook on its eventfd. The wait-queue
 * plumbing is here, as in KVM's virt/kvm/eventfd.c; what a signal does is
 * Rust's (rkvm_irqfd_event).
 */
struct rkvm_irqfd_hook {
	wait_queue_entry_t wait;
	poll_table pt;
	struct eventfd_ctx *ctx;
	const void *owner;
	int ret;
};

/*
 * The eventfd's wakeup, with its wait-queue lock held and interrupts off:
 * a signal is consumed here (the counter goes back to 0) and reported as
 * one event; the eventfd's release reports a hangup.
 */
static int rkvm_irqfd_wakeup(wait_queue_entry_t *wait, unsigned int mode, int sync, void *key)
{
	struct rkvm_irqfd_hook *h = container_of(wait, struct rkvm_irqfd_hook, wait);
	__poll_t flags = key_to_poll(key);
	int ret = 0;

	if (flags & EPOLLIN) {
		u64 cnt;

		eventfd_ctx_do_read(h->ctx, &cnt);
		rkvm_irqfd_event(h->owner, false);
		ret = 1;
	}
	if (flags & EPOLLHUP)
		rkvm_irqfd_event(h->owner, true);
	return ret;
}

/*
 * vfs_poll()'s queueing callback: the hook becomes the eventfd's one
 * exclusive priority waiter (EBUSY if another irqfd, of any VM, is), so
 * that a signal wakes nobody else, as KVM registers its irqfds.
 */
static void rkvm_irqfd_queue(struct file *file, wait_queue_head_t *wqh, poll_table *pt)
{
	struct rkvm_irqfd_hook *h = container_of(pt, struct rkvm_irqfd_hook, pt);

	init_waitqueue_func_entry(&h->wait, rkvm_irqfd_wakeup);
	h->ret = add_wait_queue_priority_exclusive(wqh, &h->wait);
}

struct rkvm_irqfd_hook *rkvm_irqfd_hook_alloc(void)
{
	return kzalloc(sizeof(struct rkvm_irqfd_hook), GFP_KERNEL_ACCOUNT);
}

void rkvm_irqfd_hook_free(struct rkvm_irqfd_hook *h)
{
	kfree(h);
}

/*
 * Hooks `h` onto the eventfd behind the caller's `fd` (EBADF if it is not
 * open, EINVAL if it is not an eventfd, EBUSY if it has an irqfd already),
 * events reported with `owner`. *pending: the eventfd was signalled before.
 */
int rkvm_irqfd_hook_attach(struct rkvm_irqfd_hook *h, int fd, const void *owner, bool *pending)
{
	CLASS(fd, f)(fd);
	struct eventfd_ctx *ctx;
	__poll_t events;

	if (fd_empty(f))
		return -EBADF;
	ctx = eventfd_ctx_fileget(fd_file(f));
	if (IS_ERR(ctx))
		return PTR_ERR(ctx);
	h->ctx = ctx;
	h->owner = owner;
	h->ret = 0;
	init_poll_funcptr(&h->pt, rkvm_irqfd_queue);
	events = vfs_poll(fd_file(f), &h->pt);
	if (h->ret) {
		eventfd_ctx_put(ctx);
		h->ctx = NULL;
		return h->ret;
	}
	*pending = events & EPOLLIN;
	return 0;
}

/*
 * Unhooks `h` (attached): once this returns no wakeup runs for it. Like
 * KVM's irqfd shutdown it also consumes a signal not yet seen.
 */
void rkvm_irqfd_hook_detach(struct rkvm_irqfd_hook *h)
{
	u64 cnt;

	eventfd_ctx_remove_wait_queue(h->ctx, &h->wait, &cnt);
	eventfd_ctx_put(h->ctx);
	h->ctx = NULL;
}

/* The eventfd `h` (attached) is hooked onto. */
struct eventfd_ctx *rkvm_irqfd_hook_ctx(const struct rkvm_irqfd_hook *h)
{
	return h->ctx;
}

/*
 * The module's workqueue: irqfd injections and shutdowns run there, so
 * that a VM's release can wait for its own (flush) and the module's exit
 * for all (destroy).
 */
static struct workqueue_struct *rkvm_wq;

int rkvm_wq_create(void)
{
	rkvm_wq = alloc_workqueue("rkvm", WQ_UNBOUND, 0);
	return rkvm_wq ? 0 : -ENOMEM;
}

struct workqueue_struct *rkvm_wq_get(void)
{
	return rkvm_wq;
}

void rkvm_wq_flush(void)
{
	flush_workqueue(rkvm_wq);
}

void rkvm_wq_destroy(void)
{
	destroy_workqueue(rkvm_wq);
	rkvm_wq = NULL;
}

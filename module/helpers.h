/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Prototypes of helpers.c: the C side of module/ffi.rs, whose one
 * `extern "C"` block declares the same functions for Rust.
 */
#ifndef RKVM_HELPERS_H
#define RKVM_HELPERS_H

#include <linux/mm_types.h>
#include <linux/types.h>

struct eventfd_ctx;
struct file;
struct rkvm_irqfd_hook;
struct workqueue_struct;

int rkvm_rdmsr_safe(u32 msr, u64 *val);
int rkvm_wrmsr_safe(u32 msr, u64 val);
phys_addr_t rkvm_page_to_phys(struct page *page);
void *rkvm_phys_to_virt(phys_addr_t pa);
void *rkvm_page_address(struct page *page);
bool rkvm_access_ok(unsigned long addr, unsigned long size);
bool rkvm_page_in_huge_folio(struct page *page);
void rkvm_file_allow_pread(struct file *file);
int rkvm_current_pid(void);
void rkvm_local_irq_disable(void);
void rkvm_local_irq_enable(void);
void rkvm_kernel_fpu_begin(void);
void rkvm_kernel_fpu_end(void);
void rkvm_cond_resched(void);
void rkvm_kick_cpu(int cpu);
void rkvm_guest_enter_irqoff(void);
const struct mm_struct *rkvm_current_mm(void);
void rkvm_debugregs_load(const u64 *addr, u64 *host);
void rkvm_debugregs_restore(const u64 *host);
unsigned long rkvm_vma_pgoff(const struct vm_area_struct *vma);

/* KVM_IRQFD: the eventfd hook (helpers.c) and its event handler (irqfd.rs). */
struct rkvm_irqfd_hook *rkvm_irqfd_hook_alloc(void);
void rkvm_irqfd_hook_free(struct rkvm_irqfd_hook *h);
int rkvm_irqfd_hook_attach(struct rkvm_irqfd_hook *h, int fd, const void *owner, bool *pending);
void rkvm_irqfd_hook_detach(struct rkvm_irqfd_hook *h);
struct eventfd_ctx *rkvm_irqfd_hook_ctx(const struct rkvm_irqfd_hook *h);
void rkvm_irqfd_event(const void *owner, bool hangup);

/* The module's workqueue. */
int rkvm_wq_create(void);
struct workqueue_struct *rkvm_wq_get(void);
void rkvm_wq_flush(void);
void rkvm_wq_destroy(void);

/* Host state around a VMX guest run; `VmxHostState` in ffi.rs, laid out as layout.h says. */
struct rkvm_vmx_host {
	u64 fs_base, gs_base, kernel_gs_base, tr_base, gdt_base, idt_base, cr0, cr3;
	u16 ds, es, fs, gs;
};

void rkvm_vmx_host_save(struct rkvm_vmx_host *h);
void rkvm_vmx_host_restore(const struct rkvm_vmx_host *h);

#endif

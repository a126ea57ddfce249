/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Prototypes of helpers.c: the C side of module/sys.rs (and svm/hw.rs,
 * fd.rs), which declare the same functions in `extern "C"` blocks.
 */
#ifndef RKVM_HELPERS_H
#define RKVM_HELPERS_H

#include <linux/mm_types.h>
#include <linux/types.h>

struct file;

int rkvm_rdmsr_safe(u32 msr, u64 *val);
int rkvm_wrmsr_safe(u32 msr, u64 val);
phys_addr_t rkvm_virt_to_phys(const void *addr);
phys_addr_t rkvm_page_to_phys(struct page *page);
void *rkvm_phys_to_virt(phys_addr_t pa);
void *rkvm_page_address(struct page *page);
struct page *rkvm_alloc_page_dma32(void);
void rkvm_free_page(struct page *page);
void rkvm_on_each_cpu(void (*fn)(void *), void *info);
bool rkvm_access_ok(unsigned long addr, unsigned long size);
long rkvm_pin_user_page(unsigned long addr, bool write, struct page **page);
void rkvm_unpin_user_page(struct page *page, bool dirty);
bool rkvm_page_in_huge_folio(struct page *page);
void rkvm_file_allow_pread(struct file *file);
int rkvm_current_pid(void);
u64 rkvm_ktime_ns(void);
void rkvm_local_irq_disable(void);
void rkvm_local_irq_enable(void);
void rkvm_kernel_fpu_begin(void);
void rkvm_kernel_fpu_end(void);
int rkvm_smp_processor_id(void);
void rkvm_cond_resched(void);
void rkvm_guest_enter_irqoff(void);
void rkvm_debugregs_load(const u64 *addr, u64 *host);
void rkvm_debugregs_restore(const u64 *host);
struct mm_struct *rkvm_current_mm_grab(void);
bool rkvm_current_mm_is(const struct mm_struct *mm);
void rkvm_mmdrop(struct mm_struct *mm);
unsigned long rkvm_vma_pgoff(const struct vm_area_struct *vma);

/* Host state around a VMX guest run; `HostState` in vmx/host.rs. */
struct rkvm_vmx_host {
	u64 fs_base, gs_base, kernel_gs_base, tr_base, gdt_base, idt_base, cr0, cr3;
	u16 ds, es, fs, gs;
};

unsigned int rkvm_tsc_khz(void);
void rkvm_vmx_host_save(struct rkvm_vmx_host *h);
void rkvm_vmx_host_restore(const struct rkvm_vmx_host *h);

#endif

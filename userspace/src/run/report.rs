// SPDX-License-Identifier: GPL-2.0

//! What `rkvm run` prints when the run is over: the exits that reached
//! userspace by reason, what the kernel counted (`KVM_GET_STATS_FD`, under
//! KVM's names) and where the time went, the absent hardware the guest
//! probed and what each virtio device did.

use std::collections::BTreeMap;
use std::time::Duration;

use kvm_ioctls::VmFd;

use super::board::Board;
use super::vm::Vm;
use crate::kvmstats;

/// The kernel's statistics of the vCPU and of the VM. Both devices have
/// them (KVM since 5.14); a device without them just gets no kernel-side
/// summary.
pub struct KernelStats {
    vcpu: Option<kvmstats::StatsFile>,
    vm: Option<kvmstats::StatsFile>,
}

impl KernelStats {
    /// Opens the statistics of `vm` (before the run: reading them is cheap).
    pub fn open(vm: &Vm) -> KernelStats {
        KernelStats {
            vcpu: kvmstats::StatsFile::open(&vm.vcpu).ok(),
            vm: kvmstats::StatsFile::open(&vm.fd).ok(),
        }
    }
}

/// Everything above, on stderr; `wall` is how long the run took.
pub fn print(stats: &Stats, kernel: &KernelStats, wall: Duration, vm: &Vm, board: &Board) {
    stats.print();
    print_kernel_stats(kernel, wall, uses_shadow_paging(&vm.fd));
    if let Some(absent) = board.ports.absent_summary() {
        eprintln!("rkvm: absent hardware the guest probed (answered as empty): {absent}");
    }
    for line in board.virtio.summary() {
        eprintln!("rkvm: {line}");
    }
    if let Some(io) = &board.ioapic {
        let io = io.borrow();
        eprintln!(
            "rkvm: IOAPIC (--irqchip split): {} interrupts sent as MSIs, {} EOIs, {} refused by the device",
            io.sent, io.eois, io.failed_msis
        );
    }
}

/// Whether the VM runs on rkvm's shadow page tables (`KVM_CAP_RKVM_MMU` on
/// the VM fd; real KVM answers 0).
fn uses_shadow_paging(vm: &VmFd) -> bool {
    use rkvm_pure::ioctl::{mmu_mode, KVM_CAP_RKVM_MMU};
    vm.check_extension_raw(KVM_CAP_RKVM_MMU.into()) as u64 == mmu_mode::SHADOW
}

fn print_kernel_stats(KernelStats { vcpu, vm }: &KernelStats, wall: Duration, shadow: bool) {
    const VCPU: [(&str, &str); 10] = [
        ("exits", "exits"),
        ("io_exits", "io"),
        ("mmio_exits", "mmio"),
        ("halt_exits", "hlt"),
        ("irq_exits", "host interrupts"),
        ("irq_window_exits", "irq windows"),
        ("signal_exits", "signals"),
        ("irq_injections", "interrupts injected"),
        ("insn_emulation", "instructions emulated"),
        ("pf_fixed", "page faults fixed"),
    ];
    const VM: [(&str, &str); 3] = [
        ("pages_4k", "4 KiB"),
        ("pages_2m", "2 MiB"),
        ("pages_1g", "1 GiB"),
    ];
    // What only shadow paging counts (rkvm's names are KVM's).
    const SHADOW: [(&str, &str); 3] = [
        ("pf_guest", "guest page faults reflected"),
        ("invlpg", "INVLPG"),
        ("tlb_flush", "shadow flushes"),
    ];
    if let Some(vcpu) = vcpu {
        let values = vcpu.read();
        eprintln!(
            "rkvm: vCPU statistics from the kernel: {}",
            kvmstats::summary(&values, &VCPU)
        );
        if shadow {
            eprintln!(
                "rkvm: shadow paging: {}",
                kvmstats::summary(&values, &SHADOW)
            );
        }
        if let Some(split) = time_split(&values, wall) {
            eprintln!("rkvm: {split}");
        }
    }
    // The nested page table's leaves (none with shadow paging).
    if let Some(vm) = vm.as_ref().filter(|_| !shadow) {
        eprintln!(
            "rkvm: guest memory mapped by the kernel in pages of {}",
            kvmstats::summary(&vm.read(), &VM)
        );
    }
}

/// Where the run's time went, from rkvm's `guest_time_ns` and
/// `host_time_ns` (KVM has no such statistics: `None` there).
fn time_split(values: &[(&str, u64)], wall: Duration) -> Option<String> {
    let get = |name: &str| values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
    let (guest, host) = (get("guest_time_ns")?, get("host_time_ns")?);
    let wall_ns = wall.as_nanos().max(1) as u64;
    let user = wall_ns.saturating_sub(guest + host);
    let pct = |ns: u64| ns as f64 * 100.0 / wall_ns as f64;
    let secs = |ns: u64| ns as f64 / 1e9;
    Some(format!(
        "time: {:.2} s in all, guest mode {:.2} s ({:.0} %), kernel {:.2} s ({:.0} %), user mode and elsewhere {:.2} s ({:.0} %)",
        secs(wall_ns),
        secs(guest),
        pct(guest),
        secs(host),
        pct(host),
        secs(user),
        pct(user)
    ))
}

/// Exit counts by reason, printed when the run ends.
#[derive(Default)]
pub struct Stats(BTreeMap<&'static str, u64>);

impl Stats {
    pub fn count(&mut self, reason: &'static str) {
        *self.0.entry(reason).or_default() += 1;
    }

    fn print(&self) {
        let total: u64 = self.0.values().sum();
        let parts: Vec<String> = self.0.iter().map(|(r, n)| format!("{r} {n}")).collect();
        eprintln!("rkvm: {total} exits to userspace: {}", parts.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_split_adds_up() {
        let values = [
            ("guest_time_ns", 600_000_000),
            ("host_time_ns", 100_000_000),
        ];
        assert_eq!(
            time_split(&values, Duration::from_secs(1)).as_deref(),
            Some("time: 1.00 s in all, guest mode 0.60 s (60 %), kernel 0.10 s (10 %), user mode and elsewhere 0.30 s (30 %)")
        );
        assert_eq!(
            time_split(&[("exits", 1)], Duration::from_secs(1)),
            None,
            "KVM has no time statistics"
        );
    }
}

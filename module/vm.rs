// SPDX-License-Identifier: GPL-2.0

//! A VM: the file behind the fd `KVM_CREATE_VM` returns.

mod irqchip;
mod pit;

pub(crate) use irqchip::in_ioapic_window;

use kernel::{
    fs::File,
    new_mutex,
    prelude::*,
    sync::{
        Arc,
        ArcBorrow,
        Mutex, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    }, //
};

use crate::{
    abi::{
        self,
        uapi, //
    },
    apic::{
        self,
        VcpuApic, //
    },
    clock::VmClock,
    fd::{
        self,
        FdOps, //
    },
    iobus::IoBuses,
    irqfd::{
        self,
        Irqfd, //
    },
    memory::GuestMemory,
    mmu::{
        EntryGate,
        Mmu,
        MmuStats, //
    },
    pure::{
        ioapic::{
            self,
            Ioapic, //
        },
        iobus::{
            self as iobus_rules,
            BusKind,
            Zone, //
        },
        irq_routing::{
            self,
            IrqchipMode, //
        },
        lapic,
        memslot::Region,
        msi,
        paging::HostPhys,
        pic::Pic, //
    },
    stats::StatsFile,
    stats::VcpuStats,
    sys::{
        self,
        EventFd,
        OwnerMm, //
    },
    trace::{
        ExitTrace,
        VcpuDebugfs,
        VmDebugfs, //
    },
    vcpu::Vcpu,
    vendor, //
};

/// The vCPUs created so far, and what must be chosen before the first.
struct Vcpus {
    /// vCPU ids in use, one bit each.
    ids: [u64; (abi::MAX_VCPU_ID as usize).div_ceil(64)],
    /// Shadow paging rather than NPT (`KVM_CAP_RKVM_MMU`).
    shadow: bool,
    /// The in-kernel irqchip: with either, each vCPU has a local APIC
    /// (`KVM_CAP_SPLIT_IRQCHIP`, `KVM_CREATE_IRQCHIP`).
    irqchip: Option<IrqchipMode>,
    /// The userspace IOAPIC's pins: GSIs below it are its (the
    /// capability's argument).
    ioapic_pins: u32,
}

impl Vcpus {
    fn any(&self) -> bool {
        self.ids.iter().any(|&w| w != 0)
    }
}

#[pin_data]
pub(crate) struct Vm {
    /// The mm of the process that created the VM: VM and vCPU ioctls from any
    /// other mm fail with EIO, as in KVM (guest memory addresses are only
    /// meaningful in this mm).
    mm: OwnerMm,
    /// Memory slots and nested page tables. vCPUs take it to handle a fault
    /// or reach guest memory, not to run the guest: they enter in parallel
    /// with its changes through `gate`.
    #[pin]
    mmu: Mutex<Mmu>,
    /// How vCPUs enter guest mode in parallel with mapping changes.
    gate: Arc<EntryGate>,
    /// The root of the nested page table, fixed for the VM's life.
    tdp_root: HostPhys,
    /// The MMU's statistics, readable without the MMU lock.
    mmu_stats: Arc<MmuStats>,
    /// `rkvm-<pid>-<fd>/` in debugfs, set once the fd exists.
    #[pin]
    debugfs: Mutex<Option<VmDebugfs>>,
    #[pin]
    vcpus: Mutex<Vcpus>,
    /// The vCPUs' in-kernel local APICs, in creation order (with
    /// `KVM_CAP_SPLIT_IRQCHIP`): where IPIs and MSIs are delivered. A
    /// vCPU's stays until the VM goes, as KVM keeps its vCPUs.
    #[pin]
    apics: Mutex<KVec<Arc<VcpuApic>>>,
    /// The GSI routing table (`KVM_SET_GSI_ROUTING`), sorted by GSI.
    #[pin]
    routes: Mutex<KVVec<irq_routing::RoutingEntry>>,
    /// The PIC pair of `KVM_CREATE_IRQCHIP` (unused without it).
    #[pin]
    pic: Mutex<Pic>,
    /// The IOAPIC of `KVM_CREATE_IRQCHIP` (unused without it).
    #[pin]
    ioapic: Mutex<Ioapic>,
    /// The PIT of `KVM_CREATE_PIT2`, until the VM file's release.
    #[pin]
    pit: Mutex<Option<Arc<pit::VmPit>>>,
    /// The irqfds (`KVM_IRQFD`). Each holds the VM: the VM file's release
    /// lets them go.
    #[pin]
    irqfds: Mutex<KVec<Arc<Irqfd>>>,
    /// The hardware backend; SVM stays enabled on every CPU while it lives.
    hw: vendor::Hardware,
    /// kvmclock.
    clock: VmClock,
    /// Ioeventfds, coalesced zones and the coalesced ring. Taken inside
    /// the MMU lock by a vCPU's MMIO exit, never the other way round.
    #[pin]
    io: Mutex<IoBuses>,
}

impl Vm {
    /// `KVM_CREATE_VM`: a new VM fd.
    pub(crate) fn create(vm_type: usize) -> Result<isize> {
        // Only the default VM type exists on rkvm (no SEV, TDX or protected VMs).
        if vm_type != uapi::KVM_X86_DEFAULT_VM as usize {
            return Err(EINVAL);
        }
        let mm = OwnerMm::current().ok_or(EINVAL)?;
        // No backend for this CPU (or it is disabled by firmware): the
        // system fd works, VMs do not (ENODEV).
        let hw = vendor::Hardware::get()?;
        let mmu = Mmu::new(hw.tdp_format())?;
        // Shadow paging only where the backend has it (not on VMX).
        let shadow = !crate::module_parameters::tdp.value() && hw.supports_shadow();
        let mmu_stats = mmu.stats.clone();
        let gate = mmu.gate();
        let tdp_root = mmu.root();
        let io = IoBuses::new()?;
        let vm = Arc::pin_init(
            pin_init!(Vm {
                mm,
                mmu <- new_mutex!(mmu),
                gate,
                tdp_root,
                mmu_stats,
                debugfs <- new_mutex!(None),
                vcpus <- new_mutex!(Vcpus {
                    ids: [0; (abi::MAX_VCPU_ID as usize).div_ceil(64)],
                    shadow,
                    irqchip: None,
                    ioapic_pins: 0,
                }),
                apics <- new_mutex!(KVec::new()),
                routes <- new_mutex!(KVVec::new()),
                pic <- new_mutex!(Pic::new()),
                ioapic <- new_mutex!(Ioapic::new()),
                pit <- new_mutex!(None),
                irqfds <- new_mutex!(KVec::new()),
                hw,
                clock: VmClock::new(),
                io <- new_mutex!(io),
            }),
            GFP_KERNEL,
        )?;
        let pid = sys::current_pid();
        let fd = fd::create(vm.clone())?;
        // Without debugfs (or its memory) the VM works all the same.
        *vm.debugfs.lock() = VmDebugfs::new(pid, fd, vm.mmu_stats.clone()).ok();
        Ok(fd as isize)
    }

    /// The VM's kvmclock.
    pub(crate) fn clock(&self) -> &VmClock {
        &self.clock
    }

    /// The debugfs directory of a new vCPU, if the VM has one.
    pub(crate) fn debugfs_vcpu(
        &self,
        id: u32,
        stats: Arc<VcpuStats>,
        trace: Arc<ExitTrace>,
    ) -> Option<VcpuDebugfs> {
        self.debugfs.lock().as_ref()?.vcpu(id, stats, trace).ok()
    }

    /// Runs `f` on guest memory, with the MMU lock held (so the memory
    /// slots stay as they are) until it returns.
    pub(crate) fn with_memory<R>(&self, f: impl FnOnce(&GuestMemory) -> R) -> R {
        f(&self.mmu.lock().memory)
    }

    /// What a vCPU needs to enter guest mode without the MMU lock: the
    /// entry gate and the nested page table's root.
    pub(crate) fn entry_gate(&self) -> (&EntryGate, HostPhys) {
        (&self.gate, self.tdp_root)
    }

    /// Runs `f` with the MMU lock held but not used: the mappings cannot
    /// change (nor the entry gate's epoch move) until it returns.
    pub(crate) fn with_mappings_held<R>(&self, f: impl FnOnce() -> R) -> R {
        let _held = self.mmu.lock();
        f()
    }

    /// Runs `f` with the MMU locked until it returns: a fault on a guest
    /// physical address.
    pub(crate) fn with_mmu<R>(&self, f: impl FnOnce(&mut Mmu) -> R) -> R {
        f(&mut self.mmu.lock())
    }

    /// A guest write of `len` bytes of `data` at `addr` (a port on the PIO
    /// bus): whether an ioeventfd or a coalesced zone took it, so that the
    /// guest goes on without an exit.
    pub(crate) fn io_write(&self, bus: BusKind, addr: u64, len: u8, data: [u8; 8]) -> bool {
        self.io.lock().write(bus, addr, len, data)
    }

    /// Runs `f` on the coalesced ring page (for the vCPU mmap).
    pub(crate) fn with_coalesced_ring<R>(&self, f: impl FnOnce(&kernel::page::Page) -> R) -> R {
        f(self.io.lock().ring())
    }

    /// `KVM_IOEVENTFD` (`kvm_ioeventfd()`): the argument is read (EFAULT);
    /// a deassign looks up the eventfd (EBADF, or EINVAL for another kind
    /// of file) and removes the one ioeventfd that matches (ENOENT), its
    /// other fields unchecked; an assign checks length, range and flags
    /// (EINVAL) before the eventfd, then collisions (EEXIST), then room on
    /// the bus (ENOSPC: 1000 devices, ioeventfds not counted, so only a
    /// bus full of coalesced zones refuses one).
    fn ioeventfd(&self, arg: usize) -> Result<isize> {
        let req: uapi::kvm_ioeventfd = abi::read_arg(arg)?;
        let ev = iobus_rules::ioeventfd_from(req.flags, req.addr, req.len, req.datamatch);
        if req.flags & iobus_rules::IOEVENTFD_FLAG_DEASSIGN != 0 {
            let fd = sys::EventFd::from_fd(req.fd)?;
            self.io.lock().deassign(&ev, &fd)?;
            return Ok(0);
        }
        if !iobus_rules::assign_valid(req.flags, req.addr, req.len) {
            return Err(EINVAL);
        }
        let fd = sys::EventFd::from_fd(req.fd)?;
        self.io.lock().assign(ev, fd)?;
        Ok(0)
    }

    /// `KVM_REGISTER_COALESCED_MMIO` and (`register` false)
    /// `KVM_UNREGISTER_COALESCED_MMIO`: `pio` 0 or 1 (else EINVAL), no other
    /// check; unregistering removes every zone of that kind holding the
    /// range and is never an error.
    fn coalesced_mmio(&self, arg: usize, register: bool) -> Result<isize> {
        let (addr, size, pio) = abi::read_zone(arg)?;
        let pio = iobus_rules::zone_pio(pio).ok_or(EINVAL)?;
        let zone = Zone { addr, size, pio };
        let mut io = self.io.lock();
        if register {
            io.register_zone(zone)?;
        } else {
            io.unregister_zone(&zone);
        }
        Ok(0)
    }

    /// EIO unless the caller runs in the VM owner's mm.
    pub(crate) fn check_owner(&self) -> Result {
        if self.mm.is_current() {
            Ok(())
        } else {
            Err(EIO)
        }
    }

    /// Whether the VM uses shadow paging (for a new vCPU: the choice is
    /// fixed once a vCPU exists).
    pub(crate) fn shadow_paging(&self) -> bool {
        self.vcpus.lock().shadow
    }

    /// The VM's in-kernel irqchip, if any (new vCPUs get a local APIC
    /// with either kind).
    pub(crate) fn irqchip_mode(&self) -> Option<IrqchipMode> {
        self.vcpus.lock().irqchip
    }

    /// `KVM_ENABLE_CAP` on the VM: rkvm's MMU mode (`KVM_CAP_RKVM_MMU`),
    /// before the first vCPU, and (with the `irqchip` parameter)
    /// `KVM_CAP_SPLIT_IRQCHIP`. Unknown capabilities, flags, and late or
    /// unknown choices are EINVAL, as in KVM.
    fn enable_cap(&self, arg: usize) -> Result<isize> {
        use crate::pure::ioctl::{
            mmu_mode,
            KVM_CAP_RKVM_MMU, //
        };
        let cap: uapi::kvm_enable_cap = abi::read_arg(arg)?;
        if cap.cap == uapi::KVM_CAP_SPLIT_IRQCHIP && crate::module_parameters::irqchip.value() {
            return self.enable_split_irqchip(&cap);
        }
        if cap.cap != KVM_CAP_RKVM_MMU || cap.flags != 0 {
            return Err(EINVAL);
        }
        let mut vcpus = self.vcpus.lock();
        if vcpus.any() {
            return Err(EINVAL);
        }
        vcpus.shadow = match cap.args[0] {
            mmu_mode::TDP => false,
            mmu_mode::SHADOW if self.hw.supports_shadow() => true,
            _ => return Err(EINVAL),
        };
        Ok(0)
    }

    /// `KVM_CAP_SPLIT_IRQCHIP` (`kvm_vm_ioctl_enable_cap()`): args[0], the
    /// IOAPIC pins userspace routes, at most `KVM_MAX_IRQ_ROUTES` (EINVAL);
    /// EEXIST once an irqchip is in the kernel or a vCPU exists. Flags are
    /// not checked (neither does KVM for this capability).
    fn enable_split_irqchip(&self, cap: &uapi::kvm_enable_cap) -> Result<isize> {
        if cap.args[0] > abi::MAX_IRQ_ROUTES as u64 {
            return Err(EINVAL);
        }
        let mut vcpus = self.vcpus.lock();
        if vcpus.irqchip.is_some() || vcpus.any() {
            return Err(EEXIST);
        }
        vcpus.irqchip = Some(IrqchipMode::Split);
        // At most KVM_MAX_IRQ_ROUTES, checked above.
        vcpus.ioapic_pins = cap.args[0] as u32;
        Ok(0)
    }

    /// Records a new vCPU's local APIC, where messages reach it.
    pub(crate) fn add_apic(&self, apic: Arc<VcpuApic>) -> Result {
        self.apics.lock().push(apic, GFP_KERNEL)?;
        Ok(())
    }

    /// Delivers `irq` to the APICs `dest` names (an IPI from APIC `source`
    /// in creation order, or an MSI with `None`).
    pub(crate) fn deliver_irq(
        &self,
        irq: lapic::Interrupt,
        dest: &lapic::Destination,
        source: Option<usize>,
    ) -> u32 {
        let apics = self.apics.lock();
        // KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK is not offered: the quirk
        // is always on.
        apic::deliver(&apics, irq, dest, source, true, None)
    }

    /// The index of `apic` among the VM's APICs (an IPI's source).
    pub(crate) fn apic_index(&self, apic: &VcpuApic) -> Option<usize> {
        self.apics
            .lock()
            .iter()
            .position(|a| core::ptr::eq(&**a, apic))
    }

    /// `KVM_SIGNAL_MSI` (`kvm_send_userspace_msi()`): EINVAL without an
    /// in-kernel irqchip, for flags other than `KVM_MSI_VALID_DEVID` and
    /// for a message KVM refuses; else the number of APICs that took
    /// it, 0 if none did or none matched (as KVM's delivery through its
    /// APIC map answers; its slow path, for APIC setups the map cannot
    /// hold, would say -1 for no match).
    fn signal_msi(&self, arg: usize) -> Result<isize> {
        let msi: uapi::kvm_msi = abi::read_arg(arg)?;
        if self.irqchip_mode().is_none() || !msi::signal_msi_flags_ok(msi.flags) {
            return Err(EINVAL);
        }
        let message = msi::MsiMessage {
            address_lo: msi.address_lo,
            address_hi: msi.address_hi,
            data: msi.data,
        };
        // KVM_X2APIC_API_USE_32BIT_IDS is not offered: 8-bit destinations.
        let message = message.decode(false).ok_or(EINVAL)?;
        let (irq, dest) = lapic::from_message(&message);
        Ok(self.deliver_irq(irq, &dest, None) as isize)
    }

    /// `KVM_SET_GSI_ROUTING` (`kvm_vm_ioctl()`, `kvm_set_irq_routing()`):
    /// the header is read (EFAULT), checked (EINVAL without an in-kernel
    /// irqchip, above 4096 entries, with flags), then every entry is read
    /// (EFAULT) before any is checked (EINVAL: see
    /// `pure::irq_routing::parse_entry`; with the split irqchip only MSI
    /// routes). The table replaces the last one whole.
    fn set_gsi_routing(&self, arg: usize) -> Result<isize> {
        let [nr, flags]: [u32; 2] = abi::read_arg(arg)?;
        let mode = self.irqchip_mode();
        irq_routing::check_request(nr, flags, mode).map_err(|_| EINVAL)?;
        let mode = mode.ok_or(EINVAL)?;
        let nr = nr as usize;
        let mut bytes = KVVec::with_capacity(nr * irq_routing::ENTRY_SIZE, GFP_KERNEL)?;
        let entries = arg.checked_add(irq_routing::HEADER_SIZE).ok_or(EFAULT)?;
        UserSlice::new(UserPtr::from_addr(entries), nr * irq_routing::ENTRY_SIZE)
            .reader()
            .read_all(&mut bytes, GFP_KERNEL)?;
        let mut table = KVVec::with_capacity(nr, GFP_KERNEL)?;
        for (i, raw) in bytes.chunks_exact(irq_routing::ENTRY_SIZE).enumerate() {
            let raw = irq_routing::RawEntry::from_bytes(raw).ok_or(EINVAL)?;
            // KVM_X2APIC_API_USE_32BIT_IDS is not offered: 8-bit destinations.
            let entry =
                irq_routing::parse_entry(&raw, i as u32, mode, false).map_err(|_| EINVAL)?;
            table.push(entry, GFP_KERNEL)?;
        }
        irq_routing::finish(&mut table).map_err(|_| EINVAL)?;
        *self.routes.lock() = table;
        Ok(0)
    }

    /// `KVM_IRQ_LINE` and (`status`) `KVM_IRQ_LINE_STATUS`
    /// (`kvm_vm_ioctl_irq_line()`, `kvm_set_irq()`): the argument is read
    /// first (EFAULT); ENXIO without an in-kernel irqchip. The line of
    /// userspace's source is set on each of the GSI's routes (`set_gsi`),
    /// and the status, which `KVM_IRQ_LINE_STATUS` writes over `irq`, is
    /// what they returned together (`irq_routing::fold_status`).
    fn irq_line(&self, arg: usize, status: bool) -> Result<isize> {
        let [gsi, level]: [u32; 2] = abi::read_arg(arg)?;
        if self.irqchip_mode().is_none() {
            return Err(ENXIO);
        }
        let result = self.set_gsi(gsi, ioapic::SOURCE_USERSPACE, level != 0, status);
        if status {
            // `status` shares its union with `irq`, the struct's first word.
            let out = [result as u32, level];
            abi::write_arg(arg, &out)?;
        }
        Ok(0)
    }

    /// Source `source` sets `gsi`'s line to `level` (`kvm_set_irq()`) on
    /// each of its routes, in the table's order: an MSI is sent when the
    /// line is raised (a lowered one sends nothing, -1); a pin of the PIC
    /// or the IOAPIC follows the line. `line_status`: the caller is
    /// `KVM_IRQ_LINE_STATUS`. Returns the routes' statuses folded
    /// (`irq_routing::fold_status`): -1 if the GSI has no route.
    fn set_gsi(&self, gsi: u32, source: u32, level: bool, line_status: bool) -> i32 {
        use irq_routing::{
            Irqchip,
            Route, //
        };
        // Lock order: the routes, then a chip, then the APICs.
        let routes = self.routes.lock();
        let results = irq_routing::routes_for(&routes, gsi)
            .iter()
            .map(|e| match e.route {
                Route::Msi { msg, .. } => match irq_routing::msi_set(&msg, level, false) {
                    Ok(m) => {
                        let (irq, dest) = lapic::from_message(&m);
                        i32::try_from(self.deliver_irq(irq, &dest, None)).unwrap_or(i32::MAX)
                    }
                    Err(e) => e,
                },
                Route::Irqchip {
                    chip: Irqchip::Ioapic,
                    pin,
                } => self.ioapic_set_irq(pin, source, level, line_status),
                Route::Irqchip { .. } => e
                    .route
                    .pic_irq()
                    .map_or(-1, |irq| self.pic_set_irq(irq, source, level)),
            });
        irq_routing::fold_status(results)
    }

    /// An irqfd's signal (`irqfd_inject()`): userspace's source raises
    /// `gsi`'s line and lowers it again, so its MSIs are sent and its chip
    /// pins see an edge.
    pub(crate) fn raise_gsi(&self, gsi: u32) {
        self.set_gsi(gsi, ioapic::SOURCE_USERSPACE, true, false);
        self.set_gsi(gsi, ioapic::SOURCE_USERSPACE, false, false);
    }

    /// `KVM_IRQFD` (`kvm_irqfd()`): the argument is read (EFAULT), then
    /// checked (`pure::irq_routing::irqfd_request`). A deassign looks up the
    /// eventfd (EBADF, or EINVAL for another kind of file), unhooks every
    /// irqfd of this VM on it for that GSI (0 if there is none) and waits
    /// until none of their injections is left. An assign looks up the fd
    /// (EBADF, EINVAL), then with `KVM_IRQFD_FLAG_RESAMPLE` the resamplefd
    /// (EBADF, EINVAL), and hooks the fd (EBUSY if the eventfd has an irqfd
    /// already, of this VM or another). The GSI is not checked: one with
    /// no route raises nothing.
    fn irqfd(self: ArcBorrow<'_, Self>, arg: usize) -> Result<isize> {
        let req: uapi::kvm_irqfd = abi::read_arg(arg)?;
        let mode = self.irqchip_mode();
        let request = irq_routing::irqfd_request(req.flags, mode).map_err(|_| EINVAL)?;
        // The fds are __u32 in the ABI; the lookups take them as ints.
        let fd = req.fd as i32;
        if request == irq_routing::IrqfdRequest::Deassign {
            let eventfd = EventFd::from_fd(fd)?;
            let mut resampled = false;
            self.irqfds.lock().retain(|irqfd| {
                let matches = irqfd.is(&eventfd, req.gsi);
                if matches {
                    resampled |= irqfd.resampled_gsi().is_some();
                    Irqfd::detach(irqfd.as_arc_borrow());
                }
                !matches
            });
            irqfd::flush();
            if resampled {
                self.resampler_gone(req.gsi);
            }
            return Ok(0);
        }
        drop(EventFd::from_fd(fd)?);
        let resample = if req.flags & irq_routing::IRQFD_FLAG_RESAMPLE != 0 {
            Some(EventFd::from_fd(req.resamplefd as i32)?)
        } else {
            None
        };
        let mut irqfds = self.irqfds.lock();
        // Room first: once hooked, the irqfd must find its place.
        irqfds.reserve(1, GFP_KERNEL)?;
        let new = Irqfd::assign(self.into(), fd, req.gsi, resample)?;
        irqfds.push(new, GFP_KERNEL)?;
        Ok(0)
    }

    /// A resampling irqfd's signal: its GSI asserted from the resamplers'
    /// line source, until the guest acknowledges it.
    pub(crate) fn assert_resampled_gsi(&self, gsi: u32) {
        self.set_gsi(gsi, ioapic::SOURCE_IRQFD_RESAMPLE, true, false);
    }

    /// Whether an irqfd resamples `gsi` (it has an ack notifier).
    fn gsi_resampled(&self, gsi: u32) -> bool {
        self.irqfds
            .lock()
            .iter()
            .any(|i| i.resampled_gsi() == Some(gsi))
    }

    /// The guest acknowledged `gsi` (`irqfd_resampler_ack()`): if irqfds
    /// resample it, the line they asserted is lowered and each of their
    /// resamplefds signalled.
    fn resample_acked(&self, gsi: u32) {
        if !self.gsi_resampled(gsi) {
            return;
        }
        self.set_gsi(gsi, ioapic::SOURCE_IRQFD_RESAMPLE, false, false);
        for irqfd in self.irqfds.lock().iter() {
            if irqfd.resampled_gsi() == Some(gsi) {
                irqfd.signal_resample();
            }
        }
    }

    /// A resampling irqfd of `gsi` left: the last one lowers the line it
    /// may have left asserted (`irqfd_resampler_shutdown()`).
    fn resampler_gone(&self, gsi: u32) {
        if !self.gsi_resampled(gsi) {
            self.set_gsi(gsi, ioapic::SOURCE_IRQFD_RESAMPLE, false, false);
        }
    }

    /// Removes `irqfd` from the VM's list (its eventfd is being closed).
    pub(crate) fn forget_irqfd(&self, irqfd: &Arc<Irqfd>) {
        self.irqfds.lock().retain(|i| !Arc::ptr_eq(i, irqfd));
        if let Some(gsi) = irqfd.resampled_gsi() {
            self.resampler_gone(gsi);
        }
    }

    /// With the split irqchip, whether the EOI of `vector` by `apic` goes to
    /// userspace's IOAPIC (`KVM_EXIT_IOAPIC_EOI`): the vector is that of a
    /// level-triggered MSI route of one of its pins whose destination is
    /// this APIC (KVM's `ioapic_handled_vectors`, `kvm_scan_ioapic_routes()`).
    pub(crate) fn ioapic_handles(&self, apic: &VcpuApic, vector: u8) -> bool {
        let pins = self.vcpus.lock().ioapic_pins;
        let routes = self.routes.lock();
        irq_routing::split_eoi_vectors(&routes, pins, false, |irq| {
            let (_, dest) = lapic::from_message(irq);
            apic.with(|s| s.lapic.matches(&dest, false, true))
        })
        .contains(vector)
    }

    /// The hardware state of a new vCPU.
    pub(crate) fn new_arch_vcpu(
        &self,
        bsp: bool,
        shadow: bool,
    ) -> Result<KBox<dyn crate::backend::ArchVcpu>> {
        self.hw.new_vcpu(bsp, shadow)
    }

    fn create_vcpu(self: ArcBorrow<'_, Self>, id: usize) -> Result<isize> {
        let id = u32::try_from(id)
            .ok()
            .filter(|&id| id < abi::MAX_VCPU_ID)
            .ok_or(EINVAL)?;
        let (word, bit) = ((id / 64) as usize, 1u64 << (id % 64));
        {
            let mut vcpus = self.vcpus.lock();
            let slot = vcpus.ids.get_mut(word).ok_or(EINVAL)?;
            if *slot & bit != 0 {
                return Err(EEXIST);
            }
            *slot |= bit;
        }
        let vm: Arc<Vm> = self.into();
        let created = Vcpu::new(vm, id).and_then(fd::create);
        match created {
            Ok(fd) => Ok(fd as isize),
            Err(e) => {
                if let Some(slot) = self.vcpus.lock().ids.get_mut(word) {
                    *slot &= !bit;
                }
                Err(e)
            }
        }
    }

    /// `KVM_GET_DIRTY_LOG`: the slot's bitmap, one bit per page written
    /// since the last call, `(npages + 63) / 64` 64-bit words.
    fn get_dirty_log(&self, arg: usize) -> Result<isize> {
        let log: uapi::kvm_dirty_log = abi::read_arg(arg)?;
        let (as_id, id) = (log.slot >> 16, log.slot as u16);
        if as_id != 0 || u32::from(id) >= crate::pure::memslot::USER_MEM_SLOTS {
            return Err(EINVAL);
        }
        let (bitmap, unmapped) = self.mmu.lock().take_dirty_log(id)?;
        // No vCPU keeps a writable translation of a page the bitmap does
        // not show as written (a vCPU in guest mode is made to exit).
        drop(unmapped);
        // SAFETY: reading the `u64` view of the union (`dirty_bitmap` and
        // `padding2` share it), which every bit pattern is valid for.
        let dest = unsafe { log.__bindgen_anon_1.padding2 } as usize;
        let mut writer = UserSlice::new(UserPtr::from_addr(dest), bitmap.len() * 8).writer();
        for word in bitmap.iter() {
            writer.write(word)?;
        }
        Ok(0)
    }

    /// `KVM_SET_USER_MEMORY_REGION` and (`v2`) `KVM_SET_USER_MEMORY_REGION2`,
    /// whose struct begins with the first one's fields (asserted in `abi`).
    /// The second's guest_memfd fields only count with `KVM_MEM_GUEST_MEMFD`,
    /// a flag rkvm (like KVM for a VM without private memory) refuses with
    /// EINVAL; all of it must be readable (EFAULT), as KVM copies it whole.
    fn set_memory_region(&self, arg: usize, v2: bool) -> Result<isize> {
        if v2 {
            let _whole: uapi::kvm_userspace_memory_region2 = abi::read_arg(arg)?;
        }
        let r: uapi::kvm_userspace_memory_region = abi::read_arg(arg)?;
        let region = Region {
            slot: r.slot,
            flags: r.flags,
            guest_phys_addr: r.guest_phys_addr,
            memory_size: r.memory_size,
            userspace_addr: r.userspace_addr,
        };
        let unmapped = self.mmu.lock().set_region(&region)?;
        // Once no vCPU can reach the old translations (a vCPU in guest mode
        // is made to exit), the tables and the deleted slot's pages go.
        drop(unmapped);
        Ok(0)
    }

    /// `KVM_SET_IDENTITY_MAP_ADDR`: only before the first vCPU (EINVAL
    /// after, checked before the argument is read, as KVM does). Where
    /// kvm_intel would put its identity-mapped page table for real mode
    /// without unrestricted guest; rkvm does not need one (SVM, VMX with
    /// unrestricted guest, shadow paging's own tables) and, like KVM on
    /// AMD, takes the address and does nothing with it.
    fn set_identity_map_addr(&self, arg: usize) -> Result<isize> {
        if self.vcpus.lock().any() {
            return Err(EINVAL);
        }
        let _addr: u64 = abi::read_arg(arg)?;
        Ok(0)
    }
}

impl FdOps for Vm {
    const NAME: &'static CStr = c"kvm-vm";

    /// As KVM's `kvm_irqfd_release()`: the irqfds end with the VM's file,
    /// even while vCPU files keep the VM, and none of their work is left.
    /// So does the PIT, which holds the VM (see `vm::pit`).
    fn release(this: ArcBorrow<'_, Self>) {
        let irqfds = core::mem::take(&mut *this.irqfds.lock());
        for irqfd in &irqfds {
            Irqfd::detach(irqfd.as_arc_borrow());
        }
        drop(irqfds);
        this.release_pit();
        irqfd::flush();
    }

    fn ioctl(this: ArcBorrow<'_, Self>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        this.check_owner()?;
        match cmd {
            // The VM's own MMU mode; the rest as on the system fd.
            abi::sys::CHECK_EXTENSION if arg == crate::pure::ioctl::KVM_CAP_RKVM_MMU as usize => {
                use crate::pure::ioctl::mmu_mode;
                Ok(if this.shadow_paging() {
                    mmu_mode::SHADOW
                } else {
                    mmu_mode::TDP
                } as isize)
            }
            abi::sys::CHECK_EXTENSION => Ok(abi::check_extension(arg) as isize),
            abi::vm::CREATE_VCPU => this.create_vcpu(arg),
            abi::vm::SET_USER_MEMORY_REGION => this.set_memory_region(arg, false),
            abi::vm::SET_USER_MEMORY_REGION2 => this.set_memory_region(arg, true),
            abi::vm::SET_IDENTITY_MAP_ADDR => this.set_identity_map_addr(arg),
            abi::vcpu::GET_TSC_KHZ => abi::get_tsc_khz(),
            abi::vm::GET_CLOCK => {
                abi::write_arg(arg, &this.clock.get())?;
                Ok(0)
            }
            abi::vm::SET_CLOCK => {
                let data: uapi::kvm_clock_data = abi::read_arg(arg)?;
                this.clock.set(&data)?;
                Ok(0)
            }
            abi::vcpu::SET_TSC_KHZ => abi::set_tsc_khz(arg),
            abi::vm::GET_DIRTY_LOG => this.get_dirty_log(arg),
            abi::vm::GET_STATS_FD => StatsFile::create(this.mmu_stats.clone(), None),
            abi::vm::ENABLE_CAP => this.enable_cap(arg),
            abi::vm::SIGNAL_MSI => this.signal_msi(arg),
            abi::vm::IOEVENTFD => this.ioeventfd(arg),
            abi::vm::REGISTER_COALESCED_MMIO => this.coalesced_mmio(arg, true),
            abi::vm::UNREGISTER_COALESCED_MMIO => this.coalesced_mmio(arg, false),
            // Neither SVM nor VMX with unrestricted guest needs the real-mode
            // TSS that VMX without it uses: accepted and ignored, as KVM
            // does on AMD.
            abi::vm::SET_TSS_ADDR => Ok(0),
            abi::vm::SET_GSI_ROUTING => this.set_gsi_routing(arg),
            abi::vm::IRQ_LINE => this.irq_line(arg, false),
            abi::vm::IRQ_LINE_STATUS => this.irq_line(arg, true),
            abi::vm::IRQFD => this.irqfd(arg),
            abi::vm::CREATE_IRQCHIP if crate::module_parameters::irqchip.value() => {
                this.create_irqchip()
            }
            abi::vm::CREATE_PIT2 => this.create_pit(arg),
            abi::vm::GET_PIT2 => this.get_pit2(arg),
            abi::vm::SET_PIT2 => this.set_pit2(arg),
            abi::vm::GET_PIT => this.get_pit(arg),
            abi::vm::SET_PIT => this.set_pit(arg),
            abi::vm::REINJECT_CONTROL => this.reinject_control(arg),
            abi::vm::GET_IRQCHIP => this.irqchip_state(arg, false),
            abi::vm::SET_IRQCHIP => this.irqchip_state(arg, true),
            // kvm_arch_vm_ioctl(): an unknown VM request is ENOTTY.
            _ => Err(ENOTTY),
        }
    }
}

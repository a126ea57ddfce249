// SPDX-License-Identifier: GPL-2.0

//! `rkvm run --save FILE` and `--restore FILE`: the guest's memory, its
//! vCPU's and VM's state through the KVM ioctls every VMM uses for this,
//! and the devices' state, in the format of [`crate::snapshot`].
//!
//! What is saved and set back, in the order QEMU sets it (KVM checks some
//! of it against what came before: CPUID first, EFER through the sregs
//! before the MSRs):
//!
//! | section | ioctl                                   |
//! |---------|-----------------------------------------|
//! | `CPUI`  | KVM_GET/SET_CPUID2                      |
//! | `MEM `  | guest memory, the pages not all zero    |
//! | `REGS`  | KVM_GET/SET_REGS                        |
//! | `XSAV`  | KVM_GET/SET_XSAVE (with KVM_CAP_XSAVE)  |
//! | `FPU `  | KVM_GET/SET_FPU (used without XSAVE)    |
//! | `XCRS`  | KVM_GET/SET_XCRS (with KVM_CAP_XCRS)    |
//! | `SREG`  | KVM_GET/SET_SREGS                       |
//! | `MSRS`  | KVM_GET/SET_MSRS, the device's MSR list |
//! | `EVNT`  | KVM_GET/SET_VCPU_EVENTS                 |
//! | `MPST`  | KVM_GET/SET_MP_STATE                    |
//! | `DBGR`  | KVM_GET/SET_DEBUGREGS                   |
//! | `CLCK`  | KVM_GET/SET_CLOCK (kvmclock goes on from the saved time) |
//!
//! The devices: `PIC `, `PIT ` (its times relative to the save, so the
//! guest's timer does not see the time between save and restore), `CMOS`,
//! `UART` (COM1), `8042`. Virtio devices are not saved (`--save` refuses
//! them).
//!
//! Across devices (saved through kvm_amd, resumed through rkvm or back):
//! the structs are the same ABI; the MSRs are those both devices list, and
//! the restore says which it could not set back because the device it
//! runs on does not list them.

use std::path::{Path, PathBuf};

use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_debugregs, kvm_fpu, kvm_mp_state, kvm_msr_entry,
    kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES,
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SHADOW,
};
use kvm_ioctls::Cap;
use vm_memory::{Bytes, GuestAddress};
use zerocopy::IntoBytes;

use super::board::{now_ns, Board};
use super::vm::Vm;
use crate::error::{Error, Result};
use crate::snapshot::{self, Dec, Enc, FormatError, Reader, Tag, Writer};

const CONF: &Tag = b"CONF";
const MEM: &Tag = b"MEM ";
const CPUID: &Tag = b"CPUI";
const REGS: &Tag = b"REGS";
const XSAVE: &Tag = b"XSAV";
const FPU: &Tag = b"FPU ";
const XCRS: &Tag = b"XCRS";
const SREGS: &Tag = b"SREG";
const MSRS: &Tag = b"MSRS";
const EVENTS: &Tag = b"EVNT";
const MP_STATE: &Tag = b"MPST";
const DEBUGREGS: &Tag = b"DBGR";
const CLOCK: &Tag = b"CLCK";
const PIC: &Tag = b"PIC ";
const PIT: &Tag = b"PIT ";
const CMOS: &Tag = b"CMOS";
const UART: &Tag = b"UART";
const I8042: &Tag = b"8042";

/// The largest `struct kvm_xsave` KVM_GET/SET_XSAVE may use: beyond 4 KiB
/// (KVM_CAP_XSAVE2 larger, AMX) the 4 KiB struct is too small for them.
const XSAVE_SIZE: i32 = size_of::<kvm_xsave>() as i32;

/// Writes the guest to `path`; its last exit must be complete (the run
/// loop's `Stop::Save`). Returns the size of the file.
pub fn save(path: &Path, vm: &mut Vm, board: &Board) -> Result<usize> {
    let mut w = Writer::new();
    let vcpu = &vm.vcpu;
    let mut conf = Enc::default();
    conf.u64(vm.mem_size);
    w.section(CONF, &conf.0);

    let cpuid = vcpu
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::ioctl("KVM_GET_CPUID2"))?;
    w.section(CPUID, cpuid.as_slice().as_bytes());
    let mem = snapshot::encode_pages(vm.mem_size, |gpa, page| {
        vm.mem.read_slice(page, GuestAddress(gpa))
    })
    .map_err(Error::guest_memory("saving guest memory"))?;
    w.section(MEM, &mem);
    let regs = vcpu.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))?;
    w.section(REGS, regs.as_bytes());
    if xsave_usable(vm) {
        let xsave = vcpu.get_xsave().map_err(Error::ioctl("KVM_GET_XSAVE"))?;
        w.section(XSAVE, xsave.as_bytes());
    }
    let fpu = vcpu.get_fpu().map_err(Error::ioctl("KVM_GET_FPU"))?;
    w.section(FPU, &encode_fpu(&fpu));
    if vm.kvm.check_extension(Cap::Xcrs) {
        let xcrs = vcpu.get_xcrs().map_err(Error::ioctl("KVM_GET_XCRS"))?;
        w.section(XCRS, xcrs.as_bytes());
    }
    let sregs = vcpu.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))?;
    w.section(SREGS, sregs.as_bytes());
    w.section(MSRS, read_msrs(vm)?.as_slice().as_bytes());
    let events = vcpu
        .get_vcpu_events()
        .map_err(Error::ioctl("KVM_GET_VCPU_EVENTS"))?;
    w.section(EVENTS, events.as_bytes());
    let mp_state = vcpu
        .get_mp_state()
        .map_err(Error::ioctl("KVM_GET_MP_STATE"))?;
    w.section(MP_STATE, mp_state.as_bytes());
    let debugregs = vcpu
        .get_debug_regs()
        .map_err(Error::ioctl("KVM_GET_DEBUGREGS"))?;
    w.section(DEBUGREGS, debugregs.as_bytes());
    let clock = vm.fd.get_clock().map_err(Error::ioctl("KVM_GET_CLOCK"))?;
    w.section(CLOCK, clock.as_bytes());

    let now = now_ns();
    let device = |save: &dyn Fn(&mut Enc)| {
        let mut e = Enc::default();
        save(&mut e);
        e.0
    };
    w.section(PIC, &device(&|e| board.pic.borrow().save(e)));
    w.section(PIT, &device(&|e| board.pit.borrow().save(e, now)));
    w.section(CMOS, &device(&|e| board.cmos.borrow().save(e)));
    w.section(UART, &device(&|e| board.uart.borrow().save(e)));
    w.section(I8042, &device(&|e| board.i8042.borrow().save(e)));

    let bytes = w.into_bytes();
    std::fs::write(path, &bytes).map_err(|source| Error::File {
        path: path.into(),
        source,
    })?;
    Ok(bytes.len())
}

/// A snapshot read from its file.
pub struct Snapshot {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Snapshot {
    pub fn read(path: &Path) -> Result<Snapshot> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.into(),
            source,
        })?;
        let s = Snapshot {
            path: path.into(),
            bytes,
        };
        s.reader()?; // refuse a bad file before making a VM for it
        Ok(s)
    }

    fn reader(&self) -> Result<Reader<'_>> {
        Reader::parse(&self.bytes).map_err(|e| self.error(e))
    }

    fn error(&self, source: FormatError) -> Error {
        Error::Snapshot {
            path: self.path.clone(),
            source,
        }
    }

    /// The guest's memory size in MiB, for the VM to restore it into.
    pub fn mem_mib(&self) -> Result<usize> {
        let r = self.reader()?;
        let mut d = Dec::new(r.get(CONF).map_err(|e| self.error(e))?, "CONF");
        let size = d.u64().map_err(|e| self.error(e))?;
        if size == 0 || size % (1 << 20) != 0 {
            return Err(self.error(snapshot::bad(CONF, format!("memory size {size}"))));
        }
        usize::try_from(size >> 20).map_err(|_| Error::MemTooLarge)
    }

    /// Sets `vm` (new, never run, memory of [`Snapshot::mem_mib`]) and
    /// `board` (new) to the saved guest. Returns the saved MSRs the device
    /// does not list, left as they were.
    pub fn restore(&self, vm: &mut Vm, board: &mut Board) -> Result<Vec<u32>> {
        let r = self.reader()?;
        let e = |e| self.error(e);
        for (gpa, page) in
            snapshot::decode_pages(MEM, r.get(MEM).map_err(e)?, vm.mem_size).map_err(e)?
        {
            vm.mem
                .write_slice(page, GuestAddress(gpa))
                .map_err(Error::guest_memory("restoring guest memory"))?;
        }
        let vcpu = &vm.vcpu;

        let entries: Vec<kvm_cpuid_entry2> = r.get_structs(CPUID).map_err(e)?;
        let cpuid = CpuId::from_entries(&entries).map_err(|e| Error::Cpuid(format!("{e:?}")))?;
        vcpu.set_cpuid2(&cpuid)
            .map_err(Error::ioctl("KVM_SET_CPUID2"))?;

        let regs: kvm_regs = r.get_struct(REGS).map_err(e)?;
        vcpu.set_regs(&regs).map_err(Error::ioctl("KVM_SET_REGS"))?;
        // A device with XSAVE gets the x87/SSE state through KVM_SET_XSAVE
        // even from a snapshot without it (a device without XSAVE made
        // it): kvm_amd keeps KVM_SET_FPU's registers only where the XSAVE
        // header already marks x87 and SSE state in use, and on a new vCPU
        // it does not (the restored guest found its x87 stack empty).
        if xsave_usable(vm) {
            let xsave: kvm_xsave = match r.optional(XSAVE) {
                Some(_) => r.get_struct(XSAVE).map_err(e)?,
                None => xsave_from_fpu(&decode_fpu(r.get(FPU).map_err(e)?).map_err(e)?),
            };
            // SAFETY: `xsave_usable` checked that the device's XSAVE state
            // fits the 4 KiB `kvm_xsave` (KVM_CAP_XSAVE2), so KVM reads no
            // more than the struct holds.
            unsafe { vcpu.set_xsave(&xsave) }.map_err(Error::ioctl("KVM_SET_XSAVE"))?;
        } else {
            let fpu = decode_fpu(r.get(FPU).map_err(e)?).map_err(e)?;
            vcpu.set_fpu(&fpu).map_err(Error::ioctl("KVM_SET_FPU"))?;
        }
        if r.optional(XCRS).is_some() && vm.kvm.check_extension(Cap::Xcrs) {
            let xcrs: kvm_xcrs = r.get_struct(XCRS).map_err(e)?;
            vcpu.set_xcrs(&xcrs).map_err(Error::ioctl("KVM_SET_XCRS"))?;
        }
        let sregs: kvm_sregs = r.get_struct(SREGS).map_err(e)?;
        vcpu.set_sregs(&sregs)
            .map_err(Error::ioctl("KVM_SET_SREGS"))?;
        let skipped = write_msrs(vm, &r.get_structs(MSRS).map_err(e)?)?;
        let vcpu = &vm.vcpu;
        let mut events: kvm_vcpu_events = r.get_struct(EVENTS).map_err(e)?;
        // What both devices take: the NMI state and the interrupt shadow
        // (not SMM, which neither rkvm nor this VMM uses).
        events.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW;
        vcpu.set_vcpu_events(&events)
            .map_err(Error::ioctl("KVM_SET_VCPU_EVENTS"))?;
        let mp_state: kvm_mp_state = r.get_struct(MP_STATE).map_err(e)?;
        vcpu.set_mp_state(mp_state)
            .map_err(Error::ioctl("KVM_SET_MP_STATE"))?;
        let mut debugregs: kvm_debugregs = r.get_struct(DEBUGREGS).map_err(e)?;
        debugregs.flags = 0;
        vcpu.set_debug_regs(&debugregs)
            .map_err(Error::ioctl("KVM_SET_DEBUGREGS"))?;
        let saved: kvm_clock_data = r.get_struct(CLOCK).map_err(e)?;
        // The clock goes on from where it was (no KVM_CLOCK_REALTIME: the
        // guest does not see the time it spent saved).
        let clock = kvm_clock_data {
            clock: saved.clock,
            ..Default::default()
        };
        vm.fd
            .set_clock(&clock)
            .map_err(Error::ioctl("KVM_SET_CLOCK"))?;

        let now = now_ns();
        let device = |tag: &Tag, restore: &mut dyn FnMut(&mut Dec) -> Result<(), FormatError>| {
            let bytes = r.get(tag).map_err(e)?;
            let mut d = Dec::new(bytes, snapshot::tag_name(tag));
            restore(&mut d).and_then(|()| d.end()).map_err(e)
        };
        device(PIC, &mut |d| board.pic.borrow_mut().restore(d))?;
        device(PIT, &mut |d| board.pit.borrow_mut().restore(d, now))?;
        device(CMOS, &mut |d| board.cmos.borrow_mut().restore(d))?;
        device(UART, &mut |d| {
            let line = crate::devices::serial::PicLine {
                pic: board.pic.clone(),
                irq: crate::devices::serial::IRQ,
            };
            board.uart.borrow_mut().restore(d, line, std::io::stdout())
        })?;
        device(I8042, &mut |d| board.i8042.borrow_mut().restore(d))?;
        Ok(skipped)
    }
}

/// KVM_GET/SET_XSAVE with the 4 KiB struct: offered, and enough for the
/// device's XSAVE state.
fn xsave_usable(vm: &Vm) -> bool {
    vm.kvm.check_extension(Cap::Xsave)
        && vm.kvm.check_extension_raw(Cap::Xsave2 as u64) <= XSAVE_SIZE
}

/// Every MSR of the device's list that it lets userspace read.
fn read_msrs(vm: &Vm) -> Result<Vec<kvm_msr_entry>> {
    let list = vm
        .kvm
        .get_msr_index_list()
        .map_err(Error::ioctl("KVM_GET_MSR_INDEX_LIST"))?;
    let mut out = Vec::new();
    for &index in list.as_slice() {
        let mut msrs = one_msr(index, 0)?;
        // KVM_GET_MSRS stops at the first MSR it cannot read: one at a
        // time, keeping those it read.
        if vm.vcpu.get_msrs(&mut msrs) == Ok(1) {
            out.push(msrs.as_slice()[0]);
        }
    }
    Ok(out)
}

/// Sets the saved MSRs the device lists; returns those it does not.
fn write_msrs(vm: &Vm, saved: &[kvm_msr_entry]) -> Result<Vec<u32>> {
    let list = vm
        .kvm
        .get_msr_index_list()
        .map_err(Error::ioctl("KVM_GET_MSR_INDEX_LIST"))?;
    let mut skipped = Vec::new();
    for entry in saved {
        if !list.as_slice().contains(&entry.index) {
            skipped.push(entry.index);
            continue;
        }
        // Only what differs is written: a device may refuse a write of
        // the value it already holds (kvm_amd, MSR_KVM_POLL_CONTROL when
        // the guest's CPUID has no such feature).
        let mut current = one_msr(entry.index, 0)?;
        if vm.vcpu.get_msrs(&mut current) == Ok(1) && current.as_slice()[0].data == entry.data {
            continue;
        }
        let msrs = one_msr(entry.index, entry.data)?;
        match vm.vcpu.set_msrs(&msrs) {
            Ok(1) => {}
            Ok(_) => {
                return Err(Error::RestoreMsr {
                    index: entry.index,
                    value: entry.data,
                })
            }
            Err(source) => {
                return Err(Error::Ioctl {
                    ioctl: "KVM_SET_MSRS",
                    source,
                })
            }
        }
    }
    Ok(skipped)
}

/// `struct kvm_fpu` field by field (kvm-bindings gives it no byte view).
fn encode_fpu(f: &kvm_fpu) -> Vec<u8> {
    let mut e = Enc::default();
    f.fpr.iter().for_each(|r| {
        e.bytes(r);
    });
    e.u16(f.fcw).u16(f.fsw).u8(f.ftwx).u16(f.last_opcode);
    e.u64(f.last_ip).u64(f.last_dp);
    f.xmm.iter().for_each(|r| {
        e.bytes(r);
    });
    e.u32(f.mxcsr);
    e.0
}

fn decode_fpu(bytes: &[u8]) -> Result<kvm_fpu, FormatError> {
    let mut d = Dec::new(bytes, "FPU");
    let mut f = kvm_fpu::default();
    for r in &mut f.fpr {
        *r = d.array()?;
    }
    f.fcw = d.u16()?;
    f.fsw = d.u16()?;
    f.ftwx = d.u8()?;
    f.last_opcode = d.u16()?;
    f.last_ip = d.u64()?;
    f.last_dp = d.u64()?;
    for r in &mut f.xmm {
        *r = d.array()?;
    }
    f.mxcsr = d.u32()?;
    d.end()?;
    Ok(f)
}

/// The XSAVE image of x87 and SSE state alone: the FXSAVE layout of the
/// legacy region (Intel SDM vol. 1, 10.5.1) and an XSAVE header whose
/// XSTATE_BV says both are in use.
fn xsave_from_fpu(f: &kvm_fpu) -> kvm_xsave {
    let mut image = [0u8; size_of::<kvm_xsave>()];
    let mut put = |at: usize, bytes: &[u8]| image[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &f.fcw.to_le_bytes());
    put(2, &f.fsw.to_le_bytes());
    put(4, &[f.ftwx]);
    put(6, &f.last_opcode.to_le_bytes());
    put(8, &f.last_ip.to_le_bytes());
    put(16, &f.last_dp.to_le_bytes());
    put(24, &f.mxcsr.to_le_bytes());
    for (i, r) in f.fpr.iter().enumerate() {
        put(32 + 16 * i, r);
    }
    for (i, r) in f.xmm.iter().enumerate() {
        put(160 + 16 * i, r);
    }
    put(512, &XFEATURES_FP_SSE.to_le_bytes()); // XSTATE_BV; XCOMP_BV 0: standard format
    let mut xsave = kvm_xsave::default();
    for (word, bytes) in xsave.region.iter_mut().zip(image.chunks(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    xsave
}

/// XSTATE_BV's bits for x87 (0) and SSE (1) state.
const XFEATURES_FP_SSE: u64 = 0b11;

fn one_msr(index: u32, data: u64) -> Result<Msrs> {
    Msrs::from_entries(&[kvm_msr_entry {
        index,
        data,
        ..Default::default()
    }])
    .map_err(|e| Error::Cpuid(format!("MSR list: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_fpu() -> kvm_fpu {
        let mut f = kvm_fpu {
            fcw: 0x37f,
            fsw: 0x3800, // TOP = 7: one value pushed
            ftwx: 0x80,
            last_opcode: 0x5de,
            last_ip: 0x1016,
            last_dp: 0x10c4,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        f.fpr[0][..8].copy_from_slice(&0x8000_0000_0000_0000u64.to_le_bytes());
        f.fpr[0][8..10].copy_from_slice(&0x4009u16.to_le_bytes()); // 1081.0's exponent
        f.xmm[15] = [0xab; 16];
        f
    }

    #[test]
    fn fpu_state_round_trips_field_by_field() {
        let f = sample_fpu();
        let back = decode_fpu(&encode_fpu(&f)).unwrap();
        assert_eq!(encode_fpu(&back), encode_fpu(&f));
        assert_eq!(
            (back.fsw, back.ftwx, back.fpr[0], back.xmm[15]),
            (f.fsw, f.ftwx, f.fpr[0], f.xmm[15])
        );
        assert!(decode_fpu(&encode_fpu(&f)[1..]).is_err());
    }

    #[test]
    fn xsave_image_of_fpu_state_is_fxsave_layout_with_x87_and_sse_in_use() {
        let x = xsave_from_fpu(&sample_fpu());
        let bytes = x.region.as_bytes();
        assert_eq!(&bytes[0..2], &0x37fu16.to_le_bytes());
        assert_eq!(&bytes[2..4], &0x3800u16.to_le_bytes());
        assert_eq!(bytes[4], 0x80);
        assert_eq!(&bytes[24..28], &0x1f80u32.to_le_bytes());
        assert_eq!(&bytes[32 + 8..32 + 10], &0x4009u16.to_le_bytes(), "ST0");
        assert_eq!(&bytes[160 + 15 * 16..160 + 16 * 16], &[0xab; 16], "XMM15");
        assert_eq!(&bytes[512..520], &3u64.to_le_bytes(), "XSTATE_BV: x87, SSE");
        assert_eq!(&bytes[520..528], &[0; 8], "XCOMP_BV: standard format");
    }
}

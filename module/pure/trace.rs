// SPDX-License-Identifier: GPL-2.0

//! The exit trace: one fixed-size record per exit from guest mode, kept in a
//! bounded ring per vCPU (the oldest record is overwritten), and how to read
//! it back. The module writes records; the `rkvm` tool reads the ring's
//! bytes (debugfs `vcpuN/exits`) and decodes them with the same code.
//!
//! A record is 64 bytes, native-endian u64 words:
//!
//! ```text
//! 0  seq       1, 2, 3 ... on this vCPU (0: an empty slot)
//! 1  time_ns   monotonic clock at the exit
//! 2  code      the hardware exit code (SVM EXITCODE)
//! 3  info1     EXITINFO1
//! 4  info2     EXITINFO2
//! 5  rip       guest RIP at the exit
//! 6  guest_ns  time in guest mode before this exit
//! 7  outcome   low 32 bits: KVM exit reason if the exit went to user
//!              mode, bit 32 set then; else handled in the kernel
//! ```

use super::{
    vmcb::{
        exit,
        IoExit, //
    },
    vmcs, //
};

/// One exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitRecord {
    pub seq: u64,
    pub time_ns: u64,
    pub code: u64,
    pub info1: u64,
    pub info2: u64,
    pub rip: u64,
    pub guest_ns: u64,
    pub outcome: u64,
}

/// Bytes per record.
pub const RECORD_SIZE: usize = 64;
/// Records per vCPU ring.
pub const RING_RECORDS: usize = 512;
/// `outcome` bit: the exit was returned to user mode.
pub const TO_USER: u64 = 1 << 32;

impl ExitRecord {
    /// The record as bytes.
    pub fn to_bytes(self) -> [u8; RECORD_SIZE] {
        let words = [
            self.seq,
            self.time_ns,
            self.code,
            self.info1,
            self.info2,
            self.rip,
            self.guest_ns,
            self.outcome,
        ];
        let mut out = [0u8; RECORD_SIZE];
        for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        out
    }

    /// A record from its bytes (`None` if `b` is not 64 bytes long).
    pub fn from_bytes(b: &[u8]) -> Option<ExitRecord> {
        if b.len() != RECORD_SIZE {
            return None;
        }
        let w = |i: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&b[8 * i..8 * i + 8]);
            u64::from_ne_bytes(word)
        };
        Some(ExitRecord {
            seq: w(0),
            time_ns: w(1),
            code: w(2),
            info1: w(3),
            info2: w(4),
            rip: w(5),
            guest_ns: w(6),
            outcome: w(7),
        })
    }

    /// The KVM exit reason, if the exit went to user mode.
    pub fn user_exit(&self) -> Option<u32> {
        (self.outcome & TO_USER != 0).then_some(self.outcome as u32)
    }
}

/// The slot of exit number `seq` (1-based) in a ring of `len` records.
pub fn slot_of(seq: u64, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    (seq.wrapping_sub(1) % len as u64) as usize
}

/// Stores `record` in `ring` (a ring of `ring.len()` records) as exit
/// number `seq` (1-based), in slot [`slot_of`].
pub fn store(ring: &mut [ExitRecord], seq: u64, record: ExitRecord) {
    if seq == 0 {
        return;
    }
    if let Some(r) = ring.get_mut(slot_of(seq, ring.len())) {
        *r = ExitRecord { seq, ..record };
    }
}

/// The records of a ring's bytes with `seq` above `after`, oldest first.
pub fn newer(bytes: &[u8], after: u64) -> impl Iterator<Item = ExitRecord> + '_ {
    let mut min_seq = u64::MAX;
    for r in bytes
        .chunks_exact(RECORD_SIZE)
        .filter_map(ExitRecord::from_bytes)
    {
        if r.seq > after && r.seq < min_seq {
            min_seq = r.seq;
        }
    }
    // The ring holds consecutive sequence numbers: walk from the oldest.
    let n = if min_seq == u64::MAX {
        0
    } else {
        (bytes.len() / RECORD_SIZE) as u64
    };
    (0..n).filter_map(move |i| {
        let seq = min_seq.checked_add(i)?;
        let slot = ((seq - 1) % n) as usize;
        let r = ExitRecord::from_bytes(bytes.get(slot * RECORD_SIZE..(slot + 1) * RECORD_SIZE)?)?;
        (r.seq == seq).then_some(r)
    })
}

/// Raw exit codes of the VMX backend are `VMX_EXIT_TAG | basic exit
/// reason`: records and counters keep one `u64` code for both vendors.
pub const VMX_EXIT_TAG: u64 = 1 << 32;

/// The code as the vendor's manual numbers it (VMX: the basic exit reason,
/// without the tag).
pub fn manual_code(code: u64) -> u64 {
    code & !VMX_EXIT_TAG
}

/// The name of a raw exit code of either backend.
pub fn exit_name(code: u64) -> &'static str {
    if code & VMX_EXIT_TAG != 0 {
        vmcs::reason_name(code as u16)
    } else {
        svm_exit_name(code)
    }
}

/// The exit code of an intercepted page fault (shadow paging).
const PF_EXIT: u64 = exit::EXCP_BASE + 14;

/// The SVM exit code's name, as the AMD manual (APM vol. 2, appendix C) and
/// Linux's `SVM_EXIT_REASONS` spell them.
pub fn svm_exit_name(code: u64) -> &'static str {
    match code {
        exit::DR_READ_BASE..=0x2f => "read_dr",
        exit::DR_WRITE_BASE..=exit::DR_WRITE_LAST => "write_dr",
        0x00..=0x0f => "read_cr",
        0x10..=0x1f => "write_cr",
        0x41 => "excp_db",
        0x4e => "excp_pf",
        exit::EXCP_BASE..=0x5f => "exception",
        exit::INTR => "intr",
        exit::NMI => "nmi",
        exit::SMI => "smi",
        exit::INIT => "init",
        exit::VINTR => "vintr",
        exit::CPUID => "cpuid",
        exit::IRET => "iret",
        exit::INVD => "invd",
        exit::HLT => "hlt",
        exit::INVLPG => "invlpg",
        exit::IOIO => "io",
        exit::MSR => "msr",
        exit::TASK_SWITCH => "task_switch",
        exit::SHUTDOWN => "shutdown",
        exit::VMRUN => "vmrun",
        exit::VMMCALL => "vmmcall",
        exit::WBINVD => "wbinvd",
        exit::MONITOR => "monitor",
        exit::MWAIT => "mwait",
        0x8d => "xsetbv",
        exit::NPF => "npf",
        exit::INVALID => "invalid",
        _ => "other",
    }
}

/// Counters per hardware exit code: one for each SVM code below 0xa0 (all
/// the architectural intercepts), one for NPF (0x400), one for each VMX
/// basic exit reason below 80, one for the rest.
pub const EXIT_BUCKETS: usize = 0xa1 + VMX_REASONS + 1;
/// VMX basic exit reasons counted one by one.
const VMX_REASONS: usize = 80;

/// The counter of exit code `code`.
pub fn exit_bucket(code: u64) -> usize {
    const OTHER: usize = EXIT_BUCKETS - 1;
    match code {
        0..=0x9f => code as usize,
        exit::NPF => 0xa0,
        c if c & VMX_EXIT_TAG != 0 && ((c as u16) as usize) < VMX_REASONS => {
            0xa1 + (c as u16) as usize
        }
        _ => OTHER,
    }
}

/// The exit code a counter stands for (`None` for "the rest").
pub fn bucket_code(bucket: usize) -> Option<u64> {
    match bucket {
        0..=0x9f => Some(bucket as u64),
        0xa0 => Some(exit::NPF),
        b if b > 0xa0 && b < EXIT_BUCKETS - 1 => Some(VMX_EXIT_TAG | (b - 0xa1) as u64),
        _ => None,
    }
}

/// The KVM exit reason's name (`KVM_EXIT_*` in lower case).
pub fn kvm_exit_name(reason: u32) -> &'static str {
    match reason {
        0 => "unknown",
        2 => "io",
        4 => "debug",
        5 => "hlt",
        6 => "mmio",
        7 => "irq_window_open",
        8 => "shutdown",
        9 => "fail_entry",
        10 => "intr",
        17 => "internal_error",
        _ => "other",
    }
}

/// What a record says, in a line for people: the exit's name and the
/// details its exit information gives (port and direction of an I/O exit,
/// address and access of a nested page fault, MSR and direction).
pub fn describe(r: &ExitRecord) -> Describe {
    Describe(*r)
}

/// See [`describe`].
pub struct Describe(ExitRecord);

impl core::fmt::Display for Describe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let r = &self.0;
        write!(f, "{:<8} rip={:#x}", exit_name(r.code), r.rip)?;
        if r.code & VMX_EXIT_TAG != 0 {
            describe_vmx(r, f)?;
        }
        match r.code {
            exit::IOIO => {
                let io = IoExit::decode(r.info1);
                write_io(f, io.port, io.input, io.size, io.string, io.rep)?;
            }
            // The nested page fault's error code has the #PF layout.
            exit::NPF | PF_EXIT => {
                let access = if r.info1 & 0x10 != 0 {
                    "fetch"
                } else if r.info1 & 2 != 0 {
                    "write"
                } else {
                    "read"
                };
                let kind = if r.info1 & 8 != 0 {
                    "reserved bit"
                } else if r.info1 & 1 != 0 {
                    "protection"
                } else {
                    "not present"
                };
                let (what, user) = match r.code {
                    exit::NPF => ("gpa", ""),
                    _ => ("addr", if r.info1 & 4 != 0 { " user" } else { "" }),
                };
                write!(f, " {what}={:#x} {access}{user} ({kind})", r.info2)?;
            }
            exit::CR_READ_BASE..=exit::CR_WRITE_LAST => write!(f, " cr{}", r.code & 0xf)?,
            exit::MSR => write!(f, " {}", if r.info1 & 1 != 0 { "wrmsr" } else { "rdmsr" })?,
            _ => {}
        }
        write!(f, " guest={}ns", r.guest_ns)?;
        match r.user_exit() {
            Some(reason) => write!(f, " -> user: {}", kvm_exit_name(reason)),
            None => write!(f, " -> kernel"),
        }
    }
}

/// An I/O exit's details, the same for both vendors.
fn write_io(
    f: &mut core::fmt::Formatter<'_>,
    port: u16,
    input: bool,
    size: u8,
    string: bool,
    rep: bool,
) -> core::fmt::Result {
    let dir = if input { "in" } else { "out" };
    let string = if string { " string" } else { "" };
    let rep = if rep { " rep" } else { "" };
    write!(f, " {dir} port={port:#x} size={size}{string}{rep}")
}

/// Mnemonics of the exceptions, by vector.
const EXCEPTION_NAMES: [Option<&str>; 20] = [
    Some("DE"),
    Some("DB"),
    Some("NMI"),
    Some("BP"),
    Some("OF"),
    Some("BR"),
    Some("UD"),
    Some("NM"),
    Some("DF"),
    None,
    Some("TS"),
    Some("NP"),
    Some("SS"),
    Some("GP"),
    Some("PF"),
    None,
    Some("MF"),
    Some("AC"),
    Some("MC"),
    Some("XM"),
];

/// The details of a VMX exit: I/O port and direction, EPT violation
/// address and access, control register, exception, INVLPG address.
fn describe_vmx(r: &ExitRecord, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    match r.code as u16 {
        vmcs::reason::IO => {
            let q = vmcs::IoQualification::decode(r.info1);
            write_io(f, q.port, q.input, q.size, q.string, q.rep)
        }
        vmcs::reason::EPT_VIOLATION => {
            let access = if r.info1 & 4 != 0 {
                "fetch"
            } else if r.info1 & 2 != 0 {
                "write"
            } else {
                "read"
            };
            let kind = if r.info1 & 0x38 != 0 {
                "protection"
            } else {
                "not present"
            };
            write!(f, " gpa={:#x} {access} ({kind})", r.info2)
        }
        vmcs::reason::CR_ACCESS => write!(f, " cr{}", r.info1 & 0xf),
        // The interruption information: the vector; a page fault's address
        // is the qualification.
        vmcs::reason::EXCEPTION_NMI => match vmcs::IntrInfo(r.info2 as u32).vector() {
            14 => write!(f, " #PF addr={:#x}", r.info1),
            v => match EXCEPTION_NAMES.get(usize::from(v)).copied().flatten() {
                Some(name) => write!(f, " #{name}"),
                None => write!(f, " vector={v}"),
            },
        },
        vmcs::reason::INVLPG => write!(f, " addr={:#x}", r.info1),
        vmcs::reason::RDMSR => write!(f, " rdmsr"),
        vmcs::reason::WRMSR => write!(f, " wrmsr"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::{
        format,
        vec::Vec, //
    };

    fn rec(code: u64) -> ExitRecord {
        ExitRecord {
            code,
            ..Default::default()
        }
    }

    fn bytes(ring: &[ExitRecord]) -> Vec<u8> {
        ring.iter().flat_map(|r| r.to_bytes()).collect()
    }

    #[test]
    fn records_round_trip() {
        let r = ExitRecord {
            seq: 1,
            time_ns: 2,
            code: 3,
            info1: 4,
            info2: 5,
            rip: 6,
            guest_ns: 7,
            outcome: TO_USER | 2,
        };
        assert_eq!(ExitRecord::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(r.user_exit(), Some(2));
        assert_eq!(ExitRecord::from_bytes(&[0; 10]), None);
    }

    #[test]
    fn ring_keeps_the_newest_in_order() {
        let mut ring = [ExitRecord::default(); 4];
        for seq in 1..=6 {
            store(&mut ring, seq, rec(seq * 10));
        }
        let b = bytes(&ring);
        let all: Vec<u64> = newer(&b, 0).map(|r| r.seq).collect();
        assert_eq!(all, [3, 4, 5, 6], "the 4 newest, oldest first");
        let codes: Vec<u64> = newer(&b, 4).map(|r| r.code).collect();
        assert_eq!(codes, [50, 60], "only what is newer than 4");
        assert_eq!(newer(&b, 6).count(), 0);
        let empty = bytes(&[ExitRecord::default(); 4]);
        assert_eq!(newer(&empty, 0).count(), 0, "an empty ring has nothing");
    }

    #[test]
    fn partly_filled_ring() {
        let mut ring = [ExitRecord::default(); 8];
        store(&mut ring, 1, rec(1));
        store(&mut ring, 2, rec(2));
        assert_eq!(
            newer(&bytes(&ring), 0).map(|r| r.seq).collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn exit_code_buckets() {
        for code in [0, exit::CPUID, exit::IOIO, 0x9f, exit::NPF] {
            assert_eq!(bucket_code(exit_bucket(code)), Some(code));
        }
        assert_eq!(exit_bucket(exit::INVALID), EXIT_BUCKETS - 1);
        assert_eq!(bucket_code(EXIT_BUCKETS - 1), None);
    }

    #[test]
    fn descriptions() {
        let out = ExitRecord {
            code: exit::IOIO,
            info1: (0x3f8 << 16) | 0x10,
            rip: 0x1000,
            outcome: TO_USER | 2,
            ..Default::default()
        };
        assert_eq!(
            format!("{}", describe(&out)),
            "io       rip=0x1000 out port=0x3f8 size=1 guest=0ns -> user: io"
        );
        let npf = ExitRecord {
            code: exit::NPF,
            info1: 6,
            info2: 0x3f00_0000,
            ..Default::default()
        };
        assert_eq!(
            format!("{}", describe(&npf)),
            "npf      rip=0x0 gpa=0x3f000000 write (not present) guest=0ns -> kernel"
        );
        let pf = ExitRecord {
            code: 0x4e,
            info1: 7,
            info2: 0x7fff_f000,
            ..Default::default()
        };
        assert_eq!(
            format!("{}", describe(&pf)),
            "excp_pf  rip=0x0 addr=0x7ffff000 write user (protection) guest=0ns -> kernel"
        );
        let cr3 = ExitRecord {
            code: 0x13,
            ..Default::default()
        };
        assert_eq!(
            format!("{}", describe(&cr3)),
            "write_cr rip=0x0 cr3 guest=0ns -> kernel"
        );
        assert_eq!(svm_exit_name(exit::CPUID), "cpuid");
        assert_eq!(svm_exit_name(0x33), "write_dr");
    }

    #[test]
    fn vmx_codes_have_names_and_counters() {
        let io = VMX_EXIT_TAG | u64::from(vmcs::reason::IO);
        assert_eq!(exit_name(io), "io");
        assert_eq!(manual_code(io), 0x1e);
        assert_eq!(manual_code(exit::NPF), exit::NPF);
        assert_eq!(bucket_code(exit_bucket(io)), Some(io));
        let ept = VMX_EXIT_TAG | u64::from(vmcs::reason::EPT_VIOLATION);
        assert_eq!(bucket_code(exit_bucket(ept)), Some(ept));
        // SVM codes keep theirs, and the rest share the last counter.
        assert_eq!(bucket_code(exit_bucket(exit::NPF)), Some(exit::NPF));
        assert_eq!(exit_bucket(VMX_EXIT_TAG | 200), EXIT_BUCKETS - 1);
        assert_eq!(bucket_code(EXIT_BUCKETS - 1), None);
        let r = ExitRecord {
            code: io,
            info1: 0x3f8 << 16,
            info2: 0,
            rip: 0x100,
            ..Default::default()
        };
        assert!(format!("{}", describe(&r)).starts_with("io       rip=0x100 out port=0x3f8 size=1"));
        // Exceptions (shadow paging, virtual-8086 mode): #GP(0) and a #PF.
        let exception = VMX_EXIT_TAG | u64::from(vmcs::reason::EXCEPTION_NMI);
        let gp = ExitRecord {
            code: exception,
            info2: 0x8000_0b0d,
            rip: 0x1004,
            ..Default::default()
        };
        assert_eq!(
            format!("{}", describe(&gp)),
            "exception rip=0x1004 #GP guest=0ns -> kernel"
        );
        let pf = ExitRecord {
            code: exception,
            info1: 0xb8000,
            info2: 0x8000_0b0e,
            ..Default::default()
        };
        assert!(format!("{}", describe(&pf)).contains(" #PF addr=0xb8000 "));
        let invlpg = ExitRecord {
            code: VMX_EXIT_TAG | u64::from(vmcs::reason::INVLPG),
            info1: 0x7000,
            ..Default::default()
        };
        assert!(format!("{}", describe(&invlpg)).contains("invlpg   rip=0x0 addr=0x7000 "));
    }
}

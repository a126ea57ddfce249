// SPDX-License-Identifier: GPL-2.0

//! CPUID as rkvm's guests see it: the leaves `KVM_GET_SUPPORTED_CPUID`
//! offers (the host's, masked to what rkvm virtualizes correctly) and the
//! lookup the CPUID exit does in the table userspace set.

use super::kvmclock;

/// `KVM_MAX_CPUID_ENTRIES`.
pub const MAX_ENTRIES: usize = 256;
/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`: the entry applies to one ECX index only.
pub const FLAG_SIGNIFICANT_INDEX: u32 = 1;

/// One `struct kvm_cpuid_entry2`, without its padding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// EAX input.
    pub function: u32,
    /// ECX input (if `flags` has [`FLAG_SIGNIFICANT_INDEX`]).
    pub index: u32,
    /// `KVM_CPUID_FLAG_*`.
    pub flags: u32,
    /// Output EAX.
    pub eax: u32,
    /// Output EBX.
    pub ebx: u32,
    /// Output ECX.
    pub ecx: u32,
    /// Output EDX.
    pub edx: u32,
}

/// Leaf 1 EDX bits rkvm's guests may see: FPU VME DE PSE TSC MSR PAE MCE CX8
/// APIC SEP MTRR PGE MCA CMOV PAT PSE36 CLFSH MMX FXSR SSE SSE2. APIC, as
/// in KVM, says a local APIC may be there: with no in-kernel one, the VMM
/// emulates it (its MMIO page exits to userspace, `kvm_run->cr8` carries
/// the TPR). Left out: HTT.
const LEAF1_EDX: u32 = bits(&[
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 23, 24, 25, 26,
]);
/// Leaf 1 ECX: SSE3 PCLMULQDQ SSSE3 CX16 SSE4.1 SSE4.2 MOVBE POPCNT AES
/// RDRAND. Left out: MONITOR (intercepted), VMX, FMA, PCID, x2APIC,
/// TSC-deadline, XSAVE/OSXSAVE/AVX/F16C (guest XCR0 is not switched).
const LEAF1_ECX: u32 = bits(&[0, 1, 9, 13, 19, 20, 22, 23, 25, 30]);
/// Leaf 1 ECX bit 31: running under a hypervisor.
const HYPERVISOR: u32 = 1 << 31;
/// Leaf 0x80000001 EDX: SYSCALL NX 1GB-pages LM.
const EXT1_EDX: u32 = bits(&[11, 20, 26, 29]);
/// Leaf 0x80000001 ECX: LAHF/SAHF, LZCNT, SSE4A, misaligned SSE, PREFETCHW.
const EXT1_ECX: u32 = bits(&[0, 5, 6, 7, 8]);
/// Leaf 7 EBX: ERMS only (others need CR4 bits rkvm refuses, or state it
/// does not switch).
const LEAF7_EBX: u32 = bits(&[9]);
/// The hypervisor leaves are KVM's (`KVM_CPUID_SIGNATURE`): rkvm offers
/// KVM's paravirtual interface, kvmclock for now, where a guest looks for it.
const HYPERVISOR_LEAF: u32 = kvmclock::CPUID_SIGNATURE;
const SIGNATURE: &[u8; 12] = kvmclock::SIGNATURE;

const fn bits(list: &[u32]) -> u32 {
    let mut v = 0;
    let mut i = 0;
    while i < list.len() {
        v |= 1 << list[i];
        i += 1;
    }
    v
}

fn le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The supported leaves, from the host's CPUID (`host(leaf, subleaf)` gives
/// EAX, EBX, ECX, EDX). Returns the entries and how many are used.
pub fn supported(host: impl Fn(u32, u32) -> [u32; 4]) -> ([Entry; 12], usize) {
    let mut t = Table {
        out: [Entry::default(); 12],
        n: 0,
    };
    let max_basic = host(0, 0)[0].min(7);
    let h0 = host(0, 0);
    t.push(0, 0, [max_basic, h0[1], h0[2], h0[3]]);
    if max_basic >= 1 {
        let h = host(1, 0);
        // Keep family/model/stepping and the CLFLUSH line size.
        t.push(
            1,
            0,
            [
                h[0],
                h[1] & 0xff00,
                (h[2] & LEAF1_ECX) | HYPERVISOR,
                h[3] & LEAF1_EDX,
            ],
        );
    }
    if max_basic >= 7 {
        let h = host(7, 0);
        t.push(7, FLAG_SIGNIFICANT_INDEX, [0, h[1] & LEAF7_EBX, 0, 0]);
    }
    let sig = [
        le(&SIGNATURE[0..4]),
        le(&SIGNATURE[4..8]),
        le(&SIGNATURE[8..12]),
    ];
    t.push(
        HYPERVISOR_LEAF,
        0,
        [kvmclock::CPUID_FEATURES, sig[0], sig[1], sig[2]],
    );
    t.push(kvmclock::CPUID_FEATURES, 0, [kvmclock::FEATURES, 0, 0, 0]);
    let max_ext = host(0x8000_0000, 0)[0].min(0x8000_0008);
    if max_ext >= 0x8000_0000 {
        t.push(0x8000_0000, 0, [max_ext, 0, 0, 0]);
    }
    if max_ext >= 0x8000_0001 {
        let h = host(0x8000_0001, 0);
        t.push(0x8000_0001, 0, [h[0], 0, h[2] & EXT1_ECX, h[3] & EXT1_EDX]);
    }
    for leaf in 0x8000_0002..=0x8000_0004u32 {
        if max_ext >= leaf {
            t.push(leaf, 0, host(leaf, 0)); // brand string
        }
    }
    if max_ext >= 0x8000_0008 {
        let h = host(0x8000_0008, 0);
        t.push(0x8000_0008, 0, [h[0] & 0xffff, 0, 0, 0]); // address sizes
    }
    (t.out, t.n)
}

struct Table {
    out: [Entry; 12],
    n: usize,
}

impl Table {
    fn push(&mut self, function: u32, flags: u32, r: [u32; 4]) {
        if let Some(e) = self.out.get_mut(self.n) {
            *e = Entry {
                function,
                index: 0,
                flags,
                eax: r[0],
                ebx: r[1],
                ecx: r[2],
                edx: r[3],
            };
            self.n += 1;
        }
    }
}

/// What CPUID returns for (`function`, `index`) given the vCPU's table: the
/// matching entry, or zeros.
pub fn lookup(entries: &[Entry], function: u32, index: u32) -> [u32; 4] {
    entries
        .iter()
        .find(|e| {
            e.function == function && (e.flags & FLAG_SIGNIFICANT_INDEX == 0 || e.index == index)
        })
        .map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx])
}

/// The guest's physical address width: CPUID 0x80000008 EAX[7:0], or 36
/// when the table has no such leaf (as KVM assumes).
pub fn maxphyaddr(entries: &[Entry]) -> u32 {
    match lookup(entries, 0x8000_0008, 0)[0] & 0xff {
        0 => 36,
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An EPYC-like host: every feature bit set, so the masks are visible.
    fn host(leaf: u32, _sub: u32) -> [u32; 4] {
        match leaf {
            0 => [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65], // AuthenticAMD
            0x8000_0000 => [0x8000_001f, 0, 0, 0],
            0x8000_0008 => [0x3030, 0, 0, 0],
            _ => [0x0080_0f12, u32::MAX, u32::MAX, u32::MAX],
        }
    }

    #[test]
    fn supported_leaves_are_masked() {
        let (e, n) = supported(host);
        let e = &e[..n];
        assert_eq!(lookup(e, 0, 0)[0], 7, "max basic leaf capped");
        assert_eq!(lookup(e, 0, 0)[1], 0x6874_7541, "vendor kept");
        let l1 = lookup(e, 1, 0);
        assert_eq!(l1[0], 0x0080_0f12);
        assert_eq!(l1[1], 0xff00);
        assert_eq!(l1[2] & (1 << 26), 0, "no XSAVE");
        assert_eq!(l1[2] & (1 << 5), 0, "no VMX");
        assert_ne!(l1[2] & HYPERVISOR, 0);
        assert_ne!(l1[3] & (1 << 9), 0, "APIC, for the VMM's local APIC");
        assert_eq!(l1[3] & (1 << 28), 0, "no HTT");
        assert_eq!(
            l1[3] & 0x5080,
            0x5080,
            "MCE, MTRR and MCA: their MSRs are emulated"
        );
        assert_ne!(l1[3] & (1 << 6), 0, "PAE");
        let ext1 = lookup(e, 0x8000_0001, 0);
        assert_eq!(ext1[3], EXT1_EDX);
        assert_eq!(ext1[2] & (1 << 2), 0, "no SVM for the guest");
        assert_eq!(lookup(e, 0x8000_0000, 0)[0], 0x8000_0008);
        let sig = lookup(e, HYPERVISOR_LEAF, 0);
        assert_eq!(
            &[
                sig[1].to_le_bytes(),
                sig[2].to_le_bytes(),
                sig[3].to_le_bytes()
            ]
            .concat(),
            SIGNATURE
        );
        assert_eq!(sig[0], 0x4000_0001, "the highest hypervisor leaf");
        assert_eq!(
            lookup(e, 0x4000_0001, 0)[0],
            kvmclock::FEATURE_CLOCKSOURCE
                | kvmclock::FEATURE_NOP_IO_DELAY
                | kvmclock::FEATURE_CLOCKSOURCE2
        );
        assert_eq!(maxphyaddr(e), 0x30);
    }

    #[test]
    fn lookup_honours_the_index_flag() {
        let t = [
            Entry {
                function: 7,
                index: 0,
                flags: FLAG_SIGNIFICANT_INDEX,
                ebx: 1,
                ..Default::default()
            },
            Entry {
                function: 2,
                index: 5,
                flags: 0,
                eax: 9,
                ..Default::default()
            },
        ];
        assert_eq!(lookup(&t, 7, 0)[1], 1);
        assert_eq!(lookup(&t, 7, 1), [0; 4]);
        assert_eq!(lookup(&t, 2, 77)[0], 9, "index ignored without the flag");
        assert_eq!(lookup(&t, 0x1234, 0), [0; 4]);
        assert_eq!(maxphyaddr(&t), 36);
    }
}

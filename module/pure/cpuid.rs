// SPDX-License-Identifier: GPL-2.0

//! CPUID as rkvm's guests see it: the leaves `KVM_GET_SUPPORTED_CPUID`
//! offers (the host's, masked to what rkvm virtualizes correctly) and the
//! lookup the CPUID exit does in the table userspace set.

use super::{
    kvmclock,
    xsave, //
};

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
/// RDRAND. Left out: MONITOR (intercepted), VMX, PCID, x2APIC,
/// TSC-deadline; OSXSAVE, which reflects the guest's CR4 at run time
/// ([`runtime`]); XSAVE and the AVX features ([`LEAF1_ECX_XSAVE`],
/// [`LEAF1_ECX_AVX`]) only with the XCR0 bits they need.
const LEAF1_ECX: u32 = bits(&[0, 1, 9, 13, 19, 20, 22, 23, 25, 30]);
/// Leaf 1 ECX bit 21: x2APIC, offered with an in-kernel local APIC, which
/// emulates it whatever the host has (as KVM does).
pub const LEAF1_ECX_X2APIC: u32 = 1 << 21;
/// Leaf 1 ECX bit 24: the APIC timer's TSC-deadline mode (the guest's
/// CPUID says whether its APIC has it).
pub const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 ECX bit 26: XSAVE (with x87 and SSE in the guest's XCR0).
pub const LEAF1_ECX_XSAVE: u32 = 1 << 26;
/// Leaf 1 ECX bit 27: OSXSAVE, CR4.OSXSAVE as the guest set it.
pub const LEAF1_ECX_OSXSAVE: u32 = 1 << 27;
/// Leaf 1 ECX: FMA, AVX, F16C: VEX-encoded instructions on YMM registers,
/// offered when the guest's XCR0 can hold AVX state.
const LEAF1_ECX_AVX: u32 = bits(&[12, 28, 29]);
/// Leaf 7 EBX: AVX2 (with AVX state).
const LEAF7_EBX_AVX: u32 = bits(&[5]);
/// Leaf 0xD.1 EAX: XSAVEOPT, XSAVEC, XGETBV with ECX=1: they work on the
/// guest's own XCR0 without help. Left out: XSAVES (it needs IA32_XSS
/// switched, and rkvm supports no supervisor state), XFD.
const XSAVE1_EAX: u32 = bits(&[0, 1, 2]);
/// Leaf 0xD.1 EAX bit 1 (XSAVEC) and 3 (XSAVES): EBX is the compacted
/// size.
const XSAVE1_COMPACTED: u32 = bits(&[1, 3]);
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

/// Most entries [`supported`] returns.
pub const SUPPORTED_MAX: usize = 16;

/// The supported leaves, from the host's CPUID (`host(leaf, subleaf)` gives
/// EAX, EBX, ECX, EDX) and the XCR0 bits guests may have (`xcr0`: 0 means
/// no XSAVE for guests, see `xsave::HostXsave`) and whether VMs may have
/// an in-kernel local APIC (`apic`: x2APIC is offered). Returns the
/// entries and how many are used.
pub fn supported(
    host: impl Fn(u32, u32) -> [u32; 4],
    xcr0: u64,
    apic: bool,
) -> ([Entry; SUPPORTED_MAX], usize) {
    let mut t = Table {
        out: [Entry::default(); SUPPORTED_MAX],
        n: 0,
    };
    let h0 = host(0, 0);
    let xsave = xcr0 & xsave::FPSSE == xsave::FPSSE && h0[0] >= 0xd;
    let avx = xsave && xcr0 & xsave::YMM != 0;
    let max_basic = h0[0].min(if xsave { 0xd } else { 7 });
    t.push(0, 0, 0, [max_basic, h0[1], h0[2], h0[3]]);
    if max_basic >= 1 {
        let h = host(1, 0);
        let mut ecx = LEAF1_ECX;
        if xsave {
            ecx |= LEAF1_ECX_XSAVE;
        }
        if avx {
            ecx |= LEAF1_ECX_AVX;
        }
        let emulated = if apic { LEAF1_ECX_X2APIC } else { 0 };
        // Keep family/model/stepping and the CLFLUSH line size.
        t.push(
            1,
            0,
            0,
            [
                h[0],
                h[1] & 0xff00,
                (h[2] & ecx) | emulated | HYPERVISOR,
                h[3] & LEAF1_EDX,
            ],
        );
    }
    if max_basic >= 7 {
        let h = host(7, 0);
        let ebx = if avx {
            LEAF7_EBX | LEAF7_EBX_AVX
        } else {
            LEAF7_EBX
        };
        t.push(7, 0, FLAG_SIGNIFICANT_INDEX, [0, h[1] & ebx, 0, 0]);
    }
    if xsave {
        // As KVM's do_cpuid_7_to_0xd(0xd): the features and the size of
        // their image, the instructions of subleaf 1, a subleaf per
        // extended component with the host's offset and size.
        let size = xsave::required_size(xcr0);
        let h = host(0xd, 0);
        let mask = xcr0 as u32;
        t.push(0xd, 0, FLAG_SIGNIFICANT_INDEX, [h[0] & mask, size, size, 0]);
        let h = host(0xd, 1);
        let eax = h[0] & XSAVE1_EAX;
        let ebx = if eax & XSAVE1_COMPACTED != 0 { size } else { 0 };
        t.push(0xd, 1, FLAG_SIGNIFICANT_INDEX, [eax, ebx, 0, 0]);
        if avx {
            let h = host(0xd, 2);
            t.push(0xd, 2, FLAG_SIGNIFICANT_INDEX, [h[0], h[1], h[2] & 1, 0]);
        }
    }
    let sig = [
        le(&SIGNATURE[0..4]),
        le(&SIGNATURE[4..8]),
        le(&SIGNATURE[8..12]),
    ];
    t.push(
        HYPERVISOR_LEAF,
        0,
        0,
        [kvmclock::CPUID_FEATURES, sig[0], sig[1], sig[2]],
    );
    t.push(
        kvmclock::CPUID_FEATURES,
        0,
        0,
        [kvmclock::FEATURES, 0, 0, 0],
    );
    let max_ext = host(0x8000_0000, 0)[0].min(0x8000_0008);
    if max_ext >= 0x8000_0000 {
        t.push(0x8000_0000, 0, 0, [max_ext, 0, 0, 0]);
    }
    if max_ext >= 0x8000_0001 {
        let h = host(0x8000_0001, 0);
        t.push(
            0x8000_0001,
            0,
            0,
            [h[0], 0, h[2] & EXT1_ECX, h[3] & EXT1_EDX],
        );
    }
    for leaf in 0x8000_0002..=0x8000_0004u32 {
        if max_ext >= leaf {
            t.push(leaf, 0, 0, host(leaf, 0)); // brand string
        }
    }
    if max_ext >= 0x8000_0008 {
        let h = host(0x8000_0008, 0);
        t.push(0x8000_0008, 0, 0, [h[0] & 0xffff, 0, 0, 0]); // address sizes
    }
    (t.out, t.n)
}

struct Table {
    out: [Entry; SUPPORTED_MAX],
    n: usize,
}

impl Table {
    fn push(&mut self, function: u32, index: u32, flags: u32, r: [u32; 4]) {
        if let Some(e) = self.out.get_mut(self.n) {
            *e = Entry {
                function,
                index,
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
    find(entries, function, index).map_or([0; 4], |e| [e.eax, e.ebx, e.ecx, e.edx])
}

/// The vCPU state CPUID reflects at run time (KVM's
/// `kvm_update_cpuid_runtime()`, for the parts rkvm has).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runtime {
    /// CR4.OSXSAVE: leaf 1 ECX bit 27.
    pub osxsave: bool,
    /// The guest's XCR0: leaf 0xD.0 EBX (and 0xD.1 EBX with XSAVEC or
    /// XSAVES), the size of its XSAVE image.
    pub xcr0: u64,
}

impl Runtime {
    /// `e` as the guest reads it now.
    pub fn apply(&self, e: &Entry) -> Entry {
        let mut e = *e;
        let sub = |i: u32| e.flags & FLAG_SIGNIFICANT_INDEX == 0 || e.index == i;
        if e.function == 1 {
            e.ecx &= !LEAF1_ECX_OSXSAVE;
            if self.osxsave {
                e.ecx |= LEAF1_ECX_OSXSAVE;
            }
        }
        if e.function == 0xd && sub(0) {
            e.ebx = xsave::required_size(self.xcr0);
        }
        if e.function == 0xd && sub(1) && e.eax & XSAVE1_COMPACTED != 0 {
            e.ebx = xsave::required_size(self.xcr0);
        }
        e
    }
}

/// [`lookup`] with the run-time bits ([`Runtime`]) applied.
pub fn lookup_runtime(entries: &[Entry], function: u32, index: u32, rt: &Runtime) -> [u32; 4] {
    find(entries, function, index).map_or([0; 4], |e| {
        let e = rt.apply(e);
        [e.eax, e.ebx, e.ecx, e.edx]
    })
}

fn find(entries: &[Entry], function: u32, index: u32) -> Option<&Entry> {
    entries.iter().find(|e| {
        e.function == function && (e.flags & FLAG_SIGNIFICANT_INDEX == 0 || e.index == index)
    })
}

/// The XCR0 bits the guest's CPUID allows (KVM's
/// `cpuid_get_supported_xcr0()`): leaf 0xD.0 EAX and EDX, within what the
/// host can give (`supported`). Leaf 1's XSAVE bit is not looked at.
pub fn guest_supported_xcr0(entries: &[Entry], supported: u64) -> u64 {
    find(entries, 0xd, 0).map_or(0, |e| {
        (u64::from(e.eax) | (u64::from(e.edx) << 32)) & supported
    })
}

/// Whether the guest's CPUID has XSAVE (leaf 1 ECX bit 26): only then may
/// its CR4 have OSXSAVE (KVM's `__cr4_reserved_bits()`).
pub fn has_xsave(entries: &[Entry]) -> bool {
    lookup(entries, 1, 0)[2] & LEAF1_ECX_XSAVE != 0
}

/// The CR4 bits the guest may set: rkvm's, and OSXSAVE when its CPUID
/// has XSAVE.
pub fn cr4_allowed(entries: &[Entry]) -> u64 {
    use super::x86::cr4;
    if has_xsave(entries) {
        cr4::SUPPORTED | cr4::OSXSAVE
    } else {
        cr4::SUPPORTED
    }
}

/// What `KVM_SET_CPUID2` refuses of leaf 0xD (`kvm_check_cpuid()`): AMX
/// tile data, the dynamic feature, needs a permission
/// (`arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM)`) rkvm never has: EPERM.
pub fn wants_dynamic_xfeatures(entries: &[Entry]) -> bool {
    find(entries, 0xd, 0)
        .is_some_and(|e| (u64::from(e.eax) | (u64::from(e.edx) << 32)) & xsave::XTILE_DATA != 0)
}

/// The guest's physical address width: CPUID 0x80000008 EAX bits 7:0, or 36
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
    fn x2apic_is_offered_only_with_an_in_kernel_apic() {
        let leaf1 = |apic| {
            let (e, n) = supported(|_, _| [1, 0, 0, 0], 0, apic);
            e[..n].iter().find(|x| x.function == 1).map(|x| x.ecx)
        };
        // Emulated: offered though the host has none.
        assert_eq!(
            leaf1(true).map(|ecx| ecx & LEAF1_ECX_X2APIC),
            Some(LEAF1_ECX_X2APIC)
        );
        assert_eq!(leaf1(false).map(|ecx| ecx & LEAF1_ECX_X2APIC), Some(0));
        // The TSC-deadline timer is the VMM's to offer (KVM_GET_SUPPORTED_CPUID
        // leaves it out too).
        assert_eq!(leaf1(true).map(|ecx| ecx & LEAF1_ECX_TSC_DEADLINE), Some(0));
    }

    #[test]
    fn supported_leaves_are_masked() {
        let (e, n) = supported(host, 0, false);
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
    fn xsave_leaves_with_avx() {
        let host = |leaf: u32, sub: u32| match (leaf, sub) {
            (0xd, 0) => [0x207, 2696, 2696, 0],
            (0xd, 1) => [0xf, 2696, 0x1800, 0],
            (0xd, 2) => [256, 576, 0, 0],
            _ => host(leaf, sub),
        };
        let (e, n) = supported(host, 0x7, false);
        let e = &e[..n];
        assert_eq!(lookup(e, 0, 0)[0], 0xd);
        let l1 = lookup(e, 1, 0);
        assert_ne!(l1[2] & LEAF1_ECX_XSAVE, 0);
        assert_eq!(l1[2] & LEAF1_ECX_OSXSAVE, 0, "OSXSAVE is the guest's CR4");
        assert_eq!(l1[2] & LEAF1_ECX_AVX, LEAF1_ECX_AVX);
        assert_eq!(lookup(e, 7, 0)[1], (1 << 9) | (1 << 5), "ERMS, AVX2");
        assert_eq!(lookup(e, 0xd, 0), [0x7, 832, 832, 0], "no PKRU");
        assert_eq!(lookup(e, 0xd, 1), [0x7, 832, 0, 0], "no XSAVES");
        assert_eq!(lookup(e, 0xd, 2), [256, 576, 0, 0]);
        assert_eq!(lookup(e, 0xd, 3), [0; 4]);
        assert_eq!(guest_supported_xcr0(e, 0x7), 0x7);
        assert_eq!(guest_supported_xcr0(e, 0x3), 0x3);
        assert!(has_xsave(e));
        assert!(!wants_dynamic_xfeatures(e));
        let rt = Runtime {
            osxsave: true,
            xcr0: 0x3,
        };
        assert_ne!(lookup_runtime(e, 1, 0, &rt)[2] & LEAF1_ECX_OSXSAVE, 0);
        assert_eq!(lookup_runtime(e, 0xd, 0, &rt)[1], 576);
        assert_eq!(lookup_runtime(e, 0xd, 1, &rt)[1], 576);
        assert_eq!(
            lookup_runtime(e, 0x8000_0000, 0, &rt),
            lookup(e, 0x8000_0000, 0)
        );

        let (e, n) = supported(host, 0x3, false);
        let e = &e[..n];
        assert_eq!(
            lookup(e, 1, 0)[2] & LEAF1_ECX_AVX,
            0,
            "no AVX without its state"
        );
        assert_eq!(lookup(e, 7, 0)[1], 1 << 9);
        assert_eq!(lookup(e, 0xd, 0), [0x3, 576, 576, 0]);
        assert_eq!(lookup(e, 0xd, 2), [0; 4]);
        let mut amx = [Entry {
            function: 0xd,
            flags: FLAG_SIGNIFICANT_INDEX,
            eax: 0x6_0003,
            ..Default::default()
        }];
        assert!(wants_dynamic_xfeatures(&amx));
        amx[0].eax = 0x2_0003;
        assert!(!wants_dynamic_xfeatures(&amx));
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

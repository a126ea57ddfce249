// SPDX-License-Identifier: GPL-2.0

//! The Intel VMX virtual-machine control structure (VMCS), typed.
//!
//! Unlike AMD's VMCB, a VMCS has no architectural layout: each field is
//! read and written with VMREAD/VMWRITE by its *encoding* (Intel SDM vol.
//! 3C, appendix B). This module names the encodings rkvm uses, the control
//! bits, the capability MSRs that say which controls the processor allows,
//! the exit reasons, and the decoding of exit qualifications, so that the
//! backend (`vmx/`) never handles a bare number.
//!
//! - [`encoding`]: field encodings (what VMREAD and VMWRITE name);
//! - [`segment`]: guest segments and their access rights, and virtual-8086
//!   mode's stand-ins;
//! - [`controls`]: the controls and the capability MSRs that allow them;
//! - [`exit`]: exit reasons, interruption information, qualifications.

mod controls;
mod encoding;
mod exit;
mod segment;

pub use controls::*;
pub use encoding::*;
pub use exit::*;
pub use segment::*;

#[cfg(test)]
mod tests {
    use super::super::x86::SegAttrib;
    use super::*;

    #[test]
    fn encodings_declare_their_width() {
        assert_eq!(field::VPID.width(), Width::W16);
        assert_eq!(field::EPT_POINTER.width(), Width::W64);
        assert_eq!(field::PIN_CONTROLS.width(), Width::W32);
        assert_eq!(field::GUEST_RIP.width(), Width::Natural);
        assert_eq!(Seg::Tr.selector(), Field(0x080e));
        assert_eq!(Seg::Cs.limit(), Field(0x4802));
        assert_eq!(Seg::Tr.access_rights(), Field(0x4822));
        // The field after TR's base is GDTR's base: the groups line up.
        assert_eq!(Field(Seg::Tr.base().0 + 2), field::GUEST_GDTR_BASE);
        assert!(field::EXIT_REASON.read_only());
        assert!(field::EXIT_QUALIFICATION.read_only());
        assert!(!field::GUEST_RIP.read_only());
        assert_eq!(field::guest_pdpte(3), Field(0x2810));
    }

    #[test]
    fn controls_respect_the_capability() {
        // Bits 1, 2 and 4 must be 1; bits 0-7 may be 1.
        let cap = 0x0000_00ff_0000_0016u64;
        assert_eq!(adjust_controls(1, cap), Some(0x17));
        assert_eq!(adjust_controls(0, cap), Some(0x16));
        // Bit 8 is not allowed.
        assert_eq!(adjust_controls(1 << 8, cap), None);
    }

    #[test]
    fn basic_msr() {
        // Bochs's corei7: revision 0x2b, WB, INS/OUTS info, TRUE controls.
        let b = bochs_caps();
        let b = Basic(b.basic);
        assert_eq!(b.revision(), 0x2b);
        assert!(b.true_controls() && b.ins_outs_info() && b.write_back());
    }

    #[test]
    fn segment_access_rights_round_trip() {
        // A 64-bit kernel code segment: type 0xb, S, P, L, G.
        let cs = SegAttrib {
            type_: 0xb,
            s: true,
            dpl: 0,
            present: true,
            l: true,
            g: true,
            ..Default::default()
        };
        assert_eq!(access_rights(&cs, false), 0xa09b);
        assert_eq!(attributes(0xa09b), (cs, false));
        // Real-mode data segment at reset.
        let ds = SegAttrib {
            type_: 3,
            s: true,
            present: true,
            ..Default::default()
        };
        assert_eq!(access_rights(&ds, false), 0x93);
        // Not present (or marked unusable): unusable, nothing else.
        assert_eq!(
            access_rights(
                &SegAttrib {
                    present: false,
                    ..cs
                },
                false
            ),
            ar::UNUSABLE
        );
        assert_eq!(access_rights(&cs, true), ar::UNUSABLE);
        assert!(attributes(ar::UNUSABLE).1);
    }

    #[test]
    fn io_qualification() {
        // out %al, $0x80
        let q = IoQualification::decode(0x80 << 16);
        assert_eq!(
            q,
            IoQualification {
                port: 0x80,
                input: false,
                size: 1,
                string: false,
                rep: false
            }
        );
        // rep insw from port 0x1f0
        let q = IoQualification::decode((0x1f0 << 16) | (1 << 5) | (1 << 4) | (1 << 3) | 1);
        assert_eq!(
            q,
            IoQualification {
                port: 0x1f0,
                input: true,
                size: 2,
                string: true,
                rep: true
            }
        );
        // 32-bit addressing, segment DS (3).
        assert_eq!(string_io_info((1 << 7) | (3 << 15)), (4, 3));
        assert_eq!(string_io_info(2 << 7), (8, 0));
    }

    #[test]
    fn interruption_information() {
        let gp = IntrInfo::exception(13, true);
        assert_eq!(gp.0, 0x8000_0b0d);
        assert!(
            gp.valid()
                && gp.has_error()
                && gp.vector() == 13
                && gp.kind() == IntrInfo::TYPE_HW_EXCEPTION
        );
        assert_eq!(IntrInfo::interrupt(0x20).0, 0x8000_0020);
        // IDT-vectoring information with NMI unblocking (bit 12) set.
        assert_eq!(
            IntrInfo(0x8000_1020).reinjection(),
            IntrInfo::interrupt(0x20)
        );
        assert!(IntrInfo(0x8000_0403).needs_length());
        assert!(!gp.needs_length());
    }

    #[test]
    fn ept_pointer_and_qualification() {
        assert_eq!(ept_pointer(0x1234_5000), 0x1234_501e);
        assert!(ept_violation_write(0x182));
        assert!(!ept_violation_write(0x181));
        assert_eq!(reason_name(reason::EPT_VIOLATION), "ept_violation");
        assert_eq!(reason_name(reason::VMXON), "vmx_insn");
    }

    /// Capability MSRs as Bochs's `corei7_haswell_4770` reports them
    /// (TRUE forms), from a boot of the test kernel there.
    fn bochs_caps() -> CapMsrs {
        CapMsrs {
            basic: 0x00d8_1000_0000_002b,
            pin: 0x0000_007f_0000_0016,
            proc: 0xf7f9_fffe_0400_6172,
            proc2: 0x0004_7fff_0000_0000,
            exit: 0x007f_ffff_0003_6dfb,
            entry: 0x0000_ffff_0000_11fb,
            misc: 0x2004_01e0,
            ept_vpid: 0x0f01_0633_4141,
            cr0_fixed: (0x8000_0021, 0xffff_ffff),
            cr4_fixed: (0x2000, 0x0017_27ff),
        }
    }

    #[test]
    fn controls_from_bochs() {
        let c = Controls::derive(&bochs_caps()).expect("Bochs has what rkvm needs");
        assert!(c.proc & proc::UNCOND_IO_EXITING != 0 && c.proc & proc::HLT_EXITING != 0);
        // The TRUE MSR lets CR3 exiting be 0 (the non-TRUE one forces it).
        assert_eq!(
            c.proc & (proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING),
            0
        );
        assert!(c.proc2 & proc2::EPT != 0 && c.proc2 & proc2::UNRESTRICTED_GUEST != 0);
        assert!(c.vpid && c.invept_single);
        assert!(c.pin & pin::PREEMPTION_TIMER != 0);
        assert_eq!(c.preemption_timer_rate, Some(0));
        assert!(c.exit & exit_ctl::HOST_ADDR_SPACE_SIZE != 0);
        // NE is the host's; PE and PG the guest's (unrestricted guest).
        assert_eq!(c.cr0_host_owned, 0x20);
        assert_eq!(c.cr4_host_owned, 0x2000);
    }

    #[test]
    fn shadow_paging_controls() {
        let c = Controls::derive(&bochs_caps())
            .expect("Bochs has what rkvm needs")
            .for_shadow_paging();
        let exiting = proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING | proc::INVLPG_EXITING;
        assert_eq!(c.proc & exiting, exiting);
        assert_eq!(
            c.proc2 & (proc2::EPT | proc2::UNRESTRICTED_GUEST | proc2::VPID),
            0
        );
        assert!(!c.vpid);
        assert_eq!((c.cr0_host_owned, c.cr4_host_owned), (u64::MAX, u64::MAX));
        // The bits forced to 1 stay what the processor says.
        assert_eq!((c.cr0_fixed1, c.cr4_fixed1), (0x20, 0x2000));
    }

    #[test]
    fn real_mode_segments_in_v86_mode() {
        let s = Segment {
            selector: 0x1234,
            base: 0x12340,
            limit: 0xffff,
            ar: 0x93,
        };
        assert_eq!(v86_segment(&s), Some(Segment { ar: V86_AR, ..s }));
        // CS after RESET: base 0xffff0000, not 0xf000 * 16.
        assert_eq!(
            v86_segment(&Segment {
                selector: 0xf000,
                base: 0xffff_0000,
                limit: 0xffff,
                ar: 0x9b
            }),
            None
        );
        // Unreal mode, and a 32-bit segment.
        assert_eq!(
            v86_segment(&Segment {
                limit: 0xffff_ffff,
                ..s
            }),
            None
        );
        assert_eq!(
            v86_segment(&Segment {
                ar: 0x93 | ar::DB,
                ..s
            }),
            None
        );
    }

    #[test]
    fn segments_just_out_of_real_mode() {
        let seg = |selector: u16, ar: u32| Segment {
            selector,
            base: u64::from(selector) << 4,
            limit: 0xffff,
            ar,
        };
        let mut segs = [seg(0, 0x93); 8];
        segs[Seg::Cs as usize] = seg(0x07c3, 0x9b);
        segs[Seg::Ds as usize] = seg(0x0012, 0x93);
        segs[Seg::Tr as usize] = seg(0, 0x8b);
        let mut fixed = segs;
        protected_mode_fixup(&mut fixed);
        assert_eq!(fixed[Seg::Cs as usize].selector, 0x07c0);
        assert_eq!(fixed[Seg::Ds as usize].ar, 0xd3, "DPL raised to RPL 2");
        assert_eq!(fixed[Seg::Tr as usize], segs[Seg::Tr as usize]);
        // Ring 3 of a protected-mode guest is left alone.
        let mut user = [seg(0x23, 0xf3); 8];
        user[Seg::Cs as usize] = seg(0x1b, 0xfb);
        let before = user;
        protected_mode_fixup(&mut user);
        assert_eq!(user, before);
    }

    #[test]
    fn controls_refuse_a_processor_without_unrestricted_guest() {
        let mut caps = bochs_caps();
        caps.proc2 &= !(u64::from(proc2::UNRESTRICTED_GUEST) << 32);
        assert!(Controls::derive(&caps).is_err());
        let mut caps = bochs_caps();
        caps.ept_vpid = 0;
        assert_eq!(Controls::derive(&caps), Err("INVEPT"));
    }
}

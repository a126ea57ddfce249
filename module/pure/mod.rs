// SPDX-License-Identifier: GPL-2.0

//! Pure logic: no kernel types, no allocation, no unsafe (tests aside).
//!
//! Everything here depends on `core` alone, so the same source is part of
//! `rkvm.ko` and of the host crate `rkvm-pure` (see `host.rs`), where
//! `cargo test` runs its unit tests in milliseconds.

pub mod cpu;
pub mod cpuid;
pub mod debug;
pub mod decode;
pub mod ioapic;
pub mod iobus;
pub mod ioctl;
pub mod irq_routing;
pub mod kvmclock;
pub mod lapic;
pub mod memslot;
pub mod msi;
pub mod msr;
pub mod nested;
pub mod paging;
pub mod pic;
pub mod pit;
pub mod shadow;
pub mod stats;
pub mod trace;
pub mod vmcb;
pub mod vmcs;
pub mod walk;
pub mod x86;
pub mod xsave;

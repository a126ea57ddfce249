// SPDX-License-Identifier: GPL-2.0

//! Host build of rkvm's pure logic.
//!
//! `rkvm.ko` compiles `mod.rs` as its `pure` module; this crate compiles the very
//! same files for the host so that `cargo test` exercises them without a kernel,
//! and so that the `rkvm` tool decodes things exactly as the module does.

#![no_std]

#[cfg(test)]
extern crate std;

#[path = "mod.rs"]
mod inner;

pub use inner::*;

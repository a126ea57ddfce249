#!/usr/bin/env bash
# Formats the Rust sources the way scripts/lint.sh checks them: rustfmt with
# the kernel's settings (.rustfmt.toml) for module/ (from the crate roots,
# following `mod`) and the Cargo workspace, then the kernel's vertical
# imports in module/ (scripts/vertical-imports.py). One rustfmt for all:
# $RUSTFMT (scripts/common.sh).
source "$(dirname "$0")/common.sh"
export RUSTFMT
cd "$RKVM_ROOT"
"$RUSTFMT" module/rkvm_main.rs module/pure/host.rs
cargo fmt --all
scripts/vertical-imports.py

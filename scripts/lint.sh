#!/usr/bin/env bash
# The kernel's mechanical style, checked without changing a source file:
#   - rustfmt --check of module/ with the kernel's settings (.rustfmt.toml)
#   - the kernel's vertical imports in module/ (scripts/vertical-imports.py)
#   - rustfmt --check of the Cargo workspace (cargo fmt, same .rustfmt.toml)
#   - cargo clippy -D warnings on the workspace, tests included
#   - rkvm.ko built with the kernel's clippy lints (make CLIPPY=1) against the
#     test kernel, with no warning; in a copy of the module's sources
#     ($RKVM_OUT/module-clippy), since Kbuild writes objects beside them.
# One line per check, "ok" or "FAILED" with what fixes it (each check's output:
# $RKVM_OUT/lint/NAME.log); exits non-zero if any failed. `make fmt`
# (scripts/fmt.sh) fixes the formatting; clippy's findings are fixed by hand.
source "$(dirname "$0")/common.sh"

# Debian's clippy-driver: the same compiler as $KRUSTC, which built the kernel.
CLIPPY_DRIVER=${CLIPPY_DRIVER:-/usr/bin/clippy-driver}
# cargo fmt and scripts/vertical-imports.py run this rustfmt too.
export RUSTFMT
LOGS=$RKVM_OUT/lint
mkdir -p "$LOGS"
failed=0

# check LOG NAME FIX COMMAND...: run COMMAND (output in LOG.log), say ok or
# FAILED and FIX.
check() {
    local log=$LOGS/$1.log name=$2 fix=$3
    shift 3
    if (cd "$RKVM_ROOT" && "$@") > "$log" 2>&1; then
        printf 'ok      %s\n' "$name"
    else
        printf 'FAILED  %s: %s\n' "$name" "$fix"
        sed -n '1,25s/^/        /p' "$log"
        [[ $(wc -l < "$log") -le 25 ]] || echo "        ... (all of it: $log)"
        failed=$((failed + 1))
    fi
}

# rustfmt follows `mod` declarations from a crate's root file, as cargo fmt
# does: rkvm_main.rs (rkvm.ko) and host.rs (rkvm-pure) reach every file of
# module/ but the generated bindings, which are include!d.
rustfmt_module() {
    "$RUSTFMT" --check --color never module/rkvm_main.rs module/pure/host.rs
}

# rkvm.ko built from a fresh copy with CLIPPY=1: every Rust file is compiled
# (so linted) again, and any warning fails the check but objtool's: its
# "falls through to next function" on core's ChunksExact::size comes from
# the kernel's objtool (7.3's list of Rust noreturn functions matches
# panic_const_* names of 24 characters, not panic_const_div_by_zero), in the
# ordinary build too, and is no lint.
clippy_module() {
    local out
    [[ -x $CLIPPY_DRIVER ]] || { echo "no $CLIPPY_DRIVER: run 'make setup' (Debian's rust-web-clippy)"; return 1; }
    out=$(MODULE_SRC=$RKVM_OUT/module-clippy MODULE_MAKE_ARGS="CLIPPY=1 CLIPPY_DRIVER=$CLIPPY_DRIVER" \
        "$RKVM_ROOT/scripts/module.sh" build 2>&1) || { echo "$out"; return 1; }
    echo "$out"
    [[ -z $(grep -i 'warning' <<<"$out" | grep -v 'warning: objtool: .* falls through to next function') ]]
}

check rustfmt-module "rustfmt module/ (the kernel's .rustfmt.toml)" "run 'make fmt'" rustfmt_module
check vertical-imports "vertical imports in module/" "run 'make fmt' (scripts/vertical-imports.py)" \
    scripts/vertical-imports.py --check
check rustfmt-workspace "rustfmt workspace (cargo fmt)" "run 'make fmt' (cargo fmt --all)" \
    cargo fmt --all --check -- --color never
check clippy-workspace "cargo clippy -D warnings" \
    "fix what 'cargo clippy --workspace --all-targets' reports" \
    cargo clippy --quiet --workspace --all-targets --locked -- -D warnings
check clippy-module "rkvm.ko with CLIPPY=1 (the kernel's lints)" \
    "fix the warnings in $LOGS/clippy-module.log" clippy_module

[[ $failed -eq 0 ]]

# Shared settings for rkvm's scripts. Sourced, never run.
# shellcheck shell=bash

set -euo pipefail

RKVM_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Caches live outside the repository and survive clones; everything in them is
# keyed by the versions that produced it.
RKVM_CACHE=${RKVM_CACHE:-/var/cache/rkvm}
# Per-checkout build products (initramfs, ISO, logs).
RKVM_OUT=${RKVM_OUT:-$RKVM_ROOT/build}

KERNEL_SERIES=7.3
KERNEL_SUITE=trixie-backports
BINDGEN_VERSION=0.73.2
LLVM_SUFFIX=-19
# The kernel and the module must be built by the same rustc: Debian's.
KRUSTC=/usr/bin/rustc
BINDGEN_ROOT=$RKVM_CACHE/bindgen-$BINDGEN_VERSION
BINDGEN=$BINDGEN_ROOT/bin/bindgen
# One rustfmt for module/ and the Cargo workspace (cargo fmt runs $RUSTFMT):
# Debian's, of the same release as $KRUSTC.
RUSTFMT=/usr/bin/rustfmt
FRAGMENT=$RKVM_ROOT/tests/vm/kernel.config
# The debug kernel: FRAGMENT, then this (KASAN, lockdep, kmemleak, ...).
DEBUG_FRAGMENT=$RKVM_ROOT/tests/vm/kernel-debug.config

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'rkvm: error: %s\n' "$*" >&2; exit 1; }

# The Linux source version we use: recorded when it was fetched.
kernel_source_version() {
    [[ -f $RKVM_CACHE/linux-source/VERSION ]] || die "no kernel source yet: run 'make setup'"
    cat "$RKVM_CACHE/linux-source/VERSION"
}

kernel_source_dir() { echo "$RKVM_CACHE/linux-source/$(kernel_source_version)/linux-source-$KERNEL_SERIES"; }

# The config fragments of a kernel variant: "" (the test kernel) or "debug".
kernel_fragments() {
    echo "$FRAGMENT"
    [[ ${1:-} != debug ]] || echo "$DEBUG_FRAGMENT"
}

# Key of a test-kernel build ([variant]): every input that changes its output.
kernel_build_key() {
    {
        kernel_source_version
        # The fragments' settings, not their comments: editing a comment
        # keeps the cached kernels (a build is 25 minutes with the debug one).
        # shellcheck disable=SC2046
        grep -h -E '^CONFIG_|^# CONFIG_[A-Z0-9_]+ is not set$' $(kernel_fragments "${1:-}")
        "$KRUSTC" --version
        "clang$LLVM_SUFFIX" --version | head -n1
        echo "bindgen $BINDGEN_VERSION"
    } | sha256sum | cut -c1-16
}

kernel_build_dir() { echo "$RKVM_CACHE/kernel/$(kernel_source_version)-${1:+$1-}$(kernel_build_key "${1:-}")"; }

# make arguments for anything built against the test kernel.
kmake_args() {
    echo "LLVM=$LLVM_SUFFIX RUSTC=$KRUSTC BINDGEN=$BINDGEN"
}

# ended_as_planned SERIAL_LOG: the test VM ended the way its /init ends it:
# "rkvm-end" (tests/vm/init), then the kernel's line for `reboot -f` (the
# test kernel has no ACPI to power off with; QEMU's -no-reboot then exits,
# vm-bochs.sh stops Bochs) or, for a kernel with ACPI, `poweroff -f`. A
# panic (panic=-1) or a triple fault resets with neither line.
ended_as_planned() {
    tr -d '\r' < "$1" | awk '/rkvm-end: \/init finished/ { e = 1 }
        e && /reboot: (Restarting system|Power down)/ { ok = 1 } END { exit !ok }'
}

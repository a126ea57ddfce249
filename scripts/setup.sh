#!/usr/bin/env bash
# Installs everything rkvm needs on a bare Debian bookworm machine, idempotently:
# the Debian toolchain and emulators, bindgen, the Linux source and the test kernel.
# Safe to run again: each step is skipped when its cached result is present.
#   setup.sh [packages|run|debug]
# packages: the Debian packages only.
# run: only what the main job (`make run`) needs: the test kernel without
# its modules (real KVM, the tests' reference) and no gdb for the test VM.
# debug: also the debug kernel (KASAN, lockdep, kmemleak) for `make test`.
source "$(dirname "$0")/common.sh"

PACKAGES=(
    # Kernel toolchain: Debian's rustc (with its std sources) builds kernel and module;
    # make lint: its clippy-driver lints the module (the kernel's CLIPPY=1), its
    # rustfmt formats all Rust sources.
    rustc-web cargo-web rust-web-src rust-web-clippy rustfmt-web clang-19 lld-19 llvm-19 libclang-19-dev
    flex bison bc libelf-dev libssl-dev cpio xz-utils make kmod gcc libc6-dev
    # Test VM: QEMU (AMD SVM under TCG) and Bochs (Intel VMX) with what Bochs boots from.
    busybox-static qemu-system-x86 bochs bochs-term bochsbios vgabios
    isolinux syslinux-common genisoimage util-linux
    # headers_install (uapi headers for the selftests) uses rsync.
    rsync
    # make bench: the report (python3) and its plot (gnuplot).
    python3 gnuplot-nox
    # rkvm run --gdb: gdb on this machine; its libraries are also those of
    # the gdb-minimal the test VM gets (fetch_gdb_minimal).
    gdb
)

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return
    log "installing Debian packages: ${missing[*]}"
    [[ $(id -u) -eq 0 ]] || die "installing packages needs root (missing: ${missing[*]})"
    apt-get update -q || die "apt-get update failed: are Debian's package mirrors reachable?"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || die "apt-get install failed for: ${missing[*]}"
}

install_bindgen() {
    [[ -x $BINDGEN ]] && return
    log "building bindgen-cli $BINDGEN_VERSION (about 30 s)"
    mkdir -p "$BINDGEN_ROOT"
    # Unoptimized: a fourth of the optimized build's CPU time (40 s against
    # 140 s), on the critical path of a cold `make run`; the kernel's three
    # bindgen runs take about 10 s more each, beside its C compiles.
    CARGO_PROFILE_RELEASE_OPT_LEVEL=0 LIBCLANG_PATH=/usr/lib/llvm-19/lib \
        cargo install --quiet --locked --root "$BINDGEN_ROOT" \
        "bindgen-cli@$BINDGEN_VERSION" || die "cargo install bindgen-cli@$BINDGEN_VERSION failed"
}

# Linux $KERNEL_SERIES source from Debian's $KERNEL_SUITE, fetched through a private
# apt configuration: the system's own sources are never touched.
fetch_kernel_source() {
    local top=$RKVM_CACHE/linux-source
    [[ -f $top/VERSION && -d $(kernel_source_dir 2>/dev/null || echo /nonexistent) ]] && return
    local apt=$RKVM_CACHE/apt
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$top"
    echo "deb http://deb.debian.org/debian $KERNEL_SUITE main" > "$apt/sources.list"
    local A=(-o "Dir::Etc::sourcelist=$apt/sources.list" -o Dir::Etc::sourceparts=/dev/null
             -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
    log "looking up linux-source-$KERNEL_SERIES in $KERNEL_SUITE"
    apt-get "${A[@]}" update -q >/dev/null || die "apt-get update of $KERNEL_SUITE failed"
    local ver
    ver=$(apt-cache "${A[@]}" show "linux-source-$KERNEL_SERIES" 2>/dev/null | awk '/^Version:/ {print $2; exit}')
    [[ -n $ver ]] || die "linux-source-$KERNEL_SERIES is no longer in Debian's $KERNEL_SUITE: \
pick the series that is there (apt-cache search linux-source) and update KERNEL_SERIES in scripts/common.sh"
    log "downloading linux-source-$KERNEL_SERIES $ver"
    local tmp; tmp=$(mktemp -d "$RKVM_CACHE/dl.XXXXXX")
    # apt downloads as its sandbox user _apt, which must be able to write here.
    chown _apt "$tmp" 2>/dev/null || true
    (cd "$tmp" && apt-get "${A[@]}" download -q "linux-source-$KERNEL_SERIES=$ver") \
        || die "download of linux-source-$KERNEL_SERIES=$ver failed"
    log "extracting the kernel source"
    mkdir -p "$tmp/src"
    dpkg-deb --fsys-tarfile "$tmp"/linux-source-*.deb \
        | tar -x -C "$tmp" "./usr/src/linux-source-$KERNEL_SERIES.tar.xz"
    tar -xJf "$tmp/usr/src/linux-source-$KERNEL_SERIES.tar.xz" -C "$tmp/src"
    rm -rf "${top:?}/$ver"
    mv "$tmp/src" "$top/$ver"
    rm -rf "$tmp"
    echo "$ver" > "$top/VERSION"
}

# The test VM's gdb (the --gdb test): Debian's gdb-minimal, without Python,
# about a fifth of gdb with its libraries. It conflicts with the package gdb,
# so it is downloaded and unpacked into the cache, never installed; the
# libraries it needs come with gdb (PACKAGES).
fetch_gdb_minimal() {
    local dir=$RKVM_CACHE/gdb-minimal
    [[ -x $dir/usr/bin/gdb ]] && return
    log "downloading gdb-minimal for the test VM"
    local tmp; tmp=$(mktemp -d "$RKVM_CACHE/dl.XXXXXX")
    chown _apt "$tmp" 2>/dev/null || true
    (cd "$tmp" && apt-get download -q gdb-minimal) || die "apt-get download gdb-minimal failed"
    rm -rf "$dir"
    dpkg-deb -x "$tmp"/gdb-minimal_*.deb "$dir" || die "cannot unpack gdb-minimal"
    rm -rf "$tmp"
    [[ -x $dir/usr/bin/gdb ]] || die "gdb-minimal has no usr/bin/gdb"
}

# build_kernel [variant] [nomodules]: the test kernel, or the debug one
# ("debug"), with its modules unless "nomodules". bzImage and the uapi
# headers first (.rkvm-done), the modules after (.rkvm-modules-done), so
# that a build for the main job is finished by `make test` incrementally.
build_kernel() {
    local src bld fragments
    src=$(kernel_source_dir); bld=$(kernel_build_dir "${1:-}")
    mapfile -t fragments < <(kernel_fragments "${1:-}")
    local want_modules=1
    [[ ${2:-} == nomodules ]] && want_modules=0
    kernel_done() { [[ -f $bld/.rkvm-done && ( $want_modules == 0 || -f $bld/.rkvm-modules-done ) ]]; }
    kernel_done && return
    # One build per directory: a setup running in another checkout at the
    # same time waits for this one (and then finds the kernel built).
    local lock
    mkdir -p "$(dirname "$bld")"
    exec {lock}> "$bld.lock"
    flock "$lock"
    kernel_done && return
    if [[ ! -f $bld/.rkvm-done ]]; then
        configure_kernel "$src" "$bld" "${fragments[@]}"
        log "building the ${1:-test}${1:+ test} kernel (about 8 minutes on 2 CPUs, 12 for debug; log: $bld/build.log)"
        kmake "$src" "$bld" bzImage
        # Userspace headers in $bld/usr/include: linux/kvm.h for the module's
        # bindgen step and, with asm/, for the C selftests.
        # shellcheck disable=SC2046
        make -s -C "$src" O="$bld" $(kmake_args) headers >/dev/null
        # What an external module's build reads beyond bzImage: the module
        # linker script (modules_prepare), and Module.symvers, which Kbuild
        # writes with the modules: without them it is vmlinux's exports
        # alone, as the modules' build then writes it again with theirs.
        kmake "$src" "$bld" modules_prepare
        [[ -f $bld/Module.symvers ]] || cp "$bld/vmlinux.symvers" "$bld/Module.symvers"
        touch "$bld/.rkvm-done"
    fi
    if [[ $want_modules == 1 ]]; then
        log "building the ${1:-test}${1:+ test} kernel's modules (real KVM, the reference: about 3 minutes; log: $bld/build.log)"
        kmake "$src" "$bld" modules
        touch "$bld/.rkvm-modules-done"
    fi
}

# configure_kernel SRC BLD FRAGMENT...: tinyconfig, the fragments, checked.
configure_kernel() {
    local src=$1 bld=$2; shift 2
    log "configuring the kernel in $bld"
    mkdir -p "$bld"
    # shellcheck disable=SC2046
    make -s -C "$src" O="$bld" $(kmake_args) tinyconfig >/dev/null
    "$src/scripts/kconfig/merge_config.sh" -m -O "$bld" "$bld/.config" "$@" >/dev/null
    # shellcheck disable=SC2046
    make -s -C "$src" O="$bld" $(kmake_args) olddefconfig >/dev/null
    # CONFIG_RUST drops out silently when 'make rustavailable' fails: say why.
    if ! grep -q '^CONFIG_RUST=y' "$bld/.config"; then
        # shellcheck disable=SC2046
        make -C "$src" O="$bld" $(kmake_args) rustavailable >&2 || true
        die "CONFIG_RUST=y did not survive olddefconfig (see rustavailable above)"
    fi
    # Every option the fragments set, or turn off, must be so in .config
    # (Kconfig drops what a dependency or a select overrules, silently).
    local line missing=0
    while read -r line; do
        if [[ $line =~ ^CONFIG_[A-Z0-9_]+=[ym]$ ]]; then
            grep -qx "$line" "$bld/.config" && continue
        elif [[ $line =~ ^#\ (CONFIG_[A-Z0-9_]+)\ is\ not\ set$ ]]; then
            grep -q "^${BASH_REMATCH[1]}=" "$bld/.config" || continue
        else
            continue
        fi
        echo "rkvm: config fragment line not in .config: $line" >&2
        missing=1
    done < <(cat "$@")
    [[ $missing -eq 0 ]] || die "the kernel config lost options from $*"
}

# kmake SRC BLD TARGET: a kernel build step on every CPU, logged.
kmake() {
    # shellcheck disable=SC2046
    if ! make -C "$1" O="$2" $(kmake_args) -j"$(nproc)" "$3" >> "$2/build.log" 2>&1; then
        tail -n 40 "$2/build.log" >&2
        die "kernel build ($3) failed (full log: $2/build.log)"
    fi
}

# Runs the named steps side by side (downloads beside a build); fails if any did.
side_by_side() {
    local pids=() step status=0
    for step in "$@"; do
        "$step" & pids+=($!)
    done
    for step in "${pids[@]}"; do
        wait "$step" || status=1
    done
    [[ $status -eq 0 ]] || die "setup failed (see above)"
}

target=${1:-}
case $target in
    ""|packages|run|debug) ;;
    *) die "unknown setup target: $target (none, packages, run or debug)" ;;
esac
mkdir -p "$RKVM_CACHE"
install_packages
[[ $target == packages ]] && exit 0
# bindgen compiles on every CPU while the kernel source downloads and unpacks.
if [[ $target == run ]]; then
    side_by_side install_bindgen fetch_kernel_source
    build_kernel "" nomodules
else
    side_by_side install_bindgen fetch_kernel_source fetch_gdb_minimal
    build_kernel
fi
[[ $target == debug ]] && build_kernel debug
log "setup done: kernel $(kernel_source_version), build $(kernel_build_dir)${target:+ ($target)}"

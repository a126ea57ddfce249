#!/usr/bin/env bash
# rkvm.ko for a kernel of your own, or for the project's test kernels:
#   module.sh build   [KDIR=/path/to/kernel/build]   (make module)
#   module.sh install [KDIR=...]                     (make install)
# KDIR is the kernel's build directory (its O= output, or
# /lib/modules/<release>/build of an installed kernel); by default `build`
# uses the project's test kernel and `install` the running kernel's.
# Before building, checks what the build needs of that kernel, each failure
# one line that says what to do: Linux >= KERNEL_SERIES for x86-64, built
# with CONFIG_RUST=y, the rustc it was built with (RUSTC=), a bindgen
# (BINDGEN=), its clang (LLVM=) when it was built with clang, and the kernel
# symbols rkvm.ko needs (module/kernel-symbols) exported.
# MODULE_SRC=DIR builds a copy of the module's sources there (Kbuild writes
# objects beside them; build.sh builds the debug kernel's rkvm.ko this way,
# lint.sh the clippy one); MODULE_MAKE_ARGS adds make arguments (lint.sh:
# CLIPPY=1).
USER_BINDGEN=${BINDGEN:-}   # common.sh sets BINDGEN to the one setup.sh installs
source "$(dirname "$0")/common.sh"

# The kernel's symbols rkvm.ko needs that a Rust-enabled kernel may lack:
# checked in KDIR/Module.symvers up front (the file says more).
SYMBOLS=$RKVM_ROOT/module/kernel-symbols

fail() { printf 'rkvm: %s\n' "$*" >&2; exit 1; }

# A CONFIG_ value of KDIR's kernel ("" when unset).
kconfig() { sed -n "s/^$1=//p" "$KDIR/include/config/auto.conf" | tr -d '"'; }

# Checks KDIR and sets MAKE_ARGS for building against it.
check_kdir() {
    [[ -f $KDIR/Makefile ]] ||
        fail "KDIR=$KDIR is not a kernel build directory (no Makefile): give the kernel's build output, e.g. KDIR=/lib/modules/\$(uname -r)/build"
    [[ -f $KDIR/include/config/auto.conf && -f $KDIR/include/config/kernel.release ]] ||
        fail "the kernel in $KDIR is not configured and built: run 'make' there first"
    [[ -f $KDIR/Module.symvers ]] ||
        fail "$KDIR has no Module.symvers: build the kernel's modules there first ('make modules')"
    local release want have
    release=$(cat "$KDIR/include/config/kernel.release")
    [[ $(kconfig CONFIG_X86_64) == y ]] || fail "the kernel in $KDIR ($release) is not x86-64: rkvm runs guests with AMD SVM or Intel VMX"
    want=$KERNEL_SERIES
    have=$(echo "$release" | grep -o '^[0-9]*\.[0-9]*')
    [[ $(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n1) == "$want" ]] ||
        fail "the kernel in $KDIR is $release: rkvm.ko needs Linux $want or later"
    [[ $(kconfig CONFIG_RUST) == y ]] ||
        fail "the kernel in $KDIR ($release) was built without Rust: set CONFIG_RUST=y ('make rustavailable' says what it lacks) and rebuild it"
    [[ $(kconfig CONFIG_MODULES) == y ]] || fail "the kernel in $KDIR ($release) cannot load modules: set CONFIG_MODULES=y and rebuild it"

    # The same rustc: crates from another one do not link (E0514).
    local rustc_text rustc
    rustc_text=$(kconfig CONFIG_RUSTC_VERSION_TEXT)
    for rustc in ${RUSTC:-} rustc "$KRUSTC"; do
        command -v "$rustc" > /dev/null && [[ $("$rustc" --version) == "$rustc_text" ]] && break
        [[ -z ${RUSTC:-} ]] || fail "the kernel in $KDIR was built with '$rustc_text'; RUSTC=$RUSTC is '$("$RUSTC" --version 2>&1)': give the kernel's rustc"
        rustc=
    done
    [[ -n $rustc ]] || fail "the kernel in $KDIR was built with '$rustc_text', and neither rustc in PATH nor $KRUSTC is that one: give it as RUSTC=/path/to/rustc"

    # bindgen turns the tree's <linux/kvm.h> into Rust (module/Kbuild).
    local bindgen
    for bindgen in ${BINDGEN:-} "$BINDGEN_CACHED" bindgen; do
        command -v "$bindgen" > /dev/null && break
        [[ -z ${BINDGEN:-} ]] || fail "BINDGEN=$BINDGEN: not found"
        bindgen=
    done
    [[ -n $bindgen ]] ||
        fail "no bindgen (the kernel used '$(kconfig CONFIG_BINDGEN_VERSION_TEXT)'): install it ('cargo install --locked bindgen-cli') or give BINDGEN=/path/to/bindgen"

    # A kernel built with clang: the module with the same clang and lld.
    local llvm=
    if [[ $(kconfig CONFIG_CC_IS_CLANG) == y ]]; then
        local major=$(( $(kconfig CONFIG_CLANG_VERSION) / 10000 ))
        if [[ -n ${LLVM:-} ]]; then
            llvm=$LLVM
        elif command -v "clang-$major" > /dev/null; then
            llvm=-$major
        elif command -v clang > /dev/null && [[ $(clang -dumpversion) == "$major".* ]]; then
            llvm=1
        else
            fail "the kernel in $KDIR was built with clang $major: install clang-$major, lld-$major and llvm-$major, or give LLVM="
        fi
    fi

    # The kernel functions rkvm.ko calls, exported by this kernel.
    local missing
    missing=$(awk 'NR == FNR { exported[$2] = 1; next } !($1 in exported) { print $1 }' \
        "$KDIR/Module.symvers" <(listed_symbols) | tr '\n' ' ')
    [[ -z $missing ]] ||
        fail "the kernel in $KDIR ($release) does not export what rkvm.ko needs: ${missing% }"

    MAKE_ARGS=(RUSTC="$rustc" BINDGEN="$bindgen" ${llvm:+LLVM=$llvm})
    log "rkvm.ko for Linux $release ($KDIR): $rustc_text, $("$bindgen" --version 2>&1 | head -n1)${llvm:+, LLVM=$llvm}"
}

# The lines of SYMBOLS (comments and blank lines left out).
listed_symbols() { grep -v -e '^#' -e '^$' "$SYMBOLS"; }

build() {
    local src=${MODULE_SRC:-$RKVM_ROOT}
    check_kdir
    if [[ $src != "$RKVM_ROOT" ]]; then
        rm -rf "$src"
        mkdir -p "$src"
        (cd "$RKVM_ROOT" && find Kbuild module \( -name Kbuild -o -name '*.rs' -o -name '*.c' -o -name '*.h' -o -name '*.S' -o -name kernel-symbols \) \
            ! -name kvm_uapi_generated.rs ! -name '*.mod.c' | cpio -pdm --quiet "$src")
    fi
    # shellcheck disable=SC2086
    make -s -C "$KDIR" M="$src" "${MAKE_ARGS[@]}" ${MODULE_MAKE_ARGS:-} modules
    # After a build for the test kernel: the module still imports each listed symbol.
    if [[ $KDIR == "$(test_kernel_dir)" ]]; then
        local stale
        stale=$(comm -23 <(listed_symbols | sort -u) <(nm -u "$src/module/rkvm.ko" | awk '{ print $2 }' | sort -u) | tr '\n' ' ')
        [[ -z $stale ]] || fail "module/kernel-symbols lists what rkvm.ko no longer imports: ${stale% } (delete those lines)"
    fi
}

install() {
    local src=${MODULE_SRC:-$RKVM_ROOT}
    build
    [[ $(id -u) -eq 0 || -n ${INSTALL_MOD_PATH:-} ]] || fail "installing into /lib/modules needs root (or INSTALL_MOD_PATH=DIR)"
    make -s -C "$KDIR" M="$src" "${MAKE_ARGS[@]}" ${INSTALL_MOD_PATH:+INSTALL_MOD_PATH=$INSTALL_MOD_PATH} modules_install
    log "installed rkvm.ko for $(cat "$KDIR/include/config/kernel.release")${INSTALL_MOD_PATH:+ under $INSTALL_MOD_PATH}: 'modprobe rkvm' loads it"
}

# The project's test kernel build directory, if setup.sh made one.
test_kernel_dir() {
    [[ -f $RKVM_CACHE/linux-source/VERSION ]] && kernel_build_dir || true
}

BINDGEN_CACHED=$BINDGEN
BINDGEN=$USER_BINDGEN
case ${1:-} in
    build)
        KDIR=${KDIR:-$(test_kernel_dir)}
        [[ -n $KDIR ]] || fail "without KDIR= rkvm.ko is built for the project's test kernel: run 'make setup' first, or give KDIR=/path/to/kernel/build"
        build ;;
    install)
        if [[ -z ${KDIR:-} ]]; then
            KDIR=/lib/modules/$(uname -r)/build
            [[ -f $KDIR/Makefile ]] ||
                fail "the running kernel ($(uname -r)) has no build directory at $KDIR: install its headers (linux-headers-$(uname -r)) or give KDIR=/path/to/kernel/build"
        fi
        install ;;
    *) fail "usage: module.sh build|install (KDIR=, RUSTC=, BINDGEN=, LLVM= in the environment)" ;;
esac

#!/usr/bin/env bash
# Builds what the test VM runs: rkvm.ko (against the test kernel), the static
# `rkvm` tool, the C selftests, the flat test guests, and the initramfs
# holding them all.
#   build.sh [module|userspace|selftests|guests|initramfs|all|run|debug]   (default: all)
# run: what the main job needs (no selftests, no QEMU or gdb for the test
# VM). debug: rkvm.ko and an initramfs for the debug kernel (after all).
# userspace needs no kernel: it may run while setup.sh builds one.
source "$(dirname "$0")/common.sh"

TARGET=x86_64-unknown-linux-gnu
if [[ ${1:-all} != userspace ]]; then
    KBUILD=$(kernel_build_dir)
    KSRC=$(kernel_source_dir)
    [[ -f $KBUILD/.rkvm-done ]] || die "the test kernel is not built: run 'make setup'"
fi

# rkvm.ko through the same checked path as `make module KDIR=...`.
build_module() {
    log "building rkvm.ko"
    KDIR=$KBUILD "$RKVM_ROOT/scripts/module.sh" build
}

build_userspace() {
    log "building the rkvm tool (static)"
    (cd "$RKVM_ROOT" && RUSTFLAGS="-C target-feature=+crt-static" \
        cargo build --quiet --release --locked --target $TARGET -p rkvm)
}

# kselftest-style C tests, built with the kernel tree's own kselftest harness
# and uapi headers (linux/kvm.h of the kernel under test).
build_selftests() {
    log "building the selftests"
    local out=$RKVM_OUT/selftests src
    mkdir -p "$out"
    for src in "$RKVM_ROOT"/tests/selftests/*_test.c; do
        gcc -static -O2 -Wall -Werror -D_GNU_SOURCE -pthread \
            -I "$KBUILD/usr/include" -I "$KSRC/tools/testing/selftests" \
            -o "$out/$(basename "$src" .c)" "$src"
    done
    # The microbenchmarks share the selftests' VM helpers.
    mkdir -p "$RKVM_OUT/bench"
    gcc -static -O2 -Wall -Werror -D_GNU_SOURCE -I "$KBUILD/usr/include" -I "$RKVM_ROOT/tests/selftests" \
        -o "$RKVM_OUT/bench/bench" "$RKVM_ROOT/tests/bench/bench.c"
}

# Flat test guests: tests/guests/NAME.S, assembled and linked at 0x1000 as
# a raw binary; `.code16` ones run in real mode, the others in long mode.
build_guests() {
    log "building the test guests"
    local out=$RKVM_OUT/guests src name
    mkdir -p "$out"
    for src in "$RKVM_ROOT"/tests/guests/*.S; do
        name=$(basename "$src" .S)
        if grep -q '^[[:space:]]*\.code16' "$src"; then
            as --32 -I "$RKVM_ROOT/tests/guests" -o "$out/$name.o" "$src"
            ld -m elf_i386 -Ttext=0x1000 --oformat=binary -o "$out/$name.bin" "$out/$name.o"
        else
            as --64 -I "$RKVM_ROOT/tests/guests" -o "$out/$name.o" "$src"
            ld -m elf_x86_64 -Ttext=0x1000 --oformat=binary -o "$out/$name.bin" "$out/$name.o"
        fi
        rm -f "$out/$name.o"
        cp "$RKVM_ROOT/tests/guests/$name.expected" "$out/"
        for extra in status nodiff; do
            [[ ! -f $RKVM_ROOT/tests/guests/$name.$extra ]] || cp "$RKVM_ROOT/tests/guests/$name.$extra" "$out/"
        done
    done
}

# The Linux guest that `rkvm run --kernel` boots inside the test VM: the test
# kernel's own bzImage (in the debug VM too) and a busybox initramfs whose
# /init reports and powers off.
build_linux_guest() {
    local dir=$1 groot=$RKVM_OUT/guest-initramfs
    rm -rf "$groot"
    mkdir -p "$groot"/{bin,proc,sys,dev,mnt} "$dir"
    cp /bin/busybox "$groot/bin/busybox"
    for applet in sh mount umount mkdir echo uname grep sed tr cat head ls wc dd sync sleep poweroff reboot; do
        ln -s busybox "$groot/bin/$applet"
    done
    cp "$RKVM_ROOT/tests/vm/guest-init" "$groot/init"
    (cd "$groot" && find . | cpio -o -H newc --quiet | gzip -1) > "$dir/initramfs.cpio.gz"
    cp "$KBUILD/arch/x86/boot/bzImage" "$dir/bzImage"
    # shellcheck disable=SC2046
    make -s -C "$KBUILD" $(kmake_args) kernelrelease > "$dir/release"
}

# QEMU as a KVM client inside the test VMs (tests/vm/runner.sh, t_qemu):
# Debian's qemu-system-x86_64 with the shared libraries it loads and the
# firmware it needs for `-machine pc -kernel`, as a cpio archive that
# build_initramfs appends (the kernel unpacks concatenated archives). Made
# again when the installed QEMU changes.
build_qemu_client() {
    local out=$RKVM_OUT/qemu-client.cpio.gz qemu=/usr/bin/qemu-system-x86_64
    [[ -s $out && $out -nt $qemu && $out -nt ${BASH_SOURCE[0]} ]] && return
    log "packing QEMU as a KVM client for the test VMs"
    local root=$RKVM_OUT/qemu-client f
    rm -rf "$root"
    copy_in() { mkdir -p "$root$(dirname "$1")" && cp -L "$1" "$root$1"; }
    copy_in "$qemu"
    for f in $(ldd "$qemu" | awk '/=> \// {print $3} /^[ \t]*\/lib64\// {print $1}'); do
        copy_in "$f"
    done
    # SeaBIOS, the option ROM that loads -kernel, and the ones QEMU's pc
    # machine asks for (without multiboot_dma.bin a multiboot kernel hangs
    # in the firmware with no message).
    for f in /usr/share/seabios/bios-256k.bin /usr/share/qemu/{linuxboot_dma,kvmvapic,multiboot_dma}.bin; do
        copy_in "$f"
    done
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
}

# The test VM's gdb (gdb-minimal from the cache, with the libraries it
# loads, where ldd finds them on this machine) and the test kernel's
# symbols for it: vmlinux without its contents (objcopy --only-keep-debug
# keeps the symbol table; the test kernel has no DWARF), about 1 MiB
# compressed.
add_gdb() {
    local root=$1 kbuild=$2 gdb=$RKVM_CACHE/gdb-minimal/usr/bin/gdb lib
    [[ -x $gdb ]] || die "no gdb-minimal in $RKVM_CACHE: run scripts/setup.sh"
    mkdir -p "$root/usr/bin"
    cp "$gdb" "$root/usr/bin/gdb"
    for lib in $(ldd "$gdb" | awk '$3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
        cp --parents -L "$lib" "$root/"
    done
    objcopy --only-keep-debug "$kbuild/vmlinux" "$root/rkvm/linux/vmlinux"
}

# build_initramfs [KBUILD RKVM_KO OUT]: default the test kernel's. With
# RUN_ONLY=1, only what the main job uses.
build_initramfs() {
    local kbuild=${1:-$KBUILD} ko=${2:-$RKVM_ROOT/module/rkvm.ko} out=${3:-$RKVM_OUT/initramfs.cpio.gz}
    log "building the initramfs $(basename "$out")${RUN_ONLY:+ for the main job}"
    local root=$RKVM_OUT/initramfs krel applet
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,rkvm/selftests}
    cp /bin/busybox "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
    done
    # The test kernel's own modules (real KVM, the reference) with modules.dep.
    if [[ -z ${RUN_ONLY:-} ]]; then
        [[ -f $kbuild/.rkvm-modules-done ]] || die "the kernel in $kbuild has no modules: run 'make setup'"
        # shellcheck disable=SC2046
        make -s -C "$kbuild" $(kmake_args) INSTALL_MOD_PATH="$root" INSTALL_MOD_STRIP=1 \
            modules_install > /dev/null
        krel=$(make -s -C "$kbuild" $(kmake_args) kernelrelease)
        rm -f "$root/lib/modules/$krel/build" "$root/lib/modules/$krel/source"
        cp "$RKVM_OUT"/selftests/* "$root/rkvm/selftests/"
        mkdir -p "$root/rkvm/bench"
        cp "$RKVM_OUT/bench/bench" "$root/rkvm/bench/"
    fi
    cp "$ko" "$root/rkvm/rkvm.ko"
    cp "$RKVM_ROOT/target/$TARGET/release/rkvm" "$root/rkvm/"
    mkdir -p "$root/rkvm/guests"
    cp "$RKVM_OUT"/guests/* "$root/rkvm/guests/"
    cp "$RKVM_ROOT"/tests/vm/{lib.sh,runner.sh,main-job.sh,bench.sh,tour.sh} "$root/rkvm/"
    cp "$RKVM_ROOT/Documentation/tour.md" "$root/rkvm/"   # its commands are a test
    build_linux_guest "$root/rkvm/linux"
    [[ -n ${RUN_ONLY:-} ]] || add_gdb "$root" "$kbuild"
    cp "$RKVM_ROOT/tests/vm/init" "$root/init"
    (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out"
    # The test kernel's VMs (QEMU and Bochs) also run QEMU as a KVM client;
    # the debug kernel's reliability suite does not.
    if [[ -z ${1:-} && -z ${RUN_ONLY:-} ]]; then
        build_qemu_client
        cat "$RKVM_OUT/qemu-client.cpio.gz" >> "$out"
    fi
}

# rkvm.ko for the debug kernel, built from a copy of the module's sources
# (Kbuild builds an external module in its source directory) through
# `make module KDIR=...`'s checked path, and the debug VM's initramfs: the debug kernel's modules, that rkvm.ko, the same tools
# and tests.
build_debug() {
    local kbuild copy=$RKVM_OUT/module-debug
    kbuild=$(kernel_build_dir debug)
    [[ -f $kbuild/.rkvm-done ]] || die "the debug kernel is not built: run 'scripts/setup.sh debug'"
    log "building rkvm.ko for the debug kernel"
    KDIR=$kbuild MODULE_SRC=$copy "$RKVM_ROOT/scripts/module.sh" build
    build_initramfs "$kbuild" "$copy/module/rkvm.ko" "$RKVM_OUT/initramfs-debug.cpio.gz"
}

mkdir -p "$RKVM_OUT"
case "${1:-all}" in
    module) build_module ;;
    userspace) build_userspace ;;
    selftests) build_selftests ;;
    guests) build_guests ;;
    initramfs) build_initramfs ;;
    all) build_module; build_userspace; build_selftests; build_guests; build_initramfs ;;
    run) build_module; build_userspace; build_guests; RUN_ONLY=1 build_initramfs ;;
    debug) build_debug ;;
    *) die "unknown build target: $1" ;;
esac

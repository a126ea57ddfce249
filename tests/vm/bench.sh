#!/bin/sh
# `make bench` inside the test VM: the same microbenchmarks (tests/bench)
# and Linux boots through real KVM and through rkvm, each with nested
# paging and with shadow paging (kvm_amd npt=0, rkvm.ko tdp=0), in this one
# boot. Device labels: kvm, rkvm, kvm-shadow, rkvm-shadow.
# Lines "bench <device> <name> <ns per operation>" (and "bench-exits
# <device> <name> <exits per operation>") go to the host, which computes
# medians, spreads and ratios (scripts/bench-report.py).
. /rkvm/lib.sh
exec < /dev/null
ROUNDS=$(cmdline_arg rkvm.rounds); ROUNDS=${ROUNDS:-7}
BOOTS=$(cmdline_arg rkvm.boots); BOOTS=${BOOTS:-3}
case "$(cmdline_arg rkvm.emu)" in
    bochs) KVM_MOD=kvm_intel ;;
    *) KVM_MOD=kvm_amd ;;
esac

# Every benchmark of one device, one line per round.
bench_device() { # label device
    RKVM_DEVICE=$2 /rkvm/bench/bench "$ROUNDS" > /tmp/bench.out 2> /tmp/bench.err ||
        say "bench-error $1: $(tail -n 1 /tmp/bench.err)"
    while read -r kind name value; do
        case $kind in
            bench) say "bench $1 $name $value" ;;
            exits) say "bench-exits $1 $name $value" ;;
        esac
    done < /tmp/bench.out
    i=0
    while [ $i -lt "$BOOTS" ]; do
        i=$((i + 1))
        ns=$(/rkvm/bench/bench time rkvm run --device "$2" --kernel /rkvm/linux/bzImage \
            --initrd /rkvm/linux/initramfs.cpio.gz --cmdline "console=ttyS0 nolapic noapic panic=-1 rdinit=/init" \
            2> /dev/null | tail -n 1) || { say "bench-error $1: Linux boot failed"; return; }
        say "bench $1 linux_boot $ns"
    done
}

# One Linux boot with extra `rkvm run` arguments and a guest test mode:
# prints its wall time (ns) and the exits the kernel counted.
boot() { # device args test
    # shellcheck disable=SC2086
    ns=$(/rkvm/bench/bench time rkvm run --device "$1" $2 --kernel /rkvm/linux/bzImage \
        --initrd /rkvm/linux/initramfs.cpio.gz \
        --cmdline "console=ttyS0 nolapic noapic panic=-1 rdinit=/init $3" 2> /tmp/boot.err | tail -n 1)
    exits=$(sed -n 's/^rkvm: vCPU statistics from the kernel: exits \([0-9]*\).*/\1/p' /tmp/boot.err)
    echo "$ns ${exits:-0}"
}

# Paravirtual against emulated I/O (issue 7), through one device: 32 KiB
# written to the console through COM1 (two exits per byte) and through
# virtio-console, and all of an 8 MiB disk read and written through
# virtio-blk; each less a boot that moves nothing. Per KiB (console) and
# per MiB (disk): time, and exits.
bench_io() { # label device
    kib=32
    rm -f /tmp/bench-disk.img
    dd if=/dev/zero of=/tmp/bench-disk.img bs=1M count=8 2> /dev/null
    for how in serial virtio; do
        args=""; [ $how = virtio ] && args="--virtio-console"
        boot "$2" "$args" "rkvm.test=console-rate rkvm.bytes=0" > /tmp/b; read -r base_ns base_exits < /tmp/b
        boot "$2" "$args" "rkvm.test=console-rate rkvm.bytes=$((kib * 1024))" > /tmp/b; read -r ns exits < /tmp/b
        say "bench $1 console_$how $(( (ns - base_ns) / kib ))"
        say "bench-exits $1 console_$how $(( (exits - base_exits) / kib ))"
    done
    boot "$2" "--disk /tmp/bench-disk.img" "rkvm.test=console-rate rkvm.bytes=0" > /tmp/b; read -r base_ns base_exits < /tmp/b
    for op in read write; do
        boot "$2" "--disk /tmp/bench-disk.img" "rkvm.test=blk-$op" > /tmp/b; read -r ns exits < /tmp/b
        say "bench $1 blk_$op $(( (ns - base_ns) / 8 ))"
        say "bench-exits $1 blk_$op $(( (exits - base_exits) / 8 ))"
    done
}

# label, then the module's parameters for shadow paging (none: nested).
bench_kvm() {
    if modprobe "$KVM_MOD" "$@" 2>/dev/null; then
        bench_device "$label" /dev/kvm
        [ "$#" = 0 ] && bench_io "$label" /dev/kvm
        rmmod "$KVM_MOD" kvm
    else
        say "bench-error $label: modprobe $KVM_MOD $* failed"
    fi
}
bench_rkvm() {
    if insmod /rkvm/rkvm.ko "$@"; then
        bench_device "$label" /dev/rkvm
        [ "$#" = 0 ] && bench_io "$label" /dev/rkvm
        rmmod rkvm
    else
        say "bench-error $label: insmod rkvm.ko $* failed"
    fi
}

say "bench: $ROUNDS rounds, $BOOTS Linux boots per device"
label=kvm bench_kvm
label=rkvm bench_rkvm
[ "$KVM_MOD" = kvm_amd ] && label=kvm-shadow bench_kvm npt=0
[ "$KVM_MOD" = kvm_amd ] && label=rkvm-shadow bench_rkvm tdp=0
say "bench: done"

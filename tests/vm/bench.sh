#!/bin/sh
# `make bench` inside the test VM: the same microbenchmarks (tests/bench)
# and Linux boots through real KVM and through rkvm, each with nested
# paging and with shadow paging (kvm_amd npt=0 or kvm_intel ept=0, rkvm.ko
# tdp=0), in this one
# boot. Device labels: kvm, rkvm, kvm-shadow, rkvm-shadow.
# Lines "bench <device> <name> <ns per operation>" (and "bench-exits
# <device> <name> <exits per operation>") go to the host, which computes
# medians, spreads and ratios (scripts/bench-report.py).
. /rkvm/lib.sh
exec < /dev/null
ROUNDS=$(cmdline_arg rkvm.rounds); ROUNDS=${ROUNDS:-7}
BOOTS=$(cmdline_arg rkvm.boots); BOOTS=${BOOTS:-3}
IO_ROUNDS=$(cmdline_arg rkvm.io_rounds); IO_ROUNDS=${IO_ROUNDS:-5}
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

# One Linux boot with extra `rkvm run` arguments and a guest test mode
# (tests/vm/guest-init): prints the time between the guest's two markers
# (ns), then the exits the kernel counted in the whole boot.
boot() { # device args test start-marker end-marker
    # shellcheck disable=SC2086
    ns=$(/rkvm/bench/bench between "$4" "$5" rkvm run --device "$1" $2 --kernel /rkvm/linux/bzImage \
        --initrd /rkvm/linux/initramfs.cpio.gz \
        --cmdline "console=ttyS0 nolapic noapic panic=-1 rdinit=/init $3" 2> /tmp/boot.err | tail -n 1)
    exits=$(sed -n 's/^rkvm: vCPU statistics from the kernel: exits \([0-9]*\).*/\1/p' /tmp/boot.err)
    echo "${ns:-0} ${exits:-0}"
}

# Paravirtual against emulated I/O (issue 7), through one device: 32 KiB
# written to the console through COM1 (two exits per byte), 512 KiB through
# virtio-console, and all of a 64 MiB disk read and written through
# virtio-blk (sizes that make the exits of the I/O outnumber the boot's
# own, which vary from boot to boot with its timer ticks). Each is timed
# between the guest's markers around it, once per round (a boot each); per
# KiB (console) and per MiB (disk). Exits per operation: the first round's
# exits less those of a boot that moves nothing.
bench_io() { # label device
    mib=64
    rm -f /tmp/bench-disk.img
    dd if=/dev/zero of=/tmp/bench-disk.img bs=1M count=$mib 2> /dev/null
    for how in serial virtio; do
        args="" kib=32
        [ $how = virtio ] && args="--virtio-console" kib=512
        boot "$2" "$args" "rkvm.test=console-rate rkvm.bytes=0" "writing 0" "wrote 0" > /tmp/b
        read -r _ base_exits < /tmp/b
        i=0
        while [ $i -lt "$IO_ROUNDS" ]; do
            boot "$2" "$args" "rkvm.test=console-rate rkvm.bytes=$((kib * 1024))" \
                "rkvm-guest: writing" "rkvm-guest: wrote" > /tmp/b
            read -r ns exits < /tmp/b
            [ "$ns" -gt 0 ] && say "bench $1 console_$how $((ns / kib))"
            [ $i = 0 ] && say "bench-exits $1 console_$how $(( (exits - base_exits) / kib ))"
            i=$((i + 1))
        done
    done
    boot "$2" "--disk /tmp/bench-disk.img" "rkvm.test=console-rate rkvm.bytes=0" "writing 0" "wrote 0" > /tmp/b
    read -r _ base_exits < /tmp/b
    for op in read write; do
        i=0
        while [ $i -lt "$IO_ROUNDS" ]; do
            # The guest's markers (tests/vm/guest-init).
            case $op in
                read) start="reading vda" end="read vda" ;;
                write) start="writing vda" end="wrote vda" ;;
            esac
            boot "$2" "--disk /tmp/bench-disk.img" "rkvm.test=blk-$op" "rkvm-guest: $start" "rkvm-guest: $end" > /tmp/b
            read -r ns exits < /tmp/b
            [ "$ns" -gt 0 ] && say "bench $1 blk_$op $((ns / mib))"
            [ $i = 0 ] && say "bench-exits $1 blk_$op $(( (exits - base_exits) / mib ))"
            i=$((i + 1))
        done
    done
}

# The I/O benchmarks boot Linux about twenty times per device: under QEMU
# only (Bochs takes 25 s a boot).
IO=yes
[ "$KVM_MOD" = kvm_intel ] && IO=no

# label, then the module's parameters for shadow paging (none: nested).
bench_kvm() {
    if modprobe "$KVM_MOD" "$@" 2>/dev/null; then
        bench_device "$label" /dev/kvm
        [ "$#" = 0 ] && [ "$IO" = yes ] && bench_io "$label" /dev/kvm
        rmmod "$KVM_MOD" kvm
    else
        say "bench-error $label: modprobe $KVM_MOD $* failed"
    fi
}
bench_rkvm() {
    if insmod /rkvm/rkvm.ko "$@"; then
        bench_device "$label" /dev/rkvm
        [ "$#" = 0 ] && [ "$IO" = yes ] && bench_io "$label" /dev/rkvm
        rmmod rkvm
    else
        say "bench-error $label: insmod rkvm.ko $* failed"
    fi
}

say "bench: $ROUNDS rounds, $BOOTS Linux boots per device, $IO_ROUNDS per I/O benchmark"
label=kvm bench_kvm
label=rkvm bench_rkvm
# KVM's shadow paging: kvm_amd without NPT, kvm_intel without EPT.
case "$KVM_MOD" in
    kvm_intel) label=kvm-shadow bench_kvm ept=0 ;;
    *) label=kvm-shadow bench_kvm npt=0 ;;
esac
label=rkvm-shadow bench_rkvm tdp=0
say "bench: done"

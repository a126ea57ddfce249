#!/bin/sh
# `make bench` inside the test VM: the same microbenchmarks (tests/bench),
# Linux boots and I/O benchmarks through real KVM and through rkvm, each
# with nested paging and with shadow paging (kvm_amd npt=0 or kvm_intel
# ept=0, rkvm.ko tdp=0), in this one boot.
#
# Interleaved: each round loads every hypervisor in turn, runs one round of
# everything through it and unloads it, so that whatever drifts on a
# shared host during the run (another VM's load, the host's clock speed)
# lands on every device alike instead of on whichever ran at that time.
# Even rounds go through the devices in the reverse order, so that no
# device always comes first after the other's unload.
#
# Device labels: kvm, rkvm, kvm-shadow, rkvm-shadow, and under QEMU
# rkvm-notrace (rkvm.ko exit_trace=0, only the cpuid_exit benchmark: what
# recording every exit costs, against rkvm with its default exit_trace=1).
# Lines to the host, r the round (1, 2, ...):
#     bench <device> <name> <ns per operation> round=<r>
#     bench-exits <device> <name> <exits per operation> round=<r>
#     bench-error <device> round=<r>: <what failed>
# The host computes medians, ratios and their intervals over the rounds
# (scripts/bench-report.py).
. /rkvm/lib.sh
exec < /dev/null
case "$(cmdline_arg rkvm.emu)" in
    bochs) KVM_MOD=kvm_intel NO_TDP=ept=0 ;;
    *) KVM_MOD=kvm_amd NO_TDP=npt=0 ;;
esac

# Defaults. Costs from the serial logs of 2026-12-06 under QEMU: a
# round's five module loads and unloads with one round of the
# microbenchmarks through each device, 9 s; its four Linux boots (about
# 3.7 s twice with nested paging, 7 and 6.4 s with shadow paging), 21 s;
# its I/O benchmarks, four boots through kvm and four through rkvm, 50 s;
# round 1's I/O baselines, 32 s; a save and restore through kvm and rkvm,
# 13 s (a one-round run). So ROUNDS x 9 + BOOTS x 21 + IO_ROUNDS x 50 + 32
# + SAVE_ROUNDS x 13 s: 16, 6, 6, 6 rounds take about 11.3 minutes (10,
# 10, 8, 6 took 13.5).
# How many: the report's interval is the k-th smallest to the k-th largest
# per-round ratio (scripts/bench-report.py, sign_ranks()); it reaches 95 %
# from 6 rounds on (smallest to largest) and leaves out k - 1 wild rounds
# on each side: one of 9 to 11, two of 12 to 14, three of 15 and 16. The
# microbenchmarks are cheap, so they run 16 rounds: resampling the rounds
# of the two runs of 2026-12-06 (README, Benchmarks), two runs then
# disagree on 1.8 of their 19 rows, against 2.5 with 10 rounds. Boots and
# I/O, the dearest, run 6: the fewest with a 95 % interval. The save and
# restore, 6.
# Bochs: its clock is its instruction count (scripts/vm-bochs.sh), so its
# figures do not drift with the host and most vary under 1 % from round
# to round. A round of the microbenchmarks costs 13 s, one with the Linux
# boots 108 s more (24 to 35 s a boot), a save and restore about 75 s
# (make test's linux_save_restore: 35 to 38 s a device): 6 rounds, 3 of
# them with the boots and 3 with a save and restore (their intervals,
# smallest to largest of 3, hold the ratio 3 times in 4: the report says
# so), no I/O (and no rkvm-notrace, below), about 10.5 minutes.
# The save and restore of a 128 MiB guest (two boots' worth, halved: each
# run goes half-way) in rounds 1 to SAVE_ROUNDS, through kvm and rkvm.
case "$KVM_MOD" in
    kvm_intel) rounds=6 boots=3 io_rounds=0 save_rounds=3 ;;
    *) rounds=16 boots=6 io_rounds=6 save_rounds=6 ;;
esac
ROUNDS=$(cmdline_arg rkvm.rounds); ROUNDS=${ROUNDS:-$rounds}
# The Linux boot runs in rounds 1 to BOOTS, the I/O benchmarks in rounds
# 1 to IO_ROUNDS: at most one of each per device and round.
BOOTS=$(cmdline_arg rkvm.boots); BOOTS=${BOOTS:-$boots}
IO_ROUNDS=$(cmdline_arg rkvm.io_rounds); IO_ROUNDS=${IO_ROUNDS:-$io_rounds}
SAVE_ROUNDS=$(cmdline_arg rkvm.save_rounds); SAVE_ROUNDS=${SAVE_ROUNDS:-$save_rounds}

# The devices of a round, in order. The exit trace's cost is measured
# under QEMU (AMD SVM) only, as the test it replaces was.
DEVICES="kvm rkvm kvm-shadow rkvm-shadow"
[ "$KVM_MOD" = kvm_amd ] && DEVICES="kvm rkvm rkvm-notrace kvm-shadow rkvm-shadow"

error() { # label message
    say "bench-error $1 round=$round: $2"
}

# One round of the microbenchmarks (`bench 1`: a warm-up and one timed
# round of each; or only benchmark $3). 300 s: a hang guard (a round takes
# seconds), so that a guest that never exits is reported, not waited for.
micro() { # label device [benchmark]
    # shellcheck disable=SC2086
    status=0
    RKVM_DEVICE=$2 timeout 300 /rkvm/bench/bench 1 $3 > /tmp/bench.out 2> /tmp/bench.err || status=$?
    case $status in
        0) ;;
        124|143) error "$1" "hung: stopped after 300 s (hang guard) $(tail -n 1 /tmp/bench.err)" ;;
        *) error "$1" "$(tail -n 1 /tmp/bench.err)" ;;
    esac
    while read -r kind name value; do
        case $kind in
            bench) say "bench $1 $name $value round=$round" ;;
            exits) say "bench-exits $1 $name $value round=$round" ;;
        esac
    done < /tmp/bench.out
}

# One Linux boot to /init and power-off, timed from outside. `bench time`
# prints the time after the guest's console output: the last line.
linux_boot() { # label device
    if /rkvm/bench/bench time rkvm run --device "$2" --kernel /rkvm/linux/bzImage \
        --initrd /rkvm/linux/initramfs.cpio.gz --cmdline "console=ttyS0 nolapic noapic panic=-1 rdinit=/init" \
        > /tmp/boot.out 2> /tmp/boot.err; then
        ns=$(tail -n 1 /tmp/boot.out)
        case $ns in
            '' | *[!0-9]*) error "$1" "Linux boot: no time in \"$ns\"" ;;
            *) say "bench $1 linux_boot $ns round=$round" ;;
        esac
    else
        error "$1" "Linux boot failed: $(tail -n 1 /tmp/boot.err)"
    fi
}

# A save and a restore of a Linux guest with 128 MiB (rkvm run --save,
# --restore), mid-boot: saved after 8000 exits to userspace, resumed to its
# power-off. The figure is the two times rkvm run reports for the save
# (reading the state and writing the file) and the restore (reading it and
# setting the state), added; the boot around them is not timed.
save_restore() { # label device
    rm -f /tmp/bench.snap
    if rkvm run --device "$2" --kernel /rkvm/linux/bzImage --initrd /rkvm/linux/initramfs.cpio.gz \
        --cmdline "console=ttyS0 nolapic noapic panic=-1 rdinit=/init" --save /tmp/bench.snap --save-after 8000 \
        > /dev/null 2> /tmp/save.err &&
        rkvm run --device "$2" --restore /tmp/bench.snap > /dev/null 2> /tmp/restore.err; then
        s=$(sed -n 's/^rkvm: saved the guest to .* in \([0-9]*\) µs$/\1/p' /tmp/save.err)
        r=$(sed -n 's/^rkvm: restored .* in \([0-9]*\) µs$/\1/p' /tmp/restore.err)
        if [ -n "$s" ] && [ -n "$r" ]; then
            say "bench $1 save_restore $(( (s + r) * 1000 )) round=$round"
        else
            error "$1" "save_restore: no times in \"$(tail -n 1 /tmp/save.err)\" \"$(tail -n 1 /tmp/restore.err)\""
        fi
    else
        error "$1" "save_restore failed: $(tail -n 1 /tmp/save.err) $(tail -n 1 /tmp/restore.err)"
    fi
    rm -f /tmp/bench.snap
}

# One Linux boot with extra `rkvm run` arguments and a guest test mode
# (tests/vm/guest-init): prints the time between the guest's two markers
# (ns, 0 if they did not both come; how the boot ended after them does not
# matter), then the exits the kernel counted in the whole boot.
boot() { # device args test start-marker end-marker
    # shellcheck disable=SC2086
    ns=$(/rkvm/bench/bench between "$4" "$5" rkvm run --device "$1" $2 --kernel /rkvm/linux/bzImage \
        --initrd /rkvm/linux/initramfs.cpio.gz \
        --cmdline "console=ttyS0 nolapic noapic panic=-1 rdinit=/init $3" 2> /tmp/boot.err)
    exits=$(sed -n 's/^rkvm: vCPU statistics from the kernel: exits \([0-9]*\).*/\1/p' /tmp/boot.err)
    echo "${ns:-0} ${exits:-0}"
}

# One I/O benchmark, one boot: timed between the guest's markers around
# the transfer, per unit (KiB or MiB). In round 1 also its exits per unit:
# the boot's exits less those of a boot with the same devices that moves
# nothing (a boot's own exits vary with its timer ticks; the payloads are
# sized to outnumber them).
io_bench() { # label device name units rkvm-args guest-test start-marker end-marker
    if [ "$round" = 1 ]; then
        boot "$2" "$5" "rkvm.test=console-rate rkvm.bytes=0" "writing 0" "wrote 0" > /tmp/b
        read -r _ base_exits < /tmp/b
    fi
    boot "$2" "$5" "$6" "$7" "$8" > /tmp/b
    read -r ns exits < /tmp/b
    if [ "$ns" -gt 0 ]; then
        say "bench $1 $3 $((ns / $4)) round=$round"
        [ "$round" = 1 ] && say "bench-exits $1 $3 $(( (exits - base_exits) / $4 )) round=$round"
    else
        error "$1" "$3: no \"$7\" then \"$8\" from the guest: $(tail -n 1 /tmp/boot.err)"
    fi
}

# Paravirtual against emulated I/O (issue 7), one round through one device:
# 32 KiB written to the console through COM1 (two exits per byte), 512 KiB
# through virtio-console, and all of a 64 MiB disk read and written
# through virtio-blk.
io_round() { # label device
    io_bench "$1" "$2" console_serial 32 "" "rkvm.test=console-rate rkvm.bytes=32768" \
        "rkvm-guest: writing" "rkvm-guest: wrote"
    io_bench "$1" "$2" console_virtio 512 --virtio-console "rkvm.test=console-rate rkvm.bytes=524288" \
        "rkvm-guest: writing" "rkvm-guest: wrote"
    # The guest writes zeros: the image is the same in every round.
    io_bench "$1" "$2" blk_read 64 "--disk /tmp/bench-disk.img" rkvm.test=blk-read \
        "rkvm-guest: reading vda" "rkvm-guest: read vda"
    io_bench "$1" "$2" blk_write 64 "--disk /tmp/bench-disk.img" rkvm.test=blk-write \
        "rkvm-guest: writing vda" "rkvm-guest: wrote vda"
}

# One round through the hypervisor a label names: loaded with that
# label's parameters, measured, unloaded (a load alone moves a figure by a
# few per cent, so every round has its own).
device_round() { # label
    case $1 in
        kvm) modprobe "$KVM_MOD" ;;
        kvm-shadow) modprobe "$KVM_MOD" "$NO_TDP" ;;
        # The defaults: the in-kernel irqchips on (the APIC benchmarks need
        # them; VMs without them run as before).
        rkvm) insmod /rkvm/rkvm.ko ;;
        rkvm-notrace) insmod /rkvm/rkvm.ko exit_trace=0 ;;
        rkvm-shadow) insmod /rkvm/rkvm.ko tdp=0 ;;
    esac 2> /tmp/load.err || { error "$1" "loading: $(tail -n 1 /tmp/load.err)"; return; }
    case $1 in
        kvm*) dev=/dev/kvm ;;
        *) dev=/dev/rkvm ;;
    esac
    case $1 in
        # Only the row it is compared on, against rkvm's in the same round.
        rkvm-notrace) micro "$1" $dev cpuid_exit ;;
        *)
            micro "$1" $dev
            [ "$round" -le "$BOOTS" ] && linux_boot "$1" $dev ;;
    esac
    case $1 in
        kvm | rkvm) [ "$round" -le "$IO_ROUNDS" ] && io_round "$1" $dev ;;
    esac
    case $1 in
        kvm | rkvm) [ "$round" -le "$SAVE_ROUNDS" ] && save_restore "$1" $dev ;;
    esac
    case $1 in
        kvm*) rmmod "$KVM_MOD" kvm ;;
        *) rmmod rkvm ;;
    esac 2> /tmp/load.err || error "$1" "unloading: $(tail -n 1 /tmp/load.err)"
}

start_heartbeat
say "bench: $ROUNDS rounds ($BOOTS with a Linux boot, $IO_ROUNDS with the I/O benchmarks, $SAVE_ROUNDS with a save and restore), each through: $DEVICES"
if [ "$IO_ROUNDS" -gt 0 ]; then
    rm -f /tmp/bench-disk.img
    dd if=/dev/zero of=/tmp/bench-disk.img bs=1M count=64 2> /dev/null
fi
round=1
while [ "$round" -le "$ROUNDS" ]; do
    order=$DEVICES
    if [ $((round % 2)) = 0 ]; then
        order=""
        for d in $DEVICES; do order="$d${order:+ $order}"; done
    fi
    say "bench: round $round: $order"
    for d in $order; do device_round "$d"; done
    round=$((round + 1))
done
say "bench: done"

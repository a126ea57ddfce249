#!/usr/bin/env bash
# Boot a Linux bzImage + initramfs in the Bochs x86 emulator (an Intel CPU with
# VMX, EPT, VPID and unrestricted guest), non-interactively, and capture the
# guest's first serial port (COM1).
#
#   scripts/vm-bochs.sh --kernel BZIMAGE --initrd INITRD --cmdline "CMDLINE" \
#                       --log SERIAL_LOG --timeout SECONDS
#
# The serial console goes to SERIAL_LOG and, live, to stdout (like vm-qemu.sh).
#
# Exit status:
#   0    the test VM ended as its /init ends it (common.sh, ended_as_planned:
#        `reboot -f`, after which Bochs is stopped; or an ACPI power-off)
#   124  the timeout expired; Bochs and its helpers have been killed
#   3    the guest reset itself (reboot, panic with panic=-1, triple fault);
#        Bochs does not boot it again
#   1    Bochs failed (the tail of its own log is printed to stderr)
#   2    bad usage
#
# Environment:
#   RKVM_OUT   where the work directory bochs-XXXX goes (default: <repo>/build)
#   RKVM_KEEP  1 keeps the work directory (ISO, bochsrc, bochs.log, term.out)
#   RKVM_BOCHS_IPS  emulated instructions per second (default 50000000, see below)
#
# How it works, and why (Debian bookworm's bochs 2.7):
# - Bochs cannot load a bzImage: we build an isolinux CD image with genisoimage
#   and boot it from the emulated CD-ROM.
# - Debian's build has no `nogui` display, so we use the ncurses `term` display
#   inside a pty made by util-linux `script`; its screen output is thrown into
#   term.out in the work directory.
# - Its built-in debugger starts first: `-rc` feeds it `c` (continue), and `quit`
#   in case the simulation ever falls back to the debugger prompt, so nothing
#   ever waits for stdin.
# - The test kernel has no ACPI, so the test VM's /init ends it with a reboot
#   (Bochs would boot the CD again): a second reset in bochs.log stops Bochs,
#   and the kernel's reboot line after the runner's last one in the serial
#   log (common.sh, ended_as_planned) tells that end from a panic or a
#   triple fault. (A kernel with ACPI powers off instead: Bochs then raises
#   a panic "ACPI control: soft power off" and exits.)
# - `script` runs in a process group of its own (setsid) and puts Bochs in a
#   session of its own: on timeout both groups are killed, Bochs first.
#
# Timing (2-core host, test kernel 7.3, 1 CPU, ips 50M; boot to power-off):
# about 9.5 s with an XZ-compressed kernel, most of it the decompression of
# the kernel, which Bochs runs at roughly 70 MIPS; about 3.5 s with LZ4.
# Guest idle time (HLT) costs almost nothing. What the caller can do:
# - pass console=ttyS0,115200: bare console=ttyS0 means 9600 baud, and Bochs
#   times the UART, so every character costs about 1 ms of guest time;
# - prefer CONFIG_KERNEL_LZ4 (or GZIP) and an uncompressed initramfs cpio.
set -euo pipefail
source "$(dirname "$0")/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
die() { printf 'vm-bochs: error: %s\n' "$1" >&2; exit "${2:-1}"; }  # die MESSAGE [STATUS]
note() { printf 'vm-bochs: %s\n' "$*" >&2; }

# ---- arguments --------------------------------------------------------------
kernel='' initrd='' cmdline='' serial_log='' timeout=''
while (($#)); do
    case $1 in
        --kernel)  kernel=${2?}; shift 2 ;;
        --initrd)  initrd=${2?}; shift 2 ;;
        --cmdline) cmdline=${2?}; shift 2 ;;
        --log)     serial_log=${2?}; shift 2 ;;
        --timeout) timeout=${2?}; shift 2 ;;
        -h|--help) usage ;;
        *) note "unknown argument: $1"; usage ;;
    esac
done
[[ -n $kernel && -n $initrd && -n $serial_log && -n $timeout ]] || usage
[[ -f $kernel ]] || die "no kernel: $kernel" 2
[[ -f $initrd ]] || die "no initrd: $initrd" 2
[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout wants a positive number of seconds" 2
[[ $cmdline != *$'\n'* ]] || die "the command line must be one line" 2
# Bochs's config parser splits on commas and blanks: keep paths plain.
[[ $serial_log != *[,\ \"]* ]] || die "--log path must not contain commas, blanks or quotes" 2
ips=${RKVM_BOCHS_IPS:-50000000}
[[ $ips =~ ^[1-9][0-9]*$ ]] || die "RKVM_BOCHS_IPS must be a positive number" 2

# ---- host tools and firmware ------------------------------------------------
ISOLINUX_BIN=/usr/lib/ISOLINUX/isolinux.bin
LDLINUX_C32=/usr/lib/syslinux/modules/bios/ldlinux.c32
BIOS=/usr/share/bochs/BIOS-bochs-latest
VGABIOS=/usr/share/vgabios/vgabios.bin
for tool in bochs genisoimage script setsid; do
    command -v "$tool" >/dev/null ||
        die "$tool not found (apt-get install bochs bochs-term bochsbios vgabios isolinux syslinux-common genisoimage)"
done
for f in "$ISOLINUX_BIN" "$LDLINUX_C32" "$BIOS" "$VGABIOS" \
         /usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term_gui.so; do
    [[ -f $f ]] || die "$f missing (apt-get install bochs bochs-term bochsbios vgabios isolinux syslinux-common)"
done

# ---- work directory ---------------------------------------------------------
out=${RKVM_OUT:-$ROOT/build}
[[ $out != *[,\ \"]* ]] || die "RKVM_OUT must not contain commas, blanks or quotes: $out" 2
mkdir -p "$out"
work=$(mktemp -d "$out/bochs-XXXX")
mkdir -p "$(dirname "$serial_log")"
serial_log=$(cd "$(dirname "$serial_log")" && pwd)/$(basename "$serial_log")
: >"$serial_log"

runner=''       # pid of `setsid script ...`: leader of Bochs's process group
streamer=''     # pid of the `tail -f` that copies the serial log to stdout
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
    stop_vm
    end_stream
    if [[ ${RKVM_KEEP:-0} == 1 ]]; then
        note "work files kept in $work"
    else
        rm -rf "$work"
    fi
}
# Stop Bochs, then `script`. Bochs goes first (it has nothing to save) so that
# `script` sees it end, reaps it and exits: killing both at once leaves an
# orphaned zombie, which the PID 1 of a container may be slow to reap.
stop_vm() {
    [[ -n $runner ]] || return 0
    local kids p
    # `script` runs Bochs in a session (and process group) of its own.
    kids=$(cat "/proc/$runner/task/"*/children 2>/dev/null || true)
    for p in $kids; do kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null || true; done
    for _ in {1..25}; do
        kill -0 "$runner" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL -- "-$runner" 2>/dev/null || true
    wait "$runner" 2>/dev/null || true
    runner=''
}
# Let tail print the rest of the serial log: it exits once the runner is gone.
end_stream() {
    [[ -n $streamer ]] || return 0
    wait "$streamer" 2>/dev/null || true
    streamer=''
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- boot CD: isolinux + kernel + initramfs -----------------------------------
mkdir -p "$work/iso/isolinux"
cp "$ISOLINUX_BIN" "$LDLINUX_C32" "$work/iso/isolinux/"
cp "$kernel" "$work/iso/bzimage"
cp "$initrd" "$work/iso/initrd.img"
cat >"$work/iso/isolinux/isolinux.cfg" <<EOF
default linux
prompt 0
timeout 0
label linux
  kernel /bzimage
  append initrd=/initrd.img $cmdline
EOF
genisoimage -quiet -o "$work/boot.iso" -R -J \
    -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table "$work/iso"
rm -rf "$work/iso"

# ---- Bochs configuration ------------------------------------------------------
# ips: emulated instructions per second. With `clock: sync=none` the guest's
# time comes from the instruction count alone (deterministic; idle time is
# skipped), and the guest's TSC runs at ips Hz. A lower value makes busy waits
# in the guest (serial transmit, calibration, udelay) cheaper; a higher one
# means fewer timer ticks per instruction. Measured boot to power-off: 20M
# 3.1 s, 50M 3.5 s, 100M 4.3 s (LZ4 kernel). Bochs itself runs about 70
# MIPS here, so at 50M guest time passes a little faster than host time.
# (ips itself is read and checked with the arguments, above.)
# Processors: one, or RKVM_BOCHS_CPUS (Debian's Bochs is built with SMP
# support and runs them in turns on one host thread, a few instructions
# each, so two take about twice as long): with two, the VMX backend's vCPUs
# run side by side in the test VM, with IPIs between its CPUs (make test
# runs stress_test so).
cpus=${RKVM_BOCHS_CPUS:-1}
cat >"$work/bochsrc" <<EOF
display_library: term
romimage: file=$BIOS
vgaromimage: file=$VGABIOS
megs: 1024
cpu: model=corei7_haswell_4770, count=$cpus, ips=$ips, reset_on_triple_fault=1, ignore_bad_msrs=1
clock: sync=none, time0=local
pci: enabled=1, chipset=i440fx
ata0: enabled=1, ioaddr1=0x1f0, ioaddr2=0x3f0, irq=14
ata0-master: type=cdrom, path=$work/boot.iso, status=inserted
boot: cdrom
floppy_bootsig_check: disabled=1
mouse: enabled=0
speaker: enabled=0
com1: enabled=1, mode=file, dev=$serial_log
log: $work/bochs.log
panic: action=fatal
error: action=report
info: action=report
debug: action=ignore
EOF
printf 'c\nquit\n' >"$work/debugger.rc"

# ---- run ------------------------------------------------------------------------
# `script` gives the term display a pty; TERM/LINES/COLUMNS make ncurses happy
# without a real terminal; stdin is /dev/null so nothing can block on input.
# Milliseconds since the epoch (bash 5's EPOCHREALTIME; its separator follows the locale).
now_ms() { local t=${EPOCHREALTIME//[.,]/}; echo $((t / 1000)); }
start=$(now_ms)
deadline=$((start + timeout * 1000))
(
    cd "$work"
    exec env TERM=vt100 LINES=25 COLUMNS=80 setsid -w script -q -e \
        -c "bochs -q -f bochsrc -rc debugger.rc" /dev/null
) </dev/null >"$work/term.out" 2>&1 &
runner=$!
# Stream the serial console to stdout too, like vm-qemu.sh (callers filter it
# live); tail ends by itself once the runner is gone.
tail -n +1 -s 0.2 -f --pid="$runner" "$serial_log" &
streamer=$!

# Bochs logs one reset at power-on; any later one is the guest resetting itself
# (reboot, panic=-1, triple fault). A hardware reset drops Bochs back into its
# debugger, which then reads `quit`; a keyboard-controller (software) reset
# does not, and Bochs would boot the guest again: we stop it.
guest_reset() {
    local n
    n=$(grep -c -E 'Reset\((HARDWARE|SOFTWARE)\) called' "$work/bochs.log" 2>/dev/null || true)
    ((${n:-0} > 1))
}

# Wait for Bochs to end, the deadline to pass or the guest to reset. bochs.log
# grows by about 25 kB per guest second (Bochs reports each RDMSR of the
# APERF/MPERF MSRs it lacks), so it is searched every 2 s only.
status=0
polls=0
while kill -0 "$runner" 2>/dev/null; do
    if (($(now_ms) >= deadline)); then
        stop_vm
        end_stream
        note "timeout after ${timeout}s; serial log: $serial_log"
        exit 124
    fi
    if ((++polls % 10 == 0)) && guest_reset; then
        break
    fi
    sleep 0.2
done
if guest_reset; then
    stop_vm
else
    wait "$runner" || status=$?
    runner=''
fi
end_stream
elapsed_ms=$(($(now_ms) - start))
elapsed=$((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100))

if ended_as_planned "$serial_log"; then
    note "the test VM ended (its /init rebooted it) after ${elapsed}s"
    exit 0
fi
if guest_reset; then
    note "the guest reset itself (reboot, panic, triple fault) after ${elapsed}s; serial log: $serial_log"
    exit 3
fi
note "bochs failed (status $status) after ${elapsed}s; end of its log:"
if [[ -s $work/bochs.log ]]; then
    tail -n 40 "$work/bochs.log" >&2
else
    tail -n 40 "$work/term.out" | tr -d '\r' >&2 || true
fi
exit 1

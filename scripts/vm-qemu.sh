#!/usr/bin/env bash
# Boots the test kernel in QEMU with software emulation (TCG), as an AMD EPYC
# with SVM and nested paging. Same interface as vm-bochs.sh:
#   vm-qemu.sh --kernel BZIMAGE --initrd INITRD --cmdline CMDLINE --log SERIAL_LOG \
#              --timeout SECONDS [--interactive]
# Exits as vm-bochs.sh does: 0 when the test VM ended as its /init ends it
# (common.sh, ended_as_planned), 3 when it reset itself otherwise (panic
# with panic=-1, triple fault: with -no-reboot QEMU exits 0 for those too,
# so the kernel's lines tell them apart),
# 124 on timeout, 128 + N when a signal N stopped QEMU, QEMU's own status
# when it failed (the end of its stderr is printed); and 125 when the test
# VM stopped responding (below). With --interactive the serial console is
# this terminal and there is no log or timeout.
#
# The watchdog: the in-VM runner and make bench (tests/vm/lib.sh,
# start_heartbeat) write a line on the second serial port (LOG.alive) every
# 20 s from each CPU in turn. A CPU
# that no longer runs the test VM's kernel (QEMU's CPU stuck in guest mode:
# Documentation/execution-model.md, "An open problem") stops those lines.
# When none came for RKVM_QEMU_STALL seconds (240) after the first, the
# CPUs' registers go to LOG.cpus (from QEMU's monitor), QEMU is stopped
# and the exit status is 125, rather than waiting for the time limit.
source "$(dirname "$0")/common.sh"

kernel= initrd= cmdline= log= timeout=600 interactive=0
while [[ $# -gt 0 ]]; do
    case $1 in
        --kernel) kernel=$2; shift 2 ;;
        --initrd) initrd=$2; shift 2 ;;
        --cmdline) cmdline=$2; shift 2 ;;
        --log) log=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --interactive) interactive=1; shift ;;
        *) echo "vm-qemu.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

# The test kernel has no ACPI, so no HPET or PM timer to calibrate its TSC
# against, and under TCG its PIT loop is too unsteady for one ("tsc: Unable
# to calibrate against PIT"): without a frequency it has no TSC clocksource
# at all, only jiffies. RDTSC under TCG reads this machine's counter, so
# the test VM is told this machine's TSC frequency (scripts/tsc-khz.c),
# and that its CPUs' TSCs agree (tsc=reliable): they do (one counter), but
# the EPYC model has no invariant-TSC flag, and an AMD machine of two
# packages (below) would otherwise count as unsynchronized.
tsc_khz=$RKVM_OUT/tsc-khz
if [[ ! -x $tsc_khz || $tsc_khz -ot $RKVM_ROOT/scripts/tsc-khz.c ]]; then
    mkdir -p "$RKVM_OUT"
    gcc -O2 -Wall -o "$tsc_khz" "$RKVM_ROOT/scripts/tsc-khz.c"
fi
cmdline+=" tsc_early_khz=$("$tsc_khz") tsc=reliable"

# -cpu EPYC: SVM + NPT under TCG (no NRIP-save, no decode assists).
# RKVM_QEMU_ACCEL: another -accel, e.g. tcg,thread=single.
# Two sockets of one core: the test kernel finds its CPUs in SeaBIOS's MP
# table, which has one entry per package (QEMU's plain -smp 2 would be one
# package of two cores, and Linux would see one CPU).
qemu=(qemu-system-x86_64 -accel "${RKVM_QEMU_ACCEL:-tcg}" -cpu EPYC -smp sockets=2,cores=1,threads=1 -m 1G -no-reboot -nic none
      -kernel "$kernel" -initrd "$initrd" -append "$cmdline")

if [[ $interactive -eq 1 ]]; then
    exec "${qemu[@]}" -nographic
fi

# The CPUs' registers from QEMU's monitor (socket $1).
monitor_registers() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
def drain():
    out = b""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            out += data
    except socket.timeout:
        pass
    return out
drain()
s.sendall(b"info registers -a\n")
sys.stdout.write(drain().decode(errors="replace"))
EOF
}

watchdog() {
    local stall=${RKVM_QEMU_STALL:-240} size=0 now last new
    last=$(date +%s)
    while sleep 10; do
        [[ -f $log.pid ]] || continue
        new=$(stat -c %s "$log.alive" 2> /dev/null || echo 0)
        now=$(date +%s)
        if [[ $new != "$size" ]]; then
            size=$new last=$now
        elif [[ $size != 0 ]] && (( now - last >= stall )); then
            echo "no line from the runner on the second serial port for $((now - last)) s" > "$log.stalled"
            # From the first CPU on (the monitor echoes the command first).
            monitor_registers "$log.mon" 2>&1 | tr -d '\r' | sed -n '/^CPU#/,$p' > "$log.cpus"
            kill "$(cat "$log.pid")"
            return
        fi
    done
}

# The serial console goes to stdout (the caller filters it) and to the log;
# QEMU's own messages (e.g. CPUID features TCG lacks) to LOG.stderr, shown on
# failure only.
: > "$log"
rm -f "$log.alive" "$log.pid" "$log.stalled" "$log.cpus" "$log.mon"
watchdog &
watchdog_pid=$!
set +e
timeout --foreground -k 5 "$timeout" "${qemu[@]}" -display none -monitor "unix:$log.mon,server=on,wait=off" \
    -pidfile "$log.pid" -serial stdio -serial "file:$log.alive" < /dev/null 2> "$log.stderr" | tee -a "$log"
status=${PIPESTATUS[0]}
set -e
kill "$watchdog_pid" 2> /dev/null || true
wait "$watchdog_pid" 2> /dev/null || true
if [[ -f $log.stalled ]]; then
    echo "vm-qemu: the test VM stopped responding: $(cat "$log.stalled"); stopped it (its CPUs' registers: $log.cpus)" >&2
    exit 125
fi
# QEMU stopped by a signal (SIGTERM, SIGINT, SIGHUP) exits 0 as well, and
# says so on stderr: that is neither a power-off nor a reset.
stopped=$(grep -o 'terminating on signal [0-9]*.*' "$log.stderr" | tail -n 1 || true)
if [[ $status -eq 0 && -n $stopped ]]; then
    echo "vm-qemu: qemu-system-x86_64: $stopped" >&2
    exit $((128 + $(echo "$stopped" | sed 's/terminating on signal \([0-9]*\).*/\1/')))
elif [[ $status -eq 0 ]]; then
    ended_as_planned "$log" || exit 3
elif [[ $status -ne 124 ]]; then
    echo "vm-qemu: qemu-system-x86_64 failed with status $status; the end of its stderr:" >&2
    tail -n 20 "$log.stderr" >&2
fi
exit "$status"

#!/usr/bin/env bash
# Boots the test VM with the initramfs from build.sh, in one mode:
#   vm.sh qemu|bochs run|test|bench|shell [LOG]
# RKVM_VM_EXTRA adds to the test kernel's command line; RKVM_KERNEL=debug
# boots the debug kernel (KASAN, lockdep, kmemleak) with its initramfs.
# Prints the runner's lines live (the rkvm-out: tag stripped); the whole serial
# log is kept in LOG (default build/<emu>-<mode>.log). When the test VM ends
# before its /init finished, says how (timeout, the emulator's failure, a
# kernel panic, a reset with no panic: a triple fault), in which test, with
# the end of the serial log; LOG.outcome gets "finished" or "ended-early",
# the test and how (scripts/test.sh reads it).
source "$(dirname "$0")/common.sh"

emu=$1 mode=$2
log=${3:-$RKVM_OUT/$emu-$mode.log}
# Nothing of an earlier run may be read as this one's.
mkdir -p "$(dirname "$log")"
: > "$log"
rm -f "$log.outcome"
# 115200 baud: Bochs times the UART, and 9600 costs about 1 ms a character.
# log_buf_len: the runner's lines go through the kernel's log too, and a
# whole run's must fit for the end's kernel log check (128 KiB by default:
# it wrapped in a QEMU run and lost rkvm.ko's load line).
cmdline="console=ttyS0,115200 panic=-1 printk.devkmsg=on loglevel=6 log_buf_len=16M rkvm.mode=$mode rkvm.emu=$emu"
[[ ${RKVM_TEST_FAIL:-0} == 1 ]] && cmdline+=" rkvm.fail=1"
[[ -n ${RKVM_VM_EXTRA:-} ]] && cmdline+=" $RKVM_VM_EXTRA"
# The fuzzer's length and seed (tests/selftests/fuzz_test.c), for longer runs.
[[ -n ${RKVM_FUZZ_CALLS:-} ]] && cmdline+=" rkvm.fuzz_calls=$RKVM_FUZZ_CALLS"
[[ -n ${RKVM_FUZZ_SEED:-} ]] && cmdline+=" rkvm.fuzz_seed=$RKVM_FUZZ_SEED"
# One test or a few, repeated: see tests/vm/runner.sh (rkvm.only, rkvm.repeat).
[[ -n ${RKVM_ONLY:-} ]] && cmdline+=" rkvm.only=$RKVM_ONLY"
[[ -n ${RKVM_REPEAT:-} ]] && cmdline+=" rkvm.repeat=$RKVM_REPEAT"
case $emu in
    qemu) timeout=${RKVM_QEMU_TIMEOUT:-600} ;;
    bochs) timeout=${RKVM_BOCHS_TIMEOUT:-1800} ;;
    *) die "unknown emulator: $emu (qemu or bochs)" ;;
esac
variant=${RKVM_KERNEL:-}
[[ $variant == debug ]] && cmdline+=" rkvm.debug=1"
args=(--kernel "$(kernel_build_dir "$variant")/arch/x86/boot/bzImage"
      --initrd "$RKVM_OUT/initramfs${variant:+-$variant}.cpio.gz" --cmdline "$cmdline")

if [[ $mode == shell ]]; then
    [[ $emu == qemu ]] || die "the interactive shell runs under QEMU only"
    exec "$RKVM_ROOT/scripts/vm-qemu.sh" "${args[@]}" --interactive
fi

log "booting the test VM in $emu ($mode; serial log: $log)"
set +e
"$RKVM_ROOT/scripts/vm-$emu.sh" "${args[@]}" --log "$log" --timeout "$timeout" \
    | sed -un 's/^.*rkvm-out: //p'
status=${PIPESTATUS[0]}
set -e

# Each CPU's RIP and CPL when vm-qemu.sh's watchdog stopped the test VM,
# from QEMU's registers in LOG.cpus (a CPU stuck in guest mode shows its
# guest's: execution-model.md, "An open problem").
stuck_cpus() {
    [[ -s $log.cpus ]] || { echo "no registers from QEMU's monitor"; return; }
    awk '/^CPU#/ { cpu = $1 } /^RIP=/ { printf "%s%s %s %s %s", sep, cpu, $1, $4, $NF; sep = ", " }
         /^CR0=/ { printf " %s", $3 }' "$log.cpus"
    echo " (all registers: $log.cpus)"
}

# How the run ended, from the emulator's status (vm-qemu.sh and vm-bochs.sh
# agree on them) and the serial log.
how_it_ended() {
    local panic oops
    # The kernel's own lines, not the runner's (which quote guests' logs).
    kernel_lines() { tr -d '\r' < "$log" | grep -av 'rkvm-out: '; }
    panic=$(kernel_lines | grep -a -m1 -o 'Kernel panic - not syncing.*')
    oops=$(kernel_lines | grep -a -m1 -o -E '(Oops|BUG|general protection fault|kernel BUG)[: ].*')
    case $status in
        0) echo "it powered off before /init finished" ;;
        3) if [[ -n $panic ]]; then echo "its kernel panicked ($panic)"
           else echo "it reset itself with no panic on its console: a triple fault (or a reboot)"; fi ;;
        124) echo "it was still running after ${timeout}s: stopped (timeout)" ;;
        125) echo "it stopped responding ($(cat "$log.stalled" 2> /dev/null)): stopped; $(stuck_cpus)" ;;
        129|130|131|134|137|139|143) echo "$emu ended by SIG$(kill -l $((status - 128))) (status $status)" ;;
        *) echo "$emu failed with status $status" ;;
    esac
    [[ -z $oops ]] || echo "; its kernel log has: $oops"
}

if [[ $status -eq 0 ]] && grep -aq 'rkvm-end: /init finished' "$log"; then
    echo finished > "$log.outcome"
else
    # The test it was in: the last one the runner started (runner.sh).
    running=$(sed -n 's/^.*rkvm-start: \([0-9]* [^[:space:]]*\).*$/\1/p' "$log" | tail -n 1)
    how=$(how_it_ended | tr -d '\n')
    {
        echo ended-early
        echo "test=$running"
        echo "how=$how"
    } > "$log.outcome"
    echo "rkvm: the $emu test VM ended early${running:+ in test $running}: $how" >&2
    echo "rkvm: the last lines of its serial log ($log):" >&2
    tr -d '\r' < "$log" | grep -av 'rkvm-start: ' | tail -n 15 | sed 's/^/    /' >&2
    [[ $status -ne 0 ]] || status=1
fi
exit "$status"

#!/usr/bin/env bash
# Boots the test VM with the initramfs from build.sh, in one mode:
#   vm.sh qemu|bochs run|test|bench|shell [LOG]
# RKVM_VM_EXTRA adds to the test kernel's command line; RKVM_KERNEL=debug
# boots the debug kernel (KASAN, lockdep, kmemleak) with its initramfs.
# Prints the runner's lines live (the rkvm-out: tag stripped); the whole serial
# log is kept in LOG (default build/<emu>-<mode>.log).
source "$(dirname "$0")/common.sh"

emu=$1 mode=$2
log=${3:-$RKVM_OUT/$emu-$mode.log}
# 115200 baud: Bochs times the UART, and 9600 costs about 1 ms a character.
cmdline="console=ttyS0,115200 panic=-1 printk.devkmsg=on loglevel=6 rkvm.mode=$mode rkvm.emu=$emu"
[[ ${RKVM_TEST_FAIL:-0} == 1 ]] && cmdline+=" rkvm.fail=1"
[[ -n ${RKVM_VM_EXTRA:-} ]] && cmdline+=" $RKVM_VM_EXTRA"
# The fuzzer's length and seed (tests/selftests/fuzz_test.c), for longer runs.
[[ -n ${RKVM_FUZZ_CALLS:-} ]] && cmdline+=" rkvm.fuzz_calls=$RKVM_FUZZ_CALLS"
[[ -n ${RKVM_FUZZ_SEED:-} ]] && cmdline+=" rkvm.fuzz_seed=$RKVM_FUZZ_SEED"
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
if [[ $status -eq 124 ]]; then
    echo "rkvm: $emu did not power off within ${timeout}s (serial log: $log)" >&2
elif [[ $status -ne 0 ]]; then
    echo "rkvm: $emu failed with status $status (serial log: $log)" >&2
fi
exit "$status"

#!/usr/bin/env bash
# make bench: boots the QEMU test VM once and runs the microbenchmarks and
# Linux boots through kvm_amd and through rkvm side by side, then reports
# medians, spreads and rkvm/KVM ratios (build/bench.{json,md,png}).
# RKVM_BENCH_ROUNDS (default 7), RKVM_BENCH_BOOTS (default 3) and
# RKVM_BENCH_IO_ROUNDS (default 5, boots per I/O benchmark) set the
# repetitions. Bochs (kvm_intel) is not run: kvm_intel stalls entering a
# guest inside Bochs and rkvm has no VMX backend yet.
source "$(dirname "$0")/common.sh"
"$RKVM_ROOT/scripts/setup.sh"
"$RKVM_ROOT/scripts/build.sh" all
log=$RKVM_OUT/qemu-bench.log
RKVM_VM_EXTRA="rkvm.rounds=${RKVM_BENCH_ROUNDS:-7} rkvm.boots=${RKVM_BENCH_BOOTS:-3} rkvm.io_rounds=${RKVM_BENCH_IO_ROUNDS:-5}" \
    RKVM_QEMU_TIMEOUT=${RKVM_QEMU_TIMEOUT:-1800} "$RKVM_ROOT/scripts/vm.sh" qemu bench "$log"
grep -q 'rkvm-out: bench: done' "$log" || die "the benchmarks did not finish (serial log: $log)"
python3 "$RKVM_ROOT/scripts/bench-report.py" "$log" "$RKVM_OUT"

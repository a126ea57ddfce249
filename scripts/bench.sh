#!/usr/bin/env bash
# make bench: boots the QEMU test VM once and runs the microbenchmarks and
# Linux boots through kvm_amd and through rkvm side by side, then reports
# medians, spreads and rkvm/KVM ratios (build/bench.{json,md,png}).
# RKVM_BENCH_ROUNDS (default 7), RKVM_BENCH_BOOTS (default 3) and
# RKVM_BENCH_IO_ROUNDS (default 5, boots per I/O benchmark) set the
# repetitions. Then the same microbenchmarks and Linux boots in the Bochs
# test VM, rkvm's VMX backend against kvm_intel (RKVM_BENCH_SKIP_BOCHS=1
# leaves that out).
source "$(dirname "$0")/common.sh"
"$RKVM_ROOT/scripts/setup.sh"
"$RKVM_ROOT/scripts/build.sh" all
extra="rkvm.rounds=${RKVM_BENCH_ROUNDS:-7} rkvm.boots=${RKVM_BENCH_BOOTS:-3}"
log=$RKVM_OUT/qemu-bench.log
RKVM_VM_EXTRA="$extra rkvm.io_rounds=${RKVM_BENCH_IO_ROUNDS:-5}" \
    RKVM_QEMU_TIMEOUT=${RKVM_QEMU_TIMEOUT:-1800} "$RKVM_ROOT/scripts/vm.sh" qemu bench "$log"
grep -q 'rkvm-out: bench: done' "$log" || die "the benchmarks did not finish (serial log: $log)"
python3 "$RKVM_ROOT/scripts/bench-report.py" "$log" "$RKVM_OUT"
[[ ${RKVM_BENCH_SKIP_BOCHS:-0} == 1 ]] && exit 0
# The same against kvm_intel and rkvm's VMX backend in Bochs, with EPT and
# with shadow paging (no I/O rows): build/bench-vmx.{json,md,png}.
log=$RKVM_OUT/bochs-bench.log
RKVM_VM_EXTRA="$extra" "$RKVM_ROOT/scripts/vm.sh" bochs bench "$log"
grep -q 'rkvm-out: bench: done' "$log" || die "the Bochs benchmarks did not finish (serial log: $log)"
python3 "$RKVM_ROOT/scripts/bench-report.py" "$log" "$RKVM_OUT" --name bench-vmx --kvm kvm_intel \
    --machine "Bochs test VM (corei7_haswell_4770)"

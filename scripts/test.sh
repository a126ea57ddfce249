#!/usr/bin/env bash
# All tests: host unit tests, then the test VM under QEMU (AMD SVM), under
# QEMU with the debug kernel (KASAN, lockdep, kmemleak: the reliability
# suite) and under Bochs (Intel VMX). Ends with "N passed, N failed" and exits
# non-zero on any failure. RKVM_TEST_FAIL=1 adds a test that fails on
# purpose; RKVM_SKIP_BOCHS=1 and RKVM_SKIP_DEBUG=1 leave out those parts.
source "$(dirname "$0")/common.sh"

passed=0 failed=0 skipped=0
summary=()
record() { # part passed failed skipped
    passed=$((passed + $2)); failed=$((failed + $3)); skipped=$((skipped + $4))
    summary+=("$(printf '%-28s %4d passed, %d failed, %d skipped' "$1" "$2" "$3" "$4")")
}
finish() {
    echo
    printf '%s\n' "${summary[@]}"
    echo "$passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}
step_failed() { # part
    record "$1" 0 1 0
    finish || exit 1
}

start=$(date +%s)
mkdir -p "$RKVM_OUT"
"$RKVM_ROOT/scripts/setup.sh" || step_failed "setup"

log "host unit tests (cargo test)"
cargo_log=$RKVM_OUT/cargo-test.log
set +e
(cd "$RKVM_ROOT" && cargo test --workspace --locked 2>&1) | tee "$cargo_log" | grep -E '^test result:|FAILED|panicked'
cargo_status=${PIPESTATUS[0]}
set -e
read -r p f < <(awk '/^test result:/ { p += $4; f += $6 } END { print p + 0, f + 0 }' "$cargo_log")
[[ $cargo_status -ne 0 && $f -eq 0 ]] && f=1 # did not build
record "host (cargo test)" "$p" "$f" 0
# The statistics of `make bench`'s report (scripts/bench-report.py), on
# synthetic data: a second or two.
if python3 "$RKVM_ROOT/scripts/bench-report.py" --self-test > "$RKVM_OUT/bench-report-self-test.log" 2>&1; then
    record "host (bench report)" 1 0 0
else
    grep -v '^ok:' "$RKVM_OUT/bench-report-self-test.log" | tail -n 20 || true
    record "host (bench report)" 0 1 0
fi

"$RKVM_ROOT/scripts/build.sh" all || step_failed "build"

# One test VM run: part name, emulator, log; RKVM_KERNEL picks the kernel.
vm_part() {
    local t0 p f s
    t0=$(date +%s)
    "$RKVM_ROOT/scripts/vm.sh" "$2" test "$3" || true
    read -r p f s < <(awk -f "$RKVM_ROOT/scripts/ktap-summary.awk" "$3")
    record "$1, $(( $(date +%s) - t0 ))s" "$p" "$f" "$s"
}

vm_part "qemu (AMD SVM)" qemu "$RKVM_OUT/qemu-test.log"
if [[ ${RKVM_SKIP_DEBUG:-0} == 1 ]]; then
    summary+=("qemu, debug kernel           not run (RKVM_SKIP_DEBUG=1)")
elif "$RKVM_ROOT/scripts/build.sh" debug; then
    RKVM_KERNEL=debug RKVM_QEMU_TIMEOUT=${RKVM_QEMU_TIMEOUT:-1800} \
        vm_part "qemu, debug kernel" qemu "$RKVM_OUT/qemu-debug-test.log"
else
    record "build (debug kernel)" 0 1 0
fi
if [[ ${RKVM_SKIP_BOCHS:-0} == 1 ]]; then
    summary+=("bochs (Intel VMX)            not run (RKVM_SKIP_BOCHS=1)")
else
    vm_part "bochs (Intel VMX)" bochs "$RKVM_OUT/bochs-test.log"
fi

summary+=("total time: $(( $(date +%s) - start ))s")
finish

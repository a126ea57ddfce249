#!/usr/bin/env bash
# All tests: host unit tests, then the test VM under QEMU (AMD SVM) and under
# Bochs (Intel VMX). Ends with "N passed, N failed" and exits non-zero on any
# failure. RKVM_TEST_FAIL=1 adds a test that fails on purpose;
# RKVM_SKIP_BOCHS=1 leaves out the (slow) Bochs part.
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

"$RKVM_ROOT/scripts/build.sh" all || step_failed "build"

for emu in qemu bochs; do
    if [[ $emu == bochs && ${RKVM_SKIP_BOCHS:-0} == 1 ]]; then
        summary+=("bochs (Intel VMX)            not run (RKVM_SKIP_BOCHS=1)")
        continue
    fi
    log="$RKVM_OUT/$emu-test.log"
    t0=$(date +%s)
    "$RKVM_ROOT/scripts/vm.sh" "$emu" test "$log" || true
    read -r p f s < <(awk -f "$RKVM_ROOT/scripts/ktap-summary.awk" "$log")
    case $emu in qemu) name="qemu (AMD SVM)" ;; bochs) name="bochs (Intel VMX)" ;; esac
    record "$name, $(( $(date +%s) - t0 ))s" "$p" "$f" "$s"
done

summary+=("total time: $(( $(date +%s) - start ))s")
finish

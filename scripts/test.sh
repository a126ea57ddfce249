#!/usr/bin/env bash
# All tests: host unit tests, the style checks (scripts/lint.sh), then the
# test VM under QEMU (AMD SVM), under QEMU with the debug kernel (KASAN,
# lockdep, kmemleak: the reliability suite) and under Bochs (Intel VMX).
# Ends with "N passed, N failed" and exits non-zero on any failure.
# RKVM_TEST_FAIL=1 adds a test that fails on purpose; RKVM_SKIP_BOCHS=1 and
# RKVM_SKIP_DEBUG=1 leave out those parts.
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

# The kernel's style (scripts/lint.sh): one count per check; a failed check
# fails make test but does not keep the VM parts from running.
log "lint (rustfmt, vertical imports, clippy, rkvm.ko with CLIPPY=1)"
lint_log=$RKVM_OUT/lint.log
set +e
"$RKVM_ROOT/scripts/lint.sh" 2>&1 | tee "$lint_log"
lint_status=${PIPESTATUS[0]}
set -e
read -r p f < <(awk '/^ok / { p++ } /^FAILED / { f++ } END { print p + 0, f + 0 }' "$lint_log")
[[ $lint_status -ne 0 && $f -eq 0 ]] && f=1 # did not run
record "lint (rustfmt, clippy)" "$p" "$f" 0

"$RKVM_ROOT/scripts/build.sh" all || step_failed "build"

# The counts of one test VM run (log), as part "name, seconds": its
# reference's share apart, and how it ended if it ended early.
count_run() { # part log t0 [awk options]
    local part=$1 log=$2 t0=$3 p f s rp rf rs early=0
    shift 3
    [[ $(outcome "$log") != ended-early ]] || early=1
    read -r p f s rp rf rs < <(awk -v ended_early=$early "$@" -f "$RKVM_ROOT/scripts/ktap-summary.awk" "$log")
    record "$part, $(( $(date +%s) - t0 ))s" "$p" "$f" "$s"
    (( rp + rf + rs == 0 )) ||
        summary+=("$(printf '  %-26s %4d passed, %d failed, %d skipped' "of them $kvm_mod" "$rp" "$rf" "$rs")")
    case $(outcome "$log") in
        ended-early) summary+=("  ended early in test $(outcome "$log" test): $(outcome "$log" how)") ;;
        not-run) summary+=("  the test VM did not boot (vm.sh said why above)") ;;
    esac
}

# What vm.sh wrote in LOG.outcome: the first line, or the value of KEY.
# No file: vm.sh did not get to boot the VM (it said why).
outcome() { # log [key]
    [[ -f $1.outcome ]] || { [[ -n ${2:-} ]] || echo "not-run"; return 0; }
    if [[ -z ${2:-} ]]; then sed -n 1p "$1.outcome"
    else sed -n "s/^$2=//p" "$1.outcome"; fi
}

# One test VM run: part name, emulator, log; RKVM_KERNEL picks the kernel.
# When the test VM ends early while real KVM, the reference, runs (seen: the
# emulator itself failing under load), that is reported as the reference's,
# its test counts as skipped, and the VM boots again without the reference
# (rkvm.reference=0): rkvm's own results are never lost with it.
vm_part() {
    local t0 test rerun
    t0=$(date +%s)
    "$RKVM_ROOT/scripts/vm.sh" "$2" test "$3" || true
    test=$(outcome "$3" test)
    if [[ $(outcome "$3") == ended-early && ${test#* } == kvm* ]]; then
        count_run "$1, reference $kvm_mod" "$3" "$t0" -v unfinished=skip
        summary+=("  (the test VM booted again without the reference, for rkvm's tests)")
        rerun=${3%.log}-no-reference.log
        log "the reference ($kvm_mod) ended the test VM early: booting it again without the reference"
        t0=$(date +%s)
        RKVM_VM_EXTRA="${RKVM_VM_EXTRA:-} rkvm.reference=0" "$RKVM_ROOT/scripts/vm.sh" "$2" test "$rerun" || true
        count_run "$1, no reference" "$rerun" "$t0"
    else
        count_run "$1" "$3" "$t0"
    fi
}

# Time limits of the test VMs: guards against a hang, at more than five
# times what each part took on an idle machine of this project's kind
# (README, "Where the tests run"), and not less than twice that with a
# kernel build running beside it.
kvm_mod=kvm_amd
RKVM_QEMU_TIMEOUT=${RKVM_QEMU_TIMEOUT:-1200} vm_part "qemu (AMD SVM)" qemu "$RKVM_OUT/qemu-test.log"
if [[ ${RKVM_SKIP_DEBUG:-0} == 1 ]]; then
    summary+=("qemu, debug kernel           not run (RKVM_SKIP_DEBUG=1)")
elif "$RKVM_ROOT/scripts/setup.sh" debug && "$RKVM_ROOT/scripts/build.sh" debug; then
    RKVM_KERNEL=debug RKVM_QEMU_TIMEOUT=${RKVM_QEMU_TIMEOUT:-1800} \
        vm_part "qemu, debug kernel" qemu "$RKVM_OUT/qemu-debug-test.log"
else
    record "build (debug kernel)" 0 1 0
fi
if [[ ${RKVM_SKIP_BOCHS:-0} == 1 ]]; then
    summary+=("bochs (Intel VMX)            not run (RKVM_SKIP_BOCHS=1)")
else
    kvm_mod=kvm_intel
    RKVM_BOCHS_TIMEOUT=${RKVM_BOCHS_TIMEOUT:-3000} vm_part "bochs (Intel VMX)" bochs "$RKVM_OUT/bochs-test.log"
    # Again with two processors, for the tests of vCPUs side by side
    # (Bochs runs its processors in turns, so everything takes about twice
    # as long: the whole suite once, these again).
    RKVM_BOCHS_CPUS=2 RKVM_ONLY=${RKVM_ONLY:-*stress_test} RKVM_BOCHS_TIMEOUT=${RKVM_BOCHS_TIMEOUT:-1200} \
        vm_part "bochs, 2 processors" bochs "$RKVM_OUT/bochs-smp-test.log"
fi

summary+=("total time: $(( $(date +%s) - start ))s")
finish

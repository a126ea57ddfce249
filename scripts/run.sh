#!/usr/bin/env bash
# The main job: set up (first time only), build, boot the QEMU test VM, load
# rkvm.ko and show what it offers. Only what the main job needs is built:
# no debug kernel, no KVM modules, no selftests (`make test` adds them).
source "$(dirname "$0")/common.sh"
mkdir -p "$RKVM_OUT"
"$RKVM_ROOT/scripts/setup.sh" packages
# The rkvm tool needs no kernel: it builds while setup.sh builds one, in
# the moments the kernel's build leaves a CPU idle.
tool_log=$RKVM_OUT/build-userspace.log
"$RKVM_ROOT/scripts/build.sh" userspace > "$tool_log" 2>&1 &
tool=$!
trap 'kill "$tool" 2>/dev/null || true' EXIT
"$RKVM_ROOT/scripts/setup.sh" run
wait "$tool" || { cat "$tool_log" >&2; die "building the rkvm tool failed (log: $tool_log)"; }
trap - EXIT
"$RKVM_ROOT/scripts/build.sh" run
log=$RKVM_OUT/qemu-run.log
"$RKVM_ROOT/scripts/vm.sh" qemu run "$log"
grep -q 'rkvm-out: done' "$log" || die "the main job did not finish (serial log: $log)"

#!/usr/bin/env bash
# The main job: set up (first time only), build, boot the QEMU test VM, load
# rkvm.ko and show what it offers.
source "$(dirname "$0")/common.sh"
"$RKVM_ROOT/scripts/setup.sh"
"$RKVM_ROOT/scripts/build.sh" all
log=$RKVM_OUT/qemu-run.log
"$RKVM_ROOT/scripts/vm.sh" qemu run "$log"
grep -q 'rkvm-out: done' "$log" || die "the main job did not finish (serial log: $log)"

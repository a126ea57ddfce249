#!/usr/bin/env bash
# Reruns the commands of Documentation/tour.md in the QEMU test VM and
# writes their new outputs into it (review with git diff: the prose quotes
# some of the numbers).
source "$(dirname "$0")/common.sh"
"$RKVM_ROOT/scripts/setup.sh"
"$RKVM_ROOT/scripts/build.sh" all
log=$RKVM_OUT/qemu-tour.log
"$RKVM_ROOT/scripts/vm.sh" qemu tour "$log"
grep -q 'rkvm-out: tour: done' "$log" || die "the tour did not finish (serial log: $log)"
python3 "$RKVM_ROOT/scripts/tour-refresh.py" "$log" "$RKVM_ROOT/Documentation/tour.md"

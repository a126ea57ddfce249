#!/bin/sh
# The main job (README's first command): load rkvm and show what it offers.
. /rkvm/lib.sh

step() { # title command...
    say "== $1"; shift
    out=$("$@" 2>&1); status=$?
    [ -n "$out" ] && echo "$out" | relay "   "
    [ $status -eq 0 ] || { say "failed: $* (exit $status)"; exit 1; }
}

step "insmod rkvm.ko" insmod /rkvm/rkvm.ko
step "what the module logged" sh -c "dmesg | sed -n 's/^.*\] rkvm: /rkvm: /p'"
step "rkvm info" rkvm info
step "rmmod rkvm" rmmod rkvm
say "done"

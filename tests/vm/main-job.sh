#!/bin/sh
# The main job (README's first command): load rkvm and show what it offers.
. /rkvm/lib.sh
say "== insmod rkvm.ko"
if ! insmod /rkvm/rkvm.ko 2>&1 | relay "   "; then
    say "insmod failed"; exit 1
fi
dmesg | grep 'rkvm:' | sed 's/^\[[ 0-9.]*\] //' | relay "   "
say "== rkvm info"
rkvm info 2>&1 | relay "   "
say "== rmmod rkvm"
rmmod rkvm 2>&1 | relay "   "
say "done"

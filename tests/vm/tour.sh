#!/bin/sh
# scripts/tour-refresh.sh inside the test VM: runs the commands of
# Documentation/tour.md ("    $ ..." lines) with rkvm.ko loaded and prints
# each with its output, for the host to write back into the document.
. /rkvm/lib.sh
exec < /dev/null
insmod /rkvm/rkvm.ko || say "tour-error: insmod failed"
sed -n 's/^    \$ //p' /rkvm/tour.md > /tmp/tour-cmds
while IFS= read -r cmd; do
    say "tour-cmd: $cmd"
    timeout 120 sh -c "$cmd" < /dev/null 2>&1 | relay "tour-out: "
done < /tmp/tour-cmds
rmmod rkvm
say "tour: done"

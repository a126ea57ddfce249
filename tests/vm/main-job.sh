#!/bin/sh
# The main job (README's first command): load rkvm, show what it offers and
# run guests through it.
. /rkvm/lib.sh
exec < /dev/null   # rkvm run forwards stdin to the guest; nobody types here

step() { # title command...
    say "== $1"; shift
    out=$("$@" 2>&1); status=$?
    [ -n "$out" ] && echo "$out" | relay "   "
    [ $status -eq 0 ] || { say "failed: $* (exit $status)"; exit 1; }
}

step "insmod rkvm.ko" insmod /rkvm/rkvm.ko
step "what the module logged" sh -c "dmesg | sed -n 's/^.*\] rkvm: /rkvm: /p'"
step "rkvm info" rkvm info
step "rkvm run --flat hello-real.bin (real mode)" rkvm run --flat /rkvm/guests/hello-real.bin --mode real
# long-mmio ends with status 42 on purpose (the debug-exit port).
step "rkvm run --flat long-mmio.bin --mode long" sh -c \
    'rkvm run --flat /rkvm/guests/long-mmio.bin --mode long; s=$?; echo "exit status $s"; [ $s = 42 ]'
step "rkvm run --flat tour-long.bin --mode long --trace-exits" rkvm run --flat /rkvm/guests/tour-long.bin --mode long --trace-exits
step "rkvm run --kernel bzImage --initrd initramfs (Linux, to its /init)" rkvm run --mem 128 \
    --kernel /rkvm/linux/bzImage --initrd /rkvm/linux/initramfs.cpio.gz \
    --cmdline "console=ttyS0 nolapic noapic panic=-1 rdinit=/init"
step "rmmod rkvm" rmmod rkvm
say "done"

#!/bin/sh
# The in-VM test runner: KTAP on the serial console (through /dev/kmsg, see
# lib.sh). First the reference (real KVM: kvm_amd under QEMU, kvm_intel under
# Bochs) runs the selftests, then rkvm.ko runs the same ones; the kernel log is
# checked for oops/BUG/WARN at the end and the module must unload.
. /rkvm/lib.sh

EMU=$(cmdline_arg rkvm.emu)
case "$EMU" in
    bochs) KVM_MOD=kvm_intel BACKEND=vmx ;;
    *) KVM_MOD=kvm_amd BACKEND=svm ;;
esac
SELFTESTS=$(ls /rkvm/selftests/)
GUESTS=$(cd /rkvm/guests && ls *.bin | sed 's/\.bin$//')
# The reference runs every selftest, except that kvm_intel cannot run guests
# inside Bochs yet (it reports an invalid VMCS and the run stalls): under Bochs
# the reference runs only the tests that do not enter a guest.
case "$EMU" in
    bochs) REFERENCE_SELFTESTS="api_test vm_test cpuid_test msr_test" ;;
    *) REFERENCE_SELFTESTS=$SELFTESTS ;;
esac

# Test plan: "name function [argument]" per line.
PLAN="kvm_load t_kvm_load"
for t in $REFERENCE_SELFTESTS; do [ -x "/rkvm/selftests/$t" ] && PLAN="$PLAN
kvm:$t t_selftest /dev/kvm $t"; done
[ "$EMU" = bochs ] || for g in $GUESTS; do PLAN="$PLAN
kvm:run:$g t_flat /dev/kvm $g"; done
[ "$EMU" = bochs ] || PLAN="$PLAN
kvm:linux t_linux /dev/kvm"
PLAN="$PLAN
kvm_info t_info /dev/kvm
kvm_unload t_kvm_unload
rkvm_load t_rkvm_load"
for t in $SELFTESTS; do PLAN="$PLAN
rkvm:$t t_selftest /dev/rkvm $t"; done
[ "$BACKEND" = svm ] && for g in $GUESTS; do PLAN="$PLAN
rkvm:run:$g t_flat /dev/rkvm $g"
[ -f "/rkvm/guests/$g.nodiff" ] || PLAN="$PLAN
diff:$g t_flat_diff $g"; done
[ "$BACKEND" = svm ] && PLAN="$PLAN
rkvm:linux t_linux /dev/rkvm
linux_boot_times t_linux_times
rkvm_refuses_busy_svm t_rkvm_refuses_busy_svm"
PLAN="$PLAN
rkvm_info t_info /dev/rkvm
rkvm_unload t_rkvm_unload
kernel_log t_kernel_log"
[ "$(cmdline_arg rkvm.fail)" = 1 ] && PLAN="$PLAN
deliberate_failure t_deliberate_failure"

# Each test function runs in a subshell: `fail` ends it at once.
fail() { echo "FAIL: $*"; exit 1; }

t_kvm_load() {
    modprobe "$KVM_MOD" || fail "modprobe $KVM_MOD"
    [ -c /dev/kvm ] || fail "/dev/kvm did not appear"
}

t_kvm_unload() {
    rmmod "$KVM_MOD" kvm || fail "rmmod $KVM_MOD kvm"
    [ ! -e /dev/kvm ] || fail "/dev/kvm is still there"
}

# A kselftest binary: its own TAP becomes the subtests; exit 4 is a skip.
t_selftest() {
    RKVM_DEVICE=$1 "/rkvm/selftests/$2"
}

# `rkvm run` of a flat guest: its console output and exit status must be
# exactly the expected ones (the same through real KVM and rkvm).
t_flat() {
    dir=/rkvm/guests
    case "$2" in *real*) mode=real ;; *) mode=long ;; esac
    want_status=0
    [ -f "$dir/$2.status" ] && want_status=$(cat "$dir/$2.status")
    status=0
    trace=/tmp/trace-$(basename "$1")-$2
    rkvm run --device "$1" --flat "$dir/$2.bin" --mode "$mode" --trace-exits > /tmp/guest.out 2> "$trace" || status=$?
    grep -v '^rkvm: exit ' "$trace" || true
    cmp -s /tmp/guest.out "$dir/$2.expected" || { echo "output:"; cat /tmp/guest.out; fail "output differs from $2.expected"; }
    [ "$status" = "$want_status" ] || fail "exit status $status, expected $want_status"
}

# The differential check: the same guest through real KVM and through rkvm
# must give the same sequence of exits to userspace (reason, port, address,
# size, data) and the same registers at the end.
t_flat_diff() {
    [ -f "/tmp/trace-kvm-$1" ] || fail "no trace from the KVM reference run"
    [ -f "/tmp/trace-rkvm-$1" ] || fail "no trace from the rkvm run"
    if ! cmp -s "/tmp/trace-kvm-$1" "/tmp/trace-rkvm-$1"; then
        echo "--- KVM:"; head -n 30 "/tmp/trace-kvm-$1"
        echo "--- rkvm:"; head -n 30 "/tmp/trace-rkvm-$1"
        fail "the exit sequences of KVM and rkvm differ"
    fi
    echo "$(grep -c '^rkvm: exit ' "/tmp/trace-rkvm-$1") exits, identical"
}

# Boots Linux (the test kernel, with the busybox initramfs of build.sh) with
# `rkvm run --kernel`: the guest kernel must reach its /init, which reports
# what it saw and powers off (halts: the guest has no ACPI). The same through
# kvm_amd is the reference (and guards against a regression: with XSAVE in
# its CPUID, the guest oopsed under kvm_amd nested in QEMU).
t_linux() {
    dir=/rkvm/linux
    status=0
    start=$(uptime_cs)
    timeout 300 rkvm run --device "$1" --mem 128 --kernel "$dir/bzImage" --initrd "$dir/initramfs.cpio.gz" \
        --cmdline "console=ttyS0 nolapic noapic panic=-1 rdinit=/init" > /tmp/linux.raw 2> /tmp/linux.err || status=$?
    echo $(( $(uptime_cs) - start )) > "/tmp/linux-cs-$(basename "$1")"
    tr -d '\r' < /tmp/linux.raw > /tmp/linux.out   # the guest's tty ends lines with CR LF
    grep '^rkvm-guest: \|Linux version\|Run /init\|Power off' /tmp/linux.out || true
    cat /tmp/linux.err
    [ "$status" = 0 ] || { tail -n 20 /tmp/linux.out; fail "rkvm run --kernel: exit status $status"; }
    grep -q '^rkvm-guest: init ran, kernel '"$(uname -r)"'$' /tmp/linux.out || fail "the guest's /init did not run"
    grep -q '^rkvm-guest: cpus 1$' /tmp/linux.out || fail "the guest does not see exactly one CPU"
    grep -q '^rkvm-guest: memory 1[0-2][0-9][0-9][0-9][0-9] kB$' /tmp/linux.out || fail "the guest does not see about 128 MiB"
    grep -q '^rkvm: [0-9]* exits to userspace: .*io [0-9]' /tmp/linux.err || fail "no exit statistics"
}

# Hundredths of a second since the test VM booted.
uptime_cs() {
    sed 's/^\([0-9]*\)\.\([0-9][0-9]\).*/\1\2/; s/^0*\([0-9]\)/\1/' /proc/uptime
}

# The Linux boot times through both devices, side by side (a figure, not a
# pass/fail criterion: emulated time is noise across runs, not within one).
t_linux_times() {
    [ -f /tmp/linux-cs-kvm ] && [ -f /tmp/linux-cs-rkvm ] || fail "a Linux boot did not run"
    kvm=$(cat /tmp/linux-cs-kvm) rkvm=$(cat /tmp/linux-cs-rkvm)
    echo "Linux boot to /init and halt: kvm_amd $((kvm / 100)).$((kvm / 10 % 10))s, rkvm $((rkvm / 100)).$((rkvm / 10 % 10))s, rkvm/kvm = $((rkvm * 100 / (kvm > 0 ? kvm : 1)))%"
}

# The line the module logged at load: "rkvm: cpu: <features>; backend: <b>".
module_cpu_line() {
    dmesg | sed -n 's/^.*rkvm: cpu: //p' | tail -n 1
}

t_rkvm_load() {
    insmod /rkvm/rkvm.ko || fail "insmod rkvm.ko"
    [ -c /dev/rkvm ] || fail "/dev/rkvm is not a character device"
    grep -qw rkvm /proc/misc || fail "rkvm is not in /proc/misc"
    line=$(module_cpu_line)
    echo "module: $line"
    case "$BACKEND" in
        svm) want="+svm -svm-disabled-by-firmware +npt" ;;
        vmx) want="+vmx -vmx-disabled-by-firmware +ept" ;;
    esac
    case "$line" in *"$want"*"; backend: $BACKEND") ;; *) fail "expected '$want ... backend: $BACKEND'" ;; esac
    if [ "$BACKEND" = vmx ]; then
        case "$line" in *+unrestricted-guest*) ;; *) fail "no unrestricted guest" ;; esac
    fi
}

t_info() {
    out=$(rkvm info --device "$1" 2>&1) || { echo "$out"; fail "rkvm info --device $1"; }
    echo "$out" | grep -v '^  KVM_CAP_' || true
    echo "$out" | grep -qx "api version:  12" || fail "API version is not 12"
    echo "$out" | grep -q "^backend:      $BACKEND\$" || fail "backend is not $BACKEND"
    # rkvm info decodes CPUID/MSRs in userspace with the module's own decoder:
    # the two views must be identical.
    cpu=$(echo "$out" | sed -n 's/^cpu: *//p')
    [ "$cpu; backend: $BACKEND" = "$(module_cpu_line)" ] || [ "$1" = /dev/kvm ] ||
        fail "rkvm info's cpu line differs from the module's: '$cpu'"
    if [ "$1" = /dev/rkvm ]; then
        echo "$out" | grep -q "KVM_CAP_USER_MEMORY  *1" || fail "rkvm does not report KVM_CAP_USER_MEMORY"
        ! echo "$out" | grep -q "KVM_CAP_IRQCHIP" || fail "rkvm announces an in-kernel irqchip it lacks"
    else
        echo "$out" | grep -q "KVM_CAP_USER_MEMORY  *1" || fail "KVM does not report KVM_CAP_USER_MEMORY"
    fi
}

# SVM belongs to one hypervisor at a time: with kvm_amd loaded (it enables
# SVM on every CPU at load), rkvm refuses to create a VM, cleanly.
t_rkvm_refuses_busy_svm() {
    modprobe "$KVM_MOD" || fail "modprobe $KVM_MOD"
    status=0
    rkvm run --flat /rkvm/guests/hello-real.bin > /tmp/busy.out 2>&1 || status=$?
    rmmod "$KVM_MOD" kvm || fail "rmmod $KVM_MOD kvm"
    cat /tmp/busy.out
    [ "$status" != 0 ] || fail "rkvm ran a guest while kvm_amd owned SVM"
    grep -q "KVM_CREATE_VM: Device or resource busy" /tmp/busy.out || fail "expected EBUSY from KVM_CREATE_VM"
    dmesg | grep -q "SVM is already enabled on CPU" || fail "no log line saying who owns SVM"
    # And once kvm_amd is gone, rkvm has it.
    rkvm run --flat /rkvm/guests/hello-real.bin > /dev/null || fail "rkvm cannot run a guest after kvm_amd left"
}

t_rkvm_unload() {
    rmmod rkvm || fail "rmmod rkvm"
    [ ! -e /dev/rkvm ] || fail "/dev/rkvm is still there"
    ! grep -q '^rkvm ' /proc/modules || fail "rkvm is still in /proc/modules"
}

# Anything the kernel says went wrong, during the whole run.
t_kernel_log() {
    bad=$(dmesg | grep -v 'rkvm-out:' | grep -E \
        'Oops|BUG:|WARNING:|kernel BUG|general protection fault|Call Trace|panicked|UBSAN|KASAN|kmemleak|refcount_t|list_add corruption|list_del corruption|unable to handle|rcu: INFO|soft lockup|hung task|Tainted: .*[DW]' || true)
    [ -z "$bad" ] || { echo "$bad"; fail "the kernel log has errors"; }
}

# Fails in its middle, then would succeed: the harness must report the
# failure (a regression test for the runner, which once let a test function
# carry on after `fail` and report ok).
t_deliberate_failure() {
    fail "rkvm.fail=1 was given: this test fails on purpose, to show the harness notices"
    true
}

say "KTAP version 1"
say "1..$(echo "$PLAN" | wc -l)"
n=0
echo "$PLAN" | while read -r name fn args; do
    n=$((n + 1))
    start=$(date +%s)
    # shellcheck disable=SC2086
    ( set -e; $fn $args ) > /tmp/out 2>&1
    status=$?
    secs=$(( $(date +%s) - start ))
    if grep -qE '^(not )?ok [0-9]' /tmp/out; then
        # Nested TAP from a kselftest binary: indent it as a KTAP subtest.
        say "    KTAP version 1"
        say "    # Subtest: $name"
        grep -v '^TAP version' /tmp/out | relay "    "
    else
        relay "# " < /tmp/out
    fi
    case $status in
        0) say "ok $n $name # time=${secs}s" ;;
        4) say "ok $n $name # SKIP" ;;
        *) say "not ok $n $name # exit=$status time=${secs}s" ;;
    esac
done
say "rkvm-runner: done"

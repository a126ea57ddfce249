# Helpers for the test VM's scripts (busybox sh). Sourced.

# The value of KEY=VALUE on the kernel command line.
cmdline_arg() {
    for kv in $(cat /proc/cmdline); do
        case "$kv" in "$1="*) echo "${kv#*=}"; return ;; esac
    done
}

# Prints a line for the host. Output goes through /dev/kmsg: it is written to
# the serial console synchronously, with the kernel's own messages, and so is
# never lost at power-off (console writes from userspace can be, in Bochs).
# The host picks out lines by the rkvm-out: tag.
say() {
    echo "<5>rkvm-out: $*" > /dev/kmsg
}

# Signs of life for the host's watchdog (scripts/vm-qemu.sh), under QEMU:
# every 20 s a line on the second serial port from each CPU in turn, so
# that a CPU that no longer runs this kernel (QEMU's CPU stuck in guest
# mode, Documentation/execution-model.md) stops them, and the host stops
# the test VM at once with its CPUs' registers rather than at its time
# limit.
start_heartbeat() {
    [ "$(cmdline_arg rkvm.emu)" = qemu ] && [ -c /dev/ttyS1 ] || return 0
    (
        trap - HUP INT TERM
        exec > /dev/ttyS1 2> /dev/null
        while :; do
            for cpu in $(seq 0 $(( $(nproc) - 1 ))); do
                taskset -c "$cpu" echo "alive: CPU $cpu at $(cut -d' ' -f1 /proc/uptime) s"
            done
            sleep 20
        done
    ) &
}

# Copies a command's output to the host line by line, indented by $1.
relay() {
    while IFS= read -r line; do say "$1$line"; done
}

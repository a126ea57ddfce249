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

# Copies a command's output to the host line by line, indented by $1.
relay() {
    while IFS= read -r line; do say "$1$line"; done
}

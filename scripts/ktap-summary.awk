# Counts the results in a test VM's serial log. The runner's lines carry the
# tag "rkvm-out: " (they travel through the kernel log, see tests/vm/lib.sh).
# Subtests (indented, from kselftest binaries) count one each; their parent line
# counts only if it failed without a failing subtest (a crash, a bad exit code).
# Output: "passed failed skipped" and, on stderr, why a run is incomplete.
{
    i = index($0, "rkvm-out: ")
    if (i == 0) next
    line = substr($0, i + 10)
}
line ~ /^rkvm-runner: done/ { done = 1; next }
line ~ /^1\.\.[0-9]+$/ { plan = substr(line, 4) + 0; next }
line ~ /^    (not )?ok [0-9]/ {
    subtests = 1
    if (line ~ /# SKIP/) skipped++
    else if (line ~ /^    not ok/) { failed++; subfailed = 1 }
    else passed++
    next
}
line ~ /^(not )?ok [0-9]/ {
    top++
    if (subtests) {
        if (line ~ /^not ok/ && !subfailed) failed++
        subtests = 0; subfailed = 0
        next
    }
    if (line ~ /# SKIP/) skipped++
    else if (line ~ /^not ok/) failed++
    else passed++
}
END {
    if (!done || top < plan) {
        printf "the runner did not finish: %d of %d tests reported\n", top, plan > "/dev/stderr"
        failed++
    }
    printf "%d %d %d\n", passed, failed, skipped
}

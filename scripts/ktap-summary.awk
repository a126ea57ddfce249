# Counts the results in a test VM's serial log. The runner's lines carry the
# tag "rkvm-out: " (they travel through the kernel log, see tests/vm/lib.sh).
# Subtests (indented, from kselftest binaries) count one each; their parent line
# counts only if it failed without a failing subtest (a crash, a bad exit code).
# Tests whose names begin with "kvm" are the reference (real KVM): they count
# in the totals and, apart, in the last three fields.
# Output: "passed failed skipped ref_passed ref_failed ref_skipped".
# A run that did not finish counts one failure more (and says so on stderr),
# unless -v unfinished=skip: then the test it ended in counts as skipped
# (test.sh's choice when the reference part ended the test VM). So does one
# that finished its tests but did not end cleanly (-v ended_early=1: vm.sh
# saw no power-off after /init's last line).
function count(kind) {
    totals[kind]++
    if (ref) refs[kind]++
}
{
    sub(/\r$/, "")      # the serial console ends lines with CR LF
    i = index($0, "rkvm-out: ")
    if (i == 0) next
    line = substr($0, i + 10)
}
line ~ /^rkvm-runner: done/ { done = 1; next }
line ~ /^1\.\.[0-9]+$/ { plan = substr(line, 4) + 0; next }
line ~ /^    # Subtest: / { name = line; sub(/^    # Subtest: /, "", name); ref = name ~ /^kvm/; next }
line ~ /^    (not )?ok [0-9]/ {
    subtests = 1
    if (line ~ /# SKIP/) count("skipped")
    else if (line ~ /^    not ok/) { count("failed"); subfailed = 1 }
    else count("passed")
    next
}
line ~ /^(not )?ok [0-9]/ {
    top++
    split(line, f, " ")
    ref = f[line ~ /^not/ ? 4 : 3] ~ /^kvm/
    if (subtests) {
        if (line ~ /^not ok/ && !subfailed) count("failed")
        subtests = 0; subfailed = 0
        next
    }
    if (line ~ /# SKIP/) count("skipped")
    else if (line ~ /^not ok/) count("failed")
    else count("passed")
}
END {
    if (!done || top < plan) {
        printf "the runner did not finish: %d of %d tests reported\n", top, plan > "/dev/stderr"
        if (unfinished == "skip") { totals["skipped"]++; refs["skipped"]++ }
        else totals["failed"]++
    } else if (ended_early) {
        print "the test VM did not end cleanly after its last test" > "/dev/stderr"
        totals["failed"]++
    }
    printf "%d %d %d %d %d %d\n", totals["passed"], totals["failed"], totals["skipped"],
        refs["passed"], refs["failed"], refs["skipped"]
}

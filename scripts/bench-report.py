#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The report of `make bench`: reads the test VM's serial log (lines
"bench <device> <name> <ns per operation> round=<r>" from tests/vm/bench.sh,
devices kvm, rkvm, kvm-shadow, rkvm-shadow and rkvm-notrace, measured in
turn within each round), and writes, per benchmark, the median and spread
(min-max) of the rounds for each device, the rkvm/KVM ratio of the medians
with its 95 % interval and a verdict; then a table of nested against shadow
paging, one of the I/O benchmarks, and one of what rkvm's exit trace costs:

    bench-report.py SERIAL_LOG OUT_DIR [--name NAME] [--kvm MODULE] [--machine TEXT]
    bench-report.py --self-test [DIR]

OUT_DIR gets NAME.json (machine-readable), NAME.md (the tables) and, with
gnuplot installed, NAME.png (the ratios with their intervals); NAME is
"bench" unless given (`make bench` writes bench-vmx.* for the Bochs run
against kvm_intel). The tables also go to stdout. Tables with no
measurements (shadow paging, the I/O rows and the exit trace, which the
Bochs run leaves out) are left out. Logs from before the interleaving
(lines without round=) are read too, their lines numbered as rounds in
order.

The interval: a bootstrap over the rounds (ratio_interval()); the verdict:
faster or slower when the whole interval is below or above 1, even when it
holds 1 (verdict()). --self-test checks both on synthetic data, then runs
the whole report twice on a synthetic log (kept in DIR if given) and
compares the outputs.
"""
import argparse
import json
import math
import random
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# What each benchmark measures, in the order of the table.
BENCHMARKS = [
    ("cpuid_exit", "CPUID: exit handled in the kernel"),
    ("vmmcall_exit", "VMMCALL (VMCALL on Intel): exit handled in the kernel"),
    ("hlt_irq_exit", "HLT to user mode, interrupt injected, back"),
    ("io_exit_to_user", "OUT: I/O exit to user mode and back"),
    ("mmio_exit_to_user", "MMIO write: decoded, to user mode and back"),
    ("irq_window_injection", "interrupt via the window protocol"),
    ("npt_fault", "first touch of a 4 KiB page (nested or shadow fault)"),
    ("guest_pf_touch", "guest page touch after a CR3 reload"),
    ("vm_vcpu_create", "VM + memory slot + vCPU, created and closed"),
    ("linux_boot", "Linux boot to /init and power-off"),
    ("save_restore", "save + restore of a 128 MiB Linux guest (rkvm run --save, --restore)"),
    ("console_serial", "console output through the 16550, per KiB"),
    ("console_virtio", "console output through virtio-console, per KiB"),
    ("blk_read", "virtio-blk read, per MiB"),
    ("blk_write", "virtio-blk write (fsync), per MiB"),
]
# The I/O rows as throughput: (name, unit, bytes of that unit per operation).
THROUGHPUT = [("console_serial", "KiB/s", 1), ("console_virtio", "KiB/s", 1), ("blk_read", "MiB/s", 1),
              ("blk_write", "MiB/s", 1)]
UNITS = {"linux_boot": ("s", 1e9), "save_restore": ("ms", 1e6), "vm_vcpu_create": ("µs", 1e3), "console_serial": ("ms", 1e6),
         "console_virtio": ("ms", 1e6), "blk_read": ("ms", 1e6), "blk_write": ("ms", 1e6)}
# What recording every exit costs: rkvm (exit_trace=1, the module's
# default) against rkvm-notrace (exit_trace=0), loaded in turn each round.
TRACE_ROWS = [("cpuid_exit", "CPUID exit with the exit trace recording, rkvm exit_trace=1 against exit_trace=0")]

DEVICES = ("kvm", "rkvm", "kvm-shadow", "rkvm-shadow", "rkvm-notrace")
_DEVICE = "(" + "|".join(DEVICES) + ")"
_ROUND = r"(?: round=(\d+))?"

# The interval of a ratio (ratio_interval()).
RESAMPLES = 2000
LEVEL = 0.95
# Fewer rounds than this give no interval. Few give a narrow one: in a
# simulation (two devices, a drift shared by the round, 2 % noise of their
# own) the interval held the true ratio 77 % of the time with 3 rounds,
# 94 % with 5 and 7, 98 % with 10.
MIN_ROUNDS = 3


def parse(log):
    """Samples {name: {device: [(round, ns)]}}, exits per operation
    {name: {device: [n]}} (one per round where measured), and the errors
    reported. A line without round= (an old log) counts as the next round
    of its benchmark and device."""
    samples, exits, errors = {}, {}, []
    for line in log.splitlines():
        m = re.search(rf"rkvm-out: bench {_DEVICE} (\w+) (\d+){_ROUND}$", line)
        if m:
            runs = samples.setdefault(m.group(2), {}).setdefault(m.group(1), [])
            runs.append((int(m.group(4)) if m.group(4) else len(runs) + 1, int(m.group(3))))
        m = re.search(rf"rkvm-out: bench-exits {_DEVICE} (\w+) (-?[\d.]+){_ROUND}$", line)
        if m:
            exits.setdefault(m.group(2), {}).setdefault(m.group(1), []).append(float(m.group(3)))
        m = re.search(r"rkvm-out: (bench-error .*)$", line)
        if m:
            errors.append(m.group(1))
    return samples, exits, errors


def summary(runs):
    """Median, min, max and count of [(round, value)], and the values with
    their rounds (for pairing them again later)."""
    if not runs:
        return None
    values = [v for _, v in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": values, "rounds": [r for r, _ in runs]}


def _by_round(runs):
    out = {}
    for r, v in runs:
        out.setdefault(r, []).append(v)
    return out


def ratio_interval(num, den, seed, resamples=RESAMPLES, level=LEVEL):
    """The interval of median(num) / median(den), num and den being
    [(round, value)] of two devices measured in the same rounds.

    A percentile bootstrap over the rounds: each resample draws as many
    rounds as were run, with replacement, and takes the values of both
    devices in each round drawn. The two ran back to back within a round,
    so what drifted during it moved both: drawing rounds rather than each
    device's values apart keeps that pairing, and the interval shows the
    noise left in the ratio, not the drift that interleaving takes out of
    it. (An old log's lines are numbered in order: its devices ran apart,
    so the pairing means nothing there, but unrelated values drawn paired
    or apart come to the same.)

    seed (a string) makes the draws repeatable: the same log gives the same
    report. None when either device has fewer than MIN_ROUNDS rounds."""
    by_num, by_den = _by_round(num), _by_round(den)
    if len(by_num) < MIN_ROUNDS or len(by_den) < MIN_ROUNDS:
        return None
    rounds = sorted(set(by_num) | set(by_den))
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        drawn = rng.choices(rounds, k=len(rounds))
        a = [v for r in drawn for v in by_num.get(r, ())]
        b = [v for r in drawn for v in by_den.get(r, ())]
        # A draw may miss every round of a device that ran in only some.
        if a and b and statistics.median(b) > 0:
            ratios.append(statistics.median(a) / statistics.median(b))
    if len(ratios) < resamples // 2:
        return None
    ratios.sort()
    tail = (1 - level) / 2
    return ratios[int(tail * len(ratios))], ratios[math.ceil((1 - tail) * len(ratios)) - 1]


def verdict(interval):
    """faster (interval below 1), slower (above 1), even (it holds 1), n/a
    (no interval). Judged on the interval as printed, to two decimals, so
    that a row printed as reaching 1.00 reads even."""
    if interval is None:
        return "n/a"
    lo, hi = (round(x, 2) for x in interval)
    if hi < 1:
        return "faster"
    if lo > 1:
        return "slower"
    return "even"


def ratio(a, b):
    return a["median"] / b["median"] if a and b and b["median"] > 0 else None


def compare(samples, name, num, den):
    """Device num against device den on benchmark name: the ratio of the
    medians, its interval and the verdict."""
    a, b = samples.get(name, {}).get(num, []), samples.get(name, {}).get(den, [])
    r = ratio(summary(a), summary(b))
    if r is None:
        return None, None, "n/a"
    interval = ratio_interval(a, b, f"{name} {num}/{den}")
    return r, interval, verdict(interval)


def fmt(ns, name):
    unit, div = UNITS.get(name, ("µs", 1e3))
    return f"{ns / div:.2f} {unit}" if unit in ("s", "ms") else f"{ns / div:.1f} {unit}"


# The rows of the second table: where the MMU mode matters, and CPUID (it
# does not) as the control.
SHADOW_ROWS = ["guest_pf_touch", "npt_fault", "linux_boot", "cpuid_exit"]


def report(samples, exits, errors, kvm, machine):
    rows = []
    for name, what in BENCHMARKS:
        dev = {d: summary(samples.get(name, {}).get(d, [])) for d in DEVICES}
        r, r_int, r_verdict = compare(samples, name, "rkvm", "kvm")
        s, s_int, s_verdict = compare(samples, name, "rkvm-shadow", "kvm-shadow")
        rows.append({"name": name, "what": what, "kvm": dev["kvm"], "rkvm": dev["rkvm"],
                     "exits_per_op": {d: statistics.median(v) for d, v in exits.get(name, {}).items()},
                     "ratio": r, "ratio_interval": r_int, "verdict": r_verdict,
                     "kvm_shadow": dev["kvm-shadow"], "rkvm_shadow": dev["rkvm-shadow"],
                     "ratio_shadow": s, "ratio_shadow_interval": s_int, "verdict_shadow": s_verdict,
                     "kvm_shadow_over_npt": ratio(dev["kvm-shadow"], dev["kvm"]),
                     "rkvm_shadow_over_npt": ratio(dev["rkvm-shadow"], dev["rkvm"])})
    trace = []
    for name, what in TRACE_ROWS:
        on, off = samples.get(name, {}).get("rkvm", []), samples.get(name, {}).get("rkvm-notrace", [])
        if on and off:
            r, r_int, r_verdict = compare(samples, name, "rkvm", "rkvm-notrace")
            trace.append({"name": name, "what": what, "exit_trace_0": summary(off), "exit_trace_1": summary(on),
                          "ratio": r, "ratio_interval": r_int, "verdict": r_verdict})
    return {"rows": rows, "exit_trace": trace, "errors": errors, "kvm": kvm, "machine": machine,
            "note": f"medians over rounds in one boot of the {machine}, the devices in turn within each round; "
            f"absolute times are emulation, ratios compare rkvm with {kvm} side by side",
            "interval": {"method": "percentile bootstrap over the rounds, both devices' values of a round drawn "
                         "together", "level": LEVEL, "resamples": RESAMPLES, "min_rounds": MIN_ROUNDS,
                         "verdict": "faster or slower: the whole interval below or above 1 (to two decimals); "
                         "even: it holds 1"}}


def ratio_cell(ratio, interval):
    """"0.96 (0.91-1.02)": the ratio of the medians and its interval."""
    if ratio is None:
        return "n/a"
    if interval is None:
        return f"{ratio:.2f}"
    return f"{ratio:.2f} ({interval[0]:.2f}-{interval[1]:.2f})"


def spread_cell(s, name):
    if not s:
        return "n/a"
    return f"{fmt(s['median'], name)} ({fmt(s['min'], name)}-{fmt(s['max'], name)})"


def table(rep):
    pct = f"{LEVEL * 100:.0f} %"
    out = [f"| benchmark | KVM ({rep['kvm']}) | rkvm | rkvm/KVM ({pct} interval) | verdict | exits/op KVM, rkvm |",
           "|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        if not r["kvm"] and not r["rkvm"]:
            continue
        out.append(f"| {r['what']} | {spread_cell(r['kvm'], r['name'])} | {spread_cell(r['rkvm'], r['name'])} | "
                   f"{ratio_cell(r['ratio'], r['ratio_interval'])} | {r['verdict']} | "
                   f"{exits_cell(r, 'kvm')}, {exits_cell(r, 'rkvm')} |")
    out.append("")
    out.append(f"Median (min-max) per operation over the rounds, the devices in turn within each round; ratio of "
               f"the medians with its {pct} interval (bootstrap over the rounds, {RESAMPLES} resamples); verdict: "
               "faster or slower when the whole interval is below or above 1, even when it holds 1. Exits per "
               "operation from each vCPU's `exits` statistic (KVM_GET_STATS_FD), where measured.")
    by_name = {r["name"]: r for r in rep["rows"]}
    if any(by_name[n]["kvm_shadow"] or by_name[n]["rkvm_shadow"] for n in SHADOW_ROWS):
        shadow_table(out, by_name, rep["kvm"])
    if any(by_name[n]["kvm"] or by_name[n]["rkvm"] for n, _, _ in THROUGHPUT):
        io_table(out, by_name)
    if rep["exit_trace"]:
        trace_table(out, rep["exit_trace"])
    if rep["errors"]:
        out.append("")
    for e in rep["errors"]:
        out.append(f"- {e}")
    return "\n".join(out) + "\n"


def shadow_table(out, by_name, kvm):
    tdp, param = ("EPT", "ept=0") if kvm == "kvm_intel" else ("NPT", "npt=0")
    out.append("")
    out.append(f"Nested paging against shadow paging ({kvm} {param}, rkvm tdp=0), medians:")
    out.append("")
    out.append(f"| benchmark | KVM {tdp} | KVM shadow | shadow/{tdp} | rkvm {tdp} | rkvm shadow | shadow/{tdp} "
               "| rkvm/KVM shadow | verdict | exits/op shadow KVM, rkvm |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for name in SHADOW_ROWS:
        r = by_name[name]
        med = lambda s: fmt(s["median"], name) if s else "n/a"
        rat = lambda x: f"{x:.2f}" if x is not None else "n/a"
        out.append(f"| {r['what']} | {med(r['kvm'])} | {med(r['kvm_shadow'])} | {rat(r['kvm_shadow_over_npt'])} | "
                   f"{med(r['rkvm'])} | {med(r['rkvm_shadow'])} | {rat(r['rkvm_shadow_over_npt'])} | "
                   f"{ratio_cell(r['ratio_shadow'], r['ratio_shadow_interval'])} | {r['verdict_shadow']} | "
                   f"{exits_cell(r, 'kvm-shadow')}, {exits_cell(r, 'rkvm-shadow')} |")


def io_table(out, by_name):
    out.append("")
    out.append("Emulated against paravirtual I/O (timed between the guest's markers, medians over boots), "
               "throughput and exits; rkvm/KVM is the ratio of the times, as above:")
    out.append("")
    out.append("| I/O | KVM | exits KVM | rkvm | exits rkvm | rkvm/KVM | verdict |")
    out.append("|---|---|---|---|---|---|---|")
    for name, unit, per_op in THROUGHPUT:
        r = by_name[name]
        rate = lambda s: f"{per_op * 1e9 / s['median']:.0f} {unit}" if s and s["median"] > 0 else "n/a"
        per = "KiB" if unit == "KiB/s" else "MiB"
        out.append(f"| {r['what'].split(',')[0]} | {rate(r['kvm'])} | {exits_cell(r, 'kvm')} per {per} | "
                   f"{rate(r['rkvm'])} | {exits_cell(r, 'rkvm')} per {per} | "
                   f"{ratio_cell(r['ratio'], r['ratio_interval'])} | {r['verdict']} |")


def trace_table(out, rows):
    pct = f"{LEVEL * 100:.0f} %"
    out.append("")
    out.append("What recording every exit costs (rkvm.ko exit_trace=1, its default, against exit_trace=0, "
               "each loaded once per round), median (min-max):")
    out.append("")
    out.append(f"| benchmark | exit_trace=0 | exit_trace=1 | 1/0 ({pct} interval) | verdict |")
    out.append("|---|---|---|---|---|")
    for t in rows:
        out.append(f"| {t['what']} | {spread_cell(t['exit_trace_0'], t['name'])} | "
                   f"{spread_cell(t['exit_trace_1'], t['name'])} | {ratio_cell(t['ratio'], t['ratio_interval'])} | "
                   f"{t['verdict']} |")


def exits_cell(row, device):
    n = row["exits_per_op"].get(device)
    if n is None:
        return "-"
    return f"{n:.0f}" if n >= 100 else f"{n:.3g}"


def plot(rep, out_dir, name):
    rows = [r for r in rep["rows"] if r["ratio"] is not None]
    if not rows:
        return False
    # Without an interval the error bar shrinks to the ratio itself.
    bars = [r["ratio_interval"] or (r["ratio"], r["ratio"]) for r in rows]
    data = out_dir / f"{name}.dat"
    data.write_text("".join(f"{i} {r['ratio']:.4f} {lo:.4f} {hi:.4f} \"{r['name']}\"\n"
                            for i, (r, (lo, hi)) in enumerate(zip(rows, bars))))
    top = max([1.2] + [1.1 * max(r["ratio"], hi) for r, (_, hi) in zip(rows, bars)])
    script = f"""
set terminal pngcairo size 900,480 noenhanced
set output '{out_dir / f"{name}.png"}'
set title 'rkvm / KVM ({rep["kvm"]}), same {rep["machine"]}: below 1 is faster than KVM'
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:{top:.2f}]
set xtics rotate by -30
set ylabel 'ratio of medians, {LEVEL * 100:.0f} % interval'
set grid ytics
unset key
plot '{data}' using 1:2:xtic(5) with boxes lc rgb '#4477aa', \\
     '' using 1:3:(0):($4 - $3) with vectors heads size 0.08,90 lc rgb '#222222' lw 1.5, \\
     1 with lines lc rgb '#cc3311' lw 2
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def write_report(log_text, out, name, kvm, machine):
    """The whole report of one serial log into directory out; the tables as
    text, and whether the plot was made."""
    samples, exits, errors = parse(log_text)
    if not samples:
        sys.exit("bench-report: no benchmark lines in the log" + "".join(f"\n  {e}" for e in errors))
    rep = report(samples, exits, errors, kvm, machine)
    (out / f"{name}.json").write_text(json.dumps(rep, indent=2) + "\n")
    text = table(rep)
    (out / f"{name}.md").write_text(text)
    return text, plot(rep, out, name)


# Synthetic data for the self-test: (median ns through KVM, rkvm/KVM,
# relative noise per round), roughly today's QEMU figures.
SYNTHETIC = {
    "cpuid_exit": (20100, 0.96, 0.01), "vmmcall_exit": (20600, 0.91, 0.01), "hlt_irq_exit": (53400, 0.52, 0.01),
    "io_exit_to_user": (28100, 0.95, 0.01), "mmio_exit_to_user": (33200, 0.86, 0.01),
    "irq_window_injection": (80500, 0.69, 0.01), "npt_fault": (25500, 0.93, 0.05),
    "guest_pf_touch": (330, 1.00, 0.05), "vm_vcpu_create": (15794700, 0.04, 0.03),
    "linux_boot": (2670000000, 1.00, 0.03), "console_serial": (103800000, 0.93, 0.06),
    "console_virtio": (580000, 0.80, 0.08), "blk_read": (5730000, 0.49, 0.08), "blk_write": (15370000, 0.96, 0.12),
}


def synthetic_log(rounds=10, seed="synthetic log"):
    """A serial log as tests/vm/bench.sh writes it: every device in turn in
    each round, a drift shared by the round (up to 20 %), noise of its own
    per value; shadow paging 1.8 times slower on the boot, the page touch
    2.0 times slower through rkvm's shadow paging; exit_trace=1 costs 1 %."""
    rng = random.Random(seed)
    lines = ["[    5.100000] rkvm-out: bench: 10 rounds (synthetic)"]
    t = 5.2
    for r in range(1, rounds + 1):
        drift = 1 + rng.uniform(-0.2, 0.2)
        for dev in DEVICES:
            for name, (kvm_ns, rkvm_ratio, noise) in SYNTHETIC.items():
                if dev == "rkvm-notrace" and name != "cpuid_exit":
                    continue
                if dev.endswith("shadow") and name.startswith(("console", "blk")):
                    continue
                ns = kvm_ns * (rkvm_ratio if dev.startswith("rkvm") else 1)
                if dev.endswith("shadow"):
                    ns *= {"linux_boot": 1.8, "npt_fault": 0.17}.get(name, 1)
                    if dev == "rkvm-shadow":
                        ns *= {"guest_pf_touch": 2.0, "npt_fault": 0.65}.get(name, 1)
                if dev == "rkvm-notrace":
                    ns /= 1.01
                ns *= drift * (1 + rng.uniform(-noise, noise))
                t += 0.01
                lines.append(f"[{t:12.6f}] rkvm-out: bench {dev} {name} {ns:.0f} round={r}")
                if r == 1 or not name.startswith(("console", "blk")):
                    lines.append(f"[{t:12.6f}] rkvm-out: bench-exits {dev} {name} 1.000 round={r}")
    lines.append(f"[{t + 1:12.6f}] rkvm-out: bench-error rkvm-shadow round=3: Linux boot failed: synthetic")
    lines.append(f"[{t + 2:12.6f}] rkvm-out: bench: done")
    return "\n".join(lines) + "\n"


def self_test(keep):
    failures = []

    def check(ok, what):
        print(f"{'ok' if ok else 'FAILED'}: {what}")
        if not ok:
            failures.append(what)

    rng = random.Random("self-test")

    def runs(center, noise, drift=None, n=10):
        return [(r, center * (drift[r - 1] if drift else 1) * (1 + rng.uniform(-noise, noise)))
                for r in range(1, n + 1)]

    kvm = runs(100, 0.02)
    for what, rkvm, want in [("clearly faster (80 against 100, 2 % noise)", runs(80, 0.02), "faster"),
                             ("clearly slower (120 against 100)", runs(120, 0.02), "slower"),
                             ("overlapping (101 against 100, 5 % noise)", runs(101, 0.05), "even")]:
        interval = ratio_interval(rkvm, kvm, what)
        check(verdict(interval) == want, f"{what}: {want}, interval {interval}")
        check(ratio_interval(rkvm, kvm, what) == interval, f"{what}: the same interval again")
    # The point of pairing the rounds: a drift of up to 30 % shared by both
    # devices within each round, rkvm 5 % faster throughout. Drawn by round
    # the ratio is tight; with the rounds shuffled (the drift no longer
    # shared) the same values say nothing.
    drift = [1 + 0.3 * math.sin(r) for r in range(10)]
    kvm_d, rkvm_d = runs(100, 0.005, drift), runs(95, 0.005, drift)
    check(verdict(ratio_interval(rkvm_d, kvm_d, "drift")) == "faster", "a shared drift, paired: faster")
    shuffled = [(r, v) for (r, _), (_, v) in zip(rkvm_d, rng.sample(rkvm_d, len(rkvm_d)))]
    check(verdict(ratio_interval(shuffled, kvm_d, "drift")) == "even", "the same values unpaired: even")
    check(ratio_interval(runs(95, 0.01, n=2), kvm, "few") is None, "two rounds: no interval")
    check(verdict(None) == "n/a" and verdict((0.951, 0.998)) == "even" and verdict((1.006, 1.2)) == "slower",
          "verdicts at the edges, to two decimals")
    # Old logs: no round numbers.
    samples, exits, _ = parse("rkvm-out: bench kvm cpuid_exit 20100\nrkvm-out: bench kvm cpuid_exit 20200\n"
                              "rkvm-out: bench-exits kvm cpuid_exit 1.000\n")
    check(samples == {"cpuid_exit": {"kvm": [(1, 20100), (2, 20200)]}} and exits == {"cpuid_exit": {"kvm": [1.0]}},
          "an old log's lines numbered as rounds")

    # The whole report on a synthetic log, twice, in two processes.
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(keep) if keep else Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        log = out / "synthetic-bench.log"
        log.write_text(synthetic_log())
        texts = []
        for i in (1, 2):
            d = out / f"run{i}"
            d.mkdir(exist_ok=True)
            subprocess.run([sys.executable, __file__, str(log), str(d)], check=True, capture_output=True)
            texts.append(((d / "bench.md").read_text(), (d / "bench.json").read_text()))
        check(texts[0] == texts[1], "two runs of the report: the same tables and JSON")
        md, rep = texts[0][0], json.loads(texts[0][1])
        rows = {r["name"]: r for r in rep["rows"]}
        check(rows["vm_vcpu_create"]["verdict"] == "faster", "synthetic VM creation: faster")
        check(rows["linux_boot"]["verdict"] == "even", "synthetic Linux boot: even")
        check(rows["guest_pf_touch"]["verdict_shadow"] == "slower", "synthetic shadow page touch: slower")
        check(rep["exit_trace"] and rep["exit_trace"][0]["ratio_interval"] is not None, "the exit trace row")
        check("| verdict |" in md and "exit_trace=1 against exit_trace=0" in md and "round=3" in md,
              "the tables: verdict column, exit trace table, the error")
        if keep:
            print(f"synthetic log and reports kept in {out}")
    print(f"self-test: {len(failures)} failed" if failures else "self-test: all passed")
    return not failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, nargs="?")
    ap.add_argument("out_dir", type=Path, nargs="?")
    ap.add_argument("--name", default="bench")
    ap.add_argument("--kvm", default="kvm_amd")
    ap.add_argument("--machine", default="QEMU test VM (TCG)")
    ap.add_argument("--self-test", nargs="?", const="", metavar="DIR",
                    help="check the statistics and the report on synthetic data (kept in DIR if given)")
    args = ap.parse_args()
    if args.self_test is not None:
        sys.exit(0 if self_test(args.self_test) else 1)
    if not args.log or not args.out_dir:
        ap.error("SERIAL_LOG and OUT_DIR are needed")
    text, made = write_report(args.log.read_text(errors="replace"), args.out_dir, args.name, args.kvm,
                              args.machine)
    print(text, end="")
    out = args.out_dir
    print(f"written: {out / (args.name + '.json')}, {out / (args.name + '.md')}" +
          (f", {out / (args.name + '.png')}" if made else " (no plot: gnuplot missing)"))


if __name__ == "__main__":
    main()

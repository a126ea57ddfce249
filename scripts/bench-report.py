#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The report of `make bench`: reads the test VM's serial log (lines
"bench <device> <name> <ns per operation>" from tests/vm/bench.sh, devices
kvm, rkvm, kvm-shadow and rkvm-shadow), and writes, per benchmark, the
median and spread (min-max) of the rounds for each device and the rkvm/KVM
ratio of the medians; then a second table, nested against shadow paging:

    bench-report.py SERIAL_LOG OUT_DIR [--name NAME] [--kvm MODULE] [--machine TEXT]

OUT_DIR gets NAME.json (machine-readable), NAME.md (the table) and, with
gnuplot installed, NAME.png (the ratios); NAME is "bench" unless given
(`make bench` writes bench-vmx.* for the Bochs run against kvm_intel). The
table also goes to stdout. Tables with no measurements (shadow paging and
the I/O rows, which the Bochs run leaves out) are left out.
"""
import argparse
import json
import re
import statistics
import subprocess
import sys
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
    ("console_serial", "console output through the 16550, per KiB"),
    ("console_virtio", "console output through virtio-console, per KiB"),
    ("blk_read", "virtio-blk read, per MiB"),
    ("blk_write", "virtio-blk write (fsync), per MiB"),
]
# The I/O rows as throughput: (name, unit, bytes of that unit per operation).
THROUGHPUT = [("console_serial", "KiB/s", 1), ("console_virtio", "KiB/s", 1), ("blk_read", "MiB/s", 1),
              ("blk_write", "MiB/s", 1)]
UNITS = {"linux_boot": ("s", 1e9), "vm_vcpu_create": ("µs", 1e3), "console_serial": ("ms", 1e6),
         "console_virtio": ("ms", 1e6), "blk_read": ("ms", 1e6), "blk_write": ("ms", 1e6)}


DEVICES = r"(kvm|rkvm|kvm-shadow|rkvm-shadow)"


def parse(log):
    """Round samples {name: {device: [ns]}}, exits per operation
    {name: {device: n}}, and the errors reported."""
    samples, exits, errors = {}, {}, []
    for line in log.splitlines():
        m = re.search(rf"rkvm-out: bench {DEVICES} (\w+) (\d+)$", line)
        if m:
            samples.setdefault(m.group(2), {}).setdefault(m.group(1), []).append(int(m.group(3)))
        m = re.search(rf"rkvm-out: bench-exits {DEVICES} (\w+) ([\d.]+)$", line)
        if m:
            exits.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
        m = re.search(r"rkvm-out: (bench-error .*)$", line)
        if m:
            errors.append(m.group(1))
    return samples, exits, errors


def summary(values):
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def fmt(ns, name):
    unit, div = UNITS.get(name, ("µs", 1e3))
    return f"{ns / div:.2f} {unit}" if unit in ("s", "ms") else f"{ns / div:.1f} {unit}"


# The rows of the second table: where the MMU mode matters, and CPUID (it
# does not) as the control.
SHADOW_ROWS = ["guest_pf_touch", "npt_fault", "linux_boot", "cpuid_exit"]


def ratio(a, b):
    return a["median"] / b["median"] if a and b and b["median"] > 0 else None


def report(samples, exits, errors, kvm, machine):
    rows = []
    for name, what in BENCHMARKS:
        dev = {d: summary(samples.get(name, {}).get(d, [])) for d in ("kvm", "rkvm", "kvm-shadow", "rkvm-shadow")}
        rows.append({"name": name, "what": what, "kvm": dev["kvm"], "rkvm": dev["rkvm"],
                     "exits_per_op": exits.get(name, {}),
                     "ratio": ratio(dev["rkvm"], dev["kvm"]),
                     "kvm_shadow": dev["kvm-shadow"], "rkvm_shadow": dev["rkvm-shadow"],
                     "ratio_shadow": ratio(dev["rkvm-shadow"], dev["kvm-shadow"]),
                     "kvm_shadow_over_npt": ratio(dev["kvm-shadow"], dev["kvm"]),
                     "rkvm_shadow_over_npt": ratio(dev["rkvm-shadow"], dev["rkvm"])})
    return {"rows": rows, "errors": errors, "kvm": kvm, "machine": machine,
            "note": f"medians over rounds in one boot of the {machine}; "
            f"absolute times are emulation, ratios compare rkvm with {kvm} side by side"}


def table(rep):
    out = [f"| benchmark | KVM ({rep['kvm']}) | rkvm | rkvm/KVM | exits/op KVM, rkvm |", "|---|---|---|---|---|"]
    for r in rep["rows"]:
        if not r["kvm"] and not r["rkvm"]:
            continue
        def cell(s):
            if not s:
                return "n/a"
            return f"{fmt(s['median'], r['name'])} ({fmt(s['min'], r['name'])}-{fmt(s['max'], r['name'])})"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "n/a"
        out.append(f"| {r['what']} | {cell(r['kvm'])} | {cell(r['rkvm'])} | {ratio} | "
                   f"{exits_cell(r, 'kvm')}, {exits_cell(r, 'rkvm')} |")
    out.append("")
    out.append("Median (min-max) per operation over the rounds; ratio of the medians; exits per "
               "operation from each vCPU's `exits` statistic (KVM_GET_STATS_FD), where measured.")
    by_name = {r["name"]: r for r in rep["rows"]}
    if any(by_name[n]["kvm_shadow"] or by_name[n]["rkvm_shadow"] for n in SHADOW_ROWS):
        shadow_table(out, by_name, rep["kvm"])
    if any(by_name[n]["kvm"] or by_name[n]["rkvm"] for n, _, _ in THROUGHPUT):
        io_table(out, by_name)
    for e in rep["errors"]:
        out.append(f"- {e}")
    return "\n".join(out) + "\n"


def shadow_table(out, by_name, kvm):
    tdp, param = ("EPT", "ept=0") if kvm == "kvm_intel" else ("NPT", "npt=0")
    out.append("")
    out.append(f"Nested paging against shadow paging ({kvm} {param}, rkvm tdp=0), medians:")
    out.append("")
    out.append(f"| benchmark | KVM {tdp} | KVM shadow | shadow/{tdp} | rkvm {tdp} | rkvm shadow | shadow/{tdp} "
               "| rkvm/KVM shadow | exits/op shadow KVM, rkvm |")
    out.append("|---|---|---|---|---|---|---|---|---|")
    for name in SHADOW_ROWS:
        r = by_name[name]
        med = lambda s: fmt(s["median"], name) if s else "n/a"
        rat = lambda x: f"{x:.2f}" if x is not None else "n/a"
        out.append(f"| {r['what']} | {med(r['kvm'])} | {med(r['kvm_shadow'])} | {rat(r['kvm_shadow_over_npt'])} | "
                   f"{med(r['rkvm'])} | {med(r['rkvm_shadow'])} | {rat(r['rkvm_shadow_over_npt'])} | "
                   f"{rat(r['ratio_shadow'])} | {exits_cell(r, 'kvm-shadow')}, {exits_cell(r, 'rkvm-shadow')} |")


def io_table(out, by_name):
    out.append("")
    out.append("Emulated against paravirtual I/O (timed between the guest's markers, medians over boots), "
               "throughput and exits:")
    out.append("")
    out.append("| I/O | KVM | exits KVM | rkvm | exits rkvm | rkvm/KVM |")
    out.append("|---|---|---|---|---|---|")
    for name, unit, per_op in THROUGHPUT:
        r = by_name[name]
        rate = lambda s: f"{per_op * 1e9 / s['median']:.0f} {unit}" if s and s["median"] > 0 else "n/a"
        per = "KiB" if unit == "KiB/s" else "MiB"
        out.append(f"| {r['what'].split(',')[0]} | {rate(r['kvm'])} | {exits_cell(r, 'kvm')} per {per} | "
                   f"{rate(r['rkvm'])} | {exits_cell(r, 'rkvm')} per {per} | "
                   f"{r['ratio']:.2f} |" if r["ratio"] is not None else
                   f"| {r['what'].split(',')[0]} | {rate(r['kvm'])} | - | {rate(r['rkvm'])} | - | n/a |")


def exits_cell(row, device):
    n = row["exits_per_op"].get(device)
    if n is None:
        return "-"
    return f"{n:.0f}" if n >= 100 else f"{n:.3g}"


def plot(rep, out_dir, name):
    rows = [r for r in rep["rows"] if r["ratio"] is not None]
    if not rows:
        return False
    data = out_dir / f"{name}.dat"
    data.write_text("".join(f"{i} {r['ratio']:.4f} \"{r['name']}\"\n" for i, r in enumerate(rows)))
    script = f"""
set terminal pngcairo size 900,480 noenhanced
set output '{out_dir / f"{name}.png"}'
set title 'rkvm / KVM ({rep["kvm"]}), same {rep["machine"]}: below 1 is faster than KVM'
set style fill solid 0.6
set boxwidth 0.6
set yrange [0:{max(1.2, 1.1 * max(r["ratio"] for r in rows)):.2f}]
set xtics rotate by -30
set ylabel 'ratio of medians'
set grid ytics
unset key
plot '{data}' using 1:2:xtic(3) with boxes lc rgb '#4477aa', 1 with lines lc rgb '#cc3311' lw 2
"""
    try:
        subprocess.run(["gnuplot"], input=script, text=True, check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--name", default="bench")
    ap.add_argument("--kvm", default="kvm_amd")
    ap.add_argument("--machine", default="QEMU test VM (TCG)")
    args = ap.parse_args()
    samples, exits, errors = parse(args.log.read_text(errors="replace"))
    if not samples:
        sys.exit("bench-report: no benchmark lines in the log" + "".join(f"\n  {e}" for e in errors))
    rep = report(samples, exits, errors, args.kvm, args.machine)
    out = args.out_dir
    (out / f"{args.name}.json").write_text(json.dumps(rep, indent=2) + "\n")
    text = table(rep)
    (out / f"{args.name}.md").write_text(text)
    print(text, end="")
    made = plot(rep, out, args.name)
    print(f"written: {out / (args.name + '.json')}, {out / (args.name + '.md')}" +
          (f", {out / (args.name + '.png')}" if made else " (no plot: gnuplot missing)"))


if __name__ == "__main__":
    main()

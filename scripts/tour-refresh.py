#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Writes the outputs of a tour run (the test VM's serial log, mode
rkvm.mode=tour) back into Documentation/tour.md: each "    $ command" line
gets the output printed below it, replacing the old one.

    tour-refresh.py SERIAL_LOG TOUR_MD
"""
import re
import sys
from pathlib import Path


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    runs, cur = [], None
    for line in Path(sys.argv[1]).read_text(errors="replace").splitlines():
        m = re.search(r"rkvm-out: tour-(cmd|out): ?(.*)$", line)
        if not m:
            continue
        if m.group(1) == "cmd":
            cur = (m.group(2), [])
            runs.append(cur)
        elif cur:
            cur[1].append(m.group(2).rstrip())
    doc = Path(sys.argv[2])
    lines, out, k, i = doc.read_text().split("\n"), [], 0, 0
    while i < len(lines):
        line = lines[i]
        i += 1
        out.append(line)
        if not line.startswith("    $ "):
            continue
        if k >= len(runs) or runs[k][0] != line[6:]:
            sys.exit(f"tour-refresh: no output for: {line[6:]}")
        out += ["    " + o if o else "" for o in runs[k][1]]
        k += 1
        while i < len(lines) and lines[i].startswith("    ") and not lines[i].startswith("    $ "):
            i += 1
    doc.write_text("\n".join(out))
    print(f"tour-refresh: {k} outputs written into {doc}; check the prose around them (git diff)")


if __name__ == "__main__":
    main()

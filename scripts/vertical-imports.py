#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The kernel's vertical import style for rkvm.ko's sources.

Linux's Documentation/rust/coding-guidelines.rst ("Imports"): every item of
a `use` list on its own line, with an empty `//` comment after the last item
of each brace group so that rustfmt keeps the list vertical:

    use crate::{
        abi,
        vm::{
            Vm,
            VmFd, //
        },
    };

    vertical-imports.py --check [PATH...]   report `use` lists in another style
    vertical-imports.py [PATH...]           convert them (runs rustfmt)

PATH: .rs files or directories (default: module/); generated files are left
out. Conversion as the kernel describes it: rustfmt first (it sorts each list
and would move a comment with its item), then `//` after each list's last
item, then rustfmt again, which lays the lists out vertically.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUSTFMT_CONFIG = os.path.join(ROOT, ".rustfmt.toml")
# The rustfmt of scripts/common.sh.
RUSTFMT = os.environ.get("RUSTFMT", "/usr/bin/rustfmt")

# A `use` declaration starts a line (after indentation and visibility).
USE_START = re.compile(r"^[ \t]*(?:pub(?:\([^)]*\))?[ \t]+)?use[ \t]+(?=[A-Za-z_:{])", re.M)


class Group:
    """A `{...}` list of a use tree: where it opens and closes, its items."""

    def __init__(self, open_at):
        self.open_at = open_at
        self.close_at = None
        self.items = []  # [start, end): each item's text span
        self.comma_after_last = None  # offset of the last item's comma
        self.comments = []  # (start, end, text) of comments inside


def parse_uses(text):
    """Every use declaration with a brace group: (start, end, groups)."""
    out = []
    for m in USE_START.finditer(text):
        end, groups = parse_use(text, m.end())
        if groups:
            out.append((m.start(), end, groups))
    return out


def parse_use(text, start):
    """The use tree from `start` to its `;`: (end offset, its groups). An item
    holding a nested group spans from its path to the group's `}`."""
    groups, stack = [], []
    # Per open group: where its current item started (None: between items).
    cur = []
    last_end = start
    i = start
    while i < len(text):
        c = text[i]
        if text.startswith("//", i) or text.startswith("/*", i):
            if text.startswith("//", i):
                j = text.find("\n", i)
                j = len(text) if j < 0 else j
            else:
                j = text.find("*/", i)
                j = len(text) if j < 0 else j + 2
            if stack:
                stack[-1].comments.append((i, j, text[i:j]))
            i = j
            continue
        if c == "{":
            if stack and cur[-1] is None:
                cur[-1] = i
            g = Group(i)
            stack.append(g)
            groups.append(g)
            cur.append(None)
        elif c == "}":
            g = stack.pop()
            s = cur.pop()
            if s is not None:
                g.items.append((s, last_end))
                g.comma_after_last = None
            g.close_at = i
            last_end = i + 1
        elif c == ",":
            if cur[-1] is not None:
                stack[-1].items.append((cur[-1], last_end))
                stack[-1].comma_after_last = i
            cur[-1] = None
        elif c == ";" and not stack:
            return i + 1, groups
        elif not c.isspace():
            if stack and cur[-1] is None:
                cur[-1] = i
            last_end = i + 1
        i += 1
    raise ValueError("unterminated use declaration")


def line_of(text, offset):
    return text.count("\n", 0, offset) + 1


def problems(text):
    """(line, what) for each use list not in the vertical style."""
    out = []
    for start, _end, groups in parse_uses(text):
        for g in groups:
            where = line_of(text, g.open_at)
            starts = [line_of(text, s) for s, _ in g.items]
            ends = [line_of(text, e - 1) for _, e in g.items]
            if not g.items:
                out.append((where, "empty list"))
                continue
            bad = starts[0] <= line_of(text, g.open_at) or line_of(text, g.close_at) <= ends[-1]
            bad |= any(s <= e for s, e in zip(starts[1:], ends))
            if bad:
                out.append((where, "items not one per line"))
                continue
            last_line = ends[-1]
            trailing = [
                t for (cs, _ce, t) in g.comments if line_of(text, cs) == last_line and cs > g.items[-1][1]
            ]
            if g.comma_after_last is None or trailing != ["//"]:
                out.append((where, "no `, //` after the last item"))
    return out


def strip_markers(text):
    """The text without the empty `//` of use lists (and the space before)."""
    cuts = []
    for _start, _end, groups in parse_uses(text):
        for g in groups:
            for cs, ce, t in g.comments:
                if t.rstrip() == "//":
                    s = cs
                    while s > 0 and text[s - 1] in " \t":
                        s -= 1
                    cuts.append((s, ce))
    for s, e in sorted(cuts, reverse=True):
        text = text[:s] + text[e:]
    return text


def add_markers(text):
    """`, //` and a line break after the last item of every use list."""
    edits = []
    for _start, _end, groups in parse_uses(text):
        for g in groups:
            if not g.items:
                continue
            if g.comma_after_last is not None:
                edits.append((g.comma_after_last + 1, " //\n"))
            else:
                edits.append((g.items[-1][1], ", //\n"))
    for at, s in sorted(edits, reverse=True):
        text = text[:at] + s + text[at:]
    return text


def rustfmt(text, path):
    r = subprocess.run(
        [RUSTFMT, "--config-path", RUSTFMT_CONFIG, "--emit", "stdout"],
        input=text,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        sys.exit(f"{path}: rustfmt failed:\n{r.stderr}")
    return r.stdout


def rust_files(paths):
    for p in paths:
        if os.path.isdir(p):
            for d, _dirs, files in os.walk(p):
                for f in sorted(files):
                    if f.endswith(".rs") and "generated" not in f:
                        yield os.path.join(d, f)
        else:
            yield p


def main(argv):
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"] or [os.path.join(ROOT, "module")]
    bad = 0
    for path in sorted(rust_files(paths)):
        with open(path) as f:
            text = f.read()
        found = problems(text)
        if check:
            for line, what in found:
                print(f"{os.path.relpath(path)}:{line}: use list not vertical: {what}")
            bad += len(found)
            continue
        if not found:
            continue
        new = rustfmt(add_markers(rustfmt(strip_markers(text), path)), path)
        left = problems(new)
        for line, what in left:
            print(f"{os.path.relpath(path)}:{line}: could not convert: {what}")
        bad += len(left)
        if new != text:
            with open(path, "w") as f:
                f.write(new)
    if check and bad:
        print(f"{bad} use list(s) not in the kernel's vertical style: run scripts/vertical-imports.py")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

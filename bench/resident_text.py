#!/usr/bin/env python3
"""Which parts of pingscope's binary are resident in an idle daemon, and why.

Starts `pingscope serve` on one target (127.0.0.1 at 1 s) inside the private network namespace
it must be run in (`sudo unshare --net python3 bench/resident_text.py [BINARY]`), asks
/-/healthy once, waits 3 s, then reads the process's page map (/proc/PID/pagemap) for each
mapping of the binary: how many pages are present, in how many contiguous runs, and, for the
executable mapping, which crates' functions (symbols from `nm`) lie on the present pages.
Prints one JSON object. Needs root (page map) and binutils (`nm`)."""

import bisect
import collections
import json
import os
import re
import struct
import subprocess
import sys
import time

from startup import healthy, one_target

PAGE = 4096


def present_pages(pid, binary):
    """(permissions, offset from the load base) of every present page of the binary's maps."""
    maps = [l.split() for l in open(f"/proc/{pid}/maps")]
    mine = [m for m in maps if len(m) > 5 and os.path.realpath(m[5]) == binary]
    base = int(mine[0][0].split("-")[0], 16)
    out = []
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        for m in mine:
            lo, hi = (int(x, 16) for x in m[0].split("-"))
            pm.seek(lo // PAGE * 8)
            data = pm.read((hi - lo) // PAGE * 8)
            for i in range(len(data) // 8):
                if struct.unpack_from("<Q", data, i * 8)[0] >> 63:
                    out.append((m[1], lo - base + i * PAGE))
    return out


def runs(offsets):
    sizes, start, prev = [], None, None
    for o in sorted(offsets):
        if prev is None or o != prev + PAGE:
            if start is not None:
                sizes.append((prev - start) // PAGE + 1)
            start = o
        prev = o
    if start is not None:
        sizes.append((prev - start) // PAGE + 1)
    return sizes


def crate(name):
    """The crate a demangled symbol belongs to (its first path segment; C symbols as `C`)."""
    n = name.lstrip("<&*( ")
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", n)
    return m.group(1) if m else "C/other"


def by_crate(binary, offsets):
    nm = subprocess.run(["nm", "-C", "--defined-only", "-n", "-S", binary],
                        capture_output=True, text=True, check=True).stdout
    syms = []
    for line in nm.splitlines():
        p = line.split(None, 3)
        if len(p) == 4 and p[2] in "tTwW":
            try:
                syms.append((int(p[0], 16), int(p[1], 16), p[3]))
            except ValueError:
                continue
    syms.sort()
    starts = [s[0] for s in syms]
    acc = collections.Counter()
    for lo in offsets:
        hi = lo + PAGE
        i = max(bisect.bisect_right(starts, lo) - 1, 0)
        while i < len(syms) and syms[i][0] < hi:
            a, size, name = syms[i]
            overlap = min(hi, a + size) - max(lo, a)
            if overlap > 0:
                acc[crate(name)] += overlap
            i += 1
    return {k: round(v / 1024) for k, v in acc.most_common(25)}


def main():
    binary = os.path.realpath(sys.argv[1] if len(sys.argv) > 1 else "target/release/pingscope")
    work, cfg = one_target("bench-resident-")
    p = subprocess.Popen([binary, "serve", "--config.file", cfg, "--web.listen-address",
                          "127.0.0.1:9902", "--log.level", "warn"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not healthy(9902) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(3)
        with open(f"/proc/{p.pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
        pages = present_pages(p.pid, binary)
    finally:
        p.terminate()
        p.wait(timeout=5)
        subprocess.run(["rm", "-rf", work], check=False)
    per_map = collections.defaultdict(list)
    for perm, off in pages:
        per_map[perm].append(off)
    text = per_map.get("r-xp", [])
    text_runs = runs(text)
    print(json.dumps({
        "binary": binary, "idle_rss_kib": rss,
        "present_kib_by_mapping": {k: len(v) * PAGE // 1024 for k, v in per_map.items()},
        "text_runs": len(text_runs), "text_run_pages_largest": sorted(text_runs)[-5:],
        "text_kib_by_crate": by_crate(binary, text),
    }))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Idle RSS of one pingscope target by the disk's read-ahead, inside a private network namespace
(run as root: `unshare --net python3 bench/idle_read_ahead.py BINARY [ROUNDS] [KB...]`).

A fault on a page of the executable that is not in the page cache reads the pages around it as
well (mmap read-around, `read_ahead_kb` of the disk that holds the binary), and those pages are
mapped in large folios: the file-backed part of an idle daemon's RSS is mostly code that was
read around, not run. This runs the same binary with the disk's `read_ahead_kb` set to each
value in turn (default 8192, 128, 0: this VM's setting, the kernel's default, none), ROUNDS
times each in rotation, and restores the setting it found. Each start drops the page cache
first (`drop_caches`), then reads VmRSS, RssAnon and RssFile 3 s after start, and again after
three gzip scrapes of /metrics 1 s apart and 5 s at rest. One line per start.

Only loopback traffic (127.0.0.1, in the namespace); every process started here is ended by its
PID; bounded: each start lasts about 20 s."""

import os
import subprocess
import sys
import time
import urllib.request

from one_run import stop
from startup import one_target


def status(pid):
    keep = ("VmRSS", "RssAnon", "RssFile")
    with open(f"/proc/{pid}/status") as f:
        return {l.split(":")[0]: int(l.split()[1]) for l in f if l.startswith(keep)}


def read_ahead_file(binary):
    """The sysfs file of the read-ahead of the disk that holds `binary`."""
    dev = os.stat(binary).st_dev
    return f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/queue/read_ahead_kb"


def one_start(binary, cfg):
    subprocess.run(["sh", "-c", "sync; echo 3 > /proc/sys/vm/drop_caches"], check=True)
    p = subprocess.Popen([binary, "serve", "--config.file", cfg, "--web.listen-address",
                          "127.0.0.1:9903", "--log.level", "warn"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)
        at_start = status(p.pid)
        for _ in range(3):
            req = urllib.request.Request("http://127.0.0.1:9903/metrics",
                                         headers={"Accept-Encoding": "gzip"})
            with urllib.request.urlopen(req, timeout=10) as r:
                r.read()
            time.sleep(1)
        time.sleep(5)
        return at_start, status(p.pid)
    finally:
        stop(p)


def main():
    binary = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    values = [int(v) for v in sys.argv[3:]] or [8192, 128, 0]
    _, cfg = one_target("bench-read-ahead-")
    ra = read_ahead_file(binary)
    with open(ra) as f:
        found = f.read().strip()
    print(f"# {binary}, {ra} was {found}")
    try:
        for r in range(rounds):
            for kb in values:
                with open(ra, "w") as f:
                    f.write(str(kb))
                a, b = one_start(binary, cfg)
                print(f"round {r + 1} read_ahead_kb={kb:5d}  3 s: VmRSS={a['VmRSS']} "
                      f"RssAnon={a['RssAnon']} RssFile={a['RssFile']}  after scrapes: "
                      f"VmRSS={b['VmRSS']} RssAnon={b['RssAnon']} RssFile={b['RssFile']} (kB)",
                      flush=True)
    finally:
        with open(ra, "w") as f:
            f.write(found)


if __name__ == "__main__":
    main()

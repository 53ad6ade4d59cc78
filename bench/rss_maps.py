#!/usr/bin/env python3
"""Where a pingscope daemon's resident memory is: anonymous (heap, arenas, stacks) against
file-backed (the binary's code), and its largest mappings.

Starts `pingscope serve` on N loopback targets at 1 s inside the private network namespace it
must be run in (`sudo unshare --net python3 bench/rss_maps.py BINARY N SECONDS [NAME=VALUE ...]`,
the NAME=VALUE pairs added to the daemon's environment, such as MALLOC_ARENA_MAX=1), scrapes
/metrics once with gzip at half time, and at SECONDS (at most 600) prints VmRSS, RssAnon and
RssFile from /proc/PID/status and the eight mappings with the most resident kB
(/proc/PID/smaps). The daemon is stopped at the end, whatever happens."""

import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from one_run import stop


def loopback_daemon_config(n, prefix):
    """Brings up `lo` in this namespace, lets every group open ICMP sockets, and writes a config
    of N loopback targets at 1 s (127.0.0.1 on) in a new directory named with `prefix`, with its
    session database beside it: the config's path."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
        f.write("0 2147483647")
    work = tempfile.mkdtemp(prefix=prefix)
    cfg = os.path.join(work, "cfg.yml")
    with open(cfg, "w") as f:
        f.write("defaults:\n  interval: 1s\n  timeout: 1s\n")
        f.write(f"sessions:\n  database: {work}/sessions.db\ntargets:\n")
        for i in range(1, n + 1):
            f.write(f"  - host: 127.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
    return cfg


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: unshare --net python3 bench/rss_maps.py BINARY N SECONDS [NAME=VALUE ...]")
    binary, n, secs = sys.argv[1], int(sys.argv[2]), min(float(sys.argv[3]), 600.0)
    env = dict(os.environ)
    env.update(kv.split("=", 1) for kv in sys.argv[4:])
    cfg = loopback_daemon_config(n, "rss-maps-")
    proc = subprocess.Popen([binary, "serve", "--config.file", cfg, "--web.listen-address",
                             "127.0.0.1:9900", "--log.level", "warn"], env=env)
    try:
        time.sleep(secs / 2)
        req = urllib.request.Request("http://127.0.0.1:9900/metrics",
                                     headers={"Accept-Encoding": "gzip"})
        urllib.request.urlopen(req, timeout=60).read()
        time.sleep(secs / 2)
        with open(f"/proc/{proc.pid}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        print(f"# {binary}, N = {n}, {secs:g} s, one gzip scrape, env {' '.join(sys.argv[4:])}")
        print(" ".join(f"{k}={status[k].strip().replace(' ', '')}"
                       for k in ("VmRSS", "RssAnon", "RssFile", "Threads")))
        maps = []
        with open(f"/proc/{proc.pid}/smaps") as f:
            for line in f:
                parts = line.split()
                if parts and "-" in parts[0] and not parts[0].endswith(":"):
                    maps.append({"map": line.strip()[:100], "rss": 0, "size": 0})
                elif parts and parts[0] in ("Rss:", "Size:") and maps:
                    maps[-1]["rss" if parts[0] == "Rss:" else "size"] = int(parts[1])
        for m in sorted(maps, key=lambda m: -m["rss"])[:8]:
            print(f"{m['rss']:8d} kB resident of {m['size']:8d}  {m['map']}")
    finally:
        stop(proc)


if __name__ == "__main__":
    main()

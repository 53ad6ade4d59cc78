#!/usr/bin/env python3
"""What one scrape costs a pingscope daemon in memory: the peak of its resident set during the
scrape and what stays resident after it, for a protobuf scrape and a text one, gzip accepted
(as Prometheus asks: protobuf when native histograms are on).

Starts `pingscope serve` on N loopback targets at 1 s inside the private network namespace it
must be run in (`sudo unshare --net python3 bench/scrape_memory.py BINARY N SECONDS`), waits
SECONDS (at most 600), then for each format: resets the peak (`echo 5 > /proc/PID/clear_refs`
clears VmHWM), scrapes once, and reads VmHWM (the peak during the scrape), VmRSS and RssAnon
3 s later. One JSON line per format to stdout. The daemon is stopped at the end, whatever
happens."""

import json
import subprocess
import sys
import time
import urllib.request

from one_run import stop
from rss_maps import loopback_daemon_config

FORMATS = {
    "protobuf": "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
                "encoding=delimited",
    "text": "text/plain;version=0.0.4",
}


def status(pid):
    with open(f"/proc/{pid}/status") as f:
        st = dict(line.split(":", 1) for line in f)
    return {k: int(st[k].split()[0]) for k in ("VmHWM", "VmRSS", "RssAnon")}


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: unshare --net python3 bench/scrape_memory.py BINARY N SECONDS")
    binary, n, secs = sys.argv[1], int(sys.argv[2]), min(float(sys.argv[3]), 600.0)
    cfg = loopback_daemon_config(n, "scrape-memory-")
    proc = subprocess.Popen([binary, "serve", "--config.file", cfg, "--web.listen-address",
                             "127.0.0.1:9900", "--log.level", "warn"])
    try:
        time.sleep(secs)
        for fmt, accept in FORMATS.items():
            with open(f"/proc/{proc.pid}/clear_refs", "w") as f:
                f.write("5")
            before = status(proc.pid)
            req = urllib.request.Request("http://127.0.0.1:9900/metrics", headers={
                "Accept": accept, "Accept-Encoding": "gzip"})
            t0 = time.monotonic()
            with urllib.request.urlopen(req, timeout=120) as r:
                wire = len(r.read())
            took = time.monotonic() - t0
            peak = status(proc.pid)["VmHWM"]
            time.sleep(3)
            after = status(proc.pid)
            print(json.dumps({
                "binary": binary, "n": n, "format": fmt, "scrape_s": round(took, 3),
                "wire_bytes": wire, "rss_before_kib": before["VmRSS"],
                "peak_kib": peak, "peak_over_before_kib": peak - before["VmRSS"],
                "rss_after_kib": after["VmRSS"], "anon_after_kib": after["RssAnon"],
                "anon_before_kib": before["RssAnon"],
            }), flush=True)
    finally:
        stop(proc)


if __name__ == "__main__":
    main()

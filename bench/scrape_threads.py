#!/usr/bin/env python3
"""Per-thread CPU of a pingscope daemon at N loopback targets: a window without scrapes, then a
window with a gzip scrape every EVERY seconds, and what the scrapes added, by thread name.

    sudo unshare --net python3 bench/scrape_threads.py BINARY N WINDOW EVERY

utime and stime per thread come from /proc/PID/task/*/stat in 10 ms units, and this kernel
samples the user/system split at its ticks (bench/RESULTS.md, "Reading the user/system
split"): a per-thread difference under a few ticks is noise. Bounded: two windows and start-up."""
import os, sys, time, subprocess, tempfile, urllib.request, collections

from one_run import stop
CLK = os.sysconf("SC_CLK_TCK")
binp, n = sys.argv[1], int(sys.argv[2])
window, every = min(float(sys.argv[3]), 300.0), max(float(sys.argv[4]), 0.5)
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
open("/proc/sys/net/ipv4/ping_group_range", "w").write("0 2147483647")
work = tempfile.mkdtemp(prefix="thr-")
cfg = os.path.join(work, "c.yml")
with open(cfg, "w") as f:
    f.write("defaults:\n  interval: 1s\n  timeout: 1s\n")
    f.write(f"sessions:\n  database: {work}/s.db\ntargets:\n")
    for i in range(n):
        v = i + 1
        f.write(f"  - host: 127.{(v>>16)&255}.{(v>>8)&255}.{v&255}\n")
p = subprocess.Popen([binp, "serve", "--config.file", cfg, "--web.listen-address", "127.0.0.1:9900",
                      "--log.level", "warn"])
def threads():
    out = collections.Counter()
    for tid in os.listdir(f"/proc/{p.pid}/task"):
        try:
            comm = open(f"/proc/{p.pid}/task/{tid}/comm").read().strip()
            f = open(f"/proc/{p.pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        key = comm.rstrip("0123456789-")
        out[key + " u"] += int(f[11]) / CLK
        out[key + " s"] += int(f[12]) / CLK
        try:
            for line in open(f"/proc/{p.pid}/task/{tid}/status"):
                if line.startswith("voluntary_ctxt_switches"):
                    out[key + " csw"] += int(line.split()[1]) / 1000
        except OSError:
            pass
    f = open(f"/proc/{p.pid}/stat").read().rsplit(")", 1)[1].split()
    out["ECHO"] = echos() / 1000
    out["TOTAL u"] = int(f[11]) / CLK; out["TOTAL s"] = int(f[12]) / CLK
    return out
def echos():
    lines = [l.split() for l in open("/proc/net/snmp") if l.startswith("Icmp:")]
    return int(lines[1][lines[0].index("InEchos")])
def scrape():
    r = urllib.request.Request("http://127.0.0.1:9900/metrics", headers={"Accept-Encoding": "gzip"})
    return len(urllib.request.urlopen(r, timeout=60).read())
try:
    for _ in range(150):
        try:
            urllib.request.urlopen("http://127.0.0.1:9900/-/healthy", timeout=2); break
        except Exception:
            time.sleep(0.2)
    time.sleep(10)
    scrape(); time.sleep(5)
    a = threads(); time.sleep(window); b = threads()
    k = 0; t0 = time.time()
    while time.time() - t0 < window:
        scrape(); k += 1
        time.sleep(max(0, t0 + k * every - time.time()))
    c = threads()
    print(f"# N={n} window={window}s, {k} gzip scrapes in the second window; csw and ECHO in thousands")
    for name, x, y in (("quiet", a, b), ("scraped", b, c)):
        e = (y["ECHO"] - x["ECHO"]) * 1000
        print(f"{name}: echos {e:.0f}  user/ping {1e6*(y['TOTAL u']-x['TOTAL u'])/e:.2f} us  sys/ping {1e6*(y['TOTAL s']-x['TOTAL s'])/e:.2f} us")
    for key in sorted(set(a) | set(c)):
        q, s = b[key] - a[key], c[key] - b[key]
        if q or s:
            print(f"{key:28s} quiet {q:7.2f}  scraped {s:7.2f}  diff/scrape {1000*(s-q)/k:8.1f} ms")
finally:
    stop(p)

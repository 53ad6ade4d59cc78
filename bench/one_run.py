#!/usr/bin/env python3
"""One benchmark run: one tool, N loopback targets, inside the private network namespace this
process was started in (run.sh starts it with `unshare --net`). Prints one JSON line of results;
bench/README.md says what every field means and how it is measured.

Steps: bring `lo` up and open net.ipv4.ping_group_range (so unprivileged ICMP sockets work), take
the kernel RTT floor with `ping -c 100 -i 0.01 127.0.0.1`, start the tool (its executable dropped
from the page cache first: launch), wait the warm-up, scrape
once (the window's start), measure over a fixed window (utime and stime of the process from
/proc/PID/stat, RSS every second, the kernel's ICMP counters from /proc/net/snmp, a gzip text
scrape every 15 s as Prometheus does), with --split-window a second window whose user/kernel
split perf samples (perf_split), scrape once more (the window's end), take per-probe RTTs of
127.0.0.1 beside the N targets where the tool can give them, then a bounded burst of scrapes, and
last the own-count check: echo requests are dropped at the namespace's output, the probes in
flight settle, and the tool's counters from one scrape are compared with the kernel's read after
it. Every process started here is ended by its PID.
"""

import argparse
import contextlib
import gzip
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
TEXT_ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"
PROTOBUF_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
)
# `--buckets shared`: the same 20 RTT buckets for pingscope and smokeping_prober, fine around
# loopback RTTs. The default runs each tool with its own default layout, what users pay for.
SHARED_BUCKETS = [
    0.00001, 0.000015, 0.00002, 0.000025, 0.00003, 0.000035, 0.00004, 0.00005, 0.00006, 0.00008,
    0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.001, 0.0025, 0.01, 0.1, 1.0,
]
TIMEOUT_S = 1.0  # every tool's probe timeout
PROBE_HOST = "127.0.0.1"  # target 0, the one whose RTTs are reported per probe
NFT_TABLE = "psbench"

CHILDREN = []


def cleanup(*_):
    for p in CHILDREN:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    for p in CHILDREN:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def on_term(*_):
    cleanup()
    sys.exit(3)


def sh(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def snmp():
    with open("/proc/net/snmp") as f:
        lines = [l.split() for l in f if l.startswith("Icmp:")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:])))


def socket_drops():
    """Packets the kernel dropped at ICMP (ping) sockets' receive queues, from the last column
    of /proc/net/icmp; the namespace holds only the tool's sockets."""
    total = 0
    for path in ("/proc/net/icmp", "/proc/net/icmp6"):
        try:
            with open(path) as f:
                next(f)
                total += sum(int(line.split()[-1]) for line in f if line.strip())
        except (OSError, StopIteration, ValueError):
            pass
    return total


def cost_args(ap):
    """The options path_cost.py and tcp_cost.py share: binaries, repeats, warm-up and window."""
    ap.add_argument("--pingscope", default="target/release/pingscope")
    ap.add_argument("--testnet", default="target/release/pingscope-testnet")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--window", type=int, default=30)


@contextlib.contextmanager
def testnet_namespace(testnet, profiles, prefix):
    """A network namespace of this script's own with `lo` up and unprivileged ICMP open, the
    test network's responder (`testnet`) answering `profiles` in it and logging to
    WORK/responder.jsonl: yields (namespace, WORK, responder process). On exit the responder is
    ended, the namespace deleted and WORK removed."""
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench creates its own network namespace")
    ns = f"psbench-{os.getpid()}"
    work = tempfile.mkdtemp(prefix=prefix)
    prof = os.path.join(work, "profiles.json")
    with open(prof, "w") as f:
        json.dump(profiles, f)
    responder = None
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                        "net.ipv4.ping_group_range=0 2147483647"], check=True)
        # `ip netns exec` execs the program in place: this PID is the responder's.
        responder = subprocess.Popen(
            ["ip", "netns", "exec", ns, testnet, "--profiles", prof,
             "--log", os.path.join(work, "responder.jsonl")],
            stdout=subprocess.PIPE, stderr=open(os.path.join(work, "responder.stderr"), "w"),
            text=True)
        if responder.stdout.readline().strip() != "READY":
            raise SystemExit(f"pingscope-testnet did not start; see {work}/responder.stderr")
        yield ns, work, responder
    finally:
        if responder is not None:
            stop(responder)
        subprocess.run(["ip", "netns", "del", ns])
        shutil.rmtree(work, ignore_errors=True)


def launch(cmd, log):
    """Starts `cmd` with its executable dropped from the page cache first, so that every tool
    starts as a binary read from disk does. A binary just written (a fresh build, a copy) sits in
    the page cache in the write path's large folios, which the kernel maps whole on a fault:
    about 1.2 MB more resident text for pingscope at 10,000 targets than the same binary read
    back (bench/results/rss-2026-12-05-page-cache.txt). Dropping is advice: pages another
    process maps stay."""
    exe = shutil.which(cmd[0])
    if exe is None:
        raise RuntimeError(f"{cmd[0]} not found")
    fd = os.open(exe, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return subprocess.Popen(cmd, stdout=log, stderr=log)


def stop(proc):
    """SIGTERM to a process this script started, SIGKILL if it outlives 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def metric_sums(port, names):
    """Each of `names` summed over its series, from a text scrape of 127.0.0.1:`port`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        body = r.read().decode()
    sums = {}
    for line in body.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


def cpu_times(pid):
    """(utime, stime) of a process in seconds: /proc/PID/stat fields 14 and 15, which cover
    every thread the process has had, exited ones included."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_cpu(pid):
    """(utime+stime seconds, sum of the live threads' schedstat ns as seconds, a check)."""
    user, system = cpu_times(pid)
    ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return user + system, ns / 1e9


def cpu_snapshot(pid):
    user, system = cpu_times(pid)
    return {"user": user, "system": system, "sched": proc_cpu(pid)[1]}


def perf_split(pid, secs, work):
    """The process's CPU over `secs` more seconds (no scrapes), split into user and kernel time by
    perf's samples instead of the kernel's ticks: `perf record -e cpu-clock -F 4999 -p PID`
    samples each of its threads every ~200 us of its own CPU time, at a period that does not
    divide the daemons' 10 and 20 ms wake-ups, where the ticks (250 a second here, CONFIG_HZ=250
    with tick-based accounting) fall at the same few points of each periodic wake-up and
    split a few hundred samples a window. Total CPU from utime + stime as in the window."""
    if shutil.which("perf") is None:
        raise RuntimeError("--split-window needs perf (Debian: linux-perf)")
    data = os.path.join(work, "split.data")
    k0, c0 = snmp(), cpu_times(pid)
    subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4999", "-p", str(pid),
                    "-o", data, "--", "sleep", str(secs)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=secs + 60)
    k1, c1 = snmp(), cpu_times(pid)
    report = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "sym", "-g",
                             "none", "-F", "sample,sym"], check=True, capture_output=True,
                            text=True, timeout=120).stdout
    modes = {}
    for line in report.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#") and parts[0].isdigit():
            # perf marks a kernel symbol [k], a user-space one [.]
            modes[parts[1]] = modes.get(parts[1], 0) + int(parts[0])
    os.remove(data)
    user, kernel = modes.get("[.]", 0), modes.get("[k]", 0)
    pings = max(k1["InEchos"] - k0["InEchos"], 1)
    cpu = (c1[0] + c1[1]) - (c0[0] + c0[1])
    share = user / max(user + kernel, 1)
    return {"seconds": secs, "samples_user": user, "samples_kernel": kernel,
            "samples_other": sum(modes.values()) - user - kernel, "user_share": share,
            "kernel_in_echos": pings, "cpu_s": cpu, "cpu_per_ping_us": cpu / pings * 1e6,
            "user_per_ping_us": share * cpu / pings * 1e6,
            "system_per_ping_us": (1 - share) * cpu / pings * 1e6}


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    return out


def sockets(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


def addr(i):
    """Target i (0-based) on its own loopback address; target 0 is 127.0.0.1."""
    v = i + 1
    return f"127.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"


def quantile(sorted_vals, q):
    """Nearest-rank quantile: the smallest sample with at least q of the samples at or below
    it. Always one of the samples, never a value between two."""
    if not sorted_vals:
        return None
    return sorted_vals[max(0, math.ceil(q * len(sorted_vals)) - 1)]


def sample_stats(vals):
    """Exact figures of a list of per-probe values (any unit)."""
    if not vals:
        return {"n": 0}
    s = sorted(vals)
    return {"n": len(s), "min": s[0], "p50": quantile(s, 0.5), "p99": quantile(s, 0.99),
            "max": s[-1], "mean": sum(s) / len(s)}


def kernel_floor(count=100, interval="0.01"):
    """iputils ping's RTTs for 127.0.0.1 (kernel receive timestamps), µs as ping prints them.
    The issue's floor is 100 pings 10 ms apart; at N = 1 a second floor at the tool's own rate
    (1 s) is taken too, since a path used once a second runs cold whoever sends."""
    out = subprocess.run(
        ["ping", "-n", "-c", str(count), "-i", interval, PROBE_HOST],
        capture_output=True, text=True, timeout=count * float(interval) + 20,
    ).stdout
    rtts = [round(float(m) * 1000, 3) for m in re.findall(r"time=([0-9.]+) ms", out)]
    return {**sample_stats(rtts), "rtt_us": rtts}


def http_get(url, accept=None, timeout=150, gz=False):
    """(seconds from the request to the body's last byte, body as sent on the wire, its
    Content-Encoding)."""
    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    if gz:
        req.add_header("Accept-Encoding", "gzip")
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
        enc = r.headers.get("Content-Encoding", "")
    return time.perf_counter() - t0, body, enc


def decoded(body, enc):
    return gzip.decompress(body) if enc == "gzip" else body


def scrape(url, accept=TEXT_ACCEPT, timeout=150):
    """One scrape as Prometheus makes it (gzip accepted): its latency, the bytes on the wire and
    the decoded body."""
    dt, body, enc = http_get(url, accept=accept, timeout=timeout, gz=True)
    plain = decoded(body, enc)
    info = {"s": dt, "wire_bytes": len(body), "body_bytes": len(plain),
            "encoding": enc or "identity"}
    return info, plain


def wait_serving(ready, proc, log, limit=30):
    """Calls `ready` until it stops raising OSError; exits naming `log` when `proc` ends first or
    `limit` seconds pass."""
    deadline = time.monotonic() + limit
    while True:
        try:
            ready()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"pingscope did not serve /metrics; see {log}")
            time.sleep(0.2)


def wait_http(url, limit):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        try:
            # Generous: a 10,000-target /metrics takes seconds here, and an early timeout
            # would read as "not up".
            http_get(url, timeout=60)
            return True
        except OSError:
            time.sleep(0.05)
    return False


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

# The families the exact figures come from, per tool: sent, replies (and the extra reply
# counters that belong to the kernel's InEchoReps), the RTT histogram.
FAMILIES = {
    "pingscope": {"sent": "pingscope_sent_total", "recv": "pingscope_rtt_seconds_count",
                  "recv_extra": ("pingscope_late_replies_total", "pingscope_duplicates_total"),
                  "rtt": "pingscope_rtt_seconds"},
    "smokeping": {"sent": "smokeping_requests_total",
                  "recv": "smokeping_response_duration_seconds_count",
                  "recv_extra": ("smokeping_response_duplicates_total",),
                  "rtt": "smokeping_response_duration_seconds"},
}
LAG = "pingscope_scheduler_lag_seconds"


def parse_scrape(body, tool, hosts):
    """What a text scrape says: counter sums over every target and for 127.0.0.1 alone, the
    RTT histogram's sum, count and cumulative buckets (all targets, and 127.0.0.1), the
    scheduler lag histogram (pingscope), and how many series it has: in all, per target (a
    series is a target's when one of its label values is a target's address) and for
    127.0.0.1, in all and by family. Families that are absent (a layout without them) are
    simply not counted."""
    fam = FAMILIES[tool]
    extra = set(fam["recv_extra"])
    rtt = fam["rtt"]
    out = {"sent": 0.0, "recv": 0.0, "recv_extra": 0.0, "rtt_sum": 0.0, "rtt_count": 0.0,
           "buckets": {}, "probe_host": {"sent": 0.0, "recv": 0.0, "recv_extra": 0.0,
                                         "rtt_sum": 0.0, "rtt_count": 0.0, "buckets": {}},
           "lag": {"sum": 0.0, "count": 0.0, "buckets": {}},
           "series": 0, "target_series": 0, "probe_host_series": 0, "probe_host_families": {}}
    for line in io.StringIO(body.decode()):
        if not line.strip() or line.startswith("#"):
            continue
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            end = line.rfind("}")
            labels = dict(LABEL.findall(line[brace + 1:end]))
            value = line[end + 1:].split()
        else:
            name, *value = line.split()
            labels = {}
        try:
            v = float(value[0])
        except (IndexError, ValueError):
            continue
        out["series"] += 1
        vals = labels.values()
        if any(x in hosts for x in vals):
            out["target_series"] += 1
        own = PROBE_HOST in vals
        if own:
            out["probe_host_series"] += 1
            # Histogram _bucket/_sum/_count lines under their histogram.
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            fams = out["probe_host_families"]
            fams[family] = fams.get(family, 0) + 1
        for d in ((out, out["probe_host"]) if own else (out,)):
            if name == fam["sent"]:
                d["sent"] += v
            elif name == fam["recv"]:
                d["recv"] += v
                d["rtt_count"] += v
            elif name in extra:
                d["recv_extra"] += v
            elif name == rtt + "_sum":
                d["rtt_sum"] += v
            elif name == rtt + "_bucket":
                le = labels.get("le", "+Inf")
                d["buckets"][le] = d["buckets"].get(le, 0.0) + v
        if name == LAG + "_bucket":
            le = labels.get("le", "+Inf")
            out["lag"]["buckets"][le] = out["lag"]["buckets"].get(le, 0.0) + v
        elif name == LAG + "_sum":
            out["lag"]["sum"] += v
        elif name == LAG + "_count":
            out["lag"]["count"] += v
    return out


def le_value(le):
    return math.inf if le in ("+Inf", "Inf") else float(le)


def bucket_bounds(q, before, after):
    """The classic-histogram bucket that the nearest-rank q-quantile of the observations made
    between two scrapes lies in: {"gt": lower bound, "le": upper bound, "n": observations}.
    Only the bounds are known; no value inside the bucket is claimed."""
    les = sorted(after, key=le_value)
    inc = [(le_value(k), after[k] - before.get(k, 0.0)) for k in les]
    if not inc or inc[-1][1] <= 0:
        return None
    total = inc[-1][1]
    rank = max(1, math.ceil(q * total))
    lower = 0.0
    for le, c in inc:
        if c >= rank:
            return {"gt": lower, "le": None if le == math.inf else le, "n": total}
        lower = le
    return None


def share_above(bound, before, after):
    """Exact share of the observations between two scrapes above a bucket bound."""
    key = next((k for k in after if k != "+Inf" and abs(le_value(k) - bound) < 1e-12), None)
    tot = after.get("+Inf", 0.0) - before.get("+Inf", 0.0)
    if key is None or tot <= 0:
        return None
    return (tot - (after[key] - before.get(key, 0.0))) / tot


def exact_mean(before, after):
    n = after["rtt_count"] - before["rtt_count"]
    return ((after["rtt_sum"] - before["rtt_sum"]) / n if n > 0 else None), n


def window_figures(m0, m1):
    """Exact means from _sum/_count increases and the buckets p50/p99 lie in, between two
    scrapes, for every target and for 127.0.0.1."""
    out = {}
    for key, a, b in (("all", m0, m1), ("probe_host", m0["probe_host"], m1["probe_host"])):
        mean, n = exact_mean(a, b)
        out[key] = {"mean_s": mean, "n": n, "tool_sent": b["sent"] - a["sent"],
                    "p50_bucket": bucket_bounds(0.5, a["buckets"], b["buckets"]),
                    "p99_bucket": bucket_bounds(0.99, a["buckets"], b["buckets"])}
    return out


def window_from_api(base, ip):
    """The window statistics of the monitor of `ip` from /api/v1/targets, in seconds (the
    pingscope_window_* gauges are off by default; the API has the same figures)."""
    for t in api("GET", f"{base}/api/v1/targets")["targets"]:
        if t["ip"] == ip and t.get("rtt_ms"):
            r = t["rtt_ms"]
            return {"min": r["min"] / 1e3, "mean": r["avg"] / 1e3, "max": r["max"] / 1e3,
                    "stddev": r["stddev"] / 1e3, "loss_ratio": t["loss_ratio"]}
    return {}


def api(method, url, body=None, timeout=10):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


def session_rtts(base, sid, limit):
    """The samples of a pingscope session once it has ended (waiting at most `limit` s):
    (per-probe RTTs in µs as stored, the session's summary, its status)."""
    deadline = time.monotonic() + limit
    while True:
        d = api("GET", f"{base}/api/v1/sessions/{sid}")
        if d.get("status") != "running" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    rtts = [round(s["rtt_ms"] * 1000, 3) for s in d.get("samples", [])
            if s.get("type") == "reply" and s.get("rtt_ms") is not None]
    return rtts, d.get("summary") or {}, d.get("status")


def side_probe(tool, count, work):
    """Per-probe RTTs of 127.0.0.1 beside the N targets, `count` probes one second apart, after
    the window (so the window's CPU, RSS and echo counts are the monitors' alone): a session of
    the daemon itself (pingscope: POST /api/v1/sessions, its stored samples) or a second fping
    (`fping -C`, another process). Returns its figures, the RTTs in µs as the tool gives them (to
    the µs) and the echo requests it sent and the replies it counted."""
    limit = count + TIMEOUT_S + 10
    if tool == "pingscope":
        rec = api("POST", "http://127.0.0.1:9900/api/v1/sessions",
                  {"target": PROBE_HOST, "count": count, "interval": "1s", "timeout": "1s"})
        time.sleep(count)
        rtts, summary, status = session_rtts("http://127.0.0.1:9900", rec["id"], limit - count)
        out = {"how": "pingscope session (POST /api/v1/sessions) in the daemon",
               "status": status, "sent": summary.get("sent", 0),
               "received": summary.get("received", 0)}
    else:
        path = os.path.join(work, "side.log")
        with open(path, "w") as log:
            p = subprocess.Popen(["fping", "-C", str(count), "-p", "1000", "-t", "1000", "-q",
                                  PROBE_HOST], stdout=log, stderr=log)
            CHILDREN.append(p)
            try:
                p.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        with open(path) as f:
            m = re.search(r"^" + re.escape(PROBE_HOST) + r"\s+:((?:\s+(?:[0-9.]+|-))+)\s*$",
                          f.read(), re.M)
        vals = m.group(1).split() if m else []
        rtts = [round(float(v) * 1000, 3) for v in vals if v != "-"]
        out = {"how": "fping -C beside the measured fping (another process)",
               "sent": len(vals), "received": len(rtts)}
    return {**out, **sample_stats(rtts), "rtt_us": rtts}


FPING_BLOCK = re.compile(r"^\[\d\d:\d\d:\d\d\]$", re.M)
FPING_LINE = re.compile(r"^(\S+)\s+: xmt/rcv/%loss = (\d+)/(\d+)/\S+?"
                        r"(?:, min/avg/max = ([0-9.]+)/([0-9.]+)/([0-9.]+))?$", re.M)


def fping_intervals(text, off0, off1):
    """fping -Q interval blocks wholly inside the window: blocks are printed at each interval's
    end, so those printed between the window's start (`off0`, the log's size then) and end
    (`off1`) without the first (whose interval began before the window). Returns the
    per-target sums of those blocks: sent, received, RTT sum (avg × received; fping prints avg
    to the µs, so the sum is exact to 0.5 µs × received), min and max, for all targets and for
    127.0.0.1."""
    starts = [m.start() for m in FPING_BLOCK.finditer(text)] + [len(text)]
    blocks = [(a, b) for a, b in zip(starts, starts[1:]) if off0 <= a < off1][1:]
    acc = {k: {"sent": 0, "recv": 0, "rtt_sum_ms": 0.0, "min_ms": None, "max_ms": None}
           for k in ("all", "probe_host")}
    for a, b in blocks:
        for m in FPING_LINE.finditer(text, a, b):
            host, xmt, rcv = m.group(1), int(m.group(2)), int(m.group(3))
            for k in (("all", "probe_host") if host == PROBE_HOST else ("all",)):
                d = acc[k]
                d["sent"] += xmt
                d["recv"] += rcv
                if m.group(4) is not None and rcv:
                    lo, avg, hi = float(m.group(4)), float(m.group(5)), float(m.group(6))
                    d["rtt_sum_ms"] += avg * rcv
                    d["min_ms"] = lo if d["min_ms"] is None else min(d["min_ms"], lo)
                    d["max_ms"] = hi if d["max_ms"] is None else max(d["max_ms"], hi)
    out = {"intervals": len(blocks)}
    for k, d in acc.items():
        out[k] = {"sent": d["sent"], "n": d["recv"],
                  "mean_s": d["rtt_sum_ms"] / d["recv"] / 1000 if d["recv"] else None,
                  "min_s": d["min_ms"] / 1000 if d["min_ms"] is not None else None,
                  "max_s": d["max_ms"] / 1000 if d["max_ms"] is not None else None}
    return out


@contextlib.contextmanager
def echo_requests_dropped():
    """Echo requests dropped at the namespace's output (nftables): sends fail in the sender, so
    no probe leaves any more and the kernel's counters stop once the replies in flight are in."""
    sh(["nft", "add", "table", "inet", NFT_TABLE])
    sh(["nft", "add", "chain", "inet", NFT_TABLE, "out",
        "{ type filter hook output priority 0; policy accept; }"])
    sh(["nft", "add", "rule", "inet", NFT_TABLE, "out", "icmp", "type", "echo-request", "drop"])
    sh(["nft", "add", "rule", "inet", NFT_TABLE, "out", "icmpv6", "type", "echo-request",
        "drop"])
    try:
        yield
    finally:
        subprocess.run(["nft", "delete", "table", "inet", NFT_TABLE],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def own_count_check(url, tool, hosts, base, side):
    """The tool's own counts against the kernel's, with nothing in flight: echo requests are
    dropped at the output, the probes sent before settle (the timeout and a second), then one
    scrape, and the kernel's counters read after it (and before, to show they stood still).
    `side` = (echo requests, replies) of the per-probe side probe, which the kernel counted and
    the tool's monitors did not. `missed_*` > 0: the kernel saw more than the tool counted
    (replies: more than the monitors and the side probe together); < 0: the tool counted more
    than the kernel saw."""
    with echo_requests_dropped():
        time.sleep(TIMEOUT_S + 1.5)
        ka = snmp()
        _, body = scrape(url)
        kb = snmp()
    m = parse_scrape(body, tool, set(hosts))
    k_sent = kb["InEchos"] - base["InEchos"] - side[0]
    k_recv = kb["InEchoReps"] - base["InEchoReps"] - side[1]
    recv = m["recv"] + m["recv_extra"]
    return {
        "kernel_still": ka["InEchos"] == kb["InEchos"] and ka["InEchoReps"] == kb["InEchoReps"],
        "kernel_sent": k_sent, "tool_sent": m["sent"], "missed_sent": k_sent - m["sent"],
        "kernel_recv": k_recv, "tool_recv": recv, "tool_recv_extra": m["recv_extra"],
        "missed_recv": k_recv - recv, "side_probe": list(side),
    }


def series_counts(m, n):
    return {"series": m["series"], "target_series": m["target_series"],
            "series_per_target": m["target_series"] / n if n else None,
            "global_series": m["series"] - m["target_series"],
            "probe_host_series": m["probe_host_series"],
            "probe_host_by_family": m["probe_host_families"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tool", choices=["pingscope", "smokeping", "blackbox", "fping"])
    ap.add_argument("n", type=int)
    ap.add_argument("--rep", type=int, default=0)
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--window", type=float, default=20)
    ap.add_argument("--scrape-every", type=float, default=15,
                    help="seconds between the gzip scrapes inside the window")
    ap.add_argument("--scrapes", type=int, default=20,
                    help="scrapes of the burst after the window, at most ...")
    ap.add_argument("--scrape-budget", type=float, default=12, help="... seconds")
    ap.add_argument("--probes", type=int, default=20,
                    help="per-probe RTTs of 127.0.0.1 after the window, one a second")
    ap.add_argument("--buckets", choices=["default", "shared"], default="default",
                    help="RTT buckets: each tool's default, or the same 20 for pingscope and "
                         "smokeping_prober")
    ap.add_argument("--pingscope", default="target/release/pingscope")
    ap.add_argument("--split-window", type=float, default=0,
                    help="seconds of a second window, after the first, whose user/kernel split "
                         "perf samples (0: none); see perf_split")
    ap.add_argument("--nice", type=int, default=0,
                    help="niceness for this run and the tools it starts (negative: ahead of "
                         "other work on a shared machine)")
    args = ap.parse_args()
    if args.nice:
        os.nice(args.nice)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    sh(["ip", "link", "set", "lo", "up"])
    with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
        f.write("0 2147483647")
    res = {"tool": args.tool, "n": args.n, "rep": args.rep, "nice": args.nice,
           "buckets": args.buckets, "warmup": args.warmup, "window": args.window,
           "split_window": args.split_window,
           "scrape_every": args.scrape_every, "floor": kernel_floor()}
    if args.n == 1:
        res["floor_1s"] = kernel_floor(15, "1")
    work = tempfile.mkdtemp(prefix=f"bench-{args.tool}-{args.n}-")
    hosts = [addr(i) for i in range(args.n)]
    host_set = set(hosts)
    metrics_url = None
    procs = {}
    log_path = os.path.join(work, "tool.log")
    log = open(log_path, "w")
    shared = args.buckets == "shared"
    # The floor's pings are not the tool's: counts start here, before the tool does.
    base = snmp()

    if args.tool == "pingscope":
        cfg = os.path.join(work, "pingscope.yml")
        with open(cfg, "w") as f:
            f.write("defaults:\n  interval: 1s\n  timeout: 1s\n")
            if shared:
                f.write("  histogram:\n    buckets: [")
                f.write(", ".join(repr(b) for b in SHARED_BUCKETS))
                f.write("]\n")
            f.write(f"sessions:\n  database: {work}/sessions.db\n")
            f.write("targets:\n")
            for h in hosts:
                f.write(f"  - host: {h}\n")
        metrics_url = "http://127.0.0.1:9900/metrics"
        cmd = [args.pingscope, "serve", "--config.file", cfg,
               "--web.listen-address", "127.0.0.1:9900", "--log.level", "warn"]
        procs["main"] = launch(cmd, log)
    elif args.tool == "smokeping":
        cfg = os.path.join(work, "smokeping.yml")
        with open(cfg, "w") as f:
            f.write("targets:\n- interval: 1s\n  network: ip4\n  protocol: udp\n  hosts:\n")
            for h in hosts:
                f.write(f"  - {h}\n")
        metrics_url = "http://127.0.0.1:9374/metrics"
        cmd = ["prometheus-smokeping-prober", f"--config.file={cfg}",
               "--web.listen-address=127.0.0.1:9374", "--log.level=warn"]
        if shared:
            cmd.append("--buckets=" + ",".join(repr(b) for b in SHARED_BUCKETS))
        procs["main"] = launch(cmd, log)
    elif args.tool == "blackbox":
        bb = os.path.join(work, "blackbox.yml")
        with open(bb, "w") as f:
            f.write("modules:\n  icmp:\n    prober: icmp\n    timeout: 1s\n    icmp:\n"
                    "      preferred_ip_protocol: ip4\n      ip_protocol_fallback: false\n")
        sd = os.path.join(work, "targets.json")
        with open(sd, "w") as f:
            json.dump([{"targets": hosts}], f)
        prom = os.path.join(work, "prometheus.yml")
        with open(prom, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: blackbox
    metrics_path: /probe
    params: {{module: [icmp]}}
    file_sd_configs: [{{files: ['{sd}']}}]
    relabel_configs:
      - {{source_labels: [__address__], target_label: __param_target}}
      - {{source_labels: [__param_target], target_label: instance}}
      - {{target_label: __address__, replacement: '127.0.0.1:9115'}}
""")
        procs["main"] = launch(
            ["prometheus-blackbox-exporter", f"--config.file={bb}",
             "--web.listen-address=127.0.0.1:9115", "--log.level=warn"], log)
        procs["prometheus"] = launch(
            ["prometheus", f"--config.file={prom}", f"--storage.tsdb.path={work}/tsdb",
             "--web.listen-address=127.0.0.1:9090", "--log.level=warn"], log)
    else:
        tf = os.path.join(work, "targets.txt")
        with open(tf, "w") as f:
            f.write("\n".join(hosts) + "\n")
        # fping spaces any two packets by -i (default 10 ms); half of 1000/N ms lets every target
        # keep its 1 s period (at 0.9x fping fell 20 % behind).
        gap = max(0.01, min(10.0, 1000.0 / args.n * 0.5))
        procs["main"] = launch(
            # -Q 5: per-target sent/received/min/avg/max every 5 s (the exact mean RTT comes
            # from them). fping keeps each sequence number for the -Q period and has 65,535 of
            # them: 5 s holds up to 13,000 targets (fping 5.1 still exits at 10,000; see
            # RESULTS.md).
            ["fping", "-l", "-p", "1000", "-t", "1000", "-i", f"{gap:.3f}", "-Q", "5",
             "-f", tf], log)
    CHILDREN.extend(procs.values())

    try:
        ready_url = metrics_url
        if args.tool == "pingscope":
            ready_url = "http://127.0.0.1:9900/-/healthy"
        if metrics_url and not wait_http(ready_url, 150):
            raise RuntimeError("no /metrics within 150 s")
        time.sleep(args.warmup)
        main_pid = procs["main"].pid
        scraped = args.tool in ("pingscope", "smokeping")
        # Above 10,000 targets one text scrape takes seconds here: the burst after the window
        # is then one scrape.
        big = args.n > 10_000
        m0 = None
        if scraped:
            # The window's start for the exact means; outside the CPU window.
            _, body = scrape(metrics_url)
            m0 = parse_scrape(body, args.tool, host_set)

        off0 = os.path.getsize(log_path)
        # The window is timed on the monotonic clock, the one the tools' timers run on. The wall
        # clock is read beside it: a virtual machine paused and resumed can have its wall clock
        # stepped forward while the monotonic clock stood still, and a window timed on the wall
        # clock would then be seconds shorter for the tool than it says (clock_step_s).
        k0, t0, w0 = snmp(), time.monotonic(), time.time()
        c0 = {k: cpu_snapshot(p.pid) for k, p in procs.items()}
        rss, window_scrapes = [], []
        next_scrape = t0 + args.scrape_every / 2
        while time.monotonic() - t0 < args.window:
            now = time.monotonic()
            if scraped and now >= next_scrape:
                info, _ = scrape(metrics_url)
                window_scrapes.append(info)
                next_scrape += args.scrape_every
                continue
            time.sleep(min(1.0, max(0.0, args.window - (now - t0))))
            st = proc_status(main_pid)
            if "VmRSS" not in st:  # a zombie: fping exits when it runs out of sequence numbers
                raise RuntimeError(f"the tool (pid {main_pid}) exited during the window")
            rss.append(st["VmRSS"])
        k1, t1, w1 = snmp(), time.monotonic(), time.time()
        c1 = {k: cpu_snapshot(p.pid) for k, p in procs.items()}
        off1 = os.path.getsize(log_path)
        st = proc_status(main_pid)
        elapsed = t1 - t0

        in_echos = k1["InEchos"] - k0["InEchos"]
        cpu = {k: {f: c1[k][f] - c0[k][f] for f in ("user", "system", "sched")} for k in c0}
        main_cpu = cpu["main"]
        per = max(in_echos, 1)
        res.update({
            "elapsed": elapsed,
            "clock_step_s": (w1 - w0) - elapsed,
            "expected": args.n * elapsed,
            "kernel_in_echos": in_echos,
            "kernel_out_echos": k1["OutEchos"] - k0["OutEchos"],
            "kernel_in_echo_reps": k1["InEchoReps"] - k0["InEchoReps"],
            "cpu_user_s": main_cpu["user"],
            "cpu_system_s": main_cpu["system"],
            "cpu_s": main_cpu["user"] + main_cpu["system"],
            "cpu_schedstat_s": main_cpu["sched"],
            "cpu_per_ping_us": (main_cpu["user"] + main_cpu["system"]) / per * 1e6,
            "user_per_ping_us": main_cpu["user"] / per * 1e6,
            "system_per_ping_us": main_cpu["system"] / per * 1e6,
            "rss_steady_kib": sorted(rss)[len(rss) // 2] if rss else None,
            "rss_peak_kib": st["VmHWM"],
            "threads": st["Threads"],
            "sockets": sockets(main_pid),
        })
        if args.split_window > 0:
            res["perf_split"] = perf_split(main_pid, args.split_window, work)
        if "prometheus" in procs:
            pc = cpu["prometheus"]
            res["prometheus_cpu_user_s"] = pc["user"]
            res["prometheus_cpu_system_s"] = pc["system"]
            res["prometheus_rss_kib"] = proc_status(procs["prometheus"].pid)["VmRSS"]

        if scraped:
            res["window_scrapes"] = window_scrapes
            # The window's end for the exact means; outside the CPU window.
            _, body = scrape(metrics_url)
            m1 = parse_scrape(body, args.tool, host_set)
            res["series"] = series_counts(m1, args.n)
            res["rtt"] = window_figures(m0, m1)
            if args.tool == "pingscope":
                if not big:
                    res["window_rtt"] = window_from_api("http://127.0.0.1:9900", PROBE_HOST)
                lag = {"sum": m1["lag"]["sum"] - m0["lag"]["sum"],
                       "count": m1["lag"]["count"] - m0["lag"]["count"]}
                res["lag"] = {
                    "n": lag["count"],
                    "mean_s": lag["sum"] / lag["count"] if lag["count"] else None,
                    "over_10ms_ratio": share_above(0.01, m0["lag"]["buckets"],
                                                   m1["lag"]["buckets"]),
                    "p50_bucket": bucket_bounds(0.5, m0["lag"]["buckets"], m1["lag"]["buckets"]),
                    "p99_bucket": bucket_bounds(0.99, m0["lag"]["buckets"],
                                                m1["lag"]["buckets"]),
                }
            del body, m0, m1
        side = None
        if args.tool in ("pingscope", "fping"):
            side = side_probe(args.tool, args.probes, work)
            res["probe_rtt"] = side

        if scraped:
            # The burst: bounded in count and time, gzip accepted as in the window.
            for key, accept in (("burst", TEXT_ACCEPT), ("proto_burst", PROTOBUF_ACCEPT)):
                if key == "proto_burst" and args.tool != "pingscope":
                    continue
                runs, start = [], time.monotonic()
                while len(runs) < (1 if big else args.scrapes) and (
                        time.monotonic() - start < args.scrape_budget):
                    info, _ = scrape(metrics_url, accept=accept)
                    runs.append(info)
                res[key] = runs

            res["own_count_check"] = own_count_check(
                metrics_url, args.tool, hosts, base, (side["sent"], side["received"]) if side
                else (0, 0))
        elif args.tool == "blackbox":
            q = urllib.parse.quote
            w = int(elapsed)

            def prom(expr):
                _, b, _ = http_get(f"http://127.0.0.1:9090/api/v1/query?time={t1:.3f}&query="
                                   + q(expr))
                return json.loads(b)["data"]["result"]

            def scalar(expr):
                r = prom(expr)
                return float(r[0]["value"][1]) if r else None

            # Each /probe is one probe: the raw samples of 127.0.0.1 over the window are its
            # per-probe RTTs (a failed probe has rtt 0 and probe_success 0, so it is left out).
            ok = {v[0] for s in prom(f"probe_success{{instance='{PROBE_HOST}'}}[{w}s]")
                  for v in s["values"] if v[1] == "1"}
            rtts = [round(float(v[1]) * 1e6, 3)
                    for s in prom(f"probe_icmp_duration_seconds{{phase='rtt',"
                                  f"instance='{PROBE_HOST}'}}[{w}s]")
                    for v in s["values"] if v[0] in ok]
            res["probe_rtt"] = {"how": "Prometheus' raw samples of blackbox's /probe for "
                                       "127.0.0.1 (each one probe)",
                                **sample_stats(rtts), "rtt_us": rtts}
            succ = scalar(f"sum(sum_over_time(probe_success{{job='blackbox'}}[{w}s]))")
            rsum = scalar(f"sum(sum_over_time(probe_icmp_duration_seconds{{phase='rtt'}}"
                          f"[{w}s]))")
            res["rtt"] = {"all": {"mean_s": rsum / succ if rsum is not None and succ else None,
                                  "n": succ}}
            durs = sorted(float(s["value"][1])
                          for s in prom("scrape_duration_seconds{job='blackbox'}"))
            res["probe_scrape"] = {"n": len(durs), "p50_s": quantile(durs, 0.5),
                                   "p99_s": quantile(durs, 0.99),
                                   "max_s": durs[-1] if durs else None}
            res["targets_up"] = scalar("sum(up{job='blackbox'})")
            res["probe_success"] = scalar("sum(probe_success)")
        else:
            log.flush()
            with open(log_path) as f:
                res["rtt"] = fping_intervals(f.read(), off0, off1)
        res["socket_drops"] = socket_drops()
    except Exception as e:  # the run is reported as failed, with why
        res["error"] = repr(e)
        for k, p in procs.items():
            if p.poll() is not None:
                res[f"{k}_exit"] = p.returncode
        log.flush()
        with open(log_path, errors="replace") as f:
            res["log_tail"] = f.read()[-600:]
    finally:
        cleanup()
        log.close()
        subprocess.run(["rm", "-rf", work])
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()

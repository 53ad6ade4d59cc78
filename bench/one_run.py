#!/usr/bin/env python3
"""One benchmark run: one tool, N loopback targets, inside the private network namespace this
process was started in (run.sh starts it with `unshare --net`). Prints one JSON line of results.

Steps: bring `lo` up and open net.ipv4.ping_group_range (so unprivileged ICMP sockets work), take
the kernel RTT floor with `ping -c 100 -i 0.01 127.0.0.1`, start the tool, wait the warm-up,
measure over a fixed window (CPU from /proc/PID/schedstat of every thread and utime+stime from
/proc/PID/stat, RSS sampled every second, kernel ICMP counters from /proc/net/snmp), then scrape
/metrics a bounded number of times. Every process started here is ended by its PID.
"""

import argparse
import contextlib
import json
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
PROTOBUF_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"
)
# The same 20 RTT buckets for pingscope and smokeping_prober (smokeping's default also has 20),
# fine around loopback RTTs so quantiles interpolated from them mean something.
BUCKETS = [
    0.00001, 0.000015, 0.00002, 0.000025, 0.00003, 0.000035, 0.00004, 0.00005, 0.00006, 0.00008,
    0.0001, 0.00015, 0.0002, 0.0003, 0.0005, 0.001, 0.0025, 0.01, 0.1, 1.0,
]

CHILDREN = []


def cleanup(*_):
    for p in CHILDREN:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 5
    for p in CHILDREN:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
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


def proc_cpu(pid):
    """(utime+stime+cutime+cstime seconds, sum of per-thread schedstat ns as seconds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return ticks / CLK_TCK, ns / 1e9


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


def kernel_floor(count=100, interval="0.01"):
    """iputils ping's RTTs for 127.0.0.1 (kernel receive timestamps). The issue's floor is
    100 pings 10 ms apart; at N = 1 a second floor at the tool's own rate (1 s) is taken too,
    since a path used once a second runs cold (caches, CPU idle states) whoever sends."""
    out = subprocess.run(
        ["ping", "-n", "-c", str(count), "-i", interval, "127.0.0.1"],
        capture_output=True, text=True, timeout=count * float(interval) + 20,
    ).stdout
    rtts = sorted(float(m) / 1000 for m in re.findall(r"time=([0-9.]+) ms", out))
    return {"p50": quantile(rtts, 0.5), "p99": quantile(rtts, 0.99), "n": len(rtts)}


def quantile(sorted_vals, q):
    if not sorted_vals:
        return None
    pos = q * (len(sorted_vals) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def http_get(url, accept=None, timeout=150):
    req = urllib.request.Request(url)
    if accept:
        req.add_header("Accept", accept)
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return time.perf_counter() - t0, body


def wait_http(url, limit):
    t0 = time.time()
    while time.time() - t0 < limit:
        try:
            # Generous: a 10,000-target /metrics takes seconds here, and an early timeout
            # would read as "not up".
            http_get(url, timeout=60)
            return True
        except OSError:
            time.sleep(0.05)
    return False


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)', re.M)


def parse_text(body):
    """Yields (name, labels dict, value) from the Prometheus text format."""
    for m in SAMPLE.finditer(body):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        try:
            yield m.group(1), labels, float(m.group(4))
        except ValueError:
            continue


def summarize_metrics(body, prefix, rtt_hist, host_label):
    """Sums counters and pulls the 127.0.0.1 RTT histogram and the scheduler lag histogram."""
    s = {"sent": 0.0, "recv": 0.0, "rtt_buckets": {}, "lag_buckets": {}}
    for name, labels, v in parse_text(body):
        if prefix == "pingscope":
            if name == "pingscope_sent_total":
                s["sent"] += v
            elif name == "pingscope_rtt_seconds_count":
                s["recv"] += v
            elif name == "pingscope_scheduler_lag_seconds_bucket":
                s["lag_buckets"][labels["le"]] = s["lag_buckets"].get(labels["le"], 0) + v
        else:
            if name == "smokeping_requests_total":
                s["sent"] += v
            elif name == "smokeping_response_duration_seconds_count":
                s["recv"] += v
        if name == rtt_hist + "_bucket" and labels.get(host_label) == "127.0.0.1":
            s["rtt_buckets"][labels["le"]] = v
    return s


def series_per_target(body, label, value):
    """Series of one target on a text scrape (samples whose labels carry label="value"), in
    all and by family (histogram _bucket/_sum/_count lines counted under the histogram)."""
    by_family = {}
    for name, labels, _ in parse_text(body):
        if labels.get(label) == value:
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            by_family[family] = by_family.get(family, 0) + 1
    return sum(by_family.values()), by_family


def window_from_api(port, ip):
    """The window statistics of the monitor of `ip` from /api/v1/targets, in seconds (the
    pingscope_window_* gauges are off by default; the API has the same figures)."""
    _, body = http_get(f"http://127.0.0.1:{port}/api/v1/targets")
    for t in json.loads(body)["targets"]:
        if t["ip"] == ip and t.get("rtt_ms"):
            r = t["rtt_ms"]
            return {"min": r["min"] / 1e3, "mean": r["avg"] / 1e3, "max": r["max"] / 1e3,
                    "stddev": r["stddev"] / 1e3, "loss_ratio": t["loss_ratio"]}
    return {}


def hist_quantile(q, before, after):
    """histogram_quantile over the increase of cumulative buckets between two scrapes."""
    les = sorted(after, key=lambda k: float("inf") if k == "+Inf" else float(k))
    inc = [(float("inf") if k == "+Inf" else float(k), after[k] - before.get(k, 0)) for k in les]
    if not inc or inc[-1][1] <= 0:
        return None
    total = inc[-1][1]
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in inc:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / max(c - prev_c, 1e-9))
        prev_le, prev_c = le, c
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tool", choices=["pingscope", "smokeping", "blackbox", "fping"])
    ap.add_argument("n", type=int)
    ap.add_argument("--rep", type=int, default=0)
    ap.add_argument("--warmup", type=float, default=10)
    ap.add_argument("--window", type=float, default=20)
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--scrape-budget", type=float, default=12, help="seconds")
    ap.add_argument("--pingscope", default="target/release/pingscope")
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
           "warmup": args.warmup,
           "window": args.window, "floor": kernel_floor()}
    if args.n == 1:
        res["floor_1s"] = kernel_floor(15, "1")
    work = tempfile.mkdtemp(prefix=f"bench-{args.tool}-{args.n}-")
    hosts = [addr(i) for i in range(args.n)]
    metrics_url = None
    procs = {}
    log = open(os.path.join(work, "tool.log"), "w")

    if args.tool == "pingscope":
        cfg = os.path.join(work, "pingscope.yml")
        with open(cfg, "w") as f:
            f.write("defaults:\n  interval: 1s\n  timeout: 1s\n  histogram:\n    buckets: [")
            f.write(", ".join(repr(b) for b in BUCKETS))
            f.write("]\n    native: true\n")
            f.write(f"sessions:\n  database: {work}/sessions.db\n")
            f.write("targets:\n")
            for h in hosts:
                f.write(f"  - host: {h}\n")
        metrics_url = "http://127.0.0.1:9900/metrics"
        cmd = [args.pingscope, "serve", "--config.file", cfg,
               "--web.listen-address", "127.0.0.1:9900", "--log.level", "warn"]
        procs["main"] = subprocess.Popen(cmd, stdout=log, stderr=log)
    elif args.tool == "smokeping":
        cfg = os.path.join(work, "smokeping.yml")
        with open(cfg, "w") as f:
            f.write("targets:\n- interval: 1s\n  network: ip4\n  protocol: udp\n  hosts:\n")
            for h in hosts:
                f.write(f"  - {h}\n")
        metrics_url = "http://127.0.0.1:9374/metrics"
        cmd = ["prometheus-smokeping-prober", f"--config.file={cfg}",
               "--web.listen-address=127.0.0.1:9374",
               "--buckets=" + ",".join(repr(b) for b in BUCKETS), "--log.level=warn"]
        procs["main"] = subprocess.Popen(cmd, stdout=log, stderr=log)
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
        procs["main"] = subprocess.Popen(
            ["prometheus-blackbox-exporter", f"--config.file={bb}",
             "--web.listen-address=127.0.0.1:9115", "--log.level=warn"], stdout=log, stderr=log)
        procs["prometheus"] = subprocess.Popen(
            ["prometheus", f"--config.file={prom}", f"--storage.tsdb.path={work}/tsdb",
             "--web.listen-address=127.0.0.1:9090", "--log.level=warn"],
            stdout=log, stderr=log)
    else:
        tf = os.path.join(work, "targets.txt")
        with open(tf, "w") as f:
            f.write("\n".join(hosts) + "\n")
        # fping spaces any two packets by -i (default 10 ms); half of 1000/N ms lets every target
        # keep its 1 s period (at 0.9x fping fell 20 % behind).
        gap = max(0.01, min(10.0, 1000.0 / args.n * 0.5))
        procs["main"] = subprocess.Popen(
            # fping keeps each sequence number for the -Q period (its "expire_timeout") and
            # has 65,535 of them: with -Q 10 it exits at once at 10,000 targets (with -Q 5 it
            # still exits after a few seconds here; see RESULTS.md).
            ["fping", "-l", "-p", "1000", "-i", f"{gap:.3f}", "-Q",
             "10" if args.n <= 5000 else "5", "-f", tf],
            stdout=log, stderr=log)
    CHILDREN.extend(procs.values())
    base = snmp()  # the floor's pings are not the tool's

    try:
        ready_url = metrics_url
        if args.tool == "pingscope":
            ready_url = "http://127.0.0.1:9900/-/healthy"
        if metrics_url and not wait_http(ready_url, 150):
            raise RuntimeError("no /metrics within 150 s")
        time.sleep(args.warmup)
        main_pid = procs["main"].pid
        m0 = None
        # Above 10,000 targets one text scrape takes seconds here: pingscope is then scraped once
        # before the window (finished before the window starts, so its CPU is not counted) and
        # once after it, so the lag quantiles cover the window and not the start-up.
        big = args.tool == "pingscope" and args.n > 10_000
        if args.tool in ("pingscope", "smokeping"):
            _, body = http_get(metrics_url)
            m0 = summarize_metrics(
                body.decode(), args.tool,
                "pingscope_rtt_seconds" if args.tool == "pingscope"
                else "smokeping_response_duration_seconds",
                "ip" if args.tool == "pingscope" else "ip")
        k0, t0 = snmp(), time.time()
        c0 = {k: proc_cpu(p.pid) for k, p in procs.items()}
        rss = []
        while time.time() - t0 < args.window:
            time.sleep(min(1.0, max(0.0, args.window - (time.time() - t0))))
            rss.append(proc_status(main_pid)["VmRSS"])
        k1, t1 = snmp(), time.time()
        c1 = {k: proc_cpu(p.pid) for k, p in procs.items()}
        st = proc_status(main_pid)
        elapsed = t1 - t0
        sent = k1["InEchos"] - k0["InEchos"]
        res.update({
            "elapsed": elapsed,
            "expected": args.n * elapsed,
            "kernel_in_echos": sent,
            "kernel_out_echos": k1["OutEchos"] - k0["OutEchos"],
            "kernel_in_echo_reps": k1["InEchoReps"] - k0["InEchoReps"],
            "cpu_ticks_s": c1["main"][0] - c0["main"][0],
            "cpu_sched_s": c1["main"][1] - c0["main"][1],
            "rss_steady_kib": sorted(rss)[len(rss) // 2] if rss else None,
            "rss_peak_kib": st["VmHWM"],
            "threads": st["Threads"],
            "sockets": sockets(main_pid),
            "socket_drops": socket_drops(),
        })
        if "prometheus" in procs:
            res["prometheus_cpu_sched_s"] = c1["prometheus"][1] - c0["prometheus"][1]
            res["prometheus_rss_kib"] = proc_status(procs["prometheus"].pid)["VmRSS"]
        res["cpu_per_ping_us"] = res["cpu_sched_s"] / max(sent, 1) * 1e6

        if m0 is not None:
            # Scrapes: bounded in count and time.
            lat, size = [], None
            ks = snmp()
            start = time.time()
            body = b""
            while len(lat) < (1 if big else args.scrapes) and (
                    time.time() - start < args.scrape_budget):
                dt, body = http_get(metrics_url, timeout=150)
                lat.append(dt)
                size = len(body)
            ke = snmp()
            lat.sort()
            res.update({"scrapes": len(lat), "scrape_p50_s": quantile(lat, 0.5),
                        "scrape_p99_s": quantile(lat, 0.99), "text_bytes": size})
            m1 = summarize_metrics(
                body.decode(), args.tool,
                "pingscope_rtt_seconds" if args.tool == "pingscope"
                else "smokeping_response_duration_seconds", "ip")
            # The last scrape's counters lie between the kernel counters read around the scrapes.
            res["own_count_check"] = {
                "kernel_sent_before": ks["InEchos"] - base["InEchos"], "tool_sent": m1["sent"],
                "kernel_sent_after": ke["InEchos"] - base["InEchos"],
                "kernel_recv_before": ks["InEchoReps"] - base["InEchoReps"],
                "tool_recv": m1["recv"],
                "kernel_recv_after": ke["InEchoReps"] - base["InEchoReps"],
            }
            res["rtt_p50_s"] = hist_quantile(0.5, m0["rtt_buckets"], m1["rtt_buckets"])
            res["rtt_p99_s"] = hist_quantile(0.99, m0["rtt_buckets"], m1["rtt_buckets"])
            res["rtt_samples"] = (m1["rtt_buckets"].get("+Inf", 0)
                                  - m0["rtt_buckets"].get("+Inf", 0))
            # Series of the 127.0.0.1 monitor on the last text scrape. Both tools have the
            # same 20 RTT bounds here (BUCKETS); pingscope's default layout has fewer (README,
            # "Series per target").
            res["series_per_target"], res["series_by_family"] = series_per_target(
                body.decode(), "target" if args.tool == "pingscope" else "host", "127.0.0.1")
            res["rtt_bounds"] = len(BUCKETS)
            if args.tool == "pingscope":
                if not big:
                    res["window_rtt"] = window_from_api(9900, "127.0.0.1")
                res["lag_p50_s"] = hist_quantile(0.5, m0["lag_buckets"], m1["lag_buckets"])
                res["lag_p99_s"] = hist_quantile(0.99, m0["lag_buckets"], m1["lag_buckets"])
                lag = m1["lag_buckets"]
                tot = lag.get("+Inf", 0) - m0["lag_buckets"].get("+Inf", 0)
                le10 = lag.get("0.01", 0) - m0["lag_buckets"].get("0.01", 0)
                res["lag_over_10ms_ratio"] = (tot - le10) / tot if tot else None
                plat, psize = [], None
                start = time.time()
                while not big and len(plat) < args.scrapes and (
                        time.time() - start < args.scrape_budget):
                    dt, pb = http_get(metrics_url, accept=PROTOBUF_ACCEPT)
                    plat.append(dt)
                    psize = len(pb)
                plat.sort()
                res.update({"proto_p50_s": quantile(plat, 0.5),
                            "proto_p99_s": quantile(plat, 0.99), "proto_bytes": psize})
        elif args.tool == "blackbox":
            q = urllib.parse.quote
            w = int(args.window)
            def prom(expr):
                _, b = http_get("http://127.0.0.1:9090/api/v1/query?query=" + q(expr))
                r = json.loads(b)["data"]["result"]
                return float(r[0]["value"][1]) if r else None
            res["scrape_p50_s"] = prom("quantile(0.5, scrape_duration_seconds{job='blackbox'})")
            res["scrape_p99_s"] = prom("quantile(0.99, scrape_duration_seconds{job='blackbox'})")
            res["targets_up"] = prom("sum(up{job='blackbox'})")
            res["probe_success"] = prom("sum(probe_success)")
            sel = "probe_icmp_duration_seconds{phase='rtt',instance='127.0.0.1'}"
            res["rtt_p50_s"] = prom(f"quantile_over_time(0.5, {sel}[{w}s])")
            res["rtt_p99_s"] = prom(f"quantile_over_time(0.99, {sel}[{w}s])")
            res["rtt_samples"] = prom(f"count_over_time({sel}[{w}s])")
        else:
            # fping -Q prints min/avg/max per target every 10 s; take the last 127.0.0.1 line.
            log.flush()
            with open(os.path.join(work, "tool.log")) as f:
                text = f.read()
            m = re.findall(r"^127\.0\.0\.1\s+: xmt/rcv/%loss = (\d+)/(\d+)/\S+, "
                           r"min/avg/max = ([0-9.]+)/([0-9.]+)/([0-9.]+)", text, re.M)
            if m:
                res["rtt_avg_s"] = float(m[-1][3]) / 1000
                res["rtt_max_s"] = float(m[-1][4]) / 1000
    except Exception as e:  # the run is reported as failed, with why
        res["error"] = repr(e)
        for k, p in procs.items():
            if p.poll() is not None:
                res[f"{k}_exit"] = p.returncode
        log.flush()
        with open(os.path.join(work, "tool.log"), errors="replace") as f:
            res["log_tail"] = f.read()[-600:]
    finally:
        cleanup()
        log.close()
        subprocess.run(["rm", "-rf", work])
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()

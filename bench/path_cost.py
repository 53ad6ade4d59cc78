#!/usr/bin/env python3
"""What path monitors cost against ping monitors at the same probe rate (issue 15).

Side by side in one run, interleaved: `pingscope serve` with 100 path monitors to 10-hop
test-network paths at one round a second (9 hops and the destination: 1,000 probes a second),
and `pingscope serve` with 1,000 ping monitors at 1 s to test-network addresses without a path.
CPU is utime+stime from /proc/PID/stat (and the sum of every thread's schedstat as a check;
`proc_cpu` of bench/one_run.py) over a fixed window after a warm-up; the probes sent in the window come from the daemon's own
counters, so the figure is CPU seconds per probe as well as per run.

Network: everything happens in a namespace this script creates (`ip netns add`), holding only
`lo` and the responder's TUN device; the daemons probe only 198.18.0.0/15 there, which the
responder (`pingscope-testnet`, docs/testnet.md) answers and which it refuses to serve from a
namespace with any other interface. Every run is bounded by a timeout; the script ends only the
processes it started, and deletes its namespace.

    sudo python3 bench/path_cost.py --pingscope target/release/pingscope \\
        --testnet target/release/pingscope-testnet --reps 2 --out bench/results/FILE.jsonl

Inside the namespace it re-runs itself with `--one path|ping` for each measured run; that
mode prints one JSON line.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

# proc_cpu: (utime+stime s, schedstat s) of a process and its threads
from one_run import cost_args, metric_sums, proc_cpu, stop, testnet_namespace, wait_serving

PATHS = 100
HOPS = 9  # in front of the destination: 10 TTLs answer per round
PINGS = 1000
PORT = 9931


def path_dest(i):
    return f"198.18.64.{i + 1}"


def hop_addr(k, i):
    # Distinct routers per path, so the figure is the tracer's cost, not a shared hop's pacing.
    return f"198.18.{128 + k}.{i + 1}"


def ping_dest(i):
    return f"198.18.{66 + i // 250}.{1 + i % 250}"


def profiles():
    hosts = {}
    for i in range(PATHS):
        hops = [{"addr": hop_addr(k, i)} for k in range(HOPS)]
        hosts[path_dest(i)] = {"delay": "1ms", "path": {"hops": hops}}
    return {"seed": 1, "default": {"delay": "1ms"}, "hosts": hosts}


def config(kind, work):
    lines = ["defaults:", "  interval: 1s", "  timeout: 1s",
             f"sessions:\n  database: {work}/sessions.db", "targets:"]
    if kind == "path":
        for i in range(PATHS):
            lines += [f"  - host: {path_dest(i)}", "    kind: path", "    path: {max_ttl: 16}"]
    else:
        for i in range(PINGS):
            lines.append(f"  - host: {ping_dest(i)}")
    return "\n".join(lines) + "\n"


def icmp_counters():
    with open("/proc/net/snmp") as f:
        rows = [l.split() for l in f if l.startswith("Icmp:")]
    return dict(zip(rows[0][1:], map(int, rows[1][1:])))


def scrape():
    return metric_sums(PORT, ("pingscope_sent_total", "pingscope_lost_total",
                              "pingscope_path_hop_sent_total", "pingscope_path_hop_lost_total"))


def one(args):
    """One measured run inside the namespace: one JSON line on stdout."""
    work = tempfile.mkdtemp(prefix=f"path-cost-{args.one}-")
    cfg = os.path.join(work, "serve.yml")
    with open(cfg, "w") as f:
        f.write(config(args.one, work))
    log = open(os.path.join(work, "serve.log"), "w")
    proc = subprocess.Popen([args.pingscope, "serve", "--config.file", cfg,
                             "--web.listen-address", f"127.0.0.1:{PORT}", "--log.level", "warn"],
                            stdout=log, stderr=log)
    try:
        wait_serving(scrape, proc, f"{work}/serve.log")
        time.sleep(args.warmup)
        m0, c0, k0, t0 = scrape(), proc_cpu(proc.pid), icmp_counters(), time.monotonic()
        time.sleep(args.window)
        m1, c1, k1, t1 = scrape(), proc_cpu(proc.pid), icmp_counters(), time.monotonic()
    finally:
        stop(proc)
    shutil.rmtree(work, ignore_errors=True)
    secs = t1 - t0
    sent_key = "pingscope_path_hop_sent_total" if args.one == "path" else "pingscope_sent_total"
    lost_key = sent_key.replace("sent", "lost")
    sent = m1.get(sent_key, 0) - m0.get(sent_key, 0)
    lost = m1.get(lost_key, 0) - m0.get(lost_key, 0)
    cpu = c1[0] - c0[0]
    return {
        "config": args.one, "rep": args.rep, "window_s": round(secs, 3),
        "cpu_s": round(cpu, 3), "cpu_schedstat_s": round(c1[1] - c0[1], 3),
        "cpu_pct": round(100 * cpu / secs, 2),
        "probes_sent": sent, "probes_per_s": round(sent / secs, 1),
        "lost_ratio": round(lost / sent, 4) if sent else None,
        "cpu_us_per_probe": round(1e6 * cpu / sent, 2) if sent else None,
        "icmp_out_echos": k1.get("OutEchos", 0) - k0.get("OutEchos", 0),
        "icmp_in_echo_reps": k1.get("InEchoReps", 0) - k0.get("InEchoReps", 0),
        "icmp_in_time_excds": k1.get("InTimeExcds", 0) - k0.get("InTimeExcds", 0),
        "load_before": open("/proc/loadavg").read().split()[:3],
    }


def driver(args):
    out = open(args.out, "a") if args.out else sys.stdout
    with testnet_namespace(args.testnet, profiles(), "path-cost-") as (ns, _work, _responder):
        head = {"date": time.strftime("%FT%TZ", time.gmtime()), "nproc": os.cpu_count(),
                "kernel": os.uname().release, "load": open("/proc/loadavg").read().split()[:3],
                "paths": PATHS, "hops": HOPS + 1, "pings": PINGS,
                "warmup_s": args.warmup, "window_s": args.window, "reps": args.reps}
        print("# " + json.dumps(head), file=out, flush=True)
        limit = args.warmup + args.window + 60
        for rep in range(1, args.reps + 1):
            # Alternate which goes first, so a trend in the machine's load favours neither.
            order = ("path", "ping") if rep % 2 else ("ping", "path")
            for kind in order:
                cmd = ["timeout", "--kill-after=10", str(limit), "ip", "netns", "exec", ns,
                       sys.executable, os.path.abspath(__file__), "--one", kind, "--rep", str(rep),
                       "--pingscope", args.pingscope, "--warmup", str(args.warmup),
                       "--window", str(args.window)]
                print(f"{time.strftime('%T')} {kind} rep {rep}", file=sys.stderr)
                r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
                line = r.stdout.strip() or json.dumps(
                    {"config": kind, "rep": rep, "error": f"exit {r.returncode}"})
                print(line, file=out, flush=True)
    if args.out:
        out.close()
        summarize(args.out)


def summarize(path):
    runs = [json.loads(l) for l in open(path) if l.startswith("{")]
    ok = [r for r in runs if "cpu_s" in r]
    for kind in ("path", "ping"):
        xs = [r for r in ok if r["config"] == kind]
        print(kind, "cpu_s per run:", [r["cpu_s"] for r in xs],
              "probes/s:", [r["probes_per_s"] for r in xs], file=sys.stderr)
    path = sum(r["cpu_s"] for r in ok if r["config"] == "path")
    ping = sum(r["cpu_s"] for r in ok if r["config"] == "ping")
    if ping:
        print(f"path/ping CPU ratio (sums over reps): {path / ping:.3f}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cost_args(ap)
    ap.add_argument("--out")
    ap.add_argument("--one", choices=["path", "ping"])
    ap.add_argument("--rep", type=int, default=0)
    args = ap.parse_args()
    args.pingscope = os.path.abspath(args.pingscope)
    args.testnet = os.path.abspath(args.testnet)
    if args.one:
        print(json.dumps(one(args)), flush=True)
    else:
        driver(args)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What TCP (and UDP) monitors cost against ICMP monitors at the same probe rate (issue 16).

Side by side in one run: `pingscope serve` with 1,000 monitors at interval 1 s to the same
1,000 test-network addresses (1 ms delay), one daemon per kind:

  icmp     echo requests (the default kind)
  tcp      `kind: tcp, port: 80`, an open port of the profile: every probe is a SYN answered by a
           SYN-ACK; the daemon's kernel completes the handshake and the probe's close resets it
  udp      `kind: udp, port: 33434` (mode closed): the responder's ICMP port unreachable is the reply
  udpecho  `kind: udp, port: 7, udp: {mode: echo}`: the responder echoes the datagram

Two ways to put them side by side. By default the kinds run one after the other, interleaved,
the order rotating per repeat, so a trend in the machine's load favours none. With --together
the daemons of every kind run at once and are measured over the same window: load from
elsewhere on a shared machine then hits them alike, at the price of their competing with each
other (and the responder answering every kind at once).

CPU is utime and stime of the daemon from /proc/PID/stat over a fixed window after a warm-up
(all threads; the sum of every thread's schedstat as a check, `proc_cpu` of bench/one_run.py).
The probes sent in the window come from the daemon's own counters (`pingscope_sent_total`), so
the figure is CPU per probe as well as per run, user and system apart; replies are sent minus
`pingscope_lost_total` (a probe counts as lost when its timeout settles it, so a window's
sent and lost are offset by up to one timeout, 1 s here).

Only the daemon's CPU is counted. The responder (`pingscope-testnet`, docs/testnet.md) runs in
the same namespace for the whole bench; its CPU over each window is recorded beside
(`responder_cpu_s`) but is not part of the figure. The kernel's work of *receiving* a reply
(TCP processing the SYN-ACK and sending the ACK, queueing an echo reply or an ICMP error on the
daemon's socket) runs while the responder writes the reply into its TUN device, so it lands on
the responder's account (or on softirq time), for every kind alike; the daemon's account holds
its own system calls, sending included (a TCP probe: socket and its options, epoll
registration, connect, reading the outcome, close with its RST).

Checks, per run: the kernel's counters of the namespace (/proc/net/snmp: `Tcp` ActiveOpens,
OutRsts, RetransSegs; `Udp`; `Icmp`), the TCP sockets to the test network in /proc/net/tcp
(what `ss -tan` lists) at the end of the window and again after the daemon has stopped (none
must be left, in any state: SO_LINGER 0 leaves no TIME_WAIT), the daemon's socket fds at both
ends of the window, and the responder's log lines of the run counted by protocol and action
(each `syn_ack` should meet its `established` and its `rst`).

Network: everything happens in a namespace this script creates (`ip netns add`), holding only
`lo` and the responder's TUN device; the daemons probe only 198.18.0.0/15 there, which the
responder answers and which it refuses to serve from a namespace with any other interface. Every
run is bounded by a timeout; the script ends only the processes it started, by PID, and deletes
its namespace.

    sudo python3 bench/tcp_cost.py --pingscope target/release/pingscope \\
        --testnet target/release/pingscope-testnet --reps 2 --out bench/results/FILE.jsonl

Inside the namespace it re-runs itself with `--one KIND[,KIND...]` for each measured run; that
mode prints one JSON line per kind. `--summarize FILE` re-prints the figures of a results file.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from one_run import (cost_args, cpu_times, metric_sums, proc_cpu, sockets, stop,
                     testnet_namespace, wait_serving)

KINDS = ("icmp", "tcp", "udp", "udpecho")
TCP_PORT = 80
UDP_CLOSED_PORT = 33434
UDP_ECHO_PORT = 7
HTTP_PORT = 9932


def dest(i):
    return f"198.18.{66 + i // 250}.{1 + i % 250}"


def profiles():
    return {"seed": 1, "default": {
        "delay": "1ms",
        "tcp": {"ports": {str(TCP_PORT): "open"}},
        "udp": {"ports": {str(UDP_ECHO_PORT): "echo"}},  # every other port: unreachable
    }}


def config(kind, monitors, work):
    target = {
        "icmp": "",
        "tcp": f", kind: tcp, port: {TCP_PORT}",
        "udp": f", kind: udp, port: {UDP_CLOSED_PORT}",
        "udpecho": f", kind: udp, port: {UDP_ECHO_PORT}, udp: {{mode: echo}}",
    }[kind]
    lines = ["defaults:", "  interval: 1s", "  timeout: 1s",
             f"sessions:\n  database: {work}/sessions.db", "targets:"]
    lines += [f"  - {{host: {dest(i)}{target}}}" for i in range(monitors)]
    return "\n".join(lines) + "\n"


def snmp():
    """The namespace's /proc/net/snmp as {"Tcp.ActiveOpens": n, ...}."""
    out, head = {}, {}
    with open("/proc/net/snmp") as f:
        for line in f:
            proto, _, rest = line.partition(":")
            if proto in head:
                out.update({f"{proto}.{k}": int(v) for k, v in zip(head.pop(proto), rest.split())})
            else:
                head[proto] = rest.split()
    return out


TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING"}


def probe_sockets():
    """TCP sockets to the test network's port by state, from /proc/net/tcp (IPv4: the bench
    probes only 198.18.0.0/15); the sockets `ss -tan dport = :80` lists in the namespace."""
    states = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            cols = line.split()
            rem_ip, rem_port = cols[2].split(":")
            ip = bytes.fromhex(rem_ip)[::-1]  # little-endian on the machines this runs on
            if int(rem_port, 16) == TCP_PORT and ip[0] == 198 and ip[1] in (18, 19):
                st = TCP_STATES.get(int(cols[3], 16), cols[3])
                states[st] = states.get(st, 0) + 1
    return states


def scrape(port):
    return metric_sums(port, ("pingscope_sent_total", "pingscope_lost_total",
                              "pingscope_tcp_refused_total", "pingscope_engine_events_dropped_total"))


def start(kind, port, monitors, pingscope, work):
    """`pingscope serve` for one kind, on its own HTTP port; (process, its folder)."""
    d = os.path.join(work, kind)
    os.mkdir(d)
    cfg = os.path.join(d, "serve.yml")
    with open(cfg, "w") as f:
        f.write(config(kind, monitors, d))
    log = open(os.path.join(d, "serve.log"), "w")
    proc = subprocess.Popen([pingscope, "serve", "--config.file", cfg,
                             "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn"],
                            stdout=log, stderr=log)
    return proc, d


def one(args):
    """One measured run inside the namespace: a daemon per kind in `--one` (one kind, or all of
    them at once with --together), measured over the same window; one JSON line per kind."""
    kinds = args.one.split(",")
    work = tempfile.mkdtemp(prefix="tcp-cost-")
    daemons = {}
    try:
        for n, kind in enumerate(kinds):
            daemons[kind] = start(kind, HTTP_PORT + n, args.monitors, args.pingscope, work)
        ports = {kind: HTTP_PORT + n for n, kind in enumerate(kinds)}
        for kind, (proc, d) in daemons.items():
            wait_serving(lambda k=kind: scrape(ports[k]), proc, f"{d}/serve.log")
        time.sleep(args.warmup)
        resp = args.responder_pid
        pids = {kind: proc.pid for kind, (proc, _) in daemons.items()}
        fd0 = {k: sockets(p) for k, p in pids.items()}
        m0 = {k: scrape(ports[k]) for k in kinds}
        k0, t0 = snmp(), time.monotonic()
        c0 = {k: (proc_cpu(p), cpu_times(p)) for k, p in pids.items()}
        r0 = resp and proc_cpu(resp)
        time.sleep(args.window)
        c1 = {k: (proc_cpu(p), cpu_times(p)) for k, p in pids.items()}
        r1 = resp and proc_cpu(resp)
        k1, t1 = snmp(), time.monotonic()
        m1 = {k: scrape(ports[k]) for k in kinds}
        fd1, held = {k: sockets(p) for k, p in pids.items()}, probe_sockets()
    finally:
        for proc, _ in daemons.values():
            stop(proc)
    time.sleep(1)  # the last probes' resets, and anything the kernel still holds, settle
    left = probe_sockets()
    tails = {}
    for kind, (proc, d) in daemons.items():
        if proc.returncode != 0:
            with open(os.path.join(d, "serve.log"), errors="replace") as f:
                tails[kind] = (proc.returncode, f.read()[-600:])
    shutil.rmtree(work, ignore_errors=True)
    secs = t1 - t0
    kernel = {k: k1[k] - k0.get(k, 0) for k in (
        "Icmp.OutEchos", "Icmp.InEchoReps", "Icmp.InDestUnreachs", "Tcp.ActiveOpens",
        "Tcp.AttemptFails", "Tcp.EstabResets", "Tcp.OutRsts", "Tcp.RetransSegs", "Tcp.InErrs",
        "Udp.OutDatagrams", "Udp.InDatagrams", "Udp.RcvbufErrors", "Udp.InErrors") if k in k1}
    load = open("/proc/loadavg").read().split()[:3]
    out = []
    for kind in kinds:
        def inc(key):
            return m1[kind].get(key, 0) - m0[kind].get(key, 0)

        sent, lost = inc("pingscope_sent_total"), inc("pingscope_lost_total")
        (cpu0, _), (u0, s0) = c0[kind]
        (cpu1, sched1), (u1, s1) = c1[kind]
        cpu, user, system = cpu1 - cpu0, u1 - u0, s1 - s0
        res = {
            "config": kind, "mode": "together" if len(kinds) > 1 else "alternate",
            "rep": args.rep, "monitors": args.monitors, "window_s": round(secs, 3),
            "cpu_s": round(cpu, 3), "user_s": round(user, 3), "system_s": round(system, 3),
            "cpu_schedstat_s": round(sched1 - c0[kind][0][1], 3),
            "cpu_pct": round(100 * cpu / secs, 2),
            "probes_sent": sent, "probes_per_s": round(sent / secs, 1),
            "replies": sent - lost, "lost_ratio": round(lost / sent, 5) if sent else None,
            "tcp_refused": inc("pingscope_tcp_refused_total"),
            "events_dropped": inc("pingscope_engine_events_dropped_total"),
            "cpu_us_per_probe": round(1e6 * cpu / sent, 2) if sent else None,
            "user_us_per_probe": round(1e6 * user / sent, 2) if sent else None,
            "system_us_per_probe": round(1e6 * system / sent, 2) if sent else None,
            # The namespace's: shared by the daemons of a --together run.
            "kernel": kernel,
            "socket_fds_start": fd0[kind], "socket_fds_end": fd1[kind],
            "load": load,
        }
        if kind == "tcp":
            res["tcp_sockets_end_of_window"] = held
            res["tcp_sockets_after_stop"] = left
        if resp:
            res["responder_cpu_s"] = round(r1[0] - r0[0], 3)
        if kind in tails:
            res["exit"], res["log_tail"] = tails[kind]
        out.append(res)
    return out


ACTION = re.compile(r'"proto":"(\w+)".*"action":"(\w+)"')


def log_actions(path):
    """Counts of the responder's log lines, by "proto action"; then empties the log (the
    responder appends, O_APPEND, so it writes on at the new end), so a long bench does not
    fill the disk: the responder stops at a failed write."""
    counts = {}
    with open(path, "rb") as f:
        data = f.read()
    os.truncate(path, 0)
    for line in data.decode(errors="replace").splitlines():
        m = ACTION.search(line)
        if m:
            key = f"{m.group(1)} {m.group(2)}"
            counts[key] = counts.get(key, 0) + 1
    return counts


def driver(args):
    out = open(args.out, "a") if args.out else sys.stdout
    with testnet_namespace(args.testnet, profiles(), "tcp-cost-") as (ns, work, responder):
        rlog = os.path.join(work, "responder.jsonl")
        head = {"date": time.strftime("%FT%TZ", time.gmtime()), "nproc": os.cpu_count(),
                "kernel": os.uname().release, "load": open("/proc/loadavg").read().split()[:3],
                "monitors": args.monitors, "kinds": args.kinds, "tcp_port": TCP_PORT,
                "delay": "1ms", "warmup_s": args.warmup, "window_s": args.window,
                "reps": args.reps, "mode": "together" if args.together else "alternate"}
        print("# " + json.dumps(head), file=out, flush=True)
        limit = args.warmup + args.window + 60 + (20 if args.together else 0)
        for rep in range(1, args.reps + 1):
            if args.together:
                runs = [",".join(args.kinds)]
            else:
                # Rotate which goes first, so a trend in the machine's load favours none.
                k = (rep - 1) % len(args.kinds)
                runs = args.kinds[k:] + args.kinds[:k]
            for kinds in runs:
                cmd = ["timeout", "--kill-after=10", str(limit), "ip", "netns", "exec", ns,
                       sys.executable, os.path.abspath(__file__), "--one", kinds,
                       "--rep", str(rep), "--pingscope", args.pingscope,
                       "--warmup", str(args.warmup), "--window", str(args.window),
                       "--monitors", str(args.monitors), "--responder-pid", str(responder.pid)]
                print(f"{time.strftime('%T')} {kinds} rep {rep}", file=sys.stderr)
                r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
                lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
                if not lines:
                    lines = [{"config": kinds, "rep": rep, "error": f"exit {r.returncode}"}]
                # The whole run's packets, start-up and shut-down included (every daemon's,
                # with --together).
                actions = log_actions(rlog)
                for res in lines:
                    res["responder_log"] = actions
                    print(json.dumps(res), file=out, flush=True)
                if responder.poll() is not None:
                    with open(os.path.join(work, "responder.stderr"), errors="replace") as f:
                        why = f.read()[-600:]
                    print(json.dumps({"error": "pingscope-testnet exited during the run",
                                      "exit": responder.returncode, "stderr": why}),
                          file=out, flush=True)
                    raise SystemExit(f"pingscope-testnet exited ({responder.returncode}): {why}")
    if args.out:
        out.close()
        summarize(args.out)


def summarize(path):
    """Per kind: CPU per window, µs per probe (user/system), loss; ratios to ICMP per repeat,
    each against the ICMP run of the same repeat and mode."""
    runs = [json.loads(l) for l in open(path) if l.startswith("{")]
    ok = [r for r in runs if "cpu_s" in r and r.get("probes_sent")]
    for mode in ("alternate", "together"):
        these = [r for r in ok if r.get("mode", "alternate") == mode]
        icmp = {r["rep"]: r for r in these if r["config"] == "icmp"}
        for kind in KINDS:
            xs = [r for r in these if r["config"] == kind]
            if not xs:
                continue
            print(f"{mode} {kind}: cpu_s {[r['cpu_s'] for r in xs]}, µs/probe user+system "
                  f"{[(r['user_us_per_probe'], r['system_us_per_probe']) for r in xs]}, "
                  f"probes/s {[r['probes_per_s'] for r in xs]}, "
                  f"lost {[r['lost_ratio'] for r in xs]}", file=sys.stderr)
            pairs = [(r, icmp[r["rep"]]) for r in xs if r["rep"] in icmp]
            if kind == "icmp" or not pairs:
                continue
            ratios = [round(r["cpu_us_per_probe"] / i["cpu_us_per_probe"], 2) for r, i in pairs]
            per_probe = sum(r["cpu_s"] for r, _ in pairs) / sum(r["probes_sent"] for r, _ in pairs)
            icmp_per_probe = (sum(i["cpu_s"] for _, i in pairs)
                              / sum(i["probes_sent"] for _, i in pairs))
            print(f"  {kind}/icmp CPU per probe: per repeat {ratios}, over the run "
                  f"{per_probe / icmp_per_probe:.3f}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    cost_args(ap)
    ap.add_argument("--monitors", type=int, default=1000)
    ap.add_argument("--kinds", default="icmp,tcp,udp",
                    help=f"comma-separated, of {','.join(KINDS)}")
    ap.add_argument("--together", action="store_true",
                    help="one daemon per kind, all running and measured over the same window")
    ap.add_argument("--out")
    ap.add_argument("--one", help="inside the namespace: the kinds of one measured run")
    ap.add_argument("--rep", type=int, default=0)
    ap.add_argument("--responder-pid", type=int, default=0)
    ap.add_argument("--summarize", metavar="FILE", help="only re-print the figures of FILE")
    args = ap.parse_args()
    if args.summarize:
        summarize(args.summarize)
        return
    args.kinds = args.kinds.split(",")
    if not 1 <= args.monitors <= 1000 or any(k not in KINDS for k in args.kinds):
        raise SystemExit("--monitors is 1..1000; --kinds from " + ",".join(KINDS))
    args.pingscope = os.path.abspath(args.pingscope)
    args.testnet = os.path.abspath(args.testnet)
    if args.one:
        for res in one(args):
            print(json.dumps(res), flush=True)
    else:
        driver(args)


if __name__ == "__main__":
    main()

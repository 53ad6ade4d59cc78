#!/usr/bin/env python3
"""The tables of a bench/run.sh results file (JSON lines, `#` lines say how it was made):
medians per (tool, N), exact RTT figures, scrapes and series, and pingscope's ratios against
each peer from that same file, checked against the figures of issue 17. Markdown on stdout.
bench/README.md says what every column means and how it is measured.

    python3 bench/summarize.py bench/results/FILE.jsonl
"""

import json
import math
import statistics
import sys
from collections import defaultdict

ORDER = {"pingscope": 0, "smokeping": 1, "blackbox": 2, "fping": 3}


def load(path):
    runs = defaultdict(list)
    errors, startups, header = [], [], []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                header.append(line[1:].strip())
                continue
            if not line.strip():
                continue
            r = json.loads(line)
            if "error" in r:
                errors.append(r)
            elif r.get("tool") == "startup":
                startups.append(r)
            else:
                runs[(r["tool"], r["n"])].append(r)
    return runs, errors, startups, header


def get(r, path):
    """r["a"]["b"]… for path "a.b…", None when any step is missing."""
    for k in path.split("."):
        if not isinstance(r, dict) or r.get(k) is None:
            return None
        r = r[k]
    return r


def med(rs, path, scale=1.0):
    vals = [get(r, path) * scale for r in rs if get(r, path) is not None]
    return statistics.median(vals) if vals else None


def nearest_rank(vals, q):
    s = sorted(vals)
    return s[max(0, math.ceil(q * len(s)) - 1)] if s else None


def pooled(rs, path):
    """Every value of a per-run list (per-probe RTTs, scrapes) over all runs."""
    out = []
    for r in rs:
        out.extend(get(r, path) or [])
    return out


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return f"{v:,.{nd}f}"


def us(v):
    return fmt(v * 1e6 if v is not None else None)


def bucket(b, scale=1e6, unit="µs"):
    """A quantile's bucket as bounds, never a value inside it."""
    if not b:
        return "–"
    hi = "+Inf" if b["le"] is None else f"{b['le'] * scale:,.4g}"
    if not b["gt"]:
        return f"≤ {hi} {unit}"
    return f"{b['gt'] * scale:,.4g}–{hi} {unit}"


def buckets(rs, path, scale=1e6, unit="µs"):
    seen = []
    for r in rs:
        b = bucket(get(r, path), scale, unit)
        if b not in seen:
            seen.append(b)
    return " / ".join(seen) if seen else "–"


def table(cols, rows):
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


def worst_miss(rs):
    """The own-count check's worst run: replies / echo requests the kernel saw that the tool
    did not count (negative: counted more than the kernel saw); * where the kernel's counters
    still moved during the check's scrape."""
    cs = [r["own_count_check"] for r in rs if r.get("own_count_check")]
    if not cs:
        return "–"
    recv = max((c["missed_recv"] for c in cs), key=abs)
    sent = max((c["missed_sent"] for c in cs), key=abs)
    still = "" if all(c["kernel_still"] for c in cs) else " *"
    return f"{fmt(recv, 0)} / {fmt(sent, 0)}{still}"


def scrape_ms(rs, key, q):
    vals = [s["s"] for s in pooled(rs, key)]
    return fmt(nearest_rank(vals, q) * 1e3 if vals else None, 2)


def main():
    path = sys.argv[1]
    runs, errors, startups, header = load(path)
    print(f"Results: `{path}`  ")
    for h in header:
        print(h, " ")
    print()
    keys = sorted(runs, key=lambda k: (k[1], ORDER[k[0]]))

    print("### Cost (medians over runs)\n")
    rows = []
    for tool, n in keys:
        rs = runs[(tool, n)]
        for r in rs:
            r["cpu_pct"] = r["cpu_s"] / r["elapsed"] * 100
            r["sent_pct"] = r["kernel_in_echos"] / r["expected"] * 100
        rows.append([tool, f"{n:,}", str(len(rs)), fmt(med(rs, "cpu_per_ping_us")),
                     fmt(med(rs, "user_per_ping_us")), fmt(med(rs, "system_per_ping_us")),
                     fmt(med(rs, "cpu_pct")), fmt(med(rs, "sent_pct"), 2),
                     fmt(med(rs, "rss_steady_kib", 1 / 1024)),
                     fmt(med(rs, "rss_peak_kib", 1 / 1024)), fmt(med(rs, "threads"), 0),
                     fmt(med(rs, "sockets"), 0), fmt(med(rs, "socket_drops"), 0)])
    table(["tool", "N", "runs", "CPU µs/ping", "user µs/ping", "system µs/ping", "CPU %",
           "sent/expected %", "RSS MiB", "peak MiB", "threads", "sockets", "socket drops"],
          rows)

    print("### Scrapes and series\n")
    rows = []
    for tool, n in keys:
        rs = runs[(tool, n)]
        if tool in ("pingscope", "smokeping"):
            wire = [s["wire_bytes"] for s in pooled(rs, "window_scrapes") + pooled(rs, "burst")]
            body = [s["body_bytes"] for s in pooled(rs, "window_scrapes") + pooled(rs, "burst")]
            proto = [s["wire_bytes"] for s in pooled(rs, "proto_burst")]
            rows.append([
                tool, f"{n:,}", fmt(med(rs, "series.series_per_target")),
                fmt(med(rs, "series.probe_host_series"), 0),
                fmt(med(rs, "series.global_series"), 0),
                fmt(statistics.median(body) / 1024 if body else None, 0),
                fmt(statistics.median(wire) / 1024 if wire else None, 0),
                f"{scrape_ms(rs, 'window_scrapes', 0.5)} ({len(pooled(rs, 'window_scrapes'))})",
                f"{scrape_ms(rs, 'burst', 0.5)} / {scrape_ms(rs, 'burst', 1.0)} "
                f"({len(pooled(rs, 'burst'))})",
                fmt(statistics.median(proto) / 1024 if proto else None, 0),
                scrape_ms(rs, "proto_burst", 0.5)])
        elif tool == "blackbox":
            rows.append([tool, f"{n:,}", "–", "–", "–", "–", "–",
                         f"/probe {fmt(med(rs, 'probe_scrape.p50_s', 1e3), 2)}", "–", "–",
                         "–"])
    table(["tool", "N", "series/target", "series of 127.0.0.1", "other series", "text KiB",
           "gzip KiB on the wire", "window scrape p50 ms (scrapes)",
           "burst p50 / max ms (scrapes)", "protobuf gzip KiB", "protobuf p50 ms"], rows)

    print("### RTT (exact figures only) and own counts\n")
    rows = []
    for tool, n in keys:
        rs = runs[(tool, n)]
        probe = pooled(rs, "probe_rtt.rtt_us")
        floor = pooled(rs, "floor.rtt_us")
        rows.append([
            tool, f"{n:,}", str(len(probe)) if probe else "–",
            fmt(nearest_rank(probe, 0.5)), fmt(nearest_rank(probe, 0.99)),
            fmt(max(probe) if probe else None),
            us(med(rs, "rtt.probe_host.mean_s")), us(med(rs, "rtt.all.mean_s")),
            buckets(rs, "rtt.all.p50_bucket"), buckets(rs, "rtt.all.p99_bucket"),
            f"{fmt(nearest_rank(floor, 0.5))} / {fmt(nearest_rank(floor, 0.99))}",
            worst_miss(rs)])
    table(["tool", "N", "per-probe RTTs of 127.0.0.1", "p50 µs", "p99 µs", "max µs",
           "mean µs, 127.0.0.1 (tool's counters)", "mean µs, all targets",
           "p50 bucket, all", "p99 bucket, all", "floor p50 / p99 µs",
           "own count missed recv / sent"], rows)

    rows = []
    for tool, n in keys:
        rs = runs[(tool, n)]
        if tool == "pingscope":
            rows.append([f"{n:,}", fmt(med(rs, "lag.mean_s", 1e3), 3),
                         fmt(med(rs, "lag.over_10ms_ratio", 100), 3),
                         buckets(rs, "lag.p50_bucket", 1e3, "ms"),
                         buckets(rs, "lag.p99_bucket", 1e3, "ms")])
    if rows:
        print("pingscope's scheduler lag over the window:\n")
        table(["N", "mean ms", "> 10 ms %", "p50 bucket", "p99 bucket"], rows)

    # A wall clock that moved against the monotonic clock in a window: the VM was paused (its
    # monotonic clock stood still) and its wall clock set forward on resume. The window is timed
    # on the monotonic clock; runs before clock_step_s was recorded timed it on the wall clock.
    stepped = [(t, n, r) for (t, n), rs in runs.items() for r in rs
               if abs(r.get("clock_step_s") or 0) > 0.05]
    if stepped:
        print("Wall clock stepped in a window (the figures stand, timed on the monotonic "
              "clock):\n")
        for t, n, r in stepped:
            print(f"- {t} N={n:,} rep {r.get('rep')}: {r['clock_step_s']:+.2f} s")
        print()

    if errors:
        print("Failed runs:\n")
        for e in errors:
            print(f"- {e['tool']} N={e.get('n')} rep {e.get('rep')}: {e['error']}")
        print()

    def m(tool, n, key, scale=1.0):
        return med(runs.get((tool, n), []), key, scale)

    def ratio(a, b):
        return a / b if a is not None and b else None

    print("### Figures to reach (issue 17)\n")
    print("| figure | measured | target | met |")
    print("|---|---|---|---|")

    def check(name, value, target, ok=None, nd=2):
        met = "–" if value is None or ok is None else ("yes" if ok(value) else "**no**")
        print(f"| {name} | {fmt(value, nd)} | {target} | {met} |")

    for n in (1000, 5000):
        check(f"CPU/ping (user + system) N={n:,} vs fping",
              ratio(m("pingscope", n, "cpu_per_ping_us"), m("fping", n, "cpu_per_ping_us")),
              "≤ 1.15×", lambda v: v <= 1.15)
        check(f"user CPU/ping N={n:,} vs fping",
              ratio(m("pingscope", n, "user_per_ping_us"), m("fping", n, "user_per_ping_us")),
              "≤ 2×", lambda v: v <= 2)
        split = (m("pingscope", n, "perf_split.user_per_ping_us"),
                 m("fping", n, "perf_split.user_per_ping_us"))
        if None not in split:
            check(f"user CPU/ping N={n:,} vs fping, split by perf samples (second window)",
                  ratio(*split), "≤ 2×", lambda v: v <= 2)
            check(f"of which µs/ping, pingscope / fping (perf samples a run, medians: "
                  f"{m('pingscope', n, 'perf_split.samples_user') or 0:.0f} + "
                  f"{m('pingscope', n, 'perf_split.samples_kernel') or 0:.0f} / "
                  f"{m('fping', n, 'perf_split.samples_user') or 0:.0f} + "
                  f"{m('fping', n, 'perf_split.samples_kernel') or 0:.0f})",
                  f"{split[0]:.1f} / {split[1]:.1f}", "(context)")
    check("CPU/ping N=10,000 vs smokeping_prober",
          ratio(m("pingscope", 10000, "cpu_per_ping_us"),
                m("smokeping", 10000, "cpu_per_ping_us")), "≤ 0.12×", lambda v: v <= 0.12)
    check("RSS N=10,000 vs smokeping_prober",
          ratio(m("pingscope", 10000, "rss_steady_kib"), m("smokeping", 10000, "rss_steady_kib")),
          "≤ 0.15×", lambda v: v <= 0.15)
    ps = [r for (t, _), rs in runs.items() if t == "pingscope" for r in rs
          if r.get("buckets", "default") == "default" and get(r, "series.series_per_target")]
    check("series per target, text scrape (pingscope, default config)",
          max((r["series"]["series_per_target"] for r in ps), default=None), "≤ 32",
          lambda v: v <= 32, 1)
    p_lat = [s["s"] for s in pooled(runs.get(("pingscope", 10000), []), "window_scrapes")
             + pooled(runs.get(("pingscope", 10000), []), "burst")]
    s_lat = [s["s"] for s in pooled(runs.get(("smokeping", 10000), []), "window_scrapes")
             + pooled(runs.get(("smokeping", 10000), []), "burst")]
    check("gzip scrape p50 N=10,000 vs smokeping_prober",
          ratio(nearest_rank(p_lat, 0.5), nearest_rank(s_lat, 0.5)), "≤ 0.4×",
          lambda v: v <= 0.4)
    p_b = [s["wire_bytes"] for s in pooled(runs.get(("pingscope", 10000), []), "burst")]
    s_b = [s["wire_bytes"] for s in pooled(runs.get(("smokeping", 10000), []), "burst")]
    check("gzip bytes on the wire N=10,000 vs smokeping_prober",
          ratio(statistics.median(p_b) if p_b else None,
                statistics.median(s_b) if s_b else None), "≤ 1.5×", lambda v: v <= 1.5)
    big = max((n for (t, n) in runs if t == "pingscope"), default=None)
    if big and big > 10000:
        rs = runs[("pingscope", big)]
        check(f"N={big:,}: echo requests / expected %", m("pingscope", big, "sent_pct"),
              "100 %", lambda v: v >= 99.9)
        miss = [abs(r["own_count_check"]["missed_recv"]) + abs(r["own_count_check"]["missed_sent"])
                for r in rs if r.get("own_count_check")]
        check(f"N={big:,}: replies and requests the tool did not count (worst run)",
              max(miss) if miss else None, "0", lambda v: v == 0, 0)
        # p99 < 10 ms holds exactly when under 1 % of sends are more than 10 ms late.
        check(f"N={big:,}: sends > 10 ms late, % (p99 < 10 ms ⇔ < 1 %)",
              m("pingscope", big, "lag.over_10ms_ratio", 100), "< 1 %", lambda v: v < 1, 3)
        check(f"N={big:,}: CPU, % of one core", m("pingscope", big, "cpu_pct"), "≤ 100 %",
              lambda v: v <= 100, 1)
        check(f"N={big:,}: RSS MiB", m("pingscope", big, "rss_steady_kib", 1 / 1024),
              "≤ 300 MiB", lambda v: v <= 300, 1)
        lat = [s["s"] for s in pooled(rs, "window_scrapes") + pooled(rs, "burst")]
        check(f"N={big:,}: slowest gzip scrape, s", max(lat) if lat else None, "< 2 s",
              lambda v: v < 2)
    for n in sorted(n for (t, n) in runs if t == "pingscope"):
        rs = runs[("pingscope", n)]
        if any(r.get("own_count_check") for r in rs):
            print(f"| own count missed recv / sent, N={n:,} (worst run) | {worst_miss(rs)} "
                  f"| 0 / 0 | {'yes' if worst_miss(rs) == '0 / 0' else '**no**'} |")
    if startups:
        check(f"startup: HTTP ready ms (median of {len(startups)})",
              med(startups, "http_ready_s", 1e3), "≤ 50 ms", lambda v: v <= 50, 1)
        check("startup: first reply ms", med(startups, "first_reply_s", 1e3), "≤ 20 ms",
              lambda v: v <= 20, 1)
        check("startup: idle RSS MiB (1 target, 3 s after start)",
              med(startups, "idle_rss_kib", 1 / 1024), "< 10 MiB", lambda v: v < 10)
        if all("idle_rss_anon_kib" in r for r in startups):
            check("startup: of which anonymous (heap, stacks) / file-backed (code) MiB",
                  f"{med(startups, 'idle_rss_anon_kib', 1 / 1024):.2f} / "
                  f"{med(startups, 'idle_rss_file_kib', 1 / 1024):.2f}", "(context)")
    check("idle RSS MiB (N=1, steady over the window)",
          m("pingscope", 1, "rss_steady_kib", 1 / 1024), "< 10 MiB", lambda v: v < 10)
    for n in (1, 1000):
        rs = runs.get(("pingscope", n), [])
        probe = pooled(rs, "probe_rtt.rtt_us")
        floor = pooled(rs, "floor.rtt_us")
        check(f"per-probe RTT p50 / kernel floor p50, N={n:,}",
              ratio(nearest_rank(probe, 0.5), nearest_rank(floor, 0.5)), "(context)")


if __name__ == "__main__":
    main()

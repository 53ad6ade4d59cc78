#!/bin/bash
# Two pingscope builds side by side: for each N, REPS rounds of one run of each build, in
# alternating order (A B, then B A, ...), each in its own private network namespace
# (bench/one_run.py: loopback targets only). Appends one JSON line per run to OUT, with the
# build's label and binary; a summary per build and N goes to stderr.
# SPLIT=SECONDS adds a second window whose user/kernel split perf samples (one_run.py).
# Usage: sudo OUT=bench/results/ab-DATE-WHAT.jsonl [SIZES="1000 10000"] [REPS=2] [WINDOW=30] \
#            [SPLIT=0] bench/ab.sh LABEL_A BINARY_A LABEL_B BINARY_B
set -eu
[[ $# -eq 4 ]] || { echo "usage: OUT=FILE $0 LABEL_A BINARY_A LABEL_B BINARY_B" >&2; exit 64; }
: "${OUT:?set OUT to the result file}"
SIZES=${SIZES:-1000 10000} REPS=${REPS:-2} WINDOW=${WINDOW:-30} SPLIT=${SPLIT:-0}
here=$(dirname "$0")
labels=("$1" "$3") bins=("$(realpath "$2")" "$(realpath "$4")")
for n in $SIZES; do
    for ((rep = 1; rep <= REPS; rep++)); do
        order=(0 1)
        ((rep % 2 == 0)) && order=(1 0)
        for i in "${order[@]}"; do
            line=$(timeout 600 unshare --net python3 "$here/one_run.py" pingscope "$n" --rep "$rep" \
                --window "$WINDOW" --split-window "$SPLIT" --pingscope "${bins[$i]}")
            python3 -c 'import json, sys
r = json.loads(sys.argv[1]); r["build"] = sys.argv[2]; r["binary"] = sys.argv[3]
print(json.dumps(r))' "$line" "${labels[$i]}" "${bins[$i]}" >> "$OUT"
        done
    done
done
python3 - "$OUT" >&2 <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = sorted({(r["n"], r["build"]) for r in rows if "build" in r})
for n, b in keys:
    rs = [r for r in rows if r.get("build") == b and r["n"] == n]
    f = lambda k: statistics.median(r[k] for r in rs if r.get(k) is not None)
    sched = statistics.median(r["cpu_schedstat_s"] / max(r["kernel_in_echos"], 1) * 1e6
                              for r in rs)
    print(f"N={n} {b}: runs={len(rs)} CPU µs/ping {f('cpu_per_ping_us'):.1f} "
          f"(user {f('user_per_ping_us'):.1f}, system {f('system_per_ping_us'):.1f}; "
          f"schedstat {sched:.1f}), RSS {f('rss_steady_kib') / 1024:.1f} MiB")
    split = [r["perf_split"] for r in rs if r.get("perf_split")]
    if split:
        g = lambda k: statistics.median(s[k] for s in split)
        print(f"    perf-sampled split (second window): user {g('user_per_ping_us'):.1f}, "
              f"system {g('system_per_ping_us'):.1f} of {g('cpu_per_ping_us'):.1f} µs/ping")
PY

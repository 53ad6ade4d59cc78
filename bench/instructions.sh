#!/bin/bash
# User-space work per echo reply of `pingscope serve` monitoring N loopback targets at 1 s, or of
# fping doing the same as bench/one_run.py runs it (BINARY named fping), in a network namespace
# of its own (nothing leaves it): the process runs under callgrind with its
# cache simulation, instrumentation off until a warm-up has passed (WARMUP seconds, 8 unless
# set), then on for SECS
# seconds, against the kernel's InEchoReps over the same window. Counts, not times (instructions,
# simulated first-level data-cache misses and last-level misses), so two builds compare on a
# shared, noisy machine where CPU seconds do not. Valgrind slows the daemon many times over:
# keep N at a few hundred (at 500 it keeps up on this 2-core VM), and read `replies` against
# N * SECS to see that it did. One JSON line, then the functions with the most instructions
# and the most simulated D1 misses in the window (self, not inclusive), to stderr.
# A young daemon still grows its histograms' native buckets and its memory of settled probes;
# WARMUP=120 or more measures one past that.
# KEEP=FILE keeps the raw callgrind profile there (for `callgrind_annotate --tree=caller FILE`).
# Usage: sudo [KEEP=FILE] [WARMUP=SECONDS] bench/instructions.sh BINARY N SECONDS [LABEL]   (needs valgrind)
set -eu
if [[ ${1-} != --inside ]]; then
    [[ $# -ge 3 ]] || { echo "usage: $0 BINARY N SECONDS [LABEL]" >&2; exit 64; }
    exec timeout $((300 + ${WARMUP:-8})) unshare --net "$0" --inside "$(realpath "$1")" "$2" "$3" "${4-}"
fi
BIN=$2 N=$3 SECS=$4 LABEL=$5
here=$(dirname "$0")
# shellcheck source=bench/loopback_targets.sh
. "$here/loopback_targets.sh"
WORK=$(mktemp -d)
loopback_targets "$WORK" "$N"
if [[ $(basename "$BIN") == fping ]]; then
    sed -n 's/^  - host: //p' "$WORK/cfg.yml" > "$WORK/targets.txt"
    gap=$(python3 -c "print(f'{max(0.01, min(10.0, 1000.0 / $N * 0.5)):.3f}')")
    # A copy: valgrind will not run the packaged one, which has file capabilities (root needs none).
    cp "$BIN" "$WORK/fping"
    cmd=("$WORK/fping" -l -p 1000 -t 1000 -i "$gap" -Q 5 -f "$WORK/targets.txt")
else
    cmd=("$BIN" serve --config.file "$WORK/cfg.yml" --web.listen-address 127.0.0.1:9901
        --log.level warn)
fi
valgrind --tool=callgrind --cache-sim=yes --instr-atstart=no \
    --callgrind-out-file="$WORK/cg.out" "${cmd[@]}" > "$WORK/log" 2>&1 &
pid=$!
trap 'kill -INT $pid 2> /dev/null; wait $pid 2> /dev/null; rm -rf "$WORK"' EXIT
sleep "${WARMUP:-8}"
kill -0 "$pid" 2> /dev/null || { echo "it did not start:" >&2; tail -5 "$WORK/log" >&2; exit 1; }
in_echo_reps() {
    awk '/^Icmp:/ { if (!h) { for (i = 2; i <= NF; i++) col[$i] = i; h = 1 } else print $col["InEchoReps"] }' /proc/net/snmp
}
callgrind_control -i on "$pid" > /dev/null
before=$(in_echo_reps)
sleep "$SECS"
callgrind_control -i off "$pid" > /dev/null
after=$(in_echo_reps)
kill -INT "$pid"
wait "$pid" 2> /dev/null || true
trap 'rm -rf "$WORK"' EXIT
[[ -s "$WORK/cg.out" ]] || { echo "callgrind wrote nothing:" >&2; tail -5 "$WORK/log" >&2; exit 1; }
[[ -n "${KEEP:-}" ]] && cp "$WORK/cg.out" "$KEEP"
callgrind_annotate --auto=no --show=Ir,D1mr,D1mw,DLmr,DLmw "$WORK/cg.out" > "$WORK/annotate.txt" 2> /dev/null
python3 - "$LABEL" "$BIN" "$N" "$SECS" "$((after - before))" "$WORK/annotate.txt" "${WARMUP:-8}" <<'PY'
import json, re, sys
label, binary, n, secs, replies, path, warmup = sys.argv[1:]
replies = int(replies)
lines = open(path).read().splitlines()
number = lambda s: int(s.replace(",", ""))
totals = next(l for l in lines if "PROGRAM TOTALS" in l)
ir, d1mr, d1mw, dlmr, dlmw = (number(x) for x in re.findall(r"[\d,]+(?= )", totals)[:5])
per = lambda v: round(v / max(replies, 1), 1)
print(json.dumps({"tool": "instructions", "label": label, "binary": binary, "n": int(n),
                  "warmup": float(warmup), "window": float(secs), "replies": replies, "instructions": ir,
                  "d1_misses": d1mr + d1mw, "ll_misses": dlmr + dlmw,
                  "instructions_per_reply": per(ir), "d1_misses_per_reply": per(d1mr + d1mw),
                  "ll_misses_per_reply": per(dlmr + dlmw)}))
rows = {}
for l in lines:
    m = re.match(r"\s*([\d,]+) \([^)]*\)\s+([\d,]+) \([^)]*\)\s+([\d,]+) \([^)]*\)\s+"
                 r"([\d,]+) \([^)]*\)\s+([\d,]+) \([^)]*\)\s+(.*)", l)
    if m and "PROGRAM TOTALS" not in l:
        v = [number(m.group(i)) for i in range(1, 6)]
        # "file:function [object]": a function inlined from several files is one row.
        name = m.group(6).split(":", 1)[-1].rsplit(" [", 1)[0]
        ir0, d10 = rows.get(name, (0, 0))
        rows[name] = (ir0 + v[0], d10 + v[1] + v[2])
rows = [(ir, d1, name[-110:]) for name, (ir, d1) in rows.items()]
for title, key in (("instructions", 0), ("simulated D1 misses", 1)):
    print(f"# top functions by {title} per reply (window of {secs} s, {replies} replies)",
          file=sys.stderr)
    for r in sorted(rows, key=lambda r: -r[key])[:15]:
        print(f"{r[key] / max(replies, 1):9.1f}  {r[2]}", file=sys.stderr)
PY

#!/usr/bin/env bash
# Side-by-side benchmark of pingscope, smokeping_prober, blackbox_exporter (+ Prometheus) and
# fping on N loopback targets at 1 s. See bench/README.md. Installs nothing: it says what is
# missing and stops. Every run happens in its own network namespace (unshare --net), so all
# packets stay on that namespace's loopback and its ICMP counters belong to the tool under test.
#
#   sudo bench/run.sh                           # full suite, about an hour on 2 cores
#   REPS=1 SIZES="100 1000" BIG= sudo bench/run.sh   # quicker
#   OUT=bench/results/suite-$(date -u +%F).jsonl sudo bench/run.sh   # a run to publish
#
# Output: one JSON line per run in $OUT (default bench/out/results-<UTC time>.jsonl), headed by
# `#` lines that say how it was made, and the tables bench/summarize.py prints from it.
set -euo pipefail

cd "$(dirname "$0")/.."

REPS=${REPS:-3}
SIZES=${SIZES:-"100 1000 5000 10000"}
BIG=${BIG-100000}          # pingscope alone; empty (BIG=) to skip
TOOLS=${TOOLS:-"pingscope smokeping blackbox fping"}
WARMUP=${WARMUP:-10}       # seconds before the window
WINDOW=${WINDOW:-30}       # measured seconds
SCRAPE_EVERY=${SCRAPE_EVERY:-15}    # a gzip text scrape this often inside the window
PROBES=${PROBES:-20}       # per-probe RTTs of 127.0.0.1 after the window (pingscope, fping)
SCRAPES=${SCRAPES:-30}     # scrapes of the burst after the window, at most ...
SCRAPE_BUDGET=${SCRAPE_BUDGET:-8}   # ... and at most this many seconds
BUCKETS=${BUCKETS:-default}         # RTT buckets: each tool's default, or "shared"
RUN_LIMIT=${RUN_LIMIT:-600}         # hard bound on one run, seconds
# A second window of this many seconds for pingscope and fping up to N = 10,000, whose
# user/kernel split perf samples (see one_run.py, perf_split); 0 for none.
SPLIT=${SPLIT:-20}

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1 (apt-get install $2)"); }
need prometheus-smokeping-prober prometheus-smokeping-prober
need prometheus-blackbox-exporter prometheus-blackbox-exporter
need prometheus prometheus
need fping fping
need ping iputils-ping
need unshare util-linux
need ip iproute2
need nft nftables
need git git
need python3 python3
[[ $SPLIT == 0 ]] || need perf linux-perf
need cargo "rustup (https://rustup.rs)"
if ((${#missing[@]})); then
    echo "missing, install them first:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi
if [[ $(id -u) != 0 ]]; then
    echo "run as root: each run needs its own network namespace (unshare --net)" >&2
    exit 1
fi

cargo build --release --bin pingscope
BIN=$PWD/target/release/pingscope

OUT=${OUT:-bench/out/results-$(date -u +%Y%m%dT%H%M%SZ).jsonl}
mkdir -p "$(dirname "$OUT")"
echo "results: $OUT" >&2
version() { "$@" 2>&1 | head -n1 || true; }
{
    echo "# date: $(date -u +%FT%TZ)"
    echo "# command: REPS=\"$REPS\" SIZES=\"$SIZES\" BIG=\"$BIG\" TOOLS=\"$TOOLS\" WARMUP=$WARMUP WINDOW=$WINDOW SCRAPE_EVERY=$SCRAPE_EVERY PROBES=$PROBES SCRAPES=$SCRAPES SCRAPE_BUDGET=$SCRAPE_BUDGET BUCKETS=$BUCKETS SPLIT=$SPLIT bench/run.sh"
    echo "# commit: $(git rev-parse HEAD)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock bench || echo ' (with uncommitted changes)')"
    echo "# pingscope: $(version "$BIN" --version)"
    echo "# peers: $(version prometheus-smokeping-prober --version); $(version prometheus-blackbox-exporter --version); $(version prometheus --version); $(version fping --version)"
    echo "# nproc: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
    echo "# kernel: $(uname -r); load: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT"

one() { # tool n rep
    local args=("$1" "$2" --rep "$3" --warmup "$WARMUP" --window "$WINDOW"
        --scrape-every "$SCRAPE_EVERY" --probes "$PROBES" --scrapes "$SCRAPES"
        --scrape-budget "$SCRAPE_BUDGET" --buckets "$BUCKETS" --pingscope "$BIN")
    [[ $1 == pingscope || $1 == fping ]] && (($2 > 1 && $2 <= 10000)) &&
        args+=(--split-window "$SPLIT")
    echo "$(date -u +%T) $1 N=$2 rep $3" >&2
    timeout --kill-after=10 "$RUN_LIMIT" unshare --net python3 bench/one_run.py "${args[@]}" \
        >>"$OUT" || echo "{\"tool\": \"$1\", \"n\": $2, \"rep\": $3, \"error\": \"exit $?\"}" >>"$OUT"
}

# Repeats outermost and tools interleaved, so a burst of load from elsewhere on the machine
# hits every tool rather than one.
for rep in $(seq 1 "$REPS"); do
    one pingscope 1 "$rep"
    for n in $SIZES; do
        for tool in $TOOLS; do
            one "$tool" "$n" "$rep"
        done
    done
    [[ -n $BIG ]] && one pingscope "$BIG" "$rep"
done

for i in 1 2 3 4 5; do
    echo "$(date -u +%T) startup $i" >&2
    timeout --kill-after=10 60 unshare --net python3 bench/startup.py "$BIN" >>"$OUT" ||
        echo '{"tool": "startup", "error": "exit '$?'"}' >>"$OUT"
done

echo "# end: $(date -u +%FT%TZ); load: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT"
python3 bench/summarize.py "$OUT" | tee "${OUT%.jsonl}.md"

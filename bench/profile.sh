#!/bin/bash
# Profiles `pingscope serve` monitoring N loopback targets at 1 s, in a network namespace of its
# own (nothing leaves it), and writes the reports to OUTDIR:
#   perf.txt    where the CPU goes (`perf record -g`, by library and by symbol)
#   massif.txt  what the heap holds (`valgrind --tool=massif`, a second run)
#   cpu.txt     user and system CPU per echo request over the perf window
#   perf.data   the raw record, for `perf annotate -i OUTDIR/perf.data SYMBOL` (KEEP=1 only)
# MASSIF=0 skips the massif run.
# Usage: sudo [KEEP=1] [MASSIF=0] bench/profile.sh BINARY N SECONDS OUTDIR   (needs perf, valgrind)
set -eu
if [[ ${1-} != --inside ]]; then
    [[ $# -eq 4 ]] || { echo "usage: $0 BINARY N SECONDS OUTDIR" >&2; exit 64; }
    mkdir -p "$4"
    exec timeout 600 unshare --net "$0" --inside "$(realpath "$1")" "$2" "$3" "$(realpath "$4")"
fi
BIN=$2 N=$3 SECS=$4 OUT=$5
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# shellcheck source=bench/loopback_targets.sh
. "$(dirname "$0")/loopback_targets.sh"
loopback_targets "$WORK" "$N"
echos() { awk '/^Icmp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "InEchos") c = i; h = 1 } else print $c }' /proc/net/snmp; }
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }

"$BIN" serve --config.file "$WORK/cfg.yml" --web.listen-address 127.0.0.1:9900 --log.level warn \
    > "$WORK/log" 2>&1 &
pid=$!
sleep 8
read -r u0 s0 < <(ticks $pid); e0=$(echos)
perf record -F 4999 -g -p $pid -o "$WORK/perf.data" -- sleep "$SECS" > /dev/null 2>&1
read -r u1 s1 < <(ticks $pid); e1=$(echos)
rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
kill $pid; wait $pid || true
hz=$(getconf CLK_TCK)
awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v e=$((e1 - e0)) -v hz="$hz" -v rss="$rss" -v n="$N" 'BEGIN {
    printf "N=%d echo_requests=%d user_us_per_ping=%.2f system_us_per_ping=%.2f rss_kib=%d\n",
        n, e, u * 1e6 / hz / e, s * 1e6 / hz / e, rss }' > "$OUT/cpu.txt"
{
    echo "# perf record -F 4999 -g over $SECS s, N = $N; by library, then by symbol (self time)"
    perf report -i "$WORK/perf.data" --no-children --sort dso --stdio -g none 2> /dev/null | grep '%' | head -8
    echo
    perf report -i "$WORK/perf.data" --no-children --sort sym --stdio -g none 2> /dev/null | grep '%' | head -60
} > "$OUT/perf.txt"
[[ "${KEEP:-0}" == 1 ]] && cp "$WORK/perf.data" "$OUT/perf.data"
if [[ "${MASSIF:-1}" == 0 ]]; then
    cat "$OUT/cpu.txt"
    exit 0
fi

rm -f "$WORK"/sessions.db*
timeout -s INT $((SECS + 20)) valgrind --tool=massif --massif-out-file="$WORK/massif.out" \
    "$BIN" serve --config.file "$WORK/cfg.yml" --web.listen-address 127.0.0.1:9900 --log.level warn \
    > "$WORK/massif.log" 2>&1 || true
[[ -s "$WORK/massif.out" ]] || { echo "massif wrote nothing:" >&2; tail -5 "$WORK/massif.log" >&2; exit 1; }
ms_print --threshold=1.5 "$WORK/massif.out" > "$OUT/massif.txt"
cat "$OUT/cpu.txt"

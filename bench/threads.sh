#!/bin/bash
# Where a busy daemon's threads spend their time: runs `pingscope serve` on N loopback targets
# at 1 s in a network namespace of its own (nothing leaves it), waits WARMUP seconds, then prints
# each thread's user and system CPU (clock ticks) and voluntary / involuntary context switches
# over SECONDS, from /proc/PID/task/*; and, machine-wide over the same seconds, the CPU of the
# kernel's softirq threads (ksoftirqd: network receive work the kernel defers to them under load,
# charged to no process of ours) and the idle share of all CPUs. No scrapes.
# Usage: sudo bench/threads.sh BINARY N SECONDS [WARMUP]
set -eu
if [[ ${1-} != --inside ]]; then
    [[ $# -ge 3 ]] || { echo "usage: $0 BINARY N SECONDS [WARMUP]" >&2; exit 64; }
    exec timeout 600 unshare --net "$0" --inside "$(realpath "$1")" "$2" "$3" "${4:-10}"
fi
BIN=$2 N=$3 SECS=$4 WARMUP=$5
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# shellcheck source=bench/loopback_targets.sh
. "$(dirname "$0")/loopback_targets.sh"
loopback_targets "$WORK" "$N"
"$BIN" serve --config.file "$WORK/cfg.yml" --web.listen-address 127.0.0.1:9900 --log.level warn \
    > "$WORK/log" 2>&1 &
pid=$!
snap() {
    for t in /proc/$pid/task/*; do
        printf '%s %s %s %s\n' "$(basename "$t")" "$(tr ' ' _ < "$t/comm")" \
            "$(sed 's/.*) //' "$t/stat" | awk '{print $12, $13}')" \
            "$(awk '/^(voluntary|nonvoluntary)_ctxt/ {printf "%s ", $2}' "$t/status")"
    done | sort
}
softirqd() {
    for p in $(pgrep -x 'ksoftirqd/[0-9]+'); do
        sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'
    done | awk '{s += $1} END {print s + 0}'
}
idle() { awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
sleep "$WARMUP"
snap > "$WORK/a"
k0=$(softirqd)
read -r i0 t0 < <(idle)
sleep "$SECS"
snap > "$WORK/b"
k1=$(softirqd)
read -r i1 t1 < <(idle)
kill $pid
wait $pid || true
echo "# N=$N, $SECS s after $WARMUP s; clock ticks of $(getconf CLK_TCK) Hz; binary $BIN"
join "$WORK/a" "$WORK/b" | awk -v secs="$SECS" -v hz="$(getconf CLK_TCK)" '{
    busy = ($8 - $3 + $9 - $4) / hz / secs * 100
    printf "tid=%s %s user=%d sys=%d busy=%.0f%% voluntary_cs/s=%.0f involuntary_cs/s=%.0f\n",
        $1, $2, $8 - $3, $9 - $4, busy, ($10 - $5) / secs, ($11 - $6) / secs }'
awk -v k=$((k1 - k0)) -v i=$((i1 - i0)) -v t=$((t1 - t0)) -v secs="$SECS" -v hz="$(getconf CLK_TCK)" \
    -v n="$(nproc)" 'BEGIN { printf "ksoftirqd (all CPUs): %.0f%% of one CPU; machine idle: %.0f%% of %d CPUs\n",
        k / hz / secs * 100, i / t * 100, n }'

#!/usr/bin/env bash
# Soak test (issue 8 item 5; not CI): `pingscope serve` monitors 10,000 targets at 1 s in
# 198.18.0.0/15 inside a private network namespace (only `lo` and the responder's TUN device),
# with 50 % loss and a share of late replies, for SOAK_MINUTES (default 60). Every minute it
# records the daemon's VmRSS, open fd count, sum of pingscope_sent_total and the scheduler lag
# histogram's sum/count. Output: bench/soak-run/ (series.tsv, daemon and responder logs).
#
#   sudo bench/soak.sh                      # release binaries must be built: cargo build --release
#   SOAK_MINUTES=5 sudo bench/soak.sh       # a short run
#
# Every loop is bounded; the script tears down the daemon, responder and namespace at the end.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin=${PINGSCOPE_BIN_DIR:-$here/target/release}
out=${SOAK_OUT:-$here/bench/soak-run}
minutes=${SOAK_MINUTES:-60}
targets=${SOAK_TARGETS:-10000}
port=${SOAK_PORT:-19060}
# Not "psn-...": the test harness deletes namespaces named psn-<pid>-* whose <pid> is gone,
# and parses "soak" as such a pid.
ns="pingscope-soak-$$"

[ "$(id -u)" = 0 ] || { echo "soak.sh: needs root (network namespace)" >&2; exit 1; }
[ -x "$bin/pingscope" ] && [ -x "$bin/pingscope-testnet" ] || {
    echo "soak.sh: build first: cargo build --release (looked in $bin)" >&2; exit 1; }
[ "$targets" -le 60000 ] || { echo "soak.sh: at most 60000 targets" >&2; exit 1; }

mkdir -p "$out"
# The run's files (a 10,000-target config, logs) are not for the repository; bench/SOAK.md is.
echo '*' > "$out/.gitignore"
rm -f "$out"/series.tsv "$out"/*.log "$out"/pingscope.db*

# Profiles: every target loses half its probes; targets in 198.18.200.0/24 .. (the last 5 %)
# answer after 3 s, past the 2 s timeout, so they are counted late. Note a listed prefix's profile
# replaces the default whole, so it repeats the loss.
cat > "$out/profiles.json" <<'JSON'
{"seed": 8,
 "default": {"delay": "2ms", "jitter": "1ms", "loss": 0.5},
 "hosts": {"198.19.0.0/16": {"delay": "3s", "loss": 0.5}}}
JSON

# Config: 95 % of targets in 198.18.0.0/16 (answer in ~2 ms), 5 % in 198.19.0.0/16 (late).
late=$((targets / 20))
{
    echo "defaults: {interval: 1s, timeout: 2s}"
    echo "sessions: {database: $out/pingscope.db}"
    echo "targets:"
    for ((i = 0; i < targets; i++)); do
        if ((i < targets - late)); then
            n=$((i + 2)); echo "  - host: 198.18.$((n / 250)).$((n % 250 + 2))"
        else
            n=$((i - (targets - late) + 2)); echo "  - host: 198.19.$((n / 250)).$((n % 250 + 2))"
        fi
    done
} > "$out/config.yml"
"$bin/pingscope" check-config "$out/config.yml"

cleanup() {
    set +e
    [ -n "${daemon:-}" ] && kill -TERM "$daemon" 2>/dev/null && sleep 3 && kill -KILL "$daemon" 2>/dev/null
    [ -n "${responder:-}" ] && kill -TERM "$responder" 2>/dev/null && sleep 1 && kill -KILL "$responder" 2>/dev/null
    ip netns del "$ns" 2>/dev/null
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
# The responder's log would grow by ~10,000 lines a second: discard it, keep its timing stats.
ip netns exec "$ns" "$bin/pingscope-testnet" --no-realtime --profiles "$out/profiles.json" \
    --log /dev/null --stats "$out/responder-stats.jsonl" > "$out/responder.stdout" 2> "$out/responder.log" &
responder=$!
for _ in $(seq 150); do grep -q READY "$out/responder.stdout" 2>/dev/null && break; sleep 0.1; done
grep -q READY "$out/responder.stdout" || { echo "soak.sh: responder not ready" >&2; exit 1; }
# Both interfaces, nothing else, before the daemon sends anything.
ifaces=$(ip netns exec "$ns" ls /sys/class/net | sort | tr '\n' ' ')
case "$ifaces" in
    "lo tn0 ") ;;
    *) echo "soak.sh: namespace not isolated: $ifaces" >&2; exit 1 ;;
esac

ip netns exec "$ns" "$bin/pingscope" serve --config.file "$out/config.yml" \
    --web.listen-address "127.0.0.1:$port" --log.level warn > "$out/daemon.log" 2>&1 &
daemon=$!

scrape() {
    ip netns exec "$ns" curl -sf --max-time 30 -o "$out/metrics.tmp" "http://127.0.0.1:$port/metrics" || return 1
    awk '
        /^pingscope_sent_total\{/ { sent += $NF }
        /^pingscope_lost_total\{/ { lost += $NF }
        /^pingscope_late_replies_total\{/ { late += $NF }
        /^pingscope_rtt_seconds_count\{/ { recv += $NF }
        /^pingscope_scheduler_lag_seconds_sum/ { lagsum = $NF }
        /^pingscope_scheduler_lag_seconds_count/ { lagcount = $NF }
        END { printf "%d\t%d\t%d\t%d\t%.6f\t%d", sent, recv, lost, late, lagsum, lagcount }' "$out/metrics.tmp"
}

printf 'minute\ttime_utc\trss_kb\tfds\tsent_total\treceived\tlost_total\tlate_total\tsched_lag_sum_s\tsched_lag_count\n' > "$out/series.tsv"
echo "soak: ns=$ns daemon=$daemon responder=$responder targets=$targets minutes=$minutes start=$(date -u +%FT%TZ)" > "$out/run.txt"
# Minute 0 is taken once the daemon has had 20 s to start its 10,000 monitors.
sleep 20
for ((m = 0; m <= minutes; m++)); do
    ((m > 0)) && sleep 60
    kill -0 "$daemon" 2>/dev/null || { echo "soak: daemon died at minute $m" | tee -a "$out/run.txt"; exit 1; }
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")
    fds=$(ls "/proc/$daemon/fd" | wc -l)
    m_line=$(scrape) || m_line=$(printf 'NA\tNA\tNA\tNA\tNA\tNA')
    printf '%d\t%s\t%s\t%s\t%s\n' "$m" "$(date -u +%FT%TZ)" "$rss" "$fds" "$m_line" >> "$out/series.tsv"
done
kill -USR1 "$responder" 2>/dev/null || true
echo "soak: done $(date -u +%FT%TZ)" >> "$out/run.txt"

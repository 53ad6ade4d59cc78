#!/usr/bin/env bash
# RTT for 127.0.0.1 from iputils ping and `pingscope ping` at the same cadence (10 ms and 1 s),
# in a private network namespace: separates what the sender adds from what the kernel's path
# costs when it runs warm or cold. Usage: sudo bench/rtt_same_rate.sh [path/to/pingscope]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/pingscope}
exec unshare --net bash -s "$BIN" <<'INNER'
set -euo pipefail
BIN=$1
ip link set lo up
echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range
median() { sort -n | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "none"}'; }
for cadence in "0.01 10ms 100" "1 1s 15"; do
    read -r iputils ours count <<<"$cadence"
    a=$(ping -n -c "$count" -i "$iputils" 127.0.0.1 | grep -o 'time=[0-9.]*' | cut -d= -f2 \
        | awk '{print $1 * 1000}' | median)
    b=$("$BIN" ping -c "$count" -i "$ours" 127.0.0.1 2>/dev/null \
        | grep -o '"rtt_ms":[0-9.]*' | cut -d: -f2 | awk '{print $1 * 1000}' | median)
    echo "every $ours, $count probes: iputils ping p50 ${a} µs, pingscope ping p50 ${b} µs"
done
INNER

#!/bin/bash
# System calls per echo reply of `pingscope serve` monitoring N loopback targets at 1 s, in a
# network namespace of its own (nothing leaves it): `perf stat -e raw_syscalls:sys_enter` over
# SECS seconds after an 8 s warm-up, against the kernel's InEchoReps over the same window. A
# count, not a time: it does not move with the load of a shared machine. One JSON line.
# Usage: sudo bench/syscalls.sh BINARY N SECONDS [LABEL]   (needs perf)
set -eu
if [[ ${1-} != --inside ]]; then
    [[ $# -ge 3 ]] || { echo "usage: $0 BINARY N SECONDS [LABEL]" >&2; exit 64; }
    exec timeout 120 unshare --net "$0" --inside "$(realpath "$1")" "$2" "$3" "${4-}"
fi
BIN=$2 N=$3 SECS=$4 LABEL=$5
here=$(dirname "$0")
. "$here/loopback_targets.sh"
WORK=$(mktemp -d)
loopback_targets "$WORK" "$N"
"$BIN" serve --config.file "$WORK/cfg.yml" --web.listen-address 127.0.0.1:9901 \
    --log.level warn > /dev/null 2>&1 &
pid=$!
trap 'kill $pid 2> /dev/null; wait $pid 2> /dev/null; rm -rf "$WORK"' EXIT
sleep 8
in_echo_reps() {
    awk '/^Icmp:/ { if (!h) { for (i = 2; i <= NF; i++) col[$i] = i; h = 1 } else print $col["InEchoReps"] }' /proc/net/snmp
}
before=$(in_echo_reps)
calls=$(perf stat -x, -e raw_syscalls:sys_enter -p "$pid" -- sleep "$SECS" 2>&1 >/dev/null |
    awk -F, '/raw_syscalls:sys_enter/ { print $1 }')
after=$(in_echo_reps)
python3 -c 'import json, sys
calls, replies = int(sys.argv[4]), int(sys.argv[5]) - int(sys.argv[6])
print(json.dumps({"tool": "syscalls", "label": sys.argv[1], "binary": sys.argv[2], "n": int(sys.argv[3]),
                  "window": float(sys.argv[7]), "syscalls": calls, "replies": replies,
                  "syscalls_per_reply": round(calls / max(replies, 1), 3)}))' \
    "$LABEL" "$BIN" "$N" "$calls" "$after" "$before" "$SECS"

#!/bin/bash
# What the heap of `pingscope serve` holds at its peak, for N loopback targets at 1 s in a
# network namespace of its own (nothing leaves it): runs it under heaptrack for SECS seconds
# with one gzip scrape near the end, then prints heaptrack's summary and the peak bytes by
# allocation site (the innermost frames that are not the allocator's). To stdout.
# With COST=calls: no scrape, and the sites that called the allocator most instead (the last
# frames that are not the allocator's or a container's); startup and shutdown count too (about
# N calls a site), a site on the probe path shows about N x SECONDS.
# Usage: sudo [COST=calls] bench/heap.sh BINARY N SECONDS   (needs heaptrack)
set -eu
if [[ ${1-} != --inside ]]; then
    [[ $# -eq 3 ]] || { echo "usage: $0 BINARY N SECONDS" >&2; exit 64; }
    exec timeout 600 unshare --net "$0" --inside "$(realpath "$1")" "$2" "$3"
fi
COST=${COST:-peak}
BIN=$2 N=$3 SECS=$4
here=$(dirname "$0")
. "$here/loopback_targets.sh"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
loopback_targets "$WORK" "$N"
heaptrack -o "$WORK/heap" "$BIN" serve --config.file "$WORK/cfg.yml" \
    --web.listen-address 127.0.0.1:9901 --log.level warn > /dev/null 2>&1 &
sleep "$SECS"
pid=$(pgrep -f "^$BIN serve --config.file $WORK/cfg.yml" | head -1)
if [[ $COST == calls ]]; then
    kill "$pid"
    wait
    echo "# $BIN, N = $N, $SECS s, no scrape"
else
    curl -s -H 'Accept-Encoding: gzip' -o /dev/null 127.0.0.1:9901/metrics
    sleep 2
    grep -E 'VmRSS|RssAnon' "/proc/$pid/status"
    kill "$pid"
    wait
    echo "# $BIN, N = $N, $SECS s, one gzip scrape"
fi
data=$(ls "$WORK"/heap*)
heaptrack_print -f "$data" 2>/dev/null | grep -E '^(peak heap|calls to allocation functions:|total runtime)'
if [[ $COST == calls ]]; then
    heaptrack_print -f "$data" --flamegraph-cost-type allocations -F "$WORK/calls.fg" > /dev/null 2>&1
    python3 - "$WORK/calls.fg" <<'PY'
import collections, sys
skip = ("alloc", "realloc", "grow", "finish_grow", "_RN", "_RIN", "do_reserve", "reserve",
        "with_capacity", "try_allocate", "allocate", "box_new", "new<>", "exchange_malloc",
        "from_elem", "to_vec", "to_owned", "clone", "push", "spec_", "extend", "insert",
        "collect", "from_iter")
by_site = collections.Counter()
for line in open(sys.argv[1]):
    stack, _, cost = line.rstrip().rpartition(" ")
    frames = [f for f in stack.split(";") if f and not f.startswith(skip)]
    by_site[" ; ".join(f[:40] for f in frames[-6:])] += int(cost)
print("allocation calls by site (outermost first, last 6 frames)")
for site, calls in by_site.most_common(15):
    print(f"{calls:9d}  {site}")
PY
    exit 0
fi
heaptrack_print -f "$data" --flamegraph-cost-type peak -F "$WORK/peak.fg" > /dev/null 2>&1
python3 - "$WORK/peak.fg" <<'PY'
import collections, sys
alloc = ("alloc", "realloc", "allocate", "grow", "finish_grow", "with_capacity", "try_allocate",
         "__rdl", "_RNv", "exchange_malloc", "malloc", "do_alloc", "calloc", "box_new_uninit",
         # hashbrown's growth: the map's owner is the frame before
         "resize_inner", "reserve_rehash", "new_uninitialized", "fallible_with_capacity",
         "prepare_resize", "reserve")
by_site = collections.Counter()
for line in open(sys.argv[1]):
    stack, _, cost = line.rstrip().rpartition(" ")
    frames = [f for f in stack.split(";") if f and not f.split("<")[0].split(" ")[0].startswith(alloc)]
    by_site[" ; ".join(f[:60] for f in frames[-5:])] += int(cost)
total = sum(by_site.values())
print(f"peak bytes by site (outermost first, last 5 frames), total {total / 1e6:.2f} MB")
for site, cost in by_site.most_common(30):
    print(f"{cost / 1e6:7.2f} MB  {site}")
PY

#!/bin/bash
# Resident memory of several builds side by side: for each round and each BINARY in turn, drops
# the binary from the page cache (so its code is read from disk, as a fresh start would) and runs
# bench/rss_maps.py on it in a network namespace of its own (N loopback targets at 1 s, one gzip
# scrape, VmRSS/RssAnon/RssFile after SECS seconds). Prints one line per run.
# Usage: sudo [ROUNDS=2] bench/rss_ab.sh N SECS BINARY...
set -eu
[[ $# -ge 3 ]] || { echo "usage: $0 N SECS BINARY..." >&2; exit 64; }
N=$1 SECS=$2
shift 2
cd "$(dirname "$0")"
for ((round = 1; round <= ${ROUNDS:-2}; round++)); do
    for bin in "$@"; do
        python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$bin"
        timeout 700 unshare --net python3 rss_maps.py "$bin" "$N" "$SECS" | sed -n 2p | sed "s|^|$bin  |"
    done
done

#!/bin/bash
# perf of pingscope serve at N loopback targets while a gzip scrape runs every second (bounded).
set -eu
SORT=${SORT:-dso,sym}   # SORT=comm,dso,sym splits the samples by thread
if [[ ${1-} != --inside ]]; then
    SORT=$SORT exec timeout 300 unshare --net "$0" --inside "$(realpath "$1")" "$2" "$(realpath -m "$3")"
fi
BIN=$2 N=$3 OUT=$4
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
. "$(dirname "$0")/loopback_targets.sh"
loopback_targets "$WORK" "$N"
"$BIN" serve --config.file "$WORK/cfg.yml" --web.listen-address 127.0.0.1:9902 --log.level warn > /dev/null 2>&1 &
pid=$!
sleep 8
perf record -F 4999 -g -p $pid -o "$WORK/perf.data" -- sleep 20 > /dev/null 2>&1 &
prec=$!
for i in $(seq 1 20); do curl -s -H 'Accept-Encoding: gzip' -o /dev/null 127.0.0.1:9902/metrics; sleep 1; done
wait $prec || true
kill $pid; wait $pid || true
{
  echo "# perf record -F 4999 -g over 20 s, N = $N, a gzip scrape of /metrics every second; by symbol (self time)"
  perf report -i "$WORK/perf.data" --no-children --sort "$SORT" --stdio -g none 2>/dev/null | grep '%' | head -60
} > "$OUT"

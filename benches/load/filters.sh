#!/usr/bin/env bash
# What a route's request filters cost in requests per second: two weirs side by side, the
# same binary as shipped (access log on, --threads 1), one serving a plain route and one the
# route of benches/load/manifests.py with five filters (ROUTE_FILTERS=1: rewrite-target with
# a capture, upstream-vhost, x-forwarded-prefix, proxy-body-size, custom-http-errors), in
# front of one nginx upstream. wrk -t1 -c32, plaintext HTTP/1.1 keep-alive, interleaved
# rounds; the load generator on a core of its own (as benches/load/production.sh).
# Prints median req/s and p99 of each and the filtered route's ratios to the plain one.
#
#   benches/load/filters.sh                      # 5 rounds of 8 s
#   ROUNDS=3 DURATION=5 WEIR_BIN=target/release/weir benches/load/filters.sh
#   ROUTE=policy benches/load/filters.sh         # source range, CORS and a rate limit instead
#                                                # (benches/load/manifests.py)
#   ROUTE=auth benches/load/filters.sh           # basic auth (bcrypt) and a rate limit
# Every request carries `Authorization: Basic` for bench:bench (the plain route ignores it).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/prereqs.sh
source benches/load/nginx.sh
ROUNDS="${ROUNDS:-5}"
DURATION="${DURATION:-8}"
weir_need_commands nginx:nginx wrk:wrk
if [ -z "${WEIR_BIN:-}" ]; then
    cargo build --release -q -p weir-proxy --bin weir
    WEIR_BIN=target/release/weir
fi
source benches/load/procs.sh
CORES=$(nproc)
[ "$CORES" -lt 2 ] || taskset -pc "0-$((CORES - 2))" $$ >/dev/null

UP=19200; PLAIN=19201; FILTERED=19202
mkdir -p "$work/plain" "$work/filtered"
python3 benches/load/manifests.py 0 "$UP" "$work/plain/bench.yaml"
ROUTE_FILTERS="${ROUTE:-1}" python3 benches/load/manifests.py 0 "$UP" "$work/filtered/bench.yaml"
nginx -c "$(nginx_upstream_conf "$work" "127.0.0.1:$UP")" & pids+=($!)
for kind in plain filtered; do
    port=$PLAIN; [ "$kind" = plain ] || port=$FILTERED
    "$WEIR_BIN" --manifests "$work/$kind" --http-listen "127.0.0.1:$port" \
        --admin-listen "127.0.0.1:$((port + 50))" --threads 1 --log-format json \
        >/dev/null 2>"$work/$kind.err" & pids+=($!)
done
AUTHORIZATION="Authorization: Basic YmVuY2g6YmVuY2g="
for port in $PLAIN $FILTERED; do
    for _ in $(seq 100); do curl -fs -o /dev/null -H "$AUTHORIZATION" "http://127.0.0.1:$port/x" && break; sleep 0.1; done
    curl -fs -o /dev/null -H "$AUTHORIZATION" "http://127.0.0.1:$port/x" || { echo "weir on $port does not answer" >&2; exit 1; }
done
[ "$CORES" -lt 2 ] || taskset -pc "$((CORES - 1))" $$ >/dev/null

results="$work/results.tsv"
for round in $(seq "$ROUNDS"); do
    for kind in plain filtered; do
        port=$PLAIN; [ "$kind" = plain ] || port=$FILTERED
        out=$(wrk -t1 -c32 -d"${DURATION}s" -s benches/load/latency.lua \
            -H "$AUTHORIZATION" "http://127.0.0.1:$port/shop/item" | grep '^RESULT')
        printf '%s\t%s\n' "$kind" "$out" >>"$results"
        echo "round $round $kind: $out" >&2
    done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    kind, result = line.rstrip("\n").split("\t")
    f = dict(kv.split("=") for kv in result.split()[1:])
    rows.setdefault(kind, []).append((int(f["requests"]) / float(f["seconds"]), int(f["p99"]),
                                      int(f["non2xx"]) + int(f["socket_errors"])))
med = lambda kind, i: statistics.median(r[i] for r in rows[kind])
print("| route | req/s | p99 µs | errors |")
print("|---|---:|---:|---:|")
for kind in ("plain", "filtered"):
    print(f"| {kind} | {med(kind, 0):,.0f} | {med(kind, 1):,.0f} | {sum(r[2] for r in rows[kind])} |")
print(f"\nfiltered / plain: req/s {med('filtered', 0) / med('plain', 0):.3f}, "
      f"p99 {med('filtered', 1) / med('plain', 1):.2f}")
PY

#!/usr/bin/env bash
# p99 while endpoints churn (issue #9): weir with ROUTES other Ingresses loaded, all traffic on
# one Service of ENDPOINTS endpoints (nginx answering "ok\n" on 127.0.0.1..ENDPOINTS), driven by
# h2load at a fixed RATE req/s for DURATION s in three interleaved configurations:
#   quiet     no changes
#   churn     CHURN endpoint changes a second (benches/load/churn.py), weir's default
#             --reload-debounce (500 ms; at most 2 s under continuous churn)
#   churn-1ms the same churn with --reload-debounce 1ms: a reload for (nearly) every change
# Prints a Markdown table: reloads/s applied, p50/p99/p99.9 (medians over ROUNDS) and p99 against
# the quiet run.
#
#   benches/load/churn.sh
#   ROUNDS=5 DURATION=20 RATE=5000 CHURN=100 ROUTES=1000 benches/load/churn.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/prereqs.sh
source benches/load/nginx.sh
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
RATE="${RATE:-5000}"
CHURN="${CHURN:-100}"
ROUTES="${ROUTES:-1000}"
ENDPOINTS="${ENDPOINTS:-8}"
CONNECTIONS=32

weir_need_commands nginx:nginx h2load:nghttp2-client
cargo build --release -q -p weir-proxy --bins

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
UP=19100; WEIR=19101; ADMIN=19102

upstreams=()
for e in $(seq "$ENDPOINTS"); do upstreams+=("127.0.0.$e:$UP"); done
nginx -c "$(nginx_upstream_conf "$work" "${upstreams[@]}")" & pids+=($!)
for address in "${upstreams[@]}"; do
    for _ in $(seq 50); do curl -fs -o /dev/null "http://$address/" && break; sleep 0.1; done
    curl -fs -o /dev/null "http://$address/" || { echo "upstream $address does not answer" >&2; exit 1; }
done

mkdir -p "$work/manifests"
python3 benches/load/manifests.py "$ROUTES" "$UP" "$work/manifests/routes.yaml"
bench="$work/manifests/bench.yaml"

reloads() { curl -fs "http://127.0.0.1:$ADMIN/metrics" | awk '/^weir_config_reloads_total\{result="success"\}/ {print $2}'; }
results="$work/results.tsv"
for round in $(seq "$ROUNDS"); do
    for config in quiet churn churn-1ms; do
        python3 benches/load/manifests.py 0 "$UP" "$bench" "$ENDPOINTS"
        debounce=()
        [ "$config" = churn-1ms ] && debounce=(--reload-debounce 1ms)
        target/release/weir --manifests "$work/manifests" --http-listen "127.0.0.1:$WEIR" \
            --admin-listen "127.0.0.1:$ADMIN" --threads 1 --log-level error --log-format text \
            "${debounce[@]}" >"$work/weir.log" 2>&1 &
        weir_pid=$!
        for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$WEIR/" && break; sleep 0.1; done
        curl -fs -o /dev/null "http://127.0.0.1:$WEIR/" || { cat "$work/weir.log" >&2; exit 1; }
        sleep 1 # the watcher's first reload
        churner=""
        if [ "$config" != quiet ]; then
            python3 benches/load/churn.py "$bench" "$UP" "$ENDPOINTS" "$CHURN" "$DURATION" >"$work/churn.out" &
            churner=$!
        fi
        before=$(reloads)
        rm -f "$work/h2load.log"
        out=$(h2load --h1 -c"$CONNECTIONS" --rps=$((RATE / CONNECTIONS)) -D"$DURATION" \
            --log-file="$work/h2load.log" "http://127.0.0.1:$WEIR/" |
            python3 benches/load/h2load_result.py "$work/h2load.log")
        after=$(reloads)
        changes=0
        if [ -n "$churner" ]; then wait "$churner"; changes=$(cat "$work/churn.out"); fi
        kill -INT "$weir_pid"; wait "$weir_pid" || true
        printf '%s\t%s\t%s\t%s\t%s\n' "$config" "$round" "$changes" "$((after - before))" "$out" >>"$results"
        echo "round $round $config: changes=$changes reloads=$((after - before)) $out" >&2
    done
done
python3 - "$results" "$DURATION" "$RATE" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    config, _, changes, reloads, out = line.rstrip("\n").split("\t")
    fields = dict(kv.split("=") for kv in out.split()[1:])
    rows.setdefault(config, []).append((int(changes), int(reloads), fields))
duration, rate = float(sys.argv[2]), sys.argv[3]
med = lambda config, key: statistics.median(float(f[key]) for _, _, f in rows[config])
print(f"| configuration | changes/s | reloads/s | requests | p50 | p99 | p99.9 | errors | p99 vs quiet |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for config in ["quiet", "churn", "churn-1ms"]:
    runs = rows.get(config, [])
    if not runs:
        continue
    changes = statistics.median(c for c, _, _ in runs) / duration
    reloads = statistics.median(r for _, r, _ in runs) / duration
    errors = sum(int(f["non2xx"]) + int(f["socket_errors"]) for _, _, f in runs)
    requests = sum(int(f["requests"]) for _, _, f in runs)
    ms = lambda key: f"{med(config, key) / 1000:.2f} ms"
    ratio = med(config, "p99") / med("quiet", "p99")
    print(f"| {config} | {changes:.0f} | {reloads:.1f} | {requests:,} | {ms('p50')} | {ms('p99')} | "
          f"{ms('p999')} | {errors} | {ratio:.2f}x |")
print(f"\n{len(rows['quiet'])} rounds of {duration:g} s at {rate} req/s; medians over rounds.")
PY

#!/usr/bin/env bash
# The comparison that matters: every proxy as an ingress runs it, side by side in one run.
#   weir     as shipped: default flags, --threads 1, its access log on (JSON, to stdout)
#   nginx    one worker, a JSON access_log of the same fields, ingress-nginx's TLS settings
#   haproxy  one thread, `option httplog` logged to stdout
# Every log goes to /dev/null; all three proxy to the same nginx upstream ("ok\n") with
# upstream keep-alive and serve the same ECDSA P-256 certificate. Modes, in interleaved rounds:
#   h1       wrk -t1 -c32: plaintext HTTP/1.1 keep-alive
#   h2c      h2load -c8 -m16: HTTP/2 prior knowledge
#   h1-post  wrk -t1 -c32, plaintext HTTP/1.1, a 4 KiB POST body on every request (post.lua)
#   tls-h1   wrk -t1 -c32 over TLS (HTTP/1.1 keep-alive)
#   tls-h2   h2load -c8 -m16 over TLS (ALPN h2)
#   tls-new  wrk -t1 -c32 over TLS with `Connection: close`: a new connection, and a full
#            handshake, per request
#   tls-resume  openssl s_time -reuse (one client, one GET per connection): new connections
#            that resume the first one's TLS session (not in the default MODES: one client
#            measures handshake latency more than the proxy's capacity)
# Prints a Markdown table: median req/s and p99 per proxy and mode, weir's ratio to the better
# of nginx and HAProxy, and weir's p99 over nginx's; CPU seconds per 10k requests beside it, and
# the load generator's CPU (% of one core: near 100, the client limits the run and its own
# queueing is in the latency).
#
#   benches/load/production.sh                              # 3 rounds of 10 s
#   ROUNDS=5 DURATION=8 MODES="tls-h1 tls-new" benches/load/production.sh
#   CONNS=1 MODES=tls-new benches/load/production.sh          # wrk connections (default 32)
#   SPLIT_CPUS=0 benches/load/production.sh                   # let client and servers share cores
#   WEIR_FLAGS="--log-level warn" benches/load/production.sh  # weir without its access log
#   WEIR_BIN=/tmp/weir-before benches/load/production.sh     # another weir binary (no build)
#   BASELINE_BIN=/tmp/weir-before benches/load/production.sh # and a second weir beside it, the
#                                                            # same way: its req/s and weir's ratio
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/prereqs.sh
source benches/load/nginx.sh
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNS="${CONNS:-32}"
MODES="${MODES:-h1 h2c tls-h1 tls-h2 tls-new}"
TARGETS="${TARGETS:-nginx haproxy weir}"
WEIR_FLAGS="${WEIR_FLAGS:-}"
PROFILE="${PROFILE:-release}"
WEIR_BIN="${WEIR_BIN:-}"
BASELINE_BIN="${BASELINE_BIN:-}"
[ -z "$BASELINE_BIN" ] || TARGETS="$TARGETS baseline"

weir_need_commands nginx:nginx haproxy:haproxy wrk:wrk openssl:openssl
if [ -z "$WEIR_BIN" ]; then
    cargo build --profile "$PROFILE" -q -p weir-proxy --bin weir
    WEIR_BIN="target/$PROFILE/weir"
fi

source benches/load/procs.sh
# The load generator on a core of its own (the last), the proxies and the upstream on the
# others: sharing cores, the client's and the servers' threads meet on either, and where the
# scheduler puts them moves a mode's p99 by 2x between runs (docs/benchmarks.md, "Method").
SPLIT_CPUS="${SPLIT_CPUS:-1}"
CORES=$(nproc)
if [ "$SPLIT_CPUS" = 1 ] && [ "$CORES" -ge 2 ]; then
    taskset -pc "0-$((CORES - 2))" $$ >/dev/null
fi
source benches/load/proxies.sh
if [ "$SPLIT_CPUS" = 1 ] && [ "$CORES" -ge 2 ]; then
    taskset -pc "$((CORES - 1))" $$ >/dev/null
fi

results="$work/results.tsv"
TIMEFORMAT='%U %S %R'
measure() { # $1 mode, $2 plaintext port, $3 h2c port, $4 TLS port
    rm -f "$work/h2load.log"
    case "$1" in
        h1) wrk -t1 -c"$CONNS" -d"${DURATION}s" -s benches/load/latency.lua "http://127.0.0.1:$2/" | grep '^RESULT' ;;
        h1-post) wrk -t1 -c"$CONNS" -d"${DURATION}s" -s benches/load/post.lua "http://127.0.0.1:$2/" | grep '^RESULT' ;;
        h2c) h2load -c8 -m16 -D"$DURATION" --log-file="$work/h2load.log" "http://127.0.0.1:$3/" \
                | python3 benches/load/h2load_result.py "$work/h2load.log" ;;
        tls-h1) wrk -t1 -c"$CONNS" -d"${DURATION}s" -s benches/load/latency.lua "https://127.0.0.1:$4/" | grep '^RESULT' ;;
        tls-h2) h2load -c8 -m16 -D"$DURATION" --log-file="$work/h2load.log" "https://127.0.0.1:$4/" \
                | python3 benches/load/h2load_result.py "$work/h2load.log" ;;
        tls-new) wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Connection: close" -s benches/load/latency.lua \
                "https://127.0.0.1:$4/" | grep '^RESULT' ;;
        tls-resume) openssl s_time -connect "127.0.0.1:$4" -reuse -time "$DURATION" -www / 2>/dev/null \
                | awk '/real seconds/ && !done {
                    print "RESULT requests=" $1 " seconds=" $4 " non2xx=0 socket_errors=0 p50=0 p99=0 p999=0"; done = 1 }' ;;
    esac
}
for round in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        for target in "nginx:$NGINX:$NGINX_H2C:$NGINX_TLS:$nginx_pid" \
            "haproxy:$HAPROXY:$HAPROXY_H2C:$HAPROXY_TLS:$haproxy_pid" \
            "weir:$WEIR:$WEIR:$WEIR_TLS:$weir_pid" "baseline:$BASE:$BASE:$BASE_TLS:$base_pid"; do
            IFS=: read -r name plain h2c tls pid <<<"$target"
            [[ " $TARGETS " == *" $name "* ]] || continue
            before=$(ticks "$pid")
            # The load generator's CPU too: near 100 % of its one thread, it is what limits
            # the run, and latency includes its own queueing.
            { time out=$(measure "$mode" "$plain" "$h2c" "$tls" 2>&3); } 3>&2 2>"$work/client.time"
            after=$(ticks "$pid")
            client=$(tail -1 "$work/client.time" | awk '{ printf "%.0f", ($1 + $2) / $3 * 100 }')
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "$round" "$((after - before))" "$client" "$out" >>"$results"
            echo "round $round $mode $name: $out client_cpu=$client%" >&2
        done
    done
done
python3 - "$results" "$(getconf CLK_TCK)" "$MODES" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, mode, _round, ticks, client, result = line.rstrip("\n").split("\t")
    f = dict(kv.split("=") for kv in result.split()[1:])
    reqs, secs = int(f["requests"]), float(f["seconds"])
    rows.setdefault((mode, name), []).append({
        "rps": reqs / secs if secs else 0.0, "p99": int(f["p99"]),
        "errors": int(f["non2xx"]) + int(f["socket_errors"]),
        "cpu": int(ticks) / int(sys.argv[2]) / reqs * 10000 if reqs else 0.0,
        "client": int(client)})
med = lambda mode, name, k: statistics.median(r[k] for r in rows.get((mode, name), [{k: 0}]))
baseline = any(name == "baseline" for _, name in rows)
print("| mode | nginx req/s | HAProxy req/s | weir req/s | weir / best | p99 µs nginx / HAProxy / weir | weir p99 / nginx | CPU s per 10k nginx / HAProxy / weir | client CPU % nginx / HAProxy / weir | errors |"
      + (" baseline req/s | weir / baseline |" if baseline else ""))
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if baseline else ""))
for mode in sys.argv[3].split():
    n, h, w = (med(mode, t, "rps") for t in ("nginx", "haproxy", "weir"))
    best = max(n, h)
    p = [med(mode, t, "p99") for t in ("nginx", "haproxy", "weir")]
    c = [med(mode, t, "cpu") for t in ("nginx", "haproxy", "weir")]
    cl = [med(mode, t, "client") for t in ("nginx", "haproxy", "weir")]
    errors = sum(r["errors"] for (m, _), rs in rows.items() if m == mode for r in rs)
    print(f"| {mode} | {n:,.0f} | {h:,.0f} | {w:,.0f} | {w / best if best else 0:.2f} | "
          f"{p[0]:,} / {p[1]:,} / {p[2]:,} | {p[2] / p[0] if p[0] else 0:.2f} | "
          f"{c[0]:.2f} / {c[1]:.2f} / {c[2]:.2f} | {cl[0]:.0f} / {cl[1]:.0f} / {cl[2]:.0f} | {errors} |"
          + (f" {med(mode, 'baseline', 'rps'):,.0f} | {w / med(mode, 'baseline', 'rps') if med(mode, 'baseline', 'rps') else 0:.2f} |" if baseline else ""))
PY

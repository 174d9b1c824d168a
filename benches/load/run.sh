#!/usr/bin/env bash
# weir's load harness (issue #9): one fixed fast upstream (nginx answering "ok\n"), then
# interleaved rounds of the direct path, an nginx proxy, HAProxy, a stock bare Pingora proxy,
# the same bare proxy with weir's process settings (jemalloc, one runtime per thread), the
# floor of weir's direct HTTP/1.1 path (`bare-h1-loop`: pingora-core's HTTP/1 codec in a bare
# loop, same binary), weir and weir with `--http1-path pingora` (every request through Pingora's proxy) — each with one
# worker and upstream keep-alive — in three modes:
#   h1    wrk -t1 -c32 (HTTP/1.1 keep-alive, as fast as the proxy goes)
#   h2c   h2load -c16 -m4 (HTTP/2 prior knowledge to the proxy, HTTP/1.1 upstream)
#   rate  h2load --h1 -c32 at a fixed RATE req/s (latency when nobody is saturated)
# Records req/s, p50/p99/p99.9, CPU seconds per 10k requests and RSS of the proxy process;
# prints Markdown tables with ratios to nginx, HAProxy and both bare proxies, and writes a plot
# (PLOT, default target/load/throughput.svg).
#
#   benches/load/run.sh                                  # 3 rounds of 10 s per target and mode
#   ROUNDS=5 DURATION=20 MODES="h1 rate" RATE=20000 benches/load/run.sh
#   TARGETS="weir nginx haproxy" ROUNDS=10 DURATION=8 MODES=h1 benches/load/run.sh  # side by side
#
# TARGETS (default: all of them) limits the rounds to some targets: with fewer, each is driven
# more often in the same time, and comparisons between them move less with the machine.
#
# weir runs with its access log off (`--log-level warn`), as nginx and HAProxy do here.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/prereqs.sh
source benches/load/nginx.sh
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
MODES="${MODES:-h1 h2c rate}"
RATE="${RATE:-10000}"
PLOT="${PLOT:-target/load/throughput.svg}"
TARGETS="${TARGETS:-direct nginx haproxy bare-pingora bare-pingora-tuned bare-h1-loop weir weir-pingora-path}"

weir_need_commands nginx:nginx haproxy:haproxy wrk:wrk
cargo build --release -q -p weir-proxy -p weir-bench-bare-pingora --bins

source benches/load/procs.sh

UP=19000; NGINX=19001; HAPROXY=19002; BARE=19003; WEIR=19004; ADMIN=19005; TUNED=19006
WEIR_PINGORA=19007; ADMIN_PINGORA=19008; H1_LOOP=19009
NGINX_H2C=19011; HAPROXY_H2C=19012

nginx_upstream_conf "$work" "127.0.0.1:$UP" >/dev/null
nginx_conf "$work" proxy "upstream u { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 1000000; }
    server { listen 127.0.0.1:$NGINX backlog=4096; keepalive_requests 1000000;
        location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }
    server { listen 127.0.0.1:$NGINX_H2C http2 backlog=4096; keepalive_requests 1000000;
        location / { proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" >/dev/null
cat > "$work/haproxy.cfg" <<CONF
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend f
    bind 127.0.0.1:$HAPROXY
    default_backend b
frontend f2
    bind 127.0.0.1:$HAPROXY_H2C proto h2
    default_backend b
backend b
    server s 127.0.0.1:$UP
CONF
mkdir -p "$work/manifests"
python3 benches/load/manifests.py 0 "$UP" "$work/manifests/bench.yaml"

nginx -c "$work/upstream/nginx.conf" & pids+=($!); up_pid=$!
nginx -c "$work/proxy/nginx.conf" & pids+=($!); nginx_pid=$!
haproxy -f "$work/haproxy.cfg" -db & pids+=($!); haproxy_pid=$!
target/release/bare-pingora "127.0.0.1:$BARE" "127.0.0.1:$UP" 1 >"$work/bare.log" 2>&1 & pids+=($!); bare_pid=$!
target/release/bare-pingora-tuned "127.0.0.1:$TUNED" "127.0.0.1:$UP" 1 no-steal >"$work/tuned.log" 2>&1 & pids+=($!); tuned_pid=$!
target/release/weir --manifests "$work/manifests" --http-listen "127.0.0.1:$WEIR" \
    --admin-listen "127.0.0.1:$ADMIN" --threads 1 --log-level warn --log-format text \
    >"$work/weir.log" 2>&1 & pids+=($!); weir_pid=$!
# The floor of weir's direct HTTP/1.1 path: the same pingora-core codec calls in a bare loop.
target/release/bare-pingora-tuned "127.0.0.1:$H1_LOOP" "127.0.0.1:$UP" 1 no-steal h1-loop >"$work/h1-loop.log" 2>&1 & pids+=($!); h1_loop_pid=$!
# weir with every request through Pingora's proxy (its path before the direct HTTP/1.1 path).
target/release/weir --manifests "$work/manifests" --http-listen "127.0.0.1:$WEIR_PINGORA" \
    --admin-listen "127.0.0.1:$ADMIN_PINGORA" --threads 1 --log-level warn --log-format text \
    --http1-path pingora >"$work/weir-pingora.log" 2>&1 & pids+=($!); weir_pingora_pid=$!
for port in $UP $NGINX $HAPROXY $BARE $TUNED $H1_LOOP $WEIR $WEIR_PINGORA; do
    for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
    curl -fs -o /dev/null "http://127.0.0.1:$port/" || { echo "port $port does not answer" >&2; exit 1; }
done

results="$work/results.tsv"
# One measurement: prints the RESULT line of latency.lua / h2load_result.py.
measure() { # $1 mode, $2 port
    rm -f "$work/h2load.log" # h2load appends to its log file
    case "$1" in
        h1) wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s benches/load/latency.lua "http://127.0.0.1:$2/" | grep '^RESULT' ;;
        h2c) h2load -c16 -m4 -D"$DURATION" --log-file="$work/h2load.log" "http://127.0.0.1:$2/" \
                | python3 benches/load/h2load_result.py "$work/h2load.log" ;;
        rate) h2load --h1 -c"$CONNECTIONS" --rps=$((RATE / CONNECTIONS)) -D"$DURATION" --log-file="$work/h2load.log" \
                "http://127.0.0.1:$2/" | python3 benches/load/h2load_result.py "$work/h2load.log" ;;
    esac
}
for round in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        for target in direct:$UP:$up_pid nginx:$NGINX:$nginx_pid haproxy:$HAPROXY:$haproxy_pid \
            bare-pingora:$BARE:$bare_pid bare-pingora-tuned:$TUNED:$tuned_pid \
            bare-h1-loop:$H1_LOOP:$h1_loop_pid weir:$WEIR:$weir_pid \
            weir-pingora-path:$WEIR_PINGORA:$weir_pingora_pid; do
            IFS=: read -r name port pid <<<"$target"
            [[ " $TARGETS " == *" $name "* ]] || continue
            if [ "$mode" = h2c ]; then
                case "$name" in
                    direct | bare-h1-loop) continue ;; # HTTP/1.1 only
                    nginx) port=$NGINX_H2C ;;
                    haproxy) port=$HAPROXY_H2C ;;
                esac
            fi
            before=$(ticks "$pid")
            out=$(measure "$mode" "$port")
            after=$(ticks "$pid")
            printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$mode" "$round" "$((after - before))" "$(rss_kib "$pid")" "$out" >>"$results"
            echo "round $round $mode $name: $out" >&2
        done
    done
done
mkdir -p "$(dirname "$PLOT")"
python3 benches/load/report.py "$results" "$(getconf CLK_TCK)" "$CONNECTIONS" "$DURATION" "$ROUNDS" "$RATE" "$PLOT"

#!/usr/bin/env bash
# Instructions per proxied request, counted by `valgrind --tool=callgrind` (repeatable, unlike
# wall-clock numbers on a shared 2-core machine). Each proxy runs under callgrind twice, for
# N1 and N2 HTTP/1.1 keep-alive requests from h2load (8 connections; H2LOAD_FLAGS) to the nginx upstream of
# run.sh; the difference divided by N2 - N1 is the cost of one request without start-up.
#
#   benches/load/instructions.sh            # weir and the bare Pingora proxies
#   TARGETS="weir" N1=2000 N2=12000 benches/load/instructions.sh
#   H2LOAD_FLAGS="-c8 -m4" benches/load/instructions.sh   # h2c (prior knowledge) to the proxy
#   UPSTREAM=h2c TARGETS=weir H2LOAD_FLAGS="-c8 -m4" benches/load/instructions.sh
#       # ... and h2c from weir to nginx (`backend-protocol: h2c`, as gRPC): the requests
#       # weir's HTTP/2 server hands to Pingora's proxy
#   TARGETS=weir WEIR_FLAGS="" benches/load/instructions.sh   # weir with its access log on
#   TARGETS=weir WEIR_BIN=/tmp/weir-before benches/load/instructions.sh   # another build
#   TARGETS=weir ROUTE_FILTERS=1 benches/load/instructions.sh   # a route with request filters
#       # (benches/load/manifests.py): against the plain route, what the filters cost
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/prereqs.sh
source benches/load/nginx.sh
N1="${N1:-2000}"
N2="${N2:-10000}"
TARGETS="${TARGETS:-bare-pingora bare-pingora-tuned weir}"
H2LOAD_FLAGS="${H2LOAD_FLAGS:---h1 -c8}"
# weir's log flags: its access log off by default, as the other targets log nothing.
WEIR_FLAGS="${WEIR_FLAGS---log-level warn}"
weir_need_commands nginx:nginx valgrind:valgrind
if [ -z "${WEIR_BIN:-}" ]; then
    cargo build --release -q -p weir-proxy -p weir-bench-bare-pingora --bins
    WEIR_BIN=target/release/weir
fi

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
UP=19100; PROXY=19101; ADMIN=19102
mkdir -p "$work/manifests"
python3 benches/load/manifests.py 0 "$UP" "$work/manifests/bench.yaml"
if [ "${UPSTREAM:-http1}" = h2c ]; then
    sed -i 's|metadata: {name: bench, namespace: bench}|metadata: {name: bench, namespace: bench, annotations: {weir.dev/backend-protocol: h2c}}|' \
        "$work/manifests/bench.yaml"
    nginx -c "$(nginx_upstream_conf "$work" "127.0.0.1:$UP http2")" & pids+=($!)
else
    nginx -c "$(nginx_upstream_conf "$work" "127.0.0.1:$UP")" & pids+=($!)
fi

command_of() {
    case "$1" in
        bare-pingora) echo "target/release/bare-pingora 127.0.0.1:$PROXY 127.0.0.1:$UP 1" ;;
        bare-pingora-tuned) echo "target/release/bare-pingora-tuned 127.0.0.1:$PROXY 127.0.0.1:$UP 1 no-steal" ;;
        weir) echo "$WEIR_BIN --manifests $work/manifests --http-listen 127.0.0.1:$PROXY --admin-listen 127.0.0.1:$ADMIN --threads 1 --log-format json $WEIR_FLAGS --shutdown-delay 0s --drain-timeout 1s" ;;
        *) echo "unknown target $1" >&2; exit 2 ;;
    esac
}
# Runs one proxy under callgrind for $2 requests; prints the instruction total.
count() {
    local out="$work/cg.$1.$2"
    # shellcheck disable=SC2046
    valgrind --tool=callgrind --callgrind-out-file="$out" $(command_of "$1") >"$work/$1.log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do curl -fs -o /dev/null "http://127.0.0.1:$PROXY/" && break; sleep 0.1; done
    # shellcheck disable=SC2086
    h2load $H2LOAD_FLAGS -n "$2" "http://127.0.0.1:$PROXY/" | grep -E "^requests:" >&2
    kill -INT "$pid"; wait "$pid" || true
    awk '/^(summary|totals):/ {print $2}' "$out" | tail -1
}
printf '| proxy | instructions per request |\n|---|---:|\n'
for target in $TARGETS; do
    a=$(count "$target" "$N1")
    b=$(count "$target" "$N2")
    printf '| %s | %s |\n' "$target" "$(( (b - a) / (N2 - N1) ))"
done

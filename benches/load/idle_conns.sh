#!/usr/bin/env bash
# Memory per idle client connection, weir against nginx and HAProxy configured as an ingress
# runs them (benches/load/proxies.sh), side by side: for each protocol, fresh proxies, then
# CONNS connections to each, one request answered on each, all held open
# (benches/load/idle_conns.py); RSS of each serving process before and after.
#   h1      plaintext HTTP/1.1 keep-alive
#   h2c     HTTP/2 prior knowledge (preface, SETTINGS, one GET)
#   tls-h1  TLS with ALPN http/1.1
#   tls-h2  TLS with ALPN h2
# Prints a Markdown table: KiB per connection, weir's ratio to nginx, RSS with CONNS open
# (HAProxy holds fewer where the descriptor limit is under twice CONNS: see below).
#
#   benches/load/idle_conns.sh                         # CONNS=10000, every protocol
#   CONNS=2000 PROTOS="h1 h2c" benches/load/idle_conns.sh
#   WEIR_BIN=/tmp/weir-before benches/load/idle_conns.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNS="${CONNS:-10000}"
PROTOS="${PROTOS:-h1 h2c tls-h1 tls-h2}"
PROFILE="${PROFILE:-release}"
WEIR_BIN="${WEIR_BIN:-}"

if [ -z "${PROTO:-}" ]; then
    source scripts/prereqs.sh
    weir_need_commands nginx:nginx haproxy:haproxy openssl:openssl
    if [ -z "$WEIR_BIN" ]; then
        cargo build --profile "$PROFILE" -q -p weir-proxy --bin weir
        WEIR_BIN="target/$PROFILE/weir"
    fi
    # Each connection is a descriptor in the client and in the proxy.
    if [ "$(ulimit -n)" -lt $((CONNS + 100)) ]; then
        ulimit -n $((CONNS + 100)) 2>/dev/null || {
            echo "idle_conns: $CONNS connections need 'ulimit -n' above $((CONNS + 100))" >&2
            exit 1
        }
    fi
    results="$(mktemp)"
    trap 'rm -f "$results"' EXIT
    for proto in $PROTOS; do
        PROTO="$proto" WEIR_BIN="$WEIR_BIN" "$0" | tee -a "$results" >&2
    done
    python3 - "$results" "$CONNS" "$PROTOS" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("RESULT"):
        f = dict(kv.split("=") for kv in line.split()[1:])
        rows[(f["proto"], f["target"])] = f
conns, protos = int(sys.argv[2]), sys.argv[3].split()
print(f"| protocol | nginx KiB/conn | HAProxy KiB/conn | weir KiB/conn | weir / nginx | RSS with {conns:,} open: nginx / HAProxy / weir (MiB) |")
print("|---|---:|---:|---:|---:|---:|")
for proto in protos:
    per = [float(rows.get((proto, t), {}).get("per_conn_kib", 0)) for t in ("nginx", "haproxy", "weir")]
    rss = [int(rows.get((proto, t), {}).get("after_kib", 0)) / 1024 for t in ("nginx", "haproxy", "weir")]
    held = int(rows.get((proto, "haproxy"), {}).get("conns", conns))
    ratio = per[2] / per[0] if per[0] else 0
    print(f"| {proto} | {per[0]:.1f} | {per[1]:.1f} | {per[2]:.1f} | {ratio:.2f} | "
          f"{rss[0]:.0f} / {rss[1]:.0f}{'' if held == conns else f' ({held:,})'} / {rss[2]:.0f} |")
PY
    exit 0
fi

# One protocol, fresh proxies: what an earlier protocol's connections left in an allocator's
# caches would otherwise be counted as free for the next.
source scripts/prereqs.sh
source benches/load/nginx.sh
source benches/load/procs.sh
MAX_CONNS=$((CONNS + 100))
# HAProxy reserves two descriptors per connection it allows (client and server side) and
# will not start above the hard limit: with fewer allowed, it holds fewer.
haproxy_conns=$(( ($(ulimit -Hn) - 400) / 2 ))
[ "$haproxy_conns" -lt "$CONNS" ] || haproxy_conns=$CONNS
HAPROXY_MAXCONN=$((haproxy_conns + 100))
WEIR_FLAGS="--max-connections $((CONNS + 100)) ${WEIR_FLAGS:-}"
BASELINE_BIN=""
source benches/load/proxies.sh
case "$PROTO" in
    h1 | h2c) nginx_port=$NGINX; haproxy_port=$HAPROXY; weir_port=$WEIR
        [ "$PROTO" = h2c ] && { nginx_port=$NGINX_H2C; haproxy_port=$HAPROXY_H2C; } ;;
    tls-h1 | tls-h2) nginx_port=$NGINX_TLS; haproxy_port=$HAPROXY_TLS; weir_port=$WEIR_TLS ;;
    *) echo "idle_conns: unknown protocol $PROTO" >&2; exit 1 ;;
esac
pidlist() { family "$1" | paste -sd, -; }
for target in "nginx:$nginx_port:$nginx_pid:$CONNS" "haproxy:$haproxy_port:$haproxy_pid:$haproxy_conns" \
    "weir:$weir_port:$weir_pid:$CONNS"; do
    IFS=: read -r name port pid conns <<<"$target"
    out=$(python3 benches/load/idle_conns.py "$PROTO" "$port" "$conns" "$(pidlist "$pid")")
    echo "$out target=$name"
done

#!/usr/bin/env bash
# Builds weir, starts three echo upstreams on 127.0.0.1:18081-18083 and weir on
# examples/quickstart (HTTP on 127.0.0.1:8080, admin on 127.0.0.1:9911), prints requests to
# try, and serves until Ctrl-C. No cluster needed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh

cargo build --release -p weir-proxy -p weir-testsupport --bins
bin="${CARGO_TARGET_DIR:-target}/release"

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

for upstream in web:18081 api:18082 blog:18083; do
    "$bin/weir-echo" --listen "127.0.0.1:${upstream#*:}" --service "${upstream%%:*}" &
    pids+=($!)
done

"$bin/weir" --manifests examples/quickstart \
    --http-listen 127.0.0.1:8080 --admin-listen 127.0.0.1:9911 --log-format text &
weir_pid=$!
pids+=("$weir_pid")

for _ in $(seq 1 100); do
    curl -fs -o /dev/null http://127.0.0.1:9911/readyz && break
    sleep 0.1
done

cat <<'TRY'

weir is serving examples/quickstart. Try:

  curl -H 'Host: shop.example.com' http://127.0.0.1:8080/            # -> web
  curl -H 'Host: shop.example.com' http://127.0.0.1:8080/api/items   # -> api (Prefix /api)
  curl -H 'Host: shop.example.com' http://127.0.0.1:8080/api/health  # -> web (Exact beats Prefix)
  curl -H 'Host: blog.example.com' http://127.0.0.1:8080/post/1      # -> blog
  curl -H 'Host: pr-42.preview.example.com' http://127.0.0.1:8080/   # -> blog (wildcard host)
  curl -H 'Host: other.example.org' http://127.0.0.1:8080/           # -> web (defaultBackend)
  curl --http2-prior-knowledge -H 'Host: shop.example.com' http://127.0.0.1:8080/api  # h2c
  curl http://127.0.0.1:9911/debug/routes                            # the live routing table
  curl http://127.0.0.1:9911/metrics                                 # Prometheus metrics

Edit examples/quickstart/*.yaml and the change is live about half a second later.
Ctrl-C stops everything.
TRY

wait "$weir_pid"

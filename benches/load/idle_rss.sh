#!/usr/bin/env bash
# Resident memory of an idle weir (one worker thread and the default of one per CPU) with
# ROUTES Ingresses of one rule each, after the first snapshot is live and before any request.
#
#   benches/load/idle_rss.sh            # ROUTES=1000
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUTES="${ROUTES:-1000}"
cargo build --release -q -p weir-proxy --bins
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/manifests"
python3 benches/load/manifests.py "$ROUTES" 8080 "$work/manifests/routes.yaml"
printf '| routes | --threads | RSS at idle |\n|---:|---:|---:|\n'
for threads in 1 "$(nproc)"; do
    target/release/weir --manifests "$work/manifests" --http-listen 127.0.0.1:19201 \
        --admin-listen 127.0.0.1:19202 --threads "$threads" --log-level warn >"$work/weir.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:19202/readyz && break; sleep 0.1; done
    curl -fs http://127.0.0.1:19202/readyz >/dev/null || { cat "$work/weir.log" >&2; exit 1; }
    sleep 2
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    routes=$(curl -fs http://127.0.0.1:19202/metrics | awk '/^weir_routes / {print $2}')
    printf '| %s | %s | %.1f MiB |\n' "$routes" "$threads" "$(echo "$rss / 1024" | bc -l)"
    kill -INT "$pid"; wait "$pid" || true; pid=""
done

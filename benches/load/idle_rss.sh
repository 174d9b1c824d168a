#!/usr/bin/env bash
# Resident memory of an idle weir (one worker thread and the default of one per CPU) with
# ROUTES Ingresses of one rule each, after the first snapshot is live and before any request:
# 2 s after /readyz (what the config load left) and 25 s after (once jemalloc's 10 s decay
# has returned freed pages; the figure of record), with jemalloc's own accounting.
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
printf '| routes | --threads | RSS after 2 s | RSS at idle (25 s) | allocated | active |\n|---:|---:|---:|---:|---:|---:|\n'
mib() { echo "$1 / 1048576" | bc -l; }
for threads in 1 "$(nproc)"; do
    target/release/weir --manifests "$work/manifests" --http-listen 127.0.0.1:19201 \
        --admin-listen 127.0.0.1:19202 --threads "$threads" --log-level warn >"$work/weir.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:19202/readyz && break; sleep 0.1; done
    curl -fs http://127.0.0.1:19202/readyz >/dev/null || { cat "$work/weir.log" >&2; exit 1; }
    sleep 2
    early=$(awk '/VmRSS/ {print $2 * 1024}' "/proc/$pid/status")
    sleep 23
    rss=$(awk '/VmRSS/ {print $2 * 1024}' "/proc/$pid/status")
    curl -fs http://127.0.0.1:19202/metrics >"$work/metrics"
    routes=$(awk '/^weir_routes / {print $2}' "$work/metrics")
    allocated=$(awk '/^weir_allocator_bytes\{state="allocated"\}/ {print $2}' "$work/metrics")
    active=$(awk '/^weir_allocator_bytes\{state="active"\}/ {print $2}' "$work/metrics")
    printf '| %s | %s | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB |\n' "$routes" "$threads" \
        "$(mib "$early")" "$(mib "$rss")" "$(mib "$allocated")" "$(mib "$active")"
    kill -INT "$pid"; wait "$pid" || true; pid=""
done

#!/usr/bin/env bash
# The weir-client fan-out example (docs/client.md): builds the weir proxy and the example in
# release, then measures a 100-call batch through weir-client in-process and through the
# proxy, side by side. Extra arguments go to the example (--via, --rounds, --batches,
# --concurrency, --products, --serve ADDR).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p weir-proxy --bin weir
cargo run --release --locked -p weir-client --example fanout -- --weir "${CARGO_TARGET_DIR:-target}/release/weir" "$@"

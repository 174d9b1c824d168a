#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy (warnings are errors) and all tests
# (unit, translation, end-to-end against the real weir binary and echo upstreams).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

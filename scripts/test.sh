#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy (warnings are errors) and all tests
# (unit, translation, end-to-end against the real weir binary and echo upstreams).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/prereqs.sh

# A CI run builds everything once: incremental caches would only cost disk (several GiB).
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# No crate's modules import each other in a circle (each layer stands on the ones below).
python3 scripts/module_cycles.py
# The HTTP/2 conformance suite (a cargo install of a few minutes), before the tests need it.
bash scripts/tools.sh httpwg >/dev/null
cargo test --workspace --locked

# A short fuzz run of every cargo-fuzz target (libFuzzer; its nightly-only compiler flags are
# allowed on the stable toolchain with RUSTC_BOOTSTRAP=1): FUZZ_SECONDS each (0 skips).
# New inputs go to a scratch directory; the seed corpus in fuzz/corpus stays as committed.
# A crash fails the run and leaves its input in fuzz/artifacts/ (turn it into a test).
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
if [ "$FUZZ_SECONDS" -gt 0 ]; then
    command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    for target in auth manifests annotations router request_path h1_request hpack h2_conn; do
        mkdir -p "$scratch/$target"
        log="$scratch/$target.log"
        if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --sanitizer none "$target" \
            "$scratch/$target" "fuzz/corpus/$target" -- \
            -max_total_time="$FUZZ_SECONDS" -max_len=4096 -print_final_stats=1 >"$log" 2>&1; then
            tail -n 40 "$log" >&2
            echo "fuzz target $target failed; its input is in fuzz/artifacts/$target/" >&2
            exit 1
        fi
        grep -E "stat::number_of_executed_units" "$log" | sed "s/^/fuzz $target: /"
    done
fi


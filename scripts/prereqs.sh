#!/usr/bin/env bash
# Installs what building and testing weir needs on a fresh Debian machine with a Rust
# toolchain: Pingora's zlib-ng needs cmake, ring and zstd need a C compiler, the tests use
# curl, h2load and Prometheus. Sourced by the other
# scripts; installs only what is missing.
set -euo pipefail

# Installs the Debian package of each COMMAND:PACKAGE pair whose command is missing.
weir_need_commands() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing: ${missing[*]}" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

weir_need_packages() {
    # h2load: the HTTPS listener's HTTP/2 load test; prometheus and promtool: the metrics
    # tests scrape weir with a real Prometheus; redis-server: the fleet-wide rate limits'
    # tests share counts through a real Redis.
    weir_need_commands cmake:cmake cc:build-essential curl:curl h2load:nghttp2-client \
        promtool:prometheus redis-server:redis-server
    if ! command -v cargo >/dev/null 2>&1; then
        echo "weir needs a Rust toolchain (cargo); install it with rustup first" >&2
        exit 1
    fi
}

weir_need_packages

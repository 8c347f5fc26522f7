#!/usr/bin/env bash
# All tests: format + lint (host and wasm32), unit + property tests of the core, then the
# end-to-end suite against the real Envoy 1.40 and the Flask backend. Non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

step() { printf '\n== %s\n' "$*"; }

step "format and lint (host, then wasm32-wasip1 where the glue lives)"
cargo fmt --all -- --check
cargo clippy --quiet --all-targets -- -D warnings
cargo clippy --quiet --target wasm32-wasip1 -p webhook-guard-filter -p webhook-guard-core -- -D warnings

step "unit and property tests (core, host)"
cargo test --workspace

step "build the filter and the CLI"
cargo build --quiet --release --target wasm32-wasip1 -p webhook-guard-filter
cargo build --quiet --release -p webhook-guard-cli
wasm=target/wasm32-wasip1/release/webhook_guard.wasm
echo "$wasm: $(wc -c < "$wasm") bytes"

step "end-to-end tests (real Envoy 1.40 + Flask on 127.0.0.1)"
.venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider "$@"

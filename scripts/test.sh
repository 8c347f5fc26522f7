#!/usr/bin/env bash
# All tests: format + lint (host and wasm32), unit + property tests of the core, then the
# end-to-end suite against the real Envoy 1.40 and the Flask backend, once with each build (the
# wasm module and the native dynamic module). Non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

step() { printf '\n== %s\n' "$*"; }

step "format and lint (host, then wasm32-wasip1 where the glue lives)"
cargo fmt --all -- --check
cargo clippy --quiet --all-targets -- -D warnings
cargo clippy --quiet --target wasm32-wasip1 -p webhook-guard-filter -p webhook-guard-core -- -D warnings

step "Prometheus rules: syntax and unit tests (deploy/prometheus/)"
(cd deploy/prometheus && promtool check rules webhook-guard.rules.yml &&
  promtool test rules webhook-guard.rules.test.yml webhook-guard.rules.rotation.test.yml)

step "unit and property tests (core, host)"
cargo test --workspace

step "build the filter (wasm and native) and the CLI"
cargo build --quiet --release --target wasm32-wasip1 -p webhook-guard-filter
cargo build --quiet --profile native -p webhook-guard-native
cargo build --quiet --release -p webhook-guard-cli
wasm=target/wasm32-wasip1/release/webhook_guard.wasm
native=target/native/libwebhook_guard_native.so
echo "$wasm: $(wc -c < "$wasm") bytes; $native: $(wc -c < "$native") bytes"
# A native build whose requests can panic on demand: proves the panic barrier (test_native.py).
cargo build --quiet --profile native -p webhook-guard-native --features test-panic --target-dir target/panic

step "end-to-end tests (real Envoy 1.40 + Flask on 127.0.0.1), each build"
.venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider "$@"

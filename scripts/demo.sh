#!/usr/bin/env bash
# The demo: builds the filter, starts Flask + the real Envoy 1.40 on 127.0.0.1, sends a table of
# legit, forged, stale and rotated-secret webhooks, prints what happened, then stops everything.
#   scripts/demo.sh          run the scenario table and exit (non-zero if anything misbehaved)
#   scripts/demo.sh --serve  start the stack and stay in the foreground until Ctrl-C / SIGTERM
#   --tls                    also serve HTTPS (self-signed certificate made here) and send the
#                            table over it
#   --replicas N             N (2-4) Envoy replicas sharing one etcd (Debian's etcd-server):
#                            shows a delivery admitted once whichever replica it reaches
#   --native                 run the native build (an Envoy dynamic module) instead of the
#                            wasm one: the same table, the same answers
# Ports: WEBHOOK_DEMO_ENVOY_PORT (10000), WEBHOOK_DEMO_ADMIN_PORT (9901), WEBHOOK_DEMO_BACKEND_PORT (5000),
# WEBHOOK_DEMO_BACKEND_ADMIN_PORT (5001: the backend's /events and /admin, never proxied), WEBHOOK_DEMO_TLS_PORT (10443), WEBHOOK_DEMO_ETCD_PORT (2379) and WEBHOOK_DEMO_ETCD_PEER_PORT (2380);
# replica i (from 0) listens on ENVOY_PORT+i with admin ADMIN_PORT+i.
set -euo pipefail
cd "$(dirname "$0")/.."

usage="usage: scripts/demo.sh [--serve] [--tls] [--replicas N] [--native]"
mode=table
tls=""
replicas=1
build=wasm
while [ $# -gt 0 ]; do
  case "$1" in
    --serve) mode=serve ;;
    --tls) tls=yes ;;
    --native) build=native ;;
    --replicas) replicas=${2:-}; shift ;;
    --replicas=*) replicas=${1#*=} ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
  shift
done
if ! [[ "$replicas" =~ ^[1-4]$ ]]; then
  echo "--replicas takes 1 to 4; $usage" >&2
  exit 2
fi
if [ "$replicas" -gt 1 ] && [ -n "$tls" ]; then
  echo "--tls and --replicas are separate demos; pick one" >&2
  exit 2
fi

scripts/setup.sh
export WEBHOOK_DEMO_ENVOY_PORT=${WEBHOOK_DEMO_ENVOY_PORT:-10000}
export WEBHOOK_DEMO_ADMIN_PORT=${WEBHOOK_DEMO_ADMIN_PORT:-9901}
export WEBHOOK_DEMO_BACKEND_PORT=${WEBHOOK_DEMO_BACKEND_PORT:-5000}
export WEBHOOK_DEMO_BACKEND_ADMIN_PORT=${WEBHOOK_DEMO_BACKEND_ADMIN_PORT:-$((WEBHOOK_DEMO_BACKEND_PORT + 1))}
export WEBHOOK_DEMO_TLS_PORT=${WEBHOOK_DEMO_TLS_PORT:-10443}
export WEBHOOK_DEMO_ETCD_PORT=${WEBHOOK_DEMO_ETCD_PORT:-2379}
export WEBHOOK_DEMO_ETCD_PEER_PORT=${WEBHOOK_DEMO_ETCD_PEER_PORT:-2380}
base_id=${WEBHOOK_DEMO_BASE_ID:-$((WEBHOOK_DEMO_ENVOY_PORT % 60000))}

if [ "$build" = native ]; then
  echo "== building the filter (native Envoy dynamic module) and the webhook-guard CLI"
  cargo build --quiet --profile native -p webhook-guard-native
  module=target/native/libwebhook_guard_native.so
  echo "   $module ($(wc -c < "$module") bytes)"
  # Envoy finds libwebhook_guard_native.so here.
  export ENVOY_DYNAMIC_MODULES_SEARCH_PATH="$PWD/target/native"
else
  echo "== building the filter (wasm32-wasip1, release) and the webhook-guard CLI"
  cargo build --quiet --release --target wasm32-wasip1 -p webhook-guard-filter
  wasm=target/wasm32-wasip1/release/webhook_guard.wasm
  echo "   $wasm ($(wc -c < "$wasm") bytes)"
fi
cargo build --quiet --release -p webhook-guard-cli

# Demo secrets: printed because they are demo values. Set the variables to use your own.
declare -A demo_secrets=(
  [GITHUB_WEBHOOK_SECRET]="demo-github-secret"
  [GITHUB_WEBHOOK_SECRET_PREVIOUS]="demo-github-secret-old"
  [STRIPE_WEBHOOK_SECRET]="whsec_demo_stripe_secret"
  [STRIPE_WEBHOOK_SECRET_PREVIOUS]="whsec_demo_stripe_secret_old"
  [SLACK_SIGNING_SECRET]="demo-slack-signing-secret"
  [SLACK_SIGNING_SECRET_PREVIOUS]="demo-slack-signing-secret-old"
  [SHOPIFY_WEBHOOK_SECRET]="demo-shopify-secret"
  [SHOPIFY_WEBHOOK_SECRET_PREVIOUS]="demo-shopify-secret-old"
  [STANDARD_WEBHOOK_SECRET]="whsec_ZGVtby1zdGFuZGFyZC13ZWJob29rcy1zZWNyZXQtMzI="
  [STANDARD_WEBHOOK_SECRET_PREVIOUS]="whsec_ZGVtby1zdGFuZGFyZC13ZWJob29rcy1vbGQtc2VjcmV0"
  [CUSTOM_WEBHOOK_SECRET]="demo-custom-secret"
  [CUSTOM_WEBHOOK_SECRET_PREVIOUS]="demo-custom-secret-old"
  [ENVELOPE_WEBHOOK_SECRET]="demo-envelope-secret"
  [ENVELOPE_WEBHOOK_SECRET_PREVIOUS]="demo-envelope-secret-old"
  [ENVELOPE_ENCRYPTION_KEY_SECRET]="ZGVtby1lbnZlbG9wZS1lbmNyeXB0aW9uLWtleS0zMmI="
  [ENVELOPE_ENCRYPTION_KEY_SECRET_PREVIOUS]="ZGVtby1lbnZlbG9wZS1lbmNyeXB0aW9uLWtleS1vbGQ="
)
echo "== secrets (demo values unless set in the environment)"
for name in $(printf '%s\n' "${!demo_secrets[@]}" | sort); do
  if [ -z "${!name:-}" ]; then
    export "$name=${demo_secrets[$name]}"
    echo "   $name=${demo_secrets[$name]}"
  else
    echo "   $name=(from your environment, not shown)"
  fi
done

run_dir=$(mktemp -d -t webhook-guard-demo.XXXXXX)
plugin_config=envoy/webhook-guard.json
render_args=()
if [ "$replicas" -gt 1 ]; then
  # The same policies, each keeping its replay claims in etcd.
  plugin_config="$run_dir/webhook-guard.replicas.json"
  .venv/bin/python -c 'import sys; sys.path.insert(0, "scripts"); from render_envoy import replicated; print(replicated(open("envoy/webhook-guard.json").read()))' > "$plugin_config"
  render_args=(--replicas --etcd-port "$WEBHOOK_DEMO_ETCD_PORT")
fi
echo "== checking the plugin configuration with the filter's own validator"
target/release/webhook-guard check-config "$plugin_config" | sed 's/^/   /'

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ports=("$WEBHOOK_DEMO_BACKEND_PORT" "$WEBHOOK_DEMO_BACKEND_ADMIN_PORT")
for ((i = 0; i < replicas; i++)); do
  ports+=($((WEBHOOK_DEMO_ENVOY_PORT + i)) $((WEBHOOK_DEMO_ADMIN_PORT + i)))
done
[ -n "$tls" ] && ports+=("$WEBHOOK_DEMO_TLS_PORT")
[ "$replicas" -gt 1 ] && ports+=("$WEBHOOK_DEMO_ETCD_PORT" "$WEBHOOK_DEMO_ETCD_PEER_PORT")
for port in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port on 127.0.0.1 is already in use; set WEBHOOK_DEMO_*_PORT to free ports" >&2
    exit 1
  fi
done

echo "== starting the Flask backend on 127.0.0.1:$WEBHOOK_DEMO_BACKEND_PORT (its /events and /admin on :$WEBHOOK_DEMO_BACKEND_ADMIN_PORT, loopback only)"
.venv/bin/python demo/backend.py > "$run_dir/backend.log" 2>&1 &
pids+=($!)

etcd_pid=""
if [ "$replicas" -gt 1 ]; then
  etcd_url="http://127.0.0.1:$WEBHOOK_DEMO_ETCD_PORT"
  peer_url="http://127.0.0.1:$WEBHOOK_DEMO_ETCD_PEER_PORT"
  echo "== starting etcd $(etcd --version | head -1 | cut -d' ' -f3) on $etcd_url (the replicas' shared replay store)"
  etcd --name demo --data-dir "$run_dir/etcd" --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
    --listen-peer-urls "$peer_url" --initial-advertise-peer-urls "$peer_url" --initial-cluster "demo=$peer_url" \
    --auto-compaction-mode periodic --auto-compaction-retention 1h > "$run_dir/etcd.log" 2>&1 &
  etcd_pid=$!
  pids+=("$etcd_pid")
  for _ in $(seq 1 100); do
    curl -fsS "$etcd_url/health" 2>/dev/null | grep -q '"health":"true"' && break
    sleep 0.2
  done
fi

access_log="$run_dir/access.log"
[ "$mode" = serve ] && access_log=/dev/stdout
tls_args=()
envoy_url="http://127.0.0.1:$WEBHOOK_DEMO_ENVOY_PORT"
if [ -n "$tls" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=localhost" \
    -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$run_dir/tls.key" -out "$run_dir/tls.crt" >/dev/null 2>&1
  tls_args=(--tls-port "$WEBHOOK_DEMO_TLS_PORT" --tls-cert "$run_dir/tls.crt" --tls-key "$run_dir/tls.key")
  envoy_url="https://127.0.0.1:$WEBHOOK_DEMO_TLS_PORT"
  echo "   HTTPS on 127.0.0.1:$WEBHOOK_DEMO_TLS_PORT (self-signed certificate $run_dir/tls.crt)"
fi
envoy_urls=() admin_urls=()
for ((i = 0; i < replicas; i++)); do
  port=$((WEBHOOK_DEMO_ENVOY_PORT + i)) admin=$((WEBHOOK_DEMO_ADMIN_PORT + i))
  suffix=""; [ "$i" -gt 0 ] && suffix="-$i"
  [ "$replicas" -gt 1 ] && echo "== starting Envoy 1.40 replica #$((i + 1)) on 127.0.0.1:$port (admin :$admin)" ||
    echo "== starting Envoy 1.40 on 127.0.0.1:$port (admin :$admin)"
  .venv/bin/python scripts/render_envoy.py --envoy-port "$port" --admin-port "$admin" --access-log "$access_log$suffix" \
    --plugin-config "$plugin_config" --build "$build" "${tls_args[@]}" -o "$run_dir/envoy$suffix.yaml"
  "$(.venv/bin/python scripts/envoy_path.py)" -c "$run_dir/envoy$suffix.yaml" --base-id "$((base_id + i))" \
    --concurrency 2 --log-level warn --component-log-level wasm:info,dynamic_modules:info --file-flush-interval-msec 200 \
    > "$run_dir/envoy$suffix.log" 2>&1 &
  pids+=($!)
  envoy_urls+=("http://127.0.0.1:$port") admin_urls+=("http://127.0.0.1:$admin")
done

ready=""
for _ in $(seq 1 150); do
  ready=yes
  curl -fsS "http://127.0.0.1:$WEBHOOK_DEMO_BACKEND_ADMIN_PORT/healthz" >/dev/null 2>&1 || ready=""
  for admin in "${admin_urls[@]}"; do
    [ "$(curl -fsS "$admin/ready" 2>/dev/null)" = LIVE ] || ready=""
  done
  [ -n "$ready" ] && break
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "the stack did not become ready; Envoy logs:" >&2
  for ((i = 0; i < replicas; i++)); do
    suffix=""; [ "$i" -gt 0 ] && suffix="-$i"
    echo "-- envoy$suffix.log" >&2
    tail -40 "$run_dir/envoy$suffix.log" >&2
  done
  exit 1
fi

if [ "$mode" = serve ] && [ "$replicas" -gt 1 ]; then
  cat <<TXT
== serving $replicas replicas (${envoy_urls[*]}) that share etcd at $etcd_url. Try:
   export STRIPE_WEBHOOK_SECRET=...   # the value printed above, in your shell
   body='{"id":"evt_1"}'
   sig=\$(target/release/webhook-guard sign --provider stripe --secret-env STRIPE_WEBHOOK_SECRET --body "\$body")
   curl -i -X POST ${envoy_urls[0]}/webhooks/stripe -d "\$body" -H "\$sig"   # 200 on replica #1
   curl -i -X POST ${envoy_urls[1]}/webhooks/stripe -d "\$body" -H "\$sig"   # 409 replayed on replica #2
   curl -s ${admin_urls[1]}/stats | grep webhook_guard.etcd         # round trips, latency, cache hits
   Ctrl-C stops everything.
TXT
  tail -f "$run_dir"/envoy*.log &
  pids+=($!)
  wait -n "${pids[@]:0:$((replicas + 2))}" || true
  echo "a demo process exited; stopping" >&2
  exit 1
fi

if [ "$mode" = serve ]; then
  curl_tls=""
  [ -n "$tls" ] && curl_tls="--cacert $run_dir/tls.crt "
  cat <<TXT
== serving on $envoy_url. Try:
   curl -i ${curl_tls}-X POST $envoy_url/webhooks/github -d '{}'      # 400 missing_signature
   export STRIPE_WEBHOOK_SECRET=...   # the value printed above, in your shell
   body='{"id":"evt_1"}'
   sig=\$(target/release/webhook-guard sign --provider stripe --secret-env STRIPE_WEBHOOK_SECRET --body "\$body")
   curl -i ${curl_tls}-X POST $envoy_url/webhooks/stripe -d "\$body" -H "\$sig"   # 200, then 409 replayed
   curl -s http://127.0.0.1:$WEBHOOK_DEMO_BACKEND_ADMIN_PORT/events    # what reached Flask (not proxied)
   curl -s http://127.0.0.1:$WEBHOOK_DEMO_ADMIN_PORT/stats | grep webhook_guard   # counters
   Ctrl-C stops Envoy and Flask.
TXT
  tail -f "$run_dir/envoy.log" &
  pids+=($!)
  # Stay in the foreground until a signal, or until Envoy or Flask dies.
  wait -n "${pids[0]}" "${pids[1]}" || true
  echo "a demo process exited; stopping" >&2
  exit 1
fi

# The three metrics a payment team watches (seed 002), for the run just made, from the counters and
# the verdict histogram of every Envoy (docs/operations.md has the recording rules and alerts).
key_metrics() {
  echo
  echo "== key metrics of this run (scripts/webhook_metrics.py; Prometheus rules: deploy/prometheus/)"
  local args=()
  for admin in "$@"; do args+=(--admin "$admin"); done
  .venv/bin/python scripts/webhook_metrics.py "${args[@]}" || true
}

echo "== scenarios"
echo
status=0
ca_args=()
[ -n "$tls" ] && ca_args=(--ca "$run_dir/tls.crt")
if [ "$replicas" -gt 1 ]; then
  replica_args=()
  for ((i = 0; i < replicas; i++)); do replica_args+=(--envoy "${envoy_urls[i]}" --admin "${admin_urls[i]}"); done
  (cd demo && ../.venv/bin/python replicas.py "${replica_args[@]}" --etcd-pid "$etcd_pid" \
    --backend "http://127.0.0.1:$WEBHOOK_DEMO_BACKEND_ADMIN_PORT") || status=$?
  key_metrics "${admin_urls[@]}"
  echo
  echo "== stopping"
  exit "$status"
fi
(cd demo && ../.venv/bin/python scenarios.py --envoy "$envoy_url" "${ca_args[@]}") || status=$?
echo
echo "== a rejection as Envoy logged it (one JSON line per rejection)"
grep -m1 '"event":"webhook_rejected"' "$run_dir/envoy.log" | sed 's/^[^{]*//' || true
echo
echo "== access log lines carry the verdict (%FILTER_STATE(wasm.webhook_verdict:PLAIN)%)"
sleep 1.2
head -n 3 "$access_log" || true
key_metrics "${admin_urls[@]}"
echo
echo "== stopping"
exit "$status"

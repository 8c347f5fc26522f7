#!/usr/bin/env bash
# The demo: builds the filter, starts Flask + the real Envoy 1.40 on 127.0.0.1, sends a table of
# legit, forged, stale and rotated-secret webhooks, prints what happened, then stops everything.
#   scripts/demo.sh          run the scenario table and exit (non-zero if anything misbehaved)
#   scripts/demo.sh --serve  start the stack and stay in the foreground until Ctrl-C / SIGTERM
#   --tls                    also serve HTTPS (self-signed certificate made here) and send the
#                            table over it
# Ports: WEBHOOK_DEMO_ENVOY_PORT (10000), WEBHOOK_DEMO_ADMIN_PORT (9901), WEBHOOK_DEMO_BACKEND_PORT (5000),
# WEBHOOK_DEMO_TLS_PORT (10443).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=table
tls=""
for arg in "$@"; do
  case "$arg" in
    --serve) mode=serve ;;
    --tls) tls=yes ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "usage: scripts/demo.sh [--serve] [--tls]" >&2; exit 2 ;;
  esac
done

scripts/setup.sh
export WEBHOOK_DEMO_ENVOY_PORT=${WEBHOOK_DEMO_ENVOY_PORT:-10000}
export WEBHOOK_DEMO_ADMIN_PORT=${WEBHOOK_DEMO_ADMIN_PORT:-9901}
export WEBHOOK_DEMO_BACKEND_PORT=${WEBHOOK_DEMO_BACKEND_PORT:-5000}
export WEBHOOK_DEMO_TLS_PORT=${WEBHOOK_DEMO_TLS_PORT:-10443}
base_id=${WEBHOOK_DEMO_BASE_ID:-$((WEBHOOK_DEMO_ENVOY_PORT % 60000))}

echo "== building the filter (wasm32-wasip1, release) and the webhook-guard CLI"
cargo build --quiet --release --target wasm32-wasip1 -p webhook-guard-filter
cargo build --quiet --release -p webhook-guard-cli
wasm=target/wasm32-wasip1/release/webhook_guard.wasm
echo "   $wasm ($(wc -c < "$wasm") bytes)"

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

echo "== checking the plugin configuration with the filter's own validator"
target/release/webhook-guard check-config envoy/webhook-guard.json | sed 's/^/   /'

run_dir=$(mktemp -d -t webhook-guard-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$run_dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ports=("$WEBHOOK_DEMO_ENVOY_PORT" "$WEBHOOK_DEMO_ADMIN_PORT" "$WEBHOOK_DEMO_BACKEND_PORT")
[ -n "$tls" ] && ports+=("$WEBHOOK_DEMO_TLS_PORT")
for port in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port on 127.0.0.1 is already in use; set WEBHOOK_DEMO_*_PORT to free ports" >&2
    exit 1
  fi
done

echo "== starting the Flask backend on 127.0.0.1:$WEBHOOK_DEMO_BACKEND_PORT"
.venv/bin/python demo/backend.py > "$run_dir/backend.log" 2>&1 &
pids+=($!)

echo "== starting Envoy 1.40 on 127.0.0.1:$WEBHOOK_DEMO_ENVOY_PORT (admin :$WEBHOOK_DEMO_ADMIN_PORT)"
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
.venv/bin/python scripts/render_envoy.py --access-log "$access_log" "${tls_args[@]}" -o "$run_dir/envoy.yaml"
"$(.venv/bin/python scripts/envoy_path.py)" -c "$run_dir/envoy.yaml" --base-id "$base_id" \
  --concurrency 2 --log-level warn --component-log-level wasm:info --file-flush-interval-msec 200 > "$run_dir/envoy.log" 2>&1 &
pids+=($!)

ready=""
for _ in $(seq 1 150); do
  if [ "$(curl -fsS "http://127.0.0.1:$WEBHOOK_DEMO_ADMIN_PORT/ready" 2>/dev/null)" = LIVE ] &&
     curl -fsS "http://127.0.0.1:$WEBHOOK_DEMO_BACKEND_PORT/healthz" >/dev/null 2>&1; then
    ready=yes
    break
  fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "the stack did not become ready; Envoy log:" >&2
  tail -40 "$run_dir/envoy.log" >&2
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
   curl -s ${curl_tls}$envoy_url/events                               # what reached Flask
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

echo "== scenarios"
echo
status=0
ca_args=()
[ -n "$tls" ] && ca_args=(--ca "$run_dir/tls.crt")
(cd demo && ../.venv/bin/python scenarios.py --envoy "$envoy_url" "${ca_args[@]}") || status=$?
echo
echo "== a rejection as Envoy logged it (one JSON line per rejection)"
grep -m1 '"event":"webhook_rejected"' "$run_dir/envoy.log" | sed 's/.*wasm log [^{]*//' || true
echo
echo "== access log lines carry the verdict (%FILTER_STATE(wasm.webhook_verdict:PLAIN)%)"
sleep 1.2
head -n 3 "$access_log" || true
echo
echo "== stopping"
exit "$status"

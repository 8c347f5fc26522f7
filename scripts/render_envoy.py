#!/usr/bin/env python3
"""Render envoy/envoy.yaml.tmpl into a runnable Envoy config.

One template serves the native demo, the end-to-end tests and docker-compose; only addresses,
ports and paths differ. Values come from flags, falling back to the demo's environment
variables (WEBHOOK_DEMO_ENVOY_PORT, WEBHOOK_DEMO_ADMIN_PORT, WEBHOOK_DEMO_BACKEND_PORT).
"""
import argparse
import json
import os
import pathlib
import string
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def render(
    *,
    envoy_port: int,
    admin_port: int,
    backend_port: int,
    wasm_path: str,
    plugin_config: str,
    listen_address: str = "127.0.0.1",
    admin_address: str = "127.0.0.1",
    backend_address: str = "127.0.0.1",
    access_log_path: str = "/dev/stdout",
    template: pathlib.Path = ROOT / "envoy" / "envoy.yaml.tmpl",
    check_json: bool = True,
    rate_limit: int = 1000,
    tls_port: int | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    etcd_address: str = "127.0.0.1",
    etcd_port: int = 2379,
    max_heap_bytes: int = 1 << 30,
    build: str = "wasm",
) -> str:
    # Normalise the JSON (and fail early on a syntax error) before inlining it; tests that
    # feed Envoy a broken document on purpose pass check_json=False.
    config_text = json.dumps(json.loads(plugin_config), separators=(",", ":")) if check_json else plugin_config
    values = {
        "LISTEN_ADDRESS": listen_address,
        "ENVOY_PORT": str(envoy_port),
        "ADMIN_ADDRESS": admin_address,
        "ADMIN_PORT": str(admin_port),
        "BACKEND_ADDRESS": backend_address,
        "BACKEND_PORT": str(backend_port),
        "WASM_PATH": wasm_path,
        "ACCESS_LOG_PATH": access_log_path,
        # A JSON string literal is a valid YAML double-quoted scalar.
        "PLUGIN_CONFIG": json.dumps(config_text),
        "RATE_LIMIT": str(rate_limit),
        "ETCD_ADDRESS": etcd_address,
        "ETCD_PORT": str(etcd_port),
        "TLS_LISTENER": tls_listener(listen_address, tls_port, tls_cert, tls_key) if tls_port else "",
        "BODY_BUFFER_LIMIT": str(body_buffer_limit(plugin_config)),
        "MAX_HEAP_BYTES": str(max_heap_bytes),
    }
    # The filter block first (it has placeholders of its own), then every value.
    snippet = (ROOT / "envoy" / f"filter-{build}.yaml.tmpl").read_text()
    snippet = "".join(line for line in snippet.splitlines(keepends=True) if not line.startswith("#"))
    text = template.read_text().replace("${GUARD_FILTER}\n", snippet)
    return string.Template(text).substitute(values)


# What Envoy may buffer of a body beyond the largest max_body_bytes: one read (32 KiB) and then
# some, measured: with less, Envoy's plain 413 can fire before the filter's body_too_large.
BODY_HEADROOM = 64 * 1024
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


def body_buffer_limit(plugin_config: str) -> int:
    """The route body buffer for a plugin config: its largest max_body_bytes plus headroom."""
    try:
        policies = json.loads(plugin_config).get("policies", [])
        largest = max((p.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES) for p in policies
                       if isinstance(p, dict)), default=DEFAULT_MAX_BODY_BYTES)
    except (ValueError, AttributeError, TypeError):
        largest = DEFAULT_MAX_BODY_BYTES  # a deliberately broken config (tests): any size
    return int(largest) + BODY_HEADROOM


def tls_listener(address: str, port: int, cert: str | None, key: str | None) -> str:
    if not (cert and key):
        raise ValueError("a TLS listener needs a certificate and a key")
    return f"""  - name: webhooks_tls
    address:
      socket_address: {{ address: {address}, port_value: {port} }}
    per_connection_buffer_limit_bytes: 32768
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain: {{ filename: {cert} }}
              private_key: {{ filename: {key} }}
      filters:
      - *webhooks_hcm"""


# The docker-compose stack: every address inside its network, paths inside the Envoy container.
COMPOSE = {
    "listen_address": "0.0.0.0",
    "admin_address": "0.0.0.0",
    "backend_address": "backend",
    "backend_port": 5000,
    "envoy_port": 10000,
    "admin_port": 9901,
    "wasm_path": "/etc/envoy/webhook_guard.wasm",
    "access_log_path": "/dev/stdout",
    "etcd_address": "etcd",
    "etcd_port": 2379,
}
COMPOSE_OUTPUT = ROOT / "envoy" / "compose" / "envoy.yaml"


COMPOSE_REPLICAS_OUTPUT = ROOT / "envoy" / "compose" / "envoy-replicas.yaml"
COMPOSE_NATIVE_OUTPUT = ROOT / "envoy" / "compose" / "envoy-native.yaml"


def replicated(plugin_config: str, cluster: str = "etcd") -> str:
    """The plugin config with every replay-protected policy's claims in etcd (through the
    template's `etcd` cluster), so several Envoy replicas admit each delivery once."""
    doc = json.loads(plugin_config)
    for policy in doc["policies"]:
        if policy.get("dedup", {}).get("enabled", True) and "store" not in policy:
            policy["store"] = {"type": "etcd", "cluster": cluster}
    return json.dumps(doc, indent=2)


def render_compose(replicas: bool = False, build: str = "wasm") -> str:
    header = ("# GENERATED by `scripts/render_envoy.py --compose` from envoy/envoy.yaml.tmpl and\n"
              "# envoy/webhook-guard.json: the same template the native demo and the e2e tests run.\n"
              "# Do not edit; scripts/test.sh fails when it drifts from the template.\n")
    plugin_config = (ROOT / "envoy/webhook-guard.json").read_text()
    if replicas:
        header += "# Replicas profile: every policy keeps its replay claims in the etcd service.\n"
        plugin_config = replicated(plugin_config)
    if build == "native":
        header += "# Native profile: the filter is the dynamic module (libwebhook_guard_native.so).\n"
    return header + render(plugin_config=plugin_config, build=build, **COMPOSE)


def main() -> int:
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--envoy-port", type=int, default=int(env.get("WEBHOOK_DEMO_ENVOY_PORT", 10000)))
    p.add_argument("--admin-port", type=int, default=int(env.get("WEBHOOK_DEMO_ADMIN_PORT", 9901)))
    p.add_argument("--backend-port", type=int, default=int(env.get("WEBHOOK_DEMO_BACKEND_PORT", 5000)))
    p.add_argument("--listen-address", default="127.0.0.1")
    p.add_argument("--admin-address", default="127.0.0.1")
    p.add_argument("--backend-address", default="127.0.0.1")
    p.add_argument("--wasm", default=str(ROOT / "target/wasm32-wasip1/release/webhook_guard.wasm"))
    p.add_argument("--plugin-config", default=str(ROOT / "envoy/webhook-guard.json"))
    p.add_argument("--access-log", default="/dev/stdout")
    p.add_argument("--rate-limit", type=int, default=1000, help="requests/s the local rate limit allows")
    p.add_argument("--etcd-address", default="127.0.0.1")
    p.add_argument("--etcd-port", type=int, default=int(env.get("WEBHOOK_DEMO_ETCD_PORT", 2379)))
    p.add_argument("--tls-port", type=int, default=None)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--build", choices=["wasm", "native"], default="wasm",
                   help="which filter: the wasm module or the native dynamic module")
    p.add_argument("--replicas", action="store_true",
                   help="keep every policy's replay claims in etcd (the template's etcd cluster)")
    p.add_argument("--compose", action="store_true",
                   help=f"write {COMPOSE_OUTPUT.relative_to(ROOT)}, {COMPOSE_REPLICAS_OUTPUT.relative_to(ROOT)} and "
                        f"{COMPOSE_NATIVE_OUTPUT.relative_to(ROOT)}")
    p.add_argument("-o", "--output", default="-")
    a = p.parse_args()
    if a.compose:
        COMPOSE_OUTPUT.write_text(render_compose())
        COMPOSE_REPLICAS_OUTPUT.write_text(render_compose(replicas=True))
        COMPOSE_NATIVE_OUTPUT.write_text(render_compose(build="native"))
        return 0
    plugin_config = pathlib.Path(a.plugin_config).read_text()
    if a.replicas:
        plugin_config = replicated(plugin_config)
    text = render(
        envoy_port=a.envoy_port,
        admin_port=a.admin_port,
        backend_port=a.backend_port,
        wasm_path=a.wasm,
        plugin_config=plugin_config,
        listen_address=a.listen_address,
        admin_address=a.admin_address,
        backend_address=a.backend_address,
        access_log_path=a.access_log,
        rate_limit=a.rate_limit,
        tls_port=a.tls_port,
        tls_cert=a.tls_cert,
        tls_key=a.tls_key,
        etcd_address=a.etcd_address,
        etcd_port=a.etcd_port,
        build=a.build,
    )
    if a.output == "-":
        sys.stdout.write(text)
    else:
        pathlib.Path(a.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
    }
    return string.Template(template.read_text()).substitute(values)


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
    p.add_argument("-o", "--output", default="-")
    a = p.parse_args()
    text = render(
        envoy_port=a.envoy_port,
        admin_port=a.admin_port,
        backend_port=a.backend_port,
        wasm_path=a.wasm,
        plugin_config=pathlib.Path(a.plugin_config).read_text(),
        listen_address=a.listen_address,
        admin_address=a.admin_address,
        backend_address=a.backend_address,
        access_log_path=a.access_log,
    )
    if a.output == "-":
        sys.stdout.write(text)
    else:
        pathlib.Path(a.output).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

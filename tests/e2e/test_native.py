"""What only the native build (the Envoy dynamic module) has, in the real Envoy 1.40: its ABI
checked against the binary, the panic barrier, policies carried by routes (per-route
configuration), and SDS secrets that rotate without a restart while the replay store keeps its
entries. (Everything else runs against both builds in the rest of the suite.)"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import tempfile
import uuid

import pytest
import requests
import yaml

from harness import NATIVE, ROOT, Backend, Envoy, envoy_binary, render, wait_until
from signers import PRESETS

pytestmark = pytest.mark.build("native")

PANIC_BUILD = ROOT / "target/panic/native/libwebhook_guard_native.so"


def symbols(path: pathlib.Path, *flags: str) -> set[str]:
    out = subprocess.run(["nm", "-D", *flags, str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_every_callback_the_module_imports_exists_in_envoy_1_40():
    imported = {s for s in symbols(NATIVE, "--undefined-only") if s.startswith("envoy_dynamic_module_callback_")}
    exported = symbols(pathlib.Path(envoy_binary()), "--defined-only")
    assert imported, "the module imports no Envoy callback?"
    assert imported <= exported, f"not in Envoy 1.40: {sorted(imported - exported)}"
    # Every hook the module exports is one the 1.40 loader looks up by name.
    hooks = {s for s in symbols(NATIVE, "--defined-only") if s.startswith("envoy_dynamic_module_on_")}
    binary = pathlib.Path(envoy_binary()).read_bytes()
    assert hooks and all(h.encode() in binary for h in hooks), sorted(h for h in hooks if h.encode() not in binary)


def github(secret: str, body: bytes, delivery: str = "d") -> dict:
    _, sign, _, _ = PRESETS["github"]
    return sign(secret, body, 0, delivery)


def body() -> bytes:
    return json.dumps({"id": uuid.uuid4().hex}).encode()


@pytest.fixture
def work():
    with tempfile.TemporaryDirectory(prefix="webhook-guard-native-") as d:
        yield pathlib.Path(d)


class CustomEnvoy:
    """Envoy with the native template, edited (per-route configuration) before it starts."""

    def __init__(self, work: pathlib.Path, backend: Backend, plugin: dict, edit=None, env=None,
                 module: pathlib.Path = NATIVE, wait: bool = True):
        self.port, self.admin_port = free_ports()
        config = yaml.safe_load(render(envoy_port=self.port, admin_port=self.admin_port, backend_port=backend.port,
                                       wasm_path="", plugin_config=json.dumps(plugin), build="native",
                                       access_log_path=str(work / "access.log")))
        if edit:
            edit(config)
        path = work / f"envoy-{self.port}.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log_path = work / f"envoy-{self.port}.log"
        clean = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRET", "_SECRET_PREVIOUS"))}
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(path), "--base-id", str(self.port % 60000), "--concurrency", "2",
             "--component-log-level", "dynamic_modules:debug"],
            env={**clean, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(module.parent), **(env or {})},
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        if wait:
            try:
                wait_until(lambda: requests.get(self.admin + "/ready", timeout=1).text.strip() == "LIVE", 30, "envoy")
            except TimeoutError as e:
                self.stop()
                raise AssertionError(self.log()[-4000:]) from e

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)


def free_ports() -> tuple[int, int]:
    from harness import free_port
    return free_port(), free_port()


def test_a_panic_inside_the_module_fails_closed_and_envoy_keeps_serving(work):
    if not PANIC_BUILD.exists():
        pytest.fail(f"{PANIC_BUILD} is missing: scripts/test.sh builds it (--features test-panic)")
    backend = Backend(work)
    plugin = {"default": "deny", "policies": [{"name": "gh", "match": {"path_prefix": "/webhooks/github"},
                                               "provider": "github", "secrets": [{"env": "GITHUB_WEBHOOK_SECRET"}]}]}
    envoy = CustomEnvoy(work, backend, plugin, env={"GITHUB_WEBHOOK_SECRET": "s"}, module=PANIC_BUILD)
    try:
        b = body()
        resp = requests.post(envoy.url + "/webhooks/github", data=b,
                             headers={**github("s", b), "x-webhook-guard-test-panic": "1"}, timeout=10)
        assert resp.status_code == 503
        assert resp.json() == {"error": "internal_error", "policy": None}
        assert backend.events() == []
        assert "panic caught in request_headers" in envoy.log()
        # The same process goes on verifying.
        assert requests.post(envoy.url + "/webhooks/github", data=b, headers=github("s", b), timeout=10).status_code == 200
        assert requests.post(envoy.url + "/webhooks/github", data=b, headers=github("s", b), timeout=10).status_code == 409
    finally:
        envoy.stop()
        backend.stop()


def per_route(policy: str) -> dict:
    return {"webhook_guard": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilterPerRoute",
        "dynamic_module_config": {"name": "webhook_guard_native"},
        "filter_name": "webhook_guard",
        "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                          "value": json.dumps({"policy": policy})},
    }}


def routes(config: dict) -> list[dict]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["route_config"]["virtual_hosts"][0]["routes"]


def test_routes_carry_their_policy(work):
    backend = Backend(work)
    plugin = {"default": "deny", "policies": [
        # No `match`: only routes that name them select these.
        {"name": "github-route", "provider": "github", "secrets": [{"env": "GITHUB_WEBHOOK_SECRET"}]},
        {"name": "stripe-route", "provider": "stripe", "secrets": [{"env": "STRIPE_WEBHOOK_SECRET"}]},
    ]}

    def edit(config):
        for route in routes(config):
            if route["name"] == "webhooks_github":
                route["typed_per_filter_config"] = per_route("github-route")
            elif route["name"] == "webhooks_stripe":
                route["typed_per_filter_config"] = per_route("stripe-route")
            elif route["name"] == "webhooks_slack":
                route["typed_per_filter_config"] = per_route("no-such-policy")

    envoy = CustomEnvoy(work, backend, plugin, edit,
                        env={"GITHUB_WEBHOOK_SECRET": "gh", "STRIPE_WEBHOOK_SECRET": "whsec_st"})
    try:
        b = body()
        assert requests.post(envoy.url + "/webhooks/github", data=b, headers=github("gh", b), timeout=10).status_code == 200
        resp = requests.post(envoy.url + "/webhooks/github", data=b, timeout=10)
        assert resp.json() == {"error": "missing_signature", "policy": "github-route"}
        _, sign, _, _ = PRESETS["stripe"]
        import time
        resp = requests.post(envoy.url + "/webhooks/stripe", data=b, headers=sign("whsec_st", b, int(time.time()), ""),
                             timeout=10)
        assert resp.status_code == 200
        # A route naming a policy the filter does not define: refused, and the log says why.
        resp = requests.post(envoy.url + "/webhooks/slack", data=b, timeout=10)
        assert (resp.status_code, resp.json()["error"]) == (403, "no_matching_policy")
        assert "names policy 'no-such-policy'" in envoy.log()
        # A route without per-route configuration and no matching policy: default deny.
        assert requests.post(envoy.url + "/webhooks/shopify", data=b, timeout=10).status_code == 403
        assert len(backend.events()) == 2
    finally:
        envoy.stop()
        backend.stop()


def write_secrets(directory: pathlib.Path, secrets: dict[str, str]) -> None:
    """One file per secret (a file-based SDS source holds exactly one), each replaced whole."""
    directory.mkdir(exist_ok=True)
    for name, value in secrets.items():
        tmp = directory / f".{name}.tmp"
        tmp.write_text(yaml.safe_dump({"resources": [
            {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": name,
             "generic_secret": {"secret": {"inline_string": value}}}]}))
        os.replace(tmp, directory / f"{name}.yaml")  # atomic: Envoy's file watch sees a whole file


def test_sds_secrets_rotate_without_a_restart_and_the_store_keeps_its_entries(work):
    backend = Backend(work)
    secrets_dir = work / "secrets"
    write_secrets(secrets_dir, {"github-current": "old-secret", "github-previous": "older-secret"})
    plugin = {"default": "deny", "sds_config": {"path_config_source": {"path": f"{secrets_dir}/{{name}}.yaml"}},
              "policies": [{"name": "gh", "match": {"path_prefix": "/webhooks/github"}, "provider": "github",
                            "secrets": [{"sds": "github-current"}, {"sds": "github-previous"}]}]}
    envoy = CustomEnvoy(work, backend, plugin)
    try:
        url = envoy.url + "/webhooks/github"
        first = body()
        assert requests.post(url, data=first, headers=github("old-secret", first), timeout=10).status_code == 200
        # Rotate: the new secret first, the old one still listed. No restart, no reload.
        write_secrets(secrets_dir, {"github-current": "new-secret", "github-previous": "old-secret"})

        def rotated():
            b = body()
            return requests.post(url, data=b, headers=github("new-secret", b), timeout=10).status_code == 200
        wait_until(rotated, 15, "the rotated secret")
        b = body()
        assert requests.post(url, data=b, headers=github("old-secret", b), timeout=10).status_code == 200
        # The replay store kept its entries: the first delivery is still a replay.
        resp = requests.post(url, data=first, headers=github("old-secret", first), timeout=10)
        assert (resp.status_code, resp.json()["error"]) == (409, "replayed")
        # Remove the old secret: it no longer verifies.
        write_secrets(secrets_dir, {"github-previous": ""})

        def removed():
            b = body()
            return requests.post(url, data=b, headers=github("old-secret", b), timeout=10).status_code == 401
        wait_until(removed, 15, "the old secret to be gone")
        assert sum(e["body_sha256"] == __import__("hashlib").sha256(first).hexdigest() for e in backend.events()) == 1
        log = envoy.log()
        assert "old-secret" not in log and "new-secret" not in log
    finally:
        envoy.stop()
        backend.stop()


def test_a_secret_envoy_cannot_subscribe_to_refuses_the_config(work):
    backend = Backend(work)
    plugin = {"sds_config": {"path_config_source": {"path": str(work / "missing-{name}.yaml")}},
              "policies": [{"name": "gh", "match": {"path_prefix": "/"}, "provider": "github",
                            "secrets": [{"sds": "github-current"}]}]}
    envoy = CustomEnvoy(work, backend, plugin, wait=False)
    try:
        envoy.proc.wait(timeout=60)
        assert envoy.proc.returncode != 0
        assert "could not subscribe to the SDS secret 'github-current'" in envoy.log()
    finally:
        envoy.stop()
        backend.stop()

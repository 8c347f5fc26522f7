"""Deployment artifacts: the docker-compose stack, the Istio manifests and the TLS + rate-limit
options of the Envoy template. No Docker engine or cluster here: compose is validated with
`docker-compose config`, manifests at schema level, and the plugin configs with the filter's
own validator (the CLI) and in the real Envoy."""
import json
import pathlib
import re
import shutil
import subprocess
import sys
import time
import uuid

import pytest
import requests
import yaml

from harness import CLI, ROOT, WASM, Stack, envoy_binary, render
from signers import PRESETS

sys.path.insert(0, str(ROOT / "scripts"))
from render_envoy import (COMPOSE_NATIVE_OUTPUT, COMPOSE_OUTPUT, COMPOSE_REPLICAS_OUTPUT,  # noqa: E402
                          render_compose)

ISTIO = ROOT / "envoy" / "istio"


def load_all(path: pathlib.Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def host_env_keys(envoy_yaml: dict) -> list[str]:
    listener = envoy_yaml["static_resources"]["listeners"][0]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    wasm = next(f for f in filters if f["name"] == "envoy.filters.http.wasm")
    return wasm["typed_config"]["config"]["vm_config"]["environment_variables"]["host_env_keys"]


def published_ports(service: dict) -> dict[str, str | None]:
    """Published port -> host address it binds (None: every interface), from `docker-compose
    config`, which prints plain mappings as objects and host-bound ones as strings."""
    out = {}
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out[str(p["published"])] = p.get("host_ip")
        else:
            host_ip, published, _ = p.split("/")[0].rsplit(":", 2)
            out[published] = host_ip
    return out


@pytest.mark.build("wasm")
def test_docker_compose_config_is_valid():
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is missing: scripts/setup.sh installs it")
    res = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    config = yaml.safe_load(res.stdout)
    # `docker compose up` starts the services outside profiles: one Envoy and the backend.
    assert {n for n, s in config["services"].items() if not s.get("profiles")} == {"envoy", "backend"}
    envoy = config["services"]["envoy"]
    assert envoy["image"] == "envoyproxy/envoy:v1.40.0"
    assert published_ports(envoy) == {"10000": None, "9901": "127.0.0.1"}, "admin on loopback only"
    backend = config["services"]["backend"]
    assert not backend.get("ports"), "the backend (and its /events, /admin) is not published"
    assert backend["environment"]["WEBHOOK_DEMO_BACKEND_ADMIN_PORT"] == "5001"


@pytest.mark.build("wasm")
def test_compose_mounts_the_config_the_e2e_tests_run():
    # One source of truth: the committed compose config is the template rendered for compose.
    assert COMPOSE_OUTPUT.read_text() == render_compose(), "run: python3 scripts/render_envoy.py --compose"
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    envoy = compose["services"]["envoy"]
    assert "./envoy/compose/envoy.yaml:/etc/envoy/envoy.yaml:ro" in envoy["volumes"]
    rendered = yaml.safe_load(COMPOSE_OUTPUT.read_text())
    # Every secret the filter may read is passed to the container, and nothing else.
    assert set(envoy["environment"]) == set(host_env_keys(rendered))
    # The backend image pins the same Flask as the tests.
    assert "flask==3.1.3" in (ROOT / "demo/Dockerfile").read_text()
    assert "flask==3.1.3" in (ROOT / "tests/requirements.txt").read_text()


@pytest.mark.build("wasm")
def test_compose_replicas_profile_runs_two_envoys_on_one_etcd():
    res = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "replicas", "config"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    services = {n: s for n, s in yaml.safe_load(res.stdout)["services"].items()
                if not s.get("profiles") or "replicas" in s["profiles"]}
    assert set(services) == {"envoy", "backend", "etcd", "envoy-replica-1", "envoy-replica-2"}
    ports = set()
    for name in ("envoy-replica-1", "envoy-replica-2"):
        replica = services[name]
        assert replica["image"] == "envoyproxy/envoy:v1.40.0"
        assert set(replica["depends_on"]) == {"backend", "etcd"}
        assert str(COMPOSE_REPLICAS_OUTPUT) + ":/etc/envoy/envoy.yaml:ro" in replica["volumes"]
        assert replica["environment"] == services["envoy"]["environment"]
        published = published_ports(replica)
        ports |= set(published)
        assert set(published.values()) == {None, "127.0.0.1"}, published
    assert ports == {"10001", "9902", "10002", "9903"}
    # The mounted config is the template rendered for compose with every policy on etcd.
    assert COMPOSE_REPLICAS_OUTPUT.read_text() == render_compose(replicas=True), \
        "run: python3 scripts/render_envoy.py --compose"
    rendered = yaml.safe_load(COMPOSE_REPLICAS_OUTPUT.read_text())
    etcd = next(c for c in rendered["static_resources"]["clusters"] if c["name"] == "etcd")
    address = etcd["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == ("etcd", 2379)
    listener = rendered["static_resources"]["listeners"][0]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    wasm = next(f for f in filters if f["name"] == "envoy.filters.http.wasm")
    plugin = json.loads(wasm["typed_config"]["config"]["configuration"]["value"])
    assert all(p["store"] == {"type": "etcd", "cluster": "etcd"} for p in plugin["policies"])
    # And the filter's own validator accepts it.
    cfg = ROOT / "target" / "compose-replicas-plugin.json"
    cfg.write_text(json.dumps(plugin))
    check = subprocess.run([str(ROOT / "target/release/webhook-guard"), "check-config", str(cfg)],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count("etcd store (cluster etcd, prefix webhook-guard/dedup, timeout 500 ms, on error deny)") \
        == len(plugin["policies"]), check.stdout


@pytest.mark.build("wasm")
def test_compose_native_profile_runs_the_dynamic_module():
    res = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "native", "config"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    services = yaml.safe_load(res.stdout)["services"]
    native = services["envoy-native"]
    assert native["image"] == "envoyproxy/envoy:v1.40.0"
    assert native["environment"]["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] == "/etc/envoy/modules"
    mounts = set(native["volumes"])
    assert str(COMPOSE_NATIVE_OUTPUT) + ":/etc/envoy/envoy.yaml:ro" in mounts
    assert str(ROOT / "target/native/libwebhook_guard_native.so") + \
        ":/etc/envoy/modules/libwebhook_guard_native.so:ro" in mounts
    assert published_ports(native) == {"10003": None, "9904": "127.0.0.1"}
    assert COMPOSE_NATIVE_OUTPUT.read_text() == render_compose(build="native"), \
        "run: python3 scripts/render_envoy.py --compose"
    rendered = yaml.safe_load(COMPOSE_NATIVE_OUTPUT.read_text())
    filters = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    module = next(f for f in filters["http_filters"] if f["name"] == "webhook_guard")
    assert module["typed_config"]["dynamic_module_config"]["name"] == "webhook_guard_native"
    # The same secrets as the wasm service (native reads Envoy's environment).
    assert {k: v for k, v in native["environment"].items() if k.endswith(("SECRET", "PREVIOUS"))} == \
        services["envoy"]["environment"]


@pytest.mark.build("wasm")
def test_compose_and_demo_use_the_same_demo_secrets():
    demo = dict(re.findall(r'^  \[(\w+)\]="([^"]*)"$', (ROOT / "scripts/demo.sh").read_text(), re.M))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["envoy"]["environment"]
    defaults = {k: re.fullmatch(r"\$\{\w+:-(.*)\}", v).group(1) for k, v in compose.items()}
    assert demo and defaults == demo


def check_config(config: dict, tmp_path: pathlib.Path) -> str:
    f = tmp_path / f"plugin-{uuid.uuid4().hex}.json"
    f.write_text(json.dumps(config))
    res = subprocess.run([str(CLI), "check-config", str(f)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.build("wasm")
def test_istio_manifests_are_complete_and_agree(tmp_path):
    plugin = json.loads((ISTIO / "plugin-config.json").read_text())
    [wasmplugin] = load_all(ISTIO / "wasmplugin.yaml")
    assert wasmplugin["apiVersion"] == "extensions.istio.io/v1alpha1" and wasmplugin["kind"] == "WasmPlugin"
    spec = wasmplugin["spec"]
    assert spec["url"].startswith("oci://") and spec["phase"] == "AUTHN" and spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["selector"]["matchLabels"]
    assert spec["pluginConfig"] == plugin
    assert all(e["valueFrom"] == "HOST" and "value" not in e for e in spec["vmConfig"]["env"])

    [envoyfilter] = load_all(ISTIO / "envoyfilter.yaml")
    assert envoyfilter["kind"] == "EnvoyFilter"
    ext, http, hcm = envoyfilter["spec"]["configPatches"]
    assert hcm["applyTo"] == "NETWORK_FILTER" and hcm["patch"]["operation"] == "MERGE"
    hardening = hcm["patch"]["value"]["typed_config"]
    assert hardening["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert hardening["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    assert hardening["http2_protocol_options"]["max_concurrent_streams"] == 16
    # The same values as the template the e2e suite attacks.
    template = (ROOT / "envoy/envoy.yaml.tmpl").read_text()
    for key in ("request_timeout: 30s", "stream_idle_timeout: 15s", "request_headers_timeout: 10s"):
        assert key in template and hardening[key.split(":")[0]] == key.split(": ")[1]
    assert ext["applyTo"] == "EXTENSION_CONFIG" and ext["patch"]["operation"] == "ADD"
    assert http["applyTo"] == "HTTP_FILTER" and http["patch"]["operation"] == "INSERT_BEFORE"
    assert http["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.router"
    assert ext["patch"]["value"]["name"] == http["patch"]["value"]["name"]
    wasm = ext["patch"]["value"]["typed_config"]["config"]
    assert wasm["allow_on_headers_stop_iteration"] is True
    assert wasm["failure_policy"] == "FAIL_CLOSED" and wasm["vm_config"]["vm_id"]
    assert json.loads(wasm["configuration"]["value"]) == plugin
    host_keys = set(wasm["vm_config"]["environment_variables"]["host_env_keys"])
    assert {e["name"] for e in spec["vmConfig"]["env"]} == host_keys

    [patch] = load_all(ISTIO / "deployment-patch.yaml")
    proxy = next(c for c in patch["spec"]["template"]["spec"]["containers"] if c["name"] == "istio-proxy")
    assert {e["name"] for e in proxy["env"]} == host_keys
    assert all("secretKeyRef" in e["valueFrom"] for e in proxy["env"])
    annotation = yaml.safe_load(patch["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"])
    assert "wasmcustom.webhook_guard" in annotation["proxyStatsMatcher"]["inclusionPrefixes"]

    env_refs = {s["env"] for p in plugin["policies"] for s in p["secrets"] if "env" in s}
    assert env_refs == host_keys
    assert "valid, 2 policies" in check_config(plugin, tmp_path)
    assert "COPY plugin.wasm" in (ISTIO / "Dockerfile").read_text()


@pytest.mark.build("wasm")
def test_istio_hardening_patch_is_valid_envoy_config(tmp_path):
    """The EnvoyFilter's MERGE into the connection manager, applied to a rendered config, passes
    Envoy's own validation."""
    [envoyfilter] = load_all(ISTIO / "envoyfilter.yaml")
    patch = envoyfilter["spec"]["configPatches"][2]["patch"]["value"]["typed_config"]
    config = yaml.safe_load(render(envoy_port=1, admin_port=2, backend_port=3, wasm_path=str(WASM),
                                   plugin_config=(ISTIO / "plugin-config.json").read_text()))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    for key in ("normalize_path", "merge_slashes", "path_with_escaped_slashes_action", "request_headers_timeout",
                "request_timeout", "stream_idle_timeout", "max_request_headers_kb", "common_http_protocol_options",
                "http2_protocol_options"):
        hcm.pop(key, None)
    hcm.update({k: v for k, v in patch.items() if k != "@type"})
    out = tmp_path / "istio-hardened.yaml"
    out.write_text(yaml.safe_dump(config))
    res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(out), "--base-id", "9"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]


@pytest.mark.build("wasm")
def test_istio_plugin_config_runs_in_the_real_envoy():
    plugin = json.loads((ISTIO / "plugin-config.json").read_text())
    secret = "whsec_istio_test"
    stack = Stack(plugin, {"STRIPE_WEBHOOK_SECRET": secret, "GITHUB_WEBHOOK_SECRET": "g"})
    try:
        _, sign, _, _ = PRESETS["stripe"]
        body = json.dumps({"id": f"evt_{uuid.uuid4().hex}"}).encode()
        assert stack.post("/webhooks/stripe", body, sign(secret, body, int(time.time()), "")).status_code == 200
        assert stack.post("/webhooks/github", body, {}).json()["error"] == "missing_signature"
    finally:
        stack.stop()


def test_tls_listener_and_rate_limit(tmp_path, secrets):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    stack = Stack((ROOT / "envoy/webhook-guard.json").read_text(), secrets, tls=(str(cert), str(key)))
    try:
        path, sign, var, _ = PRESETS["github"]
        body = json.dumps({"id": uuid.uuid4().hex}).encode()
        url = f"https://127.0.0.1:{stack.envoy.tls_port}{path}"
        resp = requests.post(url, data=body, headers=sign(secrets[var], body, 0, "d"), verify=str(cert), timeout=10)
        assert resp.status_code == 200
        resp = requests.post(url, data=body, headers={}, verify=str(cert), timeout=10)
        assert resp.json() == {"error": "missing_signature", "policy": "github"}
        # The local rate limit runs before the filter (its stats exist and count requests).
        stats = requests.get(stack.envoy.admin + "/stats", params={"filter": "webhook_ratelimit"}, timeout=5).text
        assert "webhook_ratelimit.http_local_rate_limit.enabled: 2" in stats
    finally:
        stack.stop()

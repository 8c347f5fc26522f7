"""The native build on Envoy Gateway and Istio: the manifests in envoy/gateway/,
envoy/istio/native/ and envoy/images/ (docs/platforms.md).

No cluster here. Each platform's manifests are turned into the Envoy configuration that platform
generates from them, following Envoy Gateway's xDS translator (internal/xds/translator/
dynamicmodule.go, listener.go, jsonpatch.go) and Istio's EnvoyFilter patch semantics, with the
module and the Secrets "mounted" under a temporary root where the pod would have them. That
configuration passes `envoy --mode validate` (which also compiles the filter config inside the
module) and then runs in the real Envoy 1.40 with the native module, on loopback, in front of
the demo backend. What this cannot show (CRD schemas, the control planes' own translation, image
volumes, the sidecar injector, other Envoy versions) is listed in docs/platforms.md."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest
import requests
import yaml

import harness
from harness import NATIVE, ROOT, Backend, envoy_binary, free_port, stop_process, wait_until
from signers import PRESETS

pytestmark = pytest.mark.build("native")

GATEWAY = ROOT / "envoy" / "gateway"
ISTIO_NATIVE = ROOT / "envoy" / "istio" / "native"
ISTIO_WASM = ROOT / "envoy" / "istio"
IMAGES = ROOT / "envoy" / "images"

DM = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3."
HCM_NAME = "envoy.filters.network.http_connection_manager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
MODULE_IMAGE = "ghcr.io/your-org/webhook-guard-native:0.1.0"
SECRET_NAME = "webhook-secrets"  # the Kubernetes Secret of envoy/istio/deployment-patch.yaml


# ---- reading the manifests ------------------------------------------------------------------
def load(path: pathlib.Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests(directory: pathlib.Path) -> dict[str, list[dict]]:
    return {p.name: load(p) for p in sorted(directory.glob("*.yaml"))}


def find(docs: dict[str, list[dict]], kind: str, name: str | None = None) -> dict:
    found = [d for items in docs.values() for d in items
             if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def commented_yaml(path: pathlib.Path, heading: str) -> dict:
    """The indented YAML block that follows the comment line starting with `heading`."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading)) + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        block.append(line[4:])
    return yaml.safe_load("\n".join(block))


def image_file(dockerfile: pathlib.Path) -> str:
    """Where the Dockerfile puts the module, relative to the image root."""
    [dest] = re.findall(r"^COPY libwebhook_guard_native\.so (\S+)$", dockerfile.read_text(), re.M)
    return dest


def under(root: pathlib.Path, absolute: str) -> pathlib.Path:
    """A container path, inside the temporary root standing for the pod's filesystem."""
    assert absolute.startswith("/"), absolute
    return root / absolute.lstrip("/")


def mount_module(root: pathlib.Path, mount_path: str) -> None:
    """An image volume of Dockerfile.module, mounted at `mount_path`."""
    dest = under(root, mount_path) / image_file(IMAGES / "Dockerfile.module").lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(NATIVE, dest)


def resolve_env(entries: list[dict], secret_data: dict[str, dict[str, str]]) -> dict[str, str]:
    """A container's `env` as the kubelet sets it: values, and secretKeyRef lookups (a missing
    key of a non-optional reference keeps the pod from starting)."""
    out = {}
    for e in entries:
        if "value" in e:
            out[e["name"]] = e["value"]
            continue
        ref = e["valueFrom"]["secretKeyRef"]
        data = secret_data.get(ref["name"], {})
        if ref["key"] in data:
            out[e["name"]] = data[ref["key"]]
        else:
            assert ref.get("optional"), f"{e['name']}: Secret {ref['name']} has no key {ref['key']}"
    return out


def env_refs(config: dict) -> set[str]:
    return {s["env"] for p in config["policies"] for s in p["secrets"] if "env" in s}


# ---- building the Envoy configuration -------------------------------------------------------
def static_cluster(name: str, port: int) -> dict:
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]}}


def bootstrap(ports: dict, http_filters: list, routes: list, hcm: dict | None = None,
              listener: dict | None = None, clusters: tuple = ()) -> dict:
    manager = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                        "HttpConnectionManager",
               "stat_prefix": "webhooks",
               "route_config": {"name": "webhooks",
                                "virtual_hosts": [{"name": "webhooks", "domains": ["*"], "routes": routes}]},
               "http_filters": http_filters, **(hcm or {})}
    return {
        # Both control planes set a node identity; file-based SDS needs one.
        "node": {"id": "platform-test", "cluster": "platform-test"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": ports["admin"]}}},
        "static_resources": {
            "listeners": [{"name": "webhooks",
                           "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports["listen"]}},
                           **(listener or {}),
                           "filter_chains": [{"filters": [{"name": HCM_NAME, "typed_config": manager}]}]}],
            "clusters": [static_cluster("backend", ports["backend"]), *clusters]}}


def quantity(value: str | int) -> int:
    m = re.fullmatch(r"(\d+)(Ki|Mi)?", str(value))
    assert m, value
    return int(m.group(1)) * {None: 1, "Ki": 1024, "Mi": 1024 * 1024}[m.group(2)]


def client_traffic(ctp: dict) -> tuple[dict, dict]:
    """Listener and connection-manager fields of a ClientTrafficPolicy (only those it uses; a
    field this does not translate fails here rather than being left out silently)."""
    spec = {k: v for k, v in ctp["spec"].items() if k != "targetRefs"}
    assert set(spec) <= {"connection", "path", "headers", "timeout", "http2"}, set(spec)
    assert set(spec["connection"]) <= {"bufferLimit"}
    assert set(spec["path"]) <= {"escapedSlashesAction", "disableMergeSlashes"}
    assert set(spec["headers"]) <= {"withUnderscoresAction"}
    assert set(spec["timeout"]) == {"http"}
    assert set(spec["timeout"]["http"]) <= {"requestReceivedTimeout", "streamIdleTimeout", "idleTimeout"}
    assert set(spec["http2"]) <= {"maxConcurrentStreams"}
    http = spec["timeout"]["http"]
    listener = {"per_connection_buffer_limit_bytes": quantity(spec["connection"]["bufferLimit"])}
    hcm = {
        "normalize_path": True,
        "merge_slashes": not spec["path"].get("disableMergeSlashes", False),
        "path_with_escaped_slashes_action": {"KeepUnchanged": "KEEP_UNCHANGED", "RejectRequest": "REJECT_REQUEST",
                                             "UnescapeAndForward": "UNESCAPE_AND_FORWARD",
                                             "UnescapeAndRedirect": "UNESCAPE_AND_REDIRECT"}[
            spec["path"]["escapedSlashesAction"]],
        "request_timeout": http["requestReceivedTimeout"],
        "stream_idle_timeout": http["streamIdleTimeout"],
        "common_http_protocol_options": {
            "idle_timeout": http["idleTimeout"],
            "headers_with_underscores_action": {"Allow": "ALLOW", "RejectRequest": "REJECT_REQUEST",
                                                "DropHeader": "DROP_HEADER"}[spec["headers"]["withUnderscoresAction"]]},
        "http2_protocol_options": {"max_concurrent_streams": spec["http2"]["maxConcurrentStreams"]},
    }
    return listener, hcm


def json_patch_add(doc: dict, patches: list[dict]) -> None:
    """RFC 6902 `add` (the only op these manifests use) on a JSON document."""
    for p in patches:
        assert p["op"] == "add", p
        *parents, last = [part.replace("~1", "/").replace("~0", "~") for part in p["path"].split("/")[1:]]
        target = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target.insert(len(target) if last == "-" else int(last), copy.deepcopy(p["value"]))
        else:
            target[last] = copy.deepcopy(p["value"])


def envoy_gateway_config(gw: dict, root: pathlib.Path, ports: dict, config: dict | None = None) -> dict:
    """What Envoy Gateway generates for 00 + 02 + 03 + 04 + 06 (`config` replaces the policy's)."""
    proxy, policy = find(gw, "EnvoyProxy"), find(gw, "EnvoyExtensionPolicy")
    route, patch = find(gw, "HTTPRoute"), find(gw, "EnvoyPatchPolicy")
    registry = {e["name"]: e for e in proxy["spec"]["dynamicModules"]}
    ns, name = policy["metadata"]["namespace"], policy["metadata"]["name"]
    filters, enable = [], {}
    for i, dm in enumerate(policy["spec"]["dynamicModule"]):
        entry = registry[dm["name"]]  # an unregistered module: Envoy Gateway rejects the policy
        assert entry["source"].get("type", "Local") == "Local"
        module = {"module": {"local": {"filename": str(under(root, entry["source"]["local"]["path"]))}}}
        if entry.get("doNotClose"):
            module["do_not_close"] = True
        if entry.get("loadGlobally"):
            module["load_globally"] = True
        filter_name = f"envoy.filters.http.dynamic_modules/envoyextensionpolicy/{ns}/{name}/dynamic-module/{i}"
        # Disabled on the connection manager, enabled per targeted route; no metrics_namespace.
        filters.append({"name": filter_name, "disabled": True, "typed_config": {
            "@type": DM + "DynamicModuleFilter", "dynamic_module_config": module, "filter_name": dm["filterName"],
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": json.dumps(config or dm["config"], separators=(",", ":"))}}})
        enable[filter_name] = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}
    assert {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": route["metadata"]["name"]} \
        in policy["spec"]["targetRefs"]
    routes = []
    for i, rule in enumerate(route["spec"]["rules"]):
        for j, match in enumerate(rule["matches"]):
            assert match["path"]["type"] == "PathPrefix"
            routes.append({"name": f"httproute/{ns}/{route['metadata']['name']}/rule/{i}/match/{j}/*",
                           "match": {"path_separated_prefix": match["path"]["value"]},
                           "route": {"cluster": "backend"}, "typed_per_filter_config": copy.deepcopy(enable)})
    # A route of another HTTPRoute, which the policy does not target: the filter stays off there.
    routes.append({"name": f"httproute/{ns}/other/rule/0/match/0/*", "match": {"prefix": "/"},
                   "route": {"cluster": "backend"}})
    listener, hcm = client_traffic(find(gw, "ClientTrafficPolicy"))
    [add] = patch["spec"]["jsonPatches"]
    assert add["operation"]["op"] == "add" and add["operation"]["path"] == ""
    etcd = copy.deepcopy(add["operation"]["value"])
    assert add["name"] == etcd["name"]
    # The Service's DNS name cannot resolve here: same cluster, loopback address.
    etcd["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] = {
        "address": "127.0.0.1", "port_value": ports["etcd"]}
    out = bootstrap(ports, [*filters, ROUTER], routes, hcm, listener, (etcd,))
    # Envoy Gateway's default bootstrap keeps all default tags and adds a few of its own; the
    # EnvoyProxy's bootstrap JSON patches apply on top.
    out["stats_config"] = {"use_all_default_tags": True, "stats_tags": []}
    patch_bootstrap = proxy["spec"].get("bootstrap")
    if patch_bootstrap:
        assert patch_bootstrap["type"] == "JSONPatch"
        json_patch_add(out, patch_bootstrap["jsonPatches"])
    return out


def merge(into: dict, patch: dict) -> None:
    """A protobuf MERGE of message fields (what Istio's MERGE does for these patches)."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def istio_config(docs: dict, envoyfilter: str, context: str, ports: dict) -> dict:
    """The EnvoyFilter's patches applied to the listener and routes Istio builds."""
    ef = find(docs, "EnvoyFilter", envoyfilter)
    filters, hcm, per_route = [ROUTER], {}, {}
    for p in ef["spec"]["configPatches"]:
        assert p["match"]["context"] == context, p["match"]
        kind, op, value = p["applyTo"], p["patch"]["operation"], p["patch"]["value"]
        if kind == "HTTP_FILTER":
            sub = p["match"]["listener"]["filterChain"]["filter"]
            assert (sub["name"], sub["subFilter"]["name"], op) == (HCM_NAME, ROUTER["name"], "INSERT_BEFORE")
            filters.insert(filters.index(ROUTER), copy.deepcopy(value))
        elif kind == "NETWORK_FILTER":
            assert (p["match"]["listener"]["filterChain"]["filter"]["name"], op) == (HCM_NAME, "MERGE")
            merge(hcm, {k: v for k, v in value["typed_config"].items() if k != "@type"})
        elif kind == "HTTP_ROUTE":
            assert op == "MERGE"
            per_route[p["match"]["routeConfiguration"]["vhost"]["route"]["name"]] = value
        else:
            pytest.fail(f"this test does not translate {kind} patches")
    routes = []
    if context == "GATEWAY":
        for http in find(docs, "VirtualService")["spec"]["http"]:
            [match] = http["match"]
            route = {"name": http["name"], "match": {"prefix": match["uri"]["prefix"]}, "route": {"cluster": "backend"}}
            merge(route, per_route.pop(http["name"], {}))
            routes.append(route)
        assert not per_route, f"HTTP_ROUTE patches that match no VirtualService route: {sorted(per_route)}"
        # A route of another VirtualService: no per-route config.
        routes.append({"name": "other", "match": {"prefix": "/"}, "route": {"cluster": "backend"}})
    else:
        assert not per_route
        routes.append({"name": "default", "match": {"prefix": "/"}, "route": {"cluster": "backend"}})
    return bootstrap(ports, filters, routes, hcm)


# ---- running Envoy --------------------------------------------------------------------------
class PlatformEnvoy:
    """One Envoy 1.40 process on a generated configuration, with a container-like environment."""

    def __init__(self, work: pathlib.Path, label: str, config: dict, env: dict[str, str], ports: dict):
        self.path = work / f"{label}.yaml"
        self.path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = work / f"{label}.log"
        clean = {k: v for k, v in os.environ.items()
                 if not k.endswith(("_SECRET", "_SECRET_PREVIOUS")) and k != "ENVOY_DYNAMIC_MODULES_SEARCH_PATH"}
        self.env = {**clean, **env}
        self.url = f"http://127.0.0.1:{ports['listen']}"
        self.admin = f"http://127.0.0.1:{ports['admin']}"
        self.proc: subprocess.Popen | None = None

    def validate(self) -> None:
        res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(self.path),
                              "--base-id", str(next(harness._base_ids)), "--component-log-level", "dynamic_modules:info"],
                             env=self.env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(self.path), "--base-id", str(next(harness._base_ids)), "--concurrency", "1",
             "--component-log-level", "dynamic_modules:info"],
            env=self.env, stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"envoy exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            return requests.get(self.admin + "/ready", timeout=1).text.strip() == "LIVE"
        wait_until(ready, 30, "envoy /ready")

    def post(self, path: str, body: bytes, headers: dict) -> requests.Response:
        return requests.post(self.url + path, data=body, headers=headers, timeout=10)

    def stats(self) -> dict[str, int]:
        text = requests.get(self.admin + "/stats", params={"filter": r"\.webhook_guard\."}, timeout=5).text
        return {name: int(value) for name, _, value in (line.partition(": ") for line in text.splitlines())
                if value.strip().isdigit()}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


@pytest.fixture(scope="module")
def backend():
    with tempfile.TemporaryDirectory(prefix="webhook-guard-platforms-") as d:
        b = Backend(pathlib.Path(d))
        yield b
        b.stop()


@pytest.fixture
def work():
    with tempfile.TemporaryDirectory(prefix="webhook-guard-platforms-") as d:
        yield pathlib.Path(d)


@pytest.fixture
def secret_data(secrets) -> dict[str, dict[str, str]]:
    """The webhook Secret as an operator fills it in (current values only, as outside a rotation)."""
    return {SECRET_NAME: {"github": secrets["GITHUB_WEBHOOK_SECRET"], "stripe": secrets["STRIPE_WEBHOOK_SECRET"]}}


def ports_for(backend: Backend) -> dict:
    return {"listen": free_port(), "admin": free_port(), "backend": backend.port, "etcd": free_port()}


def body(size: int = 0) -> bytes:
    return json.dumps({"id": uuid.uuid4().hex, "pad": "x" * size}).encode()


def github(secret: str, b: bytes) -> dict:
    _, sign, _, _ = PRESETS["github"]
    return sign(secret, b, 0, uuid.uuid4().hex)


def stripe(secret: str, b: bytes) -> dict:
    _, sign, _, _ = PRESETS["stripe"]
    return sign(secret, b, int(time.time()), "")


def deliveries(backend: Backend, b: bytes) -> int:
    digest = hashlib.sha256(b).hexdigest()
    return sum(e["body_sha256"] == digest for e in backend.events())


def exercise(envoy: PlatformEnvoy, backend: Backend, values: dict[str, str], prefix: str, other: int) -> None:
    """Deliveries through the platform's configuration; `other` is what a route the filter
    does not guard answers to an unsigned request."""
    try:
        signed = body()
        headers = github(values["github"], signed)
        resp = envoy.post("/webhooks/github", signed, headers)
        assert resp.status_code == 200, resp.text
        assert deliveries(backend, signed) == 1
        resp = envoy.post("/webhooks/github", signed, headers)
        assert (resp.status_code, resp.json()["error"]) == (409, "replayed")
        assert deliveries(backend, signed) == 1, "a replay reached the backend"
        forged = body()
        resp = envoy.post("/webhooks/github", forged, github("not-the-secret", forged))
        assert (resp.status_code, resp.json()["error"]) == (401, "invalid_signature")
        assert deliveries(backend, forged) == 0
        paid = body()
        assert envoy.post("/webhooks/stripe", paid, stripe(values["stripe"], paid)).status_code == 200
        assert deliveries(backend, paid) == 1
        unsigned = body()
        assert envoy.post("/webhooks/other", unsigned, {"Content-Type": "application/json"}).status_code == other
        assert deliveries(backend, unsigned) == (1 if other == 200 else 0)
        stats = envoy.stats()
        assert stats and all(name.startswith(prefix + "webhook_guard.") for name in stats), sorted(stats)[:5]
        github_stats = {k.removeprefix(prefix + "webhook_guard.policy.github."): v for k, v in stats.items()
                        if ".policy.github." in k}
        assert (github_stats["accepted"], github_stats["reason.replayed"], github_stats["reason.invalid_signature"]) \
            == (1, 1, 1), github_stats
    except Exception as e:
        raise AssertionError(f"{e}\n--- envoy log (tail) ---\n{envoy.log()[-4000:]}") from e


# ---- the manifests agree with each other and with the repo's other deployment files ----------
def test_manifests_are_consistent():
    gw, istio = manifests(GATEWAY), manifests(ISTIO_NATIVE)
    assert sorted(gw) == ["00-envoyproxy.yaml", "01-gateway.yaml", "02-httproute.yaml",
                          "03-envoyextensionpolicy.yaml", "04-clienttrafficpolicy.yaml", "05-secret.yaml",
                          "06-etcd-store.yaml", "07-sds-secret-volume.yaml"]
    assert sorted(istio) == ["deployment-patch-native.yaml", "envoyfilter-gateway.yaml", "envoyfilter-native.yaml",
                             "gateway-helm-values.yaml"]
    # No secret values in git: every Secret value is an empty placeholder.
    for items in gw.values():
        for d in items:
            if d.get("kind") == "Secret":
                assert "data" not in d
                for key, value in d["stringData"].items():
                    if key.endswith(".yaml"):
                        [res] = yaml.safe_load(value)["resources"]
                        assert res["name"] + ".yaml" == key and res["@type"].endswith(".tls.v3.Secret")
                        value = res["generic_secret"]["secret"]["inline_string"]
                    assert value == "", f"{d['metadata']['name']}/{key} must be an empty placeholder"

    # Envoy Gateway: the chain GatewayClass -> EnvoyProxy, Gateway <- HTTPRoute <- policies.
    proxy = find(gw, "EnvoyProxy")
    gwclass, gateway = find(gw, "GatewayClass"), find(gw, "Gateway")
    assert gwclass["spec"]["parametersRef"] == {"group": "gateway.envoyproxy.io", "kind": "EnvoyProxy",
                                                "name": proxy["metadata"]["name"],
                                                "namespace": proxy["metadata"]["namespace"]}
    assert gateway["spec"]["gatewayClassName"] == gwclass["metadata"]["name"]
    route = find(gw, "HTTPRoute")
    assert route["spec"]["parentRefs"] == [{"name": gateway["metadata"]["name"]}]
    for kind in ("EnvoyExtensionPolicy", "HTTPRoute", "ClientTrafficPolicy", "EnvoyPatchPolicy"):
        assert find(gw, kind)["metadata"]["namespace"] == gateway["metadata"]["namespace"], kind
    for kind in ("ClientTrafficPolicy", "EnvoyPatchPolicy"):
        spec = find(gw, kind)["spec"]
        refs = spec.get("targetRefs") or [spec["targetRef"]]
        assert refs == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway["metadata"]["name"]}]
    [entry] = proxy["spec"]["dynamicModules"]
    assert re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", entry["name"])  # the CRD's pattern
    [dm] = find(gw, "EnvoyExtensionPolicy")["spec"]["dynamicModule"]
    assert dm["name"] == entry["name"] and dm["filterName"] == "webhook_guard"
    deployment = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]
    container = deployment["container"]
    image = container["image"]
    assert image.endswith("envoyproxy/envoy:v1.40.0") and "distroless" not in image
    # The registered path is where the image volume puts the module, and where Dockerfile.envoy
    # bakes it in.
    [mount] = container["volumeMounts"]
    [volume] = deployment["pod"]["volumes"]
    assert volume["name"] == mount["name"] and volume["image"]["reference"] == MODULE_IMAGE
    path = entry["source"]["local"]["path"]
    assert path == mount["mountPath"] + image_file(IMAGES / "Dockerfile.module")
    assert image_file(IMAGES / "Dockerfile.envoy") == path
    assert "FROM docker.io/envoyproxy/envoy:v1.40.0\n" in (IMAGES / "Dockerfile.envoy").read_text()
    assert "FROM scratch\n" in (IMAGES / "Dockerfile.module").read_text()
    assert image_file(IMAGES / "Dockerfile.module-busybox") == "/module/libwebhook_guard_native.so"
    assert 'command: ["cp", "/module/libwebhook_guard_native.so", "/out/"]' in (GATEWAY / "00-envoyproxy.yaml").read_text()
    # The env the config reads, from the Secret of 05 in the Envoy Deployment's namespace.
    secret = find(gw, "Secret", SECRET_NAME)
    assert secret["metadata"]["namespace"] == proxy["metadata"]["namespace"]
    assert env_refs(dm["config"]) == {e["name"] for e in container["env"]}
    assert all(e["valueFrom"]["secretKeyRef"]["name"] == SECRET_NAME for e in container["env"])
    assert {e["valueFrom"]["secretKeyRef"]["key"] for e in container["env"]
            if not e["valueFrom"]["secretKeyRef"].get("optional")} <= set(secret["stringData"])
    # The etcd cluster the 06 comment tells policies to use is the one it adds.
    store = etcd_store()
    assert store["cluster"] == find(gw, "EnvoyPatchPolicy")["spec"]["jsonPatches"][0]["operation"]["value"]["name"]

    # Istio: the same workload, namespace and Secret as the wasm manifests (envoy/istio/).
    [wasm_filter] = load(ISTIO_WASM / "envoyfilter.yaml")
    [wasm_patch] = load(ISTIO_WASM / "deployment-patch.yaml")
    sidecar = find(istio, "EnvoyFilter", "webhook-guard-native")
    assert sidecar["metadata"]["namespace"] == wasm_filter["metadata"]["namespace"]
    assert sidecar["spec"]["workloadSelector"] == wasm_filter["spec"]["workloadSelector"]
    patch = find(istio, "Deployment")
    assert patch["metadata"] == wasm_patch["metadata"]
    annotations = patch["spec"]["template"]["metadata"]["annotations"]
    assert annotations["proxy.istio.io/config"] == wasm_patch["spec"]["template"]["metadata"]["annotations"][
        "proxy.istio.io/config"]
    [proxy_container] = patch["spec"]["template"]["spec"]["containers"]
    assert proxy_container["name"] == "istio-proxy"
    secret_refs = [e["valueFrom"]["secretKeyRef"] for e in proxy_container["env"] if "valueFrom" in e]
    wasm_refs = [e["valueFrom"]["secretKeyRef"] for e in wasm_patch["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert {r["name"] for r in secret_refs} == {SECRET_NAME} and all(r in secret_refs for r in wasm_refs)
    volumes = json.loads(annotations["sidecar.istio.io/userVolume"])
    mounts = json.loads(annotations["sidecar.istio.io/userVolumeMount"])
    assert set(volumes) == set(mounts) and volumes[next(iter(volumes))]["image"]["reference"] == MODULE_IMAGE
    search_path = {e["name"]: e.get("value") for e in proxy_container["env"]}["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"]
    assert search_path == mounts[next(iter(mounts))]["mountPath"]
    # The gateway: the pod the chart values make is the one the EnvoyFilter and Gateway select.
    values = load(ISTIO_NATIVE / "gateway-helm-values.yaml")[0]
    gw_filter = find(istio, "EnvoyFilter", "webhook-guard-native-gateway")
    selector = gw_filter["spec"]["workloadSelector"]["labels"]
    assert selector.items() <= values["labels"].items()
    assert find(istio, "Gateway")["spec"]["selector"] == selector
    assert values["env"]["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] == values["volumeMounts"][0]["mountPath"]
    assert values["volumes"][0]["image"]["reference"] == MODULE_IMAGE
    assert {r["valueFrom"]["secretKeyRef"]["name"] for r in values["envVarFrom"]} == {SECRET_NAME}
    # Both EnvoyFilters read exactly the env their pod gets, and keep the wasm build's stat names.
    for ef, names in ((sidecar, {e["name"] for e in proxy_container["env"]}),
                      (gw_filter, {e["name"] for e in values["envVarFrom"]})):
        [http] = [p for p in ef["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"]
        typed = http["patch"]["value"]["typed_config"]
        assert typed["dynamic_module_config"]["metrics_namespace"] == "wasmcustom"
        assert typed["dynamic_module_config"]["name"] == "webhook_guard_native"
        assert typed["filter_name"] == "webhook_guard"
        assert env_refs(json.loads(typed["filter_config"]["value"])) == names - {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH"}
    assert "wasmcustom.webhook_guard" in yaml.safe_load(annotations["proxy.istio.io/config"])["proxyStatsMatcher"][
        "inclusionPrefixes"]


def etcd_store() -> dict:
    [store] = re.findall(r'^#\s+"store": (\{.*\})$', (GATEWAY / "06-etcd-store.yaml").read_text(), re.M)
    return json.loads(store)


# ---- Envoy Gateway -------------------------------------------------------------------------
def test_envoy_gateway(work, backend, secret_data):
    gw = manifests(GATEWAY)
    proxy = find(gw, "EnvoyProxy")
    deployment = proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]
    mount_module(work / "pod", deployment["container"]["volumeMounts"][0]["mountPath"])
    env = resolve_env(deployment["container"]["env"], secret_data)
    ports = ports_for(backend)
    envoy = PlatformEnvoy(work, "envoy-gateway", envoy_gateway_config(gw, work / "pod", ports), env, ports)
    envoy.validate()
    # 06: every policy on the etcd store through the added cluster (validation only: no etcd here).
    config = copy.deepcopy(find(gw, "EnvoyExtensionPolicy")["spec"]["dynamicModule"][0]["config"])
    for policy in config["policies"]:
        policy["store"] = etcd_store()
    PlatformEnvoy(work, "envoy-gateway-etcd", envoy_gateway_config(gw, work / "pod", ports, config), env,
                  ports).validate()
    try:
        envoy.start()
        # Envoy Gateway sets no metrics_namespace: Envoy's default prefix. Unguarded route: passes.
        exercise(envoy, backend, secret_data[SECRET_NAME], "dynamicmodulescustom.", other=200)
        # 00's stats tags: the same Prometheus series as the other deployments.
        prom = requests.get(envoy.admin + "/stats/prometheus", timeout=5).text
        labels = 'stat_namespace="dynamicmodulescustom",webhook_policy="github"'
        assert f"envoy_webhook_guard_policy_accepted{{{labels}}} 1\n" in prom, \
            [line for line in prom.splitlines() if "webhook_guard" in line][:8]
        assert f'envoy_webhook_guard_policy_reason{{{labels},webhook_reason="replayed"}} 1\n' in prom
        # 04's buffer limit: a body far above Envoy Gateway's 32 KiB default reaches the filter.
        big = body(256 * 1024)
        resp = envoy.post("/webhooks/github", big, github(secret_data[SECRET_NAME]["github"], big))
        assert resp.status_code == 200, resp.text
        assert deliveries(backend, big) == 1
    finally:
        envoy.stop()


def kubelet_write(directory: pathlib.Path, files: dict[str, str], generation: int) -> None:
    """A Secret volume update as the kubelet does it: a new ..<generation> directory, the ..data
    symlink swapped by a rename, and top-level symlinks into ..data."""
    directory.mkdir(parents=True, exist_ok=True)
    gen = directory / f"..{generation}"
    gen.mkdir()
    for name, text in files.items():
        (gen / name).write_text(text)
    tmp = directory / "..data_tmp"
    os.symlink(gen.name, tmp)
    os.replace(tmp, directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            os.symlink(f"..data/{name}", directory / name)


def sds_files(secret: dict, values: dict[str, str]) -> dict[str, str]:
    """The Secret's files with the given secret values filled in (others left as they are)."""
    out = {}
    for key, text in secret["stringData"].items():
        doc = yaml.safe_load(text)
        name = doc["resources"][0]["name"]
        if name in values:
            doc["resources"][0]["generic_secret"]["secret"]["inline_string"] = values[name]
        out[key] = yaml.safe_dump(doc)
    return out


def test_envoy_gateway_secrets_from_a_secret_volume_rotate_without_a_restart(work, backend, secrets):
    gw = manifests(GATEWAY)
    deployment = find(gw, "EnvoyProxy")["spec"]["provider"]["kubernetes"]["envoyDeployment"]
    pod = work / "pod"
    mount_module(pod, deployment["container"]["volumeMounts"][0]["mountPath"])
    # The additions 07 describes, read from its comments.
    sds_file = GATEWAY / "07-sds-secret-volume.yaml"
    additions = commented_yaml(sds_file, "# In 00-envoyproxy.yaml, add:")
    [mount], [volume] = additions["container.volumeMounts"], additions["pod.volumes"]
    secret = find(gw, "Secret", volume["secret"]["secretName"])
    assert volume["name"] == mount["name"]
    source = commented_yaml(sds_file, "# In 03-envoyextensionpolicy.yaml, add to config:")["sds_config"]
    assert source["path_config_source"]["watched_directory"]["path"] == mount["mountPath"]
    source["path_config_source"]["path"] = str(under(pod, source["path_config_source"]["path"]))
    source["path_config_source"]["watched_directory"]["path"] = str(under(pod, mount["mountPath"]))
    config = copy.deepcopy(find(gw, "EnvoyExtensionPolicy")["spec"]["dynamicModule"][0]["config"])
    config["sds_config"] = source
    for policy in config["policies"]:
        policy["secrets"] = [{"sds": f"{policy['name']}-current"}, {"sds": f"{policy['name']}-previous"}]
    old, new = secrets["GITHUB_WEBHOOK_SECRET"], secrets["GITHUB_WEBHOOK_SECRET_PREVIOUS"]
    volume_dir = under(pod, mount["mountPath"])
    # GitHub's secret filled in; Stripe's left as the committed placeholder.
    kubelet_write(volume_dir, sds_files(secret, {"github-current": old}), 1)
    ports = ports_for(backend)
    envoy = PlatformEnvoy(work, "envoy-gateway-sds", envoy_gateway_config(gw, pod, ports, config), {}, ports)
    try:
        envoy.start()
        first = body()
        assert envoy.post("/webhooks/github", first, github(old, first)).status_code == 200
        # An empty placeholder is no usable secret: deliveries are refused, none reaches the app.
        paid = body()
        resp = envoy.post("/webhooks/stripe", paid, stripe("", paid))
        assert (resp.status_code, resp.json()["error"]) == (503, "secret_unavailable"), resp.text
        assert deliveries(backend, paid) == 0
        # Rotate as an operator would: new current, old one kept as previous. No restart.
        kubelet_write(volume_dir, sds_files(secret, {"github-current": new, "github-previous": old}), 2)

        def rotated():
            b = body()
            return envoy.post("/webhooks/github", b, github(new, b)).status_code == 200
        wait_until(rotated, 10, "the rotated secret")
        b = body()
        assert envoy.post("/webhooks/github", b, github(old, b)).status_code == 200
        # Same process, same module: the replay store kept the first delivery.
        resp = envoy.post("/webhooks/github", first, github(old, first))
        assert (resp.status_code, resp.json()["error"]) == (409, "replayed")
        assert deliveries(backend, first) == 1
        assert old not in envoy.log() and new not in envoy.log()
    except Exception as e:
        raise AssertionError(f"{e}\n--- envoy log (tail) ---\n{envoy.log()[-4000:]}") from e
    finally:
        envoy.stop()


# ---- Istio ----------------------------------------------------------------------------------
@pytest.mark.parametrize("workload", ["sidecar", "gateway"])
def test_istio(workload, work, backend, secret_data):
    istio = manifests(ISTIO_NATIVE)
    ports = ports_for(backend)
    if workload == "sidecar":
        annotations = find(istio, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        [mount] = json.loads(annotations["sidecar.istio.io/userVolumeMount"]).values()
        [container] = find(istio, "Deployment")["spec"]["template"]["spec"]["containers"]
        env = resolve_env(container["env"], secret_data)
        config = istio_config(istio, "webhook-guard-native", "SIDECAR_INBOUND", ports)
        other = 200  # the app's other endpoints: "default": "allow"
    else:
        values = load(ISTIO_NATIVE / "gateway-helm-values.yaml")[0]
        [mount] = values["volumeMounts"]
        env = {**values["env"], **resolve_env(values["envVarFrom"], secret_data)}
        config = istio_config(istio, "webhook-guard-native-gateway", "GATEWAY", ports)
        other = 403  # a route that names no policy: "default": "deny"
    mount_module(work / "pod", mount["mountPath"])
    # The module is found by name on the search path, as in the pod.
    env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = str(under(work / "pod", env["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"]))
    envoy = PlatformEnvoy(work, f"istio-{workload}", config, env, ports)
    envoy.validate()
    try:
        envoy.start()
        exercise(envoy, backend, secret_data[SECRET_NAME], "wasmcustom.", other)
    finally:
        envoy.stop()

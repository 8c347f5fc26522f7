"""Starts the real Envoy 1.40 (from the .venv) and the Flask demo backend on loopback.

Every stack gets its own free ports and --base-id, so stacks never collide; logs go to files
under a temporary directory and are printed when a test fails.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import requests
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "demo"))
from render_envoy import render  # noqa: E402

WASM = pathlib.Path(os.environ.get("WEBHOOK_GUARD_WASM", ROOT / "target/wasm32-wasip1/release/webhook_guard.wasm"))
# The native build: Envoy loads lib<name>.so from ENVOY_DYNAMIC_MODULES_SEARCH_PATH.
NATIVE = pathlib.Path(os.environ.get("WEBHOOK_GUARD_NATIVE", ROOT / "target/native/libwebhook_guard_native.so"))
# Which build the Envoys this process starts run: "wasm" or "native" (set per test session by
# conftest.py, which runs the suite against each build).
BUILD = "wasm"


def build_env() -> dict[str, str]:
    """Environment an Envoy running the current build needs."""
    return {"ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(NATIVE.parent)} if BUILD == "native" else {}


def log_levels() -> list[str]:
    """Where the filter logs: Envoy's `wasm` logger, or `dynamic_modules` for the native build."""
    return ["--component-log-level", "wasm:debug,dynamic_modules:debug"]
CLI = ROOT / "target/release/webhook-guard"
DEMO_CONFIG = ROOT / "envoy" / "webhook-guard.json"
_base_ids = itertools.count((os.getpid() % 500) * 20 + 1000)


def envoy_binary() -> str:
    out = subprocess.run([sys.executable, str(ROOT / "scripts/envoy_path.py")], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def admin_stats(admin: str, prefix: str) -> dict[str, int]:
    """Envoy's counters under `prefix`, without the `wasmcustom.` prefix."""
    text = requests.get(admin + "/stats", params={"filter": "^" + prefix.replace(".", r"\.")}, timeout=5).text
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[name.removeprefix("wasmcustom.")] = int(value)
    return out


class Backend:
    """The demo backend: webhooks on `port` (what Envoy forwards to), its control endpoints
    (/events, /admin/*) on `admin_port`, loopback only and never behind the proxy."""

    def __init__(self, workdir: pathlib.Path, port: int | None = None):
        self.port = port or free_port()
        self.admin_port = free_port()
        self.log_path = workdir / "backend.log"
        env = {**os.environ, "WEBHOOK_DEMO_BACKEND_PORT": str(self.port),
               "WEBHOOK_DEMO_BACKEND_ADMIN_PORT": str(self.admin_port)}
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "demo/backend.py")],
            env=env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.admin_port}"
        wait_until(lambda: requests.get(self.url + "/healthz", timeout=1).ok, 15, "the backend")
        wait_until(lambda: requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok, 15,
                   "the backend's webhook port")

    def events(self) -> list[dict]:
        return requests.get(self.url + "/events", timeout=5).json()["events"]

    def reset(self) -> None:
        requests.post(self.url + "/admin/reset", timeout=5).raise_for_status()

    def fail_next(self, count: int) -> None:
        requests.post(self.url + f"/admin/fail-next?count={count}", timeout=5).raise_for_status()

    def slow_next(self, count: int, seconds: float) -> None:
        requests.post(self.url + f"/admin/slow-next?count={count}&seconds={seconds}", timeout=5).raise_for_status()

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Envoy:
    """One Envoy process running the rendered demo template with `plugin_config`."""

    def __init__(self, workdir: pathlib.Path, backend_port: int, plugin_config: dict | str, env: dict[str, str],
                 concurrency: int = 2, wait: bool = True, check_json: bool = True,
                 tls: tuple[str, str] | None = None, etcd_port: int = 2379, max_heap_bytes: int = 1 << 30,
                 template: pathlib.Path | None = None, component_log_level: str | None = None):
        self.workdir = workdir
        self.port = free_port()
        self.admin_port = free_port()
        self.base_id = next(_base_ids)
        self.tls_port = free_port() if tls else None
        self.log_path = workdir / f"envoy-{self.base_id}.log"
        self.access_log_path = workdir / f"access-{self.base_id}.log"
        config_text = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
        self.config_path = workdir / f"envoy-{self.base_id}.yaml"
        self.config_path.write_text(render(
            envoy_port=self.port,
            admin_port=self.admin_port,
            backend_port=backend_port,
            wasm_path=str(WASM),
            plugin_config=config_text,
            access_log_path=str(self.access_log_path),
            check_json=check_json,
            tls_port=self.tls_port,
            tls_cert=tls[0] if tls else None,
            tls_key=tls[1] if tls else None,
            etcd_port=etcd_port,
            max_heap_bytes=max_heap_bytes,
            build=BUILD,
            **({"template": template} if template else {}),
        ))
        # Only the secrets we pass, so nothing from the developer's shell leaks in.
        clean = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRET", "_SECRET_PREVIOUS"))}
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(self.config_path), "--base-id", str(self.base_id),
             "--concurrency", str(concurrency), "--log-level", "info",
             *(["--component-log-level", component_log_level] if component_log_level else log_levels()),
             "--file-flush-interval-msec", "100"],
            env={**clean, **build_env(), **env},
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 30) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            return requests.get(self.admin + "/ready", timeout=1).text.strip() == "LIVE"
        wait_until(ready, timeout, "envoy /ready")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def access_log(self) -> list[dict]:
        if not self.access_log_path.exists():
            return []
        return [json.loads(line) for line in self.access_log_path.read_text().splitlines() if line.strip()]

    def heap_mib(self) -> float:
        """Envoy's allocated heap (tcmalloc), from the admin /memory endpoint."""
        return int(requests.get(self.admin + "/memory", timeout=5).json()["allocated"]) / 2**20

    def stats(self, prefix: str = "wasmcustom.webhook_guard.") -> dict[str, int]:
        return admin_stats(self.admin, prefix)

    def rejection_logs(self) -> list[dict]:
        lines = []
        for line in self.log().splitlines():  # the wasm or the dynamic_modules logger
            if '"event":"webhook_rejected"' in line:
                lines.append(json.loads(line[line.index("{"):]))
        return lines

    def stop(self) -> None:
        stop_process(self.proc)


class ReloadableEnvoy:
    """Envoy whose webhook listener (the rendered demo template's) comes from a file-based LDS
    source: `reload()` swaps in a new plugin config and VM environment without a restart, as a
    control plane would."""

    def __init__(self, workdir: pathlib.Path, backend_port: int, plugin_config: dict,
                 key_values: dict[str, str] | None = None, env: dict[str, str] | None = None,
                 etcd_port: int = 2379):
        self.workdir = workdir
        self.backend_port = backend_port
        self.etcd_port = etcd_port
        self.port, self.admin_port = free_port(), free_port()
        self.lds = workdir / f"lds-{self.port}.json"
        self.log_path = workdir / f"envoy-reloadable-{self.port}.log"
        bootstrap = yaml.safe_load(self._render(plugin_config))
        listener = bootstrap["static_resources"].pop("listeners")[0]
        self._write_lds(self._with_key_values(listener, key_values))
        bootstrap["node"] = {"id": "reload-test", "cluster": "webhook-guard"}
        bootstrap["dynamic_resources"] = {"lds_config": {"resource_api_version": "V3",
                                                         "path_config_source": {"path": str(self.lds)}}}
        config = workdir / f"bootstrap-{self.port}.json"
        config.write_text(json.dumps(bootstrap))
        clean = {k: v for k, v in os.environ.items() if not k.endswith(("_SECRET", "_SECRET_PREVIOUS"))}
        self.proc = subprocess.Popen([envoy_binary(), "-c", str(config), "--base-id", str(next(_base_ids)),
                                      "--concurrency", "2", *log_levels()],
                                     env={**clean, **build_env(), **(env or {})}, stdout=self.log_path.open("wb"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        try:
            wait_until(lambda: requests.get(self.admin + "/ready", timeout=1).text.strip() == "LIVE", 30, "envoy")
        except TimeoutError as e:
            self.stop()
            raise AssertionError(self.log()[-4000:]) from e
        self.updates = 1

    def _render(self, plugin_config: dict) -> str:
        return render(envoy_port=self.port, admin_port=self.admin_port, backend_port=self.backend_port,
                      wasm_path=str(WASM), plugin_config=json.dumps(plugin_config),
                      access_log_path=str(self.workdir / f"access-{self.port}.log"), etcd_port=self.etcd_port,
                      build=BUILD)

    @staticmethod
    def _with_key_values(listener: dict, key_values: dict[str, str] | None) -> dict:
        if key_values is not None:
            hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
            wasm = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.wasm")
            variables = wasm["typed_config"]["config"]["vm_config"]["environment_variables"]
            # Envoy refuses a name both in host_env_keys and key_values.
            variables["host_env_keys"] = [k for k in variables["host_env_keys"] if k not in key_values]
            variables["key_values"] = key_values
        return listener

    def _write_lds(self, listener: dict) -> None:
        tmp = self.lds.with_suffix(".tmp")
        tmp.write_text(json.dumps({"resources": [{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                                                  **listener}]}))
        os.replace(tmp, self.lds)  # atomic: Envoy reloads on the rename

    def reload(self, plugin_config: dict, key_values: dict[str, str] | None = None) -> None:
        """Writes the new listener and waits until Envoy has applied it."""
        listener = yaml.safe_load(self._render(plugin_config))["static_resources"]["listeners"][0]
        self._write_lds(self._with_key_values(listener, key_values))
        self.updates += 1
        want = f"listener_manager.lds.update_success: {self.updates}"
        wait_until(lambda: want in requests.get(self.admin + "/stats", params={"filter": "lds.update_success"},
                                                timeout=5).text, 30, "the listener update")

    def stats(self, prefix: str = "wasmcustom.webhook_guard.") -> dict[str, int]:
        return admin_stats(self.admin, prefix)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)


class Etcd:
    """A single-member etcd (Debian's etcd-server, installed by scripts/setup.sh) on loopback,
    with its own ports and data directory; it can be stopped, paused and started again."""

    def __init__(self, workdir: pathlib.Path):
        self.port = free_port()
        self.peer_port = free_port()
        self.data_dir = workdir / f"etcd-{self.port}"
        self.log_path = workdir / f"etcd-{self.port}.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.proc = subprocess.Popen(
            [shutil.which("etcd") or "etcd", "--name", "wg", "--data-dir", str(self.data_dir),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"wg={peer}",
             # Revisions pile up with every claim: keep one hour of history.
             "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h"],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_until(lambda: requests.get(self.url + "/health", timeout=1).json().get("health") == "true",
                   20, "etcd /health")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def pause(self) -> None:
        """Stops answering without closing connections: calls time out instead of failing."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def keys(self, prefix: str) -> dict[str, str]:
        """Keys under `prefix` and their values (through the v3 gateway)."""
        b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
        start = prefix.encode()
        end = start[:-1] + bytes([start[-1] + 1])
        resp = requests.post(self.url + "/v3/kv/range", json={"key": b64(start), "range_end": b64(end)}, timeout=5)
        resp.raise_for_status()
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in resp.json().get("kvs", [])}


class HoldingProxy:
    """A TCP proxy on loopback that can keep the upstream's answers from reaching the client
    while still passing the client's requests on: the server acts, the client times out.
    (The way an etcd write can be applied while the proxy gives up on its answer.)"""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.hold = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if answers and self.hold.is_set():
                    continue  # swallowed: the client never sees this answer
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()


class Stack:
    """Backend + Envoy; `post` sends through Envoy."""

    def __init__(self, plugin_config: dict | str, env: dict[str, str], concurrency: int = 2,
                 tls: tuple[str, str] | None = None, component_log_level: str | None = None):
        self.tmp = tempfile.TemporaryDirectory(prefix="webhook-guard-e2e-")
        self.workdir = pathlib.Path(self.tmp.name)
        self.backend = Backend(self.workdir)
        try:
            self.envoy = Envoy(self.workdir, self.backend.port, plugin_config, env, concurrency, tls=tls,
                               component_log_level=component_log_level)
        except Exception:
            self.backend.stop()
            raise

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None, **kw) -> requests.Response:
        return requests.post(self.envoy.url + path, data=body, headers=headers or {}, timeout=10, **kw)

    def logs(self) -> str:
        return f"--- envoy log (tail) ---\n{self.envoy.log()[-6000:]}\n--- backend log (tail) ---\n" + \
            self.backend.log_path.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        self.envoy.stop()
        self.backend.stop()
        self.tmp.cleanup()

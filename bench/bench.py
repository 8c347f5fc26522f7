#!/usr/bin/env python3
"""webhook-guard benchmarks: Envoy 1.40 with one worker, side by side in one run.

Per body size (1 KiB, 16 KiB, 128 KiB) it measures, with wrk on loopback, for each build (the
wasm module and the native dynamic module, rows prefixed `native`):
  baseline   buffer filter + direct_response, no filter
  unmatched  + webhook-guard, no policy matching (its fixed cost)
  accepted   + webhook-guard, unique pre-signed deliveries (each one claimed and committed)
  replay     + webhook-guard, the same delivery again and again (409 replayed)
  invalid    + webhook-guard, a wrong signature (401)
  flask-*    the same checks in a Flask before_request hook under gunicorn (1 worker)
and each build's store with 1k and with 100k live entries. Envoy runs on CPU 0, wrk on CPU 1. CPU per request comes
from the server process's own CPU time (/proc) divided by the requests it answered.
Writes docs/benchmarks.md (and bench/results.json).
"""
from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import typing
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent
WASM = ROOT / "target/wasm32-wasip1/release/webhook_guard.wasm"
NATIVE = ROOT / "target/native/libwebhook_guard_native.so"
BUILDS = ("wasm", "native")
SECRET = "whsec_" + base64.b64encode(b"webhook-guard-benchmark-secret!!").decode()
KEY = base64.b64decode(SECRET[6:])
SIZES = [1024, 16 * 1024, 128 * 1024]
TICK = os.sysconf("SC_CLK_TCK")
CONNECTIONS = 8
# Deliveries pre-signed per size for the accepted path: enough for the run at the expected rate.
RATE_GUESS = {1024: 40000, 16 * 1024: 20000, 128 * 1024: 5000}

PLUGIN = {
    "policies": [{
        "name": "bench", "match": {"path_prefix": "/webhook"}, "provider": "standard-webhooks",
        "secrets": [{"inline": SECRET}], "timestamp_tolerance_seconds": 3600,
        "max_body_bytes": 1048576,
    }],
    "store": {"capacity": 2_000_000, "sweep_interval_seconds": 2},
}
PLUGIN_SWEEP_S = 2
# `decrypt` rows: the same policy, opening an AES-256-GCM envelope (seed 003) after the checks.
ENCRYPTION_KEY = bytes(range(32))
PLUGIN_DECRYPT = {**PLUGIN, "policies": [{**PLUGIN["policies"][0], "decrypt": {
    "cipher": "aes-256-gcm", "keys": [{"inline": base64.b64encode(ENCRYPTION_KEY).decode()}]}}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def envoy_binary() -> str:
    out = subprocess.run([sys.executable, str(ROOT / "scripts/envoy_path.py")], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def wasm_filter_yaml(plugin: dict, wasm: pathlib.Path | None = None) -> str:
    config = json.dumps(json.dumps(plugin))
    return f"""          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: webhook_guard
                root_id: webhook_guard
                vm_config:
                  vm_id: webhook_guard
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {wasm or WASM} }} }}
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {config}
                allow_on_headers_stop_iteration: true"""


def native_filter_yaml(plugin: dict) -> str:
    config = json.dumps(json.dumps(plugin))
    return f"""          - name: webhook_guard
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config: {{ name: webhook_guard_native, metrics_namespace: wasmcustom }}
              filter_name: webhook_guard
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: {config}"""


def row_name(build: str, path: str) -> str:
    """Row names: the wasm build's as before (`accepted`), the native build's prefixed."""
    return path if build == "wasm" else f"native_{path}"


class Server:
    """A process pinned to a CPU (0: the measured server) whose CPU time and RSS we can read."""

    def __init__(self, argv, env=None, log=None, ready_url=None, cpu: int = 0):
        self.log = log
        self.proc = subprocess.Popen(["taskset", "-c", str(cpu), *argv], env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while ready_url:
            try:
                with urllib.request.urlopen(ready_url, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server {argv[0]} did not start")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        pids = [self.proc.pid]
        try:
            children = pathlib.Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            pids += [int(c) for c in children]
        except OSError:
            pass
        return pids

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except OSError:
                pass
        return total / TICK

    def rss_mib(self) -> float:
        total = 0
        for pid in self.pids():
            try:
                m = re.search(r"VmRSS:\s+(\d+) kB", pathlib.Path(f"/proc/{pid}/status").read_text())
                total += int(m.group(1)) if m else 0
            except OSError:
                pass
        return total / 1024

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


_base_id = 3000 + os.getpid() % 1000


def start_envoy(work: pathlib.Path, with_filter: bool, plugin: dict = PLUGIN,
                etcd_port: int = 2379, build: str = "wasm", module: pathlib.Path | None = None) -> tuple[Server, str]:
    """`module`: another build of the wasm file, or another directory holding the native module."""
    global _base_id
    _base_id += 1
    port, admin = free_port(), free_port()
    if not with_filter:
        guard = ""
    elif build == "wasm":
        guard = wasm_filter_yaml(plugin, module)
    else:
        guard = native_filter_yaml(plugin)
    text = string.Template((ROOT / "envoy/bench.yaml.tmpl").read_text()).substitute(
        PORT=port, ADMIN_PORT=admin, WASM_FILTER=guard, ETCD_PORT=etcd_port)
    cfg = work / f"envoy-{_base_id}.yaml"
    cfg.write_text(text)
    log = (work / f"envoy-{_base_id}.log").open("wb")
    native_dir = module if build == "native" and module else NATIVE.parent
    env = {**os.environ, "ENVOY_DYNAMIC_MODULES_SEARCH_PATH": str(native_dir)}
    server = Server([envoy_binary(), "-c", str(cfg), "--concurrency", "1", "--base-id", str(_base_id),
                     "--log-level", "warn"], env=env, log=log, ready_url=f"http://127.0.0.1:{admin}/ready")
    server.admin = f"http://127.0.0.1:{admin}"
    return server, f"http://127.0.0.1:{port}/webhook"


def start_etcd(work: pathlib.Path) -> tuple[Server, str]:
    """A single-member etcd on CPU 1 (with wrk), so Envoy's CPU 0 measures the filter alone."""
    port, peer = free_port(), free_port()
    url, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
    log = (work / "etcd.log").open("wb")
    server = Server(["etcd", "--name", "bench", "--data-dir", str(work / "etcd"), "--listen-client-urls", url,
                     "--advertise-client-urls", url, "--listen-peer-urls", peer_url,
                     "--initial-advertise-peer-urls", peer_url, "--initial-cluster", f"bench={peer_url}",
                     "--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h"],
                    log=log, ready_url=url + "/health", cpu=1)
    server.port = port
    return server, url


def etcd_post(url: str, path: str, doc: dict) -> dict:
    req = urllib.request.Request(url + path, data=json.dumps(doc).encode(), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def etcd_usage(url: str, prefix: str) -> dict:
    """Keys under `prefix`, and the backend's size in use (bytes)."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    count = etcd_post(url, "/v3/kv/range", {"key": b64(prefix.encode()), "range_end": b64(prefix[:-1].encode() + bytes([ord(prefix[-1]) + 1])),
                                             "count_only": True}).get("count", "0")
    status = etcd_post(url, "/v3/maintenance/status", {})
    return {"keys": int(count), "db_in_use": int(status.get("dbSizeInUse", status.get("dbSize", 0)))}


def bench_etcd(work: pathlib.Path, a, ts: str, body_path: pathlib.Path, body: bytes) -> dict:
    """The etcd tier at 1 KiB: accepted deliveries (claim + commit round trips, shared leases)
    and replays this replica has seen (answered from its shared-data cache), with etcd's own
    CPU, the round-trip latency counters, and etcd's bytes per key."""
    etcd, etcd_url = start_etcd(work)
    out = {}
    try:
        prefix = "webhook-guard/bench/"
        plugin = {**PLUGIN, "policies": [{**PLUGIN["policies"][0],
                                          "store": {"type": "etcd", "cluster": "etcd", "prefix": prefix.rstrip("/")}}]}
        server, url = start_envoy(work, with_filter=True, plugin=plugin, etcd_port=etcd.port)
        per_run = 15000 * int(a.duration)
        run_path, warm_path = work / "run-etcd.txt", work / "warm-etcd.txt"
        write_fixtures(run_path, "msg_etcd_", per_run * a.repeat, ts, body)
        write_fixtures(warm_path, "msg_etcdw_", 15000 * int(max(a.warmup, 1)), ts, body)
        before = etcd_usage(etcd_url, prefix)
        etcd_cpu0 = etcd.cpu_seconds()
        rep = {"repeat": a.repeat}
        unique = {"BENCH_BODY": str(body_path), "BENCH_FIXTURES": str(run_path)}
        warm = {"BENCH_BODY": str(body_path), "BENCH_FIXTURES": str(warm_path)}
        acc = measure(server, url, a.duration, unique, warm, a.warmup, **rep, per_run=per_run)
        stats = {name: stat(server, f"wasmcustom.webhook_guard.etcd.{name}")
                 for name in ("calls", "errors", "leases_granted", "cache_hits")}
        stats["latency"] = {b: stat(server, f"wasmcustom.webhook_guard.etcd.latency.{b}")
                            for b in ("under_1ms", "under_5ms", "under_25ms", "under_100ms", "under_500ms", "over_500ms")}
        after = etcd_usage(etcd_url, prefix)
        admitted = stat(server, "wasmcustom.webhook_guard.policy.bench.accepted")
        acc["etcd"] = {**stats, "admitted": admitted,
                       "etcd_cpu_us_per_delivery": (etcd.cpu_seconds() - etcd_cpu0) * 1e6 / max(admitted, 1),
                       "keys": after["keys"] - before["keys"],
                       "bytes_per_key": (after["db_in_use"] - before["db_in_use"]) / max(after["keys"] - before["keys"], 1),
                       "etcd_rss_mib": etcd.rss_mib()}
        out["accepted_etcd"] = acc
        fixed = {"BENCH_BODY": str(body_path), "BENCH_ID": "msg_etcd_00000001", "BENCH_TS": ts,
                 "BENCH_SIG": sign("msg_etcd_00000001", ts, body)}
        calls0 = stat(server, "wasmcustom.webhook_guard.etcd.calls")
        out["replay_etcd"] = measure(server, url, a.duration, fixed, None, a.warmup, **rep)
        out["replay_etcd"]["etcd_calls"] = stat(server, "wasmcustom.webhook_guard.etcd.calls") - calls0
        server.stop()
    finally:
        etcd.stop()
    return out


def bench_store(work: pathlib.Path, a, ts: str, build: str) -> dict:
    """A store with 1k live entries and one with `--store-entries` (100k) more: RSS per added
    entry, and CPU per request on the accepted and replay paths in each, measured in turns."""
    n, small = a.store_entries, 1000
    print(f"== {build} store with {small} then {n} live entries (1 KiB bodies)", flush=True)
    size = 1024
    body_path = work / f"body-{size}.json"
    if not body_path.exists():
        body_path.write_bytes((b'{"type":"bench","data":"' + b"x" * size)[: size - 2] + b'"}')
    body = body_path.read_bytes()
    fill_path = work / f"fill-{build}.txt"
    write_fixtures(fill_path, f"msg_fill_{build}_", small + n, ts, body)
    fill = {"BENCH_BODY": str(body_path), "BENCH_FIXTURES": str(fill_path)}
    first = f"msg_fill_{build}_00000001"
    replayed = {"BENCH_BODY": str(body_path), "BENCH_ID": first, "BENCH_TS": ts, "BENCH_SIG": sign(first, ts, body)}

    def fill_to(url: str, start: int, target: int) -> None:
        # Send each prefill delivery once, continuing where the previous wrk run stopped.
        sent, deadline = start, time.monotonic() + 120
        while sent < target and time.monotonic() < deadline:
            left = target - sent
            sent += run_wrk(url, 1 + left // 20000, {**fill, "BENCH_OFFSET": str(sent), "BENCH_LIMIT": str(left)})["requests"]

    def snapshot(server: "Server") -> dict:
        time.sleep(PLUGIN_SWEEP_S + 0.5)  # the gauge comes from the sweeper
        return {"entries": stat(server, "wasmcustom.webhook_guard.store.entries"), "rss_mib": server.rss_mib()}

    def prepared() -> tuple:
        # 1k entries, then load that adds none (one delivery, replayed) so that Envoy's own
        # working set (connection buffers, allocator caches) is at its loaded size.
        server, url = start_envoy(work, with_filter=True, build=build)
        fill_to(url, 0, small)
        run_wrk(url, a.warmup + a.duration, replayed)
        return server, url

    many_server, many_url = prepared()
    few = snapshot(many_server)
    fill_to(many_url, small, small + n)
    many = snapshot(many_server)
    few_server, few_url = prepared()
    # The accepted runs add their deliveries to both stores alike: the second always holds n more.
    run_path = work / f"run-store-{build}.txt"
    per_run = int(RATE_GUESS[size] * a.duration * 1.5)
    write_fixtures(run_path, f"msg_store_{build}_", per_run * a.repeat + int(RATE_GUESS[size] * a.warmup * 1.5), ts, body)
    unique = {"BENCH_BODY": str(body_path), "BENCH_FIXTURES": str(run_path)}
    warm = {**unique, "BENCH_OFFSET": str(per_run * a.repeat)}
    rows = measure_rows({
        "few_accepted": Row(few_server, few_url, unique, warm, per_run),
        "many_accepted": Row(many_server, many_url, unique, warm, per_run),
        "few_replay": Row(few_server, few_url, replayed, replayed, 0),
        "many_replay": Row(many_server, many_url, replayed, replayed, 0),
    }, a)
    few.update(accepted=rows["few_accepted"], replay=rows["few_replay"])
    many.update(accepted=rows["many_accepted"], replay=rows["many_replay"])
    few_server.stop()
    many_server.stop()
    capacity = PLUGIN["store"]["capacity"]
    store = {"few": few, "many": many, "shards": min(-(-capacity // 32), 4096),
             "bytes_per_entry": (many["rss_mib"] - few["rss_mib"]) * 2**20 / max(many["entries"] - few["entries"], 1),
             "cpu_ratio_accepted": many["accepted"]["cpu_us_per_req"] / max(few["accepted"]["cpu_us_per_req"], 1e-9),
             "cpu_ratio_replay": many["replay"]["cpu_us_per_req"] / max(few["replay"]["cpu_us_per_req"], 1e-9)}
    print(f"   {few['entries']} -> {many['entries']} entries: {store['bytes_per_entry']:.0f} bytes RSS/entry; accepted "
          f"{few['accepted']['cpu_us_per_req']:.1f} -> {many['accepted']['cpu_us_per_req']:.1f} us CPU/req, replay "
          f"{few['replay']['cpu_us_per_req']:.1f} -> {many['replay']['cpu_us_per_req']:.1f}", flush=True)
    return store


# Bench-only builds (scripts/bench.sh): modules whose stream callbacks do nothing (`floor-probe`),
# for wasm one that only reads the request header map (`floor-headers`), and in both builds one
# that does the least a body-verifying filter must (`floor-hold`: read the headers, hold the
# request until the body is buffered, read the body once, go on).
FLOOR_WASM = ROOT / "target/floor/wasm32-wasip1/release/webhook_guard.wasm"
FLOOR_HEADERS_WASM = ROOT / "target/floor-headers/wasm32-wasip1/release/webhook_guard.wasm"
FLOOR_HOLD_WASM = ROOT / "target/floor-hold/wasm32-wasip1/release/webhook_guard.wasm"
FLOOR_NATIVE_DIR = ROOT / "target/floor/native"
FLOOR_HOLD_NATIVE_DIR = ROOT / "target/floor-hold/native"


def bench_floor(work: pathlib.Path, a, ts: str) -> dict:
    """What the host charges before our code runs (1 KiB): the buffered baseline, a module whose
    callbacks all return at once, (wasm) one that only reads the request headers, our unmatched
    path; then a module that only holds the request and reads its headers and body once, beside
    our accepted, replay and invalid paths; per build, in turns."""
    print("== the host's floor, 1 KiB", flush=True)
    size = 1024
    body = (b'{"type":"bench","data":"' + b"x" * size)[: size - 2] + b'"}'
    body_path = work / "floor-body.json"
    body_path.write_bytes(body)
    fixed = {"BENCH_BODY": str(body_path), "BENCH_ID": "msg_fixed", "BENCH_TS": ts,
             "BENCH_SIG": sign("msg_fixed", ts, body)}
    invalid = {**fixed, "BENCH_SIG": "v1," + base64.b64encode(b"\0" * 32).decode()}
    per_run = int(RATE_GUESS[size] * a.duration * 1.5)
    run_path, warm_path = work / "floor-run.txt", work / "floor-warm.txt"
    write_fixtures(run_path, "msg_floor_r_", per_run * a.repeat, ts, body)
    write_fixtures(warm_path, "msg_floor_w_", int(RATE_GUESS[size] * a.warmup * 1.5) + 100, ts, body)
    unique = {"BENCH_BODY": str(body_path), "BENCH_FIXTURES": str(run_path)}
    warm_unique = {"BENCH_BODY": str(body_path), "BENCH_FIXTURES": str(warm_path)}
    unmatched = {**PLUGIN, "policies": [{**PLUGIN["policies"][0], "match": {"path_prefix": "/other"}}]}
    # name: (start_envoy arguments, wrk environment, unique deliveries)
    starts = {
        "baseline": (dict(with_filter=False), fixed, False),
        "wasm_noop": (dict(with_filter=True, plugin=unmatched, module=FLOOR_WASM), fixed, False),
        "wasm_headers": (dict(with_filter=True, plugin=unmatched, module=FLOOR_HEADERS_WASM), fixed, False),
        "wasm_unmatched": (dict(with_filter=True, plugin=unmatched), fixed, False),
        "wasm_hold": (dict(with_filter=True, module=FLOOR_HOLD_WASM), fixed, False),
        "wasm_accepted": (dict(with_filter=True), unique, True),
        "wasm_replay": (dict(with_filter=True), fixed, False),
        "wasm_invalid": (dict(with_filter=True), invalid, False),
        "native_noop": (dict(with_filter=True, plugin=unmatched, build="native", module=FLOOR_NATIVE_DIR), fixed, False),
        "native_unmatched": (dict(with_filter=True, plugin=unmatched, build="native"), fixed, False),
        "native_hold": (dict(with_filter=True, build="native", module=FLOOR_HOLD_NATIVE_DIR), fixed, False),
        "native_accepted": (dict(with_filter=True, build="native"), unique, True),
        "native_replay": (dict(with_filter=True, build="native"), fixed, False),
        "native_invalid": (dict(with_filter=True, build="native"), invalid, False),
    }
    servers, rows = [], {}
    try:
        for name, (kw, env, fresh) in starts.items():
            server_url = start_envoy(work, **kw)
            servers.append(server_url[0])
            rows[name] = Row(*server_url, env, warm_unique if fresh else env, per_run if fresh else 0)
        out = measure_rows(rows, a)
    finally:
        for server in servers:
            server.stop()
    base = out["baseline"]["cpu_us_per_req"]
    for name, r in out.items():
        print(f"   {name:<17} {r['cpu_us_per_req']:.1f} us CPU/req ({r['cpu_us_per_req'] - base:+.1f})", flush=True)
    return out


def bench_decrypt(work: pathlib.Path, a, ts: str, sizes: list[int]) -> dict:
    """Per body size and build: the accepted path with plaintext bodies, and with the same
    bodies sealed in AES-256-GCM envelopes that the filter opens and forwards decrypted,
    measured in turns. The difference is what opening a payload costs."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    out = {}
    for size in sizes:
        print(f"== decrypt, {size // 1024} KiB plaintext", flush=True)
        body = (b'{"type":"bench","data":"' + b"x" * size)[: size - 2] + b'"}'
        nonce = b"\x01" * 12
        sealed = AESGCM(ENCRYPTION_KEY).encrypt(nonce, body, None)
        envelope = json.dumps({"encrypted": base64.b64encode(sealed).decode(),
                               "nonce": base64.b64encode(nonce).decode()}).encode()
        per_run = int(RATE_GUESS[size] * a.duration * 1.5)
        rows: dict[str, Row] = {}
        servers = []
        for kind, sent, plugin in (("plain", body, PLUGIN), ("decrypt", envelope, PLUGIN_DECRYPT)):
            body_path = work / f"dec-body-{kind}-{size}.json"
            body_path.write_bytes(sent)
            run_path, warm_path = work / f"dec-run-{kind}-{size}.txt", work / f"dec-warm-{kind}-{size}.txt"
            write_fixtures(run_path, f"msg_d{kind}{size}_", per_run * a.repeat, ts, sent)
            write_fixtures(warm_path, f"msg_dw{kind}{size}_", int(RATE_GUESS[size] * a.warmup * 1.5) + 100, ts, sent)
            for build in BUILDS:
                server_url = start_envoy(work, with_filter=True, plugin=plugin, build=build)
                servers.append(server_url[0])
                rows[f"{build}_{kind}"] = Row(*server_url, {"BENCH_BODY": str(body_path), "BENCH_FIXTURES": str(run_path)},
                                              {"BENCH_BODY": str(body_path), "BENCH_FIXTURES": str(warm_path)}, per_run)
        measured = measure_rows(rows, a)
        for server in servers:
            server.stop()
        out[str(size)] = {"envelope_bytes": len(envelope), **measured}
        for build in BUILDS:
            plain, dec = measured[f"{build}_plain"], measured[f"{build}_decrypt"]
            print(f"   {build:<6} plain {plain['cpu_us_per_req']:.1f} us CPU/req, decrypt {dec['cpu_us_per_req']:.1f} "
                  f"(+{dec['cpu_us_per_req'] - plain['cpu_us_per_req']:.1f}); non-2xx {dec['non_2xx']}", flush=True)
    return out


def start_flask(work: pathlib.Path) -> tuple[Server, str]:
    port = free_port()
    env = {**os.environ, "BENCH_SECRET": SECRET}
    log = (work / "gunicorn.log").open("wb")
    server = Server([str(ROOT / ".venv/bin/gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "--chdir",
                     str(ROOT / "bench"), "--log-level", "warning", "flask_guard:app"], env=env, log=log)
    url = f"http://127.0.0.1:{port}/webhook"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return server, url


def sign(msg_id: str, ts: str, body: bytes) -> str:
    mac = hmac.new(KEY, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def write_fixtures(path: pathlib.Path, prefix: str, count: int, ts: str, body: bytes) -> None:
    with path.open("w") as f:
        for i in range(count):
            msg_id = f"{prefix}{i:08d}"
            f.write(f"{msg_id} {ts} {sign(msg_id, ts, body)}\n")


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> dict:
    def latency(pct):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")
    total = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": latency(50), "p99_ms": latency(99),
        "requests": int(total.group(1)) if total else 0,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def run_wrk(url: str, duration: float, env: dict) -> dict:
    cmd = ["taskset", "-c", "1", "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s", "--latency",
           "-s", str(ROOT / "bench/wrk_request.lua"), url]
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return parse_wrk(out.stdout)


def measure(server: Server, url: str, duration: float, env: dict, warm_env: dict | None, warmup: float,
            repeat: int = 1, per_run: int = 0) -> dict:
    """Best of `repeat` runs (least CPU per request): the machine's noise only ever adds cost.
    With unique fixtures, run k starts `per_run` deliveries further in."""
    if warmup:
        run_wrk(url, warmup, warm_env or env)
    runs = []
    for k in range(repeat):
        cpu0 = server.cpu_seconds()
        r = run_wrk(url, duration, {**env, "BENCH_OFFSET": str(k * per_run)})
        cpu = server.cpu_seconds() - cpu0
        r["cpu_us_per_req"] = cpu * 1e6 / r["requests"] if r["requests"] else float("nan")
        r["rss_mib"] = server.rss_mib()
        runs.append(r)
    best = min(runs, key=lambda r: r["cpu_us_per_req"])
    best["runs"] = [{"rps": r["rps"], "cpu_us_per_req": r["cpu_us_per_req"]} for r in runs]
    best["non_2xx"] = sum(r["non_2xx"] for r in runs)
    return best


class Row(typing.NamedTuple):
    """One benchmark row: the server it measures, the wrk environment of its runs and warm-up,
    and (unique deliveries) how far into the fixtures each run starts after the previous one."""
    server: "Server"
    url: str
    env: dict
    warm_env: dict
    per_run: int


def measure_rows(rows: dict[str, Row], a) -> dict[str, dict]:
    """Warms every row up, then runs `a.repeat` rounds in which each row runs once; each row
    keeps its run with the least CPU per request (noise only ever adds cost)."""
    for r in rows.values():
        if a.warmup:
            run_wrk(r.url, a.warmup, r.warm_env)
    runs: dict[str, list] = {name: [] for name in rows}
    # Every row is compared with the baseline: it runs at the start and at the end of each round,
    # so one noisy phase cannot set the reference for a whole run.
    order = [*rows, "baseline"] if "baseline" in rows else list(rows)
    for k in range(a.repeat):
        for name in order:
            r = rows[name]
            cpu0 = r.server.cpu_seconds()
            out = run_wrk(r.url, a.duration, {**r.env, "BENCH_OFFSET": str(k * r.per_run)})
            cpu = r.server.cpu_seconds() - cpu0
            out["cpu_us_per_req"] = cpu * 1e6 / out["requests"] if out["requests"] else float("nan")
            out["rss_mib"] = r.server.rss_mib()
            runs[name].append(out)
    result = {}
    for name, measured in runs.items():
        best = min(measured, key=lambda r: r["cpu_us_per_req"])
        best["runs"] = [{"rps": r["rps"], "cpu_us_per_req": r["cpu_us_per_req"]} for r in measured]
        best["non_2xx"] = sum(r["non_2xx"] for r in measured)
        result[name] = best
    return result


def cpu_times() -> list[int]:
    """The aggregate /proc/stat CPU line: user nice system idle iowait irq softirq steal ..."""
    return [int(x) for x in pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def steal_percent(before: list[int], after: list[int]) -> float:
    """Share of CPU time the hypervisor took from this VM between two cpu_times() readings."""
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta[:8])
    return 100.0 * delta[7] / total if total else 0.0


def stat(server: Server, name: str) -> int:
    with urllib.request.urlopen(f"{server.admin}/stats?filter=^{name}$", timeout=5) as r:
        m = re.search(r": (\d+)", r.read().decode())
        return int(m.group(1)) if m else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=5, help="seconds per run (default 5)")
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement, best kept (default 3)")
    p.add_argument("--sizes", default=",".join(map(str, SIZES)))
    p.add_argument("--store-entries", type=int, default=100_000)
    p.add_argument("--output", default=str(ROOT / "docs/benchmarks.md"))
    p.add_argument("--no-etcd", action="store_true", help="skip the etcd-tier rows (1 KiB)")
    p.add_argument("--no-transitions", action="store_true", help="skip counting the wasm build's host transitions")
    p.add_argument("--only-etcd", action="store_true",
                   help="re-measure only the etcd-tier rows into bench/results.json, then rewrite the reports")
    p.add_argument("--only-store", action="store_true",
                   help="re-measure only the store rows (both builds) into bench/results.json, then rewrite the reports")
    p.add_argument("--only-floor", action="store_true",
                   help="re-measure only the host's floor rows into bench/results.json, then rewrite the reports")
    p.add_argument("--only-decrypt", action="store_true",
                   help="re-measure only the decrypt rows (both builds) into bench/results.json, then rewrite the reports")
    p.add_argument("--from-results", action="store_true",
                   help="only rewrite docs/benchmarks.md and the README table from bench/results.json")
    a = p.parse_args()
    if a.from_results:
        results = json.loads((ROOT / "bench/results.json").read_text())
        pathlib.Path(a.output).write_text(report(results, a, results.get("date")))
        update_readme(results)
        return 0
    if a.only_etcd:
        results = json.loads((ROOT / "bench/results.json").read_text())
        with tempfile.TemporaryDirectory(prefix="webhook-guard-bench-") as d:
            work = pathlib.Path(d)
            body = (b'{"type":"bench","data":"' + b"x" * 1024)[: 1024 - 2] + b'"}'
            body_path = work / "body-1024.json"
            body_path.write_bytes(body)
            rows = bench_etcd(work, a, str(int(time.time())), body_path, body)
        results["sizes"]["1024"].update(rows)
        (ROOT / "bench/results.json").write_text(json.dumps(results, indent=1) + "\n")
        pathlib.Path(a.output).write_text(report(results, a, results.get("date")))
        update_readme(results)
        for name, r in rows.items():
            print(f"   {name:<15} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms", flush=True)
        return 0
    if a.only_store:
        results = json.loads((ROOT / "bench/results.json").read_text())
        with tempfile.TemporaryDirectory(prefix="webhook-guard-bench-") as d:
            for build in BUILDS:
                results["store" if build == "wasm" else "native_store"] = bench_store(
                    pathlib.Path(d), a, str(int(time.time())), build)
        results["store_date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        (ROOT / "bench/results.json").write_text(json.dumps(results, indent=1) + "\n")
        pathlib.Path(a.output).write_text(report(results, a, results.get("date")))
        update_readme(results)
        return 0
    if a.only_floor:
        results = json.loads((ROOT / "bench/results.json").read_text())
        with tempfile.TemporaryDirectory(prefix="webhook-guard-bench-") as d:
            results["floor"] = bench_floor(pathlib.Path(d), a, str(int(time.time())))
        results["path_cost"] = core_path_cost()
        results["floor_date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        (ROOT / "bench/results.json").write_text(json.dumps(results, indent=1) + "\n")
        pathlib.Path(a.output).write_text(report(results, a, results.get("date")))
        update_readme(results)
        return 0
    sizes = [int(s) for s in a.sizes.split(",")]
    if a.only_decrypt:
        results = json.loads((ROOT / "bench/results.json").read_text())
        with tempfile.TemporaryDirectory(prefix="webhook-guard-bench-") as d:
            results["decrypt"] = bench_decrypt(pathlib.Path(d), a, str(int(time.time())), sizes)
        results["decrypt_date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        (ROOT / "bench/results.json").write_text(json.dumps(results, indent=1) + "\n")
        pathlib.Path(a.output).write_text(report(results, a, results.get("date")))
        update_readme(results)
        return 0
    results = {"sizes": {}, "store": {}, "date": datetime.date.today().isoformat(),
               "method": {"duration": a.duration, "warmup": a.warmup, "repeat": a.repeat}}
    ts = str(int(time.time()))
    cpu_start = cpu_times()
    with tempfile.TemporaryDirectory(prefix="webhook-guard-bench-") as d:
        work = pathlib.Path(d)
        for size in sizes:
            print(f"== {size // 1024} KiB bodies", flush=True)
            body = (b'{"type":"bench","data":"' + b"x" * size)[: size - 2] + b'"}'
            body_path = work / f"body-{size}.json"
            body_path.write_bytes(body)
            per_run = int(RATE_GUESS[size] * a.duration * 1.5)
            count = per_run * a.repeat
            warm_path, run_path = work / f"warm-{size}.txt", work / f"run-{size}.txt"
            write_fixtures(warm_path, f"msg_w{size}_", int(RATE_GUESS[size] * a.warmup * 1.5) + 100, ts, body)
            write_fixtures(run_path, f"msg_r{size}_", count, ts, body)
            fixed = {"BENCH_BODY": str(body_path), "BENCH_ID": "msg_fixed", "BENCH_TS": ts,
                     "BENCH_SIG": sign("msg_fixed", ts, body)}
            invalid = {**fixed, "BENCH_SIG": "v1," + base64.b64encode(b"\0" * 32).decode()}
            unique = {"BENCH_BODY": str(body_path), "BENCH_FIXTURES": str(run_path)}
            warm_unique = {"BENCH_BODY": str(body_path), "BENCH_FIXTURES": str(warm_path)}
            unmatched = {**PLUGIN, "policies": [{**PLUGIN["policies"][0], "match": {"path_prefix": "/other"}}]}
            # Every row's server runs at once and the rows are measured in turns, a round at a
            # time, best run kept: noise on this shared VM comes in phases, and a phase then
            # touches every row alike instead of one row's whole measurement.
            rows: dict[str, Row] = {}
            servers = []

            def add(name: str, server_url: tuple, env: dict, warm: dict | None = None, unique_runs: bool = False):
                servers.append(server_url[0])
                rows[name] = Row(*server_url, env, warm or env, per_run if unique_runs else 0)

            add("baseline", start_envoy(work, with_filter=False), fixed)
            for build in BUILDS:
                name = lambda path: row_name(build, path)  # noqa: E731
                add(name("accepted"), start_envoy(work, with_filter=True, build=build), unique, warm_unique, True)
                add(name("unmatched"), start_envoy(work, with_filter=True, plugin=unmatched, build=build), fixed)
                server_url = start_envoy(work, with_filter=True, build=build)
                add(name("replay"), server_url, fixed)
                rows[name("invalid")] = Row(*server_url, invalid, invalid, 0)
            add("flask_accepted", start_flask(work), unique, warm_unique, True)
            rows["flask_invalid"] = Row(*rows["flask_accepted"][:2], invalid, invalid, 0)
            row = measure_rows(rows, a)
            time.sleep(PLUGIN_SWEEP_S + 0.5)  # let a sweep publish the entries gauge
            for build in BUILDS:
                accepted = rows[row_name(build, "accepted")]
                row[row_name(build, "accepted")]["store_entries"] = stat(
                    accepted.server, "wasmcustom.webhook_guard.store.entries")
            for server in servers:
                server.stop()
            if size == 1024 and not a.no_etcd and shutil.which("etcd"):
                row.update(bench_etcd(work, a, ts, body_path, body))
            results["sizes"][size] = row
            for name, r in row.items():
                print(f"   {name:<15} {r['rps']:>9.0f} req/s  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                      f"{r['cpu_us_per_req']:.1f} us CPU/req  non-2xx {r['non_2xx']}", flush=True)

        # Each build's store with few and with many live entries: prefill, then the accepted
        # and replay paths (same process, so the CPU per request compares like for like).
        for build in BUILDS:
            results["store" if build == "wasm" else "native_store"] = bench_store(work, a, ts, build)
        results["decrypt"] = bench_decrypt(work, a, ts, sizes)
        results["floor"] = bench_floor(work, a, ts)

    results["hmac"] = hmac_throughput()
    results["path_cost"] = core_path_cost()
    if not a.no_transitions:
        import transitions
        results["transitions"] = transitions.measure_all()
    results["steal_percent"] = steal_percent(cpu_start, cpu_times())
    print(f"== CPU steal by the hypervisor during the run: {results['steal_percent']:.1f}%", flush=True)
    (ROOT / "bench/results.json").write_text(json.dumps(results, indent=1) + "\n")
    results["machine"] = machine()
    (ROOT / "bench/results.json").write_text(json.dumps(results, indent=1) + "\n")
    pathlib.Path(a.output).write_text(report(results, a, results["date"]))
    update_readme(results)
    print(f"wrote {a.output} and the README's benchmark table")
    return 0


def hmac_throughput() -> dict:
    """HMAC-SHA256 over 128 KiB with the core's code: in V8 (Node's WASI, the engine Envoy
    embeds) and natively."""
    out = {}
    cli = ROOT / "target/release/webhook-guard"
    wasm = ROOT / "target/wasm32-wasip1/release/webhook-guard.wasm"
    runs = {"native": ["taskset", "-c", "0", str(cli)],
            "wasm (V8)": ["taskset", "-c", "0", "node", "--no-warnings", str(ROOT / "bench/wasi_run.mjs"), str(wasm)]}
    for name, argv in runs.items():
        res = subprocess.run([*argv, "hmac-throughput", "--seconds", "2"], capture_output=True, text=True, timeout=60)
        out[name] = json.loads(res.stdout)["mb_per_s"] if res.returncode == 0 else float("nan")
    # The machine's own ceiling, measured right after on the same CPU: OpenSSL's SHA-256 (SHA
    # extensions) over the same 128 KiB buffers. HMAC adds two short blocks to it.
    if shutil.which("openssl"):
        res = subprocess.run(["taskset", "-c", "0", "openssl", "speed", "-seconds", "2", "-bytes", "131072",
                              "-evp", "sha256"], capture_output=True, text=True, timeout=60)
        row = [line.split() for line in res.stdout.splitlines() if line.startswith("sha256")]
        if res.returncode == 0 and row:
            out["openssl sha256"] = float(row[-1][-1].rstrip("k")) * 1000 / 1e6
    print(f"== HMAC-SHA256 over 128 KiB: {out}", flush=True)
    return out


def core_path_cost() -> dict:
    """The core's own CPU time per request (µs, 1 KiB) on each path, driven as the glue drives
    it against a host whose bookkeeping costs next to nothing (`webhook-guard path-cost`): in
    V8 (Node's WASI) for the wasm build, natively (the in-process store) for the native one.
    Best of 3 processes: a process's JIT and allocator settle differently."""
    out = {}
    cli = ROOT / "target/release/webhook-guard"
    wasm = ROOT / "target/wasm32-wasip1/release/webhook-guard.wasm"
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(PLUGIN, f)
    try:
        runs = {"native": ["taskset", "-c", "0", str(cli), "path-cost", "--native"],
                "wasm (V8)": ["taskset", "-c", "0", "node", "--no-warnings", str(ROOT / "bench/wasi_run.mjs"),
                              str(wasm), "path-cost"]}
        for name, argv in runs.items():
            best: dict = {}
            for _ in range(3):
                res = subprocess.run([*argv, "--config", f.name, "--rounds", "10"], capture_output=True, text=True,
                                     timeout=300)
                if res.returncode != 0:
                    # A path that was not taken (or a crash) leaves the row empty: say why.
                    print(f"   path-cost ({name}) failed: {res.stderr.strip()}", flush=True)
                    continue
                for path, us in json.loads(res.stdout).items():
                    if path in ("unmatched", "accepted", "replay", "invalid"):
                        best[path] = min(us, best.get(path, us))
            out[name] = best
    finally:
        os.unlink(f.name)
    print(f"== the core's own µs per request (1 KiB, no proxy): {out}", flush=True)
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    envoy = subprocess.run([envoy_binary(), "--version"], capture_output=True, text=True).stdout.strip().split()[-1]
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return (f"{os.cpu_count()} vCPU ({cpu}), {mem:.0f} GiB RAM, Linux {platform.release()}; "
            f"Envoy {envoy.split('/')[1] if '/' in envoy else envoy}; {wrk.split(' Copyright')[0]}; "
            f"wasm {WASM.stat().st_size} bytes")


def update_readme(res: dict) -> None:
    """Rewrites the README's table between its bench markers from the same results."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        return
    rows = ["| body | baseline req/s | native, accepted req/s (added µs/req) | wasm, accepted req/s (added µs/req) | "
            "invalid signature, native / wasm µs/req | same check in Flask µs/req |",
            "|---|---:|---:|---:|---:|---:|"]
    for size, row in res["sizes"].items():
        base, acc, inv, fl = row["baseline"], row["accepted"], row["invalid"], row["flask_invalid"]
        nacc, ninv = row.get("native_accepted", acc), row.get("native_invalid", inv)
        rows.append(f"| {int(size) // 1024} KiB | {base['rps']:,.0f} | {nacc['rps']:,.0f} "
                    f"({nacc['cpu_us_per_req'] - base['cpu_us_per_req']:+.1f}) | {acc['rps']:,.0f} "
                    f"({acc['cpu_us_per_req'] - base['cpu_us_per_req']:+.0f}) | {ninv['cpu_us_per_req']:.0f} / "
                    f"{inv['cpu_us_per_req']:.0f} | {fl['cpu_us_per_req']:.0f} |")
        if "accepted_etcd" in row:
            e = row["accepted_etcd"]
            rows.append(f"| {int(size) // 1024} KiB, etcd store (wasm) | {base['rps']:,.0f} | | {e['rps']:,.0f} "
                        f"(p50 {e['p50_ms']:.1f} ms: two etcd writes) | | |")
    body = (f"{start}\nMeasured {res.get('date')} by `scripts/bench.sh` (Envoy 1.40, one worker, wrk on "
            "loopback; details and every path in [docs/benchmarks.md](docs/benchmarks.md)):\n\n"
            + "\n".join(rows) + f"\n{end}")
    readme.write_text(text[:text.index(start)] + body + text[text.index(end) + len(end):])


def targets(res: dict) -> list[str]:
    """The goals the builds are held to, each with what this run measured."""
    rows = []

    def add(goal: str, measured: str, met: bool | None) -> None:
        rows.append(f"| {goal} | {measured} | {'' if met is None else ('yes' if met else '**no**')} |")

    k1, k128 = res["sizes"].get("1024") or res["sizes"].get(1024), res["sizes"].get("131072") or res["sizes"].get(131072)
    h = res.get("hmac", {})
    if k1 and "native_accepted" in k1:
        base = k1["baseline"]
        added = lambda r: r["cpu_us_per_req"] - base["cpu_us_per_req"]  # noqa: E731
        acc = k1["native_accepted"]
        add("native, accepted at 1 KiB: at most +5 µs CPU over the buffered baseline (0.85 of its throughput)",
            f"{added(acc):+.1f} µs, {acc['rps'] / base['rps']:.2f} of baseline", added(acc) <= 5)
        flask = k1["flask_invalid"]["cpu_us_per_req"]
        for path in ("invalid", "replay"):
            r = k1[f"native_{path}"]
            add(f"native, {path} at 1 KiB: added cost at most 1/30 of the Flask middleware's ({flask:.0f} µs per "
                "rejection)", f"{added(r):+.1f} µs (1/{flask / max(added(r), 1e-9):.0f})", added(r) * 30 <= flask)
    if "native" in h:
        ceiling = (f"; OpenSSL's SHA-256 on this CPU: {h['openssl sha256'] / 1000:.2f} GB/s "
                   f"({h['native'] / h['openssl sha256']:.0%} of it)" if h.get("openssl sha256") else "")
        add("native, HMAC-SHA256 over 128 KiB: at least 1.5 GB/s (the core's code, natively: SHA extensions)",
            f"{h['native'] / 1000:.2f} GB/s{ceiling}", h["native"] >= 1500)
    if k128 and "native_accepted" in k128:
        base = k128["baseline"]["cpu_us_per_req"]
        acc, flask = k128["native_accepted"]["cpu_us_per_req"] - base, k128["flask_accepted"]["cpu_us_per_req"]
        add("native, accepted at 128 KiB: at most 1/4 of Flask's added cost", f"{acc:+.0f} µs vs {flask:.0f} µs in "
            f"Flask (1/{flask / max(acc, 1e-9):.1f})", acc * 4 <= flask)
    st = res.get("native_store")
    if st and "few" in st:
        add("native, 100k live entries: at most 64 B of RSS growth per entry", f"{st['bytes_per_entry']:.0f} B",
            st["bytes_per_entry"] <= 64)
        add("native, 100k live entries: at most 10% more CPU per request than with 1k",
            f"accepted x{st['cpu_ratio_accepted']:.2f}, replay x{st['cpu_ratio_replay']:.2f}",
            st["cpu_ratio_accepted"] <= 1.10 and st["cpu_ratio_replay"] <= 1.10)
    if k1:
        base = k1["baseline"]["cpu_us_per_req"]
        for path, limit in (("accepted", 25), ("replay", 15), ("invalid", 15), ("unmatched", 8)):
            if path in k1:
                a = k1[path]["cpu_us_per_req"] - base
                add(f"wasm, {path} at 1 KiB: at most +{limit} µs", f"{a:+.1f} µs", a <= limit)
    if k128 and "accepted" in k128 and "wasm (V8)" in h:
        hmac_us = 131072 / h["wasm (V8)"]
        a = k128["accepted"]["cpu_us_per_req"] - k128["baseline"]["cpu_us_per_req"]
        add("wasm, accepted at 128 KiB: within 1.3x of HMAC's own cost in V8",
            f"{a:.0f} µs vs {hmac_us:.0f} µs of HMAC (x{a / hmac_us:.2f})", a <= 1.3 * hmac_us)
    if not rows:
        return []
    return ["", "## Targets", "", "Each measured in this run (rows above).", "",
            "| target | measured | met |", "|---|---|---|", *rows]


def floor_section(res: dict) -> list[str]:
    """The host's floor: what a module that does nothing costs, beside our unmatched path; and
    what a module that does only what any verifier must costs, beside our verifying paths."""
    f = res.get("floor")
    if not f:
        return []
    base = f["baseline"]["cpu_us_per_req"]
    added = {k: r["cpu_us_per_req"] - base for k, r in f.items()}
    label = {
        "baseline": "baseline (buffer filter, no module)",
        "wasm_noop": "wasm: a module whose callbacks all return at once",
        "wasm_headers": "wasm: the same, reading the request headers once (one data-returning host call)",
        "wasm_unmatched": "wasm: webhook-guard, no policy matching",
        "wasm_hold": "wasm: a module that reads the headers, holds the request, reads the body once, goes on",
        "native_noop": "native: a dynamic module whose hooks all return at once",
        "native_unmatched": "native: webhook-guard, no policy matching",
        "native_hold": "native: a module that reads the headers, holds the request, reads the body once, goes on",
    }
    unmatched_rows = ["baseline", "wasm_noop", "wasm_headers", "wasm_unmatched", "native_noop", "native_unmatched"]
    lines = ["", "## The host's floor (1 KiB)", "",
             "Bench-only builds (`--features floor-probe`, `floor-headers` and `floor-hold`; never shipped) "
             "measured in turns beside the buffered baseline and our own paths"
             + (f", re-measured alone (`--only-floor`) on {res['floor_date']}" if res.get("floor_date") else "")
             + ". The difference between a no-op module and the baseline is what Envoy (and V8) charge any "
             "module before its code runs: the targets' reference.", "",
             "| row | CPU µs/req | added µs/req | req/s |", "|---|---:|---:|---:|"]
    for name in unmatched_rows:
        if name in f:
            r = f[name]
            lines.append(f"| {label.get(name, name)} | {r['cpu_us_per_req']:.1f} | "
                         f"{'' if name == 'baseline' else f'{added[name]:+.1f}'} | {r['rps']:,.0f} |")

    def step(a: str, b: str) -> str:
        d = added[b] - added[a]
        # Rows a microsecond apart can swap places on this VM: say so rather than print a negative cost.
        return f"{d:+.1f} µs" if d >= 0 else f"nothing measurable ({d:+.1f} µs: within this run's noise)"

    lines += ["",
              f"- wasm: the floor is {step('baseline', 'wasm_noop')} (Envoy's 7 calls into the VM per request); "
              f"reading the request headers once adds {step('wasm_noop', 'wasm_headers')} (a data-returning host "
              "call: Envoy serializes the map, re-enters the VM to allocate, copies); our unmatched path is "
              f"{step('wasm_headers', 'wasm_unmatched')} above that (matching, one counter, the verdict property).",
              f"- native: the floor is {step('baseline', 'native_noop')}; our unmatched path adds "
              f"{step('native_noop', 'native_unmatched')} to it.",
              "- Rows a few µs apart are at the limit of what this shared VM resolves: compare them across "
              "runs (the `--only-floor` run of 2026-11-29 23:11 UTC measured wasm +5.2, +7.2 with the headers "
              "read, +11.3 unmatched; native +1.5 and +2.3; the quietest run with the rows below, 2026-11-30 "
              "01:47 UTC: wasm hold +8.5, accepted +27.6, replay +19.2, invalid +22.0; native hold +1.0, "
              "accepted +6.7, replay +4.2, invalid +5.7)."]
    if "wasm_hold" not in f:
        return lines
    cost = res.get("path_cost", {})
    lines += ["", "### A verifying filter's floor, and what is ours", "",
              "Any filter that verifies a body before the request goes on must read the headers, hold the "
              "request while Envoy buffers the body, read the body once and let the request go on: "
              "`floor-hold` does exactly that and nothing else. Beside it, in the same turns, our accepted, "
              "replay and invalid paths. *Ours alone* is the core's own time on that path with no proxy "
              "around it (`webhook-guard path-cost`, the same 1 KiB delivery and policy: in V8 under Node "
              "for wasm, natively for native; best of 3 processes); what is left above the hold floor is "
              "the host calls and replies the path makes beyond the minimum (store, counters, histogram, "
              "verdict, the local reply).", "",
              "| build | row | added µs/req | above the hold floor | ours alone (no proxy) | host calls and replies |",
              "|---|---|---:|---:|---:|---:|"]
    for build, core in (("wasm", cost.get("wasm (V8)", {})), ("native", cost.get("native", {}))):
        hold = added.get(f"{build}_hold")
        if hold is None:
            continue
        lines.append(f"| {build} | hold (any verifier's minimum) | {hold:+.1f} | | | |")
        for path in ("accepted", "replay", "invalid"):
            key = f"{build}_{path}"
            if key not in added:
                continue
            above = added[key] - hold
            ours = core.get(path)
            rest = f"{above - ours:+.1f}" if ours is not None else ""
            lines.append(f"| {build} | {path} | {added[key]:+.1f} | {above:+.1f} | "
                         f"{'' if ours is None else f'{ours:.1f}'} | {rest} |")
    return lines


def transitions_section(res: dict) -> list[str]:
    """The wasm build's host transitions per request (bench/transitions.py's counting build)."""
    rows = res.get("transitions")
    if not rows:
        return []
    k1 = res["sizes"].get("1024") or res["sizes"].get(1024) or {}
    base = k1.get("baseline", {}).get("cpu_us_per_req")
    names = {"unmatched": "unmatched", "accepted": "accepted", "replay": "replay", "invalid signature": "invalid"}
    lines = [
        "",
        "## Where the time goes (wasm build)",
        "",
        "Every host transition of one request, counted by a build of the filter that records them "
        "(`bench/transitions.py`, `--features count-transitions`): VM entries are Envoy's calls into "
        "the module (its callbacks, and `memory_allocate`, which Envoy calls before handing the module "
        "any data), host calls are the module's calls into Envoy (in bold). Added µs is this run's "
        "1 KiB row." + (f" {res['transitions_note']}" if res.get("transitions_note") else ""),
        "",
        "| path | status | VM entries | host calls | added µs | in order |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, r in rows.items():
        row = k1.get(names.get(name, ""))
        added = f"{row['cpu_us_per_req'] - base:+.1f}" if row and base else ""
        seq = ", ".join(f"**{e[6:]}**" if e.startswith("proxy_") else e for e in r["events"])
        lines.append(f"| {name} | {r['status']} | {r['vm_entries']} | {r['hostcalls']} | {added} | {seq} |")
    lines += [
        "",
        "- The filter exports only the callbacks it uses (`src/filter/src/abi.rs`, its own proxy-wasm "
        "ABI layer instead of the SDK's dispatcher, which exports every callback): no `proxy_on_done` "
        "and no network-filter hooks, so a request costs 7 fixed VM entries (context create, request "
        "headers, request body, response headers, response body, log, delete) instead of 8. Request "
        "headers are read in one call and parsed in place; the body is read once at its end; the "
        "response status is read only when a claim waits on it; a rejection's log line (which also "
        "reads the client address) is built only when Envoy's wasm log level keeps it.",
        "- What is left is what the semantics need: the clock, read at most once per callback (at "
        "the headers, where the latency histogram starts, and at the body's end), the store's read and "
        "CAS write to claim and again to commit (each read also makes Envoy re-enter the VM to "
        "allocate), the verdict property for the access log, one counter (two for a rejection: the "
        "total and the reason) and the latency histogram. Envoy's log level is read when the "
        "configuration loads and on each tick, not per rejection.",
        "- Our own code's share (*ours alone* in the floor section): in V8 mostly HMAC-SHA256, which "
        "runs at a fifth to a quarter of native speed even with WebAssembly SIMD (the HMAC line below) "
        "and is what bounds large bodies; shards of about 32 entries (one per 32 entries of a policy's "
        "share) keep the store's copies small.",
    ]
    return lines


def report(res: dict, a, date: str | None = None) -> str:
    date = date or datetime.date.today().isoformat()
    method = res.get("method", {})
    duration = method.get("duration", a.duration)
    warmup = method.get("warmup", a.warmup)
    repeat = method.get("repeat", a.repeat)
    lines = [
        "# Benchmarks",
        "",
        f"Measured {date} by `scripts/bench.sh` on {res.get('machine') or machine()}.",
        "",
        f"Method: Envoy 1.40 with `--concurrency 1` pinned to CPU 0, wrk (`-t1 -c{CONNECTIONS}`, "
        f"{duration:g} s runs after a {warmup:g} s warm-up) pinned to CPU 1, loopback only. All of a "
        f"body size's servers run at once and its rows are measured in turns, {repeat} rounds, each "
        "row keeping its run with the least CPU per request (noise on a shared VM comes in phases; "
        "in turns, a phase touches every row alike; the baseline, every row's reference, runs at the "
        "start and at the end of each round). Every Envoy "
        "runs the buffer filter (so the body is really read) and a `direct_response` route. "
        "`unmatched` has the filter in the chain but no policy matching (its fixed cost); "
        "`accepted` sends unique pre-signed Standard Webhooks deliveries (each one verified, claimed "
        "in the store and committed on the 200); `replay` sends one delivery over and over (409 "
        "`replayed`); `invalid` sends a wrong signature (401). `flask` runs the same checks in a "
        "Flask `before_request` hook under gunicorn (1 sync worker, same CPU pinning). CPU/req is the "
        "server process's CPU time (user + system, from /proc) divided by the requests it answered; "
        "added = filter minus baseline. All numbers come from one run, side by side. "
        + (f"The hypervisor stole {res['steal_percent']:.0f}% of CPU time during this run: on a shared "
           "VM expect run-to-run differences of tens of percent; compare rows of one run, not runs."
           if "steal_percent" in res else ""),
        "",
        "| body | path | req/s | p50 ms | p99 ms | CPU µs/req | added µs/req | vs baseline |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for size, row in res["sizes"].items():
        base = row["baseline"]
        for name, r in row.items():
            added = r["cpu_us_per_req"] - base["cpu_us_per_req"]
            ratio = r["rps"] / base["rps"]
            note = f" ({r['non_2xx']} non-2xx)" if name in ("baseline", "unmatched", "accepted", "flask_accepted",
                                                            "accepted_etcd", "native_accepted",
                                                            "native_unmatched") and r["non_2xx"] else ""
            lines.append(
                f"| {int(size) // 1024} KiB | {name.replace('_', ' ')}{note} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | "
                f"{r['p99_ms']:.3f} | {r['cpu_us_per_req']:.1f} | {'' if name == 'baseline' else f'{added:+.1f}'} | "
                f"{'' if name == 'baseline' else f'{ratio:.2f}'} |")
    lines += ["", "Derived:", ""]
    for size, row in res["sizes"].items():
        base, acc = row["baseline"], row["accepted"]
        mbps = int(size) * acc["rps"] / 1e6
        reject_ratio = row["flask_invalid"]["cpu_us_per_req"] / max(row["invalid"]["cpu_us_per_req"], 1e-9)
        lines.append(
            f"- {int(size) // 1024} KiB: accepted path adds {acc['cpu_us_per_req'] - base['cpu_us_per_req']:.1f} µs CPU "
            f"per request ({acc['rps'] / base['rps']:.2f} of baseline throughput, {mbps:.0f} MB/s of verified "
            f"bodies); rejecting a bad signature costs {row['invalid']['cpu_us_per_req']:.1f} µs in Envoy vs "
            f"{row['flask_invalid']['cpu_us_per_req']:.1f} µs in Flask ({reject_ratio:.0f}x); the store held "
            f"{acc.get('store_entries', 0):,} entries at the end of the accepted run.")
    lines += targets(res)
    lines += floor_section(res)
    lines += transitions_section(res)
    etcd_rows = next((row for row in res["sizes"].values() if "accepted_etcd" in row), None)
    if etcd_rows:
        acc, rep, e = etcd_rows["accepted_etcd"], etcd_rows["replay_etcd"], etcd_rows["accepted_etcd"]["etcd"]
        local = etcd_rows["accepted"]
        lat = e["latency"]
        lines += [
            "",
            "## etcd tier (1 KiB)",
            "",
            "`accepted etcd` is the `accepted` path with the policy's claims in etcd "
            "(`\"store\": {\"type\": \"etcd\"}`): a single-member etcd 3.4 on loopback, pinned to CPU 1 "
            "with wrk, with its data directory on this VM's disk. Each delivery makes two round trips "
            "(the claim transaction, then the commit put once the upstream answered), both writes that "
            "etcd fsyncs; leases are shared per time bucket. `replay etcd` sends one committed delivery "
            "over and over: this replica answers it from its shared-data cache "
            f"({rep.get('etcd_calls', 0)} etcd calls, lease upkeep included, for {rep['requests']:,} replays in the "
            "best run). The spread between runs is large on this VM (etcd fsyncs to its disk): "
            + ", ".join(f"{r['rps']:,.0f}" for r in acc.get("runs", [])) + " deliveries/s.",
            "",
            f"- Throughput and latency are etcd's: {acc['rps']:,.0f} deliveries/s at {CONNECTIONS} connections "
            f"(p50 {acc['p50_ms']:.1f} ms, p99 {acc['p99_ms']:.1f} ms) against {local['rps']:,.0f}/s "
            f"(p50 {local['p50_ms']:.2f} ms) with the local store. {e['calls']:,} round trips for "
            f"{e['admitted']:,} admitted deliveries ({e['leases_granted']} of them lease grants, made ahead of "
            "time by each worker's timer rather than on the request path), "
            f"{e['errors']} errors; latency buckets: "
            + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in lat.items() if v) + ".",
            f"- etcd spent {e['etcd_cpu_us_per_delivery']:,.0f} µs of CPU per delivery (two raft writes), so on "
            f"this machine one etcd member sustains about {1e6 / max(e['etcd_cpu_us_per_delivery'], 1):,.0f} "
            f"deliveries/s ({2e6 / max(e['etcd_cpu_us_per_delivery'], 1):,.0f} writes/s) per core it gets; "
            f"Envoy's CPU per delivery ({acc['cpu_us_per_req']:.0f} µs) is inflated by the low request rate "
            "(fewer requests per event-loop wake-up) and by two upstream calls per request.",
            f"- Size: {e['keys']:,} keys took {e['bytes_per_key']:.0f} bytes each of etcd's backend "
            "(`dbSizeInUse` growth per key, before compaction drops the overwritten in-flight revision); "
            f"etcd's RSS was {e['etcd_rss_mib']:.0f} MiB. A key lives for the retention plus at most one "
            "lease bucket (a tenth of the lifetime, 1-60 s), so the live set is about "
            "deliveries/s x retention.",
        ]
    dec = res.get("decrypt")
    if dec:
        lines += ["", "## Decryption (`decrypt`, AES-256-GCM)", "",
                  "The accepted path with plaintext bodies, and with the same bodies sealed in the seed's "
                  "AES-256-GCM envelope (`{\"encrypted\": base64, \"nonce\": base64}`, about 4/3 of the "
                  "plaintext's size), which the filter verifies, claims, opens and forwards decrypted "
                  "(body replaced, `content-length` set). Both rows of a build run side by side, in turns; "
                  "the difference is what opening a payload costs, including hashing the larger envelope"
                  + (f". Measured alone (`--only-decrypt`) on {res['decrypt_date']}." if res.get("decrypt_date") else "."),
                  "", "| plaintext | envelope | build | plain CPU µs/req | decrypt CPU µs/req | added µs/req | decrypt req/s |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for size, row in dec.items():
            for build in BUILDS:
                plain, d = row[f"{build}_plain"], row[f"{build}_decrypt"]
                note = f" ({d['non_2xx']} non-2xx)" if d["non_2xx"] else ""
                lines.append(f"| {int(size) // 1024} KiB | {row['envelope_bytes'] / 1024:.1f} KiB | {build}{note} | "
                             f"{plain['cpu_us_per_req']:.1f} | {d['cpu_us_per_req']:.1f} | "
                             f"{d['cpu_us_per_req'] - plain['cpu_us_per_req']:+.1f} | {d['rps']:,.0f} |")
    h = res.get("hmac")
    if h:
        ceiling = (f" OpenSSL's SHA-256 on the same CPU right after: {h['openssl sha256']:.0f} MB/s, so the native "
                   f"HMAC runs at {h['native'] / h['openssl sha256']:.0%} of what this machine's SHA extensions deliver."
                   if h.get("openssl sha256") else "")
        lines += ["", f"HMAC-SHA256 over 128 KiB with the core's code: {h['wasm (V8)']:.0f} MB/s as wasm in V8 "
                  f"(Node's WASI; Envoy embeds the same engine) vs {h['native']:.0f} MB/s native (SHA extensions)."
                  + ceiling + " Large bodies cost what hashing costs in wasm; copies are a small part (the body is "
                  "copied once into the VM)."]
    for key, build in (("store", "wasm"), ("native_store", "native")):
        st = res.get(key)
        if not st or "few" not in st:
            continue
        few, many = st["few"], st["many"]
        lines += [
            "",
            f"Store, {build} build (1 KiB bodies, {st.get('shards', 'default')} shards): "
            f"{few['entries']:,} live entries -> {many['entries']:,}: RSS {few['rss_mib']:.1f} -> "
            f"{many['rss_mib']:.1f} MiB, {st['bytes_per_entry']:.0f} bytes of RSS per added entry ("
            + ("25 bytes in shared data" if build == "wasm" else
               "a 24-byte entry in a sorted array of fixed 192-byte chunks, one array per shard")
            + f"; RSS also moves with allocator reuse); accepted path {few['accepted']['cpu_us_per_req']:.1f} -> "
            f"{many['accepted']['cpu_us_per_req']:.1f} µs CPU/req (x{st['cpu_ratio_accepted']:.2f}); replay path "
            f"{few['replay']['cpu_us_per_req']:.1f} -> {many['replay']['cpu_us_per_req']:.1f} µs CPU/req "
            f"(x{st['cpu_ratio_replay']:.2f}). The RSS readings bracket the fill of one process, after a warm-up "
            "load that adds no entry; the CPU rows compare that process with a second one holding the small "
            "prefill, measured in turns (each accepted run adds its deliveries to both alike)"
            + (f"; re-measured alone (`--only-store`) on {res['store_date']}." if res.get("store_date") else "."),
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

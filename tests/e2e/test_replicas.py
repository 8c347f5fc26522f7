"""Replay protection across Envoy replicas: one etcd and two Envoy 1.40 processes (distinct
--base-id and ports, 2 workers each) in front of one backend, all on loopback. Each delivery
is admitted once whichever replica it reaches, and etcd failures fail closed."""
import concurrent.futures
import hashlib
import json
import pathlib
import socket
import tempfile
import threading
import time
import uuid

import pytest
import requests

from harness import Backend, Envoy, Etcd, HoldingProxy, stop_process, wait_until
from signers import PRESETS, fresh_secrets

PREFIX = "wg-e2e/dedup"


def plugin_config(timeout_ms: int = 400) -> dict:
    store = {"type": "etcd", "cluster": "etcd", "prefix": PREFIX, "timeout_ms": timeout_ms}
    return {"policies": [
        {"name": "github", "match": {"path_prefix": "/webhooks/github"}, "provider": "github",
         "secrets": [{"env": "GITHUB_WEBHOOK_SECRET"}], "store": store},
        {"name": "stripe", "match": {"path_prefix": "/webhooks/stripe"}, "provider": "stripe",
         "secrets": [{"env": "STRIPE_WEBHOOK_SECRET"}], "store": store},
        # Availability over protection: forwards (counted) when etcd is down.
        {"name": "open", "match": {"path_prefix": "/webhooks/open"}, "provider": "github",
         "secrets": [{"env": "GITHUB_WEBHOOK_SECRET"}], "store": {**store, "on_error": "allow"}},
    ]}


class Replicas:
    def __init__(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="webhook-guard-replicas-")
        work = pathlib.Path(self.tmp.name)
        self.secrets = fresh_secrets()
        self.etcd = Etcd(work)
        self.backend = Backend(work)
        env = {"GITHUB_WEBHOOK_SECRET": self.secrets["GITHUB_WEBHOOK_SECRET"],
               "STRIPE_WEBHOOK_SECRET": self.secrets["STRIPE_WEBHOOK_SECRET"]}
        self.envoys = [Envoy(work, self.backend.port, plugin_config(), env, etcd_port=self.etcd.port)
                       for _ in range(2)]

    def stop(self):
        for e in self.envoys:
            e.stop()
        self.backend.stop()
        self.etcd.stop()
        self.tmp.cleanup()

    def logs(self) -> str:
        return "\n".join(f"--- envoy {i} ---\n{e.log()[-4000:]}" for i, e in enumerate(self.envoys)) + \
            "\n--- etcd ---\n" + self.etcd.log_path.read_text(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def replicas(build):
    r = Replicas()
    yield r
    r.stop()


@pytest.fixture(autouse=True)
def _logs_on_failure(request, replicas):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(replicas.logs())


def delivery(replicas, preset="github", path_override=None):
    body = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "object": "event"}).encode()
    path, sign, var, _ = PRESETS[preset]
    headers = sign(replicas.secrets[var], body, int(time.time()), f"d-{uuid.uuid4().hex}")
    return path_override or path, body, headers


def post(envoy, path, body, headers, timeout=10):
    return requests.post(envoy.url + path, data=body, headers=headers, timeout=timeout)


def backend_saw(replicas, body: bytes) -> int:
    digest = hashlib.sha256(body).hexdigest()
    return sum(1 for e in replicas.backend.events() if e["body_sha256"] == digest)


def test_the_same_delivery_sent_to_both_replicas_concurrently_is_admitted_once(replicas):
    path, body, headers = delivery(replicas, "stripe")
    replicas.backend.slow_next(1, 0.5)  # the winner stays in flight while the twins arrive
    barrier = threading.Barrier(12)

    def send(i):
        with requests.Session() as s:
            barrier.wait()
            return s.post(replicas.envoys[i % 2].url + path, data=body, headers=headers, timeout=15)

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(send, range(12)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1, codes
    assert codes.count(409) == 11, codes
    assert {r.json()["error"] for r in responses if r.status_code == 409} <= {"in_flight", "replayed"}
    assert backend_saw(replicas, body) == 1


def test_a_replay_on_the_other_replica_is_409_right_after_the_first_answer(replicas):
    a, b = replicas.envoys
    path, body, headers = delivery(replicas)
    assert post(a, path, body, headers).status_code == 200
    # The commit reached etcd before A answered: no window where B sees it in flight.
    resp = post(b, path, body, headers)
    assert resp.status_code == 409
    assert resp.json() == {"error": "replayed", "policy": "github"}
    # B now knows it locally: the next replay costs no etcd round trip.
    before = b.stats()
    assert post(b, path, body, headers).status_code == 409
    after = b.stats()
    assert after["webhook_guard.etcd.cache_hits"] == before.get("webhook_guard.etcd.cache_hits", 0) + 1
    assert after["webhook_guard.etcd.calls"] == before["webhook_guard.etcd.calls"]
    assert backend_saw(replicas, body) == 1
    # The key in etcd is a hash, never the delivery id or the body.
    keys = replicas.etcd.keys(PREFIX + "/")
    assert keys and all(v.startswith(("d:", "f:")) for v in keys.values())
    assert not any(body.decode()[:20] in k for k in keys)


def test_a_backend_failure_is_released_and_the_retry_is_admitted_on_the_other_replica(replicas):
    a, b = replicas.envoys
    path, body, headers = delivery(replicas)
    replicas.backend.fail_next(1)
    assert post(a, path, body, headers).status_code == 500
    assert post(b, path, body, headers).status_code == 200
    assert post(a, path, body, headers).status_code == 409
    assert a.stats()["webhook_guard.store.released"] >= 1
    assert backend_saw(replicas, body) == 2  # the failed attempt and the retry


def test_a_client_that_leaves_after_forwarding_cannot_replay_the_delivery(replicas):
    a, b = replicas.envoys
    path, body, headers = delivery(replicas)
    replicas.backend.slow_next(1, 1.5)
    with pytest.raises(requests.Timeout):
        post(a, path, body, headers, timeout=0.5)
    # The backend got it: the outcome is unknown, so the claim is kept as delivered (committed
    # by A's root context once the stream is gone), and no replica admits a copy.
    def kept():
        r = post(b, path, body, headers)
        assert r.status_code == 409, r.text
        return r.json()["error"] == "replayed"
    wait_until(kept, 8, "the delivery to be kept as delivered")
    time.sleep(1.5)
    assert backend_saw(replicas, body) == 1
    assert a.stats()["webhook_guard.store.unknown_outcome"] >= 1


def test_metrics_count_round_trips_latency_and_shared_leases(replicas):
    a = replicas.envoys[0]
    before = a.stats()
    for _ in range(20):
        path, body, headers = delivery(replicas)
        assert post(a, path, body, headers).status_code == 200
    s = a.stats()
    calls = s["webhook_guard.etcd.calls"] - before["webhook_guard.etcd.calls"]
    buckets = sum(v for k, v in s.items() if k.startswith("webhook_guard.etcd.latency."))
    assert calls >= 40 and buckets == s["webhook_guard.etcd.calls"], s
    # Leases are granted per time bucket and worker (ahead of time, by the root's timer),
    # not per request: 20 deliveries cost 40 calls plus a few grants at most.
    grants = s["webhook_guard.etcd.leases_granted"] - before["webhook_guard.etcd.leases_granted"]
    assert grants <= 12 and calls <= 40 + grants, (calls, grants)
    assert s["webhook_guard.etcd.leases_granted"] > 0
    assert s["webhook_guard.etcd.errors"] == 0, s


def test_etcd_down_is_503_store_unavailable_and_service_recovers(replicas):
    a, b = replicas.envoys
    replicas.etcd.stop()
    try:
        for envoy in (a, b):
            path, body, headers = delivery(replicas)
            resp = post(envoy, path, body, headers)
            assert resp.status_code == 503, resp.text
            assert resp.json() == {"error": "store_unavailable", "policy": "github"}
            assert backend_saw(replicas, body) == 0
        # Forged deliveries are still 401, not 503: the signature is checked first.
        path, body, headers = delivery(replicas)
        assert post(a, path, body + b" ", headers).status_code == 401
        # on_error: allow forwards, counted, logged, and marked in the access log.
        marker = uuid.uuid4().hex
        path, body, headers = delivery(replicas, path_override=f"/webhooks/open?m={marker}")
        assert post(a, path, body, headers).status_code == 200
        assert a.stats()["webhook_guard.etcd.failed_open"] >= 1
        assert '"event":"webhook_store_error"' in a.log()
        wait_until(lambda: any(e.get("webhook_verdict") == "accepted_unprotected" and marker in e["path"]
                               for e in a.access_log()), 5, "the access log line")
    finally:
        replicas.etcd.start()
    path, body, headers = delivery(replicas)

    def admitted():
        return post(a, path, body, headers).status_code == 200
    wait_until(admitted, 15, "admission once etcd is back")
    assert post(b, path, body, headers).status_code == 409


def test_a_hung_etcd_times_out_into_503_within_the_timeout(replicas):
    a = replicas.envoys[0]
    replicas.etcd.pause()
    try:
        path, body, headers = delivery(replicas)
        started = time.monotonic()
        resp = post(a, path, body, headers)
        took = time.monotonic() - started
        assert resp.status_code == 503 and resp.json()["error"] == "store_unavailable"
        # One timed-out call (400 ms), maybe a lease grant before it: well under 2 s.
        assert took < 2.0, took
    finally:
        replicas.etcd.resume()
    # etcd applied the claim once it resumed, after Envoy had given up on the call; the root
    # releases that orphan, so the provider's retry of the same delivery is admitted within
    # seconds, not after the 30 s claim timeout.
    started = time.monotonic()
    wait_until(lambda: post(a, path, body, headers).status_code == 200, 15, "the retry after the pause")
    assert time.monotonic() - started < 8
    assert backend_saw(replicas, body) == 1


def test_a_claim_etcd_applied_after_the_call_timed_out_does_not_block_the_retry(replicas):
    # Envoy C reaches etcd through a proxy that can swallow etcd's answers: the claim is
    # written, but C times out and answers 503. Without a release of that orphan claim the
    # provider's retry would get 409 in_flight until the claim lapsed (30 s).
    proxy = HoldingProxy(replicas.etcd.port)
    work = pathlib.Path(replicas.tmp.name)
    env = {"GITHUB_WEBHOOK_SECRET": replicas.secrets["GITHUB_WEBHOOK_SECRET"],
           "STRIPE_WEBHOOK_SECRET": replicas.secrets["STRIPE_WEBHOOK_SECRET"]}
    c = Envoy(work, replicas.backend.port, plugin_config(), env, concurrency=1, etcd_port=proxy.port)
    try:
        path, body, headers = delivery(replicas)
        assert post(c, path, body, headers).status_code == 200  # leases granted and cached
        time.sleep(1.2)  # and the timer's grants for the coming seconds
        path, body, headers = delivery(replicas)
        proxy.hold.set()
        resp = post(c, path, body, headers)
        assert resp.status_code == 503 and resp.json()["error"] == "store_unavailable"
        assert any(v.startswith("f:") for v in replicas.etcd.keys(PREFIX + "/").values()), "claim not written"
        proxy.hold.clear()
        b = replicas.envoys[1]
        started = time.monotonic()
        wait_until(lambda: post(b, path, body, headers).status_code == 200, 10, "the retry on another replica")
        assert time.monotonic() - started < 8
        assert backend_saw(replicas, body) == 1
    finally:
        stop_process(c.proc)
        proxy.close()


def test_an_envoy_without_etcd_in_reach_fails_closed_from_the_start(replicas):
    # A cluster that points nowhere: every claim is 503, nothing reaches the backend.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    work = pathlib.Path(replicas.tmp.name)
    env = {"GITHUB_WEBHOOK_SECRET": replicas.secrets["GITHUB_WEBHOOK_SECRET"],
           "STRIPE_WEBHOOK_SECRET": replicas.secrets["STRIPE_WEBHOOK_SECRET"]}
    envoy = Envoy(work, replicas.backend.port, plugin_config(), env, concurrency=1, etcd_port=dead_port)
    try:
        path, body, headers = delivery(replicas)
        resp = post(envoy, path, body, headers)
        assert resp.status_code == 503 and resp.json()["error"] == "store_unavailable"
        assert backend_saw(replicas, body) == 0
    finally:
        stop_process(envoy.proc)

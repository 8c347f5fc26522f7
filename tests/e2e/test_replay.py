"""Replay protection in the real Envoy (2 workers): exactly-once admission that follows the
backend's answer, expiry, capacity, the acknowledge mode and a config reload."""
import concurrent.futures
import hashlib
import json
import threading
import time
import uuid

import pytest
import requests

from harness import Stack
from signers import PRESETS


def signed(preset, secrets, body, ts=None, delivery=None):
    path, sign, var, _ = PRESETS[preset]
    return path, sign(secrets[var], body, ts or int(time.time()), delivery or f"evt_{uuid.uuid4().hex}")


def body_for(delivery: str) -> bytes:
    return json.dumps({"id": delivery, "object": "event", "n": uuid.uuid4().hex}).encode()


def backend_saw(stack, body: bytes) -> list[dict]:
    digest = hashlib.sha256(body).hexdigest()
    return [e for e in stack.backend.events() if e["body_sha256"] == digest]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_exact_replay_is_409_and_reaches_the_backend_once(demo, secrets, preset):
    delivery = f"evt_{uuid.uuid4().hex}"
    body = body_for(delivery)
    path, headers = signed(preset, secrets, body, delivery=delivery)
    assert demo.post(path, body, headers).status_code == 200
    resp = demo.post(path, body, headers)
    assert resp.status_code == 409
    assert resp.json() == {"error": "replayed", "policy": preset}
    assert len(backend_saw(demo, body)) == 1


def test_concurrent_identical_deliveries_reach_the_backend_once(demo, secrets):
    delivery = f"evt_{uuid.uuid4().hex}"
    body = body_for(delivery)
    path, headers = signed("stripe", secrets, body, delivery=delivery)
    demo.backend.slow_next(1, 0.5)  # keep the winner in flight while the others arrive
    barrier = threading.Barrier(24)

    def send(_):
        with requests.Session() as s:  # one connection each, spread over both workers
            barrier.wait()
            return s.post(demo.envoy.url + path, data=body, headers=headers, timeout=15)

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(send, range(24)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1, codes
    assert codes.count(409) == 23, codes
    reasons = {r.json()["error"] for r in responses if r.status_code == 409}
    assert reasons <= {"in_flight", "replayed"}
    assert len(backend_saw(demo, body)) == 1


def test_backend_failure_releases_the_claim_so_the_retry_is_admitted(demo, secrets):
    body = body_for("evt_fail")
    path, headers = signed("github", secrets, body)
    demo.backend.fail_next(1)
    assert demo.post(path, body, headers).status_code == 500  # the backend's own answer
    assert demo.post(path, body, headers).status_code == 200  # the provider's retry
    resp = demo.post(path, body, headers)
    assert (resp.status_code, resp.json()["error"]) == (409, "replayed")
    assert [e["status"] for e in backend_saw(demo, body)] == [500, 200]


def test_in_flight_twin_gets_409_with_retry_after(demo, secrets):
    body = body_for("evt_slow")
    path, headers = signed("shopify", secrets, body)
    demo.backend.slow_next(1, 1.5)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(demo.post, path, body, headers)
        time.sleep(0.4)
        twin = demo.post(path, body, headers)
        assert twin.status_code == 409
        assert twin.json() == {"error": "in_flight", "policy": "shopify"}
        assert 1 <= int(twin.headers["retry-after"]) <= 30
        assert first.result().status_code == 200
    assert demo.post(path, body, headers).json()["error"] == "replayed"


def test_stripe_retry_resigned_with_a_new_timestamp_after_success_is_409(demo, secrets):
    delivery = f"evt_{uuid.uuid4().hex}"
    first = json.dumps({"id": delivery, "object": "event", "attempt": 1}).encode()
    path, headers = signed("stripe", secrets, first, ts=int(time.time()) - 30)
    assert demo.post(path, first, headers).status_code == 200
    retry = json.dumps({"id": delivery, "object": "event", "attempt": 2}).encode()
    path, headers = signed("stripe", secrets, retry)
    resp = demo.post(path, retry, headers)
    assert (resp.status_code, resp.json()["error"]) == (409, "replayed")
    assert backend_saw(demo, retry) == []


def test_store_counters_and_entry_gauge(demo, secrets):
    before = demo.envoy.stats()
    body = body_for("evt_stats")
    path, headers = signed("slack", secrets, body)
    demo.post(path, body, headers)
    demo.post(path, body, headers)
    after = demo.envoy.stats()
    assert after["webhook_guard.policy.slack.accepted"] - before.get("webhook_guard.policy.slack.accepted", 0) == 1
    assert after["webhook_guard.policy.slack.reason.replayed"] - before.get("webhook_guard.policy.slack.reason.replayed", 0) == 1


GITHUB = {"name": "gh", "match": {"path_prefix": "/webhooks/github"}, "provider": "github",
          "secrets": [{"env": "GITHUB_WEBHOOK_SECRET"}]}


def wait_for_stat(stack, name, value, timeout=10):
    deadline = time.monotonic() + timeout
    while stack.envoy.stats().get(name) != value and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.envoy.stats().get(name) == value


@pytest.fixture
def stack_factory():
    stacks = []

    def make(config):
        stack = Stack(config, {"GITHUB_WEBHOOK_SECRET": "gh-secret", "GITHUB_WEBHOOK_SECRET_PREVIOUS": "x"})
        stacks.append(stack)
        return stack
    yield make
    for s in stacks:
        s.stop()


def gh_post(stack, body):
    _, sign, _, _ = PRESETS["github"]
    return stack.post("/webhooks/github", body, sign("gh-secret", body, 0, "d"))


def test_entries_expire_after_their_lifetime_and_are_swept(stack_factory):
    stack = stack_factory({"policies": [{**GITHUB, "dedup": {"retention_seconds": 2}}],
                           "store": {"sweep_interval_seconds": 1}})
    body = body_for("evt_expiry")
    assert gh_post(stack, body).status_code == 200
    assert gh_post(stack, body).status_code == 409
    # The sweeper publishes the entry count as a gauge.
    wait_for_stat(stack, "webhook_guard.store.entries", 1)
    time.sleep(2.5)
    wait_for_stat(stack, "webhook_guard.store.entries", 0)  # the sweeper pruned the expired entry
    assert stack.envoy.stats()["webhook_guard.store.swept"] >= 1
    assert gh_post(stack, body).status_code == 200, "an expired entry no longer blocks"


def test_a_full_store_fails_closed_with_503(stack_factory):
    stack = stack_factory({"policies": [GITHUB], "store": {"shards": 1, "capacity": 3}})
    for i in range(3):
        assert gh_post(stack, body_for(f"evt_{i}")).status_code == 200
    resp = gh_post(stack, body_for("evt_4"))
    assert resp.status_code == 503
    assert resp.json() == {"error": "store_full", "policy": "gh"}
    assert stack.envoy.stats()["webhook_guard.policy.gh.reason.store_full"] == 1


def test_acknowledge_mode_answers_duplicates_with_200(stack_factory):
    stack = stack_factory({"policies": [{**GITHUB, "dedup": {"on_duplicate": "acknowledge"}}]})
    body = body_for("evt_ack")
    assert gh_post(stack, body).json()["status"] == "ok"
    resp = gh_post(stack, body)
    assert resp.status_code == 200
    assert resp.json() == {"status": "duplicate", "policy": "gh"}
    assert len(backend_saw(stack, body)) == 1


def test_routes_sharing_a_secret_admit_a_captured_delivery_once_when_they_share_a_scope(stack_factory):
    """GitHub does not sign the URL: a delivery captured on one route verifies on every route
    with the same secret. Apart, each route admits it once (and the config warns); in one
    dedup.scope, the backend gets it once whichever route it is sent to."""
    a = {"name": "gh-a", "match": {"path_prefix": "/webhooks/github-a"}, "provider": "github",
         "secrets": [{"env": "GITHUB_WEBHOOK_SECRET"}]}
    b = {**a, "name": "gh-b", "match": {"path_prefix": "/webhooks/github-b"}}
    _, sign, _, _ = PRESETS["github"]

    apart = stack_factory({"policies": [a, b]})
    body = body_for("evt_cross_route")
    assert apart.post("/webhooks/github-a", body, sign("gh-secret", body, 0, "d")).status_code == 200
    assert apart.post("/webhooks/github-b", body, sign("gh-secret", body, 0, "d")).status_code == 200
    assert len(backend_saw(apart, body)) == 2
    assert "policies[1] ('gh-b') and policies[0] ('gh-a') share a secret (env GITHUB_WEBHOOK_SECRET)" in apart.envoy.log()
    assert "gh-secret" not in apart.envoy.log()

    scoped = stack_factory({"policies": [a, {**b, "dedup": {"scope": "gh-a"}}]})
    assert "share a secret" not in scoped.envoy.log()
    for first, then in [("a", "b"), ("b", "a")]:
        body = body_for(f"evt_scoped_{first}")
        assert scoped.post(f"/webhooks/github-{first}", body, sign("gh-secret", body, 0, "d")).status_code == 200
        resp = scoped.post(f"/webhooks/github-{then}", body, sign("gh-secret", body, 0, "d"))
        assert resp.status_code == 409
        assert resp.json() == {"error": "replayed", "policy": f"gh-{then}"}
        assert len(backend_saw(scoped, body)) == 1
    stats = scoped.envoy.stats()
    assert stats["webhook_guard.policy.gh-a.accepted"] == 1
    assert stats["webhook_guard.policy.gh-b.reason.replayed"] == 1
    assert stats["webhook_guard.policy.gh-a.reason.replayed"] == 1

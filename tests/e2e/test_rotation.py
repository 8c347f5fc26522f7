"""Rotating a secret, measured in the real Envoy: what each way of delivering secrets needs and
what it keeps (docs/deployment.md#2-rotating-a-secret).

- Secrets in the VM's `key_values` (delivered by the control plane, LDS here): a listener
  update rotates them without a restart, and the replay store survives it.
- Secrets from the process environment (`host_env_keys`): Envoy's environment cannot change,
  so rotating needs a new process; with the local store that forgets every delivery (a replay
  of one accepted before the restart is admitted again), with the etcd store it does not."""
import hashlib
import json
import pathlib
import tempfile
import uuid

import pytest
import requests

from harness import Backend, Envoy, Etcd, ReloadableEnvoy, wait_until
from signers import PRESETS

OLD, NEW = "rotation-old-secret", "rotation-new-secret"


def plugin(marker: int, store: dict | None = None) -> dict:
    policy = {"name": "gh", "match": {"path_prefix": "/webhooks/github"}, "provider": "github",
              "secrets": [{"env": "GITHUB_WEBHOOK_SECRET"}, {"env": "GITHUB_WEBHOOK_SECRET_PREVIOUS"}],
              # A status nobody else uses tells which configuration answered.
              "status_overrides": {"missing_signature": marker}}
    if store:
        policy["store"] = store
    return {"default": "deny", "policies": [policy]}


def deliver(url: str, secret: str, body: bytes | None = None) -> tuple[bytes, dict, int]:
    _, sign, _, _ = PRESETS["github"]
    body = body or json.dumps({"id": uuid.uuid4().hex}).encode()
    headers = sign(secret, body, 0, "d")
    return body, headers, requests.post(url, data=body, headers=headers, timeout=10).status_code


@pytest.fixture
def work():
    with tempfile.TemporaryDirectory(prefix="webhook-guard-rotation-") as d:
        yield pathlib.Path(d)


@pytest.mark.build("wasm")  # key_values are wasm VM settings; the native build rotates through SDS
def test_secrets_rotate_through_a_listener_update_without_losing_replay_state(work):
    backend = Backend(work)
    envoy = ReloadableEnvoy(work, backend.port, plugin(401), key_values={"GITHUB_WEBHOOK_SECRET": OLD})
    try:
        url = envoy.url + "/webhooks/github"
        first, first_headers, status = deliver(url, OLD)
        assert status == 200
        # Step 1: the new secret first, the old one kept while senders switch.
        envoy.reload(plugin(402), key_values={"GITHUB_WEBHOOK_SECRET": NEW, "GITHUB_WEBHOOK_SECRET_PREVIOUS": OLD})
        wait_until(lambda: requests.post(url, data=b"{}", timeout=5).status_code == 402, 30, "the new config")
        assert deliver(url, NEW)[2] == 200
        before = envoy.stats().get("webhook_guard.policy.gh.accepted_secondary_secret", 0)
        assert deliver(url, OLD)[2] == 200, "the old secret is accepted while it is listed"
        assert envoy.stats()["webhook_guard.policy.gh.accepted_secondary_secret"] == before + 1
        # The replay store survived the new VM environment.
        resp = requests.post(url, data=first, headers=first_headers, timeout=10)
        assert (resp.status_code, resp.json()["error"]) == (409, "replayed")
        # Step 2: the old secret removed.
        envoy.reload(plugin(403), key_values={"GITHUB_WEBHOOK_SECRET": NEW})
        wait_until(lambda: requests.post(url, data=b"{}", timeout=5).status_code == 403, 30, "the final config")
        assert deliver(url, OLD)[2] == 401
        assert deliver(url, NEW)[2] == 200
        # A replay of a delivery signed with the removed secret no longer even verifies.
        assert requests.post(url, data=first, headers=first_headers, timeout=10).status_code == 401
        assert sum(e["body_sha256"] == hashlib.sha256(first).hexdigest() for e in backend.events()) == 1
        assert OLD not in envoy.log() and NEW not in envoy.log()
    finally:
        envoy.stop()
        backend.stop()


def test_environment_secrets_need_a_restart_which_keeps_replay_state_only_with_etcd(work):
    backend = Backend(work)
    etcd = Etcd(work)
    try:
        for store, replay_after_restart in [(None, 200), ({"type": "etcd", "cluster": "etcd"}, 409)]:
            envoy = Envoy(work, backend.port, plugin(401, store), {"GITHUB_WEBHOOK_SECRET": OLD},
                          etcd_port=etcd.port)
            try:
                body, headers, status = deliver(envoy.url + "/webhooks/github", OLD)
                assert status == 200
            finally:
                envoy.stop()
            # The rotated environment needs a new process.
            envoy = Envoy(work, backend.port, plugin(401, store),
                          {"GITHUB_WEBHOOK_SECRET": NEW, "GITHUB_WEBHOOK_SECRET_PREVIOUS": OLD}, etcd_port=etcd.port)
            try:
                url = envoy.url + "/webhooks/github"
                assert deliver(url, NEW)[2] == 200
                replay = requests.post(url, data=body, headers=headers, timeout=10).status_code
                # Local store: the new process forgot the delivery (GitHub signs no timestamp, so
                # it stays replayable until its retention would have ended). etcd: remembered.
                assert replay == replay_after_restart, (store, replay)
            finally:
                envoy.stop()
    finally:
        etcd.stop()
        backend.stop()

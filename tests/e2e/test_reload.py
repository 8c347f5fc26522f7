"""A plugin configuration reload under the same vm_id keeps the replay store: deliveries
accepted before the reload are still rejected as replays after it.

The listener (with the wasm filter) comes from a file-based LDS source, the same listener the
demo template renders; rewriting that file makes Envoy swap in a new filter config without a
restart."""
import tempfile
import pathlib

import requests

from harness import Backend, ReloadableEnvoy, wait_until
from signers import PRESETS

SECRET = "reload-secret"


def plugin(missing_status: int) -> dict:
    return {"policies": [{"name": "gh", "match": {"path_prefix": "/webhooks/github"}, "provider": "github",
                          "secrets": [{"env": "GITHUB_WEBHOOK_SECRET"}],
                          "status_overrides": {"missing_signature": missing_status}}]}


def test_replay_store_survives_a_plugin_config_reload():
    with tempfile.TemporaryDirectory(prefix="webhook-guard-reload-") as d:
        work = pathlib.Path(d)
        backend = Backend(work)
        envoy = ReloadableEnvoy(work, backend.port, plugin(400), env={"GITHUB_WEBHOOK_SECRET": SECRET})
        try:
            url = envoy.url + "/webhooks/github"
            _, sign, _, _ = PRESETS["github"]
            body = b'{"id": "before-reload"}'
            headers = sign(SECRET, body, 0, "d")
            assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 200
            assert requests.post(url, data=b"{}", timeout=5).status_code == 400

            envoy.reload(plugin(418))
            # The new filter config is live once an unsigned request gets the new status.
            wait_until(lambda: requests.post(url, data=b"{}", timeout=5).status_code == 418, 30,
                       "the reloaded plugin config")
            resp = requests.post(url, data=body, headers=headers, timeout=5)
            assert resp.status_code == 409, envoy.log()[-3000:]
            assert resp.json() == {"error": "replayed", "policy": "gh"}
        finally:
            envoy.stop()
            backend.stop()


def test_a_reload_that_resizes_the_store_still_rejects_earlier_deliveries():
    """A new capacity means a new shard count: the entries move to the new layout (before, the
    reload forgot them and every replay inside the window was admitted)."""
    with tempfile.TemporaryDirectory(prefix="webhook-guard-reload-") as d:
        work = pathlib.Path(d)
        backend = Backend(work)
        small = {**plugin(400), "store": {"capacity": 3200}}
        envoy = ReloadableEnvoy(work, backend.port, small, env={"GITHUB_WEBHOOK_SECRET": SECRET})
        try:
            url = envoy.url + "/webhooks/github"
            _, sign, _, _ = PRESETS["github"]
            sent = []
            for i in range(20):
                body = b'{"id": "resize-%d"}' % i
                headers = sign(SECRET, body, 0, f"d{i}")
                assert requests.post(url, data=body, headers=headers, timeout=5).status_code == 200
                sent.append((body, headers))

            envoy.reload({**plugin(418), "store": {"capacity": 64000}})
            wait_until(lambda: requests.post(url, data=b"{}", timeout=5).status_code == 418, 30,
                       "the reloaded plugin config")
            for body, headers in sent:
                resp = requests.post(url, data=body, headers=headers, timeout=5)
                assert resp.status_code == 409, (resp.status_code, resp.text, envoy.log()[-3000:])
            assert len([e for e in backend.events() if e["path"] == "/webhooks/github"]) == 20
            assert "went from 100 to 2000 shards; 20 live entries moved" in envoy.log()
        finally:
            envoy.stop()
            backend.stop()

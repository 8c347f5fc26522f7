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

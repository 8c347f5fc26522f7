"""A plugin configuration reload under the same vm_id keeps the replay store: deliveries
accepted before the reload are still rejected as replays after it.

The listener (with the wasm filter) comes from a file-based LDS source, the same listener the
demo template renders; rewriting that file makes Envoy swap in a new filter config without a
restart."""
import json
import os
import pathlib
import subprocess
import tempfile
import time

import requests
import yaml

from harness import WASM, Backend, envoy_binary, free_port, render, stop_process, wait_until, _base_ids
from signers import PRESETS

SECRET = "reload-secret"


def plugin(missing_status: int) -> dict:
    return {"policies": [{"name": "gh", "match": {"path_prefix": "/webhooks/github"}, "provider": "github",
                          "secrets": [{"env": "GITHUB_WEBHOOK_SECRET"}],
                          "status_overrides": {"missing_signature": missing_status}}]}


def write_lds(path: pathlib.Path, listener: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"resources": [{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
                                              **listener}]}))
    os.replace(tmp, path)  # atomic: Envoy reloads on the rename


def test_replay_store_survives_a_plugin_config_reload():
    with tempfile.TemporaryDirectory(prefix="webhook-guard-reload-") as d:
        work = pathlib.Path(d)
        backend = Backend(work)
        port, admin = free_port(), free_port()

        def rendered(missing_status):
            return yaml.safe_load(render(envoy_port=port, admin_port=admin, backend_port=backend.port,
                                         wasm_path=str(WASM), plugin_config=json.dumps(plugin(missing_status)),
                                         access_log_path=str(work / "access.log")))

        bootstrap = rendered(400)
        listener = bootstrap["static_resources"].pop("listeners")[0]
        lds = work / "lds.json"
        write_lds(lds, listener)
        bootstrap["node"] = {"id": "reload-test", "cluster": "webhook-guard"}
        bootstrap["dynamic_resources"] = {"lds_config": {"resource_api_version": "V3",
                                                         "path_config_source": {"path": str(lds)}}}
        (work / "bootstrap.json").write_text(json.dumps(bootstrap))
        log = work / "envoy.log"
        proc = subprocess.Popen([envoy_binary(), "-c", str(work / "bootstrap.json"), "--base-id", str(next(_base_ids)),
                                 "--concurrency", "2"],
                                env={**os.environ, "GITHUB_WEBHOOK_SECRET": SECRET},
                                stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
            try:
                wait_until(lambda: requests.get(admin_url + "/ready", timeout=1).text.strip() == "LIVE", 30, "envoy")
            except TimeoutError as e:
                raise AssertionError(log.read_text()[-4000:]) from e
            _, sign, _, _ = PRESETS["github"]
            body = b'{"id": "before-reload"}'
            headers = sign(SECRET, body, 0, "d")
            assert requests.post(url + "/webhooks/github", data=body, headers=headers, timeout=5).status_code == 200
            assert requests.post(url + "/webhooks/github", data=b"{}", timeout=5).status_code == 400

            write_lds(lds, rendered(418)["static_resources"]["listeners"][0])

            # The new filter config is live once an unsigned request gets the new status.
            wait_until(lambda: requests.post(url + "/webhooks/github", data=b"{}", timeout=5).status_code == 418,
                       30, "the reloaded plugin config")
            resp = requests.post(url + "/webhooks/github", data=body, headers=headers, timeout=5)
            assert resp.status_code == 409, log.read_text()[-3000:]
            assert resp.json() == {"error": "replayed", "policy": "gh"}
            stats = requests.get(admin_url + "/stats", params={"filter": "lds.update_success"}, timeout=5).text
            assert "listener_manager.lds.update_success: 2" in stats
        finally:
            stop_process(proc)
            backend.stop()

"""The webhook-guard CLI against the real filter: what `sign` produces is accepted for every
preset and for a custom scheme; `verify` and `check-config` agree with the filter."""
import json
import subprocess
import uuid

import pytest

from harness import CLI, DEMO_CONFIG
from signers import PRESETS

CLI_PROVIDER = {"github": "github", "stripe": "stripe", "slack": "slack", "shopify": "shopify",
                "standard": "standard-webhooks"}

# The CLI runs the core on the host: one build is enough.
pytestmark = pytest.mark.build("wasm")


def cli(*args, env=None, check=True):
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=30, env=env, check=check)


def headers_from(out: str) -> dict:
    return json.loads(out)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_sign_output_is_accepted_by_the_filter(demo, secrets, preset, tmp_path):
    path, _, var, _ = PRESETS[preset]
    delivery = f"evt_{uuid.uuid4().hex}"
    body = json.dumps({"id": delivery, "signed_by": "webhook-guard sign"}).encode()
    body_file = tmp_path / "body.json"
    body_file.write_bytes(body)
    if preset == "custom":
        source = ["--config", str(DEMO_CONFIG), "--policy", "custom"]
    else:
        source = ["--provider", CLI_PROVIDER[preset]]
    out = cli("sign", *source, "--secret-env", var, "--body-file", str(body_file), "--id", delivery,
              "--format", "json", env={"PATH": "/usr/bin:/bin", **secrets})
    headers = headers_from(out.stdout)
    resp = demo.post(path, body, headers)
    assert resp.status_code == 200, (headers, resp.text)
    # Signed for the wrong secret: rejected.
    out = cli("sign", *source, "--secret", "whsec_d3Jvbmcgc2VjcmV0IGZvciB0aGUgY2xp" if preset == "standard" else "wrong",
              "--body-file", str(body_file), "--id", delivery + "x", "--format", "json",
              env={"PATH": "/usr/bin:/bin", **secrets})
    resp = demo.post(path, body, headers_from(out.stdout))
    assert resp.json()["error"] == "invalid_signature"


def test_verify_a_saved_request(tmp_path):
    secret = "It's a Secret to Everybody"
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"policies": [{"name": "gh", "match": {"path_prefix": "/hooks"},
                                                "provider": "github", "secrets": [{"inline": secret}]}]}))
    sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"  # GitHub's docs example
    saved = tmp_path / "req.http"
    saved.write_bytes(f"POST /hooks/github HTTP/1.1\r\nHost: example.com\r\nX-Hub-Signature-256: {sig}\r\n\r\n"
                      .encode() + b"Hello, World!")
    ok = cli("verify", "--config", str(config), "--request", str(saved), check=False)
    assert ok.returncode == 0 and "accepted by policy 'gh'" in ok.stdout
    saved.write_bytes(saved.read_bytes() + b"!")
    bad = cli("verify", "--config", str(config), "--request", str(saved), check=False)
    assert bad.returncode == 1 and "401 invalid_signature" in bad.stdout
    assert secret not in ok.stdout + ok.stderr + bad.stdout + bad.stderr


def test_check_config_uses_the_filters_validator(tmp_path):
    ok = cli("check-config", str(DEMO_CONFIG), env={"PATH": "/usr/bin:/bin", "GITHUB_WEBHOOK_SECRET": "s"})
    assert "valid, 7 policies" in ok.stdout
    assert "github           POST, secrets 1/2 usable" in ok.stdout
    assert "decrypt: aes-256-gcm, keys 0/2 usable" in ok.stdout
    assert "no usable decryption key" in ok.stdout
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"policies": [{"name": "x", "match": {"path_prefix": "/"}, "provider": "bogus",
                                                "secrets": [{"inline": "s"}]}]}))
    bad = cli("check-config", str(broken), check=False)
    assert bad.returncode == 1
    assert "at policies[0].provider: unknown variant `bogus`" in bad.stderr


@pytest.mark.parametrize("store", [[], ["--native"]], ids=["shared-data-store", "native-store"])
def test_path_cost_drives_each_path_it_times(tmp_path, store):
    """The bench's `path-cost` (the core's own time per path): each timed request must take the
    path it is timed for (accepted forwarded, replay and invalid answered), else it fails."""
    import base64
    secret = "whsec_" + base64.b64encode(b"path-cost-test-secret-32-bytes!!").decode()
    cfg = tmp_path / "bench.json"
    cfg.write_text(json.dumps({"policies": [{
        "name": "bench", "match": {"path_prefix": "/webhook"}, "provider": "standard-webhooks",
        "secrets": [{"inline": secret}], "timestamp_tolerance_seconds": 3600}]}))
    out = cli("path-cost", "--config", str(cfg), "--requests", "300", "--rounds", "2", *store)
    cost = json.loads(out.stdout)
    assert cost["requests"] == 300
    for path in ("unmatched", "accepted", "replay", "invalid"):
        assert cost[path] > 0, cost
    # GitHub signs the body alone, and every timed delivery has the same body: the second
    # "accepted" one is a replay of the first (dedup on signed bytes), so the run must stop.
    cfg.write_text(json.dumps({"policies": [{
        "name": "bench", "match": {"path_prefix": "/webhook"}, "provider": "github",
        "secrets": [{"inline": "x"}]}]}))
    bad = cli("path-cost", "--config", str(cfg), "--requests", "10", "--rounds", "1", *store, check=False)
    assert bad.returncode != 0
    assert "expected forwarded, got a 409 reply" in bad.stderr

"""Configuration handling in the real Envoy: refused configs name the field, default deny,
fail-closed secrets, and the shipped Envoy config validates."""
import json
import os
import subprocess

import pytest

from harness import ROOT, Envoy, Stack, build_env, envoy_binary

GOOD = {"name": "gh", "match": {"path_prefix": "/webhooks/github"}, "provider": "github",
        "secrets": [{"env": "GITHUB_WEBHOOK_SECRET"}]}


@pytest.mark.parametrize("config, message", [
    ({"policies": [{**GOOD, "provider": "bogus"}]}, "at policies[0].provider: unknown variant `bogus`"),
    ({"policies": [GOOD], "defualt": "deny"}, "unknown field `defualt`"),
    ({"policies": [{**GOOD, "status_overrides": {"invalid_signatur": 403}}]},
     "at policies[0].status_overrides.invalid_signatur: unknown reason code"),
    ({"policies": [{**GOOD, "provider": "custom", "custom": {"signature_header": "X-Sig", "signed_template": "{path}"}}]},
     "at policies[0].custom.signed_template: must include {body}"),
    ("{not json", "invalid webhook-guard configuration"),
], ids=["unknown-provider", "unknown-field", "bad-reason-code", "template-without-body", "not-json"])
def test_envoy_refuses_an_invalid_config_and_says_which_field(tmp_path, config, message):
    plugin = config if isinstance(config, str) else json.dumps(config)
    envoy = Envoy(tmp_path, 1, plugin, {"GITHUB_WEBHOOK_SECRET": "s"}, wait=False, check_json=False)
    try:
        envoy.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        envoy.stop()
        pytest.fail("envoy started with an invalid plugin config")
    assert envoy.proc.returncode != 0
    log = envoy.log()
    assert message in log, log[-3000:]


def test_shipped_envoy_config_validates(tmp_path, build):
    out = tmp_path / "envoy.yaml"
    subprocess.run(["python3", str(ROOT / "scripts/render_envoy.py"), "--build", build, "-o", str(out)], check=True)
    res = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(out), "--base-id", "7"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, **build_env()})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "configuration" in (res.stdout + res.stderr) and "OK" in (res.stdout + res.stderr)


def test_default_deny_rejects_unmatched_requests_and_still_verifies_matched_ones():
    stack = Stack({"default": "deny", "policies": [GOOD]}, {"GITHUB_WEBHOOK_SECRET": "s3cr3t-value"})
    try:
        resp = stack.post("/webhooks/other", b"{}")
        assert resp.status_code == 403
        assert resp.json() == {"error": "no_matching_policy", "policy": None}
        resp = stack.post("/webhooks/github", b"{}")
        assert resp.json() == {"error": "missing_signature", "policy": "gh"}
        assert stack.backend.events() == []
        assert stack.envoy.stats()["webhook_guard.unmatched.denied"] == 1
    finally:
        stack.stop()


def test_missing_secret_fails_closed_with_503():
    stack = Stack({"policies": [GOOD]}, {})  # GITHUB_WEBHOOK_SECRET not set
    try:
        resp = stack.post("/webhooks/github", b"{}", {"X-Hub-Signature-256": "sha256=" + "0" * 64})
        assert resp.status_code == 503
        assert resp.json() == {"error": "secret_unavailable", "policy": "gh"}
        assert stack.backend.events() == []
        assert "GITHUB_WEBHOOK_SECRET is unset or empty" in stack.envoy.log()
    finally:
        stack.stop()


def test_default_allow_passes_unmatched_requests_untouched():
    stack = Stack({"default": "allow", "policies": [GOOD]}, {"GITHUB_WEBHOOK_SECRET": "s3cr3t-value"})
    try:
        resp = stack.post("/webhooks/other", b'{"unverified": true}')
        assert resp.status_code == 200  # the backend's answer: nothing verified it
        assert [e["route"] for e in stack.backend.events()] == ["other"]
        assert stack.envoy.stats()["webhook_guard.unmatched.passed"] == 1
        # Paths outside /webhooks/ are not routed at all on the webhook listener.
        assert stack.post("/events", b"").status_code == 404
    finally:
        stack.stop()

"""Counters, structured rejection logs, the access-log verdict and body limits, read from the
real Envoy running the demo configuration."""
import hashlib
import hmac
import json
import time
import uuid

import requests

from harness import DEMO_CONFIG, Stack
from signers import PRESETS


def delta(before: dict, after: dict, name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


def test_counters_per_policy_and_reason(demo, secrets):
    before = demo.envoy.stats()
    _, sign, var, _ = PRESETS["github"]
    body = b'{"n": 1, "u": "' + uuid.uuid4().hex.encode() + b'"}'
    assert demo.post("/webhooks/github", body, sign(secrets[var], body, 0, "d1")).status_code == 200
    assert demo.post("/webhooks/github", body, sign(secrets[var + "_PREVIOUS"], body + b"x", 0, "d2")).status_code == 401
    # Another delivery under the previous secret (the same body under it would be the same
    # delivery, a replay: the dedup key is the signed bytes, whichever secret verified them).
    other = body.replace(b'"n": 1', b'"n": 2')
    assert demo.post("/webhooks/github", other, sign(secrets[var + "_PREVIOUS"], other, 0, "d3")).status_code == 200
    assert demo.post("/webhooks/github", body, {}).status_code == 400
    after = demo.envoy.stats()
    p = "webhook_guard.policy.github."
    assert delta(before, after, p + "accepted") == 2
    assert delta(before, after, p + "accepted_secondary_secret") == 1
    assert delta(before, after, p + "rejected") == 2
    assert delta(before, after, p + "reason.invalid_signature") == 1
    assert delta(before, after, p + "reason.missing_signature") == 1
    # stats_tags turn policy and reason into labels and take the namespace out of the name:
    # both builds export exactly these series.
    prom = prometheus(demo)
    assert int(prom['envoy_webhook_guard_policy_accepted{stat_namespace="wasmcustom",webhook_policy="github"}']) \
        == after[p + "accepted"]
    assert int(prom['envoy_webhook_guard_policy_reason{stat_namespace="wasmcustom",webhook_policy="github",'
                    'webhook_reason="invalid_signature"}']) == after[p + "reason.invalid_signature"]


def prometheus(demo) -> dict[str, float]:
    text = requests.get(demo.envoy.admin + "/stats/prometheus", timeout=5).text
    return {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines()
                                      if line and not line.startswith("#"))}


def test_verdict_latency_histogram_per_policy(demo, secrets):
    """Each verdict of a policy (accepted or rejected) is one observation of its latency
    histogram, in microseconds, bucketed with the 150 ms target as a bound."""
    series = 'envoy_webhook_guard_policy_verdict_latency_us_{}{{stat_namespace="wasmcustom",webhook_policy="stripe"{}}}'
    count = series.format("count", "")

    def settled() -> dict[str, float]:
        # Envoy merges histograms into /stats on its flush interval (5 s by default).
        time.sleep(5.5)
        return prometheus(demo)

    before = settled().get(count, 0)
    _, sign, var, _ = PRESETS["stripe"]
    now = int(time.time())
    for i in range(3):
        body = b'{"id": "evt_' + uuid.uuid4().hex.encode() + b'", "type": "t"}'
        assert demo.post("/webhooks/stripe", body, sign(secrets[var], body, now, "")).status_code == 200
    forged = sign(secrets[var], b"{}", now, "")
    assert demo.post("/webhooks/stripe", b'{"x": 1}', forged).status_code == 401
    prom = settled()
    assert prom[count] - before == 4
    # Verdicts on loopback take well under the 150 ms target: every one is in that bucket.
    assert prom[series.format("bucket", ',le="150000"')] == prom[count]
    assert prom[series.format("sum", "")] > 0
    # No etcd here: the store-latency histogram exists but has seen nothing.
    store = 'envoy_webhook_guard_policy_store_latency_us_count{stat_namespace="wasmcustom",webhook_policy="stripe"}'
    assert prom.get(store, 0) == 0


def test_rejection_log_line_is_structured_and_secret_free(demo, secrets):
    _, sign, var, _ = PRESETS["standard"]
    delivery = "msg_" + uuid.uuid4().hex
    body = b'{"type": "invoice.paid"}'
    headers = sign("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB", body, int(time.time()), delivery)
    resp = demo.post("/webhooks/standard", body, headers)
    assert resp.json() == {"error": "invalid_signature", "policy": "standard"}
    lines = [l for l in demo.envoy.rejection_logs() if l.get("delivery_id") == delivery]
    assert len(lines) == 1
    line = lines[0]
    assert line["policy"] == "standard"
    assert line["reason"] == "invalid_signature"
    assert line["status"] == 401
    assert line["route"] == "webhooks_standard"
    assert line["path"] == "/webhooks/standard"
    log = demo.envoy.log()
    for value in secrets.values():
        assert value not in log


def test_access_log_carries_the_verdict(demo, secrets):
    marker = uuid.uuid4().hex
    _, sign, var, _ = PRESETS["slack"]
    body = f'{{"marker": "{marker}"}}'.encode()
    demo.post(f"/webhooks/slack?m={marker}", body, sign(secrets[var], body, int(time.time()), ""))
    demo.post(f"/webhooks/slack?m={marker}x", body, {})
    requests.post(f"{demo.envoy.url}/webhooks/unknown?m={marker}", timeout=5)
    deadline = time.monotonic() + 10
    entries = {}
    while time.monotonic() < deadline and len(entries) < 3:
        entries = {e["path"]: e for e in demo.envoy.access_log() if marker in (e["path"] or "")}
        time.sleep(0.2)
    assert entries[f"/webhooks/slack?m={marker}"]["webhook_verdict"] == "accepted"
    assert entries[f"/webhooks/slack?m={marker}x"]["webhook_verdict"] == "missing_signature"
    assert entries[f"/webhooks/slack?m={marker}x"]["status"] == 400
    # The demo listener serves webhooks only ("default": "deny").
    assert entries[f"/webhooks/unknown?m={marker}"]["webhook_verdict"] == "no_matching_policy"


def _custom_headers(secret: str, body: bytes) -> dict:
    ts = str(int(time.time()))
    sig = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Webhook-Signature": sig, "X-Webhook-Timestamp": ts}


def test_body_limit_is_enforced_by_the_filter_for_declared_and_chunked_bodies(demo, secrets):
    secret = secrets["CUSTOM_WEBHOOK_SECRET"]
    limit = 65536  # the demo's custom policy max_body_bytes
    at_limit = b"a" * limit
    assert demo.post("/webhooks/custom", at_limit, _custom_headers(secret, at_limit)).status_code == 200

    over = b"a" * (limit + 1)
    resp = demo.post("/webhooks/custom", over, _custom_headers(secret, over))
    assert resp.status_code == 413
    assert resp.json() == {"error": "body_too_large", "policy": "custom"}

    def chunks():
        for _ in range(3):
            yield b"b" * 40000
    resp = demo.post("/webhooks/custom", chunks(), _custom_headers(secret, b"b" * 120000))
    assert resp.status_code == 413
    assert resp.json() == {"error": "body_too_large", "policy": "custom"}


def test_default_one_mib_limit_on_a_chunked_upload(demo, secrets):
    def chunks():
        for _ in range(40):
            yield b"c" * 65536  # 2.5 MiB in total, below Envoy's own 4 MiB buffer limit
    resp = demo.post("/webhooks/github", chunks(), {"X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert resp.status_code == 413
    assert resp.json() == {"error": "body_too_large", "policy": "github"}


def test_unmatched_paths_are_denied_on_the_webhook_listener(demo):
    before = demo.envoy.stats()
    resp = requests.post(demo.envoy.url + "/webhooks/unknown", data=b"{}", timeout=5)
    assert resp.status_code == 403
    assert resp.json() == {"error": "no_matching_policy", "policy": None}
    assert delta(before, demo.envoy.stats(), "webhook_guard.unmatched.denied") == 1


def test_path_tricks_cannot_slip_past_a_policy(demo):
    # normalize_path + merge_slashes: these reach the github policy, not the catch-all route.
    import http.client
    for path in ("//webhooks/github", "/webhooks/stripe/../github", "/webhooks/./github"):
        conn = http.client.HTTPConnection("127.0.0.1", demo.envoy.port, timeout=5)
        conn.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status == 400, (path, body)
        assert b'"policy":"github"' in body, (path, body)


def test_a_log_level_changed_at_runtime_applies_from_the_next_tick(secrets):
    """The wasm build reads Envoy's log level on each tick, not per rejection: a level lowered
    or raised through the admin port's /logging governs rejection lines from the next tick.
    Envoy starts with rejection lines off: the level the filter read at configuration must not stick."""
    config = json.loads(DEMO_CONFIG.read_text())
    config["store"] = {**config.get("store", {}), "sweep_interval_seconds": 1}
    stack = Stack(config, secrets, component_log_level="wasm:warning,dynamic_modules:warning")
    try:
        def rejections() -> int:
            time.sleep(0.5)  # the log file is flushed every 100 ms
            return stack.envoy.log().count('"event":"webhook_rejected"')

        def set_level(level: str) -> None:
            for logger in ("wasm", "dynamic_modules"):  # one logger per request
                resp = requests.post(f"{stack.envoy.admin}/logging?{logger}={level}", timeout=5)
                assert resp.status_code == 200, resp.text
            time.sleep(2.5)  # past the next tick of every worker

        assert stack.post("/webhooks/github", b"{}").status_code == 400
        assert rejections() == 0
        set_level("info")
        assert stack.post("/webhooks/github", b"{}").status_code == 400
        assert rejections() == 1
        set_level("warning")
        assert stack.post("/webhooks/github", b"{}").status_code == 400
        assert rejections() == 1
    finally:
        stack.stop()

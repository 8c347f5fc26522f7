"""Every preset x accept / tampered / wrong secret / missing / stale / future / rotation, in
the real Envoy, signed by the providers' SDKs, checking what reached the backend."""
import hashlib
import json
import time
import uuid

import pytest

from signers import PRESETS, SIGNATURE_HEADERS

SCENARIOS = ["accept", "tampered", "wrong_secret", "missing", "stale", "future", "rotation"]
SKEW = 400  # beyond the default 300 s tolerance


def expected(preset: str, scenario: str) -> tuple[int, str | None]:
    signs_ts = PRESETS[preset][3]
    invalid = 403 if preset == "custom" else 401  # the demo config overrides it for custom
    return {
        "accept": (200, None),
        "rotation": (200, None),
        "tampered": (invalid, "invalid_signature"),
        "wrong_secret": (invalid, "invalid_signature"),
        "missing": (400, "missing_signature"),
        # Without a signed timestamp there is no freshness to check: only dedup stops replays.
        "stale": (401, "timestamp_out_of_window") if signs_ts else (200, None),
        "future": (401, "timestamp_out_of_window") if signs_ts else (200, None),
    }[scenario]


def reached_backend(demo, body: bytes) -> int:
    digest = hashlib.sha256(body).hexdigest()
    return sum(1 for e in demo.backend.events() if e["body_sha256"] == digest)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_scenario(demo, secrets, preset, scenario):
    path, sign, var, _ = PRESETS[preset]
    delivery = f"evt_{uuid.uuid4().hex}"
    body = json.dumps({"id": delivery, "type": "demo.event", "note": "ünïcode ✓"}).encode()
    now = int(time.time())
    ts = {"stale": now - SKEW, "future": now + SKEW}.get(scenario, now)
    secret = {"wrong_secret": "not-the-secret", "rotation": secrets[var + "_PREVIOUS"]}.get(scenario, secrets[var])
    if preset == "standard" and scenario == "wrong_secret":
        secret = "whsec_bm90LXRoZS1zZWNyZXQtYXQtYWxsLTMyYnl0ZXM="
    headers = sign(secret, body, ts, delivery)
    if scenario == "missing":
        headers = {k: v for k, v in headers.items() if k not in SIGNATURE_HEADERS}
    sent = body + b" " if scenario == "tampered" else body

    resp = demo.post(path, sent, headers)

    status, reason = expected(preset, scenario)
    assert resp.status_code == status, resp.text
    if reason is None:
        assert resp.json()["status"] == "ok"
        assert reached_backend(demo, sent) == 1
    else:
        assert resp.headers["content-type"] == "application/json"
        assert resp.json() == {"error": reason, "policy": preset}
        assert reached_backend(demo, sent) == 0
    # Never echo secrets or expected signatures.
    for value in secrets.values():
        assert value not in resp.text

"""The known-answer vectors (tests/vectors/providers.json: providers' published examples plus
derived negatives) through the real Envoy, one policy per vector.

Published timestamped examples are years old, so in real time they must come back
`timestamp_out_of_window`. The filter checks the signature first, so that answer (with the
log's detail "stale") proves the signature verified; a tampered copy gives `invalid_signature`.
"""
import hashlib
import hmac
import json

import pytest

from harness import ROOT, Stack

VECTORS = json.loads((ROOT / "tests/vectors/providers.json").read_text())
STATUS = {"accepted": 200, "missing_signature": 400, "missing_timestamp": 400, "missing_header": 400,
          "malformed_signature": 400, "malformed_timestamp": 400, "invalid_signature": 401,
          "timestamp_out_of_window": 401}
DEFAULT_CUSTOM = {"signature_header": "X-Webhook-Signature", "timestamp_header": "X-Webhook-Timestamp",
                  "signed_template": "{timestamp}.{body}"}


def body_of(v) -> bytes:
    if "body_hex" in v:
        return bytes.fromhex(v["body_hex"])
    if "body_repeat" in v:
        return (v["body_repeat"]["text"] * v["body_repeat"]["count"]).encode()
    return v["body"].encode()


def path_of(i, v) -> str:
    return v.get("path", f"/webhooks/v/{i}/hook")


def policy_for(i, v) -> dict:
    prefix = path_of(i, v).split("?")[0]
    p = {"name": f"v{i}", "match": {"path_prefix": prefix}, "provider": v["provider"],
         "secrets": [{"inline": v["secret"]}], "max_body_bytes": 2 * 1024 * 1024}
    if v["provider"] == "custom":
        p["custom"] = v.get("custom", DEFAULT_CUSTOM)
    p.update(v.get("policy", {}))
    return p


@pytest.fixture(scope="module")
def vectors_stack(build):
    config = {"policies": [policy_for(i, v) for i, v in enumerate(VECTORS)]}
    stack = Stack(config, {})
    yield stack
    stack.stop()


def expected_in_real_time(v) -> str:
    if v["verify_at"] is not None and v["expect"] == "accepted":
        return "timestamp_out_of_window"
    return v["expect"]


@pytest.mark.parametrize("i", range(len(VECTORS)), ids=[v["name"] for v in VECTORS])
def test_vector_through_envoy(vectors_stack, i):
    v = VECTORS[i]
    body = body_of(v)
    resp = vectors_stack.post(path_of(i, v), body, v["headers"])
    want = expected_in_real_time(v)
    assert resp.status_code == STATUS[want], resp.text
    if want == "accepted":
        assert resp.json()["status"] == "ok"
    else:
        assert resp.json() == {"error": want, "policy": f"v{i}"}
    if want == "timestamp_out_of_window" and v["expect"] == "accepted":
        logs = [l for l in vectors_stack.envoy.rejection_logs() if l["policy"] == f"v{i}"]
        assert logs and logs[-1]["detail"] == "stale"
        # And the same request with one body byte changed fails on the signature instead
        # (Mailgun signs only fields of its body: its vectors name the changed body to send).
        tampered = bytearray(body)
        tampered[0] ^= 1
        if "tampered" in v:
            tampered = v["tampered"].encode()
        resp = vectors_stack.post(path_of(i, v), bytes(tampered), v["headers"])
        assert resp.json()["error"] == "invalid_signature"


# ---- The provider catalog in the real Envoy, signed now: the full scenario matrix. ----
import time  # noqa: E402
import uuid  # noqa: E402

from signers import CATALOG, CATALOG_POLICY, CATALOG_PUBLIC  # noqa: E402

CATALOG_SCENARIOS = ["accept", "replay", "tampered", "wrong_secret", "missing", "stale", "future"]
META_VERIFY_TOKEN = f"meta-verify-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def catalog_stack(build):
    secrets = {name: make(f"{name}-secret-{uuid.uuid4().hex[:8]}") for name, (_, _, _, make, _) in CATALOG.items()}
    config = {"policies": [{"name": name, "match": {"path_prefix": f"/webhooks/catalog/{name}"}, "provider": name,
                            "secrets": [{"inline": CATALOG_PUBLIC.get(name, str)(secrets[name])}],
                            **CATALOG_POLICY.get(name, {})}
                           for name in CATALOG]}
    # The handshakes: the same providers with answer_challenges on.
    config["policies"] += [{"name": f"{name}-challenge", "match": {"path_prefix": f"/webhooks/challenge/{name}"},
                            "provider": name, "secrets": [{"inline": secrets[name]}], "answer_challenges": True}
                           for name in ("zoom", "twitch")]
    config["policies"].append({"name": "meta-challenge", "match": {"path_prefix": "/webhooks/challenge/meta"},
                               "provider": "meta", "secrets": [{"inline": secrets["meta"]}],
                               "answer_challenges": True, "verify_token": {"inline": META_VERIFY_TOKEN}})
    stack = Stack(config, {})
    stack.catalog_secrets = secrets
    yield stack
    stack.stop()


@pytest.mark.parametrize("scenario", CATALOG_SCENARIOS)
@pytest.mark.parametrize("preset", list(CATALOG))
def test_catalog_matrix(catalog_stack, preset, scenario):
    sign, signs_ts, sig_header, make_secret, dedups = CATALOG[preset]
    secret = catalog_stack.catalog_secrets[preset]
    now = int(time.time())
    skew = 1000 if preset == "mailgun" else 700  # beyond each preset's default window
    ts = {"stale": now - skew, "future": now + skew}.get(scenario, now)
    delivery = f"d_{uuid.uuid4().hex}"
    obj = {"id": delivery, "type": "catalog.test", "n": 1}
    used_secret = make_secret("wrong") if scenario == "wrong_secret" else secret
    body, headers = sign(used_secret, obj, ts, delivery)
    if scenario == "missing":
        if sig_header.startswith("body:"):
            # The signature travels in the body (Mailgun): send the body without it.
            doc = json.loads(body)
            doc.pop(sig_header.removeprefix("body:"))
            body = json.dumps(doc).encode()
        else:
            headers.pop(sig_header)
    if scenario == "tampered":
        body = body.replace(b'"n": 1', b'"n": 2').replace(b"n=1", b"n=2")
    path = f"/webhooks/catalog/{preset}"
    if scenario == "replay":
        assert catalog_stack.post(path, body, headers).status_code == 200
    resp = catalog_stack.post(path, body, headers)
    want = {
        "accept": (200, None),
        "replay": (409, "replayed") if dedups else (200, None),
        # GitLab's token, Mailgun's timestamp + token and Adyen's eight item fields do not cover
        # the bytes changed here (their own tests change what is signed).
        "tampered": (401, "invalid_signature") if preset not in ("gitlab", "mailgun", "adyen") else (200, None),
        "wrong_secret": (401, "invalid_signature"),
        "missing": (400, "missing_signature"),
        "stale": (401, "timestamp_out_of_window") if signs_ts else (200, None),
        "future": (401, "timestamp_out_of_window") if signs_ts else (200, None),
    }[scenario]
    assert resp.status_code == want[0], resp.text
    if want[1]:
        assert resp.json() == {"error": want[1], "policy": preset}


def test_zoom_url_validation_is_answered_by_the_filter(catalog_stack):
    secret = catalog_stack.catalog_secrets["zoom"]
    sign = CATALOG["zoom"][0]
    obj = {"event": "endpoint.url_validation", "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"}, "event_ts": 1}
    body, headers = sign(secret, obj, int(time.time()), "")
    before = len(catalog_stack.backend.events())
    resp = catalog_stack.post("/webhooks/challenge/zoom", body, headers)
    assert resp.status_code == 200
    expected = hmac.new(secret.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256).hexdigest()
    assert resp.json() == {"plainToken": "qgg8vlvZRS6UYooatFL8Aw", "encryptedToken": expected}
    assert len(catalog_stack.backend.events()) == before, "answered by Envoy"
    # Unsigned handshakes are rejected like any delivery; ordinary events still go through.
    assert catalog_stack.post("/webhooks/challenge/zoom", body, {}).status_code == 400
    body, headers = sign(secret, {"event": "meeting.started", "id": uuid.uuid4().hex}, int(time.time()), "")
    assert catalog_stack.post("/webhooks/challenge/zoom", body, headers).json()["status"] == "ok"


def test_twitch_callback_verification_is_answered_by_the_filter(catalog_stack):
    secret = catalog_stack.catalog_secrets["twitch"]
    sign = CATALOG["twitch"][0]
    body, headers = sign(secret, {"challenge": "pogchamp-kappa-360noscope-vohiyo", "subscription": {}},
                         int(time.time()), f"m_{uuid.uuid4().hex}")
    headers["twitch-eventsub-message-type"] = "webhook_callback_verification"
    resp = catalog_stack.post("/webhooks/challenge/twitch", body, headers)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/plain"
    assert resp.text == "pogchamp-kappa-360noscope-vohiyo"
    stats = catalog_stack.envoy.stats()
    assert stats["webhook_guard.policy.twitch-challenge.challenges_answered"] == 1


def test_provider_sdks_accept_what_the_filter_accepts(tmp_path):
    """Cross-checks with SDKs that only verify: what our signer (the CLI) and our test signers
    produce, the providers' own verifiers accept too."""
    import subprocess
    from paddle_billing.Notifications import PaddleSignature, Secret
    from sendgrid.helpers.eventwebhook import EventWebhook

    from harness import CLI
    from signers import _p256_public, _private_key, _sendgrid

    body = '{"notification_id":"ntf_1","event_type":"transaction.completed"}'
    out = subprocess.run([str(CLI), "sign", "--provider", "paddle", "--secret", "pdl_ntfset_secret", "--body", body],
                         capture_output=True, text=True, check=True).stdout
    header = out.split(": ", 1)[1].strip()
    assert PaddleSignature().verify(header, body, Secret("pdl_ntfset_secret"))
    assert not PaddleSignature().verify(header, body + " ", Secret("pdl_ntfset_secret"))

    from square.utils.webhooks_helper import verify_signature as square_verify

    config = tmp_path / "square.json"
    url = "https://hooks.example.com/webhooks/square"
    config.write_text(json.dumps({"policies": [{"name": "sq", "match": {"path_prefix": "/"}, "provider": "square",
                                                "signed_url": url, "secrets": [{"inline": "sq-key"}]}]}))
    body = '{"event_id":"e1","type":"payment.updated"}'
    out = subprocess.run([str(CLI), "sign", "--config", str(config), "--policy", "sq", "--body", body],
                         capture_output=True, text=True, check=True).stdout
    header = out.split(": ", 1)[1].strip()
    assert square_verify(request_body=body, signature_header=header, signature_key="sq-key", notification_url=url)
    assert not square_verify(request_body=body, signature_header=header, signature_key="sq-key",
                             notification_url=url + "x")

    private = _private_key("sdk-cross-check")
    body, headers = _sendgrid(private, {"event": "delivered"}, int(time.time()), "sg_1")
    hook = EventWebhook()
    key = hook.convert_public_key_to_ecdsa(_p256_public(private))
    assert hook.verify_signature(body.decode(), headers["x-twilio-email-event-webhook-signature"],
                                 headers["x-twilio-email-event-webhook-timestamp"], key)


# ---- Second catalog batch: `webhook-guard sign` for every HMAC preset, and the SDK checks. ----
CLI_SIGNED = ["paystack", "razorpay", "lemon-squeezy", "vercel", "woocommerce", "typeform", "sentry", "mux",
              "calendly", "meta"]


@pytest.mark.parametrize("preset", CLI_SIGNED)
def test_cli_signs_the_second_batch(catalog_stack, preset):
    import subprocess

    from harness import CLI

    secret = catalog_stack.catalog_secrets[preset]
    delivery = f"d_{uuid.uuid4().hex}"
    body = json.dumps({"id": delivery, "event_id": delivery, "signed_by": "webhook-guard sign"})

    def sign(with_secret):
        out = subprocess.run([str(CLI), "sign", "--provider", preset, "--secret-env", "WG_SECRET", "--body", body,
                              "--format", "json"], capture_output=True, text=True, timeout=30, check=True,
                             env={"PATH": "/usr/bin:/bin", "WG_SECRET": with_secret}).stdout
        return json.loads(out)

    path = f"/webhooks/catalog/{preset}"
    resp = catalog_stack.post(path, body.encode(), sign("not-" + secret))
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_signature", resp.text
    headers = sign(secret)
    resp = catalog_stack.post(path, body.encode(), headers)
    assert resp.status_code == 200, (headers, resp.text)
    assert catalog_stack.post(path, body.encode(), headers).status_code == 409


def test_second_batch_sdks_verify_what_we_sign():
    """Razorpay's and Telnyx's SDKs only verify: they accept what `webhook-guard sign` and the test
    signers produce, and reject it once a byte changes."""
    import subprocess

    from razorpay import Utility
    from razorpay.errors import SignatureVerificationError
    from telnyx.lib.webhook_verification import WebhookVerificationError, verify_webhook_signature

    from harness import CLI
    from signers import _private_key, _telnyx

    body = '{"entity":"event","account_id":"acc_1","event":"payment.captured","payload":{}}'
    out = subprocess.run([str(CLI), "sign", "--provider", "razorpay", "--secret-env", "WG_SECRET", "--body", body,
                          "--format", "json"], capture_output=True, text=True, timeout=30, check=True,
                         env={"PATH": "/usr/bin:/bin", "WG_SECRET": "rzp-webhook-secret"}).stdout
    sig = json.loads(out)["x-razorpay-signature"]
    assert Utility(None).verify_webhook_signature(body, sig, "rzp-webhook-secret")
    with pytest.raises(SignatureVerificationError):
        Utility(None).verify_webhook_signature(body + " ", sig, "rzp-webhook-secret")
    with pytest.raises(SignatureVerificationError):
        Utility(None).verify_webhook_signature(body, sig, "another-secret")

    private = _private_key("telnyx-sdk-cross-check")
    public = CATALOG_PUBLIC["telnyx"](private)
    body, headers = _telnyx(private, {"event_type": "message.received"}, int(time.time()), "tx_1")
    verify_webhook_signature(body.decode(), headers, public)
    with pytest.raises(WebhookVerificationError):
        verify_webhook_signature(body.decode() + " ", headers, public)
    other = CATALOG_PUBLIC["telnyx"](_private_key("another key"))
    with pytest.raises(WebhookVerificationError):
        verify_webhook_signature(body.decode(), headers, other)


def _cli_sign(preset: str, secret: str, body: str) -> dict[str, str]:
    import subprocess

    from harness import CLI

    out = subprocess.run([str(CLI), "sign", "--provider", preset, "--secret-env", "WG_SECRET", "--body", body,
                          "--format", "json"], capture_output=True, text=True, timeout=30, check=True,
                         env={"PATH": "/usr/bin:/bin", "WG_SECRET": secret}).stdout
    assert secret not in out
    return json.loads(out)


def test_mux_sdk_verifies_what_we_sign(catalog_stack):
    """Mux's SDK (@mux/mux-node, which only verifies) accepts the header `webhook-guard sign`
    prints, also as the second of two v1 entries, and rejects it for a changed body, another
    secret or a timestamp moved by one second; the filter agrees through Envoy."""
    from signers import node_sdk

    secret = catalog_stack.catalog_secrets["mux"]
    path = "/webhooks/catalog/mux"
    body = json.dumps({"type": "video.asset.ready", "id": str(uuid.uuid4()), "data": {"id": "a1"}, "attempts": []})
    header = _cli_sign("mux", secret, body)["mux-signature"]
    t, v1 = header.split(",")
    assert node_sdk("mux-verify", body=body, header=header, secret=secret) == {"ok": True}
    both = f"{t},v1={'0' * 64},{v1}"
    assert node_sdk("mux-verify", body=body, header=both, secret=secret) == {"ok": True}
    for changed in [dict(body=body + " ", header=header, secret=secret),
                    dict(body=body, header=header, secret="not-" + secret),
                    dict(body=body, header=f"t={int(t[2:]) + 1},{v1}", secret=secret)]:
        verdict = node_sdk("mux-verify", **changed)
        assert verdict["ok"] is False and "No signatures found matching" in verdict["error"], verdict
    resp = catalog_stack.post(path, body.encode(), {"mux-signature": both})
    assert resp.status_code == 200, resp.text
    assert catalog_stack.post(path, body.encode(), {"mux-signature": header}).json() == {
        "error": "replayed", "policy": "mux"}
    resp = catalog_stack.post(path, (body + " ").encode(), {"mux-signature": header})
    assert resp.json()["error"] == "invalid_signature"


def test_meta_sdk_and_cli_sign_alike(catalog_stack):
    """Meta's WhatsApp SDK (npm `whatsapp`, generateXHub256Sig) and `webhook-guard sign
    --provider meta` give the same X-Hub-Signature-256 for a WhatsApp notification, non-ASCII
    text included; the filter accepts it once, then a replay, and refuses a changed body. (The
    catalog matrix sends every Meta delivery signed by the SDK.)"""
    from signers import node_sdk

    secret = catalog_stack.catalog_secrets["meta"]
    path = "/webhooks/catalog/meta"
    message = {"from": "16315551181", "id": f"wamid.{uuid.uuid4().hex}", "type": "text", "text": {"body": "olá ✓"}}
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [
        {"field": "messages", "value": {"messaging_product": "whatsapp", "messages": [message]}}]}]},
        ensure_ascii=False)
    sdk = "sha256=" + node_sdk("meta-sign", body=body, secret=secret)["signature"]
    assert _cli_sign("meta", secret, body) == {"x-hub-signature-256": sdk}
    headers = {"x-hub-signature-256": sdk, "content-type": "application/json"}
    resp = catalog_stack.post(path, body.encode(), headers)
    assert resp.status_code == 200, resp.text
    assert catalog_stack.post(path, body.encode(), headers).json() == {"error": "replayed", "policy": "meta"}
    assert catalog_stack.post(path, body.replace("olá", "ola").encode(), headers).json()["error"] == \
        "invalid_signature"


def test_paystack_cli_ping_goes_through_envoy(catalog_stack):
    """Paystack's own CLI (@paystack-oss/dev-cli, `paystack webhook ping`) signs its sample
    charge.success event (HMAC-SHA512 hex, x-paystack-signature) and POSTs it: through Envoy the
    filter answers 401 when the CLI holds another secret key, 200 under the policy's key (the
    backend gets the body the CLI signed), then 409 for the same ping again."""
    from signers import node_sdk

    secret = catalog_stack.catalog_secrets["paystack"]
    url = catalog_stack.envoy.url + "/webhooks/catalog/paystack"

    def ping(key):
        return node_sdk("paystack-ping", url=url, secret=key, event="charge.success")

    def reached(body):
        digest = hashlib.sha256(body.encode()).hexdigest()
        return sum(1 for e in catalog_stack.backend.events() if e["body_sha256"] == digest)

    wrong = ping("sk_test_" + uuid.uuid4().hex)
    assert wrong["status"] == 401
    assert reached(wrong["body"]) == 0
    first = ping(secret)
    assert first["status"] == 200
    assert json.loads(first["body"])["event"] == "charge.success"
    assert reached(first["body"]) == 1
    assert ping(secret)["status"] == 409
    assert reached(first["body"]) == 1


def test_meta_subscription_handshake_is_answered_by_the_filter(catalog_stack):
    """Meta's GET hub.mode=subscribe: the filter compares hub.verify_token with the configured
    token and echoes hub.challenge; deliveries on the same policy are still verified."""
    import requests

    def get(query):
        return requests.get(catalog_stack.envoy.url + "/webhooks/challenge/meta?" + query, timeout=10)

    before = len(catalog_stack.backend.events())
    resp = get(f"hub.mode=subscribe&hub.verify_token={META_VERIFY_TOKEN}&hub.challenge=1158201444")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "text/plain"
    assert resp.text == "1158201444"
    wrong = get("hub.mode=subscribe&hub.verify_token=not-the-token&hub.challenge=1158201444")
    assert (wrong.status_code, wrong.json()) == (401, {"error": "invalid_signature", "policy": "meta-challenge"})
    assert get("hub.mode=subscribe&hub.challenge=1").json()["error"] == "missing_signature"
    bad = get(f"hub.mode=subscribe&hub.verify_token={META_VERIFY_TOKEN}&hub.challenge=%3Cb%3Ehi%3C%2Fb%3E")
    assert (bad.status_code, bad.json()["error"]) == (400, "malformed_signature")
    assert "<b>" not in bad.text
    assert get("hub.mode=unsubscribe").status_code == 405
    assert len(catalog_stack.backend.events()) == before, "answered by Envoy"
    stats = catalog_stack.envoy.stats()
    assert stats["webhook_guard.policy.meta-challenge.challenges_answered"] == 1
    # The token is never logged (it travels in the query).
    assert META_VERIFY_TOKEN not in json.dumps(catalog_stack.envoy.rejection_logs())
    # Deliveries on the handshake policy are verified as usual.
    body, headers = CATALOG["meta"][0](catalog_stack.catalog_secrets["meta"], {"id": uuid.uuid4().hex}, 0, "")
    assert catalog_stack.post("/webhooks/challenge/meta", body, headers).json()["status"] == "ok"
    body, headers = CATALOG["meta"][0]("wrong", {"id": uuid.uuid4().hex}, 0, "")
    assert catalog_stack.post("/webhooks/challenge/meta", body, headers).status_code == 401


def test_hubspot_cli_and_sdk_agree(catalog_stack, tmp_path):
    """`webhook-guard sign` for a HubSpot policy: the filter accepts it through Envoy, and
    hubspot-api-client's Signature.is_valid (v3) accepts the same signature for the full URL."""
    import subprocess

    from hubspot.utils.signature import Signature

    from harness import CLI
    from signers import HUBSPOT_ORIGIN

    secret = catalog_stack.catalog_secrets["hubspot"]
    config = tmp_path / "hubspot.json"
    config.write_text(json.dumps({"policies": [{"name": "hs", "match": {"path_prefix": "/"}, "provider": "hubspot",
                                                "public_origin": HUBSPOT_ORIGIN,
                                                "secrets": [{"env": "WG_SECRET"}]}]}))
    body = json.dumps([{"eventId": uuid.uuid4().int % 10**9, "subscriptionType": "contact.creation"}])
    path = "/webhooks/catalog/hubspot"
    out = subprocess.run([str(CLI), "sign", "--config", str(config), "--policy", "hs", "--body", body, "--path", path,
                          "--format", "json"], capture_output=True, text=True, timeout=30, check=True,
                         env={"PATH": "/usr/bin:/bin", "WG_SECRET": secret}).stdout
    headers = json.loads(out)
    sig, stamp = headers["x-hubspot-signature-v3"], headers["x-hubspot-request-timestamp"]
    assert Signature.is_valid(sig, secret, body, HUBSPOT_ORIGIN + path, "POST", "v3", stamp)
    assert not Signature.is_valid(sig, secret, body + " ", HUBSPOT_ORIGIN + path, "POST", "v3", stamp)
    assert not Signature.is_valid(sig, secret, body, HUBSPOT_ORIGIN + path + "x", "POST", "v3", stamp)
    resp = catalog_stack.post(path, body.encode(), headers)
    assert resp.status_code == 200, resp.text
    assert catalog_stack.post(path, body.encode(), headers).status_code == 409


def test_mailgun_cli_and_sdk_agree(catalog_stack):
    """`webhook-guard sign --provider mailgun` prints the body to post (the signature block around
    the event data). The mailgun SDK's SecurityGuard.verify_webhook (default 900 s window) accepts
    its block and rejects another token, timestamp or key; the filter accepts it through Envoy once
    and answers the replay, and accepts the same kind of block sent as form fields."""
    import subprocess
    from urllib.parse import urlencode

    from mailgun.security import SecurityGuard

    from harness import CLI

    key = catalog_stack.catalog_secrets["mailgun"]
    path = "/webhooks/catalog/mailgun"

    def cli_body(token, event):
        out = subprocess.run([str(CLI), "sign", "--provider", "mailgun", "--secret-env", "WG_SECRET", "--id", token,
                              "--body", json.dumps(event)], capture_output=True, text=True, timeout=30, check=True,
                             env={"PATH": "/usr/bin:/bin", "WG_SECRET": key}).stdout
        assert key not in out
        return json.loads(out)

    event = {"id": uuid.uuid4().hex, "event": "delivered", "recipient": "alice@example.com"}
    doc = cli_body(uuid.uuid4().hex[:50], event)
    assert doc["event-data"] == event
    block = doc["signature"]
    assert SecurityGuard.verify_webhook(key, block["token"], block["timestamp"], block["signature"])
    assert not SecurityGuard.verify_webhook(key, block["token"][:-1] + "x", block["timestamp"], block["signature"])
    assert not SecurityGuard.verify_webhook(key, block["token"], str(int(block["timestamp"]) - 1),
                                            block["signature"])
    assert not SecurityGuard.verify_webhook("not-" + key, block["token"], block["timestamp"], block["signature"])
    body = json.dumps(doc).encode()
    resp = catalog_stack.post(path, body, {"content-type": "application/json"})
    assert resp.status_code == 200, resp.text
    resp = catalog_stack.post(path, body, {"content-type": "application/json"})
    assert resp.json() == {"error": "replayed", "policy": "mailgun"}

    # Legacy webhooks and forwarded routes: the same three fields, form-encoded.
    block = cli_body(uuid.uuid4().hex[:50], event)["signature"]
    assert SecurityGuard.verify_webhook(key, block["token"], block["timestamp"], block["signature"])
    form = urlencode({**block, "event": "delivered", "recipient": "alice@example.com"}).encode()
    form_ct = {"content-type": "application/x-www-form-urlencoded"}
    assert catalog_stack.post(path, form, form_ct).status_code == 200
    assert catalog_stack.post(path, form, form_ct).json()["error"] == "replayed"
    assert catalog_stack.post(path, form + b"&token=other", form_ct).json()["error"] == "malformed_signature"


def test_adyen_cli_and_sdk_agree(catalog_stack):
    """`webhook-guard sign --provider adyen` signs every item of a notification; the Adyen SDK's
    is_valid_hmac_notification accepts each item and rejects a changed amount. Through Envoy a
    notification of one item is accepted once, then a replay; a batch is refused whole (the store
    claims one key per request: a batch would let a delivered item in again next to another); an
    item with a changed signed field, or signed with another key, is invalid_signature."""
    import subprocess

    from Adyen.util import generate_notification_sig, is_valid_hmac_notification

    from harness import CLI

    key = catalog_stack.catalog_secrets["adyen"]
    path = "/webhooks/catalog/adyen"
    ct = {"content-type": "application/json"}

    def item(psp, ref, event="AUTHORISATION", value=1130):
        return {"NotificationRequestItem": {"pspReference": psp, "merchantAccountCode": "TestMerchant",
                                            "merchantReference": ref, "amount": {"value": value, "currency": "EUR"},
                                            "eventCode": event, "success": "true", "additionalData": {}}}

    def note(*items):
        return json.dumps({"live": "false", "notificationItems": list(items)}).encode()

    psp = str(uuid.uuid4().int)[:16]
    notification = {"live": "false", "notificationItems": [item(psp, "INV:42"), item(psp, "INV:42", "CAPTURE")]}
    out = subprocess.run([str(CLI), "sign", "--provider", "adyen", "--secret-env", "WG_SECRET",
                          "--body", json.dumps(notification)], capture_output=True, text=True, timeout=30, check=True,
                         env={"PATH": "/usr/bin:/bin", "WG_SECRET": key}).stdout
    assert key not in out
    signed = json.loads(out)
    for it in signed["notificationItems"]:
        assert is_valid_hmac_notification(it["NotificationRequestItem"], key)
        changed = json.loads(json.dumps(it["NotificationRequestItem"]))
        changed["amount"]["value"] = 1131
        assert not is_valid_hmac_notification(changed, key)
    before = len(catalog_stack.backend.events())
    batch = catalog_stack.post(path, json.dumps(signed).encode(), ct)
    assert (batch.status_code, batch.json()["error"]) == (400, "malformed_signature")
    assert len(catalog_stack.backend.events()) == before
    first, second = signed["notificationItems"]
    for one in (first, second):
        resp = catalog_stack.post(path, note(one), ct)
        assert resp.status_code == 200, resp.text
        assert catalog_stack.post(path, note(one), ct).json() == {"error": "replayed", "policy": "adyen"}

    tampered = json.loads(json.dumps(second))
    tampered["NotificationRequestItem"]["amount"]["value"] = 1
    assert catalog_stack.post(path, note(tampered), ct).json()["error"] == "invalid_signature"
    other = item(str(uuid.uuid4().int)[:16], "x")
    other["NotificationRequestItem"]["additionalData"]["hmacSignature"] = generate_notification_sig(
        other["NotificationRequestItem"], "AB" * 32).decode()
    assert catalog_stack.post(path, note(other), ct).json()["error"] == "invalid_signature"


def test_vonage_cli_and_sdk_agree(catalog_stack):
    """`webhook-guard sign --provider vonage` prints a bearer JWT that the vonage SDK's
    verify_signature accepts under the signature secret (and refuses under another), whose
    payload_hash is the body's SHA-256. Through Envoy it is accepted once, then a replay (same
    jti); the same claims under `alg: none`, or a token whose body hash is another body's, are
    refused."""
    import base64
    import subprocess

    import jwt
    from vonage_jwt import verify_signature

    from harness import CLI

    secret = catalog_stack.catalog_secrets["vonage"]
    path = "/webhooks/catalog/vonage"
    body = json.dumps({"message_uuid": uuid.uuid4().hex, "status": "delivered"})
    jti = str(uuid.uuid4())
    out = subprocess.run([str(CLI), "sign", "--provider", "vonage", "--secret-env", "WG_SECRET", "--id", jti,
                          "--body", body], capture_output=True, text=True, timeout=30, check=True,
                         env={"PATH": "/usr/bin:/bin", "WG_SECRET": secret}).stdout
    assert secret not in out
    name, value = out.strip().split(": ", 1)
    assert name == "authorization" and value.startswith("Bearer ")
    token = value.removeprefix("Bearer ")
    assert verify_signature(token, secret)
    assert not verify_signature(token, secret + "x")
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["jti"] == jti and claims["payload_hash"] == hashlib.sha256(body.encode()).hexdigest()
    assert abs(claims["iat"] - time.time()) < 60
    ct = {"content-type": "application/json"}
    resp = catalog_stack.post(path, body.encode(), {**ct, "authorization": value})
    assert resp.status_code == 200, resp.text
    assert catalog_stack.post(path, body.encode(), {**ct, "authorization": value}).json() == {
        "error": "replayed", "policy": "vonage"}

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    fresh = {**claims, "jti": str(uuid.uuid4()), "iat": int(time.time())}
    none_header = b64(b'{"alg":"none","typ":"JWT"}')
    unsigned = f"{none_header}.{b64(json.dumps(fresh).encode())}."
    resp = catalog_stack.post(path, body.encode(), {**ct, "authorization": f"Bearer {unsigned}"})
    assert resp.status_code == 400 and resp.json()["error"] == "malformed_signature"
    # HS512 under the same secret: another algorithm, refused before any MAC is computed.
    other_alg = jwt.encode(fresh, secret, algorithm="HS512")
    resp = catalog_stack.post(path, body.encode(), {**ct, "authorization": f"Bearer {other_alg}"})
    assert resp.json()["error"] == "malformed_signature"
    # A valid token for another body: the MAC verifies, the payload hash does not.
    moved = jwt.encode({**fresh, "payload_hash": hashlib.sha256(b"{}").hexdigest()}, secret, algorithm="HS256")
    resp = catalog_stack.post(path, body.encode(), {**ct, "authorization": f"Bearer {moved}"})
    assert resp.status_code == 401 and resp.json()["error"] == "invalid_signature"


def test_plivo_cli_and_sdk_agree(catalog_stack, tmp_path):
    """`webhook-guard sign` (a plivo policy) signs a form body, a path with a query and a nonce;
    the plivo SDK's validate_v3_signature accepts it (and refuses it under another token).
    Through Envoy it is accepted once, then a replay (same nonce); another query value, a
    repeated form name or a JSON body is invalid_signature."""
    import subprocess

    from plivo.utils.signature_v3 import validate_v3_signature

    from harness import CLI
    from signers import PLIVO_ORIGIN

    token = catalog_stack.catalog_secrets["plivo"]
    config = tmp_path / "plivo.json"
    config.write_text(json.dumps({"policies": [{"name": "plivo", "match": {"path_prefix": "/webhooks/catalog/plivo"},
                                                "provider": "plivo", "public_origin": PLIVO_ORIGIN,
                                                "secrets": [{"env": "WG_SECRET"}]}]}))
    path = "/webhooks/catalog/plivo/cb?b=2&a=x+y&a=1"
    body = "To=%2B14155550100&From=a+b&CallUUID=" + uuid.uuid4().hex
    nonce = str(uuid.uuid4().int)[:20]
    out = subprocess.run([str(CLI), "sign", "--config", str(config), "--policy", "plivo", "--path", path, "--id", nonce,
                          "--body", body], capture_output=True, text=True, timeout=30, check=True,
                         env={"PATH": "/usr/bin:/bin", "WG_SECRET": token}).stdout
    assert token not in out
    headers = dict(line.split(": ", 1) for line in out.strip().splitlines())
    assert headers["x-plivo-signature-v3-nonce"] == nonce
    sig = headers["x-plivo-signature-v3"]
    params = {"To": "+14155550100", "From": "a b", "CallUUID": body.rsplit("=", 1)[1]}
    assert validate_v3_signature("POST", PLIVO_ORIGIN + path, nonce, token, sig, params=dict(params))
    assert not validate_v3_signature("POST", PLIVO_ORIGIN + path, nonce, token + "x", sig, params=dict(params))
    ct = {"content-type": "application/x-www-form-urlencoded"}
    resp = catalog_stack.post(path, body.encode(), {**ct, **headers})
    assert resp.status_code == 200, resp.text
    assert catalog_stack.post(path, body.encode(), {**ct, **headers}).json() == {"error": "replayed", "policy": "plivo"}
    fresh = {**headers, "x-plivo-signature-v3-nonce": "1" + nonce}
    assert catalog_stack.post(path, body.encode(), {**ct, **fresh}).json()["error"] == "invalid_signature"
    assert catalog_stack.post(path.replace("b=2", "b=3"), body.encode(), {**ct, **headers}).json()["error"] == \
        "invalid_signature"
    assert catalog_stack.post(path, (body + "&To=x").encode(), {**ct, **headers}).json()["error"] == "invalid_signature"
    resp = catalog_stack.post(path, b'{"To":"+14155550100"}', {**headers, "content-type": "application/json"})
    assert resp.json()["error"] == "invalid_signature"

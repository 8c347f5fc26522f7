"""Independent signers for the demo and the end-to-end tests: the providers' own Python SDKs where they
exist (stripe, standardwebhooks, slack_sdk), Python's hmac where the provider documents only
the algorithm (GitHub, Shopify, the custom scheme)."""
from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import pathlib
import subprocess
import tempfile
import time
from urllib.parse import quote_plus

import stripe
import standardwebhooks
from slack_sdk.signature import SignatureVerifier


def github(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={sig}", "X-GitHub-Delivery": delivery, "X-GitHub-Event": "push",
            "Content-Type": "application/json"}


def stripe_(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=ts)
    return {"Stripe-Signature": header, "Content-Type": "application/json"}


def slack(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    sig = SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=body)
    return {"X-Slack-Signature": sig, "X-Slack-Request-Timestamp": str(ts), "Content-Type": "application/json"}


def shopify(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    sig = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {"X-Shopify-Hmac-Sha256": sig, "X-Shopify-Webhook-Id": delivery, "X-Shopify-Topic": "orders/create",
            "Content-Type": "application/json"}


def standard(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    when = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    sig = standardwebhooks.Webhook(secret).sign(delivery, when, body.decode())
    return {"webhook-id": delivery, "webhook-timestamp": str(ts), "webhook-signature": sig,
            "Content-Type": "application/json"}


def custom(secret: str, body: bytes, ts: int, delivery: str) -> dict[str, str]:
    # The seeds' scheme: hex HMAC-SHA256 over "{timestamp}.{body}".
    sig = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Webhook-Signature": sig, "X-Webhook-Timestamp": str(ts), "X-Webhook-Id": delivery,
            "Content-Type": "application/json"}


# route path, signer, env var of the current secret, whether the scheme signs a timestamp
PRESETS = {
    "github": ("/webhooks/github", github, "GITHUB_WEBHOOK_SECRET", False),
    "stripe": ("/webhooks/stripe", stripe_, "STRIPE_WEBHOOK_SECRET", True),
    "slack": ("/webhooks/slack", slack, "SLACK_SIGNING_SECRET", True),
    "shopify": ("/webhooks/shopify", shopify, "SHOPIFY_WEBHOOK_SECRET", False),
    "standard": ("/webhooks/standard", standard, "STANDARD_WEBHOOK_SECRET", True),
    "custom": ("/webhooks/custom", custom, "CUSTOM_WEBHOOK_SECRET", True),
}

# Header names that carry the signature (removed for the "missing" scenario).
SIGNATURE_HEADERS = {"X-Hub-Signature-256", "Stripe-Signature", "X-Slack-Signature", "X-Shopify-Hmac-Sha256",
                     "webhook-signature", "X-Webhook-Signature"}


def fresh_secrets() -> dict[str, str]:
    """Random current and previous secrets for every demo policy, in the env-var names envoy.yaml lists."""
    import secrets as rnd
    out = {}
    for name, (_, _, var, _) in PRESETS.items():
        for suffix in ("", "_PREVIOUS"):
            if name == "standard":
                value = "whsec_" + base64.b64encode(rnd.token_bytes(32)).decode()
            elif name == "stripe":
                value = "whsec_" + rnd.token_hex(16)
            else:
                value = rnd.token_hex(16)
            out[var + suffix] = value
    # The envelope route (envoy/webhook-guard.json): a signing secret and AES-256 keys.
    for suffix in ("", "_PREVIOUS"):
        out["ENVELOPE_WEBHOOK_SECRET" + suffix] = rnd.token_hex(16)
        out["ENVELOPE_ENCRYPTION_KEY_SECRET" + suffix] = base64.b64encode(rnd.token_bytes(32)).decode()
    return out


# --- The rest of the provider catalog: each signs a body object (some schemes put the
# timestamp or the dedup id in the body) and returns (body bytes, headers). Python's hmac,
# following each provider's documented algorithm (docs/providers.md).
def _hex(secret: str, msg: bytes, algo=hashlib.sha256) -> str:
    return hmac.new(secret.encode(), msg, algo).hexdigest()


NODE_SDK = pathlib.Path(__file__).resolve().parent.parent / "tests/node/sdk.js"


def node_sdk(command: str, **request) -> dict:
    """Runs a sender's own JavaScript package (tests/node, installed by scripts/setup.sh) through
    tests/node/sdk.js: one JSON object in, one out."""
    with tempfile.TemporaryDirectory() as cwd:  # Paystack's CLI keeps its state file (db.json) there
        out = subprocess.run(["node", str(NODE_SDK), command], input=json.dumps(request), capture_output=True,
                             text=True, timeout=60, cwd=cwd)
    if out.returncode != 0:
        raise RuntimeError(f"node sdk.js {command}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def _svix(secret, obj, ts, delivery):
    body = json.dumps(obj).encode()
    sig = standardwebhooks.Webhook(secret).sign(delivery, datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc),
                                                body.decode())
    return body, {"svix-id": delivery, "svix-timestamp": str(ts), "svix-signature": sig}


def _zoom(secret, obj, ts, delivery):
    body = json.dumps(obj).encode()
    return body, {"x-zm-signature": "v0=" + _hex(secret, f"v0:{ts}:".encode() + body),
                  "x-zm-request-timestamp": str(ts)}


def _paddle(secret, obj, ts, delivery):
    body = json.dumps({**obj, "notification_id": delivery}).encode()
    return body, {"paddle-signature": f"ts={ts};h1=" + _hex(secret, f"{ts}:".encode() + body)}


def _twitch(secret, obj, ts, delivery):
    body = json.dumps(obj).encode()
    stamp = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return body, {"twitch-eventsub-message-id": delivery, "twitch-eventsub-message-timestamp": stamp,
                  "twitch-eventsub-message-signature": "sha256=" + _hex(secret, delivery.encode() + stamp.encode() + body)}


def _pagerduty(secret, obj, ts, delivery):
    body = json.dumps({**obj, "event": {"id": delivery}}).encode()
    return body, {"x-pagerduty-signature": "v1=" + _hex(secret, body)}


def _linear(secret, obj, ts, delivery):
    body = json.dumps({**obj, "webhookTimestamp": ts * 1000}).encode()
    return body, {"linear-signature": _hex(secret, body), "linear-delivery": delivery}


def _intercom(secret, obj, ts, delivery):
    body = json.dumps({**obj, "id": delivery}).encode()
    return body, {"x-hub-signature": "sha1=" + _hex(secret, body, hashlib.sha1)}


def _hub256(secret, obj, ts, delivery):
    body = json.dumps(obj).encode()
    return body, {"x-hub-signature": "sha256=" + _hex(secret, body)}


def _gitlab(secret, obj, ts, delivery):
    return json.dumps(obj).encode(), {"x-gitlab-token": secret, "idempotency-key": delivery}


SQUARE_URL = "https://hooks.example.com/webhooks/square"


def _square(secret, obj, ts, delivery):
    body = json.dumps({**obj, "event_id": delivery}).encode()
    sig = base64.b64encode(hmac.new(secret.encode(), SQUARE_URL.encode() + body, hashlib.sha256).digest()).decode()
    return body, {"x-square-hmacsha256-signature": sig}


def _ed25519(private_hex: str):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex))


def _public(private_hex: str) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    return _ed25519(private_hex).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _discord(private_hex, obj, ts, delivery):
    body = json.dumps(obj).encode()
    sig = _ed25519(private_hex).sign(str(ts).encode() + body).hex()
    return body, {"x-signature-ed25519": sig, "x-signature-timestamp": str(ts)}


def _standard_v1a(private_hex, obj, ts, delivery):
    body = json.dumps(obj).encode()
    sig = _ed25519(private_hex).sign(f"{delivery}.{ts}.".encode() + body)
    return body, {"webhook-id": delivery, "webhook-timestamp": str(ts),
                  "webhook-signature": "v1a," + base64.b64encode(sig).decode()}


def _sendgrid(private_hex, obj, ts, delivery):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    body = json.dumps([{**obj, "sg_event_id": delivery}]).encode() + b"\r\n"
    key = ec.derive_private_key(int(private_hex, 16) % (2**255), ec.SECP256R1())
    sig = key.sign(str(ts).encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {"x-twilio-email-event-webhook-signature": base64.b64encode(sig).decode(),
                  "x-twilio-email-event-webhook-timestamp": str(ts)}


def _p256_public(private_hex: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    key = ec.derive_private_key(int(private_hex, 16) % (2**255), ec.SECP256R1())
    return base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def _private_key(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


TWILIO_ORIGIN = "https://hooks.example.com"


def _twilio(token, obj, ts, delivery):
    # Twilio's own SDK computes the signature over the URL it requested and the form params.
    from twilio.request_validator import RequestValidator
    params = {k: str(v) for k, v in {**obj, "MessageSid": delivery}.items()}
    body = "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in params.items()).encode()
    url = TWILIO_ORIGIN + "/webhooks/catalog/twilio"
    return body, {"x-twilio-signature": RequestValidator(token).compute_signature(url, params),
                  "content-type": "application/x-www-form-urlencoded"}


def _paystack(secret, obj, ts, delivery):
    body = json.dumps(obj).encode()
    return body, {"x-paystack-signature": _hex(secret, body, hashlib.sha512)}


def _razorpay(secret, obj, ts, delivery):
    # Razorpay's SDK only verifies: every signature made here must pass its check first.
    from razorpay import Utility
    body = json.dumps(obj).encode()
    sig = _hex(secret, body)
    assert Utility(None).verify_webhook_signature(body.decode(), sig, secret)
    return body, {"x-razorpay-signature": sig, "x-razorpay-event-id": delivery}


def _lemon_squeezy(secret, obj, ts, delivery):
    body = json.dumps({"meta": {"event_name": "order_created"}, "data": obj}).encode()
    return body, {"x-signature": _hex(secret, body), "x-event-name": "order_created"}


def _vercel(secret, obj, ts, delivery):
    body = json.dumps(obj).encode()
    return body, {"x-vercel-signature": _hex(secret, body, hashlib.sha1)}


def _woocommerce(secret, obj, ts, delivery):
    body = json.dumps(obj).encode()
    sig = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return body, {"x-wc-webhook-signature": sig, "x-wc-webhook-delivery-id": delivery, "x-wc-webhook-topic": "order.created"}


def _typeform(secret, obj, ts, delivery):
    body = json.dumps({**obj, "event_id": delivery, "event_type": "form_response"}).encode()
    sig = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return body, {"typeform-signature": "sha256=" + sig}


def _sentry(secret, obj, ts, delivery):
    body = json.dumps(obj).encode()
    # Sentry-Hook-Timestamp is sent but not signed.
    return body, {"sentry-hook-signature": _hex(secret, body), "sentry-hook-timestamp": str(ts),
                  "sentry-hook-resource": "issue", "request-id": delivery}


def _mux(secret, obj, ts, delivery):
    # Mux's SDK (@mux/mux-node) only verifies: every header made here passes its verifySignature
    # first (a stale one fails only its age check, after the signature matched).
    body = json.dumps({**obj, "id": delivery, "attempts": []}).encode()
    header = f"t={ts},v1=" + _hex(secret, f"{ts}.".encode() + body)
    verdict = node_sdk("mux-verify", body=body.decode(), header=header, secret=secret)
    assert verdict == {"ok": True} or (ts < time.time() - 300 and verdict["error"] == "Webhook timestamp is too old"), \
        verdict
    return body, {"mux-signature": header}


def _calendly(secret, obj, ts, delivery):
    body = json.dumps({"event": "invitee.created", "payload": obj}).encode()
    return body, {"calendly-webhook-signature": f"t={ts},v1=" + _hex(secret, f"{ts}.".encode() + body)}


def _meta(secret, obj, ts, delivery):
    # Meta's own WhatsApp Cloud API SDK (npm `whatsapp`) signs: generateXHub256Sig, the hex its
    # webhook listener expects after `sha256=`.
    body = json.dumps({"object": "whatsapp_business_account", "entry": [obj]}).encode()
    sig = node_sdk("meta-sign", body=body.decode(), secret=secret)["signature"]
    return body, {"x-hub-signature-256": "sha256=" + sig}


def _telnyx(private_hex, obj, ts, delivery):
    body = json.dumps({"data": {**obj, "id": delivery, "record_type": "event"}, "meta": {"attempt": 1}}).encode()
    sig = _ed25519(private_hex).sign(f"{ts}|".encode() + body)
    return body, {"telnyx-signature-ed25519": base64.b64encode(sig).decode(), "telnyx-timestamp": str(ts)}


HUBSPOT_ORIGIN = "https://hooks.example.com"


def _hubspot(secret, obj, ts, delivery):
    # HubSpot's own SDK signs: method + full URI + body + timestamp (ms), base64 HMAC-SHA256.
    from hubspot.utils.signature import Signature
    body = json.dumps([{**obj, "eventId": delivery, "attemptNumber": 0}]).encode()
    stamp = str(ts * 1000)
    sig = Signature.get_signature(secret, body.decode(), "v3", HUBSPOT_ORIGIN + "/webhooks/catalog/hubspot", "POST",
                                  stamp)
    return body, {"x-hubspot-signature-v3": sig, "x-hubspot-request-timestamp": stamp}


def _mailgun(key, obj, ts, delivery):
    # Mailgun signs timestamp + token (hex HMAC-SHA256) and puts the block next to the event
    # data, which is not signed. The `mailgun` SDK only verifies: each block made here passes
    # its SecurityGuard.verify_webhook first.
    from mailgun.security import SecurityGuard
    token = hashlib.sha256(delivery.encode()).hexdigest()[:50]
    sig = _hex(key, f"{ts}{token}".encode())
    assert SecurityGuard.verify_webhook(key, token, str(ts), sig, max_age_seconds=0)
    block = {"timestamp": str(ts), "token": token, "signature": sig}
    return json.dumps({"signature": block, "event-data": obj}).encode(), {"content-type": "application/json"}


def _adyen(key_hex, obj, ts, delivery):
    # Adyen's own SDK signs each NotificationRequestItem (generate_notification_sig: base64
    # HMAC-SHA256 under the hex-decoded key over eight of its fields). The rest of the item, here
    # `additionalData.event`, is not signed.
    from Adyen.util import generate_notification_sig
    psp = str(int(hashlib.sha256(delivery.encode()).hexdigest(), 16))[:16]
    item = {"pspReference": psp, "merchantAccountCode": "TestMerchant", "merchantReference": delivery,
            "amount": {"value": 1130, "currency": "EUR"}, "eventCode": "AUTHORISATION", "success": "true"}
    item["additionalData"] = {"event": obj, "hmacSignature": generate_notification_sig(item, key_hex).decode()}
    body = json.dumps({"live": "false", "notificationItems": [{"NotificationRequestItem": item}]}).encode()
    return body, {"content-type": "application/json"}


def _vonage(secret, obj, ts, delivery):
    # Vonage's signed webhooks: `Authorization: Bearer <JWT>`, HS256 under the signature secret,
    # claims iat (s), jti, iss and payload_hash (hex SHA-256 of the raw body). The `vonage` SDK
    # does not sign these (it only verifies): PyJWT, the library its verifier uses, signs, and
    # vonage_jwt.verify_signature accepts each token before it is sent.
    import jwt
    from vonage_jwt import verify_signature
    body = json.dumps({"message_uuid": delivery, "status": "delivered", "event": obj}).encode()
    claims = {"iat": ts, "jti": delivery, "iss": "Vonage", "payload_hash": hashlib.sha256(body).hexdigest(),
              "api_key": "abcd1234", "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}
    token = jwt.encode(claims, secret, algorithm="HS256")
    # The SDK verifies the very token sent, unless its iat is in the future (PyJWT, under the
    # SDK, refuses those as immature: the `future` scenario signs one on purpose).
    if ts <= time.time():
        assert verify_signature(token, secret)
    else:
        assert jwt.decode(token, secret, algorithms=["HS256"], options={"verify_iat": False})["jti"] == delivery
    return body, {"authorization": f"Bearer {token}", "content-type": "application/json"}


PLIVO_ORIGIN = "https://hooks.example.com"


def _plivo(token, obj, ts, delivery):
    # Plivo's own SDK signs (signature V3): construct_post_url builds the URL + sorted form
    # parameters, get_signature_v3 the base64 HMAC-SHA256 of `{url}.{nonce}` under the auth token.
    from urllib.parse import urlencode

    from plivo.utils.signature_v3 import construct_post_url, get_signature_v3, validate_v3_signature
    params = {k: str(v) for k, v in obj.items()}
    nonce = str(int(hashlib.sha256(delivery.encode()).hexdigest(), 16))[:20]
    url = PLIVO_ORIGIN + "/webhooks/catalog/plivo"
    base = construct_post_url(url, dict(params)).decode()
    sig = get_signature_v3(token.encode(), base, nonce.encode()).decode()
    assert validate_v3_signature("POST", url, nonce, token, sig, params=dict(params))
    return urlencode(params).encode(), {"x-plivo-signature-v3": sig, "x-plivo-signature-v3-nonce": nonce,
                                        "content-type": "application/x-www-form-urlencoded"}


def _hex_key(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest().upper()


# Policy settings a preset needs beyond its secret.
CATALOG_POLICY = {"square": {"signed_url": SQUARE_URL}, "twilio": {"public_origin": TWILIO_ORIGIN},
                  "hubspot": {"public_origin": HUBSPOT_ORIGIN}, "plivo": {"public_origin": PLIVO_ORIGIN}}
# Public-key presets: the signer holds the private key, the policy gets the public one.
CATALOG_PUBLIC = {
    "discord": lambda private_hex: _public(private_hex).hex(),
    "standard-webhooks-v1a": lambda private_hex: "whpk_" + base64.b64encode(_public(private_hex)).decode(),
    "sendgrid": _p256_public,
    "telnyx": lambda private_hex: base64.b64encode(_public(private_hex)).decode(),
}

# preset -> (signer, signs a timestamp, signature header, secret maker, replays rejected)
CATALOG = {
    "svix": (_svix, True, "svix-signature", lambda s: "whsec_" + base64.b64encode(s.encode().ljust(32, b"x")[:32]).decode(), True),
    "zoom": (_zoom, True, "x-zm-signature", str, True),
    "paddle": (_paddle, True, "paddle-signature", str, True),
    "twitch": (_twitch, True, "twitch-eventsub-message-signature", str, True),
    "pagerduty": (_pagerduty, False, "x-pagerduty-signature", str, True),
    "linear": (_linear, True, "linear-signature", str, True),
    "intercom": (_intercom, False, "x-hub-signature", str, True),
    "bitbucket": (_hub256, False, "x-hub-signature", str, True),
    "jira": (_hub256, False, "x-hub-signature", str, True),
    # GitLab's token authenticates the sender only: no replay protection is possible.
    "gitlab": (_gitlab, False, "x-gitlab-token", str, False),
    "square": (_square, False, "x-square-hmacsha256-signature", str, True),
    "discord": (_discord, True, "x-signature-ed25519", _private_key, True),
    "standard-webhooks-v1a": (_standard_v1a, True, "webhook-signature", _private_key, True),
    "sendgrid": (_sendgrid, True, "x-twilio-email-event-webhook-signature", _private_key, True),
    "twilio": (_twilio, False, "x-twilio-signature", str, True),
    "paystack": (_paystack, False, "x-paystack-signature", str, True),
    "razorpay": (_razorpay, False, "x-razorpay-signature", str, True),
    "lemon-squeezy": (_lemon_squeezy, False, "x-signature", str, True),
    "vercel": (_vercel, False, "x-vercel-signature", str, True),
    "woocommerce": (_woocommerce, False, "x-wc-webhook-signature", str, True),
    "typeform": (_typeform, False, "typeform-signature", str, True),
    "sentry": (_sentry, False, "sentry-hook-signature", str, True),
    "mux": (_mux, True, "mux-signature", str, True),
    "calendly": (_calendly, True, "calendly-webhook-signature", str, True),
    "meta": (_meta, False, "x-hub-signature-256", str, True),
    "telnyx": (_telnyx, True, "telnyx-signature-ed25519", _private_key, True),
    "hubspot": (_hubspot, True, "x-hubspot-signature-v3", str, True),
    # The signature block is the body's `signature` field, not a header.
    "mailgun": (_mailgun, True, "body:signature", str, True),
    # One signature per notification item, inside the body; the HMAC key is hex.
    "adyen": (_adyen, False, "body:notificationItems", _hex_key, True),
    # A bearer JWT: iat is the signed timestamp, jti the dedup key, payload_hash covers the body.
    "vonage": (_vonage, True, "authorization", lambda s: s.ljust(32, "v"), True),
    # The URL, its sorted form parameters and a signed nonce; nothing time-related is signed.
    "plivo": (_plivo, False, "x-plivo-signature-v3", str, True),
}

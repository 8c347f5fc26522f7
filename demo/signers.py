"""Independent signers for the demo and the end-to-end tests: the providers' own Python SDKs where they
exist (stripe, standardwebhooks, slack_sdk), Python's hmac where the provider documents only
the algorithm (GitHub, Shopify, the custom scheme)."""
from __future__ import annotations

import base64
import datetime
import hashlib
import hmac

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
    return out

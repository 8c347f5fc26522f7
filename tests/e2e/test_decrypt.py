"""Encrypted payloads opened in the filter (seed 003), in the real Envoy: the backend gets the
plaintext with a matching content-length and content-type and never the envelope; what cannot
be opened never reaches it, and is told apart by its reason code. Deliveries are made the way
the seed's sender makes them: AES-256-GCM from `cryptography`, then HMAC-SHA256 over
`{timestamp}.{json.dumps(envelope)}` in X-Webhook-Signature, the nonce repeated in
X-Encryption-Nonce."""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import requests

from harness import CLI, Backend, Envoy, Etcd, Stack
from test_http2 import h2_post

SIGNING = "envelope-signing-" + uuid.uuid4().hex
KEY, NEXT = os.urandom(32), os.urandom(32)
PATH = "/webhooks/encrypted"
NONCE_PATH = "/webhooks/sealed-nonce-header"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def policy(name: str, prefix: str, **decrypt) -> dict:
    return {"name": name, "match": {"path_prefix": prefix}, "provider": "custom",
            "custom": {"signature_header": "X-Webhook-Signature", "encoding": "hex",
                       "signed_template": "{timestamp}.{body}", "timestamp_header": "X-Webhook-Timestamp"},
            "secrets": [{"inline": SIGNING}],
            # The new key first; the one senders still use is accepted while listed.
            "decrypt": {"cipher": "aes-256-gcm", "keys": [{"inline": b64(NEXT)}, {"inline": b64(KEY)}],
                        **decrypt}}


@pytest.fixture(scope="module")
def stack(build):
    s = Stack({"default": "deny", "policies": [
        policy("enc", PATH),
        policy("enc-header", NONCE_PATH, nonce_header="X-Encryption-Nonce", ciphertext_field="data",
               content_type="application/vnd.demo+json"),
    ]}, {})
    yield s
    s.stop()


def seal(plaintext: bytes, key: bytes = KEY, field: str = "encrypted", nonce_in_body: bool = True,
         ts: int | None = None) -> tuple[bytes, dict]:
    """The seed's encrypt_payload + send_encrypted_webhook, byte for byte."""
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext, None)
    envelope = {field: b64(sealed)}
    if nonce_in_body:
        envelope["nonce"] = b64(nonce)
    body = json.dumps(envelope).encode()
    return body, sign(body, ts) | {"X-Encryption-Nonce": b64(nonce)}


def sign(body: bytes, ts: int | None = None) -> dict:
    stamp = str(ts or int(time.time()))
    mac = hmac.new(SIGNING.encode(), f"{stamp}.{body.decode()}".encode(), hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Webhook-Signature": mac, "X-Webhook-Timestamp": stamp}


def payload(size: int) -> bytes:
    head = json.dumps({"id": "evt_" + uuid.uuid4().hex, "card": "4242-secret-marker", "pad": ""})
    return head[:-2].encode() + b"x" * max(0, size - len(head)) + b'"}'


def arrivals(stack, body: bytes) -> list[dict]:
    digest = hashlib.sha256(body).hexdigest()
    return [e for e in stack.backend.events() if e["body_sha256"] == digest]


def reason(resp) -> str:
    return resp.json()["error"]


@pytest.mark.parametrize("size", [1024, 16 * 1024, 128 * 1024])
def test_the_backend_gets_the_plaintext_not_the_envelope(stack, size):
    plaintext = payload(size)
    body, headers = seal(plaintext)
    resp = stack.post(PATH, body, headers)
    assert resp.status_code == 200, resp.text
    got = arrivals(stack, plaintext)
    assert len(got) == 1
    assert got[0]["body_bytes"] == len(plaintext)
    assert got[0]["headers"]["Content-Type"] == "application/json"
    assert arrivals(stack, body) == [], "the envelope itself never reaches the backend"
    # A replay of the same signed envelope is stopped before anything is decrypted.
    again = stack.post(PATH, body, headers)
    assert (again.status_code, reason(again)) == (409, "replayed")
    assert len(arrivals(stack, plaintext)) == 1


def test_http2_with_trailers_forwards_the_plaintext_once(stack):
    plaintext = payload(40 * 1024)
    body, headers = seal(plaintext)
    chunks = [body[i:i + 7000] for i in range(0, len(body), 7000)]
    status, data = h2_post(stack.envoy.port, PATH, headers, chunks, {"x-checksum": "abc"})
    assert status == 200, data
    got = arrivals(stack, plaintext)
    assert [e["body_bytes"] for e in got] == [len(plaintext)]


def test_rotation_opens_with_the_listed_old_key_and_counts_it(stack):
    name = "webhook_guard.policy.enc.decrypted_secondary_key"
    before = stack.envoy.stats().get(name, 0)
    new = payload(300)
    body, headers = seal(new, key=NEXT)
    assert stack.post(PATH, body, headers).status_code == 200
    assert stack.envoy.stats().get(name, 0) == before, "the first key is not a secondary one"
    old = payload(300)
    body, headers = seal(old, key=KEY)
    assert stack.post(PATH, body, headers).status_code == 200
    assert stack.envoy.stats().get(name, 0) == before + 1
    assert len(arrivals(stack, new)) == len(arrivals(stack, old)) == 1


def test_a_key_this_proxy_lacks_is_decryption_failed_and_nothing_arrives(stack):
    plaintext = payload(500)
    body, headers = seal(plaintext, key=os.urandom(32))
    for _ in range(2):  # no claim is left behind: the same delivery is judged the same way
        resp = stack.post(PATH, body, headers)
        assert (resp.status_code, reason(resp)) == (400, "decryption_failed"), resp.text
    assert arrivals(stack, plaintext) == [] and arrivals(stack, body) == []
    # Neither the key nor the plaintext is in any reply or log line.
    log = stack.envoy.log()
    assert b64(KEY) not in log and b64(NEXT) not in log and "4242-secret-marker" not in log
    assert "decryption_failed" in log


def test_a_signed_body_that_is_no_envelope_is_malformed_payload(stack):
    body = json.dumps({"id": uuid.uuid4().hex, "plain": True}).encode()
    resp = stack.post(PATH, body, sign(body))
    assert (resp.status_code, reason(resp)) == (400, "malformed_payload")
    assert arrivals(stack, body) == []


def test_forged_or_stale_envelopes_are_rejected_before_decryption(stack):
    plaintext = payload(400)
    body, headers = seal(plaintext)
    forged = body.replace(b'"nonce"', b'"nonce" ')
    resp = stack.post(PATH, forged, headers)
    assert (resp.status_code, reason(resp)) == (401, "invalid_signature")
    body, headers = seal(plaintext, ts=int(time.time()) - 3600)
    resp = stack.post(PATH, body, headers)
    assert (resp.status_code, reason(resp)) == (401, "timestamp_out_of_window")
    assert arrivals(stack, plaintext) == []


def test_a_failed_backend_attempt_lets_the_retry_through_decrypted(stack):
    plaintext = payload(700)
    body, headers = seal(plaintext)
    stack.backend.fail_next(1)
    assert stack.post(PATH, body, headers).status_code == 500
    retry = stack.post(PATH, body, headers)
    assert retry.status_code == 200, retry.text
    assert [e["status"] for e in arrivals(stack, plaintext)] == [500, 200]


def test_the_nonce_can_come_from_a_header(stack):
    plaintext = payload(900)
    body, headers = seal(plaintext, field="data", nonce_in_body=False)
    resp = stack.post(NONCE_PATH, body, headers)
    assert resp.status_code == 200, resp.text
    (got,) = arrivals(stack, plaintext)
    assert got["headers"]["Content-Type"] == "application/vnd.demo+json"
    # Without it there is nothing to open the envelope with.
    body, headers = seal(payload(900), field="data", nonce_in_body=False)
    del headers["X-Encryption-Nonce"]
    resp = stack.post(NONCE_PATH, body, headers)
    assert (resp.status_code, reason(resp)) == (400, "malformed_payload")


def test_with_the_etcd_store_the_plaintext_is_forwarded_after_the_remote_claim(build, tmp_path):
    """The claim waits on an etcd round trip: the body is replaced from the callout's answer,
    not from a body callback."""
    etcd = Etcd(tmp_path)
    backend = Backend(tmp_path)
    enc = policy("enc", PATH)
    enc["store"] = {"type": "etcd", "cluster": "etcd", "prefix": "decrypt-" + uuid.uuid4().hex}
    envoy = None
    try:
        envoy = Envoy(tmp_path, backend.port, {"default": "deny", "policies": [enc]}, {}, etcd_port=etcd.port)
        plaintext = payload(20 * 1024)
        body, headers = seal(plaintext)
        url = envoy.url + PATH
        resp = requests.post(url, data=body, headers=headers, timeout=10)
        assert resp.status_code == 200, resp.text
        digest = hashlib.sha256(plaintext).hexdigest()
        got = [e for e in backend.events() if e["body_sha256"] == digest]
        assert [e["body_bytes"] for e in got] == [len(plaintext)]
        again = requests.post(url, data=body, headers=headers, timeout=10)
        assert (again.status_code, reason(again)) == (409, "replayed")
        wrong, headers = seal(payload(100), key=os.urandom(32))
        resp = requests.post(url, data=wrong, headers=headers, timeout=10)
        assert (resp.status_code, reason(resp)) == (400, "decryption_failed")
    finally:
        if envoy:
            envoy.stop()
        backend.stop()
        etcd.stop()


def test_the_cli_encrypts_and_signs_what_the_filter_opens(stack, tmp_path):
    config = tmp_path / "plugin.json"
    config.write_text(json.dumps({"policies": [policy("enc", PATH), policy(
        "enc-header", NONCE_PATH, nonce_header="X-Encryption-Nonce", ciphertext_field="data")]}))
    for name, path in [("enc", PATH), ("enc-header", NONCE_PATH)]:
        plaintext = payload(2000)
        (tmp_path / "plain.json").write_bytes(plaintext)
        out = subprocess.run(
            [str(CLI), "sign", "--config", str(config), "--policy", name, "--body-file", str(tmp_path / "plain.json"),
             "--encrypt", "--out", str(tmp_path / "envelope.json"), "--format", "json"],
            capture_output=True, text=True, timeout=30, check=True)
        headers = json.loads(out.stdout)
        envelope = (tmp_path / "envelope.json").read_bytes()
        assert b"secret-marker" not in envelope
        resp = stack.post(path, envelope, headers)
        assert resp.status_code == 200, resp.text
        assert len(arrivals(stack, plaintext)) == 1

"""Lark / Feishu event subscriptions with an Encrypt Key, in the real Envoy. Deliveries are made
here independently of the filter (AES-256-CBC from `cryptography`, the signature with hashlib),
and Lark's own SDK (`lark-oapi`, its EventDispatcherHandler) judges what `webhook-guard sign`
produces and answers the same url_verification the filter answers. Every check looks at what
reached the backend, not only at the status."""
import base64
import hashlib
import json
import os
import struct
import subprocess
import time
import uuid

import lark_oapi as lark
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from harness import CLI, Stack

KEY = "lark-encrypt-" + uuid.uuid4().hex
NEXT = "lark-encrypt-next-" + uuid.uuid4().hex
TOKEN = "lark-verification-" + uuid.uuid4().hex
PATH = "/webhooks/lark"
POLICY = {"name": "lark", "match": {"path_prefix": PATH}, "provider": "lark",
          # The new key first; the one Lark still uses is accepted while listed.
          "secrets": [{"inline": NEXT}, {"inline": KEY}],
          "answer_challenges": True, "verify_token": {"inline": TOKEN}}


@pytest.fixture(scope="module")
def stack(build):
    s = Stack({"default": "deny", "policies": [POLICY]}, {})
    yield s
    s.stop()


def seal(plaintext: bytes, key: str = KEY) -> bytes:
    """Lark's envelope: {"encrypt": b64(iv + AES-256-CBC(PKCS#7))} under SHA-256(Encrypt Key)."""
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    enc = Cipher(algorithms.AES(hashlib.sha256(key.encode()).digest()), modes.CBC(iv)).encryptor()
    sealed = enc.update(padder.update(plaintext) + padder.finalize()) + enc.finalize()
    return json.dumps({"encrypt": base64.b64encode(iv + sealed).decode()}).encode()


def sign(body: bytes, key: str = KEY, ts: str | None = None, nonce: str | None = None) -> dict:
    ts = ts or str(int(time.time()))
    nonce = nonce or uuid.uuid4().hex[:12]
    sig = hashlib.sha256((ts + nonce + key).encode() + body).hexdigest()
    return {"Content-Type": "application/json", "X-Lark-Request-Timestamp": ts,
            "X-Lark-Request-Nonce": nonce, "X-Lark-Signature": sig}


def event(event_id: str | None = None) -> bytes:
    return json.dumps({"schema": "2.0", "header": {
        "event_id": event_id or uuid.uuid4().hex, "event_type": "im.message.receive_v1",
        "create_time": "1700000000000", "token": TOKEN, "app_id": "cli_demo", "tenant_key": "t"},
        "event": {"message": {"message_id": "om_" + uuid.uuid4().hex, "content": "{\"text\":\"hi\"}"}}}).encode()


def arrivals(stack, body: bytes) -> list[dict]:
    digest = hashlib.sha256(body).hexdigest()
    return [e for e in stack.backend.events() if e["body_sha256"] == digest]


def sdk_handler(key: str = KEY, seen: list | None = None):
    """Lark's own receiving side: decrypts, checks the token and the signature, dispatches."""
    return lark.EventDispatcherHandler.builder(key, TOKEN).register_p2_customized_event(
        "im.message.receive_v1", lambda e: seen.append(e) if seen is not None else None).build()


def sdk_do(handler, headers: dict, body: bytes):
    req = lark.RawRequest()
    req.uri = PATH
    req.headers = headers
    req.body = body
    return handler.do(req)


def cli_sign(tmp_path, plaintext: bytes) -> tuple[bytes, dict]:
    config = tmp_path / "lark.json"
    # The CLI signs and seals with the policy's current key; Lark would still use KEY here.
    config.write_text(json.dumps({"policies": [{**POLICY, "secrets": [{"inline": KEY}]}]}))
    out_file = tmp_path / "envelope.json"
    out = subprocess.run([str(CLI), "sign", "--config", str(config), "--policy", "lark", "--encrypt",
                          "--out", str(out_file), "--body", plaintext.decode(), "--format", "json"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert KEY not in out and TOKEN not in out
    return out_file.read_bytes(), {k: v for k, v in json.loads(out).items()}


def test_lark_sdk_accepts_what_webhook_guard_signs_and_the_filter_forwards_its_plaintext(stack, tmp_path):
    plaintext = event()
    body, headers = cli_sign(tmp_path, plaintext)
    sdk_headers = {"X-Lark-Request-Timestamp": headers["x-lark-request-timestamp"],
                   "X-Lark-Request-Nonce": headers["x-lark-request-nonce"],
                   "X-Lark-Signature": headers["x-lark-signature"]}
    seen = []
    resp = sdk_do(sdk_handler(seen=seen), sdk_headers, body)
    assert resp.status_code == 200 and len(seen) == 1, resp.content
    assert seen[0].header.event_id == json.loads(plaintext)["header"]["event_id"]
    # The SDK refuses the same request under another key or with a changed body.
    assert sdk_do(sdk_handler(key=NEXT), sdk_headers, body).status_code == 500
    assert sdk_do(sdk_handler(), {**sdk_headers, "X-Lark-Request-Nonce": "x"}, body).status_code == 500
    # Through Envoy: the backend gets the plaintext once, never the envelope.
    r = stack.post(PATH, body, {**sdk_headers, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert len(arrivals(stack, plaintext)) == 1 and arrivals(stack, body) == []
    got = arrivals(stack, plaintext)[0]
    assert got["headers"]["Content-Type"] == "application/json" and got["body_bytes"] == len(plaintext)


def test_a_retry_sealed_and_signed_anew_is_stopped_by_its_event_id(stack):
    plaintext = event()
    first = seal(plaintext)
    assert stack.post(PATH, first, sign(first)).status_code == 200
    # Lark's retry: the same event, a new IV, timestamp, nonce and signature.
    retry = seal(plaintext)
    assert retry != first
    r = stack.post(PATH, retry, sign(retry))
    assert (r.status_code, r.json()["error"]) == (409, "replayed")
    assert len(arrivals(stack, plaintext)) == 1


def test_forged_tampered_and_unsigned_events_never_reach_the_backend(stack):
    plaintext = event()
    body = seal(plaintext)
    headers = sign(body)
    foreign = seal(plaintext, key="other-" + KEY)
    cases = [
        (sign(body, key="guessed-" + KEY), body, 401, "invalid_signature"),
        (headers, body.replace(b'"}', b'A"}'), 401, "invalid_signature"),
        ({**headers, "X-Lark-Request-Timestamp": "1"}, body, 401, "invalid_signature"),
        ({"Content-Type": "application/json"}, body, 400, "missing_signature"),
        # Sealed with a key the policy does not hold, signed with one it does: opens to nothing.
        (sign(foreign), foreign, 400, "decryption_failed"),
    ]
    for h, b, status, reason in cases:
        r = stack.post(PATH, b, h)
        assert (r.status_code, r.json()["error"]) == (status, reason), (reason, r.text)
    assert arrivals(stack, plaintext) == []
    # None of them took the event's claim.
    assert stack.post(PATH, body, headers).status_code == 200
    assert len(arrivals(stack, plaintext)) == 1


def test_the_unsigned_url_verification_is_answered_like_lark_s_sdk_answers_it(stack):
    challenge = "challenge-" + uuid.uuid4().hex
    plaintext = json.dumps({"challenge": challenge, "token": TOKEN, "type": "url_verification"}).encode()
    body = seal(plaintext)
    before = len(stack.backend.events())
    r = stack.post(PATH, body, {"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json() == {"challenge": challenge}
    assert json.loads(sdk_do(sdk_handler(), {}, body).content) == r.json()
    # A wrong token is refused by both; nothing reaches the backend.
    forged = seal(json.dumps({"challenge": "x", "token": "guess", "type": "url_verification"}).encode())
    r = stack.post(PATH, forged, {"Content-Type": "application/json"})
    assert (r.status_code, r.json()["error"]) == (401, "invalid_signature")
    assert sdk_do(sdk_handler(), {}, forged).status_code != 200
    assert len(stack.backend.events()) == before


def _sha256_extend(digest: bytes, length: int, suffix: bytes) -> tuple[bytes, str]:
    """SHA-256 length extension: the glue padding and the digest of secret-bearing data of
    `length` bytes followed by that padding and `suffix`, without knowing the data."""
    k = [int(x, 16) for x in (
        "428a2f98 71374491 b5c0fbcf e9b5dba5 3956c25b 59f111f1 923f82a4 ab1c5ed5 d807aa98 12835b01 "
        "243185be 550c7dc3 72be5d74 80deb1fe 9bdc06a7 c19bf174 e49b69c1 efbe4786 0fc19dc6 240ca1cc "
        "2de92c6f 4a7484aa 5cb0a9dc 76f988da 983e5152 a831c66d b00327c8 bf597fc7 c6e00bf3 d5a79147 "
        "06ca6351 14292967 27b70a85 2e1b2138 4d2c6dfc 53380d13 650a7354 766a0abb 81c2c92e 92722c85 "
        "a2bfe8a1 a81a664b c24b8b70 c76c51a3 d192e819 d6990624 f40e3585 106aa070 19a4c116 1e376c08 "
        "2748774c 34b0bcb5 391c0cb3 4ed8aa4a 5b9cca4f 682e6ff3 748f82ee 78a5636f 84c87814 8cc70208 "
        "90befffa a4506ceb bef9a3f7 c67178f2").split()]

    def pad(n: int) -> bytes:
        return b"\x80" + b"\0" * ((55 - n) % 64) + struct.pack(">Q", n * 8)

    def rotr(x, n):
        return ((x >> n) | (x << (32 - n))) & 0xFFFFFFFF

    state = list(struct.unpack(">8I", digest))
    glue = pad(length)
    tail = suffix + pad(length + len(glue) + len(suffix))
    for i in range(0, len(tail), 64):
        w = list(struct.unpack(">16I", tail[i:i + 64]))
        for t in range(16, 64):
            s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3)
            s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10)
            w.append((w[t - 16] + s0 + w[t - 7] + s1) & 0xFFFFFFFF)
        a, b, c, d, e, f, g, h = state
        for t in range(64):
            t1 = (h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[t] + w[t]) & 0xFFFFFFFF
            t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) & 0xFFFFFFFF
            a, b, c, d, e, f, g, h = (t1 + t2) & 0xFFFFFFFF, a, b, c, (d + t1) & 0xFFFFFFFF, e, f, g
        state = [(x + y) & 0xFFFFFFFF for x, y in zip(state, (a, b, c, d, e, f, g, h))]
    return glue, struct.pack(">8I", *state).hex()


def test_a_length_extended_delivery_is_refused_and_reaches_nothing(stack):
    """The signature is a plain SHA-256 with the key inside: an eavesdropper can append bytes to a
    signed body and compute a valid signature without the key. The filter forwards only a body
    that is exactly one envelope that opens, so the forgery gets 400 and reaches nothing."""
    plaintext = event()
    body = seal(plaintext)
    headers = sign(body)
    ts, nonce = headers["X-Lark-Request-Timestamp"], headers["X-Lark-Request-Nonce"]
    suffix = b',"encrypt":"' + json.loads(seal(event()))["encrypt"].encode() + b'"}'
    glue, forged_sig = _sha256_extend(bytes.fromhex(headers["X-Lark-Signature"]),
                                      len(ts) + len(nonce) + len(KEY) + len(body), suffix)
    forged = body + glue + suffix
    assert forged_sig == hashlib.sha256((ts + nonce + KEY).encode() + forged).hexdigest(), "the forgery itself"
    r = stack.post(PATH, forged, {**headers, "X-Lark-Signature": forged_sig})
    assert (r.status_code, r.json()["error"]) == (400, "malformed_payload")
    assert arrivals(stack, plaintext) == []
    assert stack.post(PATH, body, headers).status_code == 200
    assert len(arrivals(stack, plaintext)) == 1

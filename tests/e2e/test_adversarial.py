"""The guarantee against an attacker, in the real Envoy with the shipped demo configuration
(envoy/envoy.yaml.tmpl + envoy/webhook-guard.json): only genuine first deliveries reach the
backend. Every attack is judged by what reached the backend (its /events), not only by the
status code Envoy answered.

Set WEBHOOK_GUARD_ATTACK_REPORT=<file> to append one JSON line per attack (status, whether it
reached the backend, memory): the before/after table in docs/security.md comes from it.
"""
from __future__ import annotations

import base64
import concurrent.futures
import hmac
import hashlib
import json
import os
import random
import socket
import struct
import threading
import time
import uuid

import pytest
import requests

from attacks import H2, h2_request, http1_request, pin_streams, raw_send, send_then_reset
from harness import DEMO_CONFIG, Backend, Envoy, Stack, free_port, wait_until
from signers import PRESETS

REPORT = os.environ.get("WEBHOOK_GUARD_ATTACK_REPORT")


def report(attack: str, **facts) -> None:
    if REPORT:
        with open(REPORT, "a") as f:
            f.write(json.dumps({"attack": attack, **facts}) + "\n")


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def reached(stack: Stack, body: bytes) -> int:
    return sum(e["body_sha256"] == digest(body) for e in stack.backend.events())


def unique_body(tag: str = "evt") -> bytes:
    return json.dumps({"id": f"{tag}_{uuid.uuid4().hex}", "object": "event"}).encode()


def signed(secrets: dict, preset: str, body: bytes) -> tuple[str, dict]:
    path, sign, var, _ = PRESETS[preset]
    return path, sign(secrets[var], body, int(time.time()), f"d-{uuid.uuid4().hex}")


# --- 1. paths that could miss the policy but reach the handler ---------------------------

TRICK_PATHS = [
    "/webhooks%2Fgithub", "/webhooks%2fgithub", "/webhooks%5Cgithub", "/webhooks%5cgithub",
    "/webhooks/GitHub", "/WEBHOOKS/GITHUB", "/Webhooks/Github/", "/webhooks/%67ithub", "/%77ebhooks/github",
    "//webhooks/github", "/webhooks//github", "/webhooks/./github", "/webhooks/stripe/../github",
    "/webhooks;x=1/github", "/webhooks/github;x=1", "/webhooks/github%2F", "/webhooks/github?x=%2F",
    "/webhooks\\github", "/x/..%2Fwebhooks/github", "/webhooks/github%00", "/webhooks/github%20",
]


@pytest.mark.parametrize("path", TRICK_PATHS)
def test_path_spellings_of_a_webhook_route_never_reach_the_backend_unverified(demo, path):
    body = unique_body("path")
    statuses = {
        "http1": raw_send(demo.envoy.port, http1_request("POST", path, {"Content-Type": "application/json"}, body)),
        "absolute-uri": raw_send(demo.envoy.port, http1_request(
            "POST", f"http://127.0.0.1:{demo.envoy.port}{path}", {"Content-Type": "application/json"}, body)),
        "http2": h2_request(demo.envoy.port, "POST", path, {"content-type": "application/json"}, body),
    }
    got = reached(demo, body)
    report(f"unsigned POST {path}", statuses=statuses, reached=got)
    assert got == 0, statuses
    for how, status in statuses.items():
        assert status in (400, 401, 403, 404), (how, status)


def test_the_backends_control_endpoints_are_not_behind_the_proxy(demo, secrets):
    for method, path in [("GET", "/events"), ("POST", "/admin/fail-next?count=5"), ("POST", "/admin/reset"),
                         ("GET", "/healthz"), ("GET", "/")]:
        status = raw_send(demo.envoy.port, http1_request(method, path, {}, b""))
        report(f"{method} {path} through the proxy", status=status)
        assert status in (403, 404), (path, status)
    # The fail-next above never reached the backend: a genuine delivery still gets 200.
    body = unique_body()
    path, headers = signed(secrets, "github", body)
    assert demo.post(path, body, headers).status_code == 200


# --- 2. resets: a claim must not be released when the request may have been processed ----

@pytest.mark.parametrize("proto", ["http1", "http2"])
def test_resetting_after_the_request_was_forwarded_gives_no_replay(demo, secrets, proto):
    body = unique_body("reset")
    path, headers = signed(secrets, "stripe", body)
    before = demo.envoy.stats()
    demo.backend.slow_next(5, 0.5)
    try:
        for _ in range(5):
            if proto == "http1":
                send_then_reset(demo.envoy.port, http1_request("POST", path, headers, body), after=0.25)
            else:
                c = H2(demo.envoy.port)
                sid = c.headers("POST", path, headers)
                c.data(sid, body, end_stream=True)
                time.sleep(0.25)
                c.reset(sid)
                c.close()
            time.sleep(0.1)
    finally:
        time.sleep(0.6)
        demo.backend.slow_next(0, 0)
    resp = demo.post(path, body, headers)
    got = reached(demo, body)
    report(f"captured delivery re-sent 5x, {proto} reset after forwarding, then replayed",
           reached=got, replay_status=resp.status_code)
    assert got == 1
    assert resp.status_code == 409 and resp.json()["error"] in ("replayed", "in_flight")
    after = demo.envoy.stats()
    assert after["webhook_guard.store.unknown_outcome"] - before.get("webhook_guard.store.unknown_outcome", 0) >= 1
    wait_until(lambda: '"event":"webhook_unknown_outcome"' in demo.envoy.log(), 5, "the unknown-outcome log line")


def test_resetting_before_the_body_is_complete_claims_nothing(demo, secrets):
    body = unique_body("midbody")
    path, headers = signed(secrets, "github", body)
    data = http1_request("POST", path, headers, body)
    for cut in (len(data) - len(body) - 2, len(data) - 5):  # mid-headers, mid-body
        s = socket.create_connection(("127.0.0.1", demo.envoy.port), timeout=5)
        s.sendall(data[:cut])
        time.sleep(0.2)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    assert reached(demo, body) == 0
    assert demo.post(path, body, headers).status_code == 200, "nothing was claimed: the real delivery passes"
    assert demo.post(path, body, headers).status_code == 409
    assert reached(demo, body) == 1


def test_a_request_that_never_reached_the_upstream_is_released_for_the_retry(tmp_path, secrets):
    # The backend is down (connection refused): Envoy answers 503 itself. The sender's retry
    # must be admitted once the backend is back, not refused as in flight or replayed.
    port = free_port()
    envoy = Envoy(tmp_path, port, DEMO_CONFIG.read_text(), secrets)
    backend = None
    try:
        body = unique_body("down")
        path, headers = signed(secrets, "github", body)
        url = envoy.url + path
        first = requests.post(url, data=body, headers=headers, timeout=10)
        second = requests.post(url, data=body, headers=headers, timeout=10)
        report("delivery while the backend refuses connections, sent twice", statuses=[first.status_code,
                                                                                       second.status_code])
        # Envoy's own 503 (connection refused) both times: not our 409 in_flight.
        assert (first.status_code, second.status_code) == (503, 503)
        assert "in_flight" not in second.text
        backend = Backend(tmp_path, port=port)
        wait_until(lambda: requests.post(url, data=body, headers=headers, timeout=10).status_code == 200, 10,
                   "the retry to be admitted once the backend is up")
        assert requests.post(url, data=body, headers=headers, timeout=10).status_code == 409
        assert sum(e["body_sha256"] == digest(body) for e in backend.events()) == 1
        assert envoy.stats()["webhook_guard.store.released"] >= 2
    finally:
        envoy.stop()
        if backend:
            backend.stop()


# --- 3. another method must not commit (or reach) a verified delivery ---------------------

def test_another_method_cannot_commit_a_delivery_and_lose_the_retry(demo, secrets):
    body = unique_body("method")
    path, headers = signed(secrets, "github", body)
    demo.backend.fail_next(1)
    assert demo.post(path, body, headers).status_code == 500  # the backend failed: released
    statuses = {method: raw_send(demo.envoy.port, http1_request(method, path, headers, body))
                for method in ("OPTIONS", "GET", "HEAD", "PUT", "PATCH", "DELETE", "post")}
    statuses["OPTIONS over HTTP/2"] = h2_request(demo.envoy.port, "OPTIONS", path, headers, body)
    events = [e for e in demo.backend.events() if e["body_sha256"] == digest(body)]
    retry = demo.post(path, body, headers)
    report("same signed delivery sent as OPTIONS/GET/HEAD/PUT/... after a backend failure",
           statuses=statuses, reached_with_other_method=len(events) - 1, retry_status=retry.status_code)
    for method, status in statuses.items():
        # Envoy's own codec refuses a lower-case method (400) before the filter sees it.
        assert status == (400 if method == "post" else 405), (method, status)
    assert [e["method"] for e in events] == ["POST"], events
    assert retry.status_code == 200, "the provider's real retry is admitted"
    resp = requests.options(demo.envoy.url + path, timeout=5)
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert resp.json() == {"error": "method_not_allowed", "policy": "github"}


# --- 4. what an attacker can pin in memory, and for how long --------------------------------

def test_one_http2_connection_cannot_pin_unbounded_memory(demo, secrets):
    heap_before = demo.envoy.heap_mib()
    # Asking for more streams than the listener allows (16) ends the connection at once.
    c, refused = pin_streams(demo.envoy.port, 150)
    greedy_peak = demo.envoy.heap_mib()
    c.close()
    # Within the limit: 16 streams x 1 MiB, each held until it times out.
    c, _ = pin_streams(demo.envoy.port, 16)
    time.sleep(0.5)
    peak = demo.envoy.heap_mib()
    c.close()
    time.sleep(1)
    heap_after = demo.envoy.heap_mib()
    report("one HTTP/2 connection, 150 (then 16) streams x 1 MiB unsigned, never ended",
           heap_before_mib=round(heap_before, 1), peak_150_streams_mib=round(greedy_peak, 1),
           peak_16_streams_mib=round(peak, 1), heap_after_mib=round(heap_after, 1))
    assert refused > 0
    assert greedy_peak - heap_before < 8, (heap_before, greedy_peak)
    # 16 x (1 MiB + 64 KiB of headroom), and nothing more, whatever the client sends.
    assert peak - heap_before < 16 * 1.1 + 4, (heap_before, peak)
    assert heap_after - heap_before < 4, (heap_before, heap_after)


def test_slow_senders_are_cut_off(demo, secrets):
    """One byte every 20 s trips the stream idle timeout (15 s); a byte every 4 s trips the
    whole-request timeout (30 s). Both run at once to keep the test short."""
    def trickle(interval: float, limit: float) -> float:
        s = socket.create_connection(("127.0.0.1", demo.envoy.port), timeout=limit)
        start = time.monotonic()
        s.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                  b"X-Hub-Signature-256: sha256=" + b"0" * 64 + b"\r\n\r\n")
        try:
            while time.monotonic() - start < limit:
                s.settimeout(interval)
                try:
                    if s.recv(4096) == b"":
                        break
                    # A response (408/timeout) arrived: read until close.
                    s.settimeout(2)
                    while s.recv(4096):
                        pass
                    break
                except socket.timeout:
                    s.sendall(b"a")
                except OSError:
                    break
        finally:
            s.close()
        return time.monotonic() - start

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        idle = pool.submit(trickle, 20, 60)
        slow = pool.submit(trickle, 4, 60)
        idle_s, slow_s = idle.result(), slow.result()
    report("HTTP/1 body trickled: 1 byte / 20 s, and 1 byte / 4 s", cut_after_s=[round(idle_s, 1), round(slow_s, 1)])
    assert idle_s < 20, idle_s
    assert slow_s < 36, slow_s


# --- 5. other things an attacker tries ----------------------------------------------------

def test_fifty_concurrent_copies_reach_the_backend_once(demo, secrets):
    body = unique_body("burst")
    path, headers = signed(secrets, "standard", body)
    demo.backend.slow_next(1, 0.3)
    barrier = threading.Barrier(50)

    def send(_):
        with requests.Session() as s:
            barrier.wait()
            return s.post(demo.envoy.url + path, data=body, headers=headers, timeout=20).status_code

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        codes = list(pool.map(send, range(50)))
    got = reached(demo, body)
    report("50 concurrent copies of one delivery", statuses={c: codes.count(c) for c in set(codes)}, reached=got)
    assert codes.count(200) == 1 and codes.count(409) == 49, codes
    assert got == 1


def test_header_tricks_are_refused(demo, secrets):
    body = unique_body("hdr")
    path, headers = signed(secrets, "github", body)
    good_sig = headers["X-Hub-Signature-256"]
    bad_sig = "sha256=" + "0" * 64
    rest = {k: v for k, v in headers.items() if k != "X-Hub-Signature-256"}
    tricks = {
        # Two signature headers, one of them valid: ambiguous, never guessed at.
        "duplicate signature": http1_request("POST", path, rest, body).replace(
            b"\r\n\r\n", f"\r\nX-Hub-Signature-256: {bad_sig}\r\nX-Hub-Signature-256: {good_sig}\r\n\r\n".encode(), 1),
        # Underscored twins of signed headers (a WSGI app reads them as the dashed name).
        "underscore header": http1_request("POST", path, {**headers, "X_Hub_Signature_256": bad_sig}, body),
        # Conflicting framing (request smuggling).
        "chunked + content-length": http1_request("POST", path, {**headers, "Transfer-Encoding": "chunked"}, body),
        # The signature in an obs-fold continuation line.
        "folded header": http1_request("POST", path, rest, body).replace(
            b"\r\n\r\n", f"\r\nX-Hub-Signature-256: sha256=\r\n {good_sig[7:]}\r\n\r\n".encode(), 1),
    }
    statuses = {name: raw_send(demo.envoy.port, data) for name, data in tricks.items()}
    got = reached(demo, body)
    report("header tricks around a valid signature", statuses=statuses, reached=got)
    assert got == 0, statuses
    assert all(s >= 400 for s in statuses.values()), statuses
    # A shorter Content-Length smuggles the rest of the body as a second, unsigned request.
    short = http1_request("POST", path, headers, body).replace(
        f"Content-Length: {len(body)}".encode(), f"Content-Length: {len(body) - 10}".encode())
    raw_send(demo.envoy.port, short)
    assert reached(demo, body) == 0 and reached(demo, body[:-10]) == 0
    # The signature only in HTTP/2 trailers is no signature.
    c = H2(demo.envoy.port)
    try:
        sid = c.headers("POST", path, rest)
        c.data(sid, body)
        c.conn.send_headers(sid, [("x-hub-signature-256", good_sig)], end_stream=True)
        c.flush()
        status, data = c.response(sid)
    finally:
        c.close()
    assert status == 400 and json.loads(data)["error"] == "missing_signature"
    assert reached(demo, body) == 0


def test_random_garbage_never_reaches_the_backend(demo):
    rng = random.Random(12345)
    before = len(demo.backend.events())
    statuses = []
    for i in range(120):
        kind = i % 3
        if kind == 0:  # random bytes on the wire
            data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400)))
        elif kind == 1:  # a webhook path with random headers and body
            headers = {f"X-{rng.randint(0, 9999)}": "".join(chr(rng.randint(33, 126)) for _ in range(20))
                       for _ in range(rng.randint(0, 6))}
            headers[rng.choice(["X-Hub-Signature-256", "Stripe-Signature", "webhook-signature",
                                "X-Slack-Signature", "X-Webhook-Signature"])] = \
                "".join(chr(rng.randint(32, 126)) for _ in range(rng.randint(0, 120)))
            data = http1_request("POST", rng.choice(["/webhooks/github", "/webhooks/stripe", "/webhooks/standard",
                                                     "/webhooks/slack", "/webhooks/custom"]), headers,
                                 bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))))
        else:  # a mangled request line
            data = f"POST /webhooks/{'%' * rng.randint(1, 3)}{rng.randint(0, 99)} HTTP/1.{rng.randint(0, 9)}\r\n" \
                   f"Host: x\r\nContent-Length: {rng.randint(0, 5)}\r\n\r\nabc".encode()
        try:
            # Whole requests wait for their answer; truncated bytes end the connection.
            statuses.append(raw_send(demo.envoy.port, data, timeout=3, half_close=kind != 1))
        except OSError:
            statuses.append(-1)
    report("120 random requests (bytes, headers, request lines)", reached=len(demo.backend.events()) - before,
           any_2xx=any(200 <= s < 300 for s in statuses))
    assert len(demo.backend.events()) == before
    assert not any(200 <= s < 300 for s in statuses)
    # The well-formed ones were judged by the filter (answered), not dropped.
    assert all(s >= 400 for s in statuses[1::3]), statuses[1::3]
    assert requests.get(demo.envoy.admin + "/ready", timeout=5).text.strip() == "LIVE"


def test_a_slow_but_genuine_sender_still_gets_through(demo, secrets):
    body = unique_body("slow") + b" " * 2000
    path, headers = signed(secrets, "slack", body)
    data = http1_request("POST", path, headers, body)
    with socket.create_connection(("127.0.0.1", demo.envoy.port), timeout=15) as s:
        for i in range(0, len(data), 512):
            s.sendall(data[i:i + 512])
            time.sleep(0.3)
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    assert reached(demo, body) == 1


def test_rejection_logs_carry_the_client_address(demo):
    s = socket.create_connection(("127.0.0.1", demo.envoy.port), timeout=5)
    local = s.getsockname()
    marker = uuid.uuid4().hex
    s.sendall(http1_request("POST", f"/webhooks/github?{marker}", {"X-GitHub-Delivery": marker}, b"{}"))
    assert s.recv(100).startswith(b"HTTP/1.1 400")
    s.close()
    wait_until(lambda: any(l.get("delivery_id") == marker for l in demo.envoy.rejection_logs()), 5, "the log line")
    line = next(l for l in demo.envoy.rejection_logs() if l.get("delivery_id") == marker)
    assert line["client"] == f"{local[0]}:{local[1]}"


# --- 6. one sender cannot starve another --------------------------------------------------

def test_a_flood_on_one_policy_never_fills_another_policys_share(tmp_path):
    secret = "flood-secret"
    gh = lambda name, prefix: {"name": name, "match": {"path_prefix": prefix}, "provider": "github",  # noqa: E731
                               "secrets": [{"env": "GITHUB_WEBHOOK_SECRET"}]}
    stack = Stack({"default": "deny", "store": {"shards": 2, "capacity": 20},
                   "policies": [gh("flooded", "/webhooks/github"), gh("quiet", "/webhooks/other")]},
                  {"GITHUB_WEBHOOK_SECRET": secret})
    try:
        _, sign, _, _ = PRESETS["github"]
        codes = []
        for i in range(100):  # until the flooded policy's store is full
            body = unique_body(f"flood{i}")
            codes.append(stack.post("/webhooks/github", body, sign(secret, body, 0, "d")).status_code)
            if codes[-1] == 503:
                break
        assert codes[-1] == 503, codes
        body = unique_body("quiet")
        resp = stack.post("/webhooks/other", body, sign(secret, body, 0, "d"))
        report("flood of valid deliveries on one policy, then another policy's delivery",
               flooded_503=codes.count(503), other_policy_status=resp.status_code)
        assert resp.status_code == 200
        assert stack.envoy.stats()["webhook_guard.policy.flooded.reason.store_full"] == codes.count(503)
    finally:
        stack.stop()


# --- 7. the newer presets: signed material moved or re-framed ----------------------------

ADYEN_KEY = os.urandom(32).hex()
SEAL_SIGNING, SEAL_KEY = "seal-" + uuid.uuid4().hex, os.urandom(32)
PLIVO_TOKEN, PLIVO_ORIGIN = "plivo-" + uuid.uuid4().hex, "https://hooks.example.com"
PLIVO_NEXT_TOKEN = "plivo-next-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def presets_stack(build):
    stack = Stack({"default": "deny", "policies": [
        {"name": "adyen", "match": {"path_prefix": "/webhooks/adyen"}, "provider": "adyen",
         "secrets": [{"inline": ADYEN_KEY}]},
        {"name": "plivo", "match": {"path_prefix": "/webhooks/plivo"}, "provider": "plivo",
         "public_origin": PLIVO_ORIGIN, "secrets": [{"inline": PLIVO_NEXT_TOKEN}, {"inline": PLIVO_TOKEN}]},
        {"name": "sealed", "match": {"path_prefix": "/webhooks/sealed"}, "provider": "custom",
         "custom": {"signature_header": "X-Webhook-Signature", "encoding": "hex",
                    "signed_template": "{timestamp}.{body}", "timestamp_header": "X-Webhook-Timestamp"},
         "secrets": [{"inline": SEAL_SIGNING}],
         "decrypt": {"cipher": "aes-256-gcm", "keys": [{"inline": base64.b64encode(SEAL_KEY).decode()}]}},
    ]}, {})
    yield stack
    stack.stop()


def adyen_item(psp: str, event: str = "AUTHORISATION") -> dict:
    from Adyen.util import generate_notification_sig
    item = {"pspReference": psp, "merchantAccountCode": "TestMerchant", "merchantReference": "order-1",
            "amount": {"value": 1130, "currency": "EUR"}, "eventCode": event, "success": "true",
            "additionalData": {}}
    sig = generate_notification_sig(item, ADYEN_KEY)
    item["additionalData"]["hmacSignature"] = sig.decode() if isinstance(sig, bytes) else sig
    return {"NotificationRequestItem": item}


def test_a_signed_adyen_item_reaches_the_backend_once_whatever_notification_carries_it(presets_stack):
    """Adyen signs each item, not the notification around it: a delivered item sent again twice
    in one notification, or before or after another signed item, is the same signed event and
    must not reach the backend again (before the fix: 200 each, the item arrived 7 times)."""
    a, b = adyen_item(str(uuid.uuid4().int)[:16]), adyen_item(str(uuid.uuid4().int)[:16], "CAPTURE")
    ct = {"content-type": "application/json"}
    note = lambda *items: json.dumps({"live": "false", "notificationItems": list(items)}).encode()  # noqa: E731
    genuine = note(a)
    first = presets_stack.post("/webhooks/adyen", genuine, ct)
    assert first.status_code == 200, first.text
    attempts = {"twice in one": note(a, a), "next to another": note(b, a), "reordered": note(a, b),
                "in a batch of three": note(b, a, a)}
    statuses = {name: presets_stack.post("/webhooks/adyen", body, ct).status_code
                for name, body in attempts.items()}
    # Each arrival of a body counts once per copy of item `a` it carries.
    copies = {genuine: 1, **{body: json.loads(body)["notificationItems"].count(a) for body in attempts.values()}}
    arrivals_of_a = sum(reached(presets_stack, body) * n for body, n in copies.items())
    report("a captured Adyen item re-sent inside other notifications",
           statuses=statuses, arrivals_of_the_item=arrivals_of_a)
    assert arrivals_of_a == 1, statuses
    assert set(statuses.values()) == {400}, statuses


def sealed(plaintext: bytes) -> tuple[bytes, dict]:
    """An AES-256-GCM envelope, signed as the `sealed` policy expects."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    nonce = os.urandom(12)
    envelope = {"encrypted": base64.b64encode(AESGCM(SEAL_KEY).encrypt(nonce, plaintext, None)).decode(),
                "nonce": base64.b64encode(nonce).decode()}
    body = json.dumps(envelope).encode()
    stamp = str(int(time.time()))
    mac = hmac.new(SEAL_SIGNING.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return body, {"Content-Type": "application/json", "X-Webhook-Signature": mac, "X-Webhook-Timestamp": stamp}


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_decrypted_payload_reaches_the_backend_as_exactly_the_plaintext(presets_stack, framing):
    """The plaintext replaces the envelope: whatever framing the sender used (a chunked HTTP/1
    upload has no content-length to replace), the backend must read exactly the plaintext, once,
    and never the envelope."""
    plaintext = json.dumps({"id": f"evt_{uuid.uuid4().hex}", "pad": "p" * 3000}).encode()
    body, headers = sealed(plaintext)
    data = body if framing == "content-length" else iter([body[:1000], body[1000:]])
    before = len(presets_stack.backend.events())
    resp = requests.post(presets_stack.envoy.url + "/webhooks/sealed", data=data, headers=headers, timeout=10)
    events = presets_stack.backend.events()[before:]
    report(f"a sealed delivery sent {framing}", status=resp.status_code,
           backend=[(e["status"], e["body_bytes"]) for e in events])
    assert resp.status_code == 200, resp.text
    assert [(e["body_sha256"], e["body_bytes"]) for e in events] == [(digest(plaintext), len(plaintext))]


def test_a_plivo_callback_cannot_come_back_under_a_nonce_cut_from_its_own_parameters(presets_stack):
    """Plivo V3 signs `{url}{sorted params}.{nonce}` with nothing delimiting the parameters from
    the nonce but a `.`. A parameter value holding a `.` (a rate, a URL) lets a captured callback
    be re-cut: the parameters up to that dot stay in the body and the rest moves into the nonce
    header, `{rest}.{nonce}`. The signed string is the same, so it verifies; the nonce, if it were
    the dedup key, is new each time. Only the genuine callback may reach the backend."""
    from urllib.parse import urlencode

    from plivo.utils.signature_v3 import construct_post_url, get_signature_v3
    path = "/webhooks/plivo/status"
    params = {"BillRate": "0.0050", "CallStatus": "completed", "CallUUID": str(uuid.uuid4()),
              "RecordUrl": "https://media.example.com/rec/x.mp3", "To": "15551234567"}
    nonce = str(uuid.uuid4().int)[:20]
    sig = get_signature_v3(PLIVO_TOKEN.encode(), construct_post_url(PLIVO_ORIGIN + path, dict(params)).decode(),
                           nonce.encode()).decode()
    form = {"content-type": "application/x-www-form-urlencoded", "x-plivo-signature-v3": sig}
    before = len(presets_stack.backend.events())
    genuine = presets_stack.post(path, urlencode(params).encode(), {**form, "x-plivo-signature-v3-nonce": nonce})
    assert genuine.status_code == 200, genuine.text
    # Every dot inside a value is a place to cut: keep the parameters before it (the one holding it
    # truncated there), move the rest of the sorted `name+value` text into the nonce.
    ordered = sorted(params.items())
    statuses = []
    for i, (name, value) in enumerate(ordered):
        for at in [j for j, c in enumerate(value) if c == "."]:
            kept = dict(ordered[:i]) | {name: value[:at]}
            rest = value[at + 1:] + "".join(k + v for k, v in ordered[i + 1:])
            resp = presets_stack.post(path, urlencode(kept).encode(),
                                      {**form, "x-plivo-signature-v3-nonce": f"{rest}.{nonce}"})
            statuses.append(resp.status_code)
    arrivals = [e for e in presets_stack.backend.events()[before:] if e["path"].startswith("/webhooks/plivo")]
    report("a captured Plivo callback re-cut at each dot of its parameters", statuses=statuses,
           arrivals=len(arrivals))
    assert len(statuses) >= 4
    assert len(arrivals) == 1, statuses


def test_a_callback_signed_under_two_listed_secrets_is_one_delivery_whichever_signature_is_kept(
        presets_stack):
    """During a rotation a sender signs with both secrets (Plivo lists its signatures
    comma-separated; Stripe-style `v1=..,v1=..` headers do the same) and the policy lists both.
    Dropping one of the signatures changes which listed secret verifies, not what was signed:
    the copy is the same delivery and must not reach the backend again."""
    from urllib.parse import urlencode

    from plivo.utils.signature_v3 import construct_post_url, get_signature_v3
    path = "/webhooks/plivo/rotating"
    params = {"CallStatus": "completed", "CallUUID": str(uuid.uuid4()), "To": "15551234567"}
    nonce = str(uuid.uuid4().int)[:20]
    url = construct_post_url(PLIVO_ORIGIN + path, dict(params)).decode()
    new, old = (get_signature_v3(t.encode(), url, nonce.encode()).decode() for t in (PLIVO_NEXT_TOKEN, PLIVO_TOKEN))
    body = urlencode(params).encode()
    send = lambda sig: presets_stack.post(path, body, {  # noqa: E731
        "content-type": "application/x-www-form-urlencoded", "x-plivo-signature-v3": sig,
        "x-plivo-signature-v3-nonce": nonce})
    first = send(f"{old},{new}")
    assert first.status_code == 200, first.text
    statuses = [send(old).status_code, send(new).status_code, send(f"{new},{old}").status_code]
    arrivals = reached(presets_stack, body)
    report("a callback signed under two listed secrets, re-sent with one of its signatures",
           statuses=statuses, arrivals=arrivals)
    assert arrivals == 1, statuses
    assert statuses == [409, 409, 409]


# --- signed text and paths that read two ways ---------------------------------------------

def standard_sign(secret: str, msg_id: str, ts: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return "v1," + base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()


@pytest.mark.parametrize("age", [0, 3600])
def test_a_standard_webhooks_delivery_re_cut_into_a_new_id_and_timestamp_reaches_nothing(demo, secrets, age):
    """`{id}.{ts}.{body}`: a body holding `.<now>.` lets a captured delivery (even an hour-stale
    one) be cut again there: a new webhook-id (the dedup key), a fresh timestamp, the same
    signature. Such an id is refused; the genuine delivery still gets through once."""
    now = int(time.time())
    ts = now - age
    msg_id = f"msg_{uuid.uuid4().hex}"
    body = ('{"type":"user.updated","data":{"name":"eve.%d.%s"}}' % (now, uuid.uuid4().hex)).encode()
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "Content-Type": "application/json",
               "webhook-signature": standard_sign(secrets["STANDARD_WEBHOOK_SECRET"], msg_id, ts, body)}
    first = demo.post("/webhooks/standard", body, headers)
    assert first.status_code == (200 if age == 0 else 401)
    marker = f".{now}.".encode()
    at = body.index(marker)
    recut_id = (f"{msg_id}.{ts}.".encode() + body[:at]).decode()
    recut_body = body[at + len(marker):]
    resp = demo.post("/webhooks/standard", recut_body, {**headers, "webhook-id": recut_id, "webhook-timestamp": str(now)})
    report(f"standard-webhooks re-cut, original {age}s old", status=resp.status_code, reached=reached(demo, recut_body))
    assert (resp.status_code, resp.json()["error"]) == (400, "malformed_signature")
    assert reached(demo, recut_body) == 0
    assert reached(demo, body) == (1 if age == 0 else 0)


def test_a_path_that_envoy_routes_to_one_policy_and_a_backend_to_another_is_refused(demo, secrets):
    """Envoy decodes `%2e%2e;` to `..;` but does not resolve it, so it routes
    `/webhooks/custom/%2e%2e;/standard` under /webhooks/custom, while a servlet container would
    serve /webhooks/standard. A delivery signed for `standard` must not pass on that path."""
    now = int(time.time())
    for path in ["/webhooks/custom/%2e%2e;/standard", "/webhooks/envelope/%2e%2e;/standard"]:
        msg_id = f"msg_{uuid.uuid4().hex}"
        body = json.dumps({"type": "x", "id": uuid.uuid4().hex}).encode()
        headers = {"webhook-id": msg_id, "webhook-timestamp": str(now), "Content-Type": "application/json",
                   "webhook-signature": standard_sign(secrets["STANDARD_WEBHOOK_SECRET"], msg_id, now, body)}
        status = raw_send(demo.envoy.port, http1_request("POST", path, headers, body))
        report(f"standard-signed POST {path}", status=status, reached=reached(demo, body))
        assert status == 403, path
        assert reached(demo, body) == 0, path
        # The same delivery on its own path is new and genuine.
        assert demo.post("/webhooks/standard", body, headers).status_code == 200
        assert reached(demo, body) == 1

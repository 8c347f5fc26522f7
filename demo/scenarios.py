#!/usr/bin/env python3
"""Sends the demo's scenario table through Envoy and prints what happened to each request.

Exits non-zero if any outcome differs from what the filter promises, so the demo doubles as a
smoke test. Used by scripts/demo.sh; expects the stack to be running.
"""
from __future__ import annotations

import argparse
import base64
import concurrent.futures
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import uuid

import requests
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import report
from signers import PRESETS, SIGNATURE_HEADERS

SKEW = 400


def scenario_rows(secrets: dict[str, str]):
    now = int(time.time())
    for preset, (path, sign, var, signs_ts) in PRESETS.items():
        wrong = "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0zMmI=" if preset == "standard" else "wrong-secret"
        invalid = 403 if preset == "custom" else 401  # demo config overrides it for custom
        rows = [
            ("legit", secrets[var], now, False, False, (200, None)),
            ("tampered body", secrets[var], now, True, False, (invalid, "invalid_signature")),
            ("wrong secret", wrong, now, False, False, (invalid, "invalid_signature")),
            ("unsigned", secrets[var], now, False, True, (400, "missing_signature")),
            ("stale (-400 s)", secrets[var], now - SKEW, False, False,
             (401, "timestamp_out_of_window") if signs_ts else (200, None)),
            ("future (+400 s)", secrets[var], now + SKEW, False, False,
             (401, "timestamp_out_of_window") if signs_ts else (200, None)),
            ("rotated secret", secrets[var + "_PREVIOUS"], now, False, False, (200, None)),
        ]
        for name, secret, ts, tamper, strip, expect in rows:
            yield preset, path, sign, name, secret, ts, tamper, strip, expect


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--envoy", default=f"http://127.0.0.1:{os.environ.get('WEBHOOK_DEMO_ENVOY_PORT', '10000')}")
    p.add_argument("--admin", default=f"http://127.0.0.1:{os.environ.get('WEBHOOK_DEMO_ADMIN_PORT', '9901')}")
    p.add_argument("--backend", help="the backend's control endpoints (/events, /admin)",
                   default=f"http://127.0.0.1:{os.environ.get('WEBHOOK_DEMO_BACKEND_ADMIN_PORT', '5001')}")
    p.add_argument("--ca", help="CA certificate for an https --envoy URL")
    a = p.parse_args()
    verify = a.ca or True
    if a.envoy.startswith("https://"):
        print(f"(sending through TLS: {a.envoy})\n")
    secrets = {k: v for k, v in os.environ.items() if k.endswith(("_SECRET", "_SECRET_PREVIOUS"))}

    def seen(body: bytes) -> int:
        return report.seen(a.backend, body)

    header = f"{'provider':<9} {'scenario':<16} {'status':>6}  {'filter answer':<32} {'reached backend':<15} check"
    print(header)
    print("-" * len(header))
    failures = 0

    def row(preset, name, path, body, headers, want_status, want_answer, want_seen):
        nonlocal failures
        resp = requests.post(a.envoy + path, data=body, headers=headers, timeout=15, verify=verify)
        answer = report.answer(resp)
        reached = seen(body)
        ok = resp.status_code == want_status and answer == want_answer and reached == want_seen
        failures += not ok
        print(f"{preset:<9} {name:<16} {resp.status_code:>6}  {answer:<32} {report.times(reached):<15} "
              f"{'ok' if ok else 'UNEXPECTED'}")
        return resp

    last = None
    for preset, path, sign, name, secret, ts, tamper, strip, (want_status, want_reason) in scenario_rows(secrets):
        if last and preset != last:
            print()
        last = preset
        delivery = f"evt_{uuid.uuid4().hex[:16]}"
        body = json.dumps({"id": delivery, "type": "demo.event", "amount": 4200}).encode()
        headers = sign(secret, body, ts, delivery)
        if strip:
            headers = {k: v for k, v in headers.items() if k not in SIGNATURE_HEADERS}
        sent = body + b"\n" if tamper else body
        row(preset, name, path, sent, headers, want_status, want_reason or "forwarded", int(want_reason is None))
        if name == "legit":
            # The same signed request again: a replay. Stopped, and Flask saw it once.
            row(preset, "exact replay", path, sent, headers, 409, "replayed", 1)

    print("\n(github and shopify sign no timestamp: their stale/future copies verify as new deliveries;")
    print(" only dedup stops a replay of those, as the 'exact replay' rows show)")

    print("\n== replay protection follows the backend's answer\n")
    print(header)
    print("-" * len(header))
    _, sign, var, _ = PRESETS["github"]
    body = json.dumps({"id": "retry-demo", "n": uuid.uuid4().hex}).encode()
    headers = sign(secrets[var], body, int(time.time()), "retry-demo")
    requests.post(a.backend + "/admin/fail-next?count=1", timeout=5)
    row("github", "backend fails", "/webhooks/github", body, headers, 500, "forwarded (backend failed)", 1)
    row("github", "provider retry", "/webhooks/github", body, headers, 200, "forwarded", 2)
    row("github", "retry again", "/webhooks/github", body, headers, 409, "replayed", 2)

    _, sign, var, _ = PRESETS["stripe"]
    event = f"evt_{uuid.uuid4().hex[:16]}"
    first = json.dumps({"id": event, "attempt": 1}).encode()
    row("stripe", "event delivered", "/webhooks/stripe", first, sign(secrets[var], first, int(time.time()) - 20, event),
        200, "forwarded", 1)
    again = json.dumps({"id": event, "attempt": 2}).encode()
    row("stripe", "re-signed retry", "/webhooks/stripe", again, sign(secrets[var], again, int(time.time()), event),
        409, "replayed", 0)

    # 20 identical deliveries at once, over separate connections (both Envoy workers).
    event = f"evt_{uuid.uuid4().hex[:16]}"
    body = json.dumps({"id": event, "type": "burst"}).encode()
    headers = sign(secrets[var], body, int(time.time()), event)
    requests.post(a.backend + "/admin/slow-next?count=1&seconds=0.5", timeout=5)
    barrier = threading.Barrier(20)

    def burst(_):
        with requests.Session() as s:
            barrier.wait()
            return s.post(a.envoy + "/webhooks/stripe", data=body, headers=headers, timeout=15,
                          verify=verify).status_code
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(burst, range(20)))
    ok = codes.count(200) == 1 and codes.count(409) == 19 and seen(body) == 1
    failures += not ok
    print(f"{'stripe':<9} {'20 at once':<16} {'':>6}  {f'{codes.count(200)} x 200, {codes.count(409)} x 409':<32} "
          f"{report.times(seen(body)):<15} {'ok' if ok else 'UNEXPECTED'}")

    print("\n== encrypted payloads, opened in the proxy (policy 'envelope': AES-256-GCM inside a signed body)\n")
    header2 = f"{'scenario':<30} {'status':>6}  {'answer':<20} {'backend got':<28} check"
    print(header2)
    print("-" * len(header2))

    def envelope_row(name, key, want_status, want_answer, plaintext_arrives, wrap=True):
        nonlocal failures
        plaintext = json.dumps({"id": f"evt_{uuid.uuid4().hex[:16]}", "card": "4242 4242 4242 4242"}).encode()
        body = seal(plaintext, key) if wrap else plaintext
        stamp = str(int(time.time()))
        mac = hmac.new(secrets["ENVELOPE_WEBHOOK_SECRET"].encode(), stamp.encode() + b"." + body,
                       hashlib.sha256).hexdigest()
        resp = requests.post(a.envoy + "/webhooks/envelope", data=body, timeout=15, verify=verify,
                             headers={"Content-Type": "application/json", "X-Webhook-Signature": mac,
                                      "X-Webhook-Timestamp": stamp})
        got_plain, got_envelope = seen(plaintext), seen(body) if wrap else 0
        got = ("the plaintext" if got_plain else "nothing") + (" + the envelope" if got_envelope else "")
        ok = (resp.status_code == want_status and report.answer(resp) == want_answer
              and got_plain == int(plaintext_arrives) and got_envelope == 0)
        failures += not ok
        print(f"{name:<30} {resp.status_code:>6}  {report.answer(resp):<20} {got:<28} {'ok' if ok else 'UNEXPECTED'}")

    def seal(plaintext: bytes, key: bytes) -> bytes:
        nonce = os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, plaintext, None)
        return json.dumps({"encrypted": base64.b64encode(sealed).decode(),
                           "nonce": base64.b64encode(nonce).decode()}).encode()

    current = base64.b64decode(secrets["ENVELOPE_ENCRYPTION_KEY_SECRET"])
    previous = base64.b64decode(secrets["ENVELOPE_ENCRYPTION_KEY_SECRET_PREVIOUS"])
    envelope_row("sealed with the current key", current, 200, "forwarded", True)
    envelope_row("sealed with the previous key", previous, 200, "forwarded", True)
    envelope_row("sealed with an unknown key", os.urandom(32), 400, "decryption_failed", False)
    envelope_row("signed, but not an envelope", current, 400, "malformed_payload", False, wrap=False)
    print("(the backend receives the plaintext with its own content-length and never holds the key)")

    print("\n== what an attacker tries\n")
    header = f"{'scenario':<44} {'status':>6}  {'answer':<22} {'reached backend':<15} check"
    print(header)
    print("-" * len(header))

    def attack(name, send, want_status, want_answer, body, want_seen=0):
        nonlocal failures
        status, answer = send()
        reached = seen(body)
        ok = status in want_status and answer == want_answer and reached == want_seen
        failures += not ok
        print(f"{name:<44} {status:>6}  {answer:<22} {report.times(reached):<15} {'ok' if ok else 'UNEXPECTED'}")

    def raw(method, target, headers, body):
        status = report.raw_request(a.envoy, method, target, headers, body, verify=verify)
        return status, "refused by Envoy" if status == 400 else f"{status}"

    def via_requests(method, path, headers, body):
        resp = requests.request(method, a.envoy + path, data=body, headers=headers, timeout=10, verify=verify)
        return resp.status_code, report.answer(resp)

    body = json.dumps({"id": uuid.uuid4().hex, "unsigned": True}).encode()
    attack("unsigned POST /webhooks%2Fgithub", lambda: raw("POST", "/webhooks%2Fgithub", {}, body), {400},
           "refused by Envoy", body)
    attack("unsigned POST /webhooks/GitHub", lambda: via_requests("POST", "/webhooks/GitHub", {}, body), {400},
           "missing_signature", body)
    attack("GET /events (the backend's own endpoint)", lambda: via_requests("GET", "/events", {}, b""), {403},
           "no_matching_policy", b"never sent")

    _, sign, var, _ = PRESETS["github"]
    body = json.dumps({"id": uuid.uuid4().hex, "n": "method"}).encode()
    headers = sign(secrets[var], body, int(time.time()), "method-demo")
    requests.post(a.backend + "/admin/fail-next?count=1", timeout=5)
    via_requests("POST", "/webhooks/github", headers, body)  # the backend fails: the claim is released
    attack("same signed delivery as OPTIONS", lambda: via_requests("OPTIONS", "/webhooks/github", headers, body),
           {405}, "method_not_allowed", body, want_seen=1)
    attack("  ...then the provider's real retry", lambda: via_requests("POST", "/webhooks/github", headers, body),
           {200}, "forwarded", body, want_seen=2)

    body = json.dumps({"id": uuid.uuid4().hex, "n": "reset"}).encode()
    headers = sign(secrets[var], body, int(time.time()), "reset-demo")
    requests.post(a.backend + "/admin/slow-next?count=3&seconds=0.5", timeout=5)
    for _ in range(3):
        report.send_then_reset(a.envoy, "/webhooks/github", headers, body, after=0.25, verify=verify)
    time.sleep(0.6)
    attack("captured delivery, reset after forwarding x3", lambda: via_requests("POST", "/webhooks/github", headers,
                                                                                 body),
           {409}, "replayed", body, want_seen=1)
    print("(the backend may have processed a delivery whose answer never came: it is kept as delivered,")
    print(" counted in store.unknown_outcome and logged with its delivery id, never released for a replay)")
    print()
    big = b"x" * (64 * 1024 + 1)
    resp = requests.post(a.envoy + "/webhooks/custom", data=big, timeout=10, verify=verify)
    print(f"POST /webhooks/custom with a 64 KiB + 1 body: {resp.status_code} {resp.text}")
    failures += resp.status_code != 413

    report.print_counters(a.admin, "webhook_guard", "Envoy counters")
    return report.finish(failures, "Every forged, stale or unsigned request was answered by Envoy; only genuine "
                                   "ones reached Flask.")


if __name__ == "__main__":
    sys.exit(main())

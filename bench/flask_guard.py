"""The in-app alternative the benchmark compares against: the seeds' approach of verifying
webhooks in a Flask `before_request` hook (Standard Webhooks signature, two-sided window,
in-memory dedup), served by gunicorn. Same scheme and checks as the filter's bench policy."""
import base64
import hashlib
import hmac
import os
import threading
import time

from flask import Flask, abort, jsonify, request

app = Flask(__name__)
SECRET = base64.b64decode(os.environ["BENCH_SECRET"].removeprefix("whsec_"))
TOLERANCE = 3600
_seen: dict[str, float] = {}
_lock = threading.Lock()


@app.before_request
def verify_webhook():
    msg_id = request.headers.get("webhook-id")
    ts = request.headers.get("webhook-timestamp")
    sigs = request.headers.get("webhook-signature")
    if not msg_id or not ts or not sigs:
        return jsonify({"error": "missing_signature"}), 400
    body = request.get_data()
    expected = hmac.new(SECRET, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    if not any(
        v == "v1" and hmac.compare_digest(base64.b64decode(s), expected)
        for v, _, s in (p.partition(",") for p in sigs.split(" "))
    ):
        return jsonify({"error": "invalid_signature"}), 401
    now = time.time()
    if abs(now - int(ts)) > TOLERANCE:
        return jsonify({"error": "timestamp_out_of_window"}), 401
    with _lock:
        if _seen.get(msg_id, 0) > now:
            return jsonify({"error": "replayed"}), 409
        _seen[msg_id] = now + 2 * TOLERANCE


@app.post("/webhook")
def webhook():
    return "ok"


if not os.environ.get("BENCH_SECRET"):
    abort(500)

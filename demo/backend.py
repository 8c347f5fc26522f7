#!/usr/bin/env python3
"""Demo webhook backend (Flask): records every webhook that reaches it.

Two servers, so the proxy never exposes the control endpoints:
  webhooks (WEBHOOK_DEMO_BACKEND_PORT, default 5000; bound to BACKEND_HOST, default 127.0.0.1):
    POST /webhooks/<route>        record the delivery, answer 200 (or 500 while fail-next > 0)
  admin (WEBHOOK_DEMO_BACKEND_ADMIN_PORT, default 5001; always 127.0.0.1):
    GET  /events                  {"events": [{"route": ..., ...}]}: every webhook that reached us
    POST /admin/fail-next?count=N the next N webhook requests answer 500
    POST /admin/slow-next?count=N&seconds=S   the next N webhook requests take S seconds
    POST /admin/reset             forget recorded events and pending failures
    GET  /healthz                 readiness (also served on the webhooks port)
Like most Flask apps, the webhook route also answers OPTIONS by itself (Flask's automatic
200): the proxy must never let a verified delivery's copy reach it with another method.
"""
import hashlib
import os
import threading
import time

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

hooks = Flask("webhooks")
admin = Flask("admin")
_lock = threading.Lock()
_events: list[dict] = []
_fail_next = 0
_slow_next = 0
_slow_seconds = 0.0

# Headers worth showing in /events: ids and event types, never signatures.
_SHOWN_HEADERS = (
    "X-GitHub-Delivery",
    "X-GitHub-Event",
    "X-Shopify-Webhook-Id",
    "X-Shopify-Topic",
    "Webhook-Id",
    "X-Webhook-Id",
    # What the backend was told the body is (a decrypted payload's type, not the envelope's).
    "Content-Type",
)


@hooks.route("/webhooks/<path:route>", methods=["POST", "PUT", "PATCH", "DELETE", "GET"])
def webhook(route: str):
    global _fail_next, _slow_next
    body = request.get_data()
    with _lock:
        delay = _slow_seconds if _slow_next > 0 else 0.0
        _slow_next = max(0, _slow_next - 1)
    if delay:
        time.sleep(delay)
    with _lock:
        failing = _fail_next > 0
        if failing:
            _fail_next -= 1
        _events.append(
            {
                "route": route,
                "method": request.method,
                "path": request.path,
                "received_at": time.time(),
                "status": 500 if failing else 200,
                "body_sha256": hashlib.sha256(body).hexdigest(),
                "body_bytes": len(body),
                "headers": {h: request.headers[h] for h in _SHOWN_HEADERS if h in request.headers},
            }
        )
    if failing:
        return jsonify({"status": "error", "detail": "fail-next is set"}), 500
    return jsonify({"status": "ok", "route": route})


@admin.get("/events")
def events():
    with _lock:
        return jsonify({"events": list(_events)})


@admin.post("/admin/fail-next")
def fail_next():
    global _fail_next
    count = request.args.get("count", default=1, type=int)
    with _lock:
        _fail_next = max(0, count)
        return jsonify({"fail_next": _fail_next})


@admin.post("/admin/slow-next")
def slow_next():
    global _slow_next, _slow_seconds
    with _lock:
        _slow_next = max(0, request.args.get("count", default=1, type=int))
        _slow_seconds = min(30.0, max(0.0, request.args.get("seconds", default=1.0, type=float)))
        return jsonify({"slow_next": _slow_next, "seconds": _slow_seconds})


@admin.post("/admin/reset")
def reset():
    global _fail_next, _slow_next
    with _lock:
        _events.clear()
        _fail_next = 0
        _slow_next = 0
    return jsonify({"status": "reset"})


@admin.get("/healthz")
@hooks.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


def main() -> None:
    port = int(os.environ.get("WEBHOOK_DEMO_BACKEND_PORT", "5000"))
    admin_port = int(os.environ.get("WEBHOOK_DEMO_BACKEND_ADMIN_PORT", str(port + 1)))
    host = os.environ.get("BACKEND_HOST", "127.0.0.1")
    control = make_server("127.0.0.1", admin_port, admin, threaded=True)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    hooks.run(host=host, port=port, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()

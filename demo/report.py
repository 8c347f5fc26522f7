"""Shared bits of the demo's scenario tables: what the filter answered, how often the backend
saw a body, the counters at the end, and the exit status."""
from __future__ import annotations

import hashlib
import socket
import ssl
import struct
import sys
import time
from urllib.parse import urlsplit

import requests


def answer(resp: requests.Response) -> str:
    """The filter's reason code, or `forwarded` when the request reached the backend."""
    try:
        text = resp.json().get("error") or "forwarded"
    except ValueError:
        text = "forwarded" if resp.status_code < 400 else resp.text[:32]
    if text == "forwarded" and resp.status_code >= 500:
        text = "forwarded (backend failed)"
    return text


def seen(backend: str, body: bytes) -> int:
    """How many times the backend received exactly this body."""
    digest = hashlib.sha256(body).hexdigest()
    events = requests.get(backend + "/events", timeout=5).json()["events"]
    return sum(e["body_sha256"] == digest for e in events)


def times(n: int) -> str:
    return {0: "no", 1: "once"}.get(n, f"{n} times")


def print_counters(admin: str, pattern: str, title: str) -> None:
    stats = requests.get(admin + "/stats", params={"filter": pattern}, timeout=5).text
    print(f"\n{title} (non-zero):")
    for line in stats.splitlines():
        if not line.endswith(": 0"):
            print("  " + line)


def finish(failures: int, success: str) -> int:
    if failures:
        print(f"\n{failures} scenario(s) did not behave as expected", file=sys.stderr)
        return 1
    print("\n" + success)
    return 0


def _connect(envoy: str, verify) -> socket.socket:
    url = urlsplit(envoy)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    if url.scheme == "https":
        ctx = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
        sock = ctx.wrap_socket(sock, server_hostname=url.hostname)
    return sock


def _request_bytes(method: str, target: str, headers: dict, body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def raw_request(envoy: str, method: str, target: str, headers: dict, body: bytes, verify=True) -> int:
    """One request with the target sent exactly as given (no client-side normalisation)."""
    with _connect(envoy, verify) as sock:
        sock.sendall(_request_bytes(method, target, headers, body))
        line = sock.recv(4096).split(b"\r\n", 1)[0].split(b" ")
    return int(line[1]) if len(line) > 1 and line[1].isdigit() else 0


def send_then_reset(envoy: str, target: str, headers: dict, body: bytes, after: float, verify=True) -> None:
    """Sends a whole request, waits, then drops the connection with a TCP reset."""
    sock = _connect(envoy, verify)
    sock.sendall(_request_bytes("POST", target, headers, body))
    time.sleep(after)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()

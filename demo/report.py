"""Shared bits of the demo's scenario tables: what the filter answered, how often the backend
saw a body, the counters at the end, and the exit status."""
from __future__ import annotations

import hashlib
import sys

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

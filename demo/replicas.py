#!/usr/bin/env python3
"""The two-replica demo: the same deliveries sent to different Envoy replicas that share etcd.

Shows that a delivery is admitted once whichever replica it reaches, that a failed delivery is
released for the provider's retry on another replica, and that an unreachable etcd fails
closed. Exits non-zero if any outcome differs. Used by `scripts/demo.sh --replicas 2`.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import sys
import threading
import time
import uuid

import requests

import report
from signers import PRESETS


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--envoy", action="append", required=True, help="a replica's URL (repeat)")
    p.add_argument("--admin", action="append", required=True, help="a replica's admin URL (repeat)")
    p.add_argument("--backend", required=True)
    p.add_argument("--etcd-pid", type=int, required=True, help="paused (SIGSTOP) to show an etcd outage")
    a = p.parse_args()
    secrets = {k: v for k, v in os.environ.items() if k.endswith(("_SECRET", "_SECRET_PREVIOUS"))}
    replicas = a.envoy
    failures = 0

    def seen(body: bytes) -> int:
        return report.seen(a.backend, body)

    header = f"{'replica':<8} {'scenario':<28} {'status':>6}  {'filter answer':<26} {'reached backend':<15} check"
    print(header)
    print("-" * len(header))

    def row(replica, name, path, body, headers, want_status, want_answer, want_seen):
        nonlocal failures
        resp = requests.post(replicas[replica] + path, data=body, headers=headers, timeout=15)
        answer = report.answer(resp)
        reached = seen(body)
        ok = resp.status_code == want_status and answer == want_answer and reached == want_seen
        failures += not ok
        print(f"{'#' + str(replica + 1):<8} {name:<28} {resp.status_code:>6}  {answer:<26} {report.times(reached):<15} "
              f"{'ok' if ok else 'UNEXPECTED'}")

    def delivery(preset, delivery_id=None):
        _, sign, var, _ = PRESETS[preset]
        delivery_id = delivery_id or f"evt_{uuid.uuid4().hex[:16]}"
        body = json.dumps({"id": delivery_id, "type": "demo.event", "n": uuid.uuid4().hex[:8]}).encode()
        return body, sign(secrets[var], body, int(time.time()), delivery_id)

    body, headers = delivery("github")
    row(0, "delivery", "/webhooks/github", body, headers, 200, "forwarded", 1)
    row(1, "same delivery, other replica", "/webhooks/github", body, headers, 409, "replayed", 1)
    row(0, "replay, first replica", "/webhooks/github", body, headers, 409, "replayed", 1)
    print()

    body, headers = delivery("github")
    requests.post(a.backend + "/admin/fail-next?count=1", timeout=5)
    row(0, "backend fails", "/webhooks/github", body, headers, 500, "forwarded (backend failed)", 1)
    row(1, "retry, other replica", "/webhooks/github", body, headers, 200, "forwarded", 2)
    row(0, "retry again", "/webhooks/github", body, headers, 409, "replayed", 2)
    print()

    event = f"evt_{uuid.uuid4().hex[:16]}"
    _, sign, var, _ = PRESETS["stripe"]
    first = json.dumps({"id": event, "attempt": 1}).encode()
    row(0, "stripe event", "/webhooks/stripe", first, sign(secrets[var], first, int(time.time()) - 20, event),
        200, "forwarded", 1)
    again = json.dumps({"id": event, "attempt": 2}).encode()
    row(1, "re-signed retry, other rep.", "/webhooks/stripe", again,
        sign(secrets[var], again, int(time.time()), event), 409, "replayed", 0)
    print()

    # 20 identical deliveries at once, alternating replicas, over separate connections.
    body, headers = delivery("stripe")
    requests.post(a.backend + "/admin/slow-next?count=1&seconds=0.5", timeout=5)
    barrier = threading.Barrier(20)

    def burst(i):
        with requests.Session() as s:
            barrier.wait()
            return s.post(replicas[i % len(replicas)] + "/webhooks/stripe", data=body, headers=headers,
                          timeout=15).status_code
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(burst, range(20)))
    ok = codes.count(200) == 1 and codes.count(409) == 19 and seen(body) == 1
    failures += not ok
    print(f"{'both':<8} {'20 at once, alternating':<28} {'':>6}  "
          f"{f'{codes.count(200)} x 200, {codes.count(409)} x 409':<26} "
          f"{report.times(seen(body)):<15} {'ok' if ok else 'UNEXPECTED'}")
    print()

    os.kill(a.etcd_pid, signal.SIGSTOP)
    try:
        body, headers = delivery("github")
        row(1, "etcd not answering", "/webhooks/github", body, headers, 503, "store_unavailable", 0)
    finally:
        os.kill(a.etcd_pid, signal.SIGCONT)
    # etcd may apply the timed-out claim once it resumes; the replica's root releases that
    # orphan within a second or two. Providers retry later than that.
    time.sleep(2.5)
    row(1, "etcd back: provider retry", "/webhooks/github", body, headers, 200, "forwarded", 1)

    for i, admin in enumerate(a.admin):
        report.print_counters(admin, r"webhook_guard\.(etcd|store)", f"replica #{i + 1} store counters")
    return report.finish(failures, "Each delivery reached Flask once, whichever replica it was sent to.")


if __name__ == "__main__":
    sys.exit(main())

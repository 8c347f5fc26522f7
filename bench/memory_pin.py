#!/usr/bin/env python3
"""What an unauthenticated client can make Envoy hold in memory with webhook-guard in front of
it: N HTTP/2 connections, each opening S unsigned GitHub deliveries that declare and send up to
1 MiB and never end. Samples Envoy's heap (admin /memory) during the attack and after it.

    .venv/bin/python bench/memory_pin.py --connections 40 --heap-mib 256
    .venv/bin/python bench/memory_pin.py --streams 150 --connections 1      # more than allowed

Loopback only, bounded (--seconds). Prints one JSON line. docs/security.md has the results.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests/e2e"), str(ROOT / "demo")]
from attacks import pin_streams  # noqa: E402
from harness import DEMO_CONFIG, Backend, Envoy  # noqa: E402
from signers import fresh_secrets  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=40)
    p.add_argument("--streams", type=int, default=16, help="streams per connection")
    p.add_argument("--heap-mib", type=int, default=256, help="the overload manager's heap budget")
    p.add_argument("--seconds", type=float, default=20, help="how long the attack holds its streams")
    p.add_argument("--template", type=pathlib.Path, help="another Envoy template (e.g. an older one)")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="webhook-guard-mem-") as d:
        work = pathlib.Path(d)
        backend = Backend(work)
        envoy = Envoy(work, backend.port, DEMO_CONFIG.read_text(), fresh_secrets(),
                      max_heap_bytes=a.heap_mib << 20, template=a.template)
        try:
            before = envoy.heap_mib()
            conns, resets, lock = [], [], threading.Lock()

            def attack():
                c, refused = pin_streams(envoy.port, a.streams)
                with lock:
                    conns.append(c)
                    resets.append(refused)

            threads = [threading.Thread(target=attack, daemon=True) for _ in range(a.connections)]
            for t in threads:
                t.start()
            peak, start = before, time.monotonic()
            while time.monotonic() - start < a.seconds:
                peak = max(peak, envoy.heap_mib())
                time.sleep(0.1)
            for t in threads:
                t.join(timeout=5)
            for c in conns:
                c.close()
            time.sleep(3)
            print(json.dumps({
                "connections": a.connections, "streams_per_connection": a.streams,
                "offered_mib": a.connections * a.streams, "heap_budget_mib": a.heap_mib,
                "heap_before_mib": round(before, 1), "heap_peak_mib": round(peak, 1),
                "heap_after_mib": round(envoy.heap_mib(), 1), "streams_refused_or_reset": sum(resets),
                "overload_stats": {k: v for k, v in envoy.stats("overload.").items() if v},
            }))
        finally:
            envoy.stop()
            backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

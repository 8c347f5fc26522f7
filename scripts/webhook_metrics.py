#!/usr/bin/env python3
"""The three key metrics of webhook-guard, computed from Envoy's /stats/prometheus (counters and
the verdict-latency histogram, cumulative since Envoy started) the way the recording rules of
deploy/prometheus/webhook-guard.rules.yml compute them from rates:

- signature validation success: accepted / (accepted + invalid/malformed/missing signature)
  (timestamp reasons, replays and the rest count on neither side; docs/operations.md says why);
- replay detection: replays rejected (`replayed` + `in_flight`), and accepted deliveries admitted
  without a recorded claim (`etcd.failed_open` + `store.commit_failed`: 0 means every copy inside
  the retention is refused);
- receipt-to-validation latency: p99 of the verdict histogram and the share under 150 ms.

    scripts/webhook_metrics.py --admin http://127.0.0.1:9901 [--admin ...]   (replicas are summed)

Used by scripts/demo.sh at the end of a run; tests/e2e/test_prometheus.py checks that it agrees
with the recording rules evaluated by a real Prometheus.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections import defaultdict

import requests

SIGNATURE_REASONS = ("invalid_signature", "malformed_signature", "missing_signature")
REPLAY_REASONS = ("replayed", "in_flight")
TARGET_SUCCESS = 0.999
TARGET_LATENCY_US = 150_000
_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text exposition: (name, labels, value) per sample line."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line)
        if m and not line.startswith("#"):
            out.append((m[1], dict(_LABEL.findall(m[2] or "")), float(m[3])))
    return out


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile() as Prometheus computes it, from cumulative (le, count) pairs."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # the highest finite bound, as Prometheus answers
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


class Metrics:
    """Per policy, summed over the given scrapes (one per Envoy)."""

    def __init__(self, texts: list[str]):
        self.counter = defaultdict(float)       # (name, policy, reason) -> value
        self.buckets = defaultdict(lambda: defaultdict(float))  # policy -> le -> count
        self.policies: set[str] = set()
        for text in texts:
            for name, labels, value in parse(text):
                if not name.startswith("envoy_webhook_guard_"):
                    continue
                policy = labels.get("webhook_policy", "")
                if policy:
                    self.policies.add(policy)
                if name == "envoy_webhook_guard_policy_verdict_latency_us_bucket":
                    self.buckets[policy][float(labels["le"])] += value
                else:
                    self.counter[(name, policy, labels.get("webhook_reason", ""))] += value

    def get(self, name: str, policy: str = "", reason: str = "") -> float:
        return self.counter[("envoy_webhook_guard_" + name, policy, reason)]

    def reasons(self, policy: str, reasons) -> float:
        return sum(self.get("policy_reason", policy, r) for r in reasons)

    def verdicts(self, policy: str) -> float:
        return sum(self.get(n, policy) for n in ("policy_accepted", "policy_rejected", "policy_challenges_answered"))

    def flushed(self) -> bool:
        """Envoy merges histograms into /stats every 5 s: has it caught up with the counters?"""
        return all(self.get("policy_verdict_latency_us_count", p) == self.verdicts(p) for p in self.policies)

    def row(self, policies: list[str]) -> dict:
        accepted = sum(self.get("policy_accepted", p) for p in policies)
        failed = sum(self.reasons(p, SIGNATURE_REASONS) for p in policies)
        buckets = defaultdict(float)
        for p in policies:
            for le, count in self.buckets[p].items():
                buckets[le] += count
        pairs = sorted(buckets.items())
        count = buckets.get(math.inf, 0.0)
        under = buckets.get(float(TARGET_LATENCY_US), math.nan)
        p99 = quantile(0.99, pairs)
        return {
            "accepted": accepted,
            "signature_failed": failed,
            "signature_success": accepted / (accepted + failed) if accepted + failed else math.nan,
            "replayed": sum(self.get("policy_reason", p, "replayed") for p in policies),
            "in_flight": sum(self.get("policy_reason", p, "in_flight") for p in policies),
            "verdicts": count,
            "p99_us": p99,
            # The histogram's bucket that holds the p99: what the data can really say.
            "p99_bound_us": next((le for le, c in pairs if c >= 0.99 * count), math.nan) if count else math.nan,
            "under_150ms": under / count if count else math.nan,
        }


def scrape(admins: list[str]) -> Metrics:
    return Metrics([requests.get(a + "/stats/prometheus", timeout=5).text for a in admins])


def settled(admins: list[str], timeout: float = 8.0) -> tuple[Metrics, bool]:
    """Scrapes until the histograms hold every verdict the counters saw (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(admins)
        if m.flushed() or time.monotonic() > deadline:
            return m, m.flushed()
        time.sleep(0.5)


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.2f} %"


def _ms(us: float) -> str:
    if math.isnan(us):
        return "-"
    return f"{us / 1000:g} ms" if not math.isinf(us) else "> 10 s"


def report(m: Metrics, complete: bool) -> None:
    header = (f"   {'policy':<10} {'signature success':<26} {'replays rejected':<31} "
              f"{'p99 latency':<12} {'under 150 ms'}")
    print(header)
    print("   " + "-" * (len(header) - 3))
    policies = sorted(m.policies)
    for name, group in [(p, [p]) for p in policies] + [("all", policies)]:
        r = m.row(group)
        tries = r["accepted"] + r["signature_failed"]
        success = f"{_pct(r['signature_success'])} ({r['accepted']:.0f} of {tries:.0f})" if tries else "- (no traffic)"
        replays = (f"{r['replayed'] + r['in_flight']:.0f} ({r['replayed']:.0f} replayed, "
                   f"{r['in_flight']:.0f} in flight)")
        p99 = f"<= {_ms(r['p99_bound_us'])}" if r["verdicts"] else "-"
        print(f"   {name:<10} {success:<26} {replays:<31} {p99:<12} {_pct(r['under_150ms'])}")
    accepted = m.row(policies)["accepted"]
    unprotected = m.get("etcd_failed_open") + m.get("store_commit_failed")
    print(f"   replay protection: {unprotected:.0f} of {accepted:.0f} accepted deliveries admitted without a "
          f"recorded claim (etcd failed open, commit failed)")
    print(f"   targets: signature success > {100 * TARGET_SUCCESS:g} % of real senders' deliveries, p99 < "
          f"{TARGET_LATENCY_US // 1000} ms (p99 is the histogram bucket that holds it)")
    if not complete:
        print("   (Envoy had not yet merged every verdict into its histogram: latency covers fewer verdicts)")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--admin", action="append", required=True, help="an Envoy admin URL (repeat for replicas)")
    a = p.parse_args()
    report(*settled(a.admin))
    return 0


if __name__ == "__main__":
    sys.exit(main())

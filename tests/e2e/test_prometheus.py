"""A real Prometheus (Debian's `prometheus`, installed by scripts/setup.sh) scraping a real Envoy
every second with deploy/prometheus/webhook-guard.rules.yml loaded: after known signed traffic
(accepted, forged, unsigned, malformed, stale, replayed, in flight), each recording rule gives
the value that traffic implies, the series the rules read exist, every rule evaluates without
error, and the replay alert fires."""
from __future__ import annotations

import concurrent.futures
import json
import math
import shutil
import subprocess
import time
import uuid

import pytest
import requests
import yaml

import promql
import webhook_metrics
from harness import DEMO_CONFIG, ROOT, Stack, free_port, stop_process, wait_until
from signers import PRESETS, fresh_secrets

RULES = ROOT / "deploy/prometheus/webhook-guard.rules.yml"


class Prometheus:
    """Debian's prometheus on loopback: scrapes `targets` (Envoy admin ports) every second and
    evaluates the rules file every second; its storage lives in `workdir`."""

    def __init__(self, workdir, targets: list[str]):
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run scripts/setup.sh")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "envoy", "metrics_path": "/stats/prometheus",
                                "static_configs": [{"targets": targets}]}],
        }))
        self.log_path = workdir / "prometheus.log"
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log_path.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            return requests.get(self.url + "/-/ready", timeout=1).status_code == 200
        wait_until(ready, 20, "prometheus /-/ready")

    def api(self, path: str, **params) -> dict | list:
        body = requests.get(self.url + "/api/v1/" + path, params=params, timeout=5).json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> dict[str, float]:
        """Instant query: value by webhook_policy (or job, for job-level results)."""
        out = {}
        for series in self.api("query", query=expr)["result"]:
            labels = series["metric"]
            out[labels.get("webhook_policy") or labels.get("job", "")] = float(series["value"][1])
        return out

    def stop(self) -> None:
        stop_process(self.proc)


def _expect(resp: requests.Response, status: int, reason: str | None = None) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    if reason:
        assert resp.json()["error"] == reason, resp.text


def send_traffic(stack: Stack, secrets: dict[str, str]) -> None:
    """stripe: 5 accepted, 2 replayed, 1 in flight, 1 forged, 1 unsigned, 1 stale;
    github: 3 accepted, 1 replayed, 1 malformed signature. Nothing for the other policies."""
    now = int(time.time())
    path, sign, var, _ = PRESETS["stripe"]

    def event() -> bytes:
        return json.dumps({"id": f"evt_{uuid.uuid4().hex}", "type": "invoice.paid"}).encode()

    first = event()
    first_headers = sign(secrets[var], first, now, "")
    _expect(stack.post(path, first, first_headers), 200)
    for _ in range(3):
        body = event()
        _expect(stack.post(path, body, sign(secrets[var], body, now, "")), 200)
    for _ in range(2):
        _expect(stack.post(path, first, first_headers), 409, "replayed")
    slow = event()
    slow_headers = sign(secrets[var], slow, now, "")
    stack.backend.slow_next(1, 1.5)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        original = pool.submit(stack.post, path, slow, slow_headers)
        wait_until(lambda: stack.envoy.stats().get("webhook_guard.policy.stripe.accepted") == 5, 5,
                   "the slow delivery's claim")
        _expect(stack.post(path, slow, slow_headers), 409, "in_flight")
        _expect(original.result(), 200)
    forged = event()
    _expect(stack.post(path, forged, sign("whsec_" + "0" * 32, forged, now, "")), 401, "invalid_signature")
    _expect(stack.post(path, event(), {"Content-Type": "application/json"}), 400, "missing_signature")
    stale = event()
    _expect(stack.post(path, stale, sign(secrets[var], stale, now - 1000, "")), 401, "timestamp_out_of_window")

    path, sign, var, _ = PRESETS["github"]
    bodies = [json.dumps({"n": i, "u": uuid.uuid4().hex}).encode() for i in range(3)]
    for i, body in enumerate(bodies):
        _expect(stack.post(path, body, sign(secrets[var], body, now, f"d{i}")), 200)
    _expect(stack.post(path, bodies[0], sign(secrets[var], bodies[0], now, "d0")), 409, "replayed")
    _expect(stack.post(path, b"{}", {"X-Hub-Signature-256": "sha256=zz"}), 400, "malformed_signature")


# (expression, policy or job, expected value): exact up to float rounding. Rates over [5m] are
# extrapolated from the few samples there are, by the same factor for every series of a scrape
# (all counters start at 0 before the first delivery), so ratios of them are exact.
EXACT = [
    ('envoy_webhook_guard_policy_accepted', "stripe", 5),
    ('envoy_webhook_guard_policy_accepted', "github", 3),
    ('envoy_webhook_guard_policy_verdict_latency_us_count', "stripe", 11),  # Envoy flushes every 5 s
    ('envoy_webhook_guard_policy_verdict_latency_us_count', "github", 5),
    # 5 live deliveries in stripe's share, 3 in github's: counted by the sweep (every 10 s).
    ('envoy_webhook_guard_policy_store_entries', "stripe", 5),
    ('envoy_webhook_guard_policy_store_entries', "github", 3),
    ("job_policy:webhook_guard_signature_success:ratio_rate5m", "stripe", 5 / 7),
    ("job_policy:webhook_guard_signature_success:ratio_rate5m", "github", 3 / 4),
    ("job_policy:webhook_guard_signature_success:ratio_rate1h", "stripe", 5 / 7),
    ("job_policy:webhook_guard_signature_success:ratio_rate1h", "github", 3 / 4),
    ("job_policy:webhook_guard_replays_rejected:rate5m / job_policy:webhook_guard_accepted:rate5m", "stripe", 3 / 5),
    ("job_policy:webhook_guard_replays_rejected:rate5m / job_policy:webhook_guard_accepted:rate5m", "github", 1 / 3),
    ("job_policy:webhook_guard_in_flight:rate5m / job_policy:webhook_guard_replayed:rate5m", "stripe", 1 / 2),
    ("job_policy:webhook_guard_signature_rejected:rate5m / job_policy:webhook_guard_accepted:rate5m", "stripe", 2 / 5),
    ('job_policy_reason:webhook_guard_rejected:rate5m{webhook_reason="timestamp_out_of_window"}'
     " / ignoring(webhook_reason) job_policy:webhook_guard_accepted:rate5m", "stripe", 1 / 5),
    ("job_policy:webhook_guard_rejected:rate5m / job_policy:webhook_guard_accepted:rate5m", "stripe", 6 / 5),
    ("job:webhook_guard_replay_protected:ratio_rate5m", "envoy", 1),
    ("job_policy:webhook_guard_verdict_latency_under_150ms:ratio_rate5m", "stripe", 1),
    ("job_policy:webhook_guard_verdict_latency_under_150ms:ratio_rate5m", "github", 1),
]


def mismatches(prom: Prometheus) -> list[str]:
    out = []
    for expr, key, want in EXACT:
        got = prom.query(expr).get(key)
        if got is None or not math.isclose(got, want, rel_tol=1e-9):
            out.append(f"{expr} [{key}] = {got}, want {want}")
    return out


@pytest.fixture(scope="module")
def scraped(build):
    secrets = fresh_secrets()
    stack = Stack(DEMO_CONFIG.read_text(), secrets)
    prom = None
    try:
        prom = Prometheus(stack.workdir, [f"127.0.0.1:{stack.envoy.admin_port}"])
        # A first scrape before any delivery: every counter's first sample is 0.
        wait_until(lambda: prom.query("envoy_webhook_guard_policy_accepted").get("stripe") == 0, 15,
                   "the first scrape")
        send_traffic(stack, secrets)
        deadline = time.monotonic() + 25
        while mismatches(prom) and time.monotonic() < deadline:
            time.sleep(0.5)
        yield stack, prom
    finally:
        if prom:
            prom.stop()
        stack.stop()


def test_recording_rules_give_the_values_the_traffic_implies(scraped):
    stack, prom = scraped
    assert mismatches(prom) == []
    # Latency: loopback verdicts take well under the target; quantiles are in seconds.
    for q in ("p50", "p95", "p99", "mean"):
        got = prom.query(f"job_policy:webhook_guard_verdict_latency_seconds:{q}_5m")
        assert 0 < got["stripe"] <= 0.15 and 0 < got["github"] <= 0.15, (q, got)
    # The store share: 5 entries out of stripe's capacity.
    capacity = prom.query("envoy_webhook_guard_policy_store_capacity")["stripe"]
    assert capacity > 0
    assert math.isclose(prom.query("job_policy:webhook_guard_store_fill:ratio")["stripe"], 5 / capacity)


def test_every_rule_has_series_and_evaluates_cleanly(scraped):
    _, prom = scraped
    names = set(prom.api("label/__name__/values"))
    assert promql.EXPORTED <= names, sorted(promql.EXPORTED - names)
    assert promql.raw_names(RULES) <= promql.EXPORTED, sorted(promql.raw_names(RULES) - promql.EXPORTED)
    for record in sorted(promql.recorded(RULES)):
        assert prom.api("query", query=record)["result"], f"{record} has no series"

    def healthy():
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        return len(rules) == len(promql.rules(RULES)) and all(r["health"] == "ok" for r in rules)
    wait_until(healthy, 5, "every rule evaluated")


def test_the_replay_alert_fires_and_nothing_else(scraped):
    _, prom = scraped
    firing = {(a["labels"]["alertname"], a["labels"].get("webhook_policy"))
              for a in prom.api("alerts")["alerts"] if a["state"] == "firing"}
    assert firing == {("WebhookGuardReplaysSeen", "stripe"), ("WebhookGuardReplaysSeen", "github")}


def test_the_demo_summary_agrees_with_the_recording_rules(scraped):
    """scripts/webhook_metrics.py (what scripts/demo.sh prints) computes the key metrics from
    Envoy's cumulative counters: the same numbers as the rules from Prometheus's rates."""
    stack, prom = scraped
    metrics = webhook_metrics.scrape([stack.envoy.admin])
    assert metrics.flushed()
    p99 = prom.query("job_policy:webhook_guard_verdict_latency_seconds:p99_5m")
    for policy in ("stripe", "github"):
        row = metrics.row([policy])
        assert math.isclose(row["signature_success"],
                            prom.query("job_policy:webhook_guard_signature_success:ratio_rate5m")[policy])
        assert math.isclose(row["p99_us"] / 1e6, p99[policy], rel_tol=1e-9)
        assert row["under_150ms"] == 1
    assert metrics.row(["stripe"])["replayed"] == 2 and metrics.row(["stripe"])["in_flight"] == 1

"""The Grafana dashboard (deploy/grafana/) and the runbook (docs/operations.md) against the rules
file: every query reads only recorded or exported names, the key metrics have panels, and every
alert's runbook_url lands on a section of its own. Files only: no Envoy, no Prometheus."""
import json
import re

import pytest

import promql
from harness import ROOT

DASHBOARD = ROOT / "deploy/grafana/webhook-guard.dashboard.json"
RULES = ROOT / "deploy/prometheus/webhook-guard.rules.yml"
RUNBOOK = ROOT / "docs/operations.md"

# The files do not depend on the build: one run is enough.
pytestmark = pytest.mark.build("wasm")


def known_names() -> set[str]:
    return promql.recorded(RULES) | promql.EXPORTED


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(d: dict) -> list[dict]:
    """Every panel, rows included, and those nested in collapsed rows."""
    out = []
    for panel in d["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def graph_panels(d: dict) -> list[dict]:
    return [p for p in all_panels(d) if p["type"] != "row"]


def variable_expr(query) -> str:
    """The PromQL a Prometheus template variable runs: label_values(selector, label) reads the
    selector's metric; query_result(expr) the expression's."""
    if isinstance(query, dict):
        query = query.get("query", "")
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query, re.S)
    if m:
        return m[1]
    m = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.S)
    return m[1] if m else query


def unknown(expr: str) -> set[str]:
    return promql.metric_names(expr) - known_names()


def test_the_dashboard_is_valid_json_with_unique_panel_ids():
    d = dashboard()
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
    ids = [p["id"] for p in all_panels(d)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert graph_panels(d)


def test_every_panel_queries_only_recorded_or_exported_names():
    d = dashboard()
    for panel in graph_panels(d):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{panel['title']}: no unit"
        assert panel.get("targets"), f"{panel['title']}: no target"
        for target in panel["targets"]:
            names = promql.metric_names(target["expr"])
            assert names, f"{panel['title']}: {target['expr']} reads no metric"
            assert not names - known_names(), (panel["title"], sorted(names - known_names()))
    read = set().union(*(promql.metric_names(t["expr"]) for p in graph_panels(d) for t in p["targets"]))
    # The dashboard leans on the recording rules where one fits.
    assert len(read & promql.recorded(RULES)) >= 15, sorted(read & promql.recorded(RULES))


def test_the_template_variables():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variable_expr(variables["job"]["query"]) == "envoy_webhook_guard_policy_accepted"
    assert "webhook_policy)" in variables["policy"]["query"]
    for name in ("job", "policy"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"]["uid"] == "${datasource}"
        for query in (v["query"], v.get("definition", "")):
            names = promql.metric_names(variable_expr(query))
            assert names and not names - known_names(), (name, query)


def test_a_misspelt_name_is_caught():
    """The checks above would see a typo: metric_names returns the misspelt name, outside the
    known set, and leaves functions, labels, Grafana variables and numbers out."""
    bad = 'sum by (webhook_policy) (rate(envoy_webhook_guard_policy_acepted{job=~"$job"}[$__rate_interval])) > 0.1'
    assert promql.metric_names(bad) == {"envoy_webhook_guard_policy_acepted"}
    assert unknown(bad) == {"envoy_webhook_guard_policy_acepted"}
    bad_rule = 'job_policy:webhook_guard_signature_sucess:ratio_rate5m{webhook_policy=~"$policy"}'
    assert unknown(bad_rule) == {"job_policy:webhook_guard_signature_sucess:ratio_rate5m"}
    assert unknown('job_policy:webhook_guard_signature_success:ratio_rate5m{webhook_policy=~"$policy"}') == set()
    assert variable_expr("label_values(envoy_webhook_guard_policy_acepted, job)") == \
        "envoy_webhook_guard_policy_acepted"


def test_the_key_metrics_have_panels_with_their_targets():
    panels = graph_panels(dashboard())

    def reading(*names):
        return [p for p in panels if set(names) <= set().union(*(promql.metric_names(t["expr"]) for t in p["targets"]))]

    def thresholds(panel):
        return {s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]}

    success = reading("job_policy:webhook_guard_signature_success:ratio_rate5m") + \
        reading("job_policy:webhook_guard_signature_success:ratio_rate1h")
    assert success and any(0.999 in thresholds(p) for p in success)
    assert reading("job_policy:webhook_guard_replays_rejected:rate5m") or \
        reading("job_policy:webhook_guard_replayed:rate5m", "job_policy:webhook_guard_in_flight:rate5m")
    p99 = reading("job_policy:webhook_guard_verdict_latency_seconds:p99_5m")
    assert p99 and all(0.15 in thresholds(p) and p["fieldConfig"]["defaults"]["unit"] == "s" for p in p99)


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lowercased, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_its_runbook_section():
    alerts = [r for r in promql.rules(RULES) if "alert" in r]
    names = {a["alert"] for a in alerts}
    assert len(names) == len(alerts)
    text = RUNBOOK.read_text()
    headings = re.findall(r"^#{1,6} (.+?)\s*$", text, re.M)
    anchors = {github_anchor(h) for h in headings}
    for alert in alerts:
        url = alert["annotations"]["runbook_url"]
        assert url == f"docs/operations.md#{alert['alert'].lower()}", (alert["alert"], url)
        assert url.split("#")[1] in anchors, url
    sections = set(re.findall(r"^## (WebhookGuard\w*)\s*$", text, re.M))
    assert sections == names, (sorted(names - sections), sorted(sections - names))
    # No other heading level names an alert, and no heading repeats one.
    assert len(re.findall(r"^#+ WebhookGuard", text, re.M)) == len(names)


def test_the_runbooks_links_resolve():
    """Relative links of docs/operations.md: the file exists, and so does the anchor."""
    text = RUNBOOK.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (RUNBOOK.parent / file).resolve() if file else RUNBOOK
        assert path.exists(), target
        if anchor:
            headings = re.findall(r"^#{1,6} (.+?)\s*$", path.read_text(), re.M)
            assert anchor in {github_anchor(h) for h in headings}, target

"""The metric names a PromQL expression (or a Grafana panel's) reads: enough of a lexer to tell
metric names from functions, keywords, labels, strings, durations and numbers; the rules file's
recorded and raw names; and EXPORTED, the raw names Envoy exports."""
from __future__ import annotations

import pathlib
import re

import yaml

# What /stats/prometheus exports (both builds, with the stats_tags of envoy/envoy.yaml.tmpl):
# the names docs/operations.md, the rules and the dashboard rely on. test_prometheus.py checks a
# real Envoy exports each of them; test_dashboard.py that the dashboard reads no other raw name.
EXPORTED = {f"envoy_webhook_guard_{n}" for n in [
    "policy_accepted", "policy_accepted_secondary_secret", "policy_rejected", "policy_challenges_answered",
    "policy_reason", "policy_store_entries", "policy_store_capacity",
    *(f"policy_{h}_latency_us_{s}" for h in ("verdict", "store") for s in ("bucket", "sum", "count")),
    "unmatched_passed", "unmatched_denied", "store_entries", "store_cas_retries", "store_sweeps", "store_swept",
    "store_released", "store_commit_failed", "store_unknown_outcome", "etcd_calls", "etcd_errors",
    "etcd_failed_open", "etcd_cache_hits", "etcd_leases_granted",
    *(f"etcd_latency_{b}" for b in ("under_1ms", "under_5ms", "under_25ms", "under_100ms", "under_500ms",
                                    "over_500ms")),
]}

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
            "offset", "inf", "nan"}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARS = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+|@\s*[\w.]+(?:\(\))?")
_NUMBERS = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))  # {__name__="..."} selectors
    s = _STRINGS.sub(" ", expr)
    s = _GRAFANA_VARS.sub(" ", s)
    s = _MATCHERS.sub(" ", s)
    s = _RANGES.sub(" ", s)
    s = _GROUPING.sub(" ", s)
    s = _OFFSET.sub(" ", s)
    s = _NUMBERS.sub(" ", s)
    for m in _IDENT.finditer(s):
        token = m.group(0)
        if token.lower() in KEYWORDS or re.match(r"\s*\(", s[m.end():]):
            continue  # a keyword, or a function / aggregation
        names.add(token)
    return names


def rules(path: pathlib.Path) -> list[dict]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def recorded(path: pathlib.Path) -> set[str]:
    return {rule["record"] for rule in rules(path) if "record" in rule}


def raw_names(path: pathlib.Path) -> set[str]:
    """Names the rules file reads that it does not record itself: what Envoy must export."""
    read = set().union(*(metric_names(rule["expr"]) for rule in rules(path)))
    return read - recorded(path)

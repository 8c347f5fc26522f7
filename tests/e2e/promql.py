"""The metric names a PromQL expression (or a Grafana panel's) reads: enough of a lexer to tell
metric names from functions, keywords, labels, strings, durations and numbers."""
from __future__ import annotations

import pathlib
import re

import yaml

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

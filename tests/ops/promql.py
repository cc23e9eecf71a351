"""PromQL as the ops tests read it: the metric names an expression reads, and the series the
rules in ops/prometheus/rules/ record. The Grafana and Prometheus tests both check their
queries against these, and against what a live app's GET /metrics exports
(`tests/ops/conftest.py`)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted((ROOT / "ops" / "prometheus" / "rules").glob("*.yml"))

SCRAPE_METRICS = frozenset({"up"})
"""What Prometheus itself records about each scrape."""

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS_OR_RANGE = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()")
"""An identifier that is not a function call, a number's exponent or a `$variable` of
Grafana's."""
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: the identifiers left once strings, label
    matchers, ranges, label lists, function calls and keywords are taken out."""
    text = _LABEL_LIST.sub(" ", _MATCHERS_OR_RANGE.sub(" ", _STRING.sub(" ", expr)))
    return {name for name in _NAME.findall(text) if name not in _KEYWORDS}


def unknown_names(expr: str, known: Iterable[str]) -> list[str]:
    """The metric names an expression reads that are not in `known`, sorted."""
    return sorted(metric_names(expr) - set(known))


def rule_groups() -> list[dict[str, Any]]:
    return [group for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]]


def rules() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def recorded_names() -> set[str]:
    """The series the recording rules record."""
    return {rule["record"] for rule in rules() if "record" in rule}

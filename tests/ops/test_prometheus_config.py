"""The Prometheus and Alertmanager configuration in ops/ passes the real tools' checks and keeps its
promises: every alert is unit-tested, documented and complete, the retrain alerts reach driftlab's
webhook and no other alert does, and the rules read only metrics that GET /metrics exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.promql import ROOT, RULE_FILES, metric_names, rules, unknown_names

PROMETHEUS_YML = ROOT / "ops" / "prometheus" / "prometheus.yml"
RULE_TESTS = sorted((ROOT / "ops" / "prometheus" / "tests").glob("*.yml"))
ALERTMANAGER_YML = ROOT / "ops" / "alertmanager" / "alertmanager.yml"
RUNBOOK = ROOT / "docs" / "operations.md"
"""Where each alert's `runbook_url` points: one `### AlertName` section per alert."""

RETRAIN_ALERTS = {
    "DriftlabDatasetDrift",
    "DriftlabLiveAccuracyBelowFloor",
    "DriftlabEstimatedPerformanceDrop",
}
"""The alerts labelled retrain="true", which Alertmanager sends to POST /webhook/alert."""
RETRAIN_RECEIVER = "driftlab-retrain"
DEFAULT_RECEIVER = "log-only"
SEVERITIES = {"critical", "warning", "info"}


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(args[0]) is None:
        pytest.fail(
            f"{args[0]} is not installed: apt-get install prometheus prometheus-alertmanager "
            "(the Makefile installs them)",
            pytrace=False,
        )
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)


def assert_passes(result: subprocess.CompletedProcess[str]) -> None:
    command = " ".join(str(arg) for arg in result.args)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}{result.stderr}"


def _name(path: Path) -> str:
    return path.name


def test_there_are_rules_and_rule_tests() -> None:
    assert RULE_FILES, "no rule file under ops/prometheus/rules/"
    assert RULE_TESTS, "no rule test under ops/prometheus/tests/"


def test_prometheus_config_passes_promtool() -> None:
    """It also checks the rule files that `rule_files` names."""
    result = run_tool("promtool", "check", "config", str(PROMETHEUS_YML))
    assert_passes(result)
    for path in RULE_FILES:
        assert str(path.relative_to(PROMETHEUS_YML.parent)) in result.stdout, (
            f"prometheus.yml does not load {path.name}:\n{result.stdout}"
        )


@pytest.mark.parametrize("path", RULE_FILES, ids=_name)
def test_rule_file_passes_promtool(path: Path) -> None:
    assert_passes(run_tool("promtool", "check", "rules", str(path)))


@pytest.mark.parametrize("path", RULE_TESTS, ids=_name)
def test_rule_unit_tests_pass(path: Path) -> None:
    assert_passes(run_tool("promtool", "test", "rules", str(path)))


def test_alertmanager_config_passes_amtool() -> None:
    """amtool does not read the webhook's `credentials_file`; Alertmanager reads it at each send."""
    assert_passes(run_tool("amtool", "check-config", str(ALERTMANAGER_YML)))


@pytest.mark.parametrize("alert", alerts(), ids=lambda alert: alert["alert"])
def test_alert_is_complete_and_documented(alert: dict[str, Any]) -> None:
    name = alert["alert"]
    assert "for" in alert, f"{name} has no `for:`"
    assert alert.get("labels", {}).get("severity") in SEVERITIES, name
    notes = alert.get("annotations", {})
    assert notes.get("summary") and notes.get("description"), f"{name} lacks summary/description"
    assert notes.get("runbook_url") == f"docs/operations.md#{name.lower()}", name
    headings = re.findall(r"^### (\S+)\s*$", RUNBOOK.read_text(), re.MULTILINE)
    assert name in headings, f"docs/operations.md has no `### {name}` section for the runbook"


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    cases: dict[str, set[bool]] = {}
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    untested = {alert["alert"]: cases.get(alert["alert"], set()) for alert in alerts()}
    missing = {name: seen for name, seen in untested.items() if seen != {True, False}}
    assert not missing, f"alerts without both a firing and a silent case (seen): {missing}"


def test_exactly_the_retrain_alerts_are_labelled_for_retraining() -> None:
    labelled = {a["alert"] for a in alerts() if a.get("labels", {}).get("retrain") == "true"}
    assert labelled == RETRAIN_ALERTS


def test_retrain_receiver_is_the_webhook() -> None:
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    assert config["route"]["receiver"] == DEFAULT_RECEIVER
    assert set(receivers[DEFAULT_RECEIVER]) == {"name"}, "log-only must notify nobody"
    (webhook,) = receivers[RETRAIN_RECEIVER]["webhook_configs"]
    assert webhook["url"] == "http://127.0.0.1:8000/webhook/alert"
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"


@pytest.mark.parametrize("alert", alerts(), ids=lambda alert: alert["alert"])
def test_alert_is_routed_by_its_retrain_label(alert: dict[str, Any]) -> None:
    """amtool resolves the routing tree; a failed retrain must not start another."""
    labels = {"alertname": alert["alert"], **alert.get("labels", {})}
    result = run_tool(
        "amtool",
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_YML}",
        *(f"{key}={value}" for key, value in labels.items()),
    )
    assert_passes(result)
    expected = RETRAIN_RECEIVER if alert["alert"] in RETRAIN_ALERTS else DEFAULT_RECEIVER
    assert result.stdout.strip() == expected, f"{alert['alert']} goes to {result.stdout!r}"


def test_the_live_scrape_exports_every_kind_of_series(exported_samples: frozenset[str]) -> None:
    """The checks against `exported_samples` cannot pass on an empty or partial scrape: it
    holds a series of every source (HTTP, tabular and vision serving, the edge, the store's
    drift and retrain figures) in the form Prometheus stores it."""
    assert {
        "driftlab_http_requests_total",
        "driftlab_predictions_total",
        "driftlab_predict_latency_seconds_bucket",
        "driftlab_image_predict_latency_seconds_count",
        "driftlab_detections_total",
        "driftlab_edge_fps",
        "driftlab_defect_rate",
        "driftlab_dataset_drift_streak",
        "driftlab_estimated_performance",
        "driftlab_live_accuracy",
        "driftlab_retrain_last_timestamp_seconds",
    } <= exported_samples
    assert not {name for name in exported_samples if name.endswith("_created")}
    assert "driftlab_predictions" not in exported_samples  # a counter only as `_total`


def test_rules_read_only_exported_or_recorded_metrics(known_series: frozenset[str]) -> None:
    unknown = {
        rule.get("alert") or rule["record"]: names
        for rule in rules()
        if (names := unknown_names(rule["expr"], known_series))
    }
    assert not unknown, f"rules read metrics GET /metrics does not export: {unknown}"


def test_the_rule_check_catches_a_typo(known_series: frozenset[str]) -> None:
    rule = next(r for r in rules() if "driftlab_dataset_drift_streak" in r["expr"])
    assert unknown_names(rule["expr"], known_series) == []
    typo = rule["expr"].replace("driftlab_dataset_drift_streak", "driftlab_dataset_drift_streek")
    assert unknown_names(typo, known_series) == ["driftlab_dataset_drift_streek"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("sum by (le) (rate(foo_bucket[5m]))", {"foo_bucket"}),
        ('a{code=~"5.."} / ignoring (metric) b:c:rate5m > 0.05', {"a", "b:c:rate5m"}),
        ("time() - x > 3 * y and on () vector(1)", {"x", "y"}),
        ("up{job='api'} == 0 unless z offset 5m", {"up", "z"}),
        ("histogram_quantile(0.99, h) > 1e-3", {"h"}),
        ('rate(a[$__rate_interval]) * $__range_s / b{m=~"$model"}', {"a", "b"}),
    ],
)
def test_metric_names_finds_what_an_expression_reads(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names

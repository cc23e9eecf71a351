"""The Grafana dashboards keep their promises: the committed JSON is the generator's, every panel
reads the provisioned Prometheus, panels do not overlap, and every query names only series a
live app's GET /metrics exports (`exported_samples`) or recording rules Prometheus is given."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipelines.ops import grafana
from tests.ops.promql import recorded_names, unknown_names

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "ops" / "grafana" / "provisioning"

DASHBOARDS = grafana.dashboards()


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_the_committed_json_is_the_generated() -> None:
    stale = [
        name
        for name, dashboard in DASHBOARDS.items()
        if not (grafana.OUT_DIR / name).exists()
        or (grafana.OUT_DIR / name).read_text("utf-8") != grafana.render(dashboard)
    ]
    extra = {p.name for p in grafana.OUT_DIR.glob("*.json")} - set(DASHBOARDS)
    assert not stale and not extra, (
        f"stale {stale}, not generated {sorted(extra)}: run `python -m pipelines.ops.grafana`"
    )


def test_check_fails_on_a_hand_edit(tmp_path: Path) -> None:
    assert grafana.main(["--out", str(tmp_path)]) == 0
    assert grafana.main(["--out", str(tmp_path), "--check"]) == 0
    path = tmp_path / "driftlab-model.json"
    path.write_text(path.read_text("utf-8").replace("Drift", "Drfit"), "utf-8")
    assert grafana.main(["--out", str(tmp_path), "--check"]) == 1


def test_the_output_is_deterministic() -> None:
    again = grafana.dashboards()
    assert [grafana.render(d) for d in again.values()] == [
        grafana.render(d) for d in DASHBOARDS.values()
    ]


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_a_dashboard_is_tagged_and_reads_the_provisioned_prometheus(name: str) -> None:
    dashboard = DASHBOARDS[name]
    assert name == f"{dashboard['uid']}.json"
    assert dashboard["title"] and dashboard["tags"] == ["driftlab"]
    assert dashboard["schemaVersion"] == 39
    for panel in panels(dashboard):
        assert panel["datasource"] == grafana.DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == grafana.DATASOURCE, panel["title"]
    for annotation in dashboard["annotations"]["list"]:
        assert annotation["datasource"] == grafana.DATASOURCE


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_panels_have_unique_ids_and_do_not_overlap(name: str) -> None:
    placed = DASHBOARDS[name]["panels"]
    ids = [p["id"] for p in placed]
    assert len(ids) == len(set(ids))
    for panel in placed:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["y"] >= 0 and g["x"] + g["w"] <= grafana.WIDTH, panel["title"]
    for a, b in combinations(placed, 2):
        ga, gb = a["gridPos"], b["gridPos"]
        apart = (
            ga["x"] + ga["w"] <= gb["x"]
            or gb["x"] + gb["w"] <= ga["x"]
            or ga["y"] + ga["h"] <= gb["y"]
            or gb["y"] + gb["h"] <= ga["y"]
        )
        assert apart, f"{a['title']!r} overlaps {b['title']!r}"


def test_the_rules_folder_records_series() -> None:
    assert "driftlab:predictions:rate5m" in recorded_names()


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_names_exported_series_or_recording_rules(
    name: str, known_series: frozenset[str]
) -> None:
    queries = grafana.panel_queries(DASHBOARDS[name])
    assert queries
    unknown = {q: u for q in queries if (u := unknown_names(grafana.concrete(q), known_series))}
    assert not unknown, f"queries that read series GET /metrics does not export: {unknown}"


def test_the_series_check_catches_a_typo(known_series: frozenset[str]) -> None:
    def check(expr: str) -> list[str]:
        return unknown_names(grafana.concrete(expr), known_series)

    assert check("rate(driftlab_predict_latency_seconds_bucket[$__rate_interval])") == []
    assert check('driftlab:predictions:rate5m + 0 * up{job="driftlab-api"}') == []
    assert check("driftlab_prediction_total") == ["driftlab_prediction_total"]
    assert check("driftlab:predictions:rate1m") == ["driftlab:predictions:rate1m"]
    assert check("sum(rate(driftlab_predictions[5m]))") == ["driftlab_predictions"]  # no _total
    # A histogram is stored as its _bucket, _sum and _count: its bare name finds nothing.
    assert check("driftlab_predict_latency_seconds") == ["driftlab_predict_latency_seconds"]


def test_panel_queries_reads_panels_variables_and_annotations() -> None:
    dashboard = grafana.dashboard(
        "x", "x", "x", [grafana.stat("s", "driftlab_edge_fps")], [grafana.RETRAINS]
    )
    dashboard["templating"]["list"] = [{"query": {"query": "driftlab_model_version"}}]
    assert grafana.panel_queries(dashboard) == [
        "driftlab_edge_fps",
        "driftlab_model_version",
        grafana.RETRAINS["expr"],
    ]


def test_concrete_replaces_grafanas_windows_only() -> None:
    expr = "rate(x[$__rate_interval]) + increase(y[${__range}]) + z[$__interval] + $__range_s"
    assert grafana.concrete(expr, "1m") == "rate(x[1m]) + increase(y[1m]) + z[1m] + $__range_s"
    for name in DASHBOARDS:
        assert all("$" not in grafana.concrete(q) for q in grafana.panel_queries(DASHBOARDS[name]))


def test_the_provisioning_points_at_the_dashboards_datasource() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "driftlab.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["uid"] == grafana.DATASOURCE["uid"]
    assert source["type"] == grafana.DATASOURCE["type"]
    assert source["url"] == "http://127.0.0.1:9090" and source["isDefault"] is True
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "driftlab.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["folder"] == "driftlab"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/driftlab"
    committed = {
        ds["uid"]
        for path in grafana.OUT_DIR.glob("*.json")
        for p in json.loads(path.read_text("utf-8"))["panels"]
        for ds in [p.get("datasource")]
        if ds
    }
    assert committed == {source["uid"]}


def test_the_datasource_knows_prometheus_scrape_interval() -> None:
    """Grafana sizes `$__rate_interval` from `timeInterval`: shorter than the real scrape
    interval, a zoomed-in rate would span too few samples and show nothing."""
    prometheus = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "driftlab.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]

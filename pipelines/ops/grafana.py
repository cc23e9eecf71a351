"""Grafana dashboards for driftlab, as code: `python -m pipelines.ops.grafana` writes them.

Three dashboards (service, model, vision) over the series of `GET /metrics` and the recording
rules of ops/prometheus/rules/, written to ops/grafana/dashboards/, which the provisioning files
of ops/grafana/provisioning/ load into a Grafana 10 or 11 as they are. The JSON is committed so
that a Grafana needs no Python; `--check` (and a test) fails when it and this module disagree.

Panels are numbered and placed in reading order, left to right and wrapping at Grafana's 24
columns, so every run writes the same bytes and a diff shows only what a change moved.

Graphs take rates over `$__rate_interval`, which Grafana keeps at four scrape intervals or more,
so a rate has data at every zoom; the overview stats read the 5-minute recording rules the alerts
use. `concrete()` fills Grafana's variables in for a query sent to Prometheus directly.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Panel = dict[str, Any]

DATASOURCE = {"type": "prometheus", "uid": "driftlab-prometheus"}
OUT_DIR = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "dashboards"
WIDTH = 24
"""Grafana's grid is 24 columns wide."""
RATE = "$__rate_interval"
TABULAR = '{model="tabular"}'  # the drift series of the tabular model (vision: model="vision")
_WINDOWS = re.compile(r"\$\{?__(?:rate_interval|interval|range)\b\}?")

UP = {0: ("down", "red"), 1: ("up", "green")}
DASHED = {"custom.lineStyle": {"dash": [10, 10], "fill": "dash"}}
"""Series properties for a limit drawn next to the figure it limits."""


def right_axis(unit: str) -> dict[str, Any]:
    """Series properties that draw a series of another unit against a right-hand axis."""
    return {"custom.axisPlacement": "right", "unit": unit}


def concrete(expr: str, window: str = "30s") -> str:
    """`expr` with Grafana's `$__rate_interval`, `$__interval` and `$__range` set to `window`.

    Grafana derives them from the time range and the scrape interval; a query sent straight to
    Prometheus (an end-to-end test) has to name a window itself.
    """
    return _WINDOWS.sub(window, expr)


def rate(counter: str, selector: str = "") -> str:
    """Per-second rate of a counter's series over Grafana's rate window."""
    return f"rate({counter}{selector}[{RATE}])"


def zero_filled(by: str, part: str, whole: str) -> str:
    """`sum by (<by>) (<part>)`, with a zero for each group of `whole` that `part` lacks: a
    labelled counter appears at its first increment, and a graph should show 0, not nothing."""
    return f"sum by ({by}) ({part}) or 0 * sum by ({by}) ({whole})"


def quantile(q: float, histogram: str) -> str:
    """The q-quantile of a histogram across its series, from its buckets' rates."""
    return f"histogram_quantile({q}, sum by (le) ({rate(histogram + '_bucket')}))"


def _target(ref: int, expr: str, legend: str, instant: bool = False) -> dict[str, Any]:
    ids = {"datasource": DATASOURCE, "refId": "ABCDEFGH"[ref], "editorMode": "code"}
    return {**ids, "expr": expr, "legendFormat": legend, "instant": instant, "range": not instant}


# Panels say only what differs from Grafana's defaults, which it fills in when it loads them.
def _panel(
    kind: str, title: str, targets: list[dict[str, Any]], *, w: int = 12, h: int = 8, **body: Any
) -> Panel:
    """A panel of any kind; `w` and `h` in grid units, `body` its other keys."""
    where = {"datasource": DATASOURCE, "gridPos": {"h": h, "w": w}}
    return {**where, "title": title, "type": kind, "targets": targets, **body}


def _fields(overrides: list[dict[str, Any]] | None = None, **defaults: Any) -> dict[str, Any]:
    return {"defaults": defaults, "overrides": overrides or []}


def row(title: str) -> Panel:
    """A full-width heading; the panels after it, up to the next row, are its section."""
    return {"collapsed": False, "gridPos": {"h": 1, "w": WIDTH}, "panels": [], "type": "row",
            "title": title}  # fmt: skip


def timeseries(
    title: str,
    exprs: Mapping[str, str],
    unit: str,
    series: Mapping[str, Mapping[str, Any]] | None = None,
    **layout: Any,
) -> Panel:
    """A graph with a line per `{legend: PromQL}` item; `series` restyles lines by legend."""
    targets = [_target(i, expr, legend) for i, (legend, expr) in enumerate(exprs.items())]
    overrides = [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [{"id": key, "value": value} for key, value in properties.items()],
        }
        for name, properties in (series or {}).items()
    ]
    return _panel(
        "timeseries",
        title,
        targets,
        fieldConfig=_fields(overrides, unit=unit),
        options={"tooltip": {"mode": "multi", "sort": "desc"}},
        **layout,
    )


def stat(
    title: str,
    expr: str,
    unit: str = "none",
    mappings: Mapping[int, tuple[str, str]] | None = None,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "text"),),
    **layout: Any,
) -> Panel:
    """The latest value of one figure over a sparkline. `mappings` name values (0: "down") and
    colour them; `thresholds` colour the rest (Grafana's default turns red at 80)."""
    named = {
        str(value): {"color": color, "index": i, "text": text}
        for i, (value, (text, color)) in enumerate((mappings or {}).items())
    }
    steps = [{"color": color, "value": value} for value, color in thresholds]
    fields = _fields(
        unit=unit,
        mappings=[{"options": named, "type": "value"}] if named else [],
        thresholds={"mode": "absolute", "steps": steps},
    )
    return _panel(
        "stat", title, [_target(0, expr, title)], fieldConfig=fields, **{"w": 4, "h": 4, **layout}
    )


def bargauge(
    title: str, expr: str, legend: str, unit: str, histogram: bool = False, **layout: Any
) -> Panel:
    """A bar per series at the end of the range. With `histogram`, `expr` sums a histogram's
    buckets by `le` and Grafana's heatmap format turns the cumulative buckets into one bar each."""
    target = _target(0, expr, legend, instant=True)
    if histogram:
        target["format"] = "heatmap"
    fields = _fields(unit=unit, min=0, color={"mode": "continuous-BlYlRd"})
    options = {"displayMode": "gradient", "orientation": "horizontal"}
    return _panel(
        "bargauge", title, [target], fieldConfig=fields, options=options, **{"w": 8, **layout}
    )


def heatmap(title: str, expr: str, **layout: Any) -> Panel:
    """Counts per histogram bucket (rows) over time (columns); `expr` sums `_bucket` by `le`."""
    target = {**_target(0, expr, "{{le}}"), "format": "heatmap"}
    options = {"calculate": False}  # the buckets are Prometheus's, not Grafana's
    return _panel("heatmap", title, [target], options=options, **{"w": 8, **layout})


def annotation(name: str, expr: str, title: str, color: str, tag_keys: str = "") -> dict[str, Any]:
    """Marks on every graph where `expr` has a sample. Its step is the minute of its `[1m]`
    window, so `changes(...[1m]) > 0` marks each change once."""
    query = {"expr": expr, "step": "1m", "titleFormat": title, "tagKeys": tag_keys}
    return {"datasource": DATASOURCE, "enable": True, "iconColor": color, "name": name, **query}


# fmt: off
# The registry's promotion time: it moves on a promotion or a rollback, even before the API
# serves the new champion.
PROMOTIONS = annotation("Promotions",
                        "changes(driftlab_champion_promoted_timestamp_seconds[1m]) > 0",
                        "champion promoted", "green")
RETRAINS = annotation("Retrains", "changes(driftlab_retrain_last_timestamp_seconds[1m]) > 0",
                      "retrain {{status}}", "purple", tag_keys="status")
LINKS = [{"asDropdown": False, "keepTime": True, "tags": ["driftlab"], "title": "driftlab",
          "type": "dashboards"}]
"""A link on every dashboard to the others."""
# fmt: on


def dashboard(
    uid: str,
    title: str,
    about: str,
    panels: Sequence[Panel],
    annotations: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A dashboard whose panels are numbered and placed in the order given."""
    placed: list[Panel] = []
    x = y = line = 0  # `line`: the height of the tallest panel on the current line
    for number, panel in enumerate(panels, start=1):
        w, h = panel["gridPos"]["w"], panel["gridPos"]["h"]
        if panel["type"] == "row" or x + w > WIDTH:
            x, y, line = 0, y + line, 0
        placed.append({**panel, "gridPos": {"h": h, "w": w, "x": x, "y": y}, "id": number})
        x, line = x + w, max(line, h)
        if panel["type"] == "row":  # a row owns its line
            x = WIDTH
    return {
        "annotations": {"list": list(annotations)},
        "description": f"{about} Generated by `python -m pipelines.ops.grafana`.",
        "graphTooltip": 1,  # one crosshair across the panels
        "links": LINKS,
        "panels": placed,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["driftlab"],
        "templating": {"list": []},
        "time": {"from": "now-1h", "to": "now"},
        "title": f"driftlab · {title}",
        "uid": uid,
    }


SERVICE = "The API as a service: traffic, latency, errors, batching, the prediction log."
MODEL = "The model in the loop: drift, live and estimated accuracy, labeling, retrains."
VISION = "The vision model: images served and logged at the edge, speed, confidence, defects."


# fmt: off
def service() -> dict[str, Any]:
    requests = "driftlab_http_requests_total"
    server_errors, client_errors = '{code=~"5.."}', '{code=~"4.."}'
    return dashboard("driftlab-service", "service", SERVICE, [
        row("Overview"),
        stat("API up", 'up{job="driftlab-api"}', mappings=UP),
        stat("Store up", "driftlab_store_up", mappings=UP),
        stat("Predictions per second (5m)", "driftlab:predictions:rate5m", "ops"),
        stat("Latency p99 (5m)", "driftlab:predict_latency_seconds:p99_5m", "s",
             thresholds=[(None, "green"), (0.25, "red")], description="Alert above 250 ms."),
        stat("5xx ratio (5m)", "driftlab:http_5xx:ratio_rate5m", "percentunit",
             thresholds=[(None, "green"), (0.01, "orange"), (0.05, "red")],
             description="Alert above 5%. No data: no requests."),
        stat("Requests per model call (5m)", "driftlab:predict_batch_requests:mean_rate5m"),
        row("Traffic"),
        timeseries("Predictions per second", {
            "v{{model_version}}": f"sum by (model_version) ({rate('driftlab_predictions_total')})",
            "uncertain": f"sum({rate('driftlab_uncertain_predictions_total')})",
        }, "ops"),
        timeseries("Requests per second by handler and code", {
            "{{handler}} {{code}}": f"sum by (handler, code) ({rate(requests)})",
        }, "reqps"),
        row("Latency and errors"),
        timeseries("Predict latency", {
            f"p{q}": f"driftlab:predict_latency_seconds:p{q}_5m" for q in (50, 95, 99)
        }, "s", w=8, description="The recording rules the alerts use, over 5 minutes."),
        timeseries("5xx ratio", {
            "5xx": f"(sum({rate(requests, server_errors)}) or vector(0))"
                   f" / (sum({rate(requests)}) > 0)",
        }, "percentunit", w=8, description="Zero while no request failed; a gap, no requests."),
        timeseries("4xx per second by handler", {
            "{{handler}}": zero_filled("handler", rate(requests, client_errors), rate(requests)),
        }, "reqps", w=8, description="Rejected requests; zero for a handler that rejected none."),
        row("Batching and prediction log"),
        timeseries("Requests per model call", {
            "requests per call": f"sum({rate('driftlab_predict_batched_requests_total')})"
                                 f" / (sum({rate('driftlab_predict_batches_total')}) > 0)",
            "model calls/s": f"sum({rate('driftlab_predict_batches_total')})",
        }, "short", w=8, series={"model calls/s": right_axis("ops")},
            description="The micro-batcher: /predict requests answered by one model call."),
        timeseries("Prediction log backlog", {
            "pending rows": "sum(driftlab_prediction_log_pending_rows)",
            "flushed rows/s": f"sum({rate('driftlab_prediction_log_flushed_rows_total')})",
        }, "short", w=8, series={"flushed rows/s": right_axis("ops")},
            description="Predictions acknowledged, not yet in the lake: it should drain."),
        timeseries("Prediction log flush errors", {
            "errors": f"sum(increase(driftlab_prediction_log_flush_errors_total[{RATE}]))",
        }, "short", w=8),
    ], [PROMOTIONS])


def model() -> dict[str, Any]:
    accuracy = '{metric="accuracy"}'
    return dashboard("driftlab-model", "model", MODEL, [
        row("Now"),
        stat("Champion version", "driftlab_model_version", w=3),
        stat("Since promotion", "time() - driftlab_champion_promoted_timestamp_seconds",
             "dtdurations", w=3),
        stat("Retrain", "driftlab_retrain_running", w=3,
             mappings={0: ("idle", "text"), 1: ("running", "blue")}),
        stat("Dataset drift", f"driftlab_dataset_drift{TABULAR}", w=3,
             mappings={0: ("no", "green"), 1: ("yes", "red")}),
        stat("Drift streak", f"driftlab_dataset_drift_streak{TABULAR}", w=3,
             description="Drift checks in a row that found dataset drift."),
        stat("Since drift check", f"time() - driftlab_drift_check_timestamp_seconds{TABULAR}",
             "dtdurations", w=3, description="Past three check intervals the worker is silent."),
        stat("Live accuracy", "driftlab_live_accuracy", "percentunit", w=3),
        stat("Labeling queue", "driftlab_labeling_queue_pending", w=3),
        row("Drift"),
        timeseries("Drift share and streak", {
            "drift share": f"driftlab_drift_share{TABULAR}",
            "streak": f"driftlab_dataset_drift_streak{TABULAR}",
        }, "percentunit", w=8, series={"streak": right_axis("short")}),
        timeseries("Effect size by column",
                   {"{{feature}} ({{role}})": f"driftlab_drift_effect_size{TABULAR}"},
                   "short", w=10),
        bargauge("Latest effect size", f"sort_desc(driftlab_drift_effect_size{TABULAR})",
                 "{{feature}} ({{role}})", "short", w=6),
        row("Performance"),
        timeseries("Live accuracy", {
            "accuracy": "driftlab_live_accuracy",
            "floor": "driftlab_live_accuracy_floor",
            "labeled": "driftlab_live_accuracy_labeled",
            "min labeled": "driftlab_live_accuracy_min_labeled",
        }, "percentunit", series={
            "floor": DASHED, "labeled": right_axis("short"),
            "min labeled": {**right_axis("short"), **DASHED},
        }, description="From feedback; the floor applies once `labeled` reaches `min labeled`."),
        timeseries("Labeling queue pending", {"pending": "driftlab_labeling_queue_pending"},
                   "short", description="Predictions waiting for a label from a reviewer."),
        timeseries("Estimated accuracy", {
            "estimated": f"driftlab_estimated_performance{accuracy}",
            "low": f"driftlab_estimated_low_performance{accuracy}",
            "high": f"driftlab_estimated_high_performance{accuracy}",
            "realized": f"driftlab_realized_performance{accuracy}",
            "reference": f"driftlab_reference_performance{accuracy}",
        }, "percentunit", w=16, series={
            "high": {"custom.fillBelowTo": "low", "custom.fillOpacity": 20, "custom.lineWidth": 0},
            "low": {"custom.lineWidth": 0}, "reference": DASHED,
        }, description="Estimated without labels, with its band, against the held-out "
                       "reference and the accuracy realized on labeled predictions."),
        timeseries("Estimated accuracy drop", {
            "drop": "driftlab:estimated_accuracy_drop",
            "threshold": "driftlab_estimated_drop_threshold",
        }, "percentunit", w=8, series={"threshold": DASHED},
            description="Past the threshold, with the band's top below the reference, "
                        "it asks for a retrain."),
        row("Rollout"),
        stat("Rollout", "sum(driftlab_rollout_active)", w=4,
             mappings={0: ("none", "text"), 1: ("running", "blue")}),
        stat("Challenger version", "driftlab_rollout_challenger_version", w=4),
        stat("Live test labels", "driftlab_rollout_labels", w=4,
             description="Labeled pairs (shadow) or labeled canary answers so far."),
        stat("Shadow agreement", "driftlab_rollout_agreement", "percentunit", w=4,
             description="Shadowed requests where the shadow answered what was served."),
        stat("Shadow answers", rate("driftlab_shadow_predictions_total"), "reqps", w=4),
        stat("Share", "driftlab_rollout_share", "percentunit", w=4),
        timeseries("Accuracy on the live test's labels", {
            "champion": 'driftlab_rollout_accuracy{arm="champion"}',
            "challenger": 'driftlab_rollout_accuracy{arm="challenger"}',
            "labels": "driftlab_rollout_labels",
        }, "percentunit", w=12, series={"labels": right_axis("short")}),
        timeseries("Live test p-values", {
            "difference": "driftlab_rollout_p_value",
            "non-inferiority": "driftlab_rollout_noninferiority_p_value",
        }, "short", w=12, description="Each look decides below DRIFTLAB_ROLLOUT_ALPHA / looks "
                                      "(docs/rollouts.md)."),
    ], [PROMOTIONS, RETRAINS])


def vision() -> dict[str, Any]:
    images, edge = rate("driftlab_image_predictions_total"), "driftlab_edge_inference_seconds"
    flagged = rate("driftlab_images_with_detections_total")
    confidence = "driftlab_detection_confidence_bucket"
    return dashboard("driftlab-vision", "vision", VISION, [
        row("Now"),
        stat("Images per second (5m)", "driftlab:image_predictions:rate5m", "ops", w=6),
        stat("Edge FPS", "driftlab_edge_fps", "short", w=6),
        stat("Edge inference p95", quantile(0.95, edge), "s", w=6),
        stat("Defect rate", "driftlab_defect_rate", "percentunit", w=6,
             description="Share of the store's served images with a detection."),
        row("Traffic"),
        timeseries("Image predictions per second by origin",
                   {"{{origin}}": f"sum by (origin) ({images})"}, "ops"),
        timeseries("Detections per second by class",
                   {"{{cls}}": f"sum by (cls) ({rate('driftlab_detections_total')})"}, "ops"),
        row("Speed"),
        timeseries("Inference time", {
            "edge p50": quantile(0.5, edge),
            "edge p95": quantile(0.95, edge),
            "API image p95": quantile(0.95, "driftlab_image_predict_latency_seconds"),
        }, "s", description="Per frame at the edge; per /predict/image call at the API."),
        timeseries("Edge FPS", {"fps": "driftlab_edge_fps"}, "short"),
        row("Quality"),
        timeseries("Defect rate", {
            "store": "driftlab_defect_rate",
            "{{origin}}, recent": f"({zero_filled('origin', flagged, images)})"
                                  f" / sum by (origin) ({images})",
        }, "percentunit", w=8, description="Every served image in the store, and the recent "
                                           "images of this API process by origin."),
        heatmap("Detection confidence", f"sum by (le) (increase({confidence}[{RATE}]))"),
        bargauge("Confidence distribution", f"sum by (le) (increase({confidence}[$__range]))",
                 "{{le}}", "short", histogram=True,
                 description="Detections per confidence bucket over the time range."),
    ])
# fmt: on


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard, by the name of its file in ops/grafana/dashboards/."""
    return {f"{d['uid']}.json": d for d in (service(), model(), vision())}


def panel_queries(dashboard: Mapping[str, Any], *, annotations: bool = True) -> list[str]:
    """Every PromQL expression a dashboard sends: its panels', variables' and (unless
    `annotations` is false: they find nothing until a promotion or retrain) annotations'."""
    panels = [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        exprs.append(query.get("query") if isinstance(query, dict) else query)
    if annotations:
        exprs += [a["expr"] for a in dashboard["annotations"]["list"] if a.get("expr")]
    return [expr for expr in exprs if expr]


def render(dashboard: Mapping[str, Any]) -> str:
    """A dashboard's file: sorted keys and a fixed indent, so it is always the same bytes."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the dashboards, or with `--check` exit 1 when the files on disk differ."""
    parser = argparse.ArgumentParser(
        "python -m pipelines.ops.grafana", description="Write driftlab's Grafana dashboards."
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when the files are stale")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="default: %(default)s")
    args = parser.parse_args(argv)
    wanted = {name: render(d) for name, d in dashboards().items()}
    if args.check:
        found = {path.name: path.read_text("utf-8") for path in args.out.glob("*.json")}
        stale = sorted(n for n in wanted.keys() | found.keys() if wanted.get(n) != found.get(n))
        if stale:
            sys.stderr.write(f"stale: {', '.join(stale)}; run `python -m pipelines.ops.grafana`\n")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in wanted.items():
        (args.out / name).write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Drift: effect size per feature over the recent checks, the latest check's verdicts, reference
vs current distribution of a chosen feature, and a link to the latest Evidently report; for the
tabular model or, chosen at the top, the vision model's image checks (quality features as
inputs, detections, box size, confidence and top class as outputs).

The "current" distribution is the latest check's own window (its first and last prediction),
so the chart shows exactly the rows the verdict is about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dash
from dash import Input, Output, callback, dcc, html

from dashboard import components as c
from dashboard import figures
from dashboard.data import services
from pipelines.loop.monitoring import latest_summary
from pipelines.schema import brief
from pipelines.store import queries as dq

dash.register_page(__name__, path="/drift", name="Drift", order=1)

HISTORY_RUNS = 50
COLUMNS = [
    "feature",
    "role",
    "test",
    "statistic",
    "p_value",
    "p_adjusted",
    "effect_size",
    "drifted",
]
HEADERS = [
    "feature",
    "role",
    "test",
    "statistic",
    "p-value",
    "p (adjusted)",
    "effect size",
    "drift",
]


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Drift"),
            dcc.RadioItems(
                id="drift-model",
                options=[
                    {"label": " tabular model", "value": "tabular"},
                    {"label": " vision model (images)", "value": "vision"},
                ],
                value="tabular",
                inline=True,
                inputStyle={"marginLeft": "12px"},
            ),
            dcc.Interval(id="drift-interval", interval=30_000),
            html.Div(id="drift-summary", className="cards"),
            html.Div(dcc.Graph(id="drift-heatmap"), className="panel"),
            html.Div(
                [html.H3("Latest check"), html.Div(id="drift-table")],
                className="panel",
            ),
            html.Div(
                id="drift-distribution-panel",
                children=[
                    html.H3("Reference vs current"),
                    dcc.Dropdown(id="drift-feature", clearable=False, style={"width": "320px"}),
                    dcc.Graph(id="drift-distribution"),
                ],
                className="panel",
            ),
        ]
    )


@callback(
    Output("drift-summary", "children"),
    Output("drift-heatmap", "figure"),
    Output("drift-table", "children"),
    Output("drift-feature", "options"),
    Output("drift-feature", "value"),
    Output("drift-distribution-panel", "style"),
    Input("drift-interval", "n_intervals"),
    Input("drift-model", "value"),
)
def refresh(
    _: int | None, model: str | None
) -> tuple[list[Any], Any, Any, list[dict[str, str]], str | None, dict[str, str]]:
    """Summary cards, the heatmap over the last checks and the latest check's table, of the
    chosen model (anything the browser sends but "vision" is the tabular model)."""
    s = services()
    vision = model == "vision"
    got = s.gather(
        latest=lambda: latest_summary(s.store, vision=vision),
        history=lambda: s.store.drift_history(HISTORY_RUNS, image=vision),
    )
    # The distribution panel compares tabular feature values; image features have no rows.
    shown = {"display": "none"} if vision else {}
    latest = got["latest"]
    history = [r for r in got["history"] if r["feature"]]
    heatmap = figures.drift_heatmap(history, f"Effect size per column, last {HISTORY_RUNS} checks")
    schema = s.schema()
    names = schema.names if schema is not None else []
    options = [{"label": n, "value": n} for n in names]
    if latest["run_id"] is None:
        how = "POST /monitoring/run?model=vision" if vision else "`make drift`"
        return (
            [c.card("Latest check", "none", f"run {how} or wait for the worker")],
            heatmap,
            "",
            options,
            (names[0] if names else None),
            shown,
        )
    rows = latest["features"]
    summary = [
        c.card("Drift share", f"{latest['drift_share']:.0%}", latest["method"] or ""),
        c.card(
            "Dataset drift",
            "yes" if latest["dataset_drift"] else "no",
            ", ".join(latest["drifted_features"]) or "no input drifted",
        ),
        c.card(
            "Output drift",
            f"{len(latest['drifted_outputs'])}",
            ", ".join(latest["drifted_outputs"]) or "the model's outputs held",
        ),
        c.card(
            "Window",
            f"{latest['n_current']:,}",
            f"{'images' if vision else 'predictions'} "
            f"{c.fmt(latest['window_start'])} → {c.fmt(latest['window_end'])}",
        ),
        c.card("Checked", c.ago(latest["ts"]), f"model v{latest['model_version']}"),
    ]
    if not vision:  # Evidently's report is about the tabular features
        summary.append(html.Div(_report_link(s.settings.reports_dir), className="card"))
    table = c.table(
        rows,
        COLUMNS,
        headers=HEADERS,
        row_class=["unmet" if r["drifted"] else "" for r in rows],
        id="drift-latest-table",
    )
    drifted = [n for n in latest["drifted_features"] if n in names]
    return summary, heatmap, table, options, (drifted or names or [None])[0], shown


@callback(
    Output("drift-distribution", "figure"),
    Input("drift-feature", "value"),
)
def distribution(feature: str | None) -> Any:
    """The chosen feature over the champion's training rows and the latest check's window.

    `feature` comes from the browser: anything but one of the dataset's feature names is
    refused here, before it reaches a query.
    """
    s = services()
    dataset = s.store.dataset_schema()
    if feature and (dataset is None or feature not in dataset.names):
        return figures.empty(f"{brief(feature)} is not a feature of the dataset")
    model = s.models.model
    if not feature or model is None or model.snapshot_id is None:
        return figures.empty("no champion model, or no feature chosen")
    latest = latest_summary(s.store)
    if latest["run_id"] is None:
        return figures.empty("no drift check yet: nothing to compare with")
    kinds = {f.name: f.kind for f in model.schema.features}
    if feature not in kinds:
        return figures.empty(f"{brief(feature)} is not a feature of the champion")
    dist = dq.distribution(
        s.store,
        feature,
        kinds[feature],
        snapshot_id=model.snapshot_id,
        since=latest["window_start"],
        until=latest["window_end"],
    )
    return figures.distribution(dist, feature)


def _report_link(reports: Path) -> list[Any]:
    """The newest Evidently HTML report, served by the app under /reports/."""
    found = (
        sorted(reports.glob("evidently-*.html"), key=lambda p: p.stat().st_mtime)
        if reports.exists()
        else []
    )
    if not found:
        return [
            html.Div("Evidently report", className="title"),
            html.Div("none yet: make drift", className="detail"),
        ]
    newest = found[-1]
    return [
        html.Div("Evidently report", className="title"),
        html.A(
            newest.name, href=f"/reports/{newest.name}", target="_blank", id="drift-report-link"
        ),
    ]

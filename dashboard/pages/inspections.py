"""Inspections: recent predictions, filterable (model version, class, uncertain only, time
range), paged server-side: DuckDB counts and returns one page, never the table
(`store.queries.inspection_page`, the same page as `GET /api/inspection-logs`).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import dash
import dash_ag_grid as dag
from dash import Input, Output, State, callback, dcc, html

from dashboard.data import services
from pipelines.store import queries as dq

dash.register_page(__name__, path="/inspections", name="Inspections", order=3)

PAGE_SIZE = 50


def _number(spec: str) -> str:
    """A grid value formatter (JavaScript, run by dash-ag-grid) that leaves blanks blank."""
    return f"params.value == null ? '' : d3.format('{spec}')(params.value)"


RANGES = {"15m": 0.25, "1h": 1, "24h": 24, "7d": 24 * 7, "all": None}
COLUMNS = [
    {"field": "ts", "headerName": "time (UTC)", "width": 190},
    {"field": "prediction_id", "width": 230},
    {"field": "model_version", "headerName": "version", "width": 90},
    {"field": "prediction", "width": 100},
    {"field": "confidence", "width": 110, "valueFormatter": {"function": _number(".3f")}},
    {"field": "uncertain", "width": 100},
    {
        "field": "latency_ms",
        "headerName": "latency ms",
        "width": 110,
        "valueFormatter": {"function": _number(".2f")},
    },
    {"field": "features", "flex": 1, "minWidth": 300},
]


def layout(**_: Any) -> html.Div:
    s = services()
    schema = s.schema()
    classes = [str(c) for c in schema.classes] if schema is not None else []
    versions = list(dq.prediction_counts_by_version(s.store))
    return html.Div(
        [
            html.H2("Inspections"),
            dcc.Store(id="inspections-page", data=0),
            html.Div(
                [
                    html.Div(
                        [
                            html.Label("model version"),
                            dcc.Dropdown(
                                [{"label": f"v{v}", "value": v} for v in versions],
                                id="inspections-version",
                                placeholder="any",
                            ),
                        ]
                    ),
                    html.Div(
                        [
                            html.Label("predicted class"),
                            dcc.Dropdown(classes, id="inspections-class", placeholder="any"),
                        ]
                    ),
                    html.Div(
                        [
                            html.Label("time range"),
                            dcc.Dropdown(
                                list(RANGES), "24h", id="inspections-range", clearable=False
                            ),
                        ]
                    ),
                    dcc.Checklist(
                        [{"label": " uncertain only", "value": "uncertain"}],
                        [],
                        id="inspections-uncertain",
                    ),
                ],
                className="filters",
            ),
            dag.AgGrid(
                id="inspections-grid",
                columnDefs=COLUMNS,
                rowData=[],
                defaultColDef={"resizable": True, "sortable": False},
                dashGridOptions={"domLayout": "autoHeight"},
                style={"width": "100%"},
            ),
            html.Div(
                [
                    html.Button("← newer", id="inspections-prev"),
                    html.Button("older →", id="inspections-next"),
                    html.Span(id="inspections-pager", className="detail"),
                ],
                className="filters",
            ),
        ]
    )


@callback(
    Output("inspections-grid", "rowData"),
    Output("inspections-page", "data"),
    Output("inspections-pager", "children"),
    Input("inspections-version", "value"),
    Input("inspections-class", "value"),
    Input("inspections-range", "value"),
    Input("inspections-uncertain", "value"),
    Input("inspections-prev", "n_clicks"),
    Input("inspections-next", "n_clicks"),
    State("inspections-page", "data"),
)
def page(
    version: str | None,
    predicted: str | None,
    period: str | None,
    uncertain: list[str] | None,
    _prev: int | None,
    _next: int | None,
    current: int | None,
) -> tuple[list[dict[str, Any]], int, str]:
    """One page of predictions, newest first; a filter change goes back to the first page."""
    s = services()
    trigger = dash.ctx.triggered_id
    number = current or 0
    if trigger == "inspections-next":
        number += 1
    elif trigger == "inspections-prev":
        number = max(0, number - 1)
    else:
        number = 0
    hours = RANGES.get(period or "24h")
    since = None if hours is None else dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    filters: dict[str, Any] = {
        "model_version": version or None,
        "prediction": predicted or None,
        "uncertain": True if uncertain else None,
        "since": since,
    }
    total, items = dq.inspection_page(
        s.store, limit=PAGE_SIZE, offset=number * PAGE_SIZE, **filters
    )
    if not items and number > 0 and total:  # paged past the end (fewer rows since)
        number = (total - 1) // PAGE_SIZE
        total, items = dq.inspection_page(
            s.store, limit=PAGE_SIZE, offset=number * PAGE_SIZE, **filters
        )
    rows = [_row(item) for item in items]
    pages = max(1, -(-total // PAGE_SIZE))
    return rows, number, f"page {number + 1} of {pages:,} · {total:,} predictions"


def _row(item: dict[str, Any]) -> dict[str, Any]:
    """A grid row: times as text, features as compact JSON (the grid shows plain values)."""
    ts = item.get("ts")
    return {
        "ts": ts.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if ts else None,
        "prediction_id": item.get("prediction_id"),
        "model_version": item.get("model_version"),
        "prediction": item.get("prediction"),
        "confidence": item.get("confidence"),
        "uncertain": item.get("uncertain"),
        "latency_ms": item.get("latency_ms"),
        "features": json.dumps(item.get("features") or {}, default=str),
    }

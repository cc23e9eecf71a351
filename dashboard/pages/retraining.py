"""Retraining: the current conditions, each figure against its threshold; the decision with its
reasons; a Trigger button; the live status of a running job; the history of runs.

Everything goes through `pipelines.loop.retraining_conditions` (check) and `retraining_control`
(trigger, status, history), as the API's endpoints and the worker do: a run started here is the same
background `driftlab retrain`.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import components as c
from dashboard import security
from dashboard.data import services, tail_lines
from pipelines.loop import retraining_conditions, retraining_control

dash.register_page(__name__, path="/retraining", name="Retraining", order=6)

STATUS_MS = 2_000
CONDITIONS_MS = 15_000
LOG_LINES = 15


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Retraining"),
            dcc.Interval(id="retraining-status-interval", interval=STATUS_MS),
            dcc.Interval(id="retraining-interval", interval=CONDITIONS_MS),
            dcc.Store(id="retraining-started", data=0),
            html.Div(id="retraining-status", className="cards"),
            html.Div(
                [
                    html.Button("Trigger a retrain", id="retraining-trigger", className="primary"),
                    html.Span(id="retraining-message", className="message"),
                    html.Div(id="retraining-log"),
                ],
                className="panel",
            ),
            html.Div(
                [
                    html.H3("Conditions"),
                    html.Div(id="retraining-decision"),
                    html.Div(id="retraining-conditions"),
                    html.P(
                        "red: the figure is past its threshold (a trigger that holds, or what "
                        "blocks a retrain); green: within it.",
                        className="detail",
                    ),
                ],
                className="panel",
            ),
            html.Div([html.H3("History"), html.Div(id="retraining-history")], className="panel"),
        ]
    )


@callback(
    Output("retraining-decision", "children"),
    Output("retraining-conditions", "children"),
    Output("retraining-history", "children"),
    Input("retraining-interval", "n_intervals"),
    Input("retraining-started", "data"),
)
def refresh(_: int | None, __: int | None) -> tuple[Any, Any, Any]:
    """The decision and its figures, and the history of runs."""
    s = services()
    got = s.gather(
        check=lambda: retraining_conditions.check(s.settings, s.store, s.registry),
        runs=lambda: retraining_control.history(s.store, limit=50),
    )
    check = got["check"]
    verdict = "retrain now" if check["should_retrain"] else "no retrain needed"
    lists = []
    for key, title in (("reasons", "why"), ("blocked_by", "blocked by"), ("not_met", "not yet")):
        if check.get(key):
            lists.append(html.Div([html.Strong(f"{title}: "), "; ".join(check[key])]))
    decision = html.Div(
        [html.Div(html.Strong(verdict), id="retraining-verdict"), *lists], className="message"
    )
    rows = c.condition_rows(check)
    conditions = c.table(
        rows,
        ["condition", "figure", "threshold"],
        row_class=["unmet" if r["crossed"] else "met" for r in rows],
        id="retraining-conditions-table",
    )
    metric = check.get("thresholds", {}).get("primary_metric", "macro_f1")
    runs = c.run_rows(got["runs"], metric)
    history = (
        c.table(runs, list(runs[0]), id="retraining-history-table")
        if runs
        else html.P("no retraining run yet", className="detail")
    )
    return decision, conditions, history


@callback(
    Output("retraining-status", "children"),
    Output("retraining-log", "children"),
    Output("retraining-trigger", "disabled"),
    Input("retraining-status-interval", "n_intervals"),
    Input("retraining-started", "data"),
)
def status(_: int | None, __: int | None) -> tuple[list[Any], Any, bool]:
    """The run in progress (or the latest) and the last lines of its log, every 2 s."""
    s = services()
    st = retraining_control.status(s.settings, s.store)
    run = st["current"] or st["latest"]
    if run is None:
        return [c.card("Status", "idle", "no run yet", id="retraining-state")], "", False
    cards = [
        c.card(
            "Status",
            "running" if st["running"] else run["status"],
            f"run {run['event_id'][:8]} · {run.get('trigger')} · started "
            f"{c.ago(run.get('started_at'))}",
            id="retraining-state",
        ),
        c.card(
            "Candidate",
            f"v{run['candidate_version']}" if run.get("candidate_version") else "–",
            f"champion was v{run.get('champion_version')}",
        ),
    ]
    log = s.settings.logs_dir / f"retrain-{run['event_id']}.log"
    tail = c.log_tail(log.name, tail_lines(log, LOG_LINES)) if log.exists() else ""
    return cards, tail, bool(st["running"])


@callback(
    Output("retraining-message", "children"),
    Output("retraining-message", "className"),
    Output("retraining-started", "data"),
    Input("retraining-trigger", "n_clicks"),
    State("retraining-started", "data"),
    prevent_initial_call=True,
)
def trigger(_: int | None, started: int | None) -> tuple[str, str, Any]:
    """Start a run now (whatever the conditions say: a person decided), unless one runs."""
    if not security.may_write():
        return security.LOCKED, "message error", no_update
    s = services()
    check = retraining_conditions.check(s.settings, s.store, s.registry)
    reasons = ["started from the dashboard", *check.get("reasons", [])]
    try:
        event = retraining_control.trigger(
            s.settings, s.writer, trigger="dashboard", who="dashboard", reasons=reasons
        )
    except retraining_control.RetrainBusy as exc:
        return str(exc), "message error", no_update
    return f"retrain {event['event_id'][:8]} started", "message success", (started or 0) + 1

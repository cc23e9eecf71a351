"""Models: registered versions with metrics and training data, champion vs another version
side by side (per-class recall), promotion/rollback history, Promote / Roll back buttons, and
the rollout panel (`dashboard.rollout_panel`: a shadow or canary with its live test).

Moves go through `pipelines.models.promotion.promote` / `rollback`, as the API's do (audited in
`model_events`); this process's serving model is refreshed at once, the API's within its poll.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import components as c
from dashboard import figures, rollout_panel, security
from dashboard.data import services
from pipelines.models import promotion
from pipelines.models.registry import CHALLENGER, CHAMPION
from pipelines.store import queries as dq

dash.register_page(__name__, path="/models", name="Models", order=2)

WHO = "dashboard"


def layout(**_: Any) -> html.Div:
    return html.Div(
        [
            html.H2("Models"),
            dcc.Store(id="models-moved", data=0),
            html.Div(
                [
                    html.H3("Registered versions"),
                    html.Div(id="models-versions"),
                    html.Div(
                        [
                            dcc.Dropdown(
                                id="models-promote-version",
                                placeholder="version to promote",
                                style={"width": "200px"},
                            ),
                            dcc.Input(
                                id="models-why",
                                placeholder="why (kept in the audit trail)",
                                debounce=False,
                                style={"width": "320px"},
                            ),
                            html.Button("Promote", id="models-promote", className="primary"),
                            html.Button("Roll back", id="models-rollback", className="danger"),
                        ],
                        className="filters",
                    ),
                    dcc.ConfirmDialog(id="models-confirm-promote"),
                    dcc.ConfirmDialog(id="models-confirm-rollback"),
                    html.Div(id="models-message", className="message"),
                ],
                className="panel",
            ),
            rollout_panel.panel(),
            html.Div(
                [
                    html.H3("Champion vs"),
                    dcc.Dropdown(id="models-compare", style={"width": "200px"}),
                    dcc.Graph(id="models-comparison"),
                    html.Div(id="models-comparison-table"),
                ],
                className="panel",
            ),
            html.Div(
                [html.H3("Promotion and rollback history"), html.Div(id="models-history")],
                className="panel",
            ),
        ]
    )


@callback(
    Output("models-versions", "children"),
    Output("models-promote-version", "options"),
    Output("models-compare", "options"),
    Output("models-compare", "value"),
    Output("models-history", "children"),
    Input("models-moved", "data"),
)
def refresh(_: int | None) -> tuple[Any, list[dict], list[dict], str | None, Any]:
    """The versions table, the choices of the dropdowns and the history."""
    s = services()
    got = s.gather(
        versions=s.registry.versions,
        served=lambda: dq.prediction_counts_by_version(s.store),
        events=lambda: s.store.model_events(s.registry.model_name, limit=50),
    )
    versions, served, events = got["versions"], got["served"], got["events"]
    rows = [
        {
            "version": f"v{v.version}",
            "aliases": ", ".join(v.aliases) or "",
            "registered": dt.datetime.fromtimestamp(v.created_at_ms / 1000, dt.UTC),
            "snapshot": v.snapshot_id,
            "n_train": _int(v.tags.get("n_train")),
            "accuracy": v.metrics.get("accuracy"),
            "macro_f1": v.metrics.get("macro_f1"),
            "log_loss": v.metrics.get("log_loss"),
            "ece": v.metrics.get("ece"),
            "predictions": served.get(v.version, 0),
        }
        for v in versions
    ]
    columns = list(rows[0]) if rows else ["version"]
    table = c.table(
        rows,
        columns,
        row_class=["met" if CHAMPION in v.aliases else "" for v in versions],
        id="models-versions-table",
    )
    others = [v for v in versions if CHAMPION not in v.aliases]
    options = [{"label": f"v{v.version}", "value": v.version} for v in others]
    challenger = next((v.version for v in versions if CHALLENGER in v.aliases), None)
    compare = challenger or (others[0].version if others else None)
    history = c.table(
        events, ["ts", "event", "from_version", "to_version", "who", "why"], id="models-events"
    )
    return table, options, options, compare, history


@callback(
    Output("models-comparison", "figure"),
    Output("models-comparison-table", "children"),
    Input("models-compare", "value"),
    Input("models-moved", "data"),
)
def compare(version: str | None, _: int | None) -> tuple[Any, Any]:
    """The champion's held-out metrics next to another version's (per-class recall included)."""
    s = services()
    champion = s.registry.alias_version(CHAMPION)
    if champion is None:
        return figures.empty("no champion yet"), ""
    mine = s.registry.version(champion)
    other = s.registry.version(version) if version else None
    fig = figures.metrics_comparison(
        mine.metrics,
        other.metrics if other else None,
        champion_label=f"champion v{champion}",
        challenger_label=f"v{version}" if other else "",
        title="Held-out metrics (each on its own held-out split)",
    )
    names = sorted(set(mine.metrics) | set(other.metrics if other else {}))
    rows = [
        {
            "metric": n,
            f"v{champion}": mine.metrics.get(n),
            **({f"v{version}": other.metrics.get(n)} if other else {}),
        }
        for n in names
    ]
    return fig, c.table(rows, list(rows[0]) if rows else ["metric"])


@callback(
    Output("models-confirm-promote", "displayed"),
    Output("models-confirm-promote", "message"),
    Input("models-promote", "n_clicks"),
    State("models-promote-version", "value"),
    prevent_initial_call=True,
)
def ask_promote(_: int | None, version: str | None) -> tuple[bool, str]:
    if not version:
        return False, ""
    return True, f"Make v{version} the champion? The API serves it within seconds."


@callback(
    Output("models-confirm-rollback", "displayed"),
    Output("models-confirm-rollback", "message"),
    Input("models-rollback", "n_clicks"),
    prevent_initial_call=True,
)
def ask_rollback(_: int | None) -> tuple[bool, str]:
    current = services().registry.alias_version(CHAMPION)
    return True, f"Roll the champion v{current} back to the one before it?"


@callback(
    Output("models-message", "children"),
    Output("models-message", "className"),
    Output("models-moved", "data"),
    Input("models-confirm-promote", "submit_n_clicks"),
    Input("models-confirm-rollback", "submit_n_clicks"),
    State("models-promote-version", "value"),
    State("models-why", "value"),
    State("models-moved", "data"),
    prevent_initial_call=True,
)
def move(
    _promote: int | None, _rollback: int | None, version: str | None, why: str | None, moved: int
) -> tuple[str, str, Any]:
    """Promote or roll back once confirmed; say what happened, or why it could not."""
    if not security.may_write():
        return security.LOCKED, "message error", no_update
    s = services()
    why = (why or "").strip() or "from the dashboard"
    try:
        if dash.ctx.triggered_id == "models-confirm-promote":
            if not version:
                return "choose a version to promote", "message error", no_update
            done = promotion.promote(s.writer, s.registry, version, who=WHO, why=why)
        else:
            done = promotion.rollback(s.writer, s.registry, who=WHO, why=why)
    except promotion.PromotionError as exc:
        return str(exc), "message error", no_update
    s.models.refresh()
    text = f"champion v{done['from_version']} → v{done['to_version']}"
    return text, "message success", (moved or 0) + 1


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None

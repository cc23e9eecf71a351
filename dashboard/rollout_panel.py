"""The Models page's rollout panel: the running shadow or canary with its live test, or how the
last one ended; Start, Stop and Promote now, each behind a confirmation.

It reads `pipelines.loop.rollouts.status` and moves through `rollouts.start`, `stop` and
`promote_now`, as the API's `/api/models/shadow|canary` and `/api/models/rollout/*` do (each
move a `model_events` row, `who="dashboard"`). After a move this process's serving model and
rollout are refreshed at once, the API's within its poll. The page (`dashboard.pages.models`)
places `panel()` and shares its `models-moved` counter, so a move here refreshes the page's
versions and history, and a promotion there refreshes this panel.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html, no_update

from dashboard import components as c
from dashboard import security
from dashboard.data import services
from pipelines.loop import rollouts
from pipelines.models import promotion
from pipelines.models.registry import CHAMPION

WHO = "dashboard"
REFRESH_MS = 10_000  # labels arrive and the worker may decide: the figures are re-read this often


def panel() -> html.Div:
    """The panel's layout: the rollout's figures, then the controls."""
    return html.Div(
        [
            html.H3("Rollout (shadow or canary)"),
            dcc.Interval(id="models-rollout-interval", interval=REFRESH_MS),
            html.Div(id="models-rollout-status"),
            html.Div(
                [
                    dcc.Dropdown(
                        id="models-rollout-version",
                        placeholder="version to roll out",
                        style={"width": "200px"},
                    ),
                    dcc.RadioItems(
                        id="models-rollout-mode",
                        options=[{"label": m, "value": m} for m in rollouts.MODES],
                        value="shadow",
                        inline=True,
                    ),
                    html.Label(
                        [
                            "share ",
                            dcc.Input(
                                id="models-rollout-share",
                                type="number",
                                min=0,
                                max=1,
                                step=0.01,
                                style={"width": "80px"},
                            ),
                        ]
                    ),
                    dcc.Input(
                        id="models-rollout-why",
                        placeholder="why (kept in the audit trail)",
                        style={"width": "320px"},
                    ),
                    html.Button("Start rollout", id="models-rollout-start", className="primary"),
                    html.Button("Stop rollout", id="models-rollout-stop", className="danger"),
                    html.Button("Promote now", id="models-rollout-promote"),
                ],
                className="filters",
            ),
            html.P(
                "shadow: the challenger also answers that share of requests, logged and never "
                "served; canary: it serves that share. The live test on labels promotes or stops "
                "it; Stop and Promote now decide at once.",
                className="detail",
            ),
            dcc.ConfirmDialog(id="models-confirm-rollout-start"),
            dcc.ConfirmDialog(id="models-confirm-rollout-stop"),
            dcc.ConfirmDialog(id="models-confirm-rollout-promote"),
            html.Div(id="models-rollout-message", className="message"),
        ],
        className="panel",
    )


# -- pure views of `rollouts.status` -----------------------------------------------------------


def status_view(status: Mapping[str, Any]) -> list[Any]:
    """The running rollout's figures, or how the last one ended."""
    if status.get("state") == "running":
        return running_view(status)
    return last_view(status.get("last"))


def running_view(st: Mapping[str, Any]) -> list[Any]:
    """Cards (what runs, labels, accuracy, verdict), the test's figures, and for a shadow its
    per-class disagreement with the champion."""
    verdict = st.get("verdict") or {}
    comparison = verdict.get("comparison") or {}
    counts = comparison.get("counts") or {}
    labels = counts.get("n", counts.get("n_challenger", 0))
    next_look = verdict.get("next_look_at")
    look = f"look {verdict.get('look', 0)} of {verdict.get('looks', '–')}"
    cards = [
        c.card(
            "Rollout",
            f"{st['mode']} running",
            f"{_share(st.get('share'))} of requests · {str(st['rollout_id'])[:8]}",
            id="models-rollout-state",
        ),
        c.card(
            "Champion vs challenger",
            f"v{st['champion_version']} vs v{st['challenger_version']}",
            f"started {c.ago(st.get('started_at'))} by {st.get('started_by')}",
        ),
        c.card(
            "Labels",
            labels,
            f"{look}; next at {c.fmt(next_look)}" if next_look else f"{look}; the last",
        ),
        c.card(
            "Accuracy on the labels",
            f"{c.fmt(comparison.get('champion_accuracy'))} vs "
            f"{c.fmt(comparison.get('challenger_accuracy'))}",
            f"champion vs challenger; difference {c.fmt(comparison.get('difference'))}",
        ),
        c.card(
            "Verdict",
            verdict.get("action", "–"),
            f"α per look {c.fmt(verdict.get('alpha_per_look'), 4)}",
        ),
    ]
    agreement = st.get("agreement")
    if agreement is not None:
        cards.append(
            c.card(
                "Agreement",
                _percent(agreement.get("agreement")),
                f"with the champion on {c.fmt(agreement.get('n', 0))} shadowed predictions",
            )
        )
    out: list[Any] = [
        html.Div(cards, className="cards"),
        html.P(
            [html.Strong("verdict: "), verdict.get("reason", "–")],
            className="message",
            id="models-rollout-reason",
        ),
        _started(st),
        c.table([_test_row(comparison)], TEST_COLUMNS, id="models-rollout-test"),
    ]
    if agreement is not None:
        out += [html.H4("Where the shadow disagrees"), agreement_table(agreement)]
    return out


TEST_COLUMNS = [
    "test",
    "labels",
    "statistic",
    "p_value",
    "noninferiority_z",
    "p_noninferior",
    "margin",
]


def agreement_table(agreement: Mapping[str, Any]) -> Any:
    """Per served class: how often the shadow said another class, and which."""
    per_class = agreement.get("per_class") or {}
    if not per_class:
        return html.P("no shadowed predictions yet", className="detail")
    rows = [
        {
            "served class": cls,
            "predictions": entry.get("n"),
            "disagree": entry.get("disagree"),
            "disagreement": _percent(entry.get("disagreement")),
            "shadow said": ", ".join(
                f"{said}: {n}" for said, n in (entry.get("shadow_said") or {}).items()
            )
            or "–",
        }
        for cls, entry in per_class.items()
    ]
    return c.table(
        rows,
        list(rows[0]),
        row_class=["unmet" if r["disagree"] else "" for r in rows],
        id="models-rollout-agreement",
    )


def last_view(last: Mapping[str, Any] | None) -> list[Any]:
    """How the last rollout ended (promoted or stopped: when, by whom, why)."""
    if not last:
        return [html.P("no rollout yet", className="detail", id="models-rollout-state")]
    ended = str(last.get("ended", "")).removeprefix("rollout_")
    return [
        html.Div(
            [
                c.card(
                    "Last rollout",
                    f"{last.get('mode')} {ended}",
                    f"v{last.get('challenger_version')} beside v{last.get('champion_version')}, "
                    f"{_share(last.get('share'))} of requests",
                    id="models-rollout-state",
                ),
                c.card(
                    "Ended",
                    c.ago(last.get("ended_at")),
                    f"{c.fmt(last.get('ended_at'))} by {last.get('ended_by')}",
                ),
            ],
            className="cards",
        ),
        html.P(
            [html.Strong(f"{ended}: "), last.get("ended_why") or "–"],
            className="message",
            id="models-rollout-reason",
        ),
        _started(last),
    ]


def _started(st: Mapping[str, Any]) -> html.P:
    retrain = st.get("retrain_event")
    link: list[Any] = (
        [" · made by retrain ", dcc.Link(str(retrain)[:8], href="/retraining")] if retrain else []
    )
    return html.P(
        [
            f"started {c.fmt(st.get('started_at'))} by {st.get('started_by')}: "
            f"{st.get('why') or '–'}",
            *link,
        ],
        className="detail",
    )


def _test_row(comparison: Mapping[str, Any]) -> dict[str, Any]:
    counts = comparison.get("counts") or {}
    if "n" in counts:
        labels = f"{counts['n']} pairs (only champion right {counts.get('b')}, only challenger "
        labels += f"{counts.get('c')})"
    else:
        labels = (
            f"champion {counts.get('right_champion')}/{counts.get('n_champion')}, "
            f"challenger {counts.get('right_challenger')}/{counts.get('n_challenger')} right"
        )
    return {**{k: comparison.get(k) for k in TEST_COLUMNS}, "labels": labels}


def _share(share: Any) -> str:
    return f"{share:.0%}" if isinstance(share, int | float) else "–"


def _percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "–"


# -- callbacks ---------------------------------------------------------------------------------


@callback(
    Output("models-rollout-status", "children"),
    Output("models-rollout-start", "disabled"),
    Output("models-rollout-stop", "disabled"),
    Output("models-rollout-promote", "disabled"),
    Input("models-rollout-interval", "n_intervals"),
    Input("models-moved", "data"),
)
def refresh(_: int | None, __: int | None) -> tuple[list[Any], bool, bool, bool]:
    """The rollout's figures; Start while none runs, Stop and Promote now while one does."""
    s = services()
    st = rollouts.status(s.settings, s.store, s.registry)
    running = st["state"] == "running"
    return status_view(st), running, not running, not running


@callback(
    Output("models-rollout-version", "options"),
    Input("models-moved", "data"),
)
def versions(_: int | None) -> list[dict[str, str]]:
    """The registered versions a rollout can try: every one but the champion."""
    s = services()
    champion = s.registry.alias_version(CHAMPION)
    return [
        {"label": f"v{v.version}", "value": v.version}
        for v in s.registry.versions()
        if v.version != champion
    ]


@callback(Output("models-rollout-share", "value"), Input("models-rollout-mode", "value"))
def default_share(mode: str | None) -> float:
    """The share a retrain's rollout of that mode would take (settings)."""
    settings = services().settings
    return settings.rollout_canary_share if mode == "canary" else settings.rollout_shadow_share


@callback(
    Output("models-confirm-rollout-start", "displayed"),
    Output("models-confirm-rollout-start", "message"),
    Output("models-rollout-message", "children", allow_duplicate=True),
    Output("models-rollout-message", "className", allow_duplicate=True),
    Input("models-rollout-start", "n_clicks"),
    State("models-rollout-version", "value"),
    State("models-rollout-mode", "value"),
    State("models-rollout-share", "value"),
    prevent_initial_call=True,
)
def ask_start(
    _: int | None, version: str | None, mode: str | None, share: float | None
) -> tuple[bool, str, Any, Any]:
    if not version:
        return False, "", "choose a version to roll out", "message error"
    if share is None:
        return False, "", "the share is a number between 0 and 1", "message error"
    champion = services().registry.alias_version(CHAMPION)
    what = "also answer" if mode == "shadow" else "serve"
    text = (
        f"Start a {mode} of v{version} beside the champion v{champion}? It will {what} "
        f"{_share(share)} of requests until the live test decides."
    )
    return True, text, "", "message"


@callback(
    Output("models-confirm-rollout-stop", "displayed"),
    Output("models-confirm-rollout-stop", "message"),
    Input("models-rollout-stop", "n_clicks"),
    prevent_initial_call=True,
)
def ask_stop(_: int | None) -> tuple[bool, str]:
    s = services()
    running = s.store.active_rollout(s.registry.model_name)
    if running is None:
        return True, "Stop the rollout? (none seems to run)"
    return True, (
        f"Stop the {running['details'].get('mode')} of v{running['to_version']}? "
        f"The champion v{running['from_version']} serves every request again."
    )


@callback(
    Output("models-confirm-rollout-promote", "displayed"),
    Output("models-confirm-rollout-promote", "message"),
    Input("models-rollout-promote", "n_clicks"),
    prevent_initial_call=True,
)
def ask_promote(_: int | None) -> tuple[bool, str]:
    s = services()
    running = s.store.active_rollout(s.registry.model_name)
    if running is None:
        return True, "Promote the rollout's challenger? (none seems to run)"
    return True, (
        f"Make v{running['to_version']} the champion now, without waiting for the live test? "
        "The API serves it within seconds."
    )


@callback(
    Output("models-rollout-message", "children", allow_duplicate=True),
    Output("models-rollout-message", "className", allow_duplicate=True),
    Output("models-moved", "data", allow_duplicate=True),
    Input("models-confirm-rollout-start", "submit_n_clicks"),
    Input("models-confirm-rollout-stop", "submit_n_clicks"),
    Input("models-confirm-rollout-promote", "submit_n_clicks"),
    State("models-rollout-version", "value"),
    State("models-rollout-mode", "value"),
    State("models-rollout-share", "value"),
    State("models-rollout-why", "value"),
    State("models-moved", "data"),
    prevent_initial_call=True,
)
def move(
    _start: int | None,
    _stop: int | None,
    _promote: int | None,
    version: str | None,
    mode: rollouts.Mode | None,
    share: float | None,
    why: str | None,
    moved: int | None,
) -> tuple[str, str, Any]:
    """Start, stop or promote once confirmed; say what happened, or why it could not."""
    if not security.may_write():
        return security.LOCKED, "message error", no_update
    s = services()
    why = (why or "").strip() or "from the dashboard"
    trigger = dash.ctx.triggered_id
    try:
        if trigger == "models-confirm-rollout-start":
            if not version or share is None:
                return "choose a version and a share", "message error", no_update
            done = rollouts.start(
                s.writer,
                s.registry,
                mode=mode or "shadow",
                version=version,
                share=float(share),
                who=WHO,
                why=why,
            )
            text = (
                f"{done['mode']} of v{done['challenger_version']} started beside "
                f"v{done['champion_version']}"
            )
        elif trigger == "models-confirm-rollout-stop":
            done = rollouts.stop(s.writer, s.registry, who=WHO, why=why)
            text = f"rollout of v{done['stopped']} stopped"
        else:
            done = rollouts.promote_now(s.writer, s.registry, who=WHO, why=why)
            text = f"champion v{done['from_version']} → v{done['to_version']} (rollout promoted)"
    except (rollouts.RolloutError, promotion.PromotionError) as exc:
        return str(exc), "message error", no_update
    # This process at once (its Predict page), the API's processes at their poll.
    s.serving.rollouts.refresh()
    s.models.refresh()
    return text, "message success", (moved or 0) + 1

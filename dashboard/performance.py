"""The champion's performance over time, estimated and realized: a pure figure builder and the
Overview card's words. Plain data in (`pipelines.loop.estimated_performance.history`), no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from dashboard import components as c
from dashboard.figures import BAD_COLOR, CURRENT_COLOR, GOOD_COLOR, REFERENCE_COLOR, empty, styled

BAND_FILL = "rgba(44, 127, 184, 0.18)"


def chart(
    checks: Sequence[Mapping[str, Any]],
    drifted: Mapping[str, Sequence[str]],
    *,
    metric: str = "accuracy",
    harm: float,
    title: str | None = None,
) -> go.Figure:
    """Estimated `metric` per check with its band, the realized figure where labels exist,
    the champion's reference, and the line `harm` below it where a drop counts; hovering a
    check shows the features its drift check flagged (`drifted`: run id → feature names)."""
    title = title or f"{metric.replace('_', ' ')}: estimated vs realized"
    points = [ch for ch in checks if ch["metrics"].get(metric, {}).get("estimated") is not None]
    if not points:
        return empty("no performance estimate yet: run a drift check", title)
    ts = [ch["ts"] for ch in points]
    m = [ch["metrics"][metric] for ch in points]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[*ts, *ts[::-1]],
            y=[*(e["high"] for e in m), *(e["low"] for e in m[::-1])],
            fill="toself",
            fillcolor=BAND_FILL,
            line={"width": 0},
            hoverinfo="skip",
            name="band",
        )
    )
    hover = [
        f"v{ch['model_version']} · {ch['n_window']:,} predictions<br>"
        + (
            "drifted: " + ", ".join(drifted[ch["run_id"]][:8])
            if drifted.get(ch["run_id"])
            else "no drifted feature"
        )
        for ch in points
    ]
    fig.add_trace(
        go.Scatter(
            x=ts,
            y=[e["estimated"] for e in m],
            mode="lines+markers",
            line={"color": CURRENT_COLOR},
            name="estimated",
            text=hover,
            hovertemplate="%{y:.3f}<br>%{text}<extra>estimated</extra>",
        )
    )
    labeled = [(t, e["realized"], ch["n_labeled"]) for t, e, ch in zip(ts, m, points, strict=True)]
    labeled = [p for p in labeled if p[1] is not None]
    if labeled:
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in labeled],
                y=[p[1] for p in labeled],
                mode="markers",
                marker={"color": GOOD_COLOR, "size": 9, "symbol": "diamond"},
                name="realized",
                text=[f"{p[2]:,} labeled" for p in labeled],
                hovertemplate="%{y:.3f} on %{text}<extra>realized</extra>",
            )
        )
    reference = m[-1].get("reference")
    if reference is not None:
        fig.add_hline(y=reference, line={"color": REFERENCE_COLOR, "dash": "dot"})
        fig.add_hline(y=reference - harm, line={"color": BAD_COLOR, "dash": "dash"})
        fig.add_annotation(
            x=1, xref="paper", y=reference, text="reference", showarrow=False, yshift=8
        )
        fig.add_annotation(
            x=1, xref="paper", y=reference - harm, text=f"−{harm:.2f}", showarrow=False, yshift=8
        )
    return styled(fig, title, yaxis={"title": metric, "rangemode": "tozero"}, height=320)


def card(check: Mapping[str, Any] | None, metric: str = "accuracy") -> Any:
    """The Overview card: the latest estimate with its band, the realized figure beside it."""
    figures = (check or {}).get("metrics", {}).get(metric)
    if not figures or figures.get("estimated") is None:
        return c.card("Estimated accuracy", "–", "no estimate yet: run a drift check")
    band = f"band {figures['low']:.1%}–{figures['high']:.1%}"
    realized = figures.get("realized")
    seen = (
        f"realized {realized:.1%} on {check['n_labeled']:,}"  # type: ignore[index]
        if realized is not None
        else "no labels yet"
    )
    reference = figures.get("reference")
    ref = f" · held-out {reference:.1%}" if reference is not None else ""
    calibrated = "" if check.get("calibrated") else " · uncalibrated"  # type: ignore[union-attr]
    return c.card(
        "Estimated accuracy", f"{figures['estimated']:.1%}", f"{band} · {seen}{ref}{calibrated}"
    )


def drifted_by_run(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Drift history rows (one per run and column) as run id → the drifted features."""
    out: dict[str, list[str]] = {}
    for row in rows:
        if row.get("drifted") and row.get("feature") not in ("prediction", "label"):
            out.setdefault(row["run_id"], []).append(row["feature"])
    return out

"""Pure builders of small Dash components (cards, badges, tables): data in, components out.

Like `figures`, they read nothing themselves, so pages stay short and tests need no browser.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from dash import html


def fmt(value: Any, digits: int = 3) -> str:
    """A value for display: numbers rounded, times in UTC to the second, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and abs(value) < 10**-digits:
            return f"{value:.{digits}g}"
        return f"{value:,.{digits}f}"
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def ago(when: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """'3 min ago', '2 h ago', '5 d ago' (or a dash)."""
    if when is None:
        return "–"
    now = now or dt.datetime.now(dt.UTC)
    seconds = max(0.0, (now - when).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def card(title: str, value: Any, detail: Any = "", *, id: str | None = None) -> html.Div:
    """One figure with its title and what it rests on."""
    kwargs: dict[str, Any] = {"id": id} if id else {}
    return html.Div(
        [
            html.Div(title, className="title"),
            html.Div(value if isinstance(value, str | list) else fmt(value), className="value"),
            html.Div(detail, className="detail"),
        ],
        className="card",
        **kwargs,
    )


def badge(name: str, status: str, detail: str = "") -> html.Span:
    """A coloured health badge: status ok (green), degraded (orange), down/error (red)."""
    cls = {"ok": "ok", "degraded": "warn", "idle": "idle"}.get(status, "bad")
    return html.Span(f"{name}: {status}", className=f"badge {cls}", title=detail)


def table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    headers: Sequence[str] | None = None,
    row_class: Sequence[str] | None = None,
    id: str | None = None,
) -> html.Table:
    """A plain HTML table of `columns` of `rows` (numbers right-aligned)."""
    head = html.Thead(html.Tr([html.Th(h) for h in (headers or columns)]))
    body = []
    for i, row in enumerate(rows):
        cells = [
            html.Td(
                fmt(row.get(c)),
                className="num" if isinstance(row.get(c), int | float) else None,
            )
            for c in columns
        ]
        body.append(html.Tr(cells, className=row_class[i] if row_class else None))
    kwargs: dict[str, Any] = {"id": id} if id else {}
    return html.Table([head, html.Tbody(body)], className="plain", **kwargs)


def range_hint(info: Mapping[str, Any] | None) -> str:
    """A feature's training range in words: '5%–95%: 22 – 42 (median 27; min 17, max 57)'."""
    if not info:
        return "no reference range"
    if info.get("kind") == "categorical":
        shares = info.get("shares") or {}
        top = list(shares.items())[:4]
        return "training: " + ", ".join(f"{k} {v:.0%}" for k, v in top)
    return (
        f"training 5–95%: {fmt(info.get('p05'), 2)} – {fmt(info.get('p95'), 2)} "
        f"(median {fmt(info.get('median'), 2)}; min {fmt(info.get('min'), 2)}, "
        f"max {fmt(info.get('max'), 2)})"
    )


def outside_range(value: Any, info: Mapping[str, Any] | None) -> bool:
    """Whether a value lies outside what training saw (beyond min/max, or an unseen category)."""
    if not info or value is None:
        return False
    if info.get("kind") == "categorical":
        return str(value) not in (info.get("shares") or {})
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    low, high = info.get("min"), info.get("max")
    return (low is not None and number < low) or (high is not None and number > high)


def features_table(
    features: Mapping[str, Any], ranges: Mapping[str, Mapping[str, Any]]
) -> html.Table:
    """An item's feature values next to their training ranges; values outside them in red."""
    rows = []
    for name, value in features.items():
        info = ranges.get(name)
        rows.append(
            html.Tr(
                [
                    html.Td(name),
                    html.Td(fmt(value, 2), className="out" if outside_range(value, info) else None),
                    html.Td(range_hint(info), className="detail"),
                ]
            )
        )
    head = html.Thead(html.Tr([html.Th("feature"), html.Th("value"), html.Th("training data")]))
    return html.Table([head, html.Tbody(rows)], className="plain")


def shortcut_keys(classes: Sequence[Any]) -> list[str | None]:
    """The key that answers each class on the labeling page: a class that is one digit
    (the handwritten digits' 0–9, a binary 0/1 label) is its own key when every class is one;
    otherwise the first nine classes get 1–9 in order, and the others no key."""
    names = [str(cls) for cls in classes]
    if all(len(n) == 1 and n.isdigit() for n in names):
        own: list[str | None] = list(names)
        return own
    return [str(i + 1) if i < 9 else None for i in range(len(names))]


def class_buttons(classes: Sequence[Any], id_type: str, class_name: str) -> list[html.Button]:
    """One button per class, each showing its keyboard shortcut (`shortcut_keys`) and carrying
    it as `data-key`, which `assets/shortcuts.js` looks up when the key is pressed."""
    buttons = []
    for cls, key in zip(classes, shortcut_keys(classes), strict=True):
        label: list[Any] = [f"{cls} ", html.Kbd(key)] if key else [str(cls)]
        extra: dict[str, Any] = {"data-key": key} if key else {}
        buttons.append(
            html.Button(
                label,
                id={"type": id_type, "value": str(cls)},
                className=f"primary {class_name}",
                **extra,
            )
        )
    return buttons


def log_tail(path_name: str, lines: Sequence[str]) -> html.Div:
    """The last lines of one process's log file."""
    return html.Div(
        [
            html.Div(path_name, className="detail"),
            html.Pre("\n".join(lines) or "(empty)", className="log"),
        ]
    )


def condition_rows(check: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The retraining conditions (`retraining_conditions.check`) as rows: each figure, its
    threshold, and `crossed` when the figure is past the threshold (a trigger that holds, or a
    block).

    The decision itself stays `retraining_policy.decide`'s; these rows only show its inputs.
    """
    f, t = check.get("figures") or {}, check.get("thresholds") or {}
    rows = [
        {
            "condition": "drift share (latest check of the champion)",
            "figure": f.get("drift_share"),
            "threshold": f"≥ {t.get('drift_share_threshold')}",
            "crossed": bool(f.get("dataset_drift"))
            or (f.get("drift_share") or 0.0) >= (t.get("drift_share_threshold") or 1.0),
        },
        {
            "condition": "new labels since the champion's training data",
            "figure": f.get("new_labels"),
            "threshold": f"≥ {t.get('min_new_labels')} (with drift)",
            "crossed": (f.get("new_labels") or 0) >= (t.get("min_new_labels") or 0),
        },
    ]
    errors = f.get("errors_per_class") or {}
    for cls in sorted(errors, key=str):
        rows.append(
            {
                "condition": f"errors on class {cls}",
                "figure": errors[cls],
                "threshold": f"≥ {t.get('fail_threshold')}",
                "crossed": errors[cls] >= (t.get("fail_threshold") or 0),
            }
        )
    accuracy = f.get("live_accuracy")
    rows.append(
        {
            "condition": f"live accuracy (on {f.get('n_feedback', 0)} labeled predictions, "
            f"needs ≥ {t.get('min_feedback')})",
            "figure": accuracy,
            "threshold": f"< {t.get('accuracy_floor')}",
            "crossed": accuracy is not None and accuracy < (t.get("accuracy_floor") or 0.0),
        }
    )
    last, now = f.get("last_retrain_at"), f.get("now")
    elapsed = None if last is None or now is None else round(now - last)
    rows.append(
        {
            "condition": "seconds since the last retrain (cooldown)",
            "figure": elapsed,
            "threshold": f"≥ {t.get('cooldown_s')}",
            "crossed": elapsed is not None and elapsed < (t.get("cooldown_s") or 0),
        }
    )
    rows.append(
        {
            "condition": "a retrain is running",
            "figure": bool(f.get("running")),
            "threshold": "no",
            "crossed": bool(f.get("running")),
        }
    )
    return rows


def run_rows(runs: Sequence[Mapping[str, Any]], metric: str = "macro_f1") -> list[dict[str, Any]]:
    """Retraining runs (`retraining_control.history`) as table rows: when, why, outcome, and the
    champion's and the challenger's `metric` on the fixed held-out rows both are judged on."""
    out = []
    for run in runs:
        metrics = run.get("metrics") or {}
        decision = run.get("decision") or {}

        def score(side: str, m: Mapping[str, Any] = metrics) -> Any:
            return ((m.get(side) or {}).get("fixed") or {}).get(metric)

        reasons = run.get("reasons") or []
        out.append(
            {
                "started": run.get("started_at"),
                "trigger": run.get("trigger"),
                "who": run.get("who"),
                "reasons": "; ".join(reasons) if isinstance(reasons, list) else str(reasons),
                "status": run.get("status"),
                "champion": run.get("champion_version"),
                "candidate": run.get("candidate_version"),
                f"champion {metric}": score("champion"),
                f"candidate {metric}": score("challenger"),
                "decision": "; ".join(decision.get("reasons") or [])[:300]
                or (run.get("error") or ""),
                "seconds": metrics.get("seconds"),
            }
        )
    return out

"""Labeling queue: the most informative pending item with what a person needs to decide (its
features against the training ranges, the prediction and its probabilities), a button per
class and Skip, keyboard shortcuts (1-9 for the classes, S to skip), and progress.

Answers go through `pipelines.queue.answer` / `skip`, the API's own functions: a label is also
written as feedback, which makes it training data for the next retrain.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, callback, dcc, html, no_update

from dashboard import components as c
from dashboard import figures
from dashboard.data import services
from pipelines import dashboard_queries as dq
from pipelines import queue

dash.register_page(__name__, path="/labeling", name="Labeling queue", order=5)

CLASS = "labeling-class"
PROGRESS_MS = 15_000


def layout(**_: Any) -> html.Div:
    schema = services().schema()
    classes = [str(cls) for cls in schema.classes] if schema is not None else []
    buttons = [
        html.Button(
            [f"{cls} ", html.Kbd(str(i + 1))] if i < 9 else cls,
            id={"type": CLASS, "value": cls},
            className=f"primary {CLASS}",
        )
        for i, cls in enumerate(classes)
    ]
    return html.Div(
        [
            html.H2("Labeling queue"),
            dcc.Interval(id="labeling-interval", interval=PROGRESS_MS),
            dcc.Store(id="labeling-current"),
            dcc.Store(id="labeling-done", data=0),
            html.Div(id="labeling-progress", className="cards"),
            html.Div(
                [
                    html.Div(id="labeling-item"),
                    html.Div(
                        [
                            html.Span("Label: ", className="detail"),
                            *buttons,
                            html.Button(["Skip ", html.Kbd("S")], id="labeling-skip"),
                            html.Button("Refresh", id="labeling-reload"),
                            dcc.Input(
                                id="labeling-who",
                                placeholder="your name",
                                persistence=True,
                                style={"width": "140px", "marginLeft": "12px"},
                            ),
                        ],
                        id="labeling-actions",
                    ),
                    html.Div(id="labeling-message", className="message"),
                ],
                id="labeling-panel",
                className="panel",
            ),
        ]
    )


@callback(
    Output("labeling-progress", "children"),
    Input("labeling-interval", "n_intervals"),
    Input("labeling-done", "data"),
)
def progress(_: int | None, __: int | None) -> list[Any]:
    """Pending, today's answers and what the next retrain still needs."""
    s = services()
    p = queue.progress(s.store, s.settings, s.registry)
    return [
        c.card("Pending", p["pending"], "uncertain predictions waiting"),
        c.card("Labeled today", p["labeled_today"], f"{p['skipped_today']} skipped"),
        c.card("New labels", p["new_labels"], "since the champion's training data"),
        c.card(
            "Needed for retrain",
            p["needed_for_retrain"],
            "more labels before drift can trigger a retrain",
        ),
    ]


@callback(
    Output("labeling-item", "children"),
    Output("labeling-current", "data"),
    Input("labeling-done", "data"),
    Input("labeling-reload", "n_clicks"),
)
def show(_: int | None, __: int | None) -> tuple[Any, dict[str, Any] | None]:
    """The next item (most informative first). Shown until answered or Refresh, so what a
    person answers is always the item in front of them."""
    s = services()
    page = queue.items(s.store, status="pending", limit=1)
    if not page["items"]:
        return html.P("The queue is empty: nothing to label right now.", id="labeling-empty"), None
    item = page["items"][0]
    schema = s.schema()
    classes = list(schema.classes) if schema is not None else []
    probs = item.get("probabilities") or []
    header = html.Div(
        [
            html.Strong(f"prediction {item['prediction']}", id="labeling-prediction"),
            html.Span(
                f" · confidence {c.fmt(item.get('confidence'))} · informativeness "
                f"{c.fmt(item.get('score'))} · {item.get('model_name')} "
                f"v{item.get('model_version')} · queued {c.ago(item.get('enqueued_at'))} · "
                f"id {item['prediction_id']} · {page['total']:,} pending",
                className="detail",
            ),
        ]
    )
    body: list[Any] = [header]
    if probs and len(probs) == len(classes):
        body.append(
            dcc.Graph(
                figure=figures.probabilities(classes, probs, item["prediction"]),
                style={"maxWidth": "560px"},
                config={"displayModeBar": False},
            )
        )
    if item.get("features"):
        body.append(c.features_table(item["features"], s.reference_ranges()))
    if item.get("image_ref"):
        body.append(_image(s, item))
    return html.Div(body), {"prediction_id": item["prediction_id"]}


@callback(
    Output("labeling-message", "children"),
    Output("labeling-message", "className"),
    Output("labeling-done", "data"),
    Input({"type": CLASS, "value": ALL}, "n_clicks"),
    Input("labeling-skip", "n_clicks"),
    State("labeling-current", "data"),
    State("labeling-who", "value"),
    State("labeling-done", "data"),
    prevent_initial_call=True,
)
def answer(
    _classes: list[int | None],
    _skip: int | None,
    current: dict[str, Any] | None,
    who: str | None,
    done: int | None,
) -> tuple[Any, Any, Any]:
    """Label (or skip) the item on screen, then move on to the next one."""
    trigger = dash.ctx.triggered_id
    if trigger is None or not dash.ctx.triggered[0]["value"]:
        return no_update, no_update, no_update
    if not current:
        return "nothing to answer: the queue is empty", "message error", no_update
    s = services()
    who = (who or "").strip() or "dashboard"
    pid = current["prediction_id"]
    try:
        if trigger == "labeling-skip":
            queue.skip(s.writer, pid, who=who)
            text = f"skipped {pid}"
        else:
            schema = s.schema()
            if schema is None:
                return "no schema: no model yet", "message error", no_update
            label = schema.label_from_store(trigger["value"])
            done_item = queue.answer(s.writer, schema, pid, label=label, who=who)
            verdict = {True: " (agrees with the model)", False: " (corrects the model)"}
            text = f"labeled {pid} as {done_item['label']}{verdict.get(done_item['correct'], '')}"
    except queue.AlreadyAnswered as exc:
        # Someone else answered it: not an error for this person, just move on.
        return f"{exc}; showing the next one", "message", (done or 0) + 1
    except queue.QueueError as exc:
        return str(exc), "message error", no_update
    return text, "message success", (done or 0) + 1


def _image(s: Any, item: dict[str, Any]) -> Any:
    """A vision item's image with the boxes the model drew (none for a classifier)."""
    from pipelines.vision.images import load_stored

    try:
        pixels = load_stored(s.settings.images_dir, item["image_ref"])
    except (OSError, ValueError) as exc:
        return html.P(f"image {item['image_ref']} cannot be shown: {exc}", className="detail")
    boxes = dq.detections(s.store, item["prediction_id"])
    return dcc.Graph(
        figure=figures.image_with_boxes(pixels, boxes, f"{len(boxes)} boxes"),
        config={"displayModeBar": False},
        style={"maxWidth": "720px"},
    )

"""Labeling queue: the most informative pending item with what a person needs to decide (its
features against the training ranges, the prediction and its probabilities), a button per
class and Skip, keyboard shortcuts (each class button shows its key: digit classes are their
own digit, other classes 1-9 in order; S to skip), and progress.

A row of the digits demo's 64 pixels (`pipelines.demo.datasets.is_digit_schema`) is shown as the 8×8
image it is, the pixel values folded away under it.

Answers go through `pipelines.loop.labeling_queue.answer` / `skip`, the API's own functions: a label
is also written as feedback, which makes it training data for the next retrain.

An image item is shown and answered by `dashboard.image_review`.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, callback, dcc, html, no_update

from dashboard import components as c
from dashboard import figures, image_review, security
from dashboard.data import services
from dashboard.image_review import CLASS, HIDDEN
from pipelines import demo
from pipelines.loop import labeling_queue

dash.register_page(__name__, path="/labeling", name="Labeling queue", order=5)

PROGRESS_MS = 15_000


def layout(**_: Any) -> html.Div:
    schema = services().schema()
    classes = [str(cls) for cls in schema.classes] if schema is not None else []
    buttons = c.class_buttons(classes, CLASS, CLASS)
    return html.Div(
        [
            html.H2("Labeling queue"),
            dcc.Interval(id="labeling-interval", interval=PROGRESS_MS),
            dcc.Store(id="labeling-current"),
            dcc.Store(id="labeling-done", data=0),
            html.Div(id="labeling-progress", className="cards"),
            dcc.Store(id="labeling-boxes"),
            html.Div(
                [
                    html.Div(id="labeling-item"),
                    image_review.box_editor(),
                    html.Div(
                        [
                            html.Span("Label: ", className="detail"),
                            html.Span(buttons, id="labeling-classes"),
                            html.Span(id="labeling-image-classes"),
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
                    html.P(
                        [
                            "Keyboard: the key on a class button labels with that class, ",
                            html.Kbd("S"),
                            " skips.",
                        ],
                        className="detail",
                    ),
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
    p = labeling_queue.progress(s.store, s.settings, s.registry)
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
    Output("labeling-classes", "style"),
    Output("labeling-image-classes", "children"),
    Output("labeling-box-panel", "style"),
    Output("labeling-boxes", "data"),
    Output("labeling-new-class", "options"),
    Output("labeling-new-class", "value"),
    Input("labeling-done", "data"),
    Input("labeling-reload", "n_clicks"),
)
def show(_: int | None, __: int | None) -> tuple[Any, ...]:
    """The next item (most informative first). Shown until answered or Refresh, so what a
    person answers is always the item in front of them."""
    s = services()
    page = labeling_queue.items(s.store, status="pending", limit=1)
    if not page["items"]:
        empty = html.P("The queue is empty: nothing to label right now.", id="labeling-empty")
        return empty, None, {}, [], HIDDEN, None, [], None
    item = page["items"][0]
    if item.get("task") in ("detect", "classify"):
        return image_review.show_image(s, item, page["total"])
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
    seen: list[Any] = []  # what the model answered
    if probs and len(probs) == len(classes):
        seen.append(
            dcc.Graph(
                figure=figures.probabilities(classes, probs, item["prediction"]),
                style={"maxWidth": "560px"},
                config={"displayModeBar": False},
                className="grow",
            )
        )
    features = item.get("features") or {}
    table = c.features_table(features, s.reference_ranges())
    body: list[Any] = [header, *seen, table] if features else [header, *seen]
    if features and demo.is_digit_schema(list(features)):
        # The image beside the probabilities; the 64 numbers only on demand.
        image = dcc.Graph(
            figure=figures.digit(demo.digit_image(features), "the input"),
            id="labeling-digit",
            config={"displayModeBar": False, "staticPlot": True},
        )
        pixels = html.Details([html.Summary("the 64 pixel values", className="detail"), table])
        body = [header, html.Div([image, *seen], className="row"), pixels]
    return html.Div(body), {"prediction_id": item["prediction_id"]}, {}, [], HIDDEN, None, [], None


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
    if not security.may_write():
        return security.LOCKED, "message error", no_update
    if not current:
        return "nothing to answer: the queue is empty", "message error", no_update
    s = services()
    who = (who or "").strip() or "dashboard"
    pid = current["prediction_id"]
    try:
        if trigger == "labeling-skip":
            labeling_queue.skip(s.writer, pid, who=who)
            text = f"skipped {pid}"
        elif current.get("task"):
            return "an image item: answer with the image's own controls", "message error", no_update
        else:
            schema = s.schema()
            if schema is None:
                return "no schema: no model yet", "message error", no_update
            label = schema.label_from_store(trigger["value"])
            done_item = labeling_queue.answer(s.writer, schema, pid, label=label, who=who)
            verdict = {True: " (agrees with the model)", False: " (corrects the model)"}
            text = f"labeled {pid} as {done_item['label']}{verdict.get(done_item['correct'], '')}"
    except labeling_queue.AlreadyAnswered as exc:
        # Someone else answered it: not an error for this person, just move on.
        return f"{exc}; showing the next one", "message", (done or 0) + 1
    except labeling_queue.QueueError as exc:
        return str(exc), "message error", no_update
    return text, "message success", (done or 0) + 1

"""The Labeling page's image items: the image, and the controls of its task.

For a classifier, the buttons are the vision model's classes. For a detector, the image comes
with the predicted boxes as editable shapes and one row per box: a person confirms them as they
are, changes a box's class, deletes a wrong box, drags a box into place, or draws a missing one
(the graph's drag mode draws rectangles, read back from `relayoutData`). The reviewed boxes are
answered through `pipelines.loop.labeling_queue.answer_image`, the function POST
/api/labeling-queue/{id}/label uses. The page (`dashboard.pages.labeling`) shows the next item
and calls `show_image` when it is an image.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, callback, dcc, html, no_update

from dashboard import components as c
from dashboard import figures, security
from dashboard.data import services
from dashboard.vision import vision
from pipelines.loop import labeling_queue
from pipelines.store import queries as dq

CLASS = "labeling-class"  # the class buttons' id type and CSS class (tabular items too)
IMAGE_CLASS = "labeling-image-class"
BOX_CLASS = "labeling-box-class"
BOX_DELETE = "labeling-box-delete"
HIDDEN = {"display": "none"}


def box_editor() -> html.Div:
    """The detection review panel: the image with its boxes, one row per box, the class of a
    newly drawn box, and the two answers (confirm as predicted, save the edited boxes)."""
    return html.Div(
        [
            html.P(
                "Drag on the image to draw a missing box; drag a box's edge to fix it. "
                "Change a class or delete a box in its row.",
                className="detail",
            ),
            dcc.Graph(
                id="labeling-image",
                config={
                    "displayModeBar": True,
                    "modeBarButtonsToAdd": ["drawrect"],
                    "displaylogo": False,
                },
                style={"maxWidth": "720px"},
            ),
            html.Div(id="labeling-box-rows"),
            html.Div(
                [
                    html.Span("class of a new box: ", className="detail"),
                    dcc.Dropdown(
                        id="labeling-new-class",
                        clearable=False,
                        style={"width": "120px", "display": "inline-block"},
                    ),
                    html.Button(
                        "Confirm as predicted", id="labeling-confirm-boxes", className="primary"
                    ),
                    html.Button("Save boxes", id="labeling-save-boxes", className="primary"),
                ],
            ),
        ],
        id="labeling-box-panel",
        style=HIDDEN,
    )


def show_image(s: Any, item: dict[str, Any], total: int) -> tuple[Any, ...]:
    """An image item: its header and image, and the controls of its task (class buttons for
    a classifier, the box editor for a detector); the tabular class buttons are hidden."""
    pid, task = item["prediction_id"], item["task"]
    v = vision()
    names = v.names_of(item.get("model_version")) if v is not None else None
    header = html.Div(
        [
            html.Strong(f"prediction {_describe(item, names)}", id="labeling-prediction"),
            html.Span(
                f" · {task} · confidence {c.fmt(item.get('confidence'))} · informativeness "
                f"{c.fmt(item.get('score'))} · {item.get('model_name')} "
                f"v{item.get('model_version')} · queued {c.ago(item.get('enqueued_at'))} · "
                f"id {pid} · {total:,} pending",
                className="detail",
            ),
        ]
    )
    current = {"prediction_id": pid, "task": task, "image_ref": item.get("image_ref")}
    if names is None:
        why = "no vision model is loaded to name the classes: cannot label this image"
        if v is None:
            why = "vision is not available in this dashboard; skip this item"
        return _cannot_show(header, why, current)
    current["names"] = list(names)
    if task == "classify":
        buttons = c.class_buttons(names, IMAGE_CLASS, CLASS)
        body = [header, _image(s, item)]
        if item.get("probabilities") and len(item["probabilities"]) == len(names):
            body.insert(
                1,
                dcc.Graph(
                    figure=figures.probabilities(
                        list(names), item["probabilities"], item["prediction"]
                    ),
                    style={"maxWidth": "560px"},
                    config={"displayModeBar": False},
                ),
            )
        return html.Div(body), current, HIDDEN, buttons, HIDDEN, None, [], None
    try:
        from pipelines.vision.images import load_stored

        pixels = load_stored(s.settings.images_dir, item["image_ref"])
    except (OSError, ValueError, ImportError) as exc:
        why = f"image {item.get('image_ref')} cannot be shown: {exc}"
        return _cannot_show(header, why, current)
    current["width"], current["height"] = int(pixels.shape[1]), int(pixels.shape[0])
    predicted = [
        {"box": [float(b[k]) for k in ("x1", "y1", "x2", "y2")], "class": names.index(b["class"])}
        if b["class"] in names
        else None
        for b in dq.detections(s.store, pid)
    ]
    boxes = [b for b in predicted if b is not None]
    current["predicted"] = boxes
    options = [{"label": n, "value": i} for i, n in enumerate(names)]
    return html.Div(header), current, HIDDEN, [], {}, boxes, options, 0


def _cannot_show(header: Any, why: str, current: dict[str, Any]) -> tuple[Any, ...]:
    """The `show` outputs for an image item that can't be answered here: why, and no controls."""
    body = html.Div([header, html.P(why, className="message error")])
    return body, current, HIDDEN, [], HIDDEN, None, [], None


def _describe(item: dict[str, Any], names: Any) -> str:
    """The prediction in words: the class, or the detected boxes' classes."""
    if item.get("task") == "classify":
        return str(item.get("prediction"))
    import json

    try:
        boxes = json.loads(item.get("prediction") or "[]")
    except ValueError:
        return "?"
    if not boxes:
        return "no objects"
    return f"{len(boxes)} boxes: " + ", ".join(str(b.get("name", b.get("class"))) for b in boxes)


@callback(
    Output("labeling-image", "figure"),
    Output("labeling-box-rows", "children"),
    Input("labeling-boxes", "data"),
    State("labeling-current", "data"),
    prevent_initial_call=True,
)
def draw_boxes(
    boxes: list[dict[str, Any]] | None, current: dict[str, Any] | None
) -> tuple[Any, Any]:
    """The image with the boxes under review, and one row per box (class, delete)."""
    if boxes is None or not current or current.get("task") != "detect":
        return figures.empty("no detection to review"), []
    from pipelines.vision.images import load_stored

    s = services()
    names = current["names"]
    try:
        pixels = load_stored(s.settings.images_dir, current["image_ref"])
    except (OSError, ValueError) as exc:
        return figures.empty(f"image cannot be shown: {exc}"), []
    fig = figures.box_editor(pixels, boxes, names, title=current["prediction_id"][:12])
    options = [{"label": n, "value": i} for i, n in enumerate(names)]
    rows: list[Any] = [
        html.Div(
            [
                html.Span(f"#{i + 1}", className="detail"),
                dcc.Dropdown(
                    options,
                    b["class"],
                    id={"type": BOX_CLASS, "index": i},
                    clearable=False,
                    style={"width": "120px", "display": "inline-block"},
                ),
                html.Span(
                    " [" + ", ".join(f"{v:.0f}" for v in b["box"]) + "] ", className="detail"
                ),
                html.Button("delete", id={"type": BOX_DELETE, "index": i}),
            ],
            className="labeling-box-row",
        )
        for i, b in enumerate(boxes)
    ]
    if not rows:
        rows = [html.P("no boxes: saving says the image holds nothing", className="detail")]
    return fig, rows


@callback(
    Output("labeling-boxes", "data", allow_duplicate=True),
    Input("labeling-image", "relayoutData"),
    Input({"type": BOX_CLASS, "index": ALL}, "value"),
    Input({"type": BOX_DELETE, "index": ALL}, "n_clicks"),
    State("labeling-boxes", "data"),
    State("labeling-new-class", "value"),
    State("labeling-current", "data"),
    prevent_initial_call=True,
)
def edit_boxes(
    relayout: dict[str, Any] | None,
    classes: list[int | None],
    _deletes: list[int | None],
    boxes: list[dict[str, Any]] | None,
    new_class: int | None,
    current: dict[str, Any] | None,
) -> Any:
    """Apply one edit to the boxes under review: a drawn or moved box, a class changed in its
    row, a box deleted. Events that change nothing (a zoom, rows being redrawn) are ignored."""
    if boxes is None or not current or current.get("task") != "detect":
        return no_update
    trigger = dash.ctx.triggered_id
    if trigger == "labeling-image":
        edited = figures.box_edits(
            relayout, boxes, int(new_class or 0), current["width"], current["height"]
        )
        return no_update if edited is None else edited
    if isinstance(trigger, dict) and trigger.get("type") == BOX_DELETE:
        if not dash.ctx.triggered[0]["value"]:
            return no_update  # a row being drawn, not a click
        i = int(trigger["index"])
        return [b for j, b in enumerate(boxes) if j != i]
    if isinstance(trigger, dict) and trigger.get("type") == BOX_CLASS:
        updated = [
            {**b, "class": int(cls)} if cls is not None else b
            for b, cls in zip(boxes, classes, strict=False)
        ]
        return no_update if updated == boxes else updated
    return no_update


@callback(
    Output("labeling-message", "children", allow_duplicate=True),
    Output("labeling-message", "className", allow_duplicate=True),
    Output("labeling-done", "data", allow_duplicate=True),
    Input({"type": IMAGE_CLASS, "value": ALL}, "n_clicks"),
    Input("labeling-confirm-boxes", "n_clicks"),
    Input("labeling-save-boxes", "n_clicks"),
    State("labeling-boxes", "data"),
    State("labeling-current", "data"),
    State("labeling-who", "value"),
    State("labeling-done", "data"),
    prevent_initial_call=True,
)
def answer_image(
    _classes: list[int | None],
    _confirm: int | None,
    _save: int | None,
    boxes: list[dict[str, Any]] | None,
    current: dict[str, Any] | None,
    who: str | None,
    done: int | None,
) -> tuple[Any, Any, Any]:
    """Answer the image on screen through `labeling_queue.answer_image`: a class for a classifier,
    the predicted boxes as they are (confirm) or the reviewed ones (save) for a detector."""
    trigger = dash.ctx.triggered_id
    if trigger is None or not dash.ctx.triggered[0]["value"]:
        return no_update, no_update, no_update
    if not security.may_write():
        return security.LOCKED, "message error", no_update
    if not current or "names" not in current:
        return "nothing to answer: no image item on screen", "message error", no_update
    s = services()
    who = (who or "").strip() or "dashboard"
    pid = current["prediction_id"]
    try:
        if isinstance(trigger, dict):
            done_item = labeling_queue.answer_image(
                s.writer, pid, names=current["names"], who=who, label=trigger["value"]
            )
            text = f"labeled {pid} as {done_item['label']}"
        else:
            reviewed = current["predicted"] if trigger == "labeling-confirm-boxes" else boxes
            done_item = labeling_queue.answer_image(
                s.writer, pid, names=current["names"], who=who, boxes=reviewed or []
            )
            text = f"labeled {pid} with {len(reviewed or [])} boxes"
        verdict = {True: " (agrees with the model)", False: " (corrects the model)"}
        text += verdict.get(done_item["correct"], "")
    except labeling_queue.AlreadyAnswered as exc:
        return f"{exc}; showing the next one", "message", (done or 0) + 1
    except labeling_queue.QueueError as exc:
        return str(exc), "message error", no_update
    return text, "message success", (done or 0) + 1


def _image(s: Any, item: dict[str, Any]) -> Any:
    """A vision item's image with the boxes the model drew (none for a classifier), not
    editable: what the classifier saw."""
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

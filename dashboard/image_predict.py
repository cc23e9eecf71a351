"""The Predict page's image panel: an upload answered by the vision champion, and feedback.

An image upload is answered the way POST /predict/image answers it
(`pipelines.vision.predict.predict_image`: decoded with the same limits, stored by content,
logged durably), shown with its boxes or its class, with Correct / Wrong (and the true class)
sent as feedback on that prediction. The page (`dashboard.pages.predict`) shows the panel when a
vision champion exists.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, callback, dcc, html, no_update

from dashboard import figures, security
from dashboard.data import services
from dashboard.vision import vision

IMAGE_TRUE_CLASS = "predict-image-true-class"


def panel(model: Any) -> html.Div:
    """Upload an image, see the vision champion's boxes or class, say whether it was right."""
    return html.Div(
        [
            html.H3(f"Image: {model.name} v{model.version} ({model.task})"),
            dcc.Store(id="predict-image-result"),
            dcc.Upload(
                html.Div(["Drop an image here or ", html.A("choose a file")]),
                id="predict-image-upload",
                accept="image/*",
                multiple=False,
                className="upload",
                style={
                    "border": "1px dashed #999",
                    "padding": "18px",
                    "textAlign": "center",
                    "maxWidth": "560px",
                },
            ),
            html.Div(id="predict-image-error", className="message error"),
            html.Div(
                [
                    html.Div(id="predict-image-answer"),
                    dcc.Graph(id="predict-image-figure", style={"maxWidth": "720px"}),
                    html.Button("Correct", id="predict-image-correct"),
                    html.Button("Wrong", id="predict-image-wrong"),
                    html.Span(
                        [
                            html.Span("the true class was: ", className="detail"),
                            *[
                                html.Button(name, id={"type": IMAGE_TRUE_CLASS, "value": name})
                                for name in model.names
                            ],
                        ],
                        id="predict-image-classes",
                        style={"display": "none"},
                    ),
                    html.Div(id="predict-image-feedback", className="message"),
                ],
                id="predict-image-output",
                style={"display": "none"},
            ),
        ],
        className="panel",
    )


@callback(
    Output("predict-image-result", "data"),
    Output("predict-image-answer", "children"),
    Output("predict-image-figure", "figure"),
    Output("predict-image-output", "style"),
    Output("predict-image-error", "children"),
    Output("predict-image-feedback", "children", allow_duplicate=True),
    Input("predict-image-upload", "contents"),
    prevent_initial_call=True,
)
def predict_image(contents: str | None) -> tuple[Any, ...]:
    """Predict the uploaded image with the vision champion, stored and logged as the API
    does; a bad upload (not an image, too large, a pixel bomb) is said, not raised."""
    hidden = {"display": "none"}
    if not security.may_write():
        return None, "", no_update, hidden, security.LOCKED, ""
    v = vision()
    model = v.model if v is not None else None
    if not contents or v is None or model is None:
        return None, "", no_update, hidden, "no vision model is being served", ""
    from pipelines.vision.image_log import InvalidPayload
    from pipelines.vision.images import ImageError
    from pipelines.vision.predict import decode_payload_image
    from pipelines.vision.predict import predict_image as serve

    s = services()
    try:
        data = decode_payload_image(contents, v.limits)
        out = serve(
            model,
            v.log,
            s.band,
            data,
            images_dir=s.settings.images_dir,
            limits=v.limits,
            conf=s.settings.vision_conf,
        )
    except (ImageError, InvalidPayload) as exc:
        return None, "", no_update, hidden, f"not accepted: {exc}", ""
    from pipelines.vision.images import load_stored

    pixels = load_stored(s.settings.images_dir, out["image_ref"])
    result = {
        "prediction_id": out["prediction_id"],
        "model_version": out["model_version"],
        "task": out["task"],
        "names": list(model.names),
    }
    if out["task"] == "classify":
        result["prediction"] = out["class"]
        said = f"{out['class']} ({out['confidence']:.1%})"
        fig = figures.image_with_boxes(pixels, [], f"class {out['class']}")
    else:
        boxes = [
            {
                "x1": d["box"][0],
                "y1": d["box"][1],
                "x2": d["box"][2],
                "y2": d["box"][3],
                "class": d["class"],
                "confidence": d["confidence"],
                "uncertain": d["uncertain"],
            }
            for d in out["detections"]
        ]
        result["prediction"] = out["detections"][0]["class"] if boxes else None
        said = f"{len(boxes)} boxes" + (
            ": " + ", ".join(str(d["class"]) for d in out["detections"]) if boxes else ""
        )
        fig = figures.image_with_boxes(pixels, boxes, said)
    answer = html.Div(
        [
            html.Span("prediction: ", className="detail"),
            html.Strong(said, id="predict-image-label"),
            html.Span(
                f"{' · uncertain: it may go to the labeling queue' if out['uncertain'] else ''}"
                f" · v{out['model_version']} · id {out['prediction_id']}",
                className="detail",
            ),
        ]
    )
    return result, answer, fig, {}, "", ""


@callback(
    Output("predict-image-classes", "style"),
    Input("predict-image-wrong", "n_clicks"),
    State("predict-image-result", "data"),
    prevent_initial_call=True,
)
def show_image_classes(_: int | None, result: dict | None) -> dict[str, str]:
    """A wrong class is answered with the true one; wrong boxes go to the labeling queue."""
    if result and result.get("task") == "classify":
        return {"display": "inline"}
    return {"display": "none"}


@callback(
    Output("predict-image-feedback", "children", allow_duplicate=True),
    Output("predict-image-feedback", "className"),
    Input("predict-image-correct", "n_clicks"),
    Input("predict-image-wrong", "n_clicks"),
    Input({"type": IMAGE_TRUE_CLASS, "value": ALL}, "n_clicks"),
    State("predict-image-result", "data"),
    prevent_initial_call=True,
)
def image_feedback(
    _correct: int | None, _wrong: int | None, _classes: list[int | None], result: dict | None
) -> tuple[Any, Any]:
    """One feedback row on the image just predicted: correct, the true class (classifier),
    or a bare "wrong" (a detector: which boxes were wrong is the labeling queue's job)."""
    trigger = dash.ctx.triggered_id
    if not result or trigger is None or not dash.ctx.triggered[0]["value"]:
        return no_update, no_update
    if trigger == "predict-image-wrong" and result["task"] == "classify":
        return no_update, no_update  # the class buttons answer
    if not security.may_write():
        return security.LOCKED, "message error"
    label: str | None = None
    if trigger == "predict-image-correct":
        correct = True
    elif trigger == "predict-image-wrong":
        correct = False
    else:
        label = str(trigger["value"])
        if label not in result["names"]:
            return f"{label!r} is not one of {result['names']}", "message error"
        correct = label == result["prediction"]
    services().writer.add_feedback(
        result["prediction_id"],
        label=label,
        correct=correct,
        source="dashboard",
        who="dashboard",
        model_version=result["model_version"],
    )
    said = f"true class {label}" if label is not None else result["prediction_id"][:12]
    return f"thanks: {said} recorded ({'correct' if correct else 'wrong'})", "message success"

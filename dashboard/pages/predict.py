"""Predict: a person enters one input, sees the champion's prediction and its probabilities, and
says whether it was right (Correct, or Wrong and the true class), which is sent as feedback.

The prediction goes through `pipelines.serving.predict.predict`, the API's own path, and is logged
like any other (this process's prediction log); the form is built from the champion's schema, each
number with its training range and each category as a dropdown. When the schema is the digits demo's
64 pixels (`pipelines.demo.datasets.is_digit_schema`), the input is an 8×8 canvas instead: click
cells to ink them, or take a random digit from the demo stream, clean or shifted.

When a vision champion exists, the page also takes an image (`dashboard.image_predict`).
"""

from __future__ import annotations

from typing import Any

import dash
import numpy as np
from dash import ALL, Input, Output, State, callback, dcc, html, no_update

from dashboard import components as c
from dashboard import figures, image_predict, security
from dashboard.data import services
from dashboard.vision import vision
from pipelines import demo
from pipelines.schema import CATEGORICAL, SchemaError
from pipelines.serving import predict as predicting

dash.register_page(__name__, path="/predict", name="Predict", order=4)

FIELD = "predict-field"
DIGIT = "predict-digit"  # the canvas's 8×8 pixels (None: the schema is not the digits')
CANVAS_PX = 280
TRUE_CLASS = "predict-true-class"


def layout(**_: Any) -> html.Div:
    s = services()
    model = s.models.model
    v = vision()
    image_model = v.model if v is not None else None
    image_part = [image_predict.panel(image_model)] if image_model is not None else []
    if model is None:
        return html.Div(
            [html.H2("Predict"), html.P("No champion model yet: run `make train`."), *image_part]
        )
    digits = demo.is_digit_schema(model.schema.names)
    what = "draw a digit or take one from the demo stream" if digits else "fill in one input"
    return html.Div(
        [
            html.H2("Predict"),
            html.P(
                f"{model.name} v{model.version}: {what}; the prediction is logged like any "
                "other, and your verdict is sent as feedback.",
                className="detail",
            ),
            dcc.Store(id="predict-result"),
            *(_digit_panel() if digits else [dcc.Store(id=DIGIT), _form(model)]),
            html.Button("Predict", id="predict-submit", className="primary"),
            html.Div(id="predict-error", className="message error"),
            html.Div(
                [
                    html.Div(id="predict-answer"),
                    dcc.Graph(id="predict-probabilities", style={"maxWidth": "600px"}),
                    html.Div(
                        [
                            html.Button("Correct", id="predict-correct"),
                            html.Button("Wrong", id="predict-wrong"),
                            html.Div(
                                [
                                    html.Span("the true class was: ", className="detail"),
                                    *[
                                        html.Button(
                                            str(cls), id={"type": TRUE_CLASS, "value": str(cls)}
                                        )
                                        for cls in model.classes
                                    ],
                                ],
                                id="predict-classes",
                                style={"display": "none"},
                            ),
                        ]
                    ),
                    html.Div(id="predict-feedback", className="message"),
                ],
                id="predict-output",
                className="panel",
                style={"display": "none"},
            ),
            *image_part,
        ]
    )


def _form(model: Any) -> html.Div:
    """One field per feature of the champion's schema: numbers start at their training
    median and show their training range, categories are dropdowns."""
    ranges = services().reference_ranges()
    fields = []
    for feat in model.schema.features:
        info = ranges.get(feat.name, {})
        control: Any
        if feat.kind == CATEGORICAL:
            shares = info.get("shares") or {}
            choices = list(feat.categories) or list(shares)
            default = next(iter(shares), choices[0] if choices else None)
            control = dcc.Dropdown(
                choices, default, id={"type": FIELD, "name": feat.name}, clearable=False
            )
        else:
            control = dcc.Input(
                id={"type": FIELD, "name": feat.name},
                type="number",
                value=info.get("median"),
                step="any",
                style={"width": "100%"},
            )
        fields.append(
            html.Div(
                [html.Label(feat.name), control, html.Div(c.range_hint(info), className="hint")]
            )
        )
    return html.Div(html.Div(fields, className="form-grid"), className="panel")


def _digit_panel() -> list[Any]:
    """The 8×8 canvas (a clean digit of the demo stream to start from), the ink of a click,
    and the buttons that fill it from the demo stream or clear it."""
    pixels, caption = _demo_digit(shifted=False)
    return [
        dcc.Store(id=DIGIT, data=pixels),
        html.Div(
            [
                dcc.Graph(
                    id="predict-digit-canvas",
                    figure=figures.digit(pixels, canvas=True, size=CANVAS_PX),
                    config={"displayModeBar": False, "scrollZoom": False},
                ),
                html.Div(
                    [
                        html.P(
                            "Click a cell to ink it; click it again to erase it.",
                            className="detail",
                        ),
                        dcc.RadioItems(
                            [
                                {"label": " full ink", "value": demo.DIGIT_INK},
                                {"label": " half ink", "value": demo.DIGIT_INK / 2},
                            ],
                            demo.DIGIT_INK,
                            id="predict-digit-ink",
                            inline=True,
                        ),
                        html.Div(
                            [
                                html.Button("Random demo digit", id="predict-digit-random"),
                                html.Button("Clear", id="predict-digit-clear"),
                            ]
                        ),
                        dcc.Checklist(
                            [{"label": " from the shift (slanted, thicker pen)", "value": "shift"}],
                            [],
                            id="predict-digit-shifted",
                        ),
                        html.Div(caption, id="predict-digit-source", className="detail"),
                    ],
                    className="grow",
                ),
            ],
            className="panel row",
        ),
    ]


def _demo_digit(*, shifted: bool) -> tuple[list[list[float]], str]:
    """A random digit of the demo stream as canvas rows, and what it is."""
    record, label = demo.demo_digit(np.random.default_rng(), shifted=shifted)
    where = "the shift (slanted, thicker pen)" if shifted else "the training population"
    return demo.digit_image(record).tolist(), f"a demo {label} from {where}"


@callback(
    Output(DIGIT, "data"),
    Output("predict-digit-canvas", "figure"),
    Output("predict-digit-canvas", "clickData"),
    Output("predict-digit-source", "children"),
    Input("predict-digit-canvas", "clickData"),
    Input("predict-digit-random", "n_clicks"),
    Input("predict-digit-clear", "n_clicks"),
    State(DIGIT, "data"),
    State("predict-digit-ink", "value"),
    State("predict-digit-shifted", "value"),
    prevent_initial_call=True,
)
def draw_digit(
    click: dict[str, Any] | None,
    _random: int | None,
    _clear: int | None,
    pixels: list[list[float]] | None,
    ink: float | None,
    shifted: list[str] | None,
) -> tuple[Any, ...]:
    """Paint the clicked cell, or fill the canvas with a demo digit, or clear it. The click is
    reset, so a second click on the same cell is an event too."""
    trigger = dash.ctx.triggered_id
    caption: Any = no_update
    if trigger == "predict-digit-random":
        pixels, caption = _demo_digit(shifted=bool(shifted))
    elif trigger == "predict-digit-clear":
        pixels = [[0.0] * demo.DIGIT_SIDE for _ in range(demo.DIGIT_SIDE)]
        caption = "blank: click cells to draw a digit"
    else:
        edited = figures.painted(pixels or [], click, float(ink or demo.DIGIT_INK))
        if edited is None:
            return no_update, no_update, None, no_update
        pixels = edited
    return pixels, figures.digit(pixels, canvas=True, size=CANVAS_PX), None, caption


@callback(
    Output("predict-result", "data"),
    Output("predict-answer", "children"),
    Output("predict-probabilities", "figure"),
    Output("predict-output", "style"),
    Output("predict-error", "children"),
    Output("predict-classes", "style", allow_duplicate=True),
    Output("predict-feedback", "children", allow_duplicate=True),
    Input("predict-submit", "n_clicks"),
    State({"type": FIELD, "name": ALL}, "value"),
    State({"type": FIELD, "name": ALL}, "id"),
    State(DIGIT, "data"),
    prevent_initial_call=True,
)
def predict(
    _: int | None,
    values: list[Any],
    ids: list[dict[str, str]],
    pixels: list[list[float]] | None,
) -> tuple[Any, ...]:
    """Predict the form's record (or the canvas's digit) with the serving champion, logged as
    the API logs it."""
    hidden = {"display": "none"}
    if not security.may_write():
        return None, "", no_update, hidden, security.LOCKED, hidden, ""
    s = services()
    model = s.models.model
    if model is None:
        return None, "", no_update, hidden, "no champion model is being served", hidden, ""
    if pixels is not None:
        record: dict[str, Any] = demo.digit_record(pixels)
    else:
        record = {i["name"]: v for i, v in zip(ids, values, strict=True)}
    missing = [k for k, v in record.items() if v is None or v == ""]
    if missing:
        return None, "", no_update, hidden, f"fill in {', '.join(missing)}", hidden, ""
    try:
        out = predicting.predict(model, s.log, s.band, records=[record])
    except SchemaError as exc:
        return None, "", no_update, hidden, str(exc), hidden, ""
    result = {
        "prediction_id": out["prediction_ids"][0],
        "prediction": str(out["predictions"][0]),
        "model_version": out["model_version"],
        "uncertain": out["uncertain"][0],
    }
    answer = html.Div(
        [
            html.Span("prediction: ", className="detail"),
            html.Strong(result["prediction"], id="predict-label"),
            html.Span(
                f"  ({out['probabilities'][0]:.1%}"
                f"{', uncertain: it may go to the labeling queue' if result['uncertain'] else ''}"
                f") · v{result['model_version']} · id {result['prediction_id']}",
                className="detail",
            ),
        ]
    )
    fig = figures.probabilities(
        out["classes"], out["class_probabilities"][0], out["predictions"][0]
    )
    return result, answer, fig, {}, "", hidden, ""


@callback(
    Output("predict-classes", "style", allow_duplicate=True),
    Input("predict-wrong", "n_clicks"),
    prevent_initial_call=True,
)
def show_classes(_: int | None) -> dict[str, str]:
    return {"display": "inline"}


@callback(
    Output("predict-feedback", "children", allow_duplicate=True),
    Output("predict-feedback", "className"),
    Input("predict-correct", "n_clicks"),
    Input({"type": TRUE_CLASS, "value": ALL}, "n_clicks"),
    State("predict-result", "data"),
    prevent_initial_call=True,
)
def feedback(
    _correct: int | None, _classes: list[int | None], result: dict | None
) -> tuple[Any, Any]:
    """Correct, or the true class: one feedback row on the prediction just made."""
    trigger = dash.ctx.triggered_id
    if not result or trigger is None or not dash.ctx.triggered[0]["value"]:
        return no_update, no_update  # a class button appearing is not a click
    if not security.may_write():
        return security.LOCKED, "message error"
    s = services()
    try:
        if trigger == "predict-correct":
            s.feedback(result, correct=True)
            return f"thanks: {result['prediction']} recorded as correct", "message success"
        label = trigger["value"]
        schema = s.schema()
        typed = schema.label_from_store(label) if schema is not None else label
        s.feedback(result, label=typed)
    except SchemaError as exc:
        return str(exc), "message error"
    verdict = "correct" if label == result["prediction"] else "wrong"
    return f"thanks: true class {label} recorded ({verdict})", "message success"

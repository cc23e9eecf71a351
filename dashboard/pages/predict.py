"""Predict: a person enters one input, sees the champion's prediction and its probabilities, and
says whether it was right (Correct, or Wrong and the true class), which is sent as feedback.

The prediction goes through `pipelines.predicting.predict`, the API's own path, and is logged
like any other (this process's prediction log); the form is built from the champion's schema,
each number with its training range and each category as a dropdown.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, callback, dcc, html, no_update

from dashboard import components as c
from dashboard import figures
from dashboard.data import services
from pipelines import predicting
from pipelines.schema import CATEGORICAL, SchemaError

dash.register_page(__name__, path="/predict", name="Predict", order=4)

FIELD = "predict-field"
TRUE_CLASS = "predict-true-class"


def layout(**_: Any) -> html.Div:
    s = services()
    model = s.models.model
    if model is None:
        return html.Div([html.H2("Predict"), html.P("No champion model yet: run `make train`.")])
    ranges = s.reference_ranges()
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
    return html.Div(
        [
            html.H2("Predict"),
            html.P(
                f"{model.name} v{model.version}: fill in one input; the prediction is logged "
                "like any other, and your verdict is sent as feedback.",
                className="detail",
            ),
            dcc.Store(id="predict-result"),
            html.Div(html.Div(fields, className="form-grid"), className="panel"),
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
        ]
    )


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
    prevent_initial_call=True,
)
def predict(_: int | None, values: list[Any], ids: list[dict[str, str]]) -> tuple[Any, ...]:
    """Predict the form's record with the serving champion, logged as the API logs it."""
    s = services()
    model = s.models.model
    hidden = {"display": "none"}
    if model is None:
        return None, "", no_update, hidden, "no champion model is being served", hidden, ""
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

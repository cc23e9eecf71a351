"""POST /predict: tabular predictions, logged durably before the answer goes out."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.deps import check_api_key, json_body, serving_model
from api.routes._body import documented, fields
from api.state import AppState
from pipelines import predicting
from pipelines.schema import SchemaError

router = APIRouter(tags=["predictions"])


class PredictIn(BaseModel):
    """Either `features` (rows of values in the model's feature order) or `records`."""

    features: list[list[float | str]] | None = Field(
        None, examples=[[[4, 27, 6, 1, 3, 14, "white-collar", "managerial/business"]]]
    )
    records: list[dict[str, float | str]] | None = Field(
        None, examples=[[{"rate_marriage": 4, "age": 27, "yrs_married": 6}]]
    )


class PredictOut(BaseModel):
    predictions: list[Any] = Field(description="Predicted class per row.")
    probabilities: list[float] = Field(description="Probability of the predicted class.")
    class_probabilities: list[list[float]] = Field(description="Per row, one per class.")
    classes: list[Any]
    prediction_ids: list[str] = Field(description="Ids to send feedback for.")
    model_version: str
    uncertain: list[bool] = Field(description="Confidence inside the uncertainty band.")


@router.post("/predict", response_model=PredictOut, openapi_extra=documented(PredictIn))
async def predict(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> Response:
    # No dependency tree on this route (it was ~20% of its CPU): the same checks, called
    # directly, in the order the dependencies ran them (key, then model, then body).
    state: AppState = request.app.state.driftlab
    check_api_key(state.settings, x_api_key)
    model = serving_model(state)
    body = fields(await json_body(request), {"features": list, "records": list})
    with state.metrics.latency.time():
        try:
            out = predicting.predict(
                model,
                state.log,
                state.band,
                features=body.get("features"),
                records=body.get("records"),
                max_rows=state.settings.max_rows_per_request,
            )
        except SchemaError as exc:
            raise HTTPException(422, str(exc)) from None
    n = len(out["predictions"])
    state.metrics.predictions.labels(model.version).inc(n)
    state.metrics.uncertain.inc(sum(out["uncertain"]))
    # Serialised here with orjson: the answer is plain lists, already checked.
    return Response(orjson.dumps(out), media_type="application/json")

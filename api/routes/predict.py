"""POST /predict: tabular predictions, logged durably before the answer goes out."""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import serving_model
from api.routes._body import documented, rows_body
from api.state import AppState
from pipelines.schema import SchemaError, check_row_count

router = APIRouter(tags=["predictions"])


# The first handwritten 0 of scikit-learn's digits, the default demo's 64 pixels (ink 0-16).
_DIGIT_ZERO = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0]
_DIGIT_ZERO += [0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0]
_DIGIT_ZERO += [0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0]


class PredictIn(BaseModel):
    """Either `features` (rows of values in the model's feature order) or `records`. The
    examples are the default demo's: one handwritten 0 (px0..px63)."""

    features: list[list[float | str]] | None = Field(None, examples=[[_DIGIT_ZERO]])
    records: list[dict[str, float | str]] | None = Field(
        None, examples=[[{f"px{i}": v for i, v in enumerate(_DIGIT_ZERO)}]]
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
async def predict(request: Request) -> Response:
    """What OpenAPI documents. In the running app `PredictFastPath` answers first, with the
    same `answer`: this route is reached only by an app built without it."""
    state: AppState = request.app.state.driftlab
    started = time.perf_counter()
    content = await answer(state, await request.body(), started)
    return Response(content, media_type="application/json")


async def answer(state: AppState, body: bytes, started: float) -> bytes:
    """The /predict answer as JSON bytes, or an HTTPException (422, 503). `api.guard` has
    checked the request's key and size."""
    model = serving_model(state)
    max_rows = state.settings.max_rows_per_request
    payload, bulk = rows_body(body, model.schema, {"features": list, "records": list})
    with state.metrics.latency.time():
        try:
            if bulk is not None:
                check_row_count(bulk.rows, max_rows)
                columns = bulk.columns
            else:
                columns = model.schema.columns(
                    payload.get("features"), payload.get("records"), max_rows=max_rows
                )
        except SchemaError as exc:
            raise HTTPException(422, str(exc)) from None
        # Requests read in the same event-loop turn share one model call and one log write.
        out = await state.batcher.predict(model, columns, started)
    state.metrics.predictions.labels(model.version).inc(len(out["predictions"]))
    state.metrics.uncertain.inc(sum(out["uncertain"]))
    return orjson.dumps(out)  # plain lists, already checked: no response model to validate


class PredictFastPath:
    """POST /predict as plain ASGI, in front of FastAPI's routing and exception layers.

    /predict is the hot path: one row per call, thousands of calls a second. For such a small
    answer, the request/response objects, the exception and exit-stack middlewares and the
    router are a large share of its CPU (`python -m benchmarks --only serving` measures its
    requests/s). This middleware answers it directly with `answer` (the same function the
    documented route calls) and hands every other request on untouched. It sits inside the
    server-error middleware, so an unexpected error is still a logged JSON 500.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: AppState = scope["app"].state.driftlab
        extra: list[tuple[bytes, bytes]] = []  # an error's own headers, if it has any
        try:
            status, content = 200, await answer(state, await _read_body(receive), started)
        except HTTPException as exc:
            status, content = exc.status_code, orjson.dumps({"detail": exc.detail})
            extra = [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(content)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})


async def _read_body(receive: Receive) -> bytes:
    """The whole request body (`api.guard` stops it with a 413 past the size limit)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HTTPException(400, "the client disconnected before sending its whole body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)

"""POST /predict: tabular predictions, logged durably before the answer goes out.

During a rollout (`pipelines.loop.rollouts`) a shadow challenger answers the sampled requests
too (logged, never returned), or a canary serves its share of them: an `X-Client-Id` header
keeps a client on one arm, and the canary guard stops a canary whose 5xx share or p99 latency
runs away from the champion's.
"""

from __future__ import annotations

import asyncio
import logging
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
from pipelines.loop import rollouts
from pipelines.schema import SchemaError, check_row_count
from pipelines.serving.model import ServingModel
from pipelines.serving.predict import Columns

logger = logging.getLogger(__name__)

router = APIRouter(tags=["predictions"])

CLIENT_HEADER = "x-client-id"
"""The header whose value keeps a client on one arm of a canary."""


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
    client = request.headers.get(CLIENT_HEADER)
    content = await answer(state, await request.body(), started, client)
    return Response(content, media_type="application/json")


async def answer(state: AppState, body: bytes, started: float, client: str | None = None) -> bytes:
    """The /predict answer as JSON bytes, or an HTTPException (422, 503). `api.guard` has
    checked the request's key and size; `client` is the `X-Client-Id` header, if any."""
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
        model, shadow, arm = state.serving.route(model, client)
        if arm is None:
            # Requests read in the same event-loop turn share one model call and one log write.
            out = await state.batcher.predict(model, columns, started, shadow)
        else:
            out = await _on_arm(state, model, columns, started, arm)
    state.metrics.predictions.labels(model.version).inc(len(out["predictions"]))
    state.metrics.uncertain.inc(sum(out["uncertain"]))
    return orjson.dumps(out)  # plain lists, already checked: no response model to validate


async def _on_arm(
    state: AppState, model: ServingModel, columns: Columns, started: float, arm: str
) -> dict[str, Any]:
    """A canary's request: answered by its arm's model, its outcome counted by the guard."""
    state.metrics.rollout_requests.labels(arm).inc()
    try:
        out = await state.batcher.predict(model, columns, started)
    except Exception:
        state.canary_guard.record(arm, (time.perf_counter() - started) * 1000, error=True)
        _check_canary(state)
        raise
    state.canary_guard.record(arm, (time.perf_counter() - started) * 1000, error=False)
    _check_canary(state)
    return out


def _check_canary(state: AppState) -> None:
    """Roll a failing canary back: this process stops routing to it now, and the rollout is
    ended in the store (every process follows within its poll)."""
    why = state.canary_guard.failing()
    rollout = state.serving.rollouts.current
    if why is None or rollout is None:
        return
    state.serving.rollouts.drop(rollout.rollout_id)
    state.canary_guard.reset()
    logger.warning("rolling back canary v%s: %s", rollout.model.version, why)

    def end() -> None:
        rollouts.guard_rollback(state.store, state.registry, rollout.rollout_id, why=why)

    task = asyncio.get_running_loop().run_in_executor(None, end)
    task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future) -> None:
    if task.exception() is not None:
        logger.error("recording the canary rollback failed: %s", task.exception())


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
        client = None
        if state.serving.rollouts.current is not None:  # only a canary reads the client's key
            wanted = CLIENT_HEADER.encode()
            client = next((v.decode("latin-1") for k, v in scope["headers"] if k == wanted), None)
        try:
            status, content = 200, await answer(state, await _read_body(receive), started, client)
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

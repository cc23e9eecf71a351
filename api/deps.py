"""FastAPI dependencies as `Annotated` aliases; tests swap them with `app.dependency_overrides`.

They are `async def` although none awaits: FastAPI runs a plain `def` dependency in the threadpool,
and three such hops per request cost more than the whole prediction. The hottest route, /predict,
calls the plain functions below (`serving_model`, `check_api_key`, `parse_json`) itself instead:
solving a tree of dependencies was a fifth of its CPU time.
"""

from __future__ import annotations

import hmac
import math
from typing import Annotated, Any

import orjson
from fastapi import Depends, Header, HTTPException, Request

from api.state import AppState
from pipelines.serving import ServingModel
from pipelines.settings import Settings
from pipelines.store import Store


async def get_state(request: Request) -> AppState:
    return request.app.state.driftlab


async def get_settings_dep(state: Annotated[AppState, Depends(get_state)]) -> Settings:
    return state.settings


async def get_store(state: Annotated[AppState, Depends(get_state)]) -> Store:
    return state.store


def serving_model(state: AppState) -> ServingModel:
    """The champion being served, or a 503 that says how to get one."""
    model = state.models.model
    if model is None:
        raise HTTPException(
            503,
            "no model is being served yet: ingest labeled data and run `make train` "
            "(or `driftlab train`); the API picks the champion up within seconds",
            # When to ask again: the champion alias is polled this often.
            headers={"Retry-After": str(max(1, math.ceil(state.settings.reload_interval)))},
        )
    return model


def check_api_key(settings: Settings, x_api_key: str | None) -> None:
    """Write endpoints need `X-API-Key` when `DRIFTLAB_API_KEY` is set."""
    expected = settings.api_key
    if expected and not (x_api_key and hmac.compare_digest(x_api_key, expected)):
        raise HTTPException(401, "missing or wrong X-API-Key header")


async def get_model(state: Annotated[AppState, Depends(get_state)]) -> ServingModel:
    return serving_model(state)


async def require_api_key(
    state: Annotated[AppState, Depends(get_state)],
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    check_api_key(state.settings, x_api_key)


async def json_body(request: Request) -> Any:
    """The request body parsed with orjson, with clear 413/422 errors."""
    limit = request.app.state.driftlab.settings.max_body_bytes
    check_declared_length(request.headers.get("content-length"), limit)
    return parse_json(await request.body(), limit)


def check_declared_length(declared: str | None, limit: int) -> None:
    """A 413 before reading a body whose Content-Length is already over the limit."""
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes is over the {limit}-byte limit")


def parse_json(body: bytes, limit: int) -> Any:
    """A read body parsed with orjson: 413 over the limit, 422 when empty or not JSON."""
    if len(body) > limit:
        raise HTTPException(413, f"request body is over the {limit}-byte limit")
    if not body:
        raise HTTPException(422, "empty request body: send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"request body is not valid JSON: {exc}") from None


StateDep = Annotated[AppState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[Store, Depends(get_store)]
ModelDep = Annotated[ServingModel, Depends(get_model)]
WriteAccess = Depends(require_api_key)
BodyDep = Annotated[Any, Depends(json_body)]

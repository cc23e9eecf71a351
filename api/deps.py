"""FastAPI dependencies as `Annotated` aliases; tests swap them with `app.dependency_overrides`.

They are `async def` although none awaits: FastAPI runs a plain `def` dependency in the threadpool,
and three such hops per request cost more than the whole prediction. The hottest route, /predict,
calls the plain functions below (`serving_model`, `parse_json`) itself instead: solving a
tree of dependencies on every request is CPU that its one-row answer does not need.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import orjson
from fastapi import Depends, HTTPException, Request

from api.state import AppState
from pipelines.serving.model import ServingModel
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


async def get_model(state: Annotated[AppState, Depends(get_state)]) -> ServingModel:
    return serving_model(state)


async def json_body(request: Request) -> Any:
    """The request body parsed with orjson (its size was checked by `api.guard`)."""
    return parse_json(await request.body())


def parse_json(body: bytes) -> Any:
    """A read body parsed with orjson: 422 when empty or not JSON."""
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
BodyDep = Annotated[Any, Depends(json_body)]

"""Drift monitoring: the latest check's results, and running a check now, of the tabular model
or (`?model=vision`) of the vision model's images."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep
from api.routes.retraining import ModelQuery
from pipelines.loop import estimated_performance
from pipelines.loop.monitoring import latest_summary
from pipelines.schema import SchemaError

router = APIRouter(tags=["monitoring"])


@router.get("/api/metrics/drift")
def drift(state: StateDep, model: ModelQuery = "tabular") -> dict[str, Any]:
    """Per column of the most recent check: its role (`feature`: an input; `prediction`: the
    model's output; `label`), test, statistic, p-value, adjusted p-value, effect size and
    verdict. The drift share and `dataset_drift` count the inputs; `drifted_outputs` lists the
    outputs that moved."""
    return {"model": model, **latest_summary(state.store, vision=model == "vision")}


@router.get("/api/metrics/drift/history")
def drift_history(
    state: StateDep, runs: Annotated[int, Query(ge=1, le=1000)] = 50, model: ModelQuery = "tabular"
) -> dict[str, Any]:
    items = state.store.drift_history(limit_runs=runs, image=model == "vision")
    return {"model": model, "items": items}


@router.get("/api/metrics/performance")
def performance(
    state: StateDep,
    model: ModelQuery = "tabular",
    version: Annotated[
        str | None,
        Query(max_length=64, description="Only the checks of this model version."),
    ] = None,
    runs: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """The model's performance estimated on each check's window from its calibrated
    probabilities (before labels arrive), with its band, the realized figure where the
    window's predictions were labeled, and the drop from the champion's held-out reference:
    the latest check and the history of the last `runs` checks, oldest first."""
    if model == "vision":
        raise HTTPException(
            422,
            "performance is estimated from class probabilities, which only the tabular model "
            "serves; the vision model's figures are in /api/retraining/conditions?model=vision",
        )
    history = estimated_performance.history(state.store, runs, version)
    return {"model": model, "latest": history[-1] if history else None, "history": history}


@router.post("/monitoring/run")
async def run_check(
    state: StateDep,
    window_size: Annotated[int | None, Query(ge=1, le=50_000_000)] = None,
    model: ModelQuery = "tabular",
) -> dict[str, Any]:
    """Run a drift + performance check on the current window now and store its results; with
    `model=vision`, the image check of the last served images against the vision champion's
    training images."""
    if model == "vision":
        return await _vision_check(state, window_size)
    # "Now" includes what this process acknowledged moments ago and has not flushed yet.
    await run_in_threadpool(state.log.flush)
    try:
        result = await run_in_threadpool(
            state.monitor.check, window_size=window_size, trigger="api"
        )
    except SchemaError as exc:
        raise HTTPException(409, str(exc)) from None
    return result.summary()


async def _vision_check(state: StateDep, window_size: int | None) -> dict[str, Any]:
    vision = state.vision
    if vision is None or state.image_log is None:
        raise HTTPException(
            503, "vision is not available: install the `vision` extra (pip install -e '.[vision]')"
        )
    serving = vision.model
    if serving is None:
        raise HTTPException(409, "no vision champion yet: `make train-vision` trains one")
    from pipelines.vision import monitoring as image_monitoring

    await run_in_threadpool(state.image_log.flush)  # "now" includes what was just logged
    result: dict[str, Any] = await run_in_threadpool(
        lambda: image_monitoring.check(
            state.settings, state.store, model=serving, window_size=window_size, trigger="api"
        )
    )
    return {"model": "vision", **result}

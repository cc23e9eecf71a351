"""Drift monitoring: the latest check's results, and running a check now."""

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
def drift(state: StateDep) -> dict[str, Any]:
    """Per feature (and for the prediction and the label): test, statistic, p-value, adjusted
    p-value, effect size and verdict, from the most recent check."""
    return latest_summary(state.store)


@router.get("/api/metrics/drift/history")
def drift_history(
    state: StateDep, runs: Annotated[int, Query(ge=1, le=1000)] = 50
) -> dict[str, Any]:
    return {"items": state.store.drift_history(limit_runs=runs)}


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
) -> dict[str, Any]:
    """Run a drift + performance check on the current window now and store its results."""
    # "Now" includes what this process acknowledged moments ago and has not flushed yet.
    await run_in_threadpool(state.log.flush)
    try:
        result = await run_in_threadpool(
            state.monitor.check, window_size=window_size, trigger="api"
        )
    except SchemaError as exc:
        raise HTTPException(409, str(exc)) from None
    return result.summary()

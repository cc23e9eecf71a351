"""Drift monitoring: the latest check's results, and running a check now."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep
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

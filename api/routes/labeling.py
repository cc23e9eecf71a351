"""The labeling queue: uncertain predictions waiting for a person, and the person's answers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep, WriteAccess
from pipelines import queue

router = APIRouter(prefix="/api/labeling-queue", tags=["labeling"])

ItemId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_:.\-]{1,128}$", description="prediction_id")]
WHO = r"^[^\x00-\x1f\x7f]{1,128}$"


class LabelIn(BaseModel):
    label: int | str = Field(description="The true class, one of the model's classes.")
    who: str = Field("api", pattern=WHO, description="Who answered (kept with the label).")


class SkipIn(BaseModel):
    who: str = Field("api", pattern=WHO)


@router.get("")
def pending(
    state: StateDep,
    status: Literal["pending", "labeled", "skipped", "all"] = "pending",
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """Queue items, paged: pending ones most informative first, answered ones newest first.

    Each item has the features, the prediction with its probabilities and the model version
    that made it; `classes` lists the answers the serving model accepts.
    """
    page = queue.items(
        state.store, status=None if status == "all" else status, limit=limit, offset=offset
    )
    serving = state.models.model
    return {**page, "classes": list(serving.classes) if serving else []}


@router.get("/progress")
def progress(state: StateDep) -> dict[str, int]:
    """Pending items, today's answers, and labels still needed before drift can retrain."""
    return queue.progress(state.store, state.settings, state.registry)


@router.post("/{prediction_id}/label", dependencies=[WriteAccess])
async def label(state: StateDep, prediction_id: ItemId, body: LabelIn) -> dict[str, Any]:
    """Answer an item with its true class; the label becomes training data for the next
    retrain, with who gave it and the model version it corrects."""
    serving = state.models.model
    schema = serving.schema if serving is not None else state.store.dataset_schema()
    if schema is None:
        raise HTTPException(409, "no model or dataset schema yet to check the label against")
    return await _answer(
        lambda: queue.answer(state.store, schema, prediction_id, label=body.label, who=body.who)
    )


@router.post("/{prediction_id}/skip", dependencies=[WriteAccess])
async def skip(
    state: StateDep, prediction_id: ItemId, body: SkipIn | None = None
) -> dict[str, Any]:
    """Take an item out of the queue without a label."""
    who = (body or SkipIn()).who
    return await _answer(lambda: queue.skip(state.store, prediction_id, who=who))


async def _answer(fn: Any) -> dict[str, Any]:
    try:
        return await run_in_threadpool(fn)
    except queue.ItemNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except queue.AlreadyAnswered as exc:
        raise HTTPException(409, str(exc)) from None
    except queue.InvalidLabel as exc:
        raise HTTPException(422, str(exc)) from None

"""The labeling queue: uncertain predictions waiting for a person, and the person's answers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep
from pipelines.loop import labeling_queue

router = APIRouter(prefix="/api/labeling-queue", tags=["labeling"])

ItemId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_:.\-]{1,128}$", description="prediction_id")]
WHO = r"^[^\x00-\x1f\x7f]{1,128}$"


class BoxIn(BaseModel):
    box: list[float] = Field(min_length=4, max_length=4, examples=[[10.0, 12.0, 40.0, 55.0]])
    class_: StrictInt | StrictStr = Field(alias="class", description="Class index or name.")


class LabelIn(BaseModel):
    label: StrictInt | StrictStr | None = Field(
        None, description="The true class, one of the model's classes (tabular, image class)."
    )
    boxes: list[BoxIn] | None = Field(
        None,
        max_length=1000,
        description="A detection image's reviewed boxes (pixels of the stored image): keep, "
        "re-class, delete or add boxes; [] when it holds nothing.",
    )
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
    page = labeling_queue.items(
        state.store, status=None if status == "all" else status, limit=limit, offset=offset
    )
    serving = state.models.model
    return {**page, "classes": list(serving.classes) if serving else []}


@router.get("/progress")
def progress(state: StateDep) -> dict[str, int]:
    """Pending items, today's answers, and labels still needed before drift can retrain."""
    return labeling_queue.progress(state.store, state.settings, state.registry)


@router.post("/{prediction_id}/label")
async def label(state: StateDep, prediction_id: ItemId, body: LabelIn) -> dict[str, Any]:
    """Answer an item with its true class (or, for a detection image, its reviewed boxes); the
    label becomes training data for the next retrain, with who gave it and the model version
    it corrects."""
    task = await run_in_threadpool(labeling_queue.item_task, state.store, prediction_id)
    if task is not None or body.boxes is not None:
        return await _label_image(state, prediction_id, body)
    if body.label is None:
        raise HTTPException(422, "label: field required (the true class)")
    serving = state.models.model
    schema = serving.schema if serving is not None else state.store.dataset_schema()
    if schema is None:
        raise HTTPException(409, "no model or dataset schema yet to check the label against")
    return await _answer(
        lambda: labeling_queue.answer(
            state.store, schema, prediction_id, label=body.label, who=body.who
        )
    )


@router.post("/{prediction_id}/skip")
async def skip(
    state: StateDep, prediction_id: ItemId, body: SkipIn | None = None
) -> dict[str, Any]:
    """Take an item out of the queue without a label."""
    who = (body or SkipIn()).who
    return await _answer(lambda: labeling_queue.skip(state.store, prediction_id, who=who))


async def _label_image(state: StateDep, prediction_id: str, body: LabelIn) -> dict[str, Any]:
    vision = state.vision.model if state.vision is not None else None
    if vision is None:
        raise HTTPException(409, "no vision model is served to check the image label against")
    boxes = None if body.boxes is None else [{"box": b.box, "class": b.class_} for b in body.boxes]
    return await _answer(
        lambda: labeling_queue.answer_image(
            state.store,
            prediction_id,
            names=vision.names,
            who=body.who,
            label=body.label,
            boxes=boxes,
        )
    )


async def _answer(fn: Any) -> dict[str, Any]:
    try:
        return await run_in_threadpool(fn)
    except labeling_queue.ItemNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except labeling_queue.AlreadyAnswered as exc:
        raise HTTPException(409, str(exc)) from None
    except labeling_queue.InvalidLabel as exc:
        raise HTTPException(422, str(exc)) from None

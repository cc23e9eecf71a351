"""Model status, reload, promotion and rollback, and rollouts (shadow and canary)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from api.deps import StateDep
from pipelines.loop import rollouts
from pipelines.models import promotion

router = APIRouter(prefix="/api", tags=["models"])


@router.get("/model-status")
def model_status(state: StateDep) -> dict[str, Any]:
    """The champion: name, version, held-out metrics, training snapshot, promotion history."""
    serving = state.models.model
    if serving is None:
        raise HTTPException(404, "no champion model yet: run `make train`")
    info = state.registry.version(serving.version)
    return {
        "name": serving.name,
        "version": serving.version,
        "runtime": serving.runtime,
        "aliases": state.registry.client.get_model_version(serving.name, serving.version).aliases,
        "metrics": info.metrics,
        "trained_on_snapshot": info.snapshot_id,
        "n_train": info.tags.get("n_train"),
        "registered_at_ms": info.created_at_ms,
        "features": serving.schema.to_dict()["features"],
        "classes": list(serving.classes),
        "history": state.store.model_events(serving.name, limit=20),
    }


@router.post("/models/reload")
def reload(state: StateDep) -> dict[str, Any]:
    """Check the champion alias now and swap the serving model if it moved."""
    swapped = state.models.refresh()
    serving = state.models.model
    return {"swapped": swapped, "version": serving.version if serving else None}


class MoveIn(BaseModel):
    why: str = Field("manual", max_length=500, examples=["challenger regressed on class 1"])
    who: str = Field("api", pattern=r"^[^\x00-\x1f\x7f]{1,128}$")


class PromoteIn(MoveIn):
    version: str = Field(pattern=r"^[0-9]{1,9}$", examples=["3"])


@router.get("/models")
def versions(state: StateDep) -> dict[str, Any]:
    """Every registered version with its aliases, metrics and training snapshot."""
    return {"items": [asdict(v) for v in state.registry.versions()]}


@router.post("/models/promote")
def promote(state: StateDep, body: PromoteIn) -> dict[str, Any]:
    """Make a version the champion (audited in model_events); served at once."""
    return _move(
        state,
        lambda: promotion.promote(
            state.store, state.registry, body.version, who=body.who, why=body.why
        ),
    )


@router.post("/models/rollback")
def rollback(state: StateDep, body: MoveIn | None = None) -> dict[str, Any]:
    """Move the champion back to the one before it (audited); served at once."""
    body = body or MoveIn()
    return _move(
        state, lambda: promotion.rollback(state.store, state.registry, who=body.who, why=body.why)
    )


def _move(state: StateDep, move: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        moved = move()
    except promotion.PromotionError as exc:
        raise HTTPException(409, str(exc)) from None
    state.models.refresh()
    serving = state.models.model
    return {**moved, "serving_version": serving.version if serving else None}


# -- rollouts ----------------------------------------------------------------------------------


class ShadowIn(MoveIn):
    version: str = Field(pattern=r"^[0-9]{1,9}$", examples=["7"])
    share: float = Field(
        1.0, gt=0, le=1, description="Share of /predict requests the shadow answers too."
    )


class CanaryIn(MoveIn):
    version: str = Field(pattern=r"^[0-9]{1,9}$", examples=["7"])
    share: float = Field(
        0.1, gt=0, lt=1, description="Share of /predict requests the canary serves."
    )


@router.post("/models/shadow")
def shadow(state: StateDep, body: ShadowIn) -> dict[str, Any]:
    """Run a registered version beside the champion on a share of requests: its answers are
    logged under the served prediction ids, never returned; the live test decides."""
    return _roll(state, body, "shadow")


@router.post("/models/canary")
def canary(state: StateDep, body: CanaryIn) -> dict[str, Any]:
    """Serve a registered version on a share of requests (an `X-Client-Id` header keeps a
    client on one arm); the live test decides, the guard rolls it back if it fails."""
    return _roll(state, body, "canary")


@router.get("/models/rollout")
def rollout(state: StateDep) -> dict[str, Any]:
    """The running rollout: mode, shares, agreement, labeled counts, the test's statistic and
    p-values, and its verdict so far (or the last rollout, when none runs)."""
    return rollouts.status(state.settings, state.store, state.registry)


@router.post("/models/rollout/stop")
def stop_rollout(state: StateDep, body: MoveIn | None = None) -> dict[str, Any]:
    """End the running rollout: the champion serves every request again."""
    body = body or MoveIn()
    return _rollout_move(
        state, lambda: rollouts.stop(state.store, state.registry, who=body.who, why=body.why)
    )


@router.post("/models/rollout/promote")
def promote_rollout(state: StateDep, body: MoveIn | None = None) -> dict[str, Any]:
    """Promote the running rollout's challenger now, without waiting for the test."""
    body = body or MoveIn()
    moved = _rollout_move(
        state,
        lambda: rollouts.promote_now(state.store, state.registry, who=body.who, why=body.why),
    )
    state.models.refresh()
    return moved


def _roll(state: StateDep, body: ShadowIn | CanaryIn, mode: rollouts.Mode) -> dict[str, Any]:
    return _rollout_move(
        state,
        lambda: rollouts.start(
            state.store,
            state.registry,
            mode=mode,
            version=body.version,
            share=body.share,
            who=body.who,
            why=body.why,
        ),
    )


def _rollout_move(state: StateDep, move: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        moved = move()
    except (rollouts.RolloutError, promotion.PromotionError) as exc:
        raise HTTPException(409, str(exc)) from None
    state.serving.rollouts.refresh()  # this process applies it at once, the others at their poll
    return moved

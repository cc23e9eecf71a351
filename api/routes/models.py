"""Model status and reload."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from api.deps import StateDep, WriteAccess

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


@router.post("/models/reload", dependencies=[WriteAccess])
def reload(state: StateDep) -> dict[str, Any]:
    """Check the champion alias now and swap the serving model if it moved."""
    swapped = state.models.refresh()
    serving = state.models.model
    return {"swapped": swapped, "version": serving.version if serving else None}

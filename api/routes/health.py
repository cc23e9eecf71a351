"""GET /health: is the API up, can it reach the store, which model is it serving."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from api.deps import StateDep
from pipelines.store.postgres import redact

router = APIRouter(tags=["health"])


@router.get("/health")
def health(state: StateDep) -> dict[str, Any]:
    store: dict[str, Any] = {"catalog": state.settings.catalog_uri.split(":", 1)[0]}
    try:
        store["snapshot_id"] = state.store.snapshot_id()
        store["status"] = "ok"
    except Exception as exc:
        store["status"], store["error"] = "error", redact(str(exc))
    model = state.models.model
    return {
        "status": "ok" if store["status"] == "ok" and model is not None else "degraded",
        "api": {"status": "ok", "uptime_s": round(time.time() - state.started_at, 1)},
        "store": store,
        "model": None
        if model is None
        else {"name": model.name, "version": model.version, "runtime": model.runtime},
        "model_error": redact(state.models.last_error),
        "prediction_log": {
            "flushed_rows": state.log.flushed_rows,
            "pending_rows": state.log.pending_rows,  # acknowledged, not yet in the lake
            "last_error": redact(state.log.last_error),
        },
        "rollout": _rollout(state),
        "batching": {"requests": state.batcher.requests, "model_calls": state.batcher.batches},
        "ingest_commits": {
            "batches": state.store.ingest_group.items,
            "commits": state.store.ingest_group.commits,
        },
    }


def _rollout(state: StateDep) -> dict[str, Any] | None:
    """The rollout this process applies, and its shadow log (None without a rollout)."""
    live, shadow_log = state.serving.rollouts.current, state.serving.shadow_log
    if live is None and not shadow_log.pending_rows:
        return None
    return {
        "rollout_id": live.rollout_id if live else None,
        "mode": live.mode if live else None,
        "share": live.share if live else None,
        "challenger_version": live.model.version if live else None,
        "error": redact(state.serving.rollouts.last_error),
        "shadow_log": {
            "answered_rows": shadow_log.answered,
            "failed_calls": shadow_log.failed,
            "flushed_rows": shadow_log.flushed_rows,
            "pending_rows": shadow_log.pending_rows,
            "last_error": redact(shadow_log.last_error),
        },
    }

"""GET /metrics (Prometheus) and GET /api/metrics (JSON for people and the dashboard)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import StateDep

router = APIRouter(tags=["monitoring"])


@router.get("/metrics", include_in_schema=False)
def prometheus(state: StateDep) -> Response:
    serving = state.models.model
    if serving is not None and serving.version.isdigit():
        state.metrics.model_version.set(int(serving.version))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/metrics")
def metrics(state: StateDep) -> dict[str, Any]:
    """Counts, latency percentiles, live accuracy from feedback."""
    serving = state.models.model
    return {
        "model_version": serving.version if serving else None,
        **state.store.prediction_stats(),
        "feedback": state.store.feedback_accuracy(),
        "feedback_current_model": state.store.feedback_accuracy(serving.version)
        if serving
        else None,
        "rows": state.store.count_rows(),
    }

"""GET /metrics (Prometheus) and GET /api/metrics (JSON for people and the dashboard)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import StateDep
from api.metrics import process_registry
from pipelines.loop import estimated_performance
from pipelines.loop.monitoring import latest_summary

router = APIRouter(tags=["monitoring"])


@router.get("/metrics", include_in_schema=False)
def prometheus(state: StateDep) -> Response:
    """This process's series (every process's, summed, with several: `api.metrics`), then the
    figures read from the store (`api.store_metrics`)."""
    state.metrics.sample(state.batcher, state.log, state.serving.shadow_log)
    body = generate_latest(process_registry(state.metrics)) + generate_latest(state.store_figures)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


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
        "drift": {k: v for k, v in latest_summary(state.store).items() if k != "features"},
        "performance": estimated_performance.latest(state.store),
        # FPS, inference time, confidence histogram, defect rate, per class (None: no extra).
        "vision": _vision(state),
    }


def _vision(state: StateDep) -> dict[str, Any] | None:
    if state.vision is None:
        return None
    serving = state.vision.model
    return {
        "model_name": state.settings.vision_model_name,
        "model_version": serving.version if serving else None,
        **state.store.vision_stats(state.settings.vision_model_name),
    }

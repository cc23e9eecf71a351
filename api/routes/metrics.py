"""GET /metrics (Prometheus) and GET /api/metrics (JSON for people and the dashboard)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import StateDep
from pipelines.loop import estimated_performance
from pipelines.loop.monitoring import latest_summary

router = APIRouter(tags=["monitoring"])


@router.get("/metrics", include_in_schema=False)
def prometheus(state: StateDep) -> Response:
    serving = state.models.model
    m = state.metrics
    if serving is not None and serving.version.isdigit():
        m.model_version.set(int(serving.version))
    m.log_pending.set(state.log.pending_rows)
    # Drift and accuracy live in the store (other processes write them): read them per scrape.
    latest = latest_summary(state.store)
    for row in latest["features"]:
        m.drift_score.labels(row["feature"]).set(row["effect_size"] or 0.0)
        m.drift_detected.labels(row["feature"]).set(1.0 if row["drifted"] else 0.0)
    if latest["run_id"] is not None:
        m.drift_share.set(latest["drift_share"])
        m.dataset_drift.set(1.0 if latest["dataset_drift"] else 0.0)
    estimate = estimated_performance.latest(state.store)
    for name, figures in (estimate or {}).get("metrics", {}).items():
        for kind, key in (
            ("estimated", "estimated"),
            ("estimated_low", "low"),
            ("estimated_high", "high"),
            ("realized", "realized"),
            ("reference", "reference"),
        ):
            if figures.get(key) is not None:
                m.performance[kind].labels(name).set(figures[key])
    accuracy = state.store.feedback_accuracy(serving.version if serving else None)["accuracy"]
    if accuracy is not None:
        m.live_accuracy.set(accuracy)
    if state.vision is not None:
        defect_rate = state.store.vision_stats(state.settings.vision_model_name)["defect_rate"]
        if defect_rate is not None:
            m.defect_rate.set(defect_rate)
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

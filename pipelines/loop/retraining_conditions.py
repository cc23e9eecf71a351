"""The figures a retraining decision is made on, gathered from the store and the registry.

`check` is what GET /api/retraining/conditions answers: the policy's verdict
(`pipelines.loop.retraining_policy.decide`, pure) with every figure and threshold behind it.
The vision model goes through the same decision: `vision_conditions` gathers its figures (its
image drift check, the image labels since its training snapshot, errors per class from image
labels) into the same `Conditions`. Each model has its own cooldown and "last retrain"
(`pipelines.loop.retraining_control`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.loop import estimated_performance
from pipelines.loop.retraining_control import TABULAR, VISION, is_running, last_retrain_at
from pipelines.loop.retraining_policy import Conditions, RetrainPolicy, decide
from pipelines.models.registry import CHAMPION, Registry
from pipelines.settings import Settings
from pipelines.store import Store


def conditions(
    settings: Settings, store: Store, registry: Registry, *, now: float | None = None
) -> Conditions:
    """Gather the figures `retraining_policy.decide` needs from the store and the registry.

    Drift and the estimated performance count only from a check of the current champion: a
    verdict about the previous model says nothing about the one now serving.
    """
    champion = registry.alias_version(CHAMPION)
    info = registry.version(champion) if champion else None
    current = [r for r in store.latest_drift_results() if r["model_version"] == champion]
    accuracy = store.feedback_accuracy(champion)
    estimate = estimated_performance.latest(store, champion) if champion else None
    harm = (estimate or {}).get("metrics", {}).get(estimated_performance.HEADLINE, {})
    return Conditions(
        now=time.time() if now is None else now,
        **drift_figures(current),
        new_labels=store.new_labels(info.snapshot_id if info else None),
        errors_per_class=store.errors_per_class(champion),
        live_accuracy=accuracy["accuracy"],
        n_feedback=accuracy["n"],
        champion_accuracy=info.metrics.get("accuracy") if info else None,
        n_reference=int(info.metrics.get("n_test", 0)) if info else 0,
        estimated_accuracy=harm.get("estimated"),
        estimated_drop=harm.get("drop"),
        estimated_drop_low=harm.get("drop_low"),
        estimated_drop_high=harm.get("drop_high"),
        last_retrain_at=last_retrain_at(settings, store),
        running=is_running(settings),
        rollout=_rollout(store, registry),
    )


def _rollout(store: Store, registry: Registry) -> str | None:
    running = store.active_rollout(registry.model_name)
    if running is None:
        return None
    mode = running["details"].get("mode")
    return f"{mode} of v{running['to_version']} beside v{running['from_version']}"


def vision_conditions(
    settings: Settings, store: Store, registry: Registry, *, now: float | None = None
) -> Conditions:
    """The vision champion's figures for the same `retraining_policy.decide`.

    `registry` is the vision model's (`Registry.vision_from_settings`). Drift is the latest
    image drift check of the current vision champion; new labels are the image labels since
    its training snapshot (`Store.vision_new_labels`); errors per class come from the image
    labels and feedback that found it wrong (`image_errors_per_class`). Live accuracy is not
    gathered for images: a box list is rarely "right" as a whole, and the per-class errors
    already carry what people corrected. `running` is the shared lock: while any retrain
    runs, none can start.
    """
    champion = registry.alias_version(CHAMPION)
    info = registry.version(champion) if champion else None
    drift = [r for r in store.latest_vision_drift() if r["model_version"] == champion]
    name = registry.model_name
    metric = info.metrics.get("top1") if info else None
    return Conditions(
        now=time.time() if now is None else now,
        **drift_figures(drift),
        new_labels=store.vision_new_labels(name, info.snapshot_id if info else None),
        errors_per_class=image_errors_per_class(store.vision_label_outcomes(name, champion)),
        champion_accuracy=metric,
        last_retrain_at=last_retrain_at(settings, store, vision=True),
        running=is_running(settings),
    )


def drift_figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The `Conditions` drift fields from one check's rows (either model's): the verdict and
    share as the check stored them, the drifted inputs (role `feature`) and, apart, the drifted
    outputs (role `prediction`: `pipelines.vision.monitoring.ROLES` for images)."""
    inputs = [r for r in rows if r["role"] == "feature"]
    p_values = [r["p_adjusted"] for r in inputs if r["p_adjusted"] is not None]
    return {
        "dataset_drift": bool(rows and rows[0]["dataset_drift"]),
        "drift_share": float(rows[0]["drift_share"] or 0.0) if rows else 0.0,
        "drifted_features": tuple(r["feature"] for r in inputs if r["drifted"]),
        "drifted_outputs": tuple(
            r["feature"] for r in rows if r["role"] == "prediction" and r["drifted"]
        ),
        "min_p_value": min(p_values) if p_values else None,
    }


def image_errors_per_class(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Errors per class from people's answers on wrong image predictions (pure).

    A classification counts against its true class (or, for a bare "wrong", against the
    predicted one, as the tabular count does). A detection compares the reviewed boxes with
    the predicted ones per class: every object a class is short of (missed, or given another
    class) and every extra box of a class (a false detection) is one error of that class.
    Boxes are matched by count, not position: a moved box is the reviewer's correction of a
    location, not a class the model fails on.
    """
    errors: dict[str, int] = {}
    for row in rows:
        if row["task"] == "classify":
            cls = row["label"] if row["label"] is not None else row["prediction"]
            if cls is not None:
                errors[str(cls)] = errors.get(str(cls), 0) + 1
            continue
        predicted = json.loads(row["prediction"] or "[]")
        # Reviewed boxes carry class indices; predicted ones also their names.
        names = {int(p["class"]): str(p.get("name", p["class"])) for p in predicted}
        if row["label"] is None:  # a bare "wrong": against the best box's class
            if predicted:
                cls = names[int(predicted[0]["class"])]
                errors[cls] = errors.get(cls, 0) + 1
            continue
        reviewed = json.loads(row["label"])
        count: dict[int, int] = {}
        for p in predicted:
            count[int(p["class"])] = count.get(int(p["class"]), 0) - 1
        for b in reviewed:
            count[int(b["class"])] = count.get(int(b["class"]), 0) + 1
        for index, diff in count.items():
            if diff:
                cls = names.get(index, str(index))
                errors[cls] = errors.get(cls, 0) + abs(diff)
    return dict(sorted(errors.items()))


def check(
    settings: Settings, store: Store, registry: Registry, *, vision: bool = False
) -> dict[str, Any]:
    """The decision with every figure and threshold behind it (GET /api/retraining/conditions).

    Args:
        registry: The tabular model's registry; with `vision`, the vision model's registry
            is opened from the settings instead.
        vision: Decide for the vision model.
    """
    policy = RetrainPolicy.from_settings(settings)
    if vision:
        registry = Registry.vision_from_settings(settings)
        figures = vision_conditions(settings, store, registry)
    else:
        figures = conditions(settings, store, registry)
    decision = decide(figures, policy)
    return {
        **decision.to_dict(),
        "model": VISION if vision else TABULAR,
        "model_name": registry.model_name,
        "champion_version": registry.alias_version(CHAMPION),
        "figures": figures.to_dict(),
        "thresholds": policy.to_dict(),
    }

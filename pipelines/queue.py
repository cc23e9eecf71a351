"""The labeling queue: uncertain predictions waiting for a human, and the humans' answers.

``refresh`` moves the most informative uncertain predictions of the last hour into the queue,
within ``QueuePolicy``'s hourly budget (the worker calls it every ``queue_interval`` seconds;
being the only caller keeps the budget exact). ``answer`` and ``skip`` record what a person
said; a label is also written as feedback on the prediction, which makes it training data for
the next retrain (``Store.labeled_rows``) and counts in the live accuracy. The API and the
dashboard both go through these functions.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.labeling import BUDGET_WINDOW_S, QueuePolicy, confidence, informativeness
from pipelines.labeling import select_for_queue as _select
from pipelines.registry import CHAMPION, Registry
from pipelines.retraining import RetrainPolicy
from pipelines.schema import FeatureSchema, SchemaError
from pipelines.settings import Settings
from pipelines.store import Store, utcnow

logger = logging.getLogger(__name__)

__all__ = [
    "AlreadyAnswered",
    "InvalidLabel",
    "ItemNotFound",
    "QueueError",
    "answer",
    "items",
    "progress",
    "refresh",
    "skip",
]

STATUSES = ("pending", "labeled", "skipped")


class QueueError(ValueError):
    """An answer that can't be recorded; the message says why."""


class ItemNotFound(QueueError):
    pass


class AlreadyAnswered(QueueError):
    pass


class InvalidLabel(QueueError):
    pass


def refresh(store: Store, policy: QueuePolicy, *, now: dt.datetime | None = None) -> int:
    """Enqueue the most informative uncertain predictions of the last hour, within budget.

    Returns how many were enqueued. Predictions already in the queue are never enqueued again,
    and those left out over the budget may still get in later in their hour.
    """
    now = now or utcnow()
    since = now - dt.timedelta(seconds=BUDGET_WINDOW_S)
    left = policy.budget_left(store.queue_enqueued_since(since))
    if left <= 0:
        return 0
    candidates = store.queue_candidates(since)
    n = candidates.num_rows
    if n == 0:
        return 0
    probabilities = candidates.column("probabilities").to_pylist()
    scores = np.full(n, np.nan)
    uncertain = np.zeros(n, dtype=bool)
    # One matrix per class count: after a retrain adds a class, old and new rows differ.
    by_width: dict[int, list[int]] = {}
    for i, row in enumerate(probabilities):
        by_width.setdefault(len(row), []).append(i)
    for width, rows in by_width.items():
        if width == 0:
            continue
        proba = np.asarray([probabilities[i] for i in rows], dtype=float)
        scores[rows] = informativeness(proba, policy.method)
        uncertain[rows] = policy.band.uncertain(confidence(proba))
    chosen = _select(scores, uncertain, left)
    if len(chosen) == 0:
        return 0
    take = pa.array(chosen)
    store.enqueue(
        pa.table(
            {
                "prediction_id": candidates.column("prediction_id").take(take),
                "score": pa.array(scores[chosen], pa.float64()),
                "model_version": candidates.column("model_version").take(take),
                "prediction_ts": candidates.column("ts").take(take),
            }
        )
    )
    logger.info("enqueued %d of %d uncertain predictions for labeling", len(chosen), n)
    return len(chosen)


def items(
    store: Store, *, status: str | None = "pending", limit: int = 20, offset: int = 0
) -> dict[str, Any]:
    """A page of the queue: pending items most informative first (see `Store.queue_items`).

    Each item carries what a person needs to answer: the features (or the image ref), the
    prediction with its probabilities, and the model version that made it.
    """
    if status is not None and status not in STATUSES:
        raise QueueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    total, page = store.queue_items(status=status, limit=limit, offset=offset)
    return {"total": total, "items": page}


def answer(
    store: Store, schema: FeatureSchema, prediction_id: str, *, label: Any, who: str
) -> dict[str, Any]:
    """Record a person's label for a pending item (with who, when and the model it corrects).

    Raises:
        InvalidLabel: `label` is not one of the model's classes.
        ItemNotFound: No queue item has this id.
        AlreadyAnswered: The item was labeled or skipped before.
    """
    try:
        stored = schema.label_to_store(label)
    except SchemaError as exc:
        raise InvalidLabel(str(exc)) from None
    return _record(store, prediction_id, event="labeled", label=stored, who=who)


def skip(store: Store, prediction_id: str, *, who: str) -> dict[str, Any]:
    """Take a pending item out of the queue without a label (too hard, not sure, broken input).

    Raises:
        ItemNotFound: No queue item has this id.
        AlreadyAnswered: The item was labeled or skipped before.
    """
    return _record(store, prediction_id, event="skipped", label=None, who=who)


def _record(
    store: Store, prediction_id: str, *, event: str, label: str | None, who: str
) -> dict[str, Any]:
    item = store.queue_item(prediction_id)
    if item is None:
        raise ItemNotFound(f"no labeling-queue item {prediction_id!r}")
    if item["status"] != "pending":
        raise AlreadyAnswered(f"item {prediction_id!r} was already {item['status']}")
    prediction = store.prediction(prediction_id, item["prediction_ts"])
    version = prediction["model_version"] if prediction else None
    correct = None if label is None or prediction is None else label == prediction["prediction"]
    status = store.answer_queue_item(
        prediction_id, event=event, label=label, correct=correct, who=who, model_version=version
    )
    if status == "missing":  # pragma: no cover - an item is never deleted; kept for safety
        raise ItemNotFound(f"no labeling-queue item {prediction_id!r}")
    if status is not None:  # someone else answered between the check and the write
        raise AlreadyAnswered(f"item {prediction_id!r} was already {status}")
    return {
        "prediction_id": prediction_id,
        "status": event,
        "label": label,
        "correct": correct,
        "model_version": version,
        "who": who,
    }


def progress(store: Store, settings: Settings, registry: Registry | None = None) -> dict[str, int]:
    """What the queue page shows: pending items, today's answers, and how many more labels
    the retraining policy needs before drift can trigger a retrain."""
    registry = registry or Registry.from_settings(settings)
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    counts = store.queue_progress(midnight)
    new = store.new_labels(champion_snapshot(registry))
    needed = RetrainPolicy.from_settings(settings).min_new_labels
    return {
        "pending": counts["pending"],
        "labeled_today": counts["labeled"],
        "skipped_today": counts["skipped"],
        "new_labels": new,
        "needed_for_retrain": max(0, needed - new),
    }


def champion_snapshot(registry: Registry) -> int | None:
    """The store snapshot the champion was trained on (None without a champion)."""
    version = registry.alias_version(CHAMPION)
    return None if version is None else registry.version(version).snapshot_id

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
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.loop.labeling_policy import BUDGET_WINDOW_S, QueuePolicy, confidence, informativeness
from pipelines.loop.labeling_policy import select_for_queue as _select
from pipelines.loop.retraining_policy import RetrainPolicy
from pipelines.models.registry import CHAMPION, Registry
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
    "answer_image",
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


LATE_S = 60.0
"""How far before the last scan a scan looks again: a prediction reaches the lake up to a
flush interval after its `ts` (longer when a crashed process's spool is replayed)."""


def refresh(
    store: Store,
    policy: QueuePolicy,
    *,
    now: dt.datetime | None = None,
    last_scan: dt.datetime | None = None,
) -> int:
    """Enqueue the most informative new uncertain predictions, within the hourly budget.

    Args:
        store: The store.
        policy: Scoring method, uncertainty band and budget.
        now: The current time (tests move it).
        last_scan: When the caller scanned last; only predictions since then (less `LATE_S`)
            are read, so a busy API's hour of predictions is not re-read every few seconds.
            None reads the whole last hour.

    Returns:
        How many were enqueued. Predictions already in the queue are never enqueued again;
        those left out over the budget may still get in while they are within the hour.
    """
    now = now or utcnow()
    hour_ago = now - dt.timedelta(seconds=BUDGET_WINDOW_S)
    left = policy.budget_left(store.queue_enqueued_since(hour_ago))
    if left <= 0:
        return 0
    since = hour_ago
    if last_scan is not None:
        since = max(hour_ago, last_scan - dt.timedelta(seconds=LATE_S))
    candidates = store.queue_candidates(since)
    boxes = store.vision_queue_candidates(since)
    n = candidates.num_rows
    if n == 0 and boxes.num_rows == 0:
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
    if boxes.num_rows:
        # Image detections have no class distribution: their score comes from the store
        # (the margin of their least certain box) and they were flagged when logged.
        keep = ["prediction_id", "ts", "model_version"]
        candidates = pa.concat_tables([candidates.select(keep), boxes.select(keep)])
        scores = np.concatenate([scores, boxes.column("score").to_numpy(zero_copy_only=False)])
        uncertain = np.concatenate([uncertain, np.ones(boxes.num_rows, dtype=bool)])
        n = candidates.num_rows
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


def answer_image(
    store: Store,
    prediction_id: str,
    *,
    names: Sequence[str],
    who: str,
    label: Any = None,
    boxes: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Record a person's answer to a pending image item, as a label with lineage.

    A classification is answered with its class (`label`: a name or an index). A detection
    with the full, reviewed list of `boxes` (`{"box": [x1, y1, x2, y2], "class": index or
    name}` in pixels of the stored image): confirming keeps the predicted boxes, changing a
    class or deleting a wrong box edits the list, a missing object is a box added; an empty
    list says the image holds nothing. The label text is the boxes as JSON; `correct` is
    whether the person kept the model's boxes and classes as they were.

    Raises:
        InvalidLabel: Not an image item, a class not in `names`, or a malformed box.
        ItemNotFound: No queue item has this id.
        AlreadyAnswered: The item was labeled or skipped before.
    """
    item = store.queue_item(prediction_id)
    if item is None:
        raise ItemNotFound(f"no labeling-queue item {prediction_id!r}")
    prediction = store.prediction(prediction_id, item["prediction_ts"])
    task = prediction.get("task") if prediction else None
    if prediction is None or task not in ("detect", "classify"):
        raise InvalidLabel(f"item {prediction_id!r} is not an image prediction")
    if task == "classify":
        if boxes is not None or label is None:
            raise InvalidLabel("a classification item is answered with its class in 'label'")
        text = names[_class_index(label, names)]
        return _record(store, prediction_id, event="labeled", label=text, who=who)
    if boxes is None:
        raise InvalidLabel("a detection item is answered with the reviewed list of 'boxes'")
    reviewed = [_box(b, names, i) for i, b in enumerate(boxes)]
    text = json.dumps(reviewed)
    predicted = [
        {"class": int(d["class"]), "box": [round(float(v), 1) for v in d["box"]]}
        for d in json.loads(prediction["prediction"] or "[]")
    ]
    same = sorted((b["class"], [round(v, 1) for v in b["box"]]) for b in reviewed) == sorted(
        (p["class"], p["box"]) for p in predicted
    )
    return _record(store, prediction_id, event="labeled", label=text, who=who, judge=lambda _: same)


def item_task(store: Store, prediction_id: str) -> str | None:
    """ "detect" / "classify" for an image item, None for a tabular or unknown one."""
    item = store.queue_item(prediction_id)
    if item is None:
        return None
    prediction = store.prediction(prediction_id, item["prediction_ts"])
    return prediction.get("task") if prediction else None


def _class_index(value: Any, names: Sequence[str]) -> int:
    if isinstance(value, bool):
        raise InvalidLabel(f"class {value!r} is not one of {list(names)}")
    if isinstance(value, int) and 0 <= value < len(names):
        return value
    if isinstance(value, str) and value in names:
        return list(names).index(value)
    raise InvalidLabel(f"class {value!r} is not one of {list(names)} (or their indices)")


def _box(raw: Any, names: Sequence[str], i: int) -> dict[str, Any]:
    if not isinstance(raw, Mapping) or set(raw) - {"box", "class", "name", "confidence"}:
        raise InvalidLabel(f'boxes[{i}] must be {{"box": [x1, y1, x2, y2], "class": ...}}')
    box = raw.get("box")
    if (
        not isinstance(box, list | tuple)
        or len(box) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box)
        or not all(math.isfinite(v) and v >= 0 for v in box)
        or not (box[0] < box[2] and box[1] < box[3])
    ):
        raise InvalidLabel(f"boxes[{i}].box must be [x1, y1, x2, y2], 0 <= x1 < x2, 0 <= y1 < y2")
    return {"class": _class_index(raw.get("class"), names), "box": [float(v) for v in box]}


def _record(
    store: Store,
    prediction_id: str,
    *,
    event: str,
    label: str | None,
    who: str,
    judge: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    item = store.queue_item(prediction_id)
    if item is None:
        raise ItemNotFound(f"no labeling-queue item {prediction_id!r}")
    if item["status"] != "pending":
        raise AlreadyAnswered(f"item {prediction_id!r} was already {item['status']}")
    prediction = store.prediction(prediction_id, item["prediction_ts"])
    version = prediction["model_version"] if prediction else None
    if label is None or prediction is None:
        correct = None
    elif judge is not None:
        correct = judge(prediction)
    else:
        correct = label == prediction["prediction"]
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

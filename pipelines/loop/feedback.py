"""Feedback: what the right answer to a logged prediction was, from a person or a system.

`POST /feedback` and the dashboard's Predict page both record feedback through `give`, so a
verdict is checked the same way wherever it comes from: the prediction must be in the lake (a
prediction answered moments ago is flushed from this process's log first), a label must be
one of the model's classes, a label decides whether the prediction was right (a `correct`
that says otherwise is refused), and the row keeps the model version that made the
prediction, not the one serving now, so the live accuracy is charged to the right model.

The exceptions map onto HTTP codes the way the labeling queue's do
(`pipelines.loop.labeling_queue`): `PredictionNotFound` 404, `NoSchema` 409, `InvalidFeedback` 422.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.schema import FeatureSchema, SchemaError
from pipelines.store import Store
from pipelines.store.spool import PredictionLog

__all__ = [
    "Feedback",
    "FeedbackError",
    "InvalidFeedback",
    "NoSchema",
    "PredictionNotFound",
    "find_prediction",
    "give",
    "verdict",
]


class FeedbackError(ValueError):
    """Feedback that can't be recorded; the message says why, for the user."""


class PredictionNotFound(FeedbackError):
    pass


class NoSchema(FeedbackError):
    pass


class InvalidFeedback(FeedbackError):
    pass


@dataclass(frozen=True)
class Feedback:
    """A recorded feedback row: `label` as stored (text), `correct` as derived."""

    feedback_id: str
    prediction_id: str
    label: str | None
    correct: bool | None
    model_version: str | None


def find_prediction(
    store: Store, log: PredictionLog | None, prediction_id: str
) -> dict[str, Any] | None:
    """The logged prediction, flushing `log` first if it still holds it (None if unknown).

    Feedback often follows its prediction within the flush interval: the row is then only in
    this process's log. The log is asked before the lake is read, because a flush under way
    takes the id out of the pending set just before its commit becomes visible.
    """
    pending = log.is_pending(prediction_id) if log is not None else False
    row = store.prediction(prediction_id)
    if row is None and pending and log is not None:
        log.flush()
        row = store.prediction(prediction_id)
    return row


def verdict(
    schema: FeatureSchema, prediction: str, *, label: Any = None, correct: bool | None = None
) -> tuple[str | None, bool | None]:
    """The label as stored and whether the prediction was right (pure).

    A label is checked against the schema's classes and decides `correct`; a `correct` given
    with it must agree.

    Raises:
        InvalidFeedback: No label nor `correct`, a label not among the classes, or a
            `correct` that contradicts the label.
    """
    if label is None and correct is None:
        raise InvalidFeedback('give "label" (the true class) or "correct" (true/false)')
    if label is None:
        return None, correct
    try:
        stored = schema.label_to_store(label)
    except SchemaError as exc:
        raise InvalidFeedback(str(exc)) from None
    implied = str(prediction) == stored
    if correct is not None and correct != implied:
        raise InvalidFeedback(f'"correct": {correct} contradicts the label and the prediction')
    return stored, implied


def give(
    store: Store,
    log: PredictionLog | None,
    schema: FeatureSchema | None,
    prediction_id: str,
    *,
    label: Any = None,
    correct: bool | None = None,
    source: str = "api",
    who: str | None = None,
) -> Feedback:
    """Check a verdict on a logged prediction and write it as one feedback row.

    Args:
        store: A read-write store.
        log: This process's prediction log (None where the process logs no predictions).
        schema: The serving model's schema (its classes), else the dataset's.
        prediction_id: The prediction the verdict is about.
        label: The true class, as the client spells it (a class or its index).
        correct: Whether the prediction was right.
        source: Who sent it (`api`, `dashboard`, …): training rows keep it as lineage.
        who: The person, if known.

    Raises:
        PredictionNotFound: No prediction has this id.
        NoSchema: Nothing to check a label against yet.
        InvalidFeedback: See `verdict`.
    """
    row = find_prediction(store, log, prediction_id)
    if row is None:
        raise PredictionNotFound(f"no prediction with id {prediction_id!r}")
    if schema is None:
        raise NoSchema("no dataset schema yet")
    stored, correct = verdict(schema, row["prediction"], label=label, correct=correct)
    version = row["model_version"]
    feedback_id = store.add_feedback(
        prediction_id,
        label=stored,
        correct=correct,
        source=source,
        who=who,
        model_version=version,
    )
    return Feedback(feedback_id, prediction_id, stored, correct, version)

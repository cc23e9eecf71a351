"""Which predictions a human should label, and in what order. Pure: no I/O.

A prediction goes to the labeling queue when it is *uncertain*: its confidence (the
probability of the predicted class) lies strictly inside the band 0.4 < confidence < 0.7
(``Band``, shared with the prediction path). Among the uncertain ones, the most *informative*
go first (uncertainty sampling, the classic active-learning heuristic):

* ``margin``: 1 − (top1 − top2). Two classes almost tied is where a label moves the boundary
  most; the default because it ignores the long tail of unlikely classes.
* ``entropy``: Shannon entropy normalized by log(k) to [0, 1]; uses the whole distribution.
* ``confidence``: 1 − top1 ("least confident").

All three are in [0, 1], higher meaning more useful to label.

Budget: a queue that floods is a queue nobody works through, so at most
``QueuePolicy.budget_per_hour`` items are enqueued per rolling hour. The caller counts what was
enqueued in the last ``BUDGET_WINDOW_S`` seconds, asks ``QueuePolicy.budget_left`` how many may
still go in, and ``select_for_queue`` keeps the most informative uncertain items up to that many.
Items over the budget are simply not enqueued (their predictions stay flagged ``uncertain`` in the
log, so nothing is lost; the next window can pick newer ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
from scipy.special import entr

from pipelines.serving.band import Band

__all__ = [
    "BUDGET_WINDOW_S",
    "Band",
    "Method",
    "QueuePolicy",
    "confidence",
    "entropy",
    "informativeness",
    "margin",
    "select_for_queue",
]

Method = Literal["margin", "entropy", "confidence"]
METHODS: tuple[str, ...] = get_args(Method)

BUDGET_WINDOW_S = 3600.0
"""The rolling window ``QueuePolicy.budget_per_hour`` applies to, in seconds."""


def _matrix(proba: np.ndarray) -> np.ndarray:
    p = np.asarray(proba, dtype=float)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"expected a (rows, classes) probability matrix, got shape {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    return p


def confidence(proba: np.ndarray) -> np.ndarray:
    """The probability of the predicted (argmax) class, per row."""
    return _matrix(proba).max(axis=1)


def margin(proba: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability per row; with a single class, top-2 counts as 0."""
    p = _matrix(proba)
    if p.shape[1] == 1:
        return p[:, 0].copy()
    # A partial sort puts the two largest in the last two columns without sorting every row.
    top = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def entropy(proba: np.ndarray) -> np.ndarray:
    """Shannon entropy per row divided by log(k): 0 for a one-hot row, 1 for a uniform one.

    Rows are assumed to sum to 1 (a model's output); they are not renormalized.
    """
    p = _matrix(proba)
    k = p.shape[1]
    if k == 1:
        return np.zeros(p.shape[0])
    return np.asarray(entr(p).sum(axis=1) / math.log(k))


def informativeness(proba: np.ndarray, method: Method = "margin") -> np.ndarray:
    """How useful a label would be for each row, in [0, 1]; higher is more useful.

    Args:
        proba: Class probabilities, rows × classes.
        method: ``"margin"`` (1 − margin), ``"entropy"`` (normalized entropy) or
            ``"confidence"`` (1 − confidence).

    Raises:
        ValueError: Unknown method or not a valid probability matrix.
    """
    if method == "margin":
        return 1.0 - margin(proba)
    if method == "entropy":
        return entropy(proba)
    if method == "confidence":
        return 1.0 - confidence(proba)
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def select_for_queue(
    scores: np.ndarray, uncertain_mask: np.ndarray, budget_left: int
) -> np.ndarray:
    """Indices of the rows to enqueue: the most informative uncertain ones, at most the budget.

    Args:
        scores: Informativeness per row (higher first).
        uncertain_mask: True where the row is uncertain; only those may be enqueued.
        budget_left: How many items may still be enqueued in the current budget window
            (``QueuePolicy.budget_left``); zero or less selects nothing.

    Returns:
        Row indices, most informative first; ties keep row order (earlier rows are older).

    Raises:
        ValueError: Scores and mask differ in shape or are not 1-D.
    """
    s = np.asarray(scores, dtype=float)
    mask = np.asarray(uncertain_mask, dtype=bool)
    if s.ndim != 1 or s.shape != mask.shape:
        raise ValueError(f"scores {s.shape} and uncertain_mask {mask.shape} must be equal 1-D")
    if budget_left <= 0:
        return np.empty(0, dtype=np.intp)
    candidates = np.flatnonzero(mask)
    # NaN would sort unpredictably; it means "no score", so it goes last.
    key = np.nan_to_num(s[candidates], nan=-np.inf)
    order = np.argsort(-key, kind="stable")
    return candidates[order[:budget_left]]


@dataclass(frozen=True)
class QueuePolicy:
    """What enters the labeling queue.

    Attributes:
        method: The informativeness measure that ranks uncertain items.
        band: The uncertainty band; only predictions inside it are candidates.
        budget_per_hour: At most this many items enqueued per rolling hour. 100 is what one
            reviewer clears in an hour at ~30 s an item, and two batches of the retraining
            policy's 50 new labels.
    """

    method: Method = "margin"
    band: Band = field(default_factory=Band)
    budget_per_hour: int = 100

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.budget_per_hour < 0:
            raise ValueError("budget_per_hour must be >= 0")
        if not 0.0 <= self.band.low < self.band.high <= 1.0:
            raise ValueError("the band needs 0 <= low < high <= 1")

    @classmethod
    def from_settings(cls, settings: Any) -> QueuePolicy:
        """The policy configured by `Settings` (`DRIFTLAB_QUEUE_*`, `DRIFTLAB_UNCERTAINTY_*`)."""
        return cls(
            method=settings.queue_method,
            band=Band(settings.uncertainty_low, settings.uncertainty_high),
            budget_per_hour=settings.queue_budget_per_hour,
        )

    def budget_left(self, enqueued_last_hour: int) -> int:
        """How many items may still be enqueued, given those enqueued in the last hour."""
        return max(0, self.budget_per_hour - enqueued_last_hour)

    def select(self, proba: np.ndarray, budget_left: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows of a prediction batch to enqueue, and every row's informativeness.

        Args:
            proba: Class probabilities of the batch, rows × classes.
            budget_left: From ``budget_left``.

        Returns:
            ``(indices, scores)``: indices as in ``select_for_queue``, scores for all rows
            (stored with the queue items; ``Store.queue_items`` serves them in that order).
        """
        scores = informativeness(proba, self.method)
        mask = self.band.uncertain(confidence(proba))
        return select_for_queue(scores, mask, budget_left), scores

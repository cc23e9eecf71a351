"""Confidence-based performance estimation: a model's accuracy on a window without its labels.

A calibrated model says, for each row, how likely each class is. If those probabilities are
right, the true class of row i is a draw from Categorical(p_i), and every metric the window
would score once labeled is a random variable whose distribution follows from the
probabilities alone (the idea of NannyML's CBPE). This module computes its expected value and
the band its realized value falls in.

**The expected confusion matrix** (k×k, [true, predicted]): the prediction is fixed (the argmax
of p_i), the truth is random, so column j is the sum of the probability vectors of the rows
predicted j. Accuracy, per-class F1 (one-vs-rest: 2·TP / (true count + predicted count),
averaged into macro-F1) and, for a binary model (positive class = column 1), precision and
recall are the metric evaluated on that matrix.

**Their bands** are for sampling error: how far the realized metric of *this* window strays
from its expectation because the labels are random. Column j of the confusion matrix is a sum
of independent one-draw multinomials, with covariance Cov_j = Σ_{i→j} (diag p_i − p_i p_iᵀ),
and the columns are independent. By the delta method, Var f ≈ Σ_j g_jᵀ Cov_j g_j with g_j the
gradient of f with respect to column j, evaluated at the expected matrix. For accuracy that is
exactly Σ_i p_max,i (1 − p_max,i) / n². Each band is value ± z·std, clipped to [0, 1].

Every metric here reads the matrix only through its diagonal and its row sums (the true
counts): the column sums are the predicted counts, which are fixed. So its gradient is
G = diag(a) + b·1ᵀ, and the variance needs no k×k×k moments, only one number per row:
Var f = Σ_t (a_t² + 2·a_t·b_t)·E[t,t] + Σ_t b_t²·R_t − Σ_i (a_ŷᵢ·p_i,ŷᵢ + b·p_i)², with R_t
the expected count of true class t. That is O(n·k), with no sort and no copy of the rows.

**ROC-AUC** (binary): the expected count of concordant (positive, negative) pairs, ties
counted half, over the expected count of pairs E[n_pos · n_neg]; both come from one sort of the
positive-class probabilities and cumulative sums, in O(n log n). Its band is Hanley & McNeil's
(1982) standard error at the expected class counts, which also counts the error of sampling
the scores, so it is wider than the labels' error alone.

**What the estimate cannot see**: it trusts the probabilities. It follows a covariate shift
(new kinds of rows, scored by the same p(y|x)) only as far as the model's probabilities stay
calibrated on the new rows; a concept shift (the same rows now have other labels: p(y|x)
changed) leaves the probabilities, and so the estimate, unchanged. Compare it with the realized
metric wherever labels arrive.

Cost: a few O(n·k) passes over the probabilities, plus a sort for a binary model's AUC;
`python -m benchmarks --only estimation` measures it against the drift check of the same
window.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "Estimate",
    "Estimates",
    "drop",
    "estimate",
    "expected_confusion",
    "realized",
]

# How far a row's probabilities may stray from summing to one (float32 outputs, rounding).
SUM_TOLERANCE = 1e-4
BINARY_METRICS = ("precision", "recall", "roc_auc")
METRICS = ("accuracy", "macro_f1", *BINARY_METRICS)


@dataclass(frozen=True)
class Estimate:
    """A metric's estimate and its band.

    Attributes:
        value: The estimate.
        low: The band's low end (value − z·std, clipped to [0, 1] for a metric).
        high: The band's high end.
        std: The estimated standard deviation of the realized value around the estimate.
    """

    value: float
    low: float
    high: float
    std: float

    @classmethod
    def from_std(cls, value: float, std: float, z: float, clip: bool = True) -> Estimate:
        low, high = value - z * std, value + z * std
        if clip:
            low, high = max(low, 0.0), min(high, 1.0)
        return cls(float(value), float(low), float(high), float(std))

    def covers(self, realized_value: float) -> bool:
        """Whether a realized value lies inside the band."""
        return self.low <= realized_value <= self.high


@dataclass(frozen=True)
class Estimates:
    """A window's estimated metrics; the binary ones are None for a multiclass model.

    Attributes:
        n: The window's rows.
        accuracy: Estimated accuracy.
        macro_f1: Estimated macro-F1 (every class counts, predicted or not).
        precision: Binary only: estimated precision of the positive class (column 1).
        recall: Binary only: estimated recall of the positive class.
        roc_auc: Binary only: estimated ROC-AUC; None when no pair can be formed (every
            probability 0 or 1 on the same side).
        z: The band's half-width in standard deviations.
    """

    n: int
    accuracy: Estimate
    macro_f1: Estimate
    precision: Estimate | None = None
    recall: Estimate | None = None
    roc_auc: Estimate | None = None
    z: float = 1.96

    def metrics(self) -> dict[str, Estimate]:
        """The estimated metrics by name (those that apply to this model)."""
        out = {name: getattr(self, name) for name in METRICS}
        return {name: est for name, est in out.items() if est is not None}


# --- input -------------------------------------------------------------------------------------


def _validated(proba: Any) -> np.ndarray:
    """The probabilities as a float64 n×k array; a ValueError says what is wrong."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"proba must be an n×k array of class probabilities, not {p.shape}")
    if p.shape[0] == 0:
        raise ValueError("empty window: there are no predictions to estimate from")
    if p.shape[1] < 2:
        raise ValueError(f"proba needs a column per class, at least 2, not {p.shape[1]}")
    sums = p @ np.ones(p.shape[1])
    # Written so that a NaN fails the check too.
    if not (p.min() >= -SUM_TOLERANCE and np.abs(sums - 1.0).max() <= SUM_TOLERANCE):
        raise ValueError("proba must hold probabilities: each row in [0, 1], summing to 1")
    return p


def expected_confusion(proba: Any) -> np.ndarray:
    """The expected confusion matrix [true, predicted] of a window, given calibrated
    probabilities: column j is the sum of the probability vectors of the rows predicted j.

    Args:
        proba: n×k class probabilities (rows sum to 1, columns in the model's class order).

    Raises:
        ValueError: An empty window, or something that is not an n×k array of probabilities.
    """
    p = _validated(proba)
    n, k = p.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), p.argmax(axis=1)] = 1.0
    return p.T @ onehot


@dataclass(frozen=True)
class _Counts:
    """What the metrics read of a confusion matrix, expected or realized: its diagonal (true
    and predicted t), its row sums (true t) and its column sums (predicted t)."""

    diag: np.ndarray
    rows: np.ndarray
    cols: np.ndarray

    @classmethod
    def of(cls, confusion: np.ndarray) -> _Counts:
        return cls(np.diag(confusion).copy(), confusion.sum(axis=1), confusion.sum(axis=0))


# --- metrics, each with its gradient G = diag(a) + b·1ᵀ ----------------------------------------

Metric = tuple[float, np.ndarray, np.ndarray]
"""(value, a, b): the metric and the two vectors of its gradient with respect to the matrix."""


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den is 0 (scikit-learn's zero_division=0)."""
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _accuracy(c: _Counts) -> Metric:
    n = c.cols.sum()
    k = len(c.diag)
    return float(c.diag.sum() / n), np.full(k, 1 / n), np.zeros(k)


def _macro_f1(c: _Counts) -> Metric:
    """Mean over classes of 2·C[t,t] / (true count of t + predicted count of t), 0 for a class
    neither true nor predicted."""
    k = len(c.diag)
    denom = c.rows + c.cols
    # ∂F1_t/∂C[t, t] = 2/d_t (plus the row term); ∂F1_t/∂C[t, j] = −2·C[t,t]/d_t² for every j.
    a = _ratio(np.full(k, 2.0), denom) / k
    b = -_ratio(2 * c.diag, denom**2) / k
    return float(_ratio(2 * c.diag, denom).mean()), a, b


def _precision(c: _Counts) -> Metric:
    """C[1,1] / predicted positives (0 when nothing is predicted positive)."""
    inv = _ratio(np.ones(1), c.cols[1:2])[0]
    return float(c.diag[1] * inv), np.array([0.0, inv]), np.zeros(2)


def _recall(c: _Counts) -> Metric:
    """C[1,1] / true positives (0 when there are none)."""
    inv = _ratio(np.ones(1), c.rows[1:2])[0]
    value = c.diag[1] * inv
    return float(value), np.array([0.0, inv]), np.array([0.0, -value * inv])


# --- ROC-AUC -----------------------------------------------------------------------------------


def _pairs(score: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """(concordant pairs, all pairs) of a sample sorted by score, where row i is positive with
    probability weight_i (a label: 0 or 1) and rows are independent: the expected count of
    (positive, negative) pairs with the positive scored higher, ties counted half, and the
    expected count of (positive, negative) pairs."""
    starts = np.concatenate(([0], np.flatnonzero(np.diff(score)) + 1))
    pos = np.add.reduceat(weight, starts)
    neg = np.add.reduceat(1.0 - weight, starts)
    # A row is never paired with itself: Σ_i w_i (1 − w_i) is taken out of the tied pairs.
    own = np.add.reduceat(weight * (1.0 - weight), starts)
    below = np.cumsum(neg) - neg
    concordant = float((pos * below).sum() + 0.5 * (pos * neg - own).sum())
    total = float(weight.sum() * (1.0 - weight).sum() - own.sum())
    return concordant, total


def _hanley_mcneil_std(auc: float, n_pos: float, n_neg: float) -> float:
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (
        auc * (1 - auc) + max(n_pos - 1, 0.0) * (q1 - auc**2) + max(n_neg - 1, 0.0) * (q2 - auc**2)
    ) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


# --- the API -----------------------------------------------------------------------------------


def estimate(proba: Any, *, z: float = 1.96) -> Estimates:
    """Estimated metrics of a window from its calibrated probabilities alone.

    Args:
        proba: n×k class probabilities (rows sum to 1, columns in the model's class order);
            the predicted class is the argmax. For k = 2 the positive class is column 1.
        z: The band's half-width in standard deviations (1.96: a 95% band).

    Raises:
        ValueError: An empty window, or something that is not an n×k array of probabilities.
    """
    p = _validated(proba)
    n, k = p.shape
    predicted = p.argmax(axis=1)
    p_max = np.take_along_axis(p, predicted[:, None], axis=1)[:, 0]
    counts = _Counts(
        diag=np.bincount(predicted, weights=p_max, minlength=k),
        rows=np.ones(n) @ p,
        cols=np.bincount(predicted, minlength=k).astype(np.float64),
    )

    def band(metric: Any) -> Estimate:
        value, a, b = metric(counts)
        # Σ_j g_jᵀ Cov_j g_j with g_j = a_j·e_j + b (see the module's docstring).
        h = a[predicted] * p_max
        if b.any():
            h += p @ b
        var = ((a**2 + 2 * a * b) * counts.diag).sum() + (b**2 * counts.rows).sum() - h @ h
        return Estimate.from_std(value, math.sqrt(max(float(var), 0.0)), z)

    out: dict[str, Any] = {"accuracy": band(_accuracy), "macro_f1": band(_macro_f1)}
    if k == 2:
        out["precision"], out["recall"] = band(_precision), band(_recall)
        q = np.sort(p[:, 1])
        concordant, pairs = _pairs(q, q)
        if pairs > 0:
            auc = concordant / pairs
            n_pos = float(q.sum())
            out["roc_auc"] = Estimate.from_std(auc, _hanley_mcneil_std(auc, n_pos, n - n_pos), z)
    return Estimates(n=n, z=z, **out)


def realized(
    proba_or_predicted: Any, labels: Any, *, n_classes: int | None = None
) -> dict[str, Any]:
    """The same metrics as `estimate`, on labeled rows.

    Args:
        proba_or_predicted: n×k class probabilities (the prediction is the argmax; ROC-AUC
            needs them), or the n predicted class indices.
        labels: The n true class indices.
        n_classes: k, when only predictions are given (else the largest index seen + 1).

    Returns:
        {"n": rows, "accuracy", "macro_f1", "precision", "recall", "roc_auc"}: floats, or None
        where a metric does not apply (binary ones for k > 2, ROC-AUC without probabilities or
        with a single class among the labels) and for every metric when n = 0.
    """
    given = np.asarray(proba_or_predicted)
    y = np.asarray(labels).astype(np.int64, copy=False).ravel()
    proba = given.astype(np.float64) if given.ndim == 2 else None
    if proba is not None:
        predicted, k = proba.argmax(axis=1), proba.shape[1]
    else:
        predicted = given.astype(np.int64, copy=False).ravel()
        seen = int(max(predicted.max(initial=-1), y.max(initial=-1))) + 1
        k = n_classes if n_classes is not None else max(seen, 2)
    if len(predicted) != len(y):
        raise ValueError(f"{len(predicted)} predictions but {len(y)} labels")
    out: dict[str, Any] = {"n": len(y), **dict.fromkeys(METRICS)}
    if len(y) == 0:
        return out
    if y.min() < 0 or y.max() >= k or predicted.min() < 0 or predicted.max() >= k:
        raise ValueError(f"labels and predictions must be class indices in [0, {k})")
    confusion = np.bincount(y * k + predicted, minlength=k * k).reshape(k, k).astype(float)
    counts = _Counts.of(confusion)
    out["accuracy"], out["macro_f1"] = _accuracy(counts)[0], _macro_f1(counts)[0]
    if k == 2:
        out["precision"], out["recall"] = _precision(counts)[0], _recall(counts)[0]
        if proba is not None and 0 < y.sum() < len(y):
            order = np.argsort(proba[:, 1], kind="stable")
            concordant, pairs = _pairs(proba[order, 1], y[order].astype(np.float64))
            out["roc_auc"] = concordant / pairs
    return out


def drop(reference_value: float, reference_n: int, est: Estimate, *, z: float = 1.96) -> Estimate:
    """The estimated drop from a reference metric: reference − estimate, positive when worse.

    Its std combines the estimate's and the reference's sampling error in quadrature; the
    reference's is taken as binomial, sqrt(r(1 − r) / n_ref) (an accuracy's on n_ref held-out
    rows; an approximation for the other metrics). The band is not clipped: a drop may be
    negative.

    Args:
        reference_value: The metric measured on labeled reference rows, r.
        reference_n: How many rows it was measured on.
        est: The window's estimate of the same metric.
        z: The band's half-width in standard deviations.
    """
    if reference_n <= 0:
        raise ValueError(f"reference_n must be positive, not {reference_n}")
    if not 0.0 <= reference_value <= 1.0:
        raise ValueError(f"reference_value must lie in [0, 1], not {reference_value}")
    ref_var = reference_value * (1 - reference_value) / reference_n
    std = math.sqrt(est.std**2 + ref_var)
    return Estimate.from_std(reference_value - est.value, std, z, clip=False)

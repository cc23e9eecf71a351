"""Probability calibration: maps from a model's raw probabilities to calibrated ones.

A forest's raw probabilities are vote shares, not frequencies: a class given 0.9 may be right
far more or far less often than 90% of the time, and the uncertainty band, the labeling policy
and every confidence shown read them as frequencies. `fit_calibration` learns a map on rows the
estimator never saw (a cut of the training rows, `pipelines.models.training.fit`) and
`Calibration.apply` runs it after whichever runtime served the raw probabilities.

The maps are those of scikit-learn's `CalibratedClassifierCV` on a frozen estimator (its
`_fit_calibrator` and `_CalibratedClassifier.predict_proba`), and give its probabilities to
the last bit or so (the tests allow 1e-12):

- isotonic and sigmoid map each class one against the rest: for two classes only the positive
  column (index 1) is mapped and p0 = 1 - p1; for more, each row is divided by its sum (a row
  whose maps all give 0 becomes uniform). Isotonic maps are scikit-learn's thresholds read by
  `np.interp`, which is what `IsotonicRegression(out_of_bounds="clip")` runs (`np.interp` holds
  the end values outside the thresholds, as the clipping does); sigmoid maps are Platt's
  p = 1 / (1 + exp(a f + b)).
- temperature maps every class at once: softmax(beta log(p + 1e-12)), one number for the model
  (for two classes, of the columns (1 - p1, p1)).

One-against-the-rest maps fitted on few rows per class under-state a good model's confidence:
Platt's targets cap a class's sigmoid at (n+1)/(n+2) for n positive rows, and the division by
the row's sum gives every other class's floor a share. Temperature keeps the ranking of the
classes and fits its single number on all rows, so `fit_calibration` considers it beside the
other two and lets the out-of-fold log-loss choose.

A map is a few plain numbers: it travels as JSON beside the model's other serving files and
applies without scikit-learn (numpy, and scipy's `expit` for sigmoid maps on many rows).
`tests/pipelines/models/test_calibration.py` checks every map against `CalibratedClassifierCV`
itself.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CALIBRATION_FILE = "calibration.json"
"""A version's calibration map among its serving files (`Calibration.to_dict`)."""
METHODS = ("temperature", "sigmoid", "isotonic")
"""The maps `fit_calibration` chooses between, fewest numbers first (the first wins a tie)."""
MIN_ROWS = 30
"""Fewer calibration rows than this and a map would fit noise: the identity is kept."""
FOLDS = 5
"""Out-of-fold splits of the calibration rows on which the methods are compared."""
_EPS = 1e-15  # `training.evaluate`'s clipping: the log-losses compared are the ones it reports
_LOG_EPS = 1e-12  # scikit-learn's `_convert_to_logits`: log(p + 1e-12)


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map for a classifier with `n_classes` outputs.

    Attributes:
        method: "isotonic", "sigmoid", "temperature", or "none" (the identity: raw
            probabilities pass through).
        n_classes: Width of the probability matrices it maps.
        thresholds: Isotonic: per mapped column, scikit-learn's `X_thresholds_`.
        values: Isotonic: per mapped column, scikit-learn's `y_thresholds_`.
        a: Sigmoid: per mapped column, the slope of p = 1 / (1 + exp(a f + b)).
        b: Sigmoid: per mapped column, the intercept.
        beta: Temperature: the inverse temperature of softmax(beta log(p + 1e-12)).
        rows: Calibration rows the map was fitted on.
        why: Why this method: the out-of-fold comparison, or why there is no map.
        scores: Out-of-fold log-loss of each method compared ("none": the raw probabilities).

    The mapped columns of isotonic and sigmoid are column 1 alone for two classes, every column
    otherwise.
    """

    method: str
    n_classes: int
    thresholds: tuple[tuple[float, ...], ...] = ()
    values: tuple[tuple[float, ...], ...] = ()
    a: tuple[float, ...] = ()
    b: tuple[float, ...] = ()
    beta: float = 1.0
    rows: int = 0
    why: str = ""
    scores: dict[str, float] = field(default_factory=dict, compare=False)
    # The maps in the forms `apply` reads, built by `_prepare`.
    _arrays: list[tuple[np.ndarray, np.ndarray]] = field(init=False, repr=False, compare=False)
    _lists: list[tuple[list[float], list[float], list[float]]] = field(
        init=False, repr=False, compare=False
    )
    _ab: tuple[np.ndarray, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.method not in (*METHODS, "none"):
            raise ValueError(f"unknown calibration method {self.method!r}")
        if self.n_classes < (2 if self.method != "none" else 1):
            raise ValueError(f"a map needs 2 classes or more, not {self.n_classes}")
        mapped = _mapped_columns(self.n_classes)
        if self.method == "isotonic" and not (
            len(self.thresholds) == len(self.values) == mapped
            and all(len(x) == len(y) > 0 for x, y in zip(self.thresholds, self.values, strict=True))
        ):
            raise ValueError(f"isotonic calibration needs {mapped} non-empty threshold maps")
        if self.method == "sigmoid" and not len(self.a) == len(self.b) == mapped:
            raise ValueError(f"sigmoid calibration needs {mapped} (a, b) pairs")
        if not math.isfinite(self.beta):
            raise ValueError(f"the inverse temperature must be finite, not {self.beta}")
        self._prepare()

    @classmethod
    def identity(cls, n_classes: int, why: str, rows: int = 0) -> Calibration:
        """No map: raw probabilities are served as they are."""
        return cls("none", n_classes, rows=rows, why=why)

    @property
    def calibrated(self) -> bool:
        return self.method != "none"

    def _prepare(self) -> None:
        """Build the forms `apply` reads once: it runs on every request."""
        # Isotonic, many rows: one `np.interp` per mapped column, as scikit-learn runs it.
        arrays = [
            (np.array(x, dtype=np.float64), np.array(y, dtype=np.float64))
            for x, y in zip(self.thresholds, self.values, strict=True)
        ]
        # Isotonic, one row: the same interpolation on Python floats, with `np.interp`'s own
        # arithmetic (the segment j where x[j] <= v < x[j+1], its slope (y[j+1]-y[j]) /
        # (x[j+1]-x[j]), then slope * (v - x[j]) + y[j]), which gives the same doubles without
        # a numpy call per column.
        lists = [
            (
                list(x),
                list(y),
                [(y[j + 1] - y[j]) / (x[j + 1] - x[j]) for j in range(len(x) - 1)] + [0.0],
            )
            for x, y in zip(self.thresholds, self.values, strict=True)
        ]
        object.__setattr__(self, "_arrays", arrays)
        object.__setattr__(self, "_lists", lists)
        object.__setattr__(self, "_ab", (np.array(self.a), np.array(self.b)))

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (rows, classes), float64, for raw ones of the same shape.

        The rows are probabilities (non-negative, summing to 1), as every runtime gives them.
        The identity ("none") returns its input as a float64 array, without a copy when it
        already is one. A single row takes a path of its own (a request of one row pays a few
        microseconds, `tests/pipelines/models/test_calibration.py` times it) that gives the
        same doubles as the path for many.
        """
        p = np.asarray(proba, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != self.n_classes:
            raise ValueError(f"expected (rows, {self.n_classes}) probabilities, got {p.shape}")
        if self.method == "none":
            return p
        if self.method == "temperature":
            return self._temperature(p)
        if len(p) == 1:
            return self._one_against_rest_row(p[0].tolist())
        binary = self.n_classes == 2
        raw = p[:, 1:] if binary else p
        if self.method == "sigmoid":
            from scipy.special import expit  # scikit-learn's sigmoid

            a, b = self._ab
            mapped = expit(-(a * raw + b))
        else:
            mapped = np.empty(raw.shape, dtype=np.float64)
            for j, (x, y) in enumerate(self._arrays):
                mapped[:, j] = np.interp(raw[:, j], x, y)
        if binary:
            out = np.empty(p.shape, dtype=np.float64)
            out[:, 1] = mapped[:, 0]
            out[:, 0] = 1.0 - out[:, 1]
        else:
            out = _normalized(mapped)
        out[(out > 1.0) & (out <= 1.0 + 1e-5)] = 1.0  # scikit-learn's last step
        return out

    def _temperature(self, p: np.ndarray) -> np.ndarray:
        # scikit-learn's softmax(beta * log(p + 1e-12)), step by step. Each value is a share of
        # a sum that includes it, so none exceeds 1 and its last step has nothing to do.
        if self.n_classes == 2 and len(p) == 1:
            return self._temperature_pair(float(p[0, 1]))
        if self.n_classes == 2:
            p1s = p[:, 1]
            p = np.empty(p.shape)
            np.subtract(1.0, p1s, out=p[:, 0])
            p[:, 1] = p1s
        z = np.add(p, _LOG_EPS)
        np.log(z, out=z)
        z *= self.beta
        z -= np.maximum.reduce(z, axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= np.add.reduce(z, axis=1, keepdims=True)
        return z

    def _temperature_pair(self, p1: float) -> np.ndarray:
        # One row of two classes: the steps above on Python floats (the same IEEE operations;
        # a sum of two numbers has one order), with numpy's own log and exp.
        logs = np.log(np.array([(1.0 - p1) + _LOG_EPS, p1 + _LOG_EPS])).tolist()
        z0, z1 = logs[0] * self.beta, logs[1] * self.beta
        top = max(z0, z1)
        e0, e1 = np.exp(np.array([z0 - top, z1 - top])).tolist()
        total = e0 + e1
        return np.array([[e0 / total, e1 / total]])

    def _one_against_rest_row(self, row: list[float]) -> np.ndarray:
        binary = self.n_classes == 2
        raw = row[1:] if binary else row
        mapped = self._sigmoid_row(raw) if self.method == "sigmoid" else self._isotonic_row(raw)
        if binary:
            p1 = mapped[0]
            return np.array([[1.0 - p1, 1.0 if 1.0 < p1 <= 1.0 + 1e-5 else p1]])
        # numpy sums the row in its own order, as it does for scikit-learn; a share of a sum of
        # non-negative numbers is at most 1, so scikit-learn's last step has nothing to do.
        out = np.array([mapped])
        total = np.add.reduce(out, axis=1, keepdims=True)
        if total[0, 0] == 0:
            return np.full_like(out, 1.0 / self.n_classes)
        return np.divide(out, total, out=out)

    def _isotonic_row(self, raw: list[float]) -> list[float]:
        out = []
        for v, (x, y, slope) in zip(raw, self._lists, strict=True):
            if v <= x[0]:
                out.append(y[0])
            elif v >= x[-1]:
                out.append(y[-1])
            else:
                j = bisect_right(x, v) - 1
                out.append(slope[j] * (v - x[j]) + y[j])
        return out

    def _sigmoid_row(self, raw: list[float]) -> list[float]:
        # scipy's expit(t) is 1 / (1 + exp(-t)), and t = -(a f + b): the same doubles.
        out = []
        for f, a, b in zip(raw, self.a, self.b, strict=True):
            try:
                out.append(1.0 / (1.0 + math.exp(a * f + b)))
            except OverflowError:  # exp past the largest double: 1 / (1 + inf)
                out.append(0.0)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; Python's float repr reads back to the same float, so the round trip is
        exact."""
        return {
            "method": self.method,
            "n_classes": self.n_classes,
            "thresholds": [list(x) for x in self.thresholds],
            "values": [list(y) for y in self.values],
            "a": list(self.a),
            "b": list(self.b),
            "beta": self.beta,
            "rows": self.rows,
            "why": self.why,
            "scores": dict(self.scores),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            method=str(data["method"]),
            n_classes=int(data["n_classes"]),
            thresholds=tuple(tuple(float(v) for v in x) for x in data.get("thresholds", ())),
            values=tuple(tuple(float(v) for v in y) for y in data.get("values", ())),
            a=tuple(float(v) for v in data.get("a", ())),
            b=tuple(float(v) for v in data.get("b", ())),
            beta=float(data.get("beta", 1.0)),
            rows=int(data.get("rows", 0)),
            why=str(data.get("why", "")),
            scores={str(k): float(v) for k, v in data.get("scores", {}).items()},
        )


def _mapped_columns(n_classes: int) -> int:
    return 1 if n_classes == 2 else n_classes


def _normalized(mapped: np.ndarray) -> np.ndarray:
    """Each row divided by its sum, in place; a row of zeros becomes uniform (1/k each)."""
    total = np.add.reduce(mapped, axis=1, keepdims=True)
    if not total.all():
        empty = total[:, 0] == 0
        mapped[empty] = 1.0
        total[empty] = mapped.shape[1]
    return np.divide(mapped, total, out=mapped)


def fit_map(raw_proba: np.ndarray, y: np.ndarray, classes: np.ndarray, method: str) -> Calibration:
    """The `method` map fitted on all of (`raw_proba`, `y`), as `CalibratedClassifierCV` fits
    it on a frozen estimator whose `classes_` are `classes`."""
    # scikit-learn is imported here, not by serving, which only applies maps.
    from sklearn.calibration import _SigmoidCalibration, _TemperatureScaling
    from sklearn.isotonic import IsotonicRegression
    from sklearn.preprocessing import label_binarize

    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; one of {METHODS}")
    raw = np.asarray(raw_proba, dtype=np.float64)
    classes = np.asarray(classes)
    k = len(classes)
    if method == "temperature":
        p = np.column_stack((1.0 - raw[:, 1], raw[:, 1])) if k == 2 else raw
        # Labels as class indices: what scikit-learn passes for text labels, and the labels
        # themselves when the classes are 0..k-1.
        index = {c: i for i, c in enumerate(classes.tolist())}
        codes = np.array([index[c] for c in np.asarray(y).tolist()])
        beta = _TemperatureScaling().fit(p, codes).beta_
        return Calibration("temperature", k, beta=float(beta), rows=len(raw))
    onehot = label_binarize(y, classes=classes)  # (n, 1) for two classes: the positive one
    columns = [1] if k == 2 else list(range(k))
    fitted: list[Any] = []
    for target, col in enumerate(columns):
        calibrator = (
            IsotonicRegression(out_of_bounds="clip")
            if method == "isotonic"
            else _SigmoidCalibration()
        )
        fitted.append(calibrator.fit(raw[:, col], onehot[:, target]))
    if method == "isotonic":
        return Calibration(
            "isotonic",
            k,
            thresholds=tuple(tuple(float(v) for v in c.X_thresholds_) for c in fitted),
            values=tuple(tuple(float(v) for v in c.y_thresholds_) for c in fitted),
            rows=len(raw),
        )
    return Calibration(
        "sigmoid",
        k,
        a=tuple(float(c.a_) for c in fitted),
        b=tuple(float(c.b_) for c in fitted),
        rows=len(raw),
    )


def folds(y: np.ndarray, classes: np.ndarray, n_folds: int = FOLDS) -> np.ndarray:
    """Each row's fold: the rows of each class dealt in turn to 0, 1, …, n_folds-1.

    Deterministic (no random state) and stratified, so every fold holds each class in its
    proportion. The calibration rows already come in an order set by a hash of their ids.
    """
    fold = np.zeros(len(y), dtype=np.int64)
    for cls in classes:
        rows = np.flatnonzero(y == cls)
        fold[rows] = np.arange(len(rows)) % n_folds
    return fold


def out_of_fold_log_loss(
    raw_proba: np.ndarray, y: np.ndarray, classes: np.ndarray, method: str
) -> float:
    """Log-loss of `method` on each fold's rows, fitted on the other folds' rows ("none": of
    the raw probabilities)."""
    from sklearn.metrics import log_loss

    raw = np.asarray(raw_proba, dtype=np.float64)
    if method == "none":
        return float(log_loss(y, np.clip(raw, _EPS, 1), labels=classes))
    fold = folds(y, classes)
    out = np.empty_like(raw)
    for f in np.unique(fold):
        held = fold == f
        out[held] = fit_map(raw[~held], y[~held], classes, method).apply(raw[held])
    return float(log_loss(y, np.clip(out, _EPS, 1), labels=classes))


def unfit_reason(y_cal: np.ndarray, classes: Sequence[Any] | np.ndarray) -> str | None:
    """Why these calibration labels can't calibrate, or None when they can: a single class,
    fewer than `MIN_ROWS` rows, or a class without a row."""
    y = np.asarray(y_cal)
    if len(classes) < 2:
        return "a single class: its probability is 1 whatever the map"
    if len(y) < MIN_ROWS:
        return f"{len(y)} calibration rows, fewer than {MIN_ROWS}"
    missing = [c for c in classes if not np.any(y == c)]
    if missing:
        return f"no calibration rows of class {', '.join(str(c) for c in missing[:5])}"
    return None


def fit_calibration(
    raw_proba_cal: np.ndarray,
    y_cal: np.ndarray,
    classes: Sequence[Any] | np.ndarray,
    methods: Sequence[str] = METHODS,
) -> Calibration:
    """The calibration map for an estimator, from its raw probabilities on calibration rows it
    was not trained on.

    Each of `methods` is scored by its log-loss out of fold (`FOLDS` stratified folds of the
    calibration rows) and the best (the earlier on a tie) is refitted on every calibration
    row; `scores` keeps every figure, and that of the raw probabilities. The identity is
    returned, with the reason in `why`, when there are fewer than `MIN_ROWS` rows or a class
    has none (a map for a class never seen would be a constant).
    """
    classes = np.asarray(classes)
    y = np.asarray(y_cal)
    raw = np.asarray(raw_proba_cal, dtype=np.float64)
    k = len(classes)
    why_not = unfit_reason(y, classes)
    if why_not is not None:
        return Calibration.identity(k, why_not, len(y))
    scores = {m: out_of_fold_log_loss(raw, y, classes, m) for m in ("none", *methods)}
    best = min(methods, key=lambda m: scores[m])
    chosen = fit_map(raw, y, classes, best)
    shown = ", ".join(f"{m} {v:.4f}" for m, v in scores.items())
    why = f"lowest out-of-fold log-loss, {FOLDS} folds of {len(y)} rows ({shown})"
    return Calibration(
        chosen.method,
        k,
        thresholds=chosen.thresholds,
        values=chosen.values,
        a=chosen.a,
        b=chosen.b,
        beta=chosen.beta,
        rows=len(y),
        why=why,
        scores=scores,
    )


def expected_calibration_error(
    proba: np.ndarray, y: np.ndarray, classes: np.ndarray, bins: int = 10
) -> float:
    """Top-label ECE: |accuracy - confidence| averaged over equal-width confidence bins."""
    conf = proba.max(axis=1)
    right = classes[proba.argmax(axis=1)] == y
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.mean() * abs(right[mask].mean() - conf[mask].mean())
    return float(total)


def reliability_curve(
    proba: np.ndarray, y: np.ndarray, classes: np.ndarray, bins: int = 10
) -> dict[str, Any]:
    """The top-label reliability diagram: per equal-width confidence bin (the bins of
    `expected_calibration_error`), its bounds, row count, mean confidence and accuracy.

    Every bin is listed; an empty one has a count of 0 and no confidence or accuracy (None).
    """
    conf = proba.max(axis=1)
    right = classes[proba.argmax(axis=1)] == y
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        mask = idx == b
        n = int(mask.sum())
        rows.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": n,
                "confidence": float(conf[mask].mean()) if n else None,
                "accuracy": float(right[mask].mean()) if n else None,
            }
        )
    return {"bins": rows, "ece": expected_calibration_error(proba, y, classes, bins), "n": len(y)}

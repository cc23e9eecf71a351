"""The champion's performance on a monitoring window, estimated before the labels arrive.

Each check estimates, from the calibrated probabilities the champion served in its window
(`pipelines.estimation`), the accuracy and macro-F1 it is getting (and precision, recall and
ROC-AUC for a binary model), each with a band for its sampling error; puts the realized figure
beside it wherever people labeled the window's predictions; and measures both against the
reference: the champion's own held-out figures, registered with it, so the reference resets on
every promotion. The rows go to `performance_estimates` under the check's run id, beside its
drift results.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.estimation import Estimate, drop, estimate, realized
from pipelines.serving.model import ServingModel
from pipelines.store import Store
from pipelines.store.windows import WindowBounds

HEADLINE = "accuracy"
"""The metric the retraining policy's harm trigger and the Overview card read."""


@dataclass
class WindowEstimate:
    """What one window says about the model that served it (see the module docstring)."""

    model_version: str
    calibrated: bool
    n_window: int
    n_labeled: int
    n_reference: int
    metrics: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "calibrated": self.calibrated,
            "n_window": self.n_window,
            "n_labeled": self.n_labeled,
            "n_reference": self.n_reference,
            "metrics": self.metrics,
        }

    def records(self, run: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One `performance_estimates` row per metric; `run` holds the check's own fields."""
        return [
            {
                **run,
                "model_version": self.model_version,
                "n_window": self.n_window,
                "metric": name,
                "estimated": m["estimated"],
                "low": m["low"],
                "high": m["high"],
                "std": m["std"],
                "realized": m["realized"],
                "n_labeled": self.n_labeled,
                "reference": m["reference"],
                "n_reference": self.n_reference,
                "calibrated": self.calibrated,
            }
            for name, m in self.metrics.items()
        ]


def estimate_window(
    store: Store,
    bounds: WindowBounds,
    model: ServingModel,
    reference: Mapping[str, float],
    *,
    calibrated: bool,
) -> WindowEstimate | None:
    """Estimate `model`'s performance on the window's predictions it served (None when it
    served none there). `reference` is its registered held-out metrics (with `n_test`)."""
    proba, labels = store.window_probabilities(bounds, model.version, len(model.classes))
    if len(proba) == 0:
        return None
    index = {text: i for i, text in enumerate(model.class_texts)}
    known = [(row, index[label]) for row, label in enumerate(labels) if label in index]
    rows = np.fromiter((r for r, _ in known), dtype=np.int64, count=len(known))
    truth = np.fromiter((t for _, t in known), dtype=np.int64, count=len(known))
    seen = realized(proba[rows], truth)
    n_reference = int(reference.get("n_test") or 0)
    metrics: dict[str, dict[str, float | None]] = {}
    for name, est in estimate(proba).metrics().items():
        ref = reference.get(name)
        entry: dict[str, float | None] = {
            "estimated": est.value,
            "low": est.low,
            "high": est.high,
            "std": est.std,
            "realized": seen.get(name),
            "reference": float(ref) if ref is not None else None,
        }
        if ref is not None and n_reference > 0:
            gap = drop(float(ref), n_reference, est)
            entry |= {"drop": gap.value, "drop_low": gap.low, "drop_high": gap.high}
        metrics[name] = entry
    return WindowEstimate(model.version, calibrated, len(proba), len(known), n_reference, metrics)


def checks(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`performance_estimates` rows (one per check and metric) as one dict per check, oldest
    first, with the drop from the reference and its band recomputed from the stored figures."""
    grouped: dict[str, dict[str, Any]] = {}
    for row in rows:
        check = grouped.setdefault(
            row["run_id"],
            {
                key: row[key]
                for key in (
                    "run_id",
                    "ts",
                    "model_version",
                    "window_start",
                    "window_end",
                    "n_window",
                    "n_labeled",
                    "n_reference",
                    "calibrated",
                    "trigger",
                )
            }
            | {"metrics": {}},
        )
        entry = {k: row[k] for k in ("estimated", "low", "high", "std", "realized", "reference")}
        if row["reference"] is not None and row["n_reference"]:
            stored = Estimate(row["estimated"], row["low"], row["high"], row["std"] or 0.0)
            gap = drop(row["reference"], row["n_reference"], stored)
            entry |= {"drop": gap.value, "drop_low": gap.low, "drop_high": gap.high}
        check["metrics"][row["metric"]] = entry
    return sorted(grouped.values(), key=lambda c: (c["ts"] or dt.datetime.min, c["run_id"]))


def history(store: Store, runs: int = 50, model_version: str | None = None) -> list[dict[str, Any]]:
    """The latest `runs` checks' estimates, oldest first."""
    return checks(store.performance_history(runs, model_version))


def latest(store: Store, model_version: str | None = None) -> dict[str, Any] | None:
    """The most recent check's estimates (of `model_version` only, when given)."""
    found = history(store, 1, model_version)
    return found[-1] if found else None

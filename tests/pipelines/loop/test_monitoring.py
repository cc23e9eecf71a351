"""Live performance from feedback, checked against scikit-learn."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from pipelines.loop.monitoring import keep_window_memory, performance


def test_performance_matches_sklearn_on_the_labeled_part() -> None:
    rng = np.random.default_rng(3)
    classes = ["a", "b", "c"]
    pred = rng.choice(classes, size=500).tolist()
    true = rng.choice(classes, size=500).tolist()
    labels = [t if i % 3 else None for i, t in enumerate(true)]  # a third never got a label
    out = performance(pred, labels, classes)
    keep = [i for i, v in enumerate(labels) if v is not None]
    p = [pred[i] for i in keep]
    t = [true[i] for i in keep]
    assert out["n_labeled"] == len(keep)
    assert out["accuracy"] == pytest.approx(accuracy_score(t, p))
    assert out["macro_f1"] == pytest.approx(f1_score(t, p, average="macro", labels=classes))
    recalls = recall_score(t, p, average=None, labels=classes)
    for cls, rec in zip(classes, recalls, strict=True):
        row = out["per_class"][cls]
        assert row["support"] == t.count(cls)
        assert row["error_rate"] == pytest.approx(1 - rec)
        assert row["errors"] == sum(1 for a, b in zip(t, p, strict=True) if a == cls and b != cls)


def test_performance_without_labels() -> None:
    out = performance(["a", "b"], [None, None], ["a", "b"])
    assert out == {"n_labeled": 0, "accuracy": None, "macro_f1": None, "per_class": {}}


@pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt"
)
def test_checking_processes_keep_their_window_memory() -> None:
    assert keep_window_memory() is True  # both thresholds accepted by glibc

"""Performance estimation without labels, from calibrated probabilities (confidence-based, as
NannyML's CBPE), all pure.

Typical use, on a monitoring window's probabilities (columns in the model's class order)::

    est = estimate(proba)                    # est.accuracy.value, .low, .high; est.roc_auc, ...
    realized(proba[labeled], labels)         # the same metrics where labels arrived
    drop(reference_accuracy, reference_n, est.accuracy)   # how far below the reference
"""

from pipelines.estimation.cbpe import (
    Estimate,
    Estimates,
    drop,
    estimate,
    expected_confusion,
    realized,
)

__all__ = [
    "Estimate",
    "Estimates",
    "drop",
    "estimate",
    "expected_confusion",
    "realized",
]

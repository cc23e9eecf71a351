"""Drift detection: column profiles, statistical tests and the verdict, all pure.

Typical use (the reference profile is built once per champion model and reused)::

    profile = build_reference_profile(reference_df, numeric=[...], categorical=[...],
                                      roles={"prediction": "prediction"})
    report = check_drift(profile, current_df, DriftPolicy())
    report.dataset_drift, report.drift_share, report.to_records()
"""

from pipelines.drift.engine import (
    DriftPolicy,
    DriftReport,
    FeatureResult,
    adjust_p_values,
    check_drift,
    compare_frames,
    label_drift,
    prediction_drift,
)
from pipelines.drift.reference import (
    CategoricalProfile,
    NumericProfile,
    ReferenceProfile,
    build_reference_profile,
    profile_categorical,
    profile_column,
    profile_numeric,
)
from pipelines.drift.stattests import REGISTRY, DriftTest, StatResult, get_test, run_test

__all__ = [
    "REGISTRY",
    "CategoricalProfile",
    "DriftPolicy",
    "DriftReport",
    "DriftTest",
    "FeatureResult",
    "NumericProfile",
    "ReferenceProfile",
    "StatResult",
    "adjust_p_values",
    "build_reference_profile",
    "check_drift",
    "compare_frames",
    "get_test",
    "label_drift",
    "prediction_drift",
    "profile_categorical",
    "profile_column",
    "profile_numeric",
    "run_test",
]

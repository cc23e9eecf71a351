"""The drift check: run the tests on every column, correct for multiple testing, decide.

Verdict rules (the defaults, all in ``DriftPolicy``):

* A column drifts only if its change is both **significant** and **large enough**:
  the significance test's p-value, after multiple-testing correction across the columns of the
  check, is below ``alpha`` (0.05), AND the effect size reaches the kind's minimum (normalized
  Wasserstein ≥ 0.1 std for numeric columns, Jensen–Shannon distance ≥ 0.1 for categorical
  ones; both are Evidently's own default thresholds). At 1M rows a KS test flags shifts of a
  thousandth of a std; the effect-size floor keeps such harmless changes from raising alarms,
  and the p-value keeps small windows' sampling noise from looking like an effect.
* The correction is Benjamini–Hochberg by default ("bonferroni" and "none" are available).
* ``drift_share`` = drifted features / features with a verdict (as Evidently reports it).
* The dataset drifts, by default (``dataset_rule="any"``), when at least one feature drifts.
  Under the global null (no feature changed) BH rejects anything with probability at most
  ``alpha`` (it reduces to Simes' test; Bonferroni is always below ``alpha``), so this rule keeps
  dataset-level false alarms at or below 5% while one strongly shifted feature is enough to
  flag the dataset. ``dataset_rule="share"`` instead requires ``drift_share >= 0.3``; the
  share comparison is reported either way (``share_exceeded``), for a retraining policy.
* Prediction and label columns are tested with the same tests (class → categorical tests,
  probability → numeric tests) and corrected in the same family, but reported separately
  (``prediction_drift``, ``label_drift``): they do not count in the drift share.
* A column with fewer than ``min_samples`` (100) usable values on either side gets no verdict
  (status "insufficient_data", ``drifted`` False) and is left out of the correction and share.

Missing values (NaN, None, ±inf for numeric columns) are dropped per column; their share in the
current window is reported per column.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from pipelines.drift.reference import (
    ColumnProfile,
    Kind,
    ReferenceProfile,
    Role,
    build_reference_profile,
    column_names,
    column_values,
    num_rows,
    profile_column,
)
from pipelines.drift.stattests import StatResult, get_test, make_pair

logger = logging.getLogger(__name__)

Correction = Literal["bh", "bonferroni", "none"]
DatasetRule = Literal["any", "share"]

OK = "ok"
INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True)
class DriftPolicy:
    """How a check decides. The defaults are documented in this module's docstring.

    Attributes:
        alpha: Significance level applied to corrected p-values.
        correction: "bh" (Benjamini–Hochberg), "bonferroni" or "none".
        numeric_test: Registered test for numeric columns (p-value test or distance).
        categorical_test: Registered test for categorical columns.
        numeric_effect: Distance used as the numeric effect size, or None for no effect gate.
        categorical_effect: Distance used as the categorical effect size, or None.
        min_effect_numeric: Effect size a numeric column must reach to drift.
        min_effect_categorical: Effect size a categorical column must reach to drift.
        drift_share_threshold: Share of drifted features that ``dataset_rule="share"`` needs.
        dataset_rule: "any" (a drifted feature is enough) or "share".
        min_samples: Usable values needed on each side of a column for a verdict.
    """

    alpha: float = 0.05
    correction: Correction = "bh"
    numeric_test: str = "ks"
    categorical_test: str = "chisquare"
    numeric_effect: str | None = "wasserstein"
    categorical_effect: str | None = "jensenshannon"
    min_effect_numeric: float = 0.1
    min_effect_categorical: float = 0.1
    drift_share_threshold: float = 0.3
    dataset_rule: DatasetRule = "any"
    min_samples: int = 100

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be between 0 and 1")
        if self.correction not in ("bh", "bonferroni", "none"):
            raise ValueError(f"unknown correction {self.correction!r}")
        if self.dataset_rule not in ("any", "share"):
            raise ValueError(f"unknown dataset_rule {self.dataset_rule!r}")
        if self.min_samples < 1:
            raise ValueError("min_samples must be at least 1")
        get_test(self.numeric_test, "numeric")
        get_test(self.categorical_test, "categorical")
        effects: tuple[tuple[Kind, str | None], ...] = (
            ("numeric", self.numeric_effect),
            ("categorical", self.categorical_effect),
        )
        for kind, name in effects:
            if name is not None and get_test(name, kind).has_p_value:
                raise ValueError(f"effect size {name!r} must be a distance, not a p-value test")

    def test_for(self, kind: Kind) -> str:
        """Name of the main test for a column kind."""
        return self.numeric_test if kind == "numeric" else self.categorical_test

    def effect_for(self, kind: Kind) -> tuple[str | None, float]:
        """Name of the effect-size distance for a kind and the minimum it must reach."""
        if kind == "numeric":
            return self.numeric_effect, self.min_effect_numeric
        return self.categorical_effect, self.min_effect_categorical

    def describe(self) -> str:
        """One line naming the tests and the correction, stored with the results."""
        return (
            f"numeric={self.numeric_test}+{self.numeric_effect}>={self.min_effect_numeric}; "
            f"categorical={self.categorical_test}+{self.categorical_effect}"
            f">={self.min_effect_categorical}; {self.correction}@{self.alpha}; "
            f"dataset={self.dataset_rule}"
        )


@dataclass
class FeatureResult:
    """The outcome for one column.

    Attributes:
        feature: Column name.
        kind: "numeric" or "categorical".
        role: "feature", "prediction" or "label".
        test: Name of the main test.
        statistic: The main test's statistic (or distance).
        p_value: Raw p-value; None when the main test is a distance.
        p_adjusted: p-value after the multiple-testing correction; None likewise.
        effect_metric: Name of the effect-size distance (None if not gated on one).
        effect_size: Its value.
        threshold: What the main test was compared with: alpha, or the distance threshold.
        min_effect: What the effect size was compared with.
        drifted: The verdict (False when there is none).
        status: "ok", or "insufficient_data" when there is no verdict.
        n_reference: Usable reference values.
        n_current: Usable current values.
        missing_share: Share of missing values in the current window.
    """

    feature: str
    kind: Kind
    role: Role
    test: str
    statistic: float
    p_value: float | None
    p_adjusted: float | None
    effect_metric: str | None
    effect_size: float | None
    threshold: float
    min_effect: float | None
    drifted: bool
    status: str
    n_reference: int
    n_current: int
    missing_share: float


@dataclass
class DriftReport:
    """The outcome of one check.

    Attributes:
        features: One result per column, features first, in profile order.
        drift_share: Drifted features / features with a verdict (0 when none has one).
        dataset_drift: The dataset verdict under the policy's ``dataset_rule``.
        share_exceeded: Whether ``drift_share >= drift_share_threshold``.
        n_drifted: Number of drifted features.
        n_features: Features with a verdict.
        prediction_drift: Whether a prediction column drifted (None if none was checked).
        label_drift: Whether a label column drifted (None if none was checked).
        n_reference: Rows in the reference sample.
        n_current: Rows in the current window.
        method: The policy in one line.
        status: "ok", or "insufficient_data" when no feature got a verdict.
        policy: The policy used.
    """

    features: list[FeatureResult]
    drift_share: float
    dataset_drift: bool
    share_exceeded: bool
    n_drifted: int
    n_features: int
    prediction_drift: bool | None
    label_drift: bool | None
    n_reference: int
    n_current: int
    method: str
    status: str
    policy: DriftPolicy = field(repr=False)

    def to_records(self) -> list[dict[str, Any]]:
        """One flat dict per column, ready for the ``drift_results`` table."""
        return [asdict(f) for f in self.features]

    def summary(self) -> dict[str, Any]:
        """The dataset-level figures as a flat dict."""
        return {
            "drift_share": self.drift_share,
            "dataset_drift": self.dataset_drift,
            "share_exceeded": self.share_exceeded,
            "n_drifted": self.n_drifted,
            "n_features": self.n_features,
            "prediction_drift": self.prediction_drift,
            "label_drift": self.label_drift,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "method": self.method,
            "status": self.status,
        }

    def drifted_features(self) -> list[str]:
        """Names of the drifted features (predictions and labels excluded)."""
        return [f.feature for f in self.features if f.role == "feature" and f.drifted]

    def drifted_outputs(self) -> list[str]:
        """Names of the model's drifted outputs (prediction, class mix, confidence…): reported
        beside the features, never part of the drift share."""
        return [f.feature for f in self.features if f.role == "prediction" and f.drifted]


def adjust_p_values(p_values: Sequence[float], method: Correction = "bh") -> np.ndarray:
    """Multiple-testing adjusted p-values.

    Args:
        p_values: Raw p-values.
        method: "bh" (Benjamini–Hochberg step-up, as statsmodels' "fdr_bh"), "bonferroni"
            (times the number of tests, capped at 1) or "none".

    Returns:
        Adjusted p-values in the input order; compare them with alpha.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0 or method == "none":
        return p.copy()
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    if method != "bh":
        raise ValueError(f"unknown correction {method!r}")
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    # Step-up: each adjusted value is the smallest scaled value at its rank or above.
    monotone = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(monotone, 1.0)
    return adjusted


def check_drift(
    reference: ReferenceProfile,
    current: Any,
    policy: DriftPolicy | None = None,
    n_jobs: int | None = None,
) -> DriftReport:
    """Compare a current window with a reference profile.

    Args:
        reference: The profile from ``build_reference_profile`` (built once, reused).
        current: A pandas DataFrame, pyarrow Table or mapping of column → array holding at
            least the profiled columns; other columns are ignored.
        policy: Tests, thresholds and rules; ``DriftPolicy()`` by default.
        n_jobs: Threads for the per-column work (numpy releases the GIL while sorting and
            merging); defaults to the number of CPUs.

    Returns:
        A DriftReport.
    """
    policy = policy or DriftPolicy()
    missing = set(reference.columns) - set(column_names(current))
    if missing:
        raise KeyError(f"current data lacks profiled columns: {sorted(missing)}")
    names = list(reference.columns)
    workers = max(1, min(n_jobs or os.cpu_count() or 1, len(names)))

    def measure(name: str) -> FeatureResult:
        ref_profile = reference.columns[name]
        values = column_values(current, name)
        cur_profile = profile_column(values, ref_profile.kind, reference.n_bins)
        return _measure_column(name, reference.roles[name], ref_profile, cur_profile, policy)

    if workers == 1:
        results = [measure(name) for name in names]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(measure, names))
    report = _decide(results, policy, reference.n_rows, num_rows(current))
    logger.info(
        "drift check: %d/%d features drifted (share %.2f), dataset_drift=%s",
        report.n_drifted,
        report.n_features,
        report.drift_share,
        report.dataset_drift,
    )
    return report


def compare_frames(
    reference: Any,
    current: Any,
    numeric: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    roles: Mapping[str, Role] | None = None,
    policy: DriftPolicy | None = None,
) -> DriftReport:
    """Profile ``reference`` and check ``current`` against it, for a single check.

    A monitor that checks again and again builds the profile once instead
    (``build_reference_profile``) and passes it to ``check_drift``.
    """
    profile = build_reference_profile(reference, numeric, categorical, roles)
    return check_drift(profile, current, policy)


def prediction_drift(
    reference: Any,
    current: Any,
    output: Literal["class", "probability"] = "class",
    policy: DriftPolicy | None = None,
) -> FeatureResult:
    """Drift of a model's output: class labels (categorical tests) or a probability (numeric).

    For several class probabilities, profile one column per class with role "prediction" and
    use ``check_drift``, which corrects them together.
    """
    kind: Kind = "categorical" if output == "class" else "numeric"
    return _single_column("prediction", "prediction", kind, reference, current, policy)


def label_drift(
    reference: Any,
    current: Any,
    kind: Kind = "categorical",
    policy: DriftPolicy | None = None,
) -> FeatureResult:
    """Drift of the ground truth: class labels (categorical) or a regression target (numeric)."""
    return _single_column("label", "label", kind, reference, current, policy)


def _single_column(
    name: str, role: Role, kind: Kind, reference: Any, current: Any, policy: DriftPolicy | None
) -> FeatureResult:
    policy = policy or DriftPolicy()
    ref_profile = reference if hasattr(reference, "kind") else profile_column(reference, kind)
    cur_profile = current if hasattr(current, "kind") else profile_column(current, kind)
    result = _measure_column(name, role, ref_profile, cur_profile, policy)
    return _decide([result], policy, ref_profile.n, cur_profile.n).features[0]


def _measure_column(
    name: str, role: Role, ref: ColumnProfile, cur: ColumnProfile, policy: DriftPolicy
) -> FeatureResult:
    """Run the main test and the effect size; the verdict waits for the correction."""
    kind = ref.kind
    test = get_test(policy.test_for(kind), kind)
    effect_name, min_effect = policy.effect_for(kind)
    threshold = policy.alpha if test.has_p_value else test.default_threshold
    result = FeatureResult(
        feature=name,
        kind=kind,
        role=role,
        test=test.name,
        statistic=float("nan"),
        p_value=None,
        p_adjusted=None,
        effect_metric=effect_name,
        effect_size=None,
        threshold=threshold,
        min_effect=min_effect if effect_name else None,
        drifted=False,
        status=INSUFFICIENT_DATA,
        n_reference=ref.n,
        n_current=cur.n,
        missing_share=cur.missing_share,
    )
    if min(ref.n, cur.n) < policy.min_samples:
        return result
    pair = make_pair(ref, cur, kind)
    main: StatResult = test.func(pair)
    result.statistic, result.p_value, result.status = main.statistic, main.p_value, OK
    if effect_name:
        result.effect_size = get_test(effect_name, kind).func(pair).statistic
    return result


def _decide(
    results: list[FeatureResult], policy: DriftPolicy, n_reference: int, n_current: int
) -> DriftReport:
    """Correct the p-values across the columns with a verdict, then apply the rules."""
    judged = [r for r in results if r.status == OK]
    tested = [r for r in judged if r.p_value is not None]
    adjusted = adjust_p_values([r.p_value for r in tested], policy.correction)  # type: ignore[misc]
    for r, p_adj in zip(tested, adjusted, strict=True):
        r.p_adjusted = float(p_adj)
    for r in judged:
        significant = (
            r.p_adjusted < policy.alpha if r.p_adjusted is not None else r.statistic >= r.threshold
        )
        large = r.effect_size is None or r.min_effect is None or r.effect_size >= r.min_effect
        r.drifted = bool(significant and large)

    features = [r for r in judged if r.role == "feature"]
    n_drifted = sum(r.drifted for r in features)
    share = n_drifted / len(features) if features else 0.0
    share_exceeded = bool(features) and share >= policy.drift_share_threshold
    dataset_drift = n_drifted > 0 if policy.dataset_rule == "any" else share_exceeded

    def any_drift(role: Role) -> bool | None:
        of_role = [r for r in judged if r.role == role]
        return any(r.drifted for r in of_role) if of_role else None

    ordered = sorted(results, key=lambda r: r.role != "feature")  # stable: profile order kept
    return DriftReport(
        features=ordered,
        drift_share=share,
        dataset_drift=bool(dataset_drift),
        share_exceeded=bool(share_exceeded),
        n_drifted=n_drifted,
        n_features=len(features),
        prediction_drift=any_drift("prediction"),
        label_drift=any_drift("label"),
        n_reference=n_reference,
        n_current=n_current,
        method=policy.describe(),
        status=OK if judged else INSUFFICIENT_DATA,
        policy=policy,
    )

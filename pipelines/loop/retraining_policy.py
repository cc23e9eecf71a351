"""When to retrain, and whether the new model may replace the champion. Pure: no I/O.

``decide(conditions, policy)``: a retrain is due when any of these holds:

1. **Harm with labels to learn from**: the champion's accuracy dropped from its held-out
   (reference) accuracy by at least ``estimated_drop``, with a band that excludes zero, either
   as estimated from the window's calibrated probabilities (``pipelines.estimation``, no labels
   needed) or as realized on ``min_feedback`` or more labeled predictions; AND at least
   ``min_new_labels`` labels arrived since the champion was trained (retraining without them
   would refit on the same data as before).
2. **Drift with labels to learn from**: the drift check flagged the dataset, or the drift share
   reached ``drift_share_threshold`` (≥, as the drift engine's ``share_exceeded``), AND the new
   labels. Both count the model's inputs only; drift of its outputs (predicted class mix,
   confidence, detections per image) is reported beside them and counts as drift only with
   ``output_drift`` on. With ``retrain_on="impact"`` (the default) drift counts only together
   with harm (1): drift persists after a model has adapted to it, and a model that is not hurt
   gains nothing from a retrain; the decision then says "drift without estimated impact".
   Without any estimate (a model that logs no probabilities), drift counts as under
   ``retrain_on="drift"``.
3. **Recurring errors**: some class collected ``fail_threshold`` or more errors in labels and
   feedback.
4. **Live accuracy below the floor**, measured on at least ``min_feedback`` labeled predictions
   (fewer would let two unlucky answers trigger a retrain). Concept shift (the same inputs now
   meaning another class) shows here and in 3, never in an estimate made from probabilities.

A raw p-value alone never triggers: at large windows every feature's p-value is tiny. The drift
engine already combines corrected p-values with effect sizes into ``dataset_drift``; the minimum
p-value is carried for display only.

Nothing starts while a retrain is running or within ``cooldown_s`` of the last one; those are
reported as ``blocked_by``, separately from the reasons, so the dashboard can say both "a retrain
is due" and "but waits for the cooldown".

The promotion gate, which the same policy parameterizes, is `pipelines.loop.promotion_gate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.estimation import Estimate, drop

__all__ = ["Conditions", "Decision", "RetrainPolicy", "accuracy_drop", "decide"]

# Metrics are floats computed on finite test sets: a delta that equals the threshold in decimals
# (0.815 − 0.810) must not lose to binary rounding (0.00499999…).
_EPS = 1e-9


@dataclass(frozen=True)
class RetrainPolicy:
    """Thresholds of the retraining decision and the promotion gate.

    Attributes:
        min_new_labels: Labels that must have arrived since the champion was trained before
            drift triggers a retrain.
        drift_share_threshold: Drifted-feature share counted as drift (also
            ``Settings.drift_share_threshold``).
        fail_threshold: Errors on one class that alone trigger a retrain. 10 rather than 1
            keeps a few mislabeled answers from retraining the model.
        accuracy_floor: Live accuracy (from feedback) below this triggers a retrain.
        min_feedback: Labeled predictions needed before the live accuracy counts. At 30 the
            standard error of an accuracy near the 0.6 floor is about 0.09.
        cooldown_s: Seconds after a retrain during which no other starts, so one burst of drift
            or feedback does not queue retrain after retrain (twice the worker's default
            check interval).
        gate_margin: How much the challenger must beat the champion by on the primary metric.
            0.005 rejects ties and rounding-level gains, which would only churn versions; it is
            not a significance test (a paired test would need the predictions, not the metrics).
        class_tolerance: The most any class's recall may drop, plus two standard errors of
            that recall when its support is known (``sampling_noise``): 0.05 on a large class,
            more on a class with a handful of held-out rows, where one row moves the recall
            by more than the tolerance.
        primary_metric: The metric the margin applies to, a key of ``training.evaluate``;
            macro-F1 weighs every class equally, so a majority-class gain cannot hide a loss.
        retrain_on: "impact": drift triggers only with a significant drop (see the module
            docstring); "drift": drift and new labels are enough.
        estimated_drop: The accuracy drop from the reference that counts as harm (when its
            band excludes zero too).
        output_drift: Whether drift of the model's outputs counts as drift on its own (off:
            outputs follow the inputs, and a shifted class mix can be the world changing
            rather than the model failing).
    """

    min_new_labels: int = 50
    drift_share_threshold: float = 0.3
    fail_threshold: int = 10
    accuracy_floor: float = 0.6
    min_feedback: int = 30
    cooldown_s: float = 600.0
    gate_margin: float = 0.005
    class_tolerance: float = 0.05
    primary_metric: str = "macro_f1"
    retrain_on: str = "impact"
    estimated_drop: float = 0.05
    output_drift: bool = False

    def __post_init__(self) -> None:
        if self.retrain_on not in ("impact", "drift"):
            raise ValueError(f"retrain_on must be 'impact' or 'drift', got {self.retrain_on!r}")
        for name in ("min_new_labels", "fail_threshold", "min_feedback", "cooldown_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in (
            "drift_share_threshold",
            "accuracy_floor",
            "class_tolerance",
            "estimated_drop",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.gate_margin < 0:
            raise ValueError("gate_margin must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: Any) -> RetrainPolicy:
        """The policy configured by `Settings` (`DRIFTLAB_RETRAIN_*`, `DRIFTLAB_GATE_*`)."""
        return cls(
            min_new_labels=settings.retrain_min_new_labels,
            drift_share_threshold=settings.drift_share_threshold,
            fail_threshold=settings.retrain_fail_threshold,
            accuracy_floor=settings.retrain_accuracy_floor,
            min_feedback=settings.retrain_min_feedback,
            cooldown_s=settings.retrain_cooldown,
            gate_margin=settings.gate_margin,
            class_tolerance=settings.gate_class_tolerance,
            primary_metric=settings.gate_metric,
            retrain_on=settings.retrain_on,
            estimated_drop=settings.retrain_estimated_drop,
            output_drift=settings.retrain_on_output_drift,
        )


@dataclass(frozen=True)
class Conditions:
    """The figures a decision is made from, gathered by the caller.

    Attributes:
        now: Current time, epoch seconds.
        dataset_drift: The drift check's dataset verdict.
        drift_share: Drifted features / features with a verdict.
        drifted_features: Names of the drifted features, for the reason text.
        drifted_outputs: Names of the model's drifted outputs (not in ``drift_share``).
        min_p_value: Smallest corrected p-value of the check (display only).
        new_labels: Labels that arrived since the champion was trained.
        errors_per_class: Wrong predictions per true class, from labels and feedback.
        live_accuracy: Accuracy on predictions with feedback; None when there is none.
        n_feedback: How many predictions ``live_accuracy`` was measured on.
        champion_accuracy: The champion's held-out accuracy: the reference a drop is measured
            from.
        n_reference: How many held-out rows ``champion_accuracy`` was measured on.
        estimated_accuracy: The latest check's accuracy estimated from the champion's
            probabilities on its window; None without one.
        estimated_drop: ``champion_accuracy`` minus the estimate, and ``estimated_drop_low``
            and ``estimated_drop_high`` the ends of its band.
        last_retrain_at: When the last retrain started, epoch seconds; None if never.
        running: Whether a retrain is in progress.
        rollout: The running rollout in words ("shadow of v7 beside v6"); None without one.
            A retrain waits for its verdict: a newer challenger would replace it unjudged.
    """

    now: float
    dataset_drift: bool = False
    drift_share: float = 0.0
    drifted_features: tuple[str, ...] = ()
    drifted_outputs: tuple[str, ...] = ()
    min_p_value: float | None = None
    new_labels: int = 0
    errors_per_class: Mapping[str, int] = field(default_factory=dict)
    live_accuracy: float | None = None
    n_feedback: int = 0
    champion_accuracy: float | None = None
    n_reference: int = 0
    estimated_accuracy: float | None = None
    estimated_drop: float | None = None
    estimated_drop_low: float | None = None
    estimated_drop_high: float | None = None
    last_retrain_at: float | None = None
    running: bool = False
    rollout: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_features"] = list(self.drifted_features)
        out["drifted_outputs"] = list(self.drifted_outputs)
        out["errors_per_class"] = dict(self.errors_per_class)
        return out


@dataclass
class Decision:
    """The verdict of ``decide``.

    Attributes:
        should_retrain: True when some reason holds and nothing blocks.
        reasons: One sentence per trigger that holds, with its figures and thresholds.
        blocked_by: One sentence per thing that prevents a retrain right now.
        not_met: Triggers that were close but did not hold (drift without enough labels,
            low accuracy on too little feedback), so "why not?" has an answer too.
    """

    should_retrain: bool
    reasons: list[str] = field(default_factory=list)
    blocked_by: list[str] = field(default_factory=list)
    not_met: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(conditions: Conditions, policy: RetrainPolicy | None = None) -> Decision:
    """Whether to retrain now, and why (or why not).

    Args:
        conditions: The current figures.
        policy: The thresholds; the defaults when None.
    """
    p = policy or RetrainPolicy()
    c = conditions
    reasons: list[str] = []
    not_met: list[str] = []

    enough = c.new_labels >= p.min_new_labels
    labels = f"{c.new_labels} new labels {'≥' if enough else '<'} {p.min_new_labels}"
    drift = _describe_drift(c, p)
    harm, figures = _describe_harm(c, p)
    if harm:
        text = f"{harm} with {drift}" if drift else harm
        (reasons if enough else not_met).append(f"{text} and {labels}")
    elif drift and (p.retrain_on == "drift" or c.estimated_drop is None):
        (reasons if enough else not_met).append(f"{drift} and {labels}")
    elif drift:
        not_met.append(f"drift without estimated impact: {drift}, but {figures}")

    failing = sorted(
        ((n, str(cls)) for cls, n in c.errors_per_class.items() if n >= p.fail_threshold),
        key=lambda t: (-t[0], t[1]),
    )
    if failing:
        listed = ", ".join(f"{cls!r} {n}" for n, cls in failing)
        reasons.append(f"errors per class ≥ {p.fail_threshold}: {listed}")

    if c.live_accuracy is not None and c.live_accuracy < p.accuracy_floor:
        enough = c.n_feedback >= p.min_feedback
        text = f"live accuracy {c.live_accuracy:.2f} < floor {p.accuracy_floor:.2f}"
        if c.champion_accuracy is not None:
            text += f" (held-out {c.champion_accuracy:.2f})"
        count = f"{c.n_feedback} labeled predictions {'≥' if enough else '<'} {p.min_feedback}"
        (reasons if enough else not_met).append(f"{text} on {count}")

    blocked_by: list[str] = []
    if c.running:
        blocked_by.append("a retrain is already running")
    if c.rollout is not None:
        blocked_by.append(f"a rollout is running ({c.rollout}): its live test decides first")
    if c.last_retrain_at is not None:
        elapsed = c.now - c.last_retrain_at
        # A negative elapsed time (clock skew) also waits: retraining too often is the risk.
        if elapsed < p.cooldown_s:
            blocked_by.append(
                f"last retrain {elapsed:.0f} s ago < cooldown {p.cooldown_s:.0f} s "
                f"(ready in {p.cooldown_s - elapsed:.0f} s)"
            )

    return Decision(
        should_retrain=bool(reasons) and not blocked_by,
        reasons=reasons,
        blocked_by=blocked_by,
        not_met=not_met,
    )


def accuracy_drop(
    reference: float, n_reference: int, observed: float, n_observed: int, z: float = 1.96
) -> tuple[float, float, float]:
    """``reference − observed`` and its band: both accuracies are binomial proportions, their
    standard errors add in quadrature (normal approximation, as `estimation.drop` combines an
    estimate with its reference)."""
    seen = Estimate.from_std(observed, math.sqrt(observed * (1 - observed) / max(n_observed, 1)), z)
    gap = drop(reference, max(n_reference, 1), seen, z=z)
    return gap.value, gap.low, gap.high


def _describe_harm(c: Conditions, p: RetrainPolicy) -> tuple[str | None, str]:
    """The harm half of trigger 1 as text (None when no drop is significant), and the drop
    figures in words either way (what "drift without estimated impact" shows)."""
    found: list[str] = []
    seen: list[str] = []
    if c.estimated_drop is not None:
        low, high = c.estimated_drop_low, c.estimated_drop_high
        band = f"band {low:+.3f} to {high:+.3f}" if low is not None and high is not None else ""
        text = f"estimated accuracy drop {c.estimated_drop:+.3f} ({band})"
        significant = c.estimated_drop >= p.estimated_drop - _EPS and (low or 0.0) > 0
        (found if significant and low is not None else seen).append(text)
    if (
        c.live_accuracy is not None
        and c.champion_accuracy is not None
        and c.n_feedback >= p.min_feedback
        and c.n_reference > 0
    ):
        gap, low, high = accuracy_drop(
            c.champion_accuracy, c.n_reference, c.live_accuracy, c.n_feedback
        )
        text = f"realized accuracy drop {gap:+.3f} (band {low:+.3f} to {high:+.3f})"
        (found if gap >= p.estimated_drop - _EPS and low > 0 else seen).append(text)
    if found:
        return " and ".join(found) + f" ≥ {p.estimated_drop:.3f}", ""
    figures = " and ".join(seen) if seen else "no estimate of the drop"
    return None, f"{figures}: not a significant drop of {p.estimated_drop:.3f} or more"


def _describe_drift(c: Conditions, p: RetrainPolicy) -> str | None:
    """The drift half of trigger 1 as text, or None when there is no drift."""
    parts = []
    if c.dataset_drift:
        features = ", ".join(c.drifted_features[:5])
        more = len(c.drifted_features) - 5
        if more > 0:
            features += f" and {more} more"
        parts.append(f"dataset drift ({features})" if features else "dataset drift")
    if c.drift_share >= p.drift_share_threshold:
        parts.append(f"drift share {c.drift_share:.2f} ≥ {p.drift_share_threshold:.2f}")
    if c.drifted_outputs and p.output_drift:
        parts.append(f"output drift ({', '.join(c.drifted_outputs[:5])})")
    return " with ".join(parts) if parts else None

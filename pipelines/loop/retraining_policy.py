"""When to retrain, and whether the new model may replace the champion. Pure: no I/O.

``decide(conditions, policy)``: a retrain is due when any of these holds:

1. **Drift with labels to learn from**: the drift check flagged the dataset, or the drift share
   reached ``drift_share_threshold`` (≥, as the drift engine's ``share_exceeded``), AND at least
   ``min_new_labels`` labels arrived since the champion was trained. Retraining on drift alone
   would refit on the same data as before.
2. **Recurring errors**: some class collected ``fail_threshold`` or more errors in labels and
   feedback.
3. **Live accuracy below the floor**, measured on at least ``min_feedback`` labeled predictions
   (fewer would let two unlucky answers trigger a retrain).

A raw p-value alone never triggers: at large windows every feature's p-value is tiny. The drift
engine already combines corrected p-values with effect sizes into ``dataset_drift``; the minimum
p-value is carried for display only.

Nothing starts while a retrain is running or within ``cooldown_s`` of the last one; those are
reported as ``blocked_by``, separately from the reasons, so the dashboard can say both "a retrain
is due" and "but waits for the cooldown".

``gate(champion_metrics, challenger_metrics, policy)`` promotes a challenger only if it beats the
champion by ``gate_margin`` on the primary metric AND no class's recall drops by more than
``class_tolerance``, both measured on the same held-out data (the caller's guarantee). Missing or
non-numeric figures reject: a gate that cannot check does not pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "LOWER_IS_BETTER",
    "Conditions",
    "Decision",
    "FIXED",
    "GateResult",
    "RECENT",
    "RetrainPolicy",
    "decide",
    "gate",
    "gate_sets",
]

LOWER_IS_BETTER = frozenset({"log_loss", "ece"})
"""Metrics of ``training.evaluate`` where smaller is better; all others are higher-is-better."""

RECALL_PREFIX = "recall_"
SUPPORT_PREFIX = "support_"

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

    def __post_init__(self) -> None:
        for name in ("min_new_labels", "fail_threshold", "min_feedback", "cooldown_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("drift_share_threshold", "accuracy_floor", "class_tolerance"):
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
        )


@dataclass(frozen=True)
class Conditions:
    """The figures a decision is made from, gathered by the caller.

    Attributes:
        now: Current time, epoch seconds.
        dataset_drift: The drift check's dataset verdict.
        drift_share: Drifted features / features with a verdict.
        drifted_features: Names of the drifted features, for the reason text.
        min_p_value: Smallest corrected p-value of the check (display only).
        new_labels: Labels that arrived since the champion was trained.
        errors_per_class: Wrong predictions per true class, from labels and feedback.
        live_accuracy: Accuracy on predictions with feedback; None when there is none.
        n_feedback: How many predictions ``live_accuracy`` was measured on.
        champion_accuracy: The champion's held-out accuracy, shown next to the live one.
        last_retrain_at: When the last retrain started, epoch seconds; None if never.
        running: Whether a retrain is in progress.
    """

    now: float
    dataset_drift: bool = False
    drift_share: float = 0.0
    drifted_features: tuple[str, ...] = ()
    min_p_value: float | None = None
    new_labels: int = 0
    errors_per_class: Mapping[str, int] = field(default_factory=dict)
    live_accuracy: float | None = None
    n_feedback: int = 0
    champion_accuracy: float | None = None
    last_retrain_at: float | None = None
    running: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["drifted_features"] = list(self.drifted_features)
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


@dataclass
class GateResult:
    """The verdict of ``gate``.

    Attributes:
        promote: Whether the challenger may become champion.
        reasons: Every check's outcome as a sentence, failed ones first.
        deltas: Challenger minus champion for every metric both have.
        failures: How many of ``reasons`` (the first ones) are failed checks.
    """

    promote: bool
    reasons: list[str] = field(default_factory=list)
    deltas: dict[str, float] = field(default_factory=dict)
    failures: int = 0

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

    drift = _describe_drift(c, p)
    if drift:
        enough = c.new_labels >= p.min_new_labels
        labels = f"{c.new_labels} new labels {'≥' if enough else '<'} {p.min_new_labels}"
        (reasons if enough else not_met).append(f"{drift} and {labels}")

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
    return " with ".join(parts) if parts else None


def sampling_noise(recall: float, support: float | None) -> float:
    """Two standard errors of a recall measured on `support` rows (0 when unknown), the
    Agresti–Coull way.

    A class with 15 held-out rows moves its recall by 0.067 with one row: a drop that small is
    noise, not a regression. The gate allows a class to drop by the tolerance plus this much,
    so small classes are judged on what their rows can show and large ones on the tolerance.
    """
    if not support or support <= 0:
        return 0.0
    # Agresti–Coull: two pseudo-successes and two pseudo-failures, so that a recall of exactly
    # 1.0 on 7 rows does not claim zero uncertainty (the plain Wald error would).
    n = support + 4.0
    p = (recall * support + 2.0) / n
    return 2.0 * math.sqrt(p * (1.0 - p) / n)


def _number(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def gate(
    champion_metrics: Mapping[str, Any],
    challenger_metrics: Mapping[str, Any],
    policy: RetrainPolicy | None = None,
    *,
    margin: float | None = None,
) -> GateResult:
    """Whether the challenger may replace the champion.

    Both metric dicts come from ``training.evaluate`` on the same held-out data. There is no
    "first model" case here: with no champion there is nothing to gate, and the caller
    promotes directly.

    Args:
        champion_metrics: The champion's held-out metrics.
        challenger_metrics: The challenger's on the same data.
        policy: The thresholds; the defaults when None.
        margin: Overrides ``policy.gate_margin``; a negative margin is a non-inferiority
            check (the challenger may lose at most that much).
    """
    p = policy or RetrainPolicy()
    need = p.gate_margin if margin is None else margin
    failed: list[str] = []
    passed: list[str] = []

    deltas: dict[str, float] = {}
    for key in champion_metrics:
        old, new = _number(champion_metrics, key), _number(challenger_metrics, key)
        if old is not None and new is not None:
            deltas[key] = new - old

    m = p.primary_metric
    old, new = _number(champion_metrics, m), _number(challenger_metrics, m)
    if old is None or new is None:
        who = " and ".join(
            name for name, value in (("champion", old), ("challenger", new)) if value is None
        )
        failed.append(f"{m} missing or not a number for the {who}: cannot compare")
    else:
        lower = m in LOWER_IS_BETTER
        gain = old - new if lower else new - old
        text = (
            f"{m} {old:.4f} → {new:.4f} ({'lower is better, ' if lower else ''}"
            f"gain {gain:+.4f}, margin {need:.4f})"
        )
        (passed if gain >= need - _EPS else failed).append(text)

    champion_classes = [k for k in champion_metrics if k.startswith(RECALL_PREFIX)]
    if not champion_classes:
        failed.append("the champion has no per-class recall: cannot check that no class drops")
    class_failures = 0
    worst: tuple[float, str] | None = None  # the largest drop within the tolerance
    for key in champion_classes:
        cls = key[len(RECALL_PREFIX) :]
        old, new = _number(champion_metrics, key), _number(challenger_metrics, key)
        if old is None or new is None:
            side = "champion" if old is None else "challenger"
            failed.append(f"recall of class {cls!r} missing or not a number for the {side}")
            class_failures += 1
            continue
        drop = old - new
        allowed = p.class_tolerance + sampling_noise(
            old, _number(champion_metrics, SUPPORT_PREFIX + cls)
        )
        if drop > allowed + _EPS:
            failed.append(
                f"recall of class {cls!r} drops {old:.3f} → {new:.3f} "
                f"({-drop:+.3f}, allowed {allowed:.3f})"
            )
            class_failures += 1
        elif worst is None or drop > worst[0]:
            worst = (drop, cls)
    if worst is not None and not class_failures:
        passed.append(
            f"no class recall drops by more than {p.class_tolerance:.3f} "
            f"(largest change {-worst[0]:+.3f} on {worst[1]!r})"
        )
    for key in challenger_metrics:
        if key.startswith(RECALL_PREFIX) and key not in champion_metrics:
            passed.append(f"class {key[len(RECALL_PREFIX) :]!r} is new: no champion recall")

    return GateResult(
        promote=not failed, reasons=failed + passed, deltas=deltas, failures=len(failed)
    )


FIXED, RECENT = "fixed", "recent"
"""The evaluation sets of a retrain: rows held out of the original data, and held-out human
labels on recent predictions (the population the model currently serves)."""


def gate_sets(
    champion: Mapping[str, Mapping[str, Any]],
    challenger: Mapping[str, Mapping[str, Any]],
    policy: RetrainPolicy | None = None,
    *,
    min_recent: int = 30,
) -> GateResult:
    """The promotion gate over a retrain's two evaluation sets.

    With at least ``min_recent`` recent labeled rows, the challenger must beat the champion on
    them (where the drift is) by the margin, and must not lose more than ``class_tolerance`` on
    the fixed held-out rows (where the champion came from): superiority on the new population,
    non-inferiority on the old. With fewer recent rows, the plain ``gate`` on the fixed set
    decides. Each set maps to ``training.evaluate`` metrics plus ``n`` (its row count).

    Args:
        champion: ``{"fixed": metrics, "recent": metrics}``; "recent" may be absent.
        challenger: The same sets, evaluated for the challenger.
        policy: The thresholds; the defaults when None.
        min_recent: Recent rows needed before they decide.
    """
    p = policy or RetrainPolicy()
    n_recent = int(_number(champion.get(RECENT, {}), "n") or 0)
    if n_recent < min_recent:
        result = gate(champion.get(FIXED, {}), challenger.get(FIXED, {}), p)
        note = f"[{FIXED}] decides: {n_recent} recent labeled rows < {min_recent}"
        tagged = [f"[{FIXED}] {r}" for r in result.reasons]
        failed, passed = tagged[: result.failures], tagged[result.failures :]
        return GateResult(
            result.promote,
            [*failed, note, *passed],
            {f"{FIXED}.{k}": v for k, v in result.deltas.items()},
            result.failures,
        )
    better = gate(champion[RECENT], challenger.get(RECENT, {}), p)
    no_worse = gate(
        champion.get(FIXED, {}), challenger.get(FIXED, {}), p, margin=-p.class_tolerance
    )
    both = [(RECENT, better), (FIXED, no_worse)]
    failed = [f"[{t}] {r}" for t, res in both for r in res.reasons[: res.failures]]
    passed = [f"[{t}] {r}" for t, res in both for r in res.reasons[res.failures :]]
    deltas = {f"{t}.{k}": v for t, res in both for k, v in res.deltas.items()}
    return GateResult(better.promote and no_worse.promote, failed + passed, deltas, len(failed))

"""Whether a challenger may replace the champion. Pure: no I/O.

``gate(champion_metrics, challenger_metrics, policy)`` promotes a challenger only if it beats the
champion by ``gate_margin`` on the primary metric AND no class's recall drops by more than
``class_tolerance``, both measured on the same held-out data (the caller's guarantee). Missing or
non-numeric figures reject: a gate that cannot check does not pass. ``gate_sets`` applies it to
a retrain's two evaluation sets. The thresholds are the retraining policy's
(`pipelines.loop.retraining_policy.RetrainPolicy`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines.loop.retraining_policy import RetrainPolicy

__all__ = ["FIXED", "LOWER_IS_BETTER", "RECENT", "GateResult", "gate", "gate_sets"]

LOWER_IS_BETTER = frozenset({"log_loss", "ece"})
"""Metrics of ``training.evaluate`` where smaller is better; all others are higher-is-better."""

RECALL_PREFIX = "recall_"
SUPPORT_PREFIX = "support_"

# Metrics are floats computed on finite test sets: a delta that equals the threshold in decimals
# (0.815 − 0.810) must not lose to binary rounding (0.00499999…).
_EPS = 1e-9


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

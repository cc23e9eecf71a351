"""The live test of a rollout: is the challenger better, as good, or worse than the champion?

Pure functions of label counts, no store. Two designs:

* **Shadow, paired.** Both models answered the same requests, so each labeled request is a
  pair (champion right?, challenger right?). Only the discordant pairs carry information about
  which is better: `b` where only the champion was right, `c` where only the challenger was.
  The difference test is McNemar's exact test (a binomial test of `c` out of `b + c` against
  one half); non-inferiority within a margin is Tango's score test for the difference of
  paired proportions (Tango 1998), which at a zero margin is McNemar's z.
* **Canary, two samples.** Each arm answered its own requests. The difference test is
  Fisher's exact test on the 2×2 table of right/wrong per arm; non-inferiority is the
  Farrington–Manning score test for a difference of two proportions (its restricted maximum
  likelihood estimate in Miettinen and Nurminen's closed form), which at a zero margin is the
  pooled two-proportion z test.

**Looks.** Labels arrive over time and the test is read more than once. It looks at fixed
label counts, `budget · k / looks` for k = 1…looks, each on the first labels to arrive (so a
look's verdict never changes once reached), and each look tests at `alpha / looks`: by
Bonferroni, the chance of any false verdict over all looks stays below `alpha`. At the last
look without a verdict the challenger is stopped: the champion keeps serving.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from scipy import stats

Action = Literal["promote", "stop", "continue"]


@dataclass(frozen=True)
class Comparison:
    """The champion and the challenger on the same labels, tested.

    Attributes:
        test: "mcnemar_exact" (shadow) or "fisher_exact" (canary).
        counts: Shadow: `n` pairs, `b` only the champion right, `c` only the challenger
            right, `both` both right. Canary: `n_champion`, `right_champion`, `n_challenger`,
            `right_challenger`.
        champion_accuracy: On these labels.
        challenger_accuracy: On these labels.
        difference: Challenger minus champion accuracy.
        statistic: The difference test's statistic (McNemar: `c`, its discordant wins; Fisher:
            the odds ratio of being right, challenger over champion).
        p_value: Two-sided p-value of "no difference".
        noninferiority_z: The score statistic of "the challenger is worse by the margin or
            more".
        p_noninferior: Its one-sided p-value.
        margin: The non-inferiority margin tested.
    """

    test: str
    counts: dict[str, int]
    champion_accuracy: float | None
    challenger_accuracy: float | None
    difference: float | None
    statistic: float | None
    p_value: float | None
    noninferiority_z: float | None
    p_noninferior: float | None
    margin: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """What the live test says now.

    Attributes:
        action: "promote", "stop" or "continue" (wait for more labels).
        reason: In words, with the figures.
        look: The look that decided (or the last one reached; 0 before the first).
        looks: How many looks there are.
        next_look_at: Labels the next look needs (None after the last).
        alpha_per_look: The level each look tests at.
        comparison: The test at the deciding look (or at the labels so far, for display).
    """

    action: Action
    reason: str
    look: int
    looks: int
    next_look_at: int | None
    alpha_per_look: float
    comparison: Comparison

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "comparison": self.comparison.to_dict()}


# -- paired (shadow) ---------------------------------------------------------------------------


def paired(pairs: Sequence[tuple[bool, bool]], margin: float) -> Comparison:
    """McNemar's exact test and Tango's non-inferiority test on (champion right, challenger
    right) pairs."""
    n = len(pairs)
    b = sum(1 for champ, chal in pairs if champ and not chal)
    c = sum(1 for champ, chal in pairs if chal and not champ)
    both = sum(1 for champ, chal in pairs if champ and chal)
    counts = {"n": n, "b": b, "c": c, "both": both}
    if n == 0:
        return Comparison("mcnemar_exact", counts, None, None, None, None, None, None, None, margin)
    p_value = stats.binomtest(c, b + c, 0.5).pvalue if b + c else 1.0
    z = tango_z(c, b, n, -margin)
    return Comparison(
        "mcnemar_exact",
        counts,
        (both + b) / n,
        (both + c) / n,
        (c - b) / n,
        float(c),
        float(p_value),
        z,
        float(stats.norm.sf(z)),
        margin,
    )


def tango_z(n12: int, n21: int, n: int, delta0: float) -> float:
    """Tango's score statistic for H0: p1 − p2 = delta0 with `n` pairs, `n12` where only the
    first was a success and `n21` where only the second was (large: p1 − p2 > delta0)."""
    if n == 0:
        return 0.0
    a = 2 * n
    b = -n12 - n21 + (2 * n - n12 + n21) * delta0
    c = -n21 * delta0 * (1 - delta0)
    p21 = (math.sqrt(max(b * b - 4 * a * c, 0.0)) - b) / (2 * a)  # restricted MLE of P(n21)
    variance = n * (2 * p21 + delta0 * (1 - delta0))
    if variance <= 0:  # no discordant pairs at a zero margin: no evidence either way
        return 0.0
    return (n12 - n21 - n * delta0) / math.sqrt(variance)


# -- two samples (canary) ----------------------------------------------------------------------


def two_sample(champion: Sequence[bool], challenger: Sequence[bool], margin: float) -> Comparison:
    """Fisher's exact test and the Farrington–Manning non-inferiority test on each arm's
    right/wrong labels."""
    n0, k0 = len(champion), sum(map(bool, champion))
    n1, k1 = len(challenger), sum(map(bool, challenger))
    counts = {"n_champion": n0, "right_champion": k0, "n_challenger": n1, "right_challenger": k1}
    if n0 == 0 or n1 == 0:
        return Comparison(
            "fisher_exact",
            counts,
            k0 / n0 if n0 else None,
            k1 / n1 if n1 else None,
            None,
            None,
            None,
            None,
            None,
            margin,
        )
    odds, p_value = stats.fisher_exact([[k1, n1 - k1], [k0, n0 - k0]])
    z = farrington_manning_z(k1, n1, k0, n0, -margin)
    return Comparison(
        "fisher_exact",
        counts,
        k0 / n0,
        k1 / n1,
        k1 / n1 - k0 / n0,
        float(odds),
        float(p_value),
        z,
        float(stats.norm.sf(z)),
        margin,
    )


def farrington_manning_z(k1: int, n1: int, k0: int, n0: int, delta0: float) -> float:
    """The Farrington–Manning score statistic for H0: p1 − p0 = delta0 (large: p1 − p0 >
    delta0), with the restricted MLE in Miettinen and Nurminen's closed form."""
    p1, p0 = k1 / n1, k0 / n0
    theta = n0 / n1
    a = 1 + theta
    b = -(1 + theta + p1 + theta * p0 + delta0 * (theta + 2))
    c = delta0 * delta0 + delta0 * (2 * p1 + theta + 1) + p1 + theta * p0
    d = -p1 * delta0 * (1 + delta0)
    v = b**3 / (27 * a**3) - b * c / (6 * a * a) + d / (2 * a)
    u_sq = b * b / (9 * a * a) - c / (3 * a)
    u = math.copysign(math.sqrt(max(u_sq, 0.0)), v) if v else math.sqrt(max(u_sq, 0.0))
    if u == 0:
        r1 = -b / (3 * a)
    else:
        w = (math.pi + math.acos(max(-1.0, min(1.0, v / u**3)))) / 3
        r1 = 2 * u * math.cos(w) - b / (3 * a)
    r1 = min(max(r1, 0.0), 1.0)
    r0 = min(max(r1 - delta0, 0.0), 1.0)
    variance = r1 * (1 - r1) / n1 + r0 * (1 - r0) / n0
    if variance <= 0:
        return 0.0
    return (p1 - p0 - delta0) / math.sqrt(variance)


# -- the decision ------------------------------------------------------------------------------


def look_sizes(budget: int, looks: int) -> list[int]:
    """The label counts at which the test looks: equal steps up to the budget."""
    return [math.ceil(budget * k / looks) for k in range(1, looks + 1)]


def decide(
    labels: int,
    compare_at: Any,
    *,
    alpha: float,
    margin: float,
    budget: int,
    looks: int,
) -> Verdict:
    """The verdict after `labels` labels have arrived.

    Args:
        labels: Labels counted so far (pairs for a shadow, challenger answers for a canary).
        compare_at: `compare_at(n)` is the :class:`Comparison` on the first `n` of them.
        alpha: False-decision rate over all looks.
        margin: Non-inferiority margin.
        budget: Labels at the last look.
        looks: Number of looks.
    """
    sizes = look_sizes(budget, looks)
    level = alpha / looks
    reached = [n for n in sizes if n <= labels]
    for k, n in enumerate(reached, start=1):
        comparison = compare_at(n)
        action, reason = _rule(comparison, level)
        if action != "continue":
            return Verdict(
                action,
                f"look {k}/{looks} at {n} labels: {reason}",
                k,
                looks,
                None,
                level,
                comparison,
            )
    if len(reached) == looks:
        comparison = compare_at(sizes[-1])
        reason = (
            f"label budget of {budget} spent without a verdict "
            f"({_figures(comparison)}): the champion stays"
        )
        return Verdict("stop", reason, looks, looks, None, level, comparison)
    comparison = compare_at(labels)
    next_at = sizes[len(reached)]
    reason = f"waiting for {next_at} labels ({labels} so far; {_figures(comparison)})"
    return Verdict("continue", reason, len(reached), looks, next_at, level, comparison)


def _rule(comparison: Comparison, level: float) -> tuple[Action, str]:
    """One look: stop if significantly worse; promote if significantly better, or
    non-inferior within the margin and better on the point estimate."""
    diff, p, p_ni = comparison.difference, comparison.p_value, comparison.p_noninferior
    if diff is None or p is None or p_ni is None:
        return "continue", "no labels in one arm"
    figures = _figures(comparison)
    if p < level and diff < 0:
        return "stop", f"the challenger is significantly worse ({figures})"
    if p < level and diff > 0:
        return "promote", f"the challenger is significantly better ({figures})"
    if p_ni < level and diff > 0:
        return "promote", (
            f"the challenger is non-inferior within {comparison.margin:g} and better on the "
            f"point estimate ({figures})"
        )
    return "continue", figures


def _figures(c: Comparison) -> str:
    if c.difference is None:
        return "no comparison yet"
    return (
        f"accuracy {c.challenger_accuracy:.3f} vs {c.champion_accuracy:.3f}, "
        f"{c.test} p={c.p_value:.3g}, non-inferiority p={c.p_noninferior:.3g}"
    )

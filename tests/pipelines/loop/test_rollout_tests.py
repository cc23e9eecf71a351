"""The rollout's live test, checked against scipy and against its promised error rates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from pipelines.loop import rollout_tests as rt


def _pairs(b: int, c: int, both: int, neither: int) -> list[tuple[bool, bool]]:
    return (
        [(True, False)] * b
        + [(False, True)] * c
        + [(True, True)] * both
        + [(False, False)] * neither
    )


def test_the_paired_difference_test_is_mcnemars_exact_test() -> None:
    comparison = rt.paired(_pairs(b=4, c=15, both=60, neither=21), margin=0.02)
    assert comparison.p_value == pytest.approx(stats.binomtest(15, 19, 0.5).pvalue)
    assert comparison.counts == {"n": 100, "b": 4, "c": 15, "both": 60}
    assert comparison.champion_accuracy == 0.64 and comparison.challenger_accuracy == 0.75
    assert comparison.difference == pytest.approx(0.11)


def _tango_by_likelihood(n12: int, n21: int, n: int, delta0: float) -> float:
    """Tango's statistic with the restricted MLE found numerically (multinomial likelihood
    of the paired table under p12 − p21 = delta0)."""
    concordant = n - n12 - n21

    def nll(p21: float) -> float:
        p12 = p21 + delta0
        return -(n12 * math.log(p12) + n21 * math.log(p21) + concordant * math.log(1 - p12 - p21))

    p21 = optimize.minimize_scalar(
        nll,
        bounds=(max(1e-12, -delta0 + 1e-12), (1 - delta0) / 2 - 1e-12),
        method="bounded",
        options={"xatol": 1e-14},
    ).x
    return (n12 - n21 - n * delta0) / math.sqrt(n * (2 * p21 + delta0 * (1 - delta0)))


@pytest.mark.parametrize(
    "n12,n21,n,delta0", [(20, 10, 200, -0.05), (5, 9, 100, -0.02), (3, 1, 60, -0.1)]
)
def test_tangos_statistic_matches_its_restricted_likelihood(n12, n21, n, delta0) -> None:
    assert rt.tango_z(n12, n21, n, delta0) == pytest.approx(
        _tango_by_likelihood(n12, n21, n, delta0), rel=1e-5
    )


def test_tangos_statistic_at_no_margin_is_mcnemars_z() -> None:
    assert rt.tango_z(40, 20, 160, 0.0) == pytest.approx((40 - 20) / math.sqrt(60))


def _fm_by_likelihood(k1: int, n1: int, k0: int, n0: int, delta0: float) -> float:
    def nll(p0: float) -> float:
        p1 = p0 + delta0
        return -(
            k1 * math.log(p1)
            + (n1 - k1) * math.log(1 - p1)
            + k0 * math.log(p0)
            + (n0 - k0) * math.log(1 - p0)
        )

    p0 = optimize.minimize_scalar(
        nll,
        bounds=(max(1e-9, -delta0 + 1e-9), min(1 - 1e-9, 1 - delta0 - 1e-9)),
        method="bounded",
        options={"xatol": 1e-12},
    ).x
    p1 = p0 + delta0
    return (k1 / n1 - k0 / n0 - delta0) / math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)


@pytest.mark.parametrize(
    "k1,n1,k0,n0,delta0",
    [(80, 100, 85, 120, -0.05), (30, 40, 300, 400, -0.02), (95, 100, 900, 1000, -0.01)],
)
def test_farrington_manning_matches_its_restricted_likelihood(k1, n1, k0, n0, delta0) -> None:
    assert rt.farrington_manning_z(k1, n1, k0, n0, delta0) == pytest.approx(
        _fm_by_likelihood(k1, n1, k0, n0, delta0), rel=1e-5
    )


def test_the_two_sample_tests_are_fisher_and_at_no_margin_the_pooled_z() -> None:
    champion = [True] * 170 + [False] * 30
    challenger = [True] * 45 + [False] * 5
    comparison = rt.two_sample(champion, challenger, margin=0.0)
    table = [[45, 5], [170, 30]]
    assert comparison.p_value == pytest.approx(stats.fisher_exact(table).pvalue)
    chi2 = stats.chi2_contingency(table, correction=False).statistic
    assert comparison.noninferiority_z == pytest.approx(math.sqrt(chi2))
    assert comparison.difference == pytest.approx(0.9 - 0.85)


def test_a_look_decides_once_its_labels_are_in_and_the_budget_ends_the_test() -> None:
    even = _pairs(b=10, c=10, both=70, neither=10)  # no difference at all

    def at(pairs: list[tuple[bool, bool]]):
        return lambda n: rt.paired(pairs[:n], 0.0)

    waiting = rt.decide(30, at(even), alpha=0.05, margin=0.0, budget=100, looks=2)
    assert waiting.action == "continue" and waiting.next_look_at == 50 and waiting.look == 0
    spent = rt.decide(100, at(even), alpha=0.05, margin=0.0, budget=100, looks=2)
    assert spent.action == "stop" and "budget of 100 spent" in spent.reason
    assert spent.alpha_per_look == 0.025
    better = _pairs(b=0, c=12, both=38, neither=0)  # the challenger wins all 12 discordant pairs
    verdict = rt.decide(50, at(better), alpha=0.05, margin=0.0, budget=100, looks=2)
    assert verdict.action == "promote" and "significantly better" in verdict.reason
    assert verdict.look == 1 and verdict.comparison.counts["n"] == 50


def _simulated_verdicts(
    rng: np.random.Generator, *, difference: float, paired: bool, runs: int
) -> dict[str, int]:
    """How often each verdict comes out over `runs` rollouts of 400 labels and 4 looks, where
    the challenger's accuracy is the champion's (0.85) plus `difference`.

    Paired: each label is one of (both right, only the champion, only the challenger,
    neither), with 5% + 5% discordant pairs around the difference. Two samples: the
    champion's arm has four labels for each of the challenger's.
    """
    margin, budget, looks = 0.02, 400, 4
    seen = {"promote": 0, "worse": 0, "budget": 0, "continue": 0}
    for _ in range(runs):
        if paired:
            only_champion, only_challenger = 0.05 - difference / 2, 0.05 + difference / 2
            p = [0.85 - only_champion, only_champion, only_challenger]
            p.append(1 - sum(p))
            kinds = rng.choice(4, size=budget, p=p)
            table = [(True, True), (True, False), (False, True), (False, False)]
            pairs = [table[k] for k in kinds]

            def compare_at(n: int, pairs=pairs) -> rt.Comparison:
                return rt.paired(pairs[:n], margin)
        else:
            arm0 = (rng.random(budget * 4) < 0.85).tolist()
            arm1 = (rng.random(budget) < 0.85 + difference).tolist()

            def compare_at(n: int, arm0=arm0, arm1=arm1) -> rt.Comparison:
                return rt.two_sample(arm0[: n * 4], arm1[:n], margin)

        verdict = rt.decide(
            budget, compare_at, alpha=0.05, margin=margin, budget=budget, looks=looks
        )
        if verdict.action == "stop":
            seen["worse" if "significantly worse" in verdict.reason else "budget"] += 1
        else:
            seen[verdict.action] += 1
    return seen


@pytest.mark.parametrize("paired", [True, False])
def test_a_challenger_worse_by_the_margin_is_promoted_less_often_than_alpha(paired: bool) -> None:
    seen = _simulated_verdicts(np.random.default_rng(7), difference=-0.02, paired=paired, runs=600)
    assert seen["promote"] / 600 <= 0.05, seen
    assert seen["continue"] == 0  # every rollout ends by its budget


@pytest.mark.parametrize("paired", [True, False])
def test_an_equal_challenger_is_called_worse_less_often_than_alpha(paired: bool) -> None:
    seen = _simulated_verdicts(np.random.default_rng(11), difference=0.0, paired=paired, runs=600)
    assert seen["worse"] / 600 <= 0.05, seen


@pytest.mark.parametrize("paired", [True, False])
def test_a_clearly_better_challenger_is_promoted(paired: bool) -> None:
    seen = _simulated_verdicts(np.random.default_rng(3), difference=0.08, paired=paired, runs=100)
    assert seen["promote"] >= 90, seen


def test_the_rule_never_promotes_on_a_worse_point_estimate() -> None:
    worse = rt.paired(_pairs(b=6, c=5, both=380, neither=9), margin=0.05)
    assert worse.p_noninferior < 0.01  # non-inferior within 5 points…
    verdict = rt.decide(400, lambda n: worse, alpha=0.05, margin=0.05, budget=400, looks=1)
    assert verdict.action == "stop"  # …but worse on the point estimate: the champion stays

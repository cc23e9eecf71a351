"""Every statistic and p-value against scipy on the same inputs."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import special, stats
from scipy.spatial import distance

from pipelines.drift.reference import profile_categorical, profile_numeric
from pipelines.drift.stattests import REGISTRY, get_test, kstwo_sf, run_test

SEEDS = [0, 1, 2]
# (n_reference, n_current, shift): small n (exact p-values), mixed, large n (asymptotic).
SIZES = [(8, 11, 0.0), (60, 45, 0.5), (300, 30_000, 0.05), (20_000, 12_000, 0.02)]


def _samples(seed, n_ref, n_cur, shift, integer):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=n_ref)
    cur = rng.normal(shift, 1.2, size=n_cur)
    if integer:
        # Few distinct values: ties within and across the samples.
        ref, cur = np.round(ref * 2), np.round(cur * 2)
    return ref, cur


CASES = [
    pytest.param(
        seed, *size, integer, id=f"seed{seed}-{size[0]}x{size[1]}-{'int' if integer else 'float'}"
    )
    for seed in SEEDS
    for size in SIZES
    for integer in (False, True)
]


@pytest.mark.parametrize(("seed", "n_ref", "n_cur", "shift", "integer"), CASES)
def test_ks_matches_scipy(seed, n_ref, n_cur, shift, integer):
    ref, cur = _samples(seed, n_ref, n_cur, shift, integer)
    ours = run_test("ks", ref, cur)
    theirs = stats.ks_2samp(ref, cur, method="asymp")  # as documented
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-12, abs=1e-15)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize(
    "n",
    [
        141,
        1_000,
        20_000,
        166_667,
        pytest.param(1_000_000, marks=pytest.mark.slow),
        1_000_001,
        3_000_000,
    ],
)
def test_kstwo_sf_matches_scipy_in_every_branch(n: int) -> None:
    # From p ~ 1 to underflow: both sides of n*d^2 = 2.2 (where the fast sum starts), of
    # 354 (where scipy's smirnov returns 0) and of 370 (where kstwo.sf does).
    d2 = np.array([0.5, 2.1999, 2.2, 3.0, 8.0, 30.0, 100.0, 300.0, 354.1, 354.3, 369.9, 370.1])
    for d in [*np.sqrt(d2 / n), 0.3, 0.49, 0.5, 0.9]:
        theirs = stats.kstwo.sf(d, n)
        assert kstwo_sf(d, n) == pytest.approx(theirs, rel=1e-11, abs=1e-300), (n, d)


def test_ks_matches_scipy_auto_where_auto_is_asymptotic():
    ref, cur = _samples(3, 50_000, 11_000, 0.01, False)
    ours = run_test("ks", ref, cur)
    theirs = stats.ks_2samp(ref, cur)  # above 10,000 values "auto" is the asymptotic formula
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
    assert 0.0 < ours.p_value < 1.0


@pytest.mark.parametrize(("seed", "n_ref", "n_cur", "shift", "integer"), CASES)
def test_wasserstein_normed_matches_scipy(seed, n_ref, n_cur, shift, integer):
    ref, cur = _samples(seed, n_ref, n_cur, shift, integer)
    expected = stats.wasserstein_distance(ref, cur) / max(np.std(ref), 0.001)
    assert run_test("wasserstein", ref, cur).statistic == pytest.approx(expected, rel=1e-10)


def test_wasserstein_of_a_pure_shift_is_the_shift_in_std_units():
    ref = np.random.default_rng(0).normal(size=5_000)
    result = run_test("wasserstein", ref, ref + 0.25 * ref.std())
    assert result.statistic == pytest.approx(0.25, rel=1e-9)


@pytest.mark.parametrize(("seed", "n_ref", "n_cur", "shift", "integer"), CASES)
def test_cramer_von_mises_matches_scipy(seed, n_ref, n_cur, shift, integer):
    ref, cur = _samples(seed, n_ref, n_cur, shift, integer)
    ours = run_test("cramer_von_mises", ref, cur)
    theirs = stats.cramervonmises_2samp(ref, cur)
    assert ours.statistic == pytest.approx(theirs.statistic, rel=1e-9)
    assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("integer", [False, True])
def test_psi_numeric_matches_a_direct_computation(seed, integer):
    ref, cur = _samples(seed, 5_000, 3_000, 0.3, integer)
    # Independent route: np.quantile edges, np.digitize, the symmetric KL form of PSI.
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11)[1:-1]))
    r = np.bincount(np.digitize(ref, edges), minlength=edges.size + 1) / ref.size
    c = np.bincount(np.digitize(cur, edges), minlength=edges.size + 1) / cur.size
    r, c = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)
    expected = special.rel_entr(c, r).sum() + special.rel_entr(r, c).sum()
    assert run_test("psi", ref, cur).statistic == pytest.approx(expected, rel=1e-10)


def test_psi_puts_values_outside_the_reference_range_in_the_end_bins():
    ref = np.arange(1_000, dtype=float)
    shifted = run_test("psi", ref, ref + 10_000)
    assert shifted.statistic > 5  # everything in the last bin: a huge shift, not an empty sample


def _categories(seed, n_ref, n_cur, new_category=False):
    rng = np.random.default_rng(seed)
    ref = rng.choice(["a", "b", "c", "d"], size=n_ref, p=[0.4, 0.3, 0.2, 0.1])
    cats = ["a", "b", "c", "d", "e"] if new_category else ["a", "b", "c", "d"]
    probs = [0.35, 0.3, 0.2, 0.1, 0.05] if new_category else [0.35, 0.3, 0.25, 0.1]
    cur = rng.choice(cats, size=n_cur, p=probs)
    return ref, cur


def _aligned_counts(ref, cur):
    keys = sorted(set(ref) | set(cur))
    r = pd.Series(ref).value_counts().reindex(keys, fill_value=0).to_numpy()
    c = pd.Series(cur).value_counts().reindex(keys, fill_value=0).to_numpy()
    return r, c


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("n_ref", "n_cur"), [(30, 25), (500, 800), (50_000, 20_000)])
@pytest.mark.parametrize("new_category", [False, True])
def test_categorical_tests_match_scipy(seed, n_ref, n_cur, new_category):
    ref, cur = _categories(seed, n_ref, n_cur, new_category)
    r, c = _aligned_counts(ref, cur)
    chi = stats.chi2_contingency(np.vstack((r, c)))
    ours = run_test("chisquare", ref, cur)
    assert ours.statistic == pytest.approx(chi.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(chi.pvalue, rel=1e-9, abs=1e-300)
    js = distance.jensenshannon(r / r.sum(), c / c.sum())
    assert run_test("jensenshannon", ref, cur).statistic == pytest.approx(js, rel=1e-12)
    rp, cp = np.where(r == 0, 1e-4, r / r.sum()), np.where(c == 0, 1e-4, c / c.sum())
    psi = special.rel_entr(cp, rp).sum() + special.rel_entr(rp, cp).sum()
    assert run_test("psi", ref, cur).statistic == pytest.approx(psi, rel=1e-10)


def test_chisquare_on_two_categories_uses_scipys_yates_correction():
    ref = np.array(["yes"] * 60 + ["no"] * 40)
    cur = np.array(["yes"] * 45 + ["no"] * 55)
    expected = stats.chi2_contingency([[60, 40], [45, 55]])  # correction=True by default
    assert run_test("chisquare", ref, cur).p_value == pytest.approx(expected.pvalue, rel=1e-12)


def test_chisquare_with_a_single_category_is_no_evidence():
    result = run_test("chisquare", np.array(["a"] * 200), np.array(["a"] * 300))
    assert (result.statistic, result.p_value) == (0.0, 1.0)


def test_categorical_inputs_agree_across_containers():
    ref, cur = _categories(0, 2_000, 1_000, new_category=True)
    plain = run_test("chisquare", ref, cur)
    as_category = run_test("chisquare", pd.Series(ref, dtype="category"), pd.Series(cur))
    as_arrow = run_test("chisquare", pa.array(ref), pa.chunked_array([cur]))
    assert as_category == plain
    assert as_arrow == plain


def test_missing_values_are_dropped_and_counted():
    values = np.array([1.0, np.nan, 2.0, np.inf, 3.0, None], dtype=object)
    profile = profile_numeric(values)
    assert profile.values.tolist() == [1.0, 2.0, 3.0]
    assert profile.n_missing == 3
    assert profile.missing_share == pytest.approx(0.5)
    cats = profile_categorical(pd.Series(["a", None, "b", np.nan, "a"]))
    assert cats.frequencies() == {"a": 2, "b": 1}
    assert cats.n_missing == 2


def test_quantile_edges_equal_numpys():
    values = np.random.default_rng(4).gamma(2.0, size=1_001)
    profile = profile_numeric(values, n_bins=10)
    expected = np.quantile(values, np.linspace(0, 1, 11)[1:-1])
    np.testing.assert_allclose(profile.bin_edges, expected, rtol=1e-13)
    assert profile.bin_counts.sum() == values.size


def test_registry_declares_kinds_and_thresholds():
    assert REGISTRY["ks"].kinds == {"numeric"}
    assert REGISTRY["ks"].default_threshold == 0.05 and REGISTRY["ks"].has_p_value
    assert REGISTRY["wasserstein"].default_threshold == 0.1
    assert not REGISTRY["jensenshannon"].has_p_value
    assert REGISTRY["psi"].kinds == {"numeric", "categorical"}
    with pytest.raises(ValueError, match="does not accept"):
        get_test("ks", "categorical")
    with pytest.raises(ValueError, match="unknown drift test"):
        get_test("nope")

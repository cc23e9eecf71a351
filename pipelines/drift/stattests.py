"""Drift statistics as pure functions, registered by name (in the style of evidently's stattests).

Each test compares a reference profile with a current profile (see ``reference.py``) and returns
a ``StatResult``. Tests come in two flavours:

* significance tests return a p-value (``ks``, ``cramer_von_mises``, ``chisquare``); their
  ``default_threshold`` is the significance level;
* distances return an effect size and no p-value (``wasserstein``, ``psi``, ``jensenshannon``);
  their ``default_threshold`` is the distance at or above which a column counts as drifted.

Every value equals its scipy counterpart on the same inputs (the tests check this):

===================  ==========================================================================
ks                   ``scipy.stats.ks_2samp(ref, cur, method="asymp")``: the p-value is
                     ``kstwo.sf(D, round(n*m/(n+m)))`` at every size (scipy's "auto" switches
                     to a slow exact computation below 10,000 values, which drift windows
                     do not need: the verdict also requires an effect size)
cramer_von_mises     ``scipy.stats.cramervonmises_2samp(ref, cur)`` (``method="auto"``)
wasserstein          ``scipy.stats.wasserstein_distance(ref, cur) / max(std(ref), 0.001)``
                     (Evidently's "wasserstein normed")
chisquare            ``scipy.stats.chi2_contingency`` on the 2 x k table of category counts
jensenshannon        ``scipy.spatial.distance.jensenshannon(p_ref, p_cur)`` (natural log)
psi                  sum((c - r) * ln(c / r)) over reference-quantile bins (numeric) or
                     categories, with empty-bin shares replaced by 0.0001
===================  ==========================================================================

Speed: the reference side is sorted once, in its profile. For numeric columns the two sorted
samples are merged once per check (a stable argsort of two sorted runs is a linear-time timsort
merge) and KS, Wasserstein and Cramér–von Mises all read the same merged ECDF difference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats
from scipy.spatial import distance

from pipelines.drift.reference import (
    CategoricalProfile,
    ColumnProfile,
    Kind,
    NumericProfile,
    profile_categorical,
    profile_numeric,
)

logger = logging.getLogger(__name__)

# scipy's cramervonmises_2samp(method="auto") is exact up to this many values per sample.
CVM_EXACT_MAX_N = 20
# Evidently's floor for the reference std, so a constant reference does not divide by zero.
MIN_STD = 0.001
# Share given to an empty bin or category in PSI (Evidently uses the same), so ln() is finite.
PSI_EPSILON = 1e-4


@dataclass(frozen=True)
class StatResult:
    """What a test returns.

    Attributes:
        statistic: The test statistic or the distance.
        p_value: The p-value, or None for a distance.
    """

    statistic: float
    p_value: float | None = None


class NumericPair:
    """A reference and a current numeric profile, with the merged ECDFs computed at most once.

    (Memoized by hand: on Python 3.11 ``functools.cached_property`` holds one lock for all
    instances, which would serialize the columns that ``check_drift`` runs in threads.)
    """

    def __init__(self, reference: NumericProfile, current: NumericProfile) -> None:
        self.reference = reference
        self.current = current
        self._merged: tuple[np.ndarray, np.ndarray] | None = None
        self._ecdf_difference: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def merged(self) -> tuple[np.ndarray, np.ndarray]:
        """The pooled sample, sorted, and a mask of the values that come from the current side."""
        if self._merged is None:
            self._merged = self._merge()
        return self._merged

    @property
    def ecdf_difference(self) -> tuple[np.ndarray, np.ndarray]:
        """n_ref * n_cur * (F_ref - F_cur) at each pooled value but the last, and the gaps.

        Scaled by n_ref * n_cur the difference is an exact integer, so nothing is lost to
        rounding before the final division. Where a gap is zero (ties) the ECDFs have not
        finished their jump yet: only positions followed by a positive gap are points where
        both right-continuous ECDFs are fully evaluated.
        """
        if self._ecdf_difference is None:
            self._ecdf_difference = self._difference()
        return self._ecdf_difference

    def _merge(self) -> tuple[np.ndarray, np.ndarray]:
        n_ref = self.reference.n
        pooled = np.concatenate((self.reference.values, self.current.values))
        # Both halves are sorted runs, so the stable (timsort) argsort is a linear merge.
        order = np.argsort(pooled, kind="stable")
        return pooled[order], order >= n_ref

    def _difference(self) -> tuple[np.ndarray, np.ndarray]:
        values, from_current = self.merged
        n_ref, n_cur = self.reference.n, self.current.n
        n_cur_seen = np.cumsum(from_current[:-1], dtype=np.int64)
        # n_ref_seen = position - n_cur_seen, so n_cur*n_ref_seen - n_ref*n_cur_seen is:
        scaled_positions = np.arange(n_cur, n_cur * values.size, n_cur, dtype=np.int64)
        diff = scaled_positions - (n_ref + n_cur) * n_cur_seen
        return diff, np.diff(values)


class CategoricalPair:
    """A reference and a current categorical profile, aligned on the union of categories."""

    def __init__(self, reference: CategoricalProfile, current: CategoricalProfile) -> None:
        self.reference = reference
        self.current = current
        self._counts: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Reference and current counts over the same categories (0 where a side lacks one)."""
        if self._counts is None:
            self._counts = self._align()
        return self._counts

    def _align(self) -> tuple[np.ndarray, np.ndarray]:
        ref = pd.Series(self.reference.counts, index=pd.Index(self.reference.categories))
        cur = pd.Series(self.current.counts, index=pd.Index(self.current.categories))
        table = pd.concat([ref, cur], axis=1, keys=["ref", "cur"]).fillna(0)
        return table["ref"].to_numpy(np.int64), table["cur"].to_numpy(np.int64)

    @property
    def shares(self) -> tuple[np.ndarray, np.ndarray]:
        """Reference and current category shares."""
        ref, cur = self.counts
        return ref / ref.sum(), cur / cur.sum()


Pair = NumericPair | CategoricalPair


@dataclass(frozen=True)
class DriftTest:
    """A registered statistic.

    Attributes:
        name: Registry name, used in policies and stored results.
        kinds: Column kinds the test accepts ("numeric", "categorical").
        default_threshold: Significance level for p-value tests, minimum distance otherwise.
        func: The pure function on a NumericPair or CategoricalPair.
        has_p_value: True for significance tests, False for distances.
    """

    name: str
    kinds: frozenset[Kind]
    default_threshold: float
    func: Callable[[Any], StatResult]
    has_p_value: bool

    def __call__(self, reference: Any, current: Any) -> StatResult:
        """Run the test on two profiles, or on two raw samples (profiled on the fly)."""
        kind = next(iter(self.kinds)) if len(self.kinds) == 1 else _kind_of(reference)
        if kind not in self.kinds:
            raise ValueError(f"test {self.name!r} does not accept {kind} columns")
        return self.func(make_pair(reference, current, kind))


def make_pair(reference: Any, current: Any, kind: Kind) -> Pair:
    """Pair two samples of ``kind``; raw arrays are profiled, profiles are used as they are."""
    if kind == "numeric":
        ref = reference if isinstance(reference, NumericProfile) else profile_numeric(reference)
        cur = current if isinstance(current, NumericProfile) else profile_numeric(current)
        return NumericPair(ref, cur)
    return CategoricalPair(
        reference if isinstance(reference, CategoricalProfile) else profile_categorical(reference),
        current if isinstance(current, CategoricalProfile) else profile_categorical(current),
    )


def _kind_of(sample: Any) -> Kind:
    if isinstance(sample, NumericProfile | CategoricalProfile):
        return sample.kind
    dtype = getattr(sample, "dtype", None)
    if dtype is None:
        dtype = np.asarray(sample).dtype
    numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    return "numeric" if numeric else "categorical"


# --- numeric ----------------------------------------------------------------------------------


def ks(pair: NumericPair) -> StatResult:
    """Two-sample Kolmogorov–Smirnov test (two-sided), as ``ks_2samp(method="asymp")``."""
    diff, gaps = pair.ecdf_difference
    n1, n2 = pair.reference.n, pair.current.n
    # Past the last pooled value both ECDFs are 1, so the sup is over completed steps only;
    # filtering them out costs a copy, worth paying only when there are ties.
    completed = diff if gaps.all() else diff[gaps > 0]
    d = max(int(completed.max()), -int(completed.min())) / (n1 * n2) if completed.size else 0.0
    m, n = sorted((float(n1), float(n2)), reverse=True)
    p = kstwo_sf(d, int(np.round(m * n / (m + n))))
    return StatResult(d, float(np.clip(p, 0.0, 1.0)))


# scipy sums Smirnov's series exactly up to this n, and approximates above it.
SMIRNOV_EXACT_MAX_N = 1_000_000
# cephes' MINLOG: where scipy's smirnov declares the survival function 0 (exp underflows).
_MINLOG = -7.08396418532264106224e2


def kstwo_sf(d: float, n: int) -> float:
    """``scipy.stats.kstwo.sf(d, n)``, the two-sided KS p-value, without scipy's slow branch.

    For n > 140 and 2.2 <= n*d^2 < 370 (a shift small enough to matter, large enough to be
    seen), scipy returns ``2 * special.smirnov(n, d)``, which sums Smirnov's series one term
    at a time in double-double arithmetic: at n in the hundreds of thousands, most of a 1M-row
    check's time. Here the same series is summed in vectorized passes (`python -m benchmarks
    --only drift` times the check), equal to scipy's within 1e-12 relative up to n = 1M
    (tested over a grid). Every other case, and n beyond the size where scipy itself
    approximates, is scipy's own call.
    """
    nd2 = n * d * d
    if n <= 140 or d >= 0.5 or n > SMIRNOV_EXACT_MAX_N or not 2.2 <= nd2 < 370.0:
        return float(stats.kstwo.sf(d, n))
    if -2.0 * nd2 < _MINLOG:
        return 0.0
    return min(1.0, 2.0 * _smirnov_sf(n, d))


def _smirnov_sf(n: int, d: float) -> float:
    """P(D+_n >= d) = d * sum_{j=0}^{floor(n(1-d))} C(n,j) (d + j/n)^(j-1) (1 - d - j/n)^(n-j)
    (Birnbaum and Tingey 1951). Term j is binom.pmf(j; n, a) / a with a = d + j/n, which
    scipy's binomial pmf (Boost) gives to ~1e-15; log-gamma terms, cheap but good to only
    ~1e-9 at n = 1M, pick out the terms within e^-45 of the largest, the only ones that count.
    """
    j = np.arange(int(math.floor(n * (1.0 - d))) + 1, dtype=np.float64)
    a = d + j / n
    gammaln = special.gammaln
    with np.errstate(divide="ignore"):  # the last term can be 0^(n-j): log 0
        rough = (
            gammaln(n + 1.0)
            - gammaln(j + 1.0)
            - gammaln(n - j + 1.0)
            + (j - 1.0) * np.log(a)
            + (n - j) * np.log1p(-a)
        )
    counted = rough > rough.max() - 45.0
    a = a[counted]
    return float(d * (stats.binom.pmf(j[counted], n, a) / a).sum())


def wasserstein(pair: NumericPair) -> StatResult:
    """Wasserstein-1 distance in units of the reference standard deviation.

    The area between the two ECDFs (what ``scipy.stats.wasserstein_distance`` computes),
    divided by ``max(std(reference), 0.001)``: 0.1 means the mass moved a tenth of a std.
    """
    diff, gaps = pair.ecdf_difference
    # einsum, not np.dot: a BLAS dot wakes OpenBLAS's threads, which then spin for a while
    # beside the check's own workers, burning CPU the check needs.
    area = float(np.einsum("i,i->", np.abs(diff), gaps)) / (pair.reference.n * pair.current.n)
    return StatResult(area / max(pair.reference.std, MIN_STD))


def cramer_von_mises(pair: NumericPair) -> StatResult:
    """Two-sample Cramér–von Mises test, as ``scipy.stats.cramervonmises_2samp``."""
    nx, ny = pair.reference.n, pair.current.n
    if max(nx, ny) <= CVM_EXACT_MAX_N:
        exact = stats.cramervonmises_2samp(pair.reference.values, pair.current.values)
        return StatResult(float(exact.statistic), float(exact.pvalue))
    values, from_current = pair.merged
    ranks = _midranks(values)
    rx, ry = ranks[~from_current], ranks[from_current]
    u = nx * np.sum((rx - np.arange(1, nx + 1)) ** 2)
    u += ny * np.sum((ry - np.arange(1, ny + 1)) ** 2)
    k, big_n = nx * ny, nx + ny
    t = float(u) / (k * big_n) - (4 * k - 1) / (6 * big_n)
    # Anderson (1962) mean and variance of T, then the limiting one-sample distribution.
    et = (1 + 1 / big_n) / 6
    vt = (big_n + 1) * (4 * k * big_n - 3 * (nx**2 + ny**2) - 2 * k) / (45 * big_n**2 * 4 * k)
    tn = 1 / 6 + (t - et) / math.sqrt(45 * vt)
    p = 1.0 if tn < 0.003 else max(0.0, 1.0 - _cvm_limit_cdf(tn))
    return StatResult(t, p)


def _midranks(sorted_values: np.ndarray) -> np.ndarray:
    """1-based ranks of a sorted array, ties sharing their average rank (``rankdata``)."""
    n = sorted_values.size
    starts = np.flatnonzero(np.concatenate(([True], sorted_values[1:] != sorted_values[:-1])))
    ends = np.concatenate((starts[1:], [n]))  # exclusive
    # Ranks start..end-1 (0-based) average to (start + end + 1) / 2 in 1-based ranks.
    return np.repeat((starts + ends + 1) / 2.0, ends - starts)


def _cvm_limit_cdf(x: float) -> float:
    """CDF of the limiting Cramér–von Mises distribution (Csörgő and Faraway 1996, eq. 1.2).

    The same series and stopping rule as scipy, so p-values agree to the last digits.
    """
    total, k = 0.0, 0
    while True:
        y = 4 * k + 1
        q = y**2 / (16 * x)
        coef = math.exp(special.gammaln(k + 0.5) - special.gammaln(k + 1))
        term = coef / (math.pi**1.5 * math.sqrt(x)) * math.sqrt(y) * math.exp(-q)
        term *= float(special.kv(0.25, q))
        total += term
        if abs(term) < 1e-7:
            return total
        k += 1


def psi_numeric(pair: NumericPair) -> StatResult:
    """Population stability index over the reference's quantile bins."""
    ref = pair.reference
    return StatResult(_psi(ref.bin_counts, pair.current.counts_in(ref.bin_edges)))


# --- categorical ------------------------------------------------------------------------------


def chisquare(pair: CategoricalPair) -> StatResult:
    """Chi-square test of homogeneity on the 2 x k table, as ``scipy.stats.chi2_contingency``.

    scipy's defaults apply, including Yates' continuity correction when there are exactly two
    categories. A single category on both sides carries no evidence: statistic 0, p-value 1.
    """
    ref, cur = pair.counts
    if ref.size < 2:
        return StatResult(0.0, 1.0)
    result = stats.chi2_contingency(np.vstack((ref, cur)))
    return StatResult(float(result.statistic), float(result.pvalue))


def jensenshannon(pair: CategoricalPair) -> StatResult:
    """Jensen–Shannon distance (natural log, as scipy's and Evidently's default; max ≈ 0.83)."""
    ref, cur = pair.shares
    return StatResult(float(distance.jensenshannon(ref, cur)))


def psi_categorical(pair: CategoricalPair) -> StatResult:
    """Population stability index over the categories."""
    ref, cur = pair.counts
    return StatResult(_psi(ref, cur))


def _psi(ref_counts: np.ndarray, cur_counts: np.ndarray) -> float:
    ref = ref_counts / ref_counts.sum()
    cur = cur_counts / cur_counts.sum()
    ref = np.where(ref == 0, PSI_EPSILON, ref)
    cur = np.where(cur == 0, PSI_EPSILON, cur)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def psi(pair: Pair) -> StatResult:
    """PSI on either kind of column; below 0.1 is conventionally stable, above 0.25 a shift."""
    if isinstance(pair, NumericPair):
        return psi_numeric(pair)
    return psi_categorical(pair)


# --- registry ---------------------------------------------------------------------------------

ks_test = DriftTest("ks", frozenset({"numeric"}), 0.05, ks, has_p_value=True)
cramer_von_mises_test = DriftTest(
    "cramer_von_mises", frozenset({"numeric"}), 0.05, cramer_von_mises, has_p_value=True
)
wasserstein_test = DriftTest("wasserstein", frozenset({"numeric"}), 0.1, wasserstein, False)
chisquare_test = DriftTest("chisquare", frozenset({"categorical"}), 0.05, chisquare, True)
jensenshannon_test = DriftTest(
    "jensenshannon", frozenset({"categorical"}), 0.1, jensenshannon, has_p_value=False
)
psi_test = DriftTest("psi", frozenset({"numeric", "categorical"}), 0.1, psi, has_p_value=False)

REGISTRY: dict[str, DriftTest] = {
    t.name: t
    for t in (
        ks_test,
        cramer_von_mises_test,
        wasserstein_test,
        chisquare_test,
        jensenshannon_test,
        psi_test,
    )
}


def get_test(name: str, kind: Kind | None = None) -> DriftTest:
    """The registered test called ``name``, checked against the column ``kind`` if given."""
    try:
        test = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown drift test {name!r}; known: {sorted(REGISTRY)}") from None
    if kind is not None and kind not in test.kinds:
        raise ValueError(f"test {name!r} does not accept {kind} columns")
    return test


def run_test(name: str, reference: ColumnProfile | Any, current: ColumnProfile | Any) -> StatResult:
    """Run a registered test by name on two profiles or two raw samples."""
    return get_test(name)(reference, current)

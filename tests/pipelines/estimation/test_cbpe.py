"""Confidence-based estimation against scikit-learn's metrics on labels drawn from the
probabilities themselves: there the estimate is unbiased and its band covers ~95%."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics

from pipelines.estimation import Estimate, drop, estimate, expected_confusion, realized

N_ROWS, N_DRAWS, N_CHECKED = 4_000, 1_000, 25
"""Rows per window, label draws per window, and draws whose realized metrics are also checked
against scikit-learn's (all of them would take a minute)."""


def softmax_proba(rng: np.random.Generator, n: int, k: int, scale: float = 1.5) -> np.ndarray:
    logits = rng.normal(size=(n, k)) * scale
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def binary_proba(rng: np.random.Generator, n: int) -> np.ndarray:
    q = rng.beta(0.6, 0.9, n)
    return np.column_stack([1 - q, q])


def draw_labels(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One true class per row, drawn from its own probabilities (what calibration means)."""
    u = rng.random(len(p))
    return np.minimum((u[:, None] > np.cumsum(p, axis=1)).sum(axis=1), p.shape[1] - 1)


def sklearn_metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    k = p.shape[1]
    pred = p.argmax(axis=1)
    out = {
        "accuracy": metrics.accuracy_score(y, pred),
        "macro_f1": metrics.f1_score(
            y, pred, average="macro", labels=list(range(k)), zero_division=0
        ),
    }
    if k == 2:
        out["precision"] = metrics.precision_score(y, pred, zero_division=0)
        out["recall"] = metrics.recall_score(y, pred, zero_division=0)
        out["roc_auc"] = metrics.roc_auc_score(y, p[:, 1])
    return out


@pytest.fixture(scope="module", params=["multiclass", "binary"])
def drawn(request: pytest.FixtureRequest) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Fixed probabilities and the realized metrics of N_DRAWS label draws (the first
    N_CHECKED equal to scikit-learn's)."""
    rng = np.random.default_rng(7)
    p = (
        softmax_proba(rng, N_ROWS, 4)
        if request.param == "multiclass"
        else binary_proba(rng, N_ROWS)
    )
    draws = []
    for i in range(N_DRAWS):
        y = draw_labels(p, rng)
        draws.append(realized(p, y))
        if i < N_CHECKED:
            for name, value in sklearn_metrics(p, y).items():
                assert draws[-1][name] == pytest.approx(value), name
    return p, {name: np.array([d[name] for d in draws]) for name in sklearn_metrics(p, y)}


# --- the expected confusion matrix -------------------------------------------------------------


def test_expected_confusion_is_the_sum_of_probabilities_per_predicted_class() -> None:
    rng = np.random.default_rng(0)
    p = softmax_proba(rng, 300, 4)
    expected = np.zeros((4, 4))
    for row in p:
        j = int(np.argmax(row))
        for t in range(4):
            expected[t, j] += row[t]
    assert np.allclose(expected_confusion(p), expected)
    assert expected_confusion(p).sum() == pytest.approx(300)


def test_estimates_read_the_expected_confusion_matrix() -> None:
    rng = np.random.default_rng(1)
    p = softmax_proba(rng, 500, 3)
    c = expected_confusion(p)
    est = estimate(p)
    assert est.accuracy.value == pytest.approx(np.trace(c) / 500)
    f1 = 2 * np.diag(c) / (c.sum(axis=0) + c.sum(axis=1))
    assert est.macro_f1.value == pytest.approx(f1.mean())
    assert (est.precision, est.recall, est.roc_auc) == (None, None, None)
    assert set(est.metrics()) == {"accuracy", "macro_f1"}


def test_binary_estimates_read_the_expected_confusion_matrix() -> None:
    p = binary_proba(np.random.default_rng(2), 500)
    c = expected_confusion(p)
    est = estimate(p)
    assert est.precision is not None and est.recall is not None
    assert est.precision.value == pytest.approx(c[1, 1] / c[:, 1].sum())
    assert est.recall.value == pytest.approx(c[1, 1] / c[1].sum())
    assert set(est.metrics()) == {"accuracy", "macro_f1", "precision", "recall", "roc_auc"}


# --- the bands: the delta method against a direct computation ----------------------------------


def test_accuracy_std_is_the_sum_of_bernoulli_variances() -> None:
    p = softmax_proba(np.random.default_rng(3), 1_000, 5)
    top = p.max(axis=1)
    assert estimate(p).accuracy.std == pytest.approx(math.sqrt((top * (1 - top)).sum()) / 1_000)


def _metric_on_matrix(name: str, c: np.ndarray) -> float:
    """The metric read off a confusion matrix [true, predicted], written out independently."""
    k = len(c)
    tp, true, pred = np.diag(c), c.sum(axis=1), c.sum(axis=0)
    if name == "accuracy":
        return float(tp.sum() / c.sum())
    if name == "macro_f1":
        return float(np.mean([2 * tp[t] / (true[t] + pred[t]) for t in range(k)]))
    if name == "precision":
        return float(c[1, 1] / pred[1])
    return float(c[1, 1] / true[1])  # recall


@pytest.mark.parametrize(
    ("k", "names"),
    [(4, ["accuracy", "macro_f1"]), (2, ["accuracy", "macro_f1", "precision", "recall"])],
)
def test_delta_method_std_matches_the_full_covariance_of_each_column(k, names) -> None:
    """Var f = Σ_j g_jᵀ Cov_j g_j with g_j by finite differences and Cov_j summed row by row."""
    rng = np.random.default_rng(4)
    p = softmax_proba(rng, 400, k)
    c = expected_confusion(p)
    pred = p.argmax(axis=1)
    covs = [sum(np.diag(r) - np.outer(r, r) for r in p[pred == j]) for j in range(k)]
    est = estimate(p)
    for name in names:
        grad = np.zeros((k, k))
        for t in range(k):
            for j in range(k):
                step = np.zeros((k, k))
                step[t, j] = 1e-6
                up, down = _metric_on_matrix(name, c + step), _metric_on_matrix(name, c - step)
                grad[t, j] = (up - down) / 2e-6
        var = sum(grad[:, j] @ covs[j] @ grad[:, j] for j in range(k))
        assert getattr(est, name).std == pytest.approx(math.sqrt(var), rel=1e-5), name


def test_expected_auc_counts_every_pair_and_ties_half() -> None:
    rng = np.random.default_rng(5)
    q = np.round(rng.uniform(size=300), 1)  # few distinct scores: many ties
    concordant = pairs = 0.0
    for i in range(300):
        for j in range(300):
            if i != j:
                w = q[i] * (1 - q[j])
                pairs += w
                concordant += w * (1.0 if q[i] > q[j] else 0.5 if q[i] == q[j] else 0.0)
    est = estimate(np.column_stack([1 - q, q])).roc_auc
    assert est is not None
    assert est.value == pytest.approx(concordant / pairs)


def test_auc_band_is_hanley_mcneil_at_the_expected_class_counts() -> None:
    q = binary_proba(np.random.default_rng(6), 800)[:, 1]
    est = estimate(np.column_stack([1 - q, q])).roc_auc
    assert est is not None
    a, n1 = est.value, q.sum()
    n2 = 800 - n1
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2))
    assert est.std == pytest.approx(se)
    assert (est.low, est.high) == pytest.approx((a - 1.96 * se, a + 1.96 * se))


# --- against scikit-learn on labels drawn from the probabilities -------------------------------


def test_estimates_are_unbiased_when_labels_follow_the_probabilities(drawn) -> None:
    p, realized_draws = drawn
    for name, est in estimate(p).metrics().items():
        values = realized_draws[name]
        stderr = values.std(ddof=1) / math.sqrt(len(values))
        # Ratio metrics carry an O(1/n) bias: far below the standard error at these sizes.
        assert abs(values.mean() - est.value) < 3 * stderr, name


def test_bands_cover_the_realized_metric_95_percent_of_the_time(drawn) -> None:
    p, realized_draws = drawn
    for name, est in estimate(p).metrics().items():
        coverage = np.mean([est.covers(v) for v in realized_draws[name]])
        if name == "roc_auc":
            # Hanley–McNeil also counts the error of sampling the scores: wider than needed.
            assert coverage >= 0.92, name
        else:
            assert 0.92 <= coverage <= 0.98, (name, coverage)


def test_delta_method_std_matches_the_spread_over_draws(drawn) -> None:
    p, realized_draws = drawn
    for name, est in estimate(p).metrics().items():
        spread = realized_draws[name].std(ddof=1)
        if name == "roc_auc":
            assert spread <= est.std * 1.05, name  # conservative, never narrower
        else:
            assert spread == pytest.approx(est.std, rel=0.10), name


# --- realized -------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5])
def test_realized_matches_sklearn(k: int) -> None:
    rng = np.random.default_rng(8)
    p = softmax_proba(rng, 700, k)
    p = np.round(p, 2)  # ties in the scores
    p = p / p.sum(axis=1, keepdims=True)
    y = draw_labels(p, rng)
    got = realized(p, y)
    want = sklearn_metrics(p, y)
    assert got["n"] == 700
    for name, value in want.items():
        assert got[name] == pytest.approx(value), name
    if k > 2:
        assert (got["precision"], got["recall"], got["roc_auc"]) == (None, None, None)


def test_realized_from_predicted_classes() -> None:
    rng = np.random.default_rng(9)
    pred, y = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    got = realized(pred, y)
    assert got["accuracy"] == pytest.approx(metrics.accuracy_score(y, pred))
    assert got["macro_f1"] == pytest.approx(metrics.f1_score(y, pred, average="macro"))
    # A class neither predicted nor true counts as F1 = 0 when n_classes names it.
    wide = realized(pred, y, n_classes=4)
    assert wide["macro_f1"] == pytest.approx(got["macro_f1"] * 3 / 4)
    binary = realized(pred % 2, y % 2)
    assert binary["precision"] == pytest.approx(metrics.precision_score(y % 2, pred % 2))
    assert binary["recall"] == pytest.approx(metrics.recall_score(y % 2, pred % 2))
    assert binary["roc_auc"] is None  # no probabilities


def test_realized_edge_cases() -> None:
    empty = realized(np.zeros((0, 3)), np.zeros(0, dtype=int))
    assert empty == {
        "n": 0,
        "accuracy": None,
        "macro_f1": None,
        "precision": None,
        "recall": None,
        "roc_auc": None,
    }
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    one_class = realized(p, [0, 0, 0])
    assert one_class["roc_auc"] is None and one_class["recall"] == 0.0
    assert one_class["precision"] == 0.0 and one_class["accuracy"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="labels"):
        realized(p, [0, 1])
    with pytest.raises(ValueError, match="class indices"):
        realized(p, [0, 2, 1])


# --- drop, validation ------------------------------------------------------------------------


def test_drop_adds_the_reference_sampling_error_in_quadrature() -> None:
    est = Estimate(value=0.80, low=0.76, high=0.84, std=0.02)
    d = drop(0.90, 900, est)
    std = math.sqrt(0.02**2 + 0.9 * 0.1 / 900)
    assert d.value == pytest.approx(0.10)
    assert d.std == pytest.approx(std)
    assert (d.low, d.high) == pytest.approx((0.10 - 1.96 * std, 0.10 + 1.96 * std))
    better = drop(0.70, 100, est, z=1.0)
    assert better.value == pytest.approx(-0.10) and better.low < -0.10  # not clipped
    with pytest.raises(ValueError, match="reference_n"):
        drop(0.9, 0, est)
    with pytest.raises(ValueError, match="reference_value"):
        drop(1.5, 10, est)


def test_bands_are_clipped_to_the_unit_interval() -> None:
    p = np.array([[0.999, 0.001]] * 3 + [[0.5, 0.5]])
    est = estimate(p)
    assert 0.0 <= est.accuracy.low <= est.accuracy.value <= est.accuracy.high <= 1.0
    assert est.precision is not None and est.precision.value == 0.0  # nothing predicted 1


@pytest.mark.parametrize(
    ("proba", "message"),
    [
        (np.zeros((0, 3)), "empty window"),
        (np.zeros(3), "n×k"),
        (np.ones((4, 1)), "at least 2"),
        (np.full((4, 3), 0.5), "summing to 1"),
        (np.array([[1.2, -0.2], [0.5, 0.5]]), "in \\[0, 1\\]"),
        (np.array([[np.nan, 1.0], [0.5, 0.5]]), "probabilities"),
    ],
)
def test_bad_input_is_a_clear_value_error(proba, message) -> None:
    with pytest.raises(ValueError, match=message):
        estimate(proba)
    with pytest.raises(ValueError, match=message):
        expected_confusion(proba)

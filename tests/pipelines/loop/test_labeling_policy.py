"""Uncertainty scores checked against numpy/scipy; queue selection and ranking on crafted tables."""

import numpy as np
import pytest
from scipy import stats

from pipelines.loop.labeling_policy import (
    Band,
    QueuePolicy,
    confidence,
    entropy,
    informativeness,
    margin,
    select_for_queue,
)
from pipelines.serving.band import Band as PredictingBand

MATRICES = {
    "one-hot": [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
    "uniform": [[0.25, 0.25, 0.25, 0.25]],
    "binary": [[0.5, 0.5], [0.9, 0.1], [0.35, 0.65]],
    "three-classes": [[0.2, 0.5, 0.3], [0.45, 0.45, 0.1], [0.7, 0.2, 0.1]],
    "dirichlet-k5": np.random.default_rng(0).dirichlet(np.ones(5), size=50),
    "dirichlet-k12-peaked": np.random.default_rng(1).dirichlet(np.full(12, 0.1), size=50),
    "no-rows": np.empty((0, 3)),
}


def _reference(proba):
    """Row by row, the plain way: max, sorted difference, scipy's entropy in base k."""
    p = np.asarray(proba, dtype=float)
    k = p.shape[1]
    conf = np.array([row.max() for row in p])
    marg = np.array([np.sort(row)[-1] - np.sort(row)[-2] for row in p])
    ent = np.array([stats.entropy(row, base=k) for row in p])
    return conf, marg, ent


@pytest.mark.parametrize("proba", MATRICES.values(), ids=MATRICES.keys())
def test_scores_match_numpy_and_scipy(proba):
    conf, marg, ent = _reference(proba)
    np.testing.assert_allclose(confidence(proba), conf, atol=1e-12)
    np.testing.assert_allclose(margin(proba), marg, atol=1e-12)
    np.testing.assert_allclose(entropy(proba), ent, atol=1e-12)


@pytest.mark.parametrize(
    ("proba", "conf", "marg", "ent"),
    [
        pytest.param([[1.0, 0.0]], 1.0, 1.0, 0.0, id="certain"),
        pytest.param([[0.5, 0.5]], 0.5, 0.0, 1.0, id="coin-flip"),
        pytest.param([[1 / 3] * 3], 1 / 3, 0.0, 1.0, id="uniform-k3"),
        pytest.param([[0.6, 0.4, 0.0]], 0.6, 0.2, stats.entropy([0.6, 0.4], base=3), id="zero"),
        pytest.param([[1.0]], 1.0, 1.0, 0.0, id="single-class"),
    ],
)
def test_scores_on_known_rows(proba, conf, marg, ent):
    assert confidence(proba)[0] == pytest.approx(conf)
    assert margin(proba)[0] == pytest.approx(marg)
    assert entropy(proba)[0] == pytest.approx(ent)


@pytest.mark.parametrize(
    "proba",
    [
        pytest.param([0.2, 0.8], id="1-d"),
        pytest.param(np.empty((2, 0)), id="no-classes"),
        pytest.param([[0.5, np.nan]], id="nan"),
        pytest.param([[1.2, -0.2]], id="negative"),
        pytest.param([[np.inf, 0.0]], id="inf"),
    ],
)
@pytest.mark.parametrize("score", [confidence, margin, entropy], ids=lambda f: f.__name__)
def test_scores_reject_what_is_not_a_probability_matrix(score, proba):
    with pytest.raises(ValueError):
        score(proba)


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        pytest.param("margin", lambda p: 1 - margin(p), id="margin"),
        pytest.param("entropy", entropy, id="entropy"),
        pytest.param("confidence", lambda p: 1 - confidence(p), id="confidence"),
    ],
)
def test_informativeness_is_the_method_score_turned_higher_is_more_useful(method, expected):
    proba = MATRICES["dirichlet-k5"]
    scores = informativeness(proba, method)
    np.testing.assert_allclose(scores, expected(proba))
    assert ((scores >= 0) & (scores <= 1 + 1e-12)).all()


@pytest.mark.parametrize("method", ["margin", "entropy", "confidence"])
def test_every_method_ranks_a_near_tie_above_a_sure_prediction(method):
    proba = np.array([[0.9, 0.05, 0.05], [0.5, 0.45, 0.05], [0.34, 0.33, 0.33]])
    assert list(np.argsort(-informativeness(proba, method))) == [2, 1, 0]


def test_margin_and_entropy_disagree_where_the_tail_matters():
    # Row 0: a close top-2 race with no tail; row 1: clear winner, mass spread over the tail.
    proba = np.array([[0.5, 0.5, 0.0, 0.0, 0.0], [0.4, 0.15, 0.15, 0.15, 0.15]])
    assert informativeness(proba, "margin").argmax() == 0
    assert informativeness(proba, "entropy").argmax() == 1


def test_informativeness_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        informativeness([[0.5, 0.5]], "random")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scores", "mask", "budget", "expected"),
    [
        pytest.param([0.1, 0.9, 0.5], [1, 1, 1], 10, [1, 2, 0], id="all-best-first"),
        pytest.param([0.1, 0.9, 0.5], [1, 1, 1], 2, [1, 2], id="budget-cuts-least-useful"),
        pytest.param([0.1, 0.9, 0.5], [1, 0, 1], 10, [2, 0], id="certain-never-enqueued"),
        pytest.param([0.1, 0.9, 0.5], [1, 1, 1], 0, [], id="budget-spent"),
        pytest.param([0.1, 0.9, 0.5], [1, 1, 1], -3, [], id="budget-overspent"),
        pytest.param([0.1, 0.9, 0.5], [0, 0, 0], 10, [], id="nothing-uncertain"),
        pytest.param([0.5, 0.7, 0.5, 0.5], [1, 1, 1, 1], 3, [1, 0, 2], id="ties-earlier-row"),
        pytest.param([np.nan, 0.2, 0.3], [1, 1, 1], 3, [2, 1, 0], id="nan-last"),
        pytest.param([], [], 5, [], id="empty"),
    ],
)
def test_select_for_queue(scores, mask, budget, expected):
    picked = select_for_queue(np.array(scores), np.array(mask, dtype=bool), budget)
    assert picked.tolist() == expected


def test_select_for_queue_ties_keep_row_order_on_large_batches():
    # Small arrays sort stably by accident; 10k rows with 3 distinct scores do not.
    scores = np.random.default_rng(2).choice([0.2, 0.5, 0.8], size=10_000)
    picked = select_for_queue(scores, np.ones(scores.size, dtype=bool), 10_000)
    expected = np.concatenate([np.flatnonzero(scores == v) for v in (0.8, 0.5, 0.2)])
    assert picked.tolist() == expected.tolist()


def test_select_for_queue_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must be equal"):
        select_for_queue(np.zeros(3), np.ones(2, dtype=bool), 5)


def test_queue_policy_defaults_come_from_the_seeds():
    policy = QueuePolicy()
    assert policy.method == "margin"
    assert (policy.band.low, policy.band.high) == (0.4, 0.7)
    assert policy.budget_per_hour == 100
    assert Band is PredictingBand  # one band for the prediction path and the queue


@pytest.mark.parametrize(
    ("enqueued", "left"),
    [(0, 100), (37, 63), (100, 0), (250, 0)],
    ids=["fresh", "partly-used", "exactly-spent", "over-spent"],
)
def test_budget_left(enqueued, left):
    assert QueuePolicy().budget_left(enqueued) == left


def test_queue_policy_select_keeps_the_band_strict_and_the_budget():
    # Confidences: 0.4 (edge, out), 0.55, 0.7 (edge, out), 0.95 (sure), 0.45, 0.65.
    proba = np.array(
        [[0.4, 0.3, 0.3], [0.55, 0.45, 0], [0.7, 0.3, 0], [0.95, 0.05, 0], [0.45, 0.4, 0.15],
         [0.65, 0.35, 0]]
    )  # fmt: skip
    indices, scores = QueuePolicy().select(proba, budget_left=2)
    np.testing.assert_allclose(scores, informativeness(proba, "margin"))
    # Margins among the in-band rows: 0.10 (row 1), 0.05 (row 4), 0.30 (row 5).
    assert indices.tolist() == [4, 1]
    assert QueuePolicy().select(proba, budget_left=10)[0].tolist() == [4, 1, 5]


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"method": "random"}, id="method"),
        pytest.param({"budget_per_hour": -1}, id="budget"),
        pytest.param({"band": Band(0.7, 0.4)}, id="band-inverted"),
        pytest.param({"band": Band(0.4, 1.5)}, id="band-above-1"),
    ],
)
def test_queue_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        QueuePolicy(**kwargs)

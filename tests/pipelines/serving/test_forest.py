"""The compiled forest against scikit-learn's own `predict_proba`, on the same inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits, make_classification
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from pipelines.serving.forest import CompiledForest


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


@pytest.mark.parametrize(
    "estimator",
    [
        RandomForestClassifier(n_estimators=40, max_depth=10, random_state=0),
        ExtraTreesClassifier(n_estimators=20, random_state=0),  # grown to full depth
        DecisionTreeClassifier(max_depth=6, random_state=0),
        RandomForestClassifier(n_estimators=10, class_weight="balanced", random_state=0),
    ],
    ids=["forest", "extra-trees", "one-tree", "weighted"],
)
def test_probabilities_equal_sklearn(estimator, digits) -> None:
    x, y = digits
    estimator.fit(x[:1000], y[:1000])
    forest = CompiledForest.from_estimator(estimator)
    assert forest is not None
    rng = np.random.default_rng(1)
    for rows in (x[1000:], rng.normal(8, 8, size=(3000, 64)).astype(np.float32), x[1000:1001]):
        np.testing.assert_allclose(
            forest.predict_proba(rows), estimator.predict_proba(rows), rtol=0, atol=1e-12
        )


def test_values_on_the_thresholds_go_the_same_way() -> None:
    """scikit-learn tests float32 x <= float64 threshold; the float32 thresholds stored here
    must send values equal to, just above and just below each threshold the same way."""
    x, y = make_classification(n_samples=600, n_features=5, random_state=0)
    x = (x * 1e3).astype(np.float32)  # large values: float32 rounding matters
    estimator = RandomForestClassifier(n_estimators=15, random_state=0).fit(x, y)
    forest = CompiledForest.from_estimator(estimator)
    assert forest is not None
    thresholds = np.concatenate([t.tree_.threshold[t.tree_.feature >= 0] for t in estimator])
    edges = thresholds.astype(np.float32)
    edges = np.concatenate([edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)])
    rows = np.tile(edges[:, None], (1, 5)).astype(np.float32)
    assert (thresholds.astype(np.float32) != thresholds).any()  # the case being tested exists
    np.testing.assert_allclose(
        forest.predict_proba(rows), estimator.predict_proba(rows), rtol=0, atol=1e-12
    )


@pytest.mark.parametrize(
    "estimator",
    [
        LogisticRegression(max_iter=200),
        GradientBoostingClassifier(n_estimators=5),
        make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=5)),
    ],
    ids=["linear", "boosting", "pipeline"],
)
def test_other_estimators_are_not_compiled(estimator, digits) -> None:
    x, y = digits
    estimator.fit(x[:300], y[:300])
    assert CompiledForest.from_estimator(estimator) is None


def test_multi_output_forests_are_not_compiled(digits) -> None:
    x, y = digits
    two = np.stack([y, y % 2], axis=1)
    estimator = RandomForestClassifier(n_estimators=3, random_state=0).fit(x[:300], two[:300])
    assert CompiledForest.from_estimator(estimator) is None


def test_file_round_trip(digits, tmp_path: Path) -> None:
    x, y = digits
    estimator = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, y)
    forest = CompiledForest.from_estimator(estimator)
    assert forest is not None
    path = tmp_path / "forest.npz"
    path.write_bytes(forest.to_bytes())
    loaded = CompiledForest.load(path)
    assert loaded.depth == forest.depth
    np.testing.assert_array_equal(loaded.predict_proba(x), forest.predict_proba(x))
    # A file may hold its indexes as int32: they load as uint32, with the same answers.
    old = {k: getattr(forest, k) for k in ("child", "feature", "threshold", "value", "roots")}
    old.update({k: old[k].astype(np.int32) for k in ("child", "feature", "roots")})
    np.savez(path, depth=np.int64(forest.depth), **old)
    older = CompiledForest.load(path)
    assert older.child.dtype == np.uint32
    np.testing.assert_allclose(older.predict_proba(x), estimator.predict_proba(x), atol=1e-12)

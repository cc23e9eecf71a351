"""Calibration maps against scikit-learn's `CalibratedClassifierCV`, the method choice, the
identity fallback, and the calibrated models of both demos."""

from __future__ import annotations

import json
import logging
import timeit
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_digits, make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.frozen import FrozenEstimator

from pipelines import demo
from pipelines.models import calibration, training
from pipelines.models.calibration import Calibration, fit_calibration, fit_map
from pipelines.schema import FeatureSchema, infer_schema
from pipelines.store import LabeledRows

logger = logging.getLogger(__name__)

METHODS = ["isotonic", "sigmoid", "temperature"]


@pytest.fixture(scope="module", params=["binary", "multiclass"])
def frozen(request: pytest.FixtureRequest) -> dict[str, np.ndarray | RandomForestClassifier]:
    """A forest fitted on one third of a dataset; calibration rows and test rows from the rest."""
    if request.param == "binary":
        x, y = make_classification(n_samples=1500, n_informative=4, random_state=0)
    else:
        x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    part = np.arange(len(y)) % 3
    estimator = RandomForestClassifier(n_estimators=30, max_depth=8, random_state=0)
    estimator.fit(x[part == 0], y[part == 0])
    return {
        "estimator": estimator,
        "x_cal": x[part == 1],
        "y_cal": y[part == 1],
        "x_test": x[part == 2],
    }


@pytest.mark.parametrize("method", METHODS)
def test_maps_equal_scikit_learn(frozen: dict, method: str) -> None:
    est, x_cal, y_cal, x_test = (frozen[k] for k in ("estimator", "x_cal", "y_cal", "x_test"))
    reference = CalibratedClassifierCV(FrozenEstimator(est), method=method).fit(x_cal, y_cal)
    ours = fit_map(est.predict_proba(x_cal), y_cal, est.classes_, method)
    # the fitted numbers are scikit-learn's own
    calibrators = reference.calibrated_classifiers_[0].calibrators
    if method == "isotonic":
        assert len(ours.thresholds) == len(calibrators) == (1 if len(est.classes_) == 2 else 10)
        for c, x, y in zip(calibrators, ours.thresholds, ours.values, strict=True):
            assert list(x) == c.X_thresholds_.tolist() and list(y) == c.y_thresholds_.tolist()
    elif method == "sigmoid":
        assert list(ours.a) == [c.a_ for c in calibrators]
        assert list(ours.b) == [c.b_ for c in calibrators]
    else:
        assert ours.beta == calibrators[0].beta_
    # and so are the probabilities, for a batch and row by row
    raw = est.predict_proba(x_test)
    expected = reference.predict_proba(x_test)
    np.testing.assert_allclose(ours.apply(raw), expected, rtol=0, atol=1e-12)
    rows = np.vstack([ours.apply(raw[i : i + 1]) for i in range(len(raw))])
    np.testing.assert_allclose(rows, expected, rtol=0, atol=1e-12)
    # float32 probabilities (ONNX Runtime's) are read as float64, as scikit-learn reads them
    np.testing.assert_array_equal(
        ours.apply(raw.astype(np.float32)), ours.apply(raw.astype(np.float32).astype(np.float64))
    )


@pytest.mark.parametrize("method", METHODS)
def test_json_round_trip_is_exact(frozen: dict, method: str) -> None:
    est, x_cal, y_cal, x_test = (frozen[k] for k in ("estimator", "x_cal", "y_cal", "x_test"))
    fitted = fit_calibration(est.predict_proba(x_cal), y_cal, est.classes_, methods=(method,))
    assert fitted.method == method
    back = Calibration.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert back == fitted and back.scores == fitted.scores and back.why == fitted.why
    raw = est.predict_proba(x_test)
    np.testing.assert_array_equal(back.apply(raw), fitted.apply(raw))


def test_the_method_with_the_lowest_out_of_fold_log_loss_is_chosen() -> None:
    rng = np.random.default_rng(0)
    f = rng.uniform(size=3000)
    raw = np.column_stack([1 - f, f])
    classes = np.array([0, 1])
    # the outcome's real rate is a step in the score: isotonic's steps fit it, smooth maps can't
    y = (rng.uniform(size=len(f)) < np.where(f < 0.5, 0.3, 0.7)).astype(int)
    chosen = fit_calibration(raw, y, classes)
    assert set(chosen.scores) == {"none", *calibration.METHODS}
    for method in calibration.METHODS:
        expected = calibration.out_of_fold_log_loss(raw, y, classes, method)
        assert chosen.scores[method] == pytest.approx(expected, rel=1e-12)
    assert chosen.method == "isotonic"
    assert chosen.scores["isotonic"] < min(chosen.scores["sigmoid"], chosen.scores["temperature"])
    assert replace(chosen, why="") == fit_map(raw, y, classes, "isotonic")  # on every row
    # a rate smooth in the score: a smooth map wins, whichever is best out of fold
    y = (rng.uniform(size=len(f)) < 1 / (1 + np.exp(-4 * (f - 0.5)))).astype(int)
    chosen = fit_calibration(raw, y, classes)
    best = min(calibration.METHODS, key=lambda m: chosen.scores[m])
    assert chosen.method == best != "isotonic"
    assert "lowest out-of-fold log-loss" in chosen.why
    # the candidates can be narrowed, and the first wins a tie
    assert fit_calibration(raw, y, classes, methods=("isotonic",)).method == "isotonic"


def test_folds_are_stratified_and_deterministic() -> None:
    y = np.array([0] * 12 + [1] * 8 + [2] * 5)
    fold = calibration.folds(y, np.array([0, 1, 2]))
    np.testing.assert_array_equal(fold, calibration.folds(y, np.array([0, 1, 2])))
    for c in (0, 1, 2):
        counts = np.bincount(fold[y == c], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_too_few_rows_or_a_missing_class_keeps_the_raw_probabilities() -> None:
    rng = np.random.default_rng(0)
    raw = rng.dirichlet([1, 1, 1], size=100)
    classes = np.array([0, 1, 2])
    few = fit_calibration(raw[:20], rng.integers(0, 3, 20), classes)
    assert few.method == "none" and not few.calibrated and "fewer than 30" in few.why
    missing = fit_calibration(raw, rng.integers(0, 2, 100), classes)
    assert missing.method == "none" and "class 2" in missing.why
    assert missing.apply(raw) is raw  # the identity, not even a copy
    assert Calibration.from_dict(missing.to_dict()) == missing


def test_a_row_every_map_sends_to_zero_is_uniform() -> None:
    """scikit-learn's edge case: every one-against-the-rest map gives 0, the row is uniform."""
    step = ((0.0, 0.5, 1.0),) * 3
    zero_below_half = Calibration("isotonic", 3, thresholds=step, values=((0.0, 0.0, 1.0),) * 3)
    rows = np.array([[0.2, 0.2, 0.6], [0.4, 0.3, 0.3], [0.0, 0.0, 1.0]])
    expected = np.array([[0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(zero_below_half.apply(rows), expected)
    np.testing.assert_array_equal(zero_below_half.apply(rows[1:2]), expected[1:2])


def test_bad_maps_and_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown calibration method"):
        Calibration("platt", 2)
    with pytest.raises(ValueError, match="needs 3 non-empty threshold maps"):
        Calibration("isotonic", 3, thresholds=((0.0, 1.0),), values=((0.0, 1.0),))
    with pytest.raises(ValueError, match=r"needs 1 \(a, b\) pairs"):
        Calibration("sigmoid", 2, a=(1.0, 2.0), b=(0.0, 0.0))
    with pytest.raises(ValueError, match=r"expected \(rows, 2\)"):
        Calibration("sigmoid", 2, a=(-3.0,), b=(1.5,)).apply(np.ones((4, 3)) / 3)


def test_single_row_apply_costs_a_few_numpy_calls(frozen: dict) -> None:
    """One request's map: about as much as a few calls of numpy on a tiny array (each
    method's figures are logged: `-o log_cli=true --log-cli-level=INFO`)."""
    est, x_cal, y_cal = frozen["estimator"], frozen["x_cal"], frozen["y_cal"]
    row = est.predict_proba(frozen["x_test"][:1])
    tiny = np.ones((1, len(est.classes_)))
    one_call = min(timeit.repeat(lambda: np.add(tiny, 1.0), number=2000, repeat=5)) / 2000
    for method in METHODS:
        fitted = fit_map(est.predict_proba(x_cal), y_cal, est.classes_, method)
        cost = min(timeit.repeat(partial(fitted.apply, row), number=2000, repeat=5)) / 2000
        logger.info("%s: %.1f µs, %.0f numpy calls", method, cost * 1e6, cost / one_call)
        assert cost < 40 * one_call


def test_reliability_curve_bins_match_the_calibration_error() -> None:
    rng = np.random.default_rng(2)
    proba = rng.dirichlet([2, 1, 1], size=500)
    classes = np.array([0, 1, 2])
    y = rng.integers(0, 3, size=500)
    curve = calibration.reliability_curve(proba, y, classes)
    assert len(curve["bins"]) == 10 and curve["n"] == 500
    assert sum(b["count"] for b in curve["bins"]) == 500
    filled = [b for b in curve["bins"] if b["count"]]
    ece = sum(b["count"] / 500 * abs(b["accuracy"] - b["confidence"]) for b in filled)
    assert curve["ece"] == pytest.approx(ece, abs=1e-12)
    assert curve["ece"] == calibration.expected_calibration_error(proba, y, classes)
    assert all(b["confidence"] is None for b in curve["bins"] if not b["count"])
    assert json.loads(json.dumps(curve)) == curve


def demo_rows(name: str) -> tuple[LabeledRows, FeatureSchema]:
    """The labeled rows a store seeded with the demo (`demo.seed_store`) reads back: the same
    ids (batch id and row number, in the store's order), values and labels."""
    split = demo.demo_split(name=name)
    records = demo.records(split.train)
    labels = split.train[split.label].tolist()
    schema = infer_schema(records=records, labels=labels)
    batch = f"demo-train-{name}-0" if name != "survey" else "demo-train-0"
    ids = [f"{batch}:{i}" for i in range(len(records))]
    order = sorted(range(len(ids)), key=ids.__getitem__)
    columns = schema.columns(records=[records[i] for i in order])
    stored = [str(label) for label in schema.labels_to_store([labels[i] for i in order])]
    return LabeledRows(0, [ids[i] for i in order], columns, stored, ["demo"] * len(ids)), schema


@pytest.mark.parametrize("name", ["digits", "survey"])
def test_the_default_model_of_each_demo_is_calibrated(name: str) -> None:
    """The issue's target: held-out ECE at most 0.05 with the default estimator, and never
    worse than the raw probabilities'."""
    rows, schema = demo_rows(name)
    fitted = training.fit(rows, schema, training.TrainConfig())
    m = fitted.metrics
    logger.info("%s: %s (%s), %s", name, fitted.calibration.method, fitted.calibration.why, m)
    assert fitted.calibration.calibrated and m["calibration_rows"] == fitted.calibration.rows > 0
    assert m["ece"] <= m["ece_uncalibrated"]
    assert m["ece"] <= 0.05
    assert m["log_loss"] <= m["log_loss_uncalibrated"]
    assert fitted.reliability["calibrated"]["ece"] == m["ece"]
    assert fitted.reliability["uncalibrated"]["ece"] == m["ece_uncalibrated"]
    files = fitted.extra_files()
    assert Calibration.from_dict(json.loads(files["calibration.json"])) == fitted.calibration
    assert json.loads(files["reliability.json"]) == fitted.reliability

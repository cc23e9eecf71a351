"""Training and the registry: metrics against scikit-learn, ONNX equal to sklearn, round trip."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss

from pipelines import demo
from pipelines.models import calibration, promotion, training
from pipelines.models.registry import CHAMPION, FOREST_FILE, Registry
from pipelines.serving.model import ServingModel, load_version
from pipelines.store import Store
from tests.conftest import make_settings


def test_evaluate_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    proba = rng.dirichlet([1, 1, 1], size=200)
    classes = np.array([0, 1, 2])
    y = rng.integers(0, 3, size=200)
    m = training.evaluate(proba, y, classes)
    pred = proba.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["log_loss"] == pytest.approx(log_loss(y, proba, labels=classes))
    for c in classes:
        assert m[f"recall_{c}"] == pytest.approx(((pred == c) & (y == c)).sum() / (y == c).sum())


def test_calibration_error_of_a_calibrated_and_an_overconfident_model() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(0.5, 1.0, size=20000)
    y = (rng.uniform(size=20000) < p).astype(int)  # outcome 1 with probability p
    calibrated = np.column_stack([1 - p, p])
    classes = np.array([0, 1])
    assert calibration.expected_calibration_error(calibrated, y, classes) < 0.02
    overconfident = np.column_stack([np.zeros_like(p), np.ones_like(p)])
    # always 100% sure of class 1 while right ~75% of the time: ECE ~0.25
    ece = calibration.expected_calibration_error(overconfident, y, classes)
    assert ece == pytest.approx(1 - y.mean(), abs=1e-9)


def test_registry_round_trip(trained_copy: Path) -> None:
    s = make_settings(trained_copy)
    store = Store.open(s)
    registry = Registry.from_settings(s)
    result = training.train(
        store, registry, training.TrainConfig(params={"n_estimators": 15}), promote=False
    )
    info = registry.version(result.version)
    assert info.snapshot_id == result.snapshot_id
    assert info.metrics["accuracy"] == pytest.approx(result.metrics["accuracy"])
    assert info.params["n_estimators"] == "15"
    assert registry.alias_version(CHAMPION) == "1"  # not promoted
    assert result.snapshot_id in registry.trained_snapshots()
    # the exact training set can be read back from the recorded snapshot
    rows = store.labeled_rows(info.snapshot_id)
    assert len(rows) == result.n_train + result.n_test
    # the run logged the calibration with the model
    assert info.metrics["ece"] <= info.metrics["ece_uncalibrated"]
    assert info.metrics["calibration_rows"] > 0
    assert info.tags["calibration"] != "none"
    # the served (compiled forest) model and the logged estimator, calibrated, agree on unseen
    # rows
    served = load_version(registry, result.version)
    assert served.runtime == "forest" and served.schema.classes == (0, 1)
    assert served.calibration == info.tags["calibration"]
    x = served.schema.encode(
        served.schema.columns(records=demo.records(demo.demo_split(name="survey").live))
    )
    estimator = registry.load_estimator(result.version)
    with tempfile.TemporaryDirectory() as tmp:
        folder = registry.serving_files(result.version, Path(tmp))
        assert {"calibration.json", "reliability.json"} <= {f.name for f in folder.iterdir()}
        fitted = calibration.Calibration.from_dict(
            json.loads((folder / "calibration.json").read_text())
        )
        curves = json.loads((folder / "reliability.json").read_text())
        assert curves["calibrated"]["ece"] == pytest.approx(info.metrics["ece"])
        expected = fitted.apply(estimator.predict_proba(x))
        np.testing.assert_allclose(served.predict(x)[1], expected, atol=1e-12)
        # the ONNX export, served when there is no forest file, agrees too
        (folder / FOREST_FILE).unlink()
        onnx = ServingModel.from_files("m", result.version, folder)
        assert onnx.runtime == "onnx" and onnx.calibration == fitted.method
        np.testing.assert_allclose(onnx.predict(x)[1], expected, atol=1e-5)


def test_promote_and_rollback_write_the_audit_trail(trained_copy: Path) -> None:
    s = make_settings(trained_copy)
    store = Store.open(s)
    registry = Registry.from_settings(s)
    v2 = training.train(
        store, registry, training.TrainConfig(params={"n_estimators": 5}), promote=False
    ).version
    promotion.promote(store, registry, v2, who="test", why="better")
    assert registry.alias_version(CHAMPION) == v2
    with pytest.raises(promotion.PromotionError, match="already the champion"):
        promotion.promote(store, registry, v2, who="test", why="again")
    with pytest.raises(promotion.PromotionError, match="no version 99"):
        promotion.promote(store, registry, "99", who="test", why="nope")
    assert promotion.rollback(store, registry, who="test", why="regression") == {
        "from_version": v2,
        "to_version": "1",
    }
    assert registry.alias_version(CHAMPION) == "1"
    events = store.model_events(s.model_name)
    assert [(e["event"], e["from_version"], e["to_version"]) for e in events[:2]] == [
        ("rolled_back", v2, "1"),
        ("promoted", "1", v2),
    ]
    assert events[0]["who"] == "test" and events[0]["why"] == "regression"


def test_training_uses_human_labels_on_predictions(trained_copy: Path) -> None:
    """Feedback labels on logged predictions join the training set at the next snapshot."""
    s = make_settings(trained_copy)
    store = Store.open(s)
    before = len(store.labeled_rows())
    from pipelines.store.spool import chunks_to_table

    schema = store.dataset_schema()
    recs = demo.records(demo.demo_split(name="survey").shifted.head(3))
    cols = schema.columns(records=recs)
    chunk = {
        "ids": ["p1", "p2", "p3"],
        "ts": 0.0,
        "model_name": "m",
        "model_version": "1",
        "features": {k: v.tolist() for k, v in cols.items()},
        "prediction": ["0"] * 3,
        "confidence": [0.6] * 3,
        "probabilities": [[0.6, 0.4]] * 3,
        "latency_ms": [1.0] * 3,
        "uncertain": [True] * 3,
    }
    store.append_predictions(chunks_to_table([chunk], schema))
    store.add_feedback("p1", label="1", correct=False)
    store.add_feedback("p2", label=None, correct=True)  # no label: not a training row
    rows = store.labeled_rows()
    assert len(rows) == before + 1
    i = rows.record_ids.index("p1")
    assert rows.labels[i] == "1" and rows.sources[i] == "feedback:api"
    assert rows.columns["age"][i] == recs[0]["age"]


def test_rollbacks_walk_back_through_history(trained_copy: Path) -> None:
    s = make_settings(trained_copy)
    store = Store.open(s)
    registry = Registry.from_settings(s)
    config = training.TrainConfig(params={"n_estimators": 3})
    v2 = training.train(store, registry, config).version  # promotes 1 -> v2
    v3 = training.train(store, registry, config).version  # promotes v2 -> v3
    assert promotion.rollback(store, registry, who="t", why="w")["to_version"] == v2
    assert promotion.rollback(store, registry, who="t", why="w")["to_version"] == "1"
    with pytest.raises(promotion.PromotionError, match="no earlier champion"):
        promotion.rollback(store, registry, who="t", why="w")
    assert registry.alias_version(CHAMPION) == "1" and v3 != v2

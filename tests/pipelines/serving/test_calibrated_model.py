"""A registered version serves calibrated probabilities on every runtime: the compiled forest,
ONNX Runtime and scikit-learn give what `CalibratedClassifierCV` on the frozen estimator gives,
fitted on the version's calibration rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator

from pipelines import demo
from pipelines.models import training
from pipelines.models.calibration import CALIBRATION_FILE, Calibration, fit_map
from pipelines.models.registry import CHAMPION, FOREST_FILE, Registry
from pipelines.serving.model import ServingModel
from pipelines.store import Store
from tests.conftest import make_settings

# The compiled forest sums scikit-learn's own float64 leaf values; ONNX Runtime computes in
# float32, and the registry keeps an export only within 1e-4 of scikit-learn.
TOLERANCE = {"sklearn": 1e-9, "forest": 1e-9, "onnx": 1e-5}
# A forest predicting on several threads adds its trees' probabilities in the order the threads
# finish, so its raw probabilities differ in their last bits from one call to the next; the
# sigmoid and temperature fits (iterative optimisers) follow them only within their own
# tolerance. The map registered in training is compared to a refit within this.
RUN_TO_RUN = 1e-6


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, trained_dir: Path) -> dict:
    """The trained store's champion: its serving folder, estimator, and its calibration and
    test rows recomputed from the store as `training.fit` cut them."""
    data_dir = tmp_path_factory.mktemp("calibrated") / "data"
    shutil.copytree(trained_dir, data_dir)
    s = make_settings(data_dir)
    store = Store.open(s)
    registry = Registry.from_settings(s)
    version = registry.alias_version(CHAMPION)
    assert version is not None
    info = registry.version(version)
    folder = registry.serving_files(version, data_dir.parent / "serving")
    schema = ServingModel.from_files("m", version, folder).schema
    data = store.labeled_rows(info.snapshot_id)
    store.close()
    labels = np.array([schema.label_from_store(v) for v in data.labels])
    x = schema.encode(data.columns)
    config = training.TrainConfig()
    test = training.heldout_mask(data.record_ids, config.test_size)
    train_ids = [r for r, held in zip(data.record_ids, test, strict=True) if not held]
    cal = training.heldout_mask([f"calibration:{i}" for i in train_ids], training.CALIBRATION_SHARE)
    live = demo.records(demo.demo_split(name="survey").live)
    return {
        "version": version,
        "folder": folder,
        # one thread: the same sums, in the same order, at every call
        "estimator": registry.load_estimator(version).set_params(n_jobs=1),
        "classes": np.array(schema.classes),
        "x_cal": x[~test][cal],
        "y_cal": labels[~test][cal],
        "x_test": np.vstack([x[test], schema.encode(schema.columns(records=live))]),
    }


def serve(champion: dict, runtime: str, tmp_path: Path, calibration: Calibration | None) -> Any:
    """The champion served on `runtime`, with `calibration` as its map (None: no map file)."""
    folder = tmp_path / runtime
    shutil.copytree(champion["folder"], folder)
    if calibration is None:
        (folder / CALIBRATION_FILE).unlink()
    else:
        (folder / CALIBRATION_FILE).write_text(json.dumps(calibration.to_dict()))
    if runtime != "forest":
        (folder / FOREST_FILE).unlink()
    if runtime == "sklearn":
        (folder / "model.onnx").unlink()
    estimator = champion["estimator"] if runtime == "sklearn" else None
    model = ServingModel.from_files("m", champion["version"], folder, estimator)
    assert model.runtime == runtime
    return model


def test_the_registered_map_was_fitted_on_the_calibration_rows(champion: dict) -> None:
    registered = Calibration.from_dict(
        json.loads((champion["folder"] / CALIBRATION_FILE).read_text())
    )
    assert registered.calibrated and registered.rows == len(champion["y_cal"])
    raw_cal = champion["estimator"].predict_proba(champion["x_cal"])
    refitted = fit_map(raw_cal, champion["y_cal"], champion["classes"], registered.method)
    # Equal up to the last bits of the forest's sums (`RUN_TO_RUN`).
    for ours, theirs in zip(refitted.thresholds, registered.thresholds, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    np.testing.assert_allclose(refitted.a + refitted.b, registered.a + registered.b, rtol=1e-6)
    assert refitted.beta == pytest.approx(registered.beta, rel=1e-6)


@pytest.mark.parametrize("method", ["registered", "isotonic", "sigmoid", "temperature"])
@pytest.mark.parametrize("runtime", ["forest", "onnx", "sklearn"])
def test_served_probabilities_equal_calibrated_classifier_cv(
    champion: dict, runtime: str, method: str, tmp_path: Path
) -> None:
    estimator, x_cal, y_cal = champion["estimator"], champion["x_cal"], champion["y_cal"]
    tolerance = TOLERANCE[runtime]
    if method == "registered":
        calibration = Calibration.from_dict(
            json.loads((champion["folder"] / CALIBRATION_FILE).read_text())
        )
        method = calibration.method
        tolerance = max(tolerance, RUN_TO_RUN)
    else:
        calibration = fit_map(estimator.predict_proba(x_cal), y_cal, champion["classes"], method)
    model = serve(champion, runtime, tmp_path, calibration)
    assert model.calibration == method
    reference = CalibratedClassifierCV(FrozenEstimator(estimator), method=method)
    expected = reference.fit(x_cal, y_cal).predict_proba(champion["x_test"])
    x = champion["x_test"]
    _, served = model.predict(x)
    np.testing.assert_allclose(served, expected, rtol=0, atol=tolerance)
    one_by_one = np.vstack([model.predict(x[i : i + 1])[1] for i in range(50)])
    np.testing.assert_allclose(one_by_one, expected[:50], rtol=0, atol=tolerance)


@pytest.mark.parametrize("runtime", ["forest", "onnx", "sklearn"])
def test_a_version_without_a_map_serves_raw_probabilities(
    champion: dict, runtime: str, tmp_path: Path
) -> None:
    model = serve(champion, runtime, tmp_path, None)
    assert model.calibration == "none"
    x = champion["x_test"]
    raw = champion["estimator"].predict_proba(x)
    np.testing.assert_allclose(model.predict(x)[1], raw, rtol=0, atol=TOLERANCE[runtime])


def test_a_map_for_other_classes_is_refused(champion: dict, tmp_path: Path) -> None:
    three = Calibration("temperature", 3, beta=2.0)
    with pytest.raises(RuntimeError, match="maps 3 classes, its schema has 2"):
        serve(champion, "forest", tmp_path, three)

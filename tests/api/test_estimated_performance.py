"""The champion's performance estimated on each check's window, through the API: the check's
answer, GET /api/metrics/performance, /metrics and the retraining conditions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import accuracy_score, roc_auc_score

from pipelines import demo
from pipelines.models.registry import CHAMPION, Registry
from tests.conftest import make_settings

SPLIT = demo.demo_split(name="survey")


def test_a_check_estimates_accuracy_from_the_served_probabilities(
    client: TestClient, trained_copy: Path
) -> None:
    frame = SPLIT.live.head(300)
    out = client.post("/predict", json={"records": demo.records(frame)}).json()
    proba = np.array(out["class_probabilities"])
    labels = frame["affair"].astype(int).to_numpy()
    for pid, label in zip(out["prediction_ids"][:120], labels[:120], strict=True):
        assert client.post("/feedback", json={"prediction_id": pid, "label": int(label)}).is_success

    summary = client.post("/monitoring/run", params={"window_size": 300}).json()
    estimate = summary["estimated_performance"]
    assert (estimate["n_window"], estimate["n_labeled"]) == (300, 120)
    accuracy = estimate["metrics"]["accuracy"]
    # Expected accuracy: the mean probability of the predicted class.
    assert accuracy["estimated"] == pytest.approx(proba.max(axis=1).mean(), abs=1e-9)
    assert accuracy["low"] < accuracy["estimated"] < accuracy["high"]
    predicted = proba[:120].argmax(axis=1)
    assert accuracy["realized"] == pytest.approx(accuracy_score(labels[:120], predicted))
    auc = estimate["metrics"]["roc_auc"]  # a binary model: precision, recall and AUC too
    assert auc["realized"] == pytest.approx(roc_auc_score(labels[:120], proba[:120, 1]))
    assert {"precision", "recall", "macro_f1"} <= set(estimate["metrics"])

    registry = Registry.from_settings(make_settings(trained_copy))
    info = registry.version(registry.alias_version(CHAMPION) or "")
    assert accuracy["reference"] == pytest.approx(info.metrics["accuracy"])
    assert accuracy["drop"] == pytest.approx(info.metrics["accuracy"] - accuracy["estimated"])
    assert accuracy["drop_low"] < accuracy["drop"] < accuracy["drop_high"]

    stored = client.get("/api/metrics/performance").json()
    assert stored["latest"]["run_id"] == summary["run_id"]
    assert [c["run_id"] for c in stored["history"]] == [summary["run_id"]]
    assert stored["latest"]["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert client.get("/api/metrics/performance", params={"version": "999"}).json() == {
        "model": "tabular",
        "latest": None,
        "history": [],
    }

    text = client.get("/metrics").text
    line = f'driftlab_estimated_performance{{metric="accuracy"}} {accuracy["estimated"]!r}'
    assert line in text
    assert 'driftlab_realized_performance{metric="roc_auc"}' in text

    figures = client.get("/api/retraining/conditions").json()["figures"]
    assert figures["estimated_accuracy"] == pytest.approx(accuracy["estimated"])
    assert figures["estimated_drop"] == pytest.approx(accuracy["drop"])
    assert figures["n_reference"] == int(info.metrics["n_test"])


def test_performance_is_refused_for_the_vision_model(refusing_client: TestClient) -> None:
    r = refusing_client.get("/api/metrics/performance", params={"model": "vision"})
    assert r.status_code == 422 and "class probabilities" in r.json()["detail"]
    r = refusing_client.get("/api/metrics/performance", params={"runs": 0})
    assert r.status_code == 422

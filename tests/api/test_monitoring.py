"""Drift through the API: a shifted stream shows up in /api/metrics/drift and /metrics."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from pipelines import demo

SPLIT = demo.demo_split(name="survey")


def send(client: TestClient, frame, with_labels: bool = True) -> None:
    for start in range(0, len(frame), 200):
        part = frame.iloc[start : start + 200]
        out = client.post("/predict", json={"records": demo.records(part)}).json()
        if with_labels:
            for pid, label in zip(out["prediction_ids"], part["affair"], strict=True):
                client.post("/feedback", json={"prediction_id": pid, "label": int(label)})


def test_no_drift_on_the_same_population(client: TestClient) -> None:
    assert client.get("/api/metrics/drift").json()["run_id"] is None
    send(client, SPLIT.live.head(400), with_labels=False)
    summary = client.post("/monitoring/run", params={"window_size": 400}).json()
    assert summary["status"] == "ok" and summary["n_current"] == 400
    assert summary["dataset_drift"] is False, summary["drifted_features"]


@pytest.mark.slow
def test_shifted_stream_is_detected_with_its_performance(client: TestClient) -> None:
    send(client, SPLIT.shifted.head(300))
    summary = client.post("/monitoring/run", params={"window_size": 300}).json()
    assert summary["dataset_drift"] is True
    assert {"age", "yrs_married"} <= set(summary["drifted_features"])
    perf = summary["performance"]
    assert perf["n_labeled"] == 300 and 0.4 < perf["accuracy"] < 0.8
    assert set(perf["per_class"]) == {"0", "1"}
    latest = client.get("/api/metrics/drift").json()
    assert latest["run_id"] == summary["run_id"] and latest["dataset_drift"] is True
    by_feature = {r["feature"]: r for r in latest["features"]}
    age = by_feature["age"]
    assert age["drifted"] and age["p_adjusted"] < 0.05 and age["effect_size"] >= 0.1
    assert (
        by_feature["label"]["role"] == "label" and by_feature["prediction"]["role"] == "prediction"
    )
    outputs = {f for f, row in by_feature.items() if row["role"] == "prediction"}
    assert set(latest["drifted_outputs"]) <= outputs and not outputs & set(
        summary["drifted_features"]
    )
    text = client.get("/metrics").text
    assert 'driftlab_drift_detected{feature="age",model="tabular",role="feature"} 1.0' in text
    assert 'driftlab_dataset_drift{model="tabular"} 1.0' in text
    assert "driftlab_live_accuracy" in text
    history = client.get("/api/metrics/drift/history").json()["items"]
    assert {r["run_id"] for r in history} == {summary["run_id"]}


def test_a_vision_check_without_a_vision_champion_says_so(client: TestClient) -> None:
    r = client.post("/monitoring/run", params={"model": "vision"})
    assert r.status_code in (409, 503) and "vision" in r.json()["detail"]
    assert client.get("/api/metrics/drift", params={"model": "vision"}).json()["run_id"] is None
    assert client.post("/monitoring/run", params={"model": "tables"}).status_code == 422


def test_too_few_predictions_gives_no_verdict(client: TestClient) -> None:
    send(client, SPLIT.shifted.head(50), with_labels=False)
    summary = client.post("/monitoring/run").json()
    assert summary["status"] == "insufficient_data" and summary["n_current"] == 50
    assert client.get("/api/metrics/drift").json()["run_id"] is None

"""The labeling-queue, retraining and webhook endpoints through a real client."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pipelines import demo
from pipelines.loop import labeling_queue, retraining_control
from pipelines.loop.labeling_policy import QueuePolicy
from tests.conftest import make_settings


def enqueue_shifted(client: TestClient, n: int = 200) -> dict[str, int]:
    """Predict shifted rows, put them in the lake, enqueue; returns {prediction_id: truth}."""
    part = demo.demo_split(name="survey").shifted.head(n)
    out = client.post("/predict", json={"records": demo.records(part)}).json()
    state = client.app.state.driftlab  # type: ignore[attr-defined]
    state.log.flush()
    assert labeling_queue.refresh(state.store, QueuePolicy()) > 0
    return dict(zip(out["prediction_ids"], part[demo.LABEL].tolist(), strict=True))


def test_queue_lists_pending_items_with_what_a_person_needs(client: TestClient) -> None:
    truth = enqueue_shifted(client)
    page = client.get("/api/labeling-queue", params={"limit": 5}).json()
    assert page["total"] > 5 and len(page["items"]) == 5
    assert page["classes"] == [0, 1]
    scores = [item["score"] for item in page["items"]]
    assert scores == sorted(scores, reverse=True)
    item = page["items"][0]
    assert item["prediction_id"] in truth and item["status"] == "pending"
    assert 0.4 < item["confidence"] < 0.7 and len(item["probabilities"]) == 2
    assert set(item["features"]) == set(demo.demo_split(name="survey").features)
    assert item["model_version"] == "1"
    second = client.get("/api/labeling-queue", params={"limit": 5, "offset": 5}).json()
    assert not {i["prediction_id"] for i in second["items"]} & {
        i["prediction_id"] for i in page["items"]
    }


def test_label_skip_and_their_errors(client: TestClient) -> None:
    truth = enqueue_shifted(client)
    items = client.get("/api/labeling-queue").json()["items"]
    first, second = items[0]["prediction_id"], items[1]["prediction_id"]

    r = client.post(f"/api/labeling-queue/{first}/label", json={"label": 7})
    assert r.status_code == 422 and "not one of the classes" in r.json()["detail"]
    r = client.post("/api/labeling-queue/nope/label", json={"label": 1})
    assert r.status_code == 404 and "no labeling-queue item" in r.json()["detail"]
    r = client.post("/api/labeling-queue/bad%00id/skip")
    assert r.status_code == 422
    r = client.post(f"/api/labeling-queue/{first}/label", json={})
    assert r.status_code == 422 and "label" in r.json()["detail"]

    state = client.app.state.driftlab  # type: ignore[attr-defined]
    before = len(state.store.labeled_rows())
    r = client.post(
        f"/api/labeling-queue/{first}/label", json={"label": truth[first], "who": "ana"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "labeled" and r.json()["who"] == "ana"
    again = client.post(f"/api/labeling-queue/{first}/label", json={"label": truth[first]})
    assert again.status_code == 409 and "already labeled" in again.json()["detail"]
    assert client.post(f"/api/labeling-queue/{second}/skip").status_code == 200

    pending = client.get("/api/labeling-queue").json()
    assert first not in {i["prediction_id"] for i in pending["items"]}
    labeled = client.get("/api/labeling-queue", params={"status": "labeled"}).json()
    assert [i["prediction_id"] for i in labeled["items"]] == [first]
    progress = client.get("/api/labeling-queue/progress").json()
    assert progress["labeled_today"] == 1 and progress["skipped_today"] == 1
    assert progress["new_labels"] == 1
    # The label is training data, but not a sample of traffic: live accuracy leaves it out.
    assert len(state.store.labeled_rows()) == before + 1
    assert client.get("/api/metrics").json()["feedback"]["n"] == 0


def test_conditions_report_decision_figures_and_thresholds(client: TestClient) -> None:
    body = client.get("/api/retraining/conditions").json()
    assert body["should_retrain"] is False and body["reasons"] == []
    assert body["figures"]["new_labels"] == 0
    assert body["thresholds"]["min_new_labels"] == 50
    assert body["thresholds"]["drift_share_threshold"] == 0.3
    assert body["champion_version"] == "1"


def test_trigger_is_refused_while_a_run_holds_the_lock(client: TestClient, trained_copy) -> None:
    settings = make_settings(trained_copy)
    with retraining_control.lock(settings):
        r = client.post("/api/retraining/trigger", json={"reason": "test"})
        assert r.status_code == 409 and "already in progress" in r.json()["detail"]
        # One lock for both models: busy for either, but no run of either is in progress.
        for query in ("", "?model=vision"):
            st = client.get(f"/api/retraining/status{query}").json()
            assert st["busy"] is True and st["running"] is False
        r = client.post("/api/retraining/trigger", json={"model": "vision"})
        assert r.status_code == 409 and "already in progress" in r.json()["detail"]
        fired = {"status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": "X"}}]}
        r = client.post("/webhook/alert", json=fired)
        assert r.status_code == 200 and r.json()["started"] is False
        assert "already running" in r.json()["why"]


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        ({"status": "resolved", "alerts": [{"status": "resolved"}]}, "no firing alert"),
        ({"state": "ok", "ruleName": "drift"}, "no firing alert"),
    ],
)
def test_webhook_acknowledges_resolved_alerts(refusing_client: TestClient, payload, why) -> None:
    r = refusing_client.post("/webhook/alert", json=payload)
    assert r.status_code == 200 and r.json() == {"started": False, "why": f"{why} in the payload"}


@pytest.mark.parametrize(
    "payload",
    [[1, 2], {"alerts": "many"}, {"alerts": [1]}, {"hello": "world"}],
)
def test_webhook_rejects_what_is_not_an_alert(refusing_client: TestClient, payload) -> None:
    r = refusing_client.post("/webhook/alert", json=payload)
    assert r.status_code == 422 and r.json()["detail"]


@pytest.mark.e2e
def test_webhook_firing_alert_starts_a_run(client: TestClient, trained_copy: Path) -> None:
    payload = {
        "receiver": "driftlab",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "DriftlabAccuracyLow"},
                "annotations": {"summary": "live accuracy 0.55"},
            }
        ],
    }
    r = client.post("/webhook/alert", json=payload)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["started"] is True
    state = client.app.state.driftlab  # type: ignore[attr-defined]
    # The background run holds the lock from the trigger on: a second start is refused.
    assert client.post("/api/retraining/trigger").status_code == 409
    final = retraining_control.wait(state.store, body["event_id"], timeout_s=240)
    assert final["status"] in {"promoted", "in_rollout", "rejected"}, final
    assert final["trigger"] == "alert:DriftlabAccuracyLow"  # the alert's name
    assert final["reasons"] == ["alert DriftlabAccuracyLow: live accuracy 0.55"]
    assert (trained_copy / final["notebook"]).exists()  # the executed notebook, in data/runs/
    history = client.get("/api/retraining/history").json()["items"]
    assert history[0]["event_id"] == body["event_id"]


def test_retraining_endpoints_take_the_model(client: TestClient) -> None:
    vision = client.get("/api/retraining/conditions", params={"model": "vision"}).json()
    assert vision["model"] == "vision" and vision["champion_version"] is None
    assert vision["should_retrain"] is False and vision["figures"]["new_labels"] == 0
    tabular = client.get("/api/retraining/conditions").json()
    assert tabular["model"] == "tabular" and tabular["champion_version"] == "1"
    status = client.get("/api/retraining/status", params={"model": "vision"}).json()
    assert status["model"] == "vision" and status["latest"] is None
    for bad in (
        client.get("/api/retraining/conditions", params={"model": "audio"}),
        client.get("/api/retraining/status", params={"model": "audio"}),
        client.post("/api/retraining/trigger", json={"model": "audio"}),
    ):
        assert bad.status_code == 422 and "tabular" in bad.text and "vision" in bad.text


def test_an_alert_names_the_model_it_retrains() -> None:
    from api.routes.retraining import _firing_alerts

    payload = {
        "status": "firing",
        "alerts": [
            {"labels": {"alertname": "DriftlabDatasetDrift", "model": "vision"}},
            {"status": "resolved", "labels": {"alertname": "Old"}},
            {"labels": {"alertname": "DriftlabLiveAccuracyBelowFloor"}, "annotations": {}},
        ],
    }
    assert _firing_alerts(payload) == [
        ("DriftlabDatasetDrift", "", "vision"),
        ("DriftlabLiveAccuracyBelowFloor", "", ""),
    ]

"""The happy paths through a real client: shapes, logging, feedback, inspection, metrics."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from pipelines import demo

LIVE = demo.demo_split(name="survey").live


def wait_for(fn, timeout: float = 5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_predict_shapes_and_logging(client: TestClient) -> None:
    recs = demo.records(LIVE.head(20))
    out = client.post("/predict", json={"records": recs}).json()
    assert len(out["predictions"]) == len(out["prediction_ids"]) == len(out["uncertain"]) == 20
    assert set(out["predictions"]) <= {0, 1} and out["classes"] == [0, 1]
    for p, probs, conf, unc in zip(
        out["predictions"],
        out["class_probabilities"],
        out["probabilities"],
        out["uncertain"],
        strict=True,
    ):
        assert abs(sum(probs) - 1) < 1e-5
        assert conf == max(probs) and probs[p] == conf
        assert unc == (0.4 < conf < 0.7)
    same = client.post("/predict", json={"features": [list(r.values()) for r in recs]}).json()
    assert same["predictions"] == out["predictions"]
    # every prediction is in the lake within 2 s, with its features and model version
    ids = set(out["prediction_ids"])

    def logged():
        items = client.get("/api/inspection-logs", params={"limit": 100}).json()["items"]
        return [i for i in items if i["prediction_id"] in ids]

    rows = wait_for(lambda: len(logged()) == 20 and logged(), timeout=2.0)
    assert {r["model_version"] for r in rows} == {out["model_version"]}
    assert all(set(r["features"]) == set(recs[0]) and r["latency_ms"] > 0 for r in rows)


def test_feedback_counts_toward_live_accuracy(client: TestClient) -> None:
    recs, truth = demo.records(LIVE.head(30)), LIVE["affair"].head(30).tolist()
    out = client.post("/predict", json={"records": recs}).json()
    for pid, label in zip(out["prediction_ids"], truth, strict=True):
        assert (
            client.post("/feedback", json={"prediction_id": pid, "label": label}).status_code == 200
        )
    expected = sum(p == t for p, t in zip(out["predictions"], truth, strict=True)) / 30
    acc = client.get("/api/metrics").json()["feedback"]
    assert acc["n"] == 30 and abs(acc["accuracy"] - expected) < 1e-9


def test_inspection_filters_and_paging(client: TestClient) -> None:
    out = client.post("/predict", json={"records": demo.records(LIVE.head(40))}).json()
    wait_for(lambda: client.get("/api/inspection-logs").json()["total"] >= 40)
    page = client.get("/api/inspection-logs", params={"limit": 15, "offset": 15}).json()
    assert page["total"] == 40 and len(page["items"]) == 15
    unc = client.get("/api/inspection-logs", params={"uncertain": True, "limit": 100}).json()
    assert unc["total"] == sum(out["uncertain"]) and all(i["uncertain"] for i in unc["items"])
    ones = client.get("/api/inspection-logs", params={"prediction": "1", "limit": 100}).json()
    assert ones["total"] == out["predictions"].count(1)
    assert client.get("/api/inspection-logs", params={"limit": 0}).status_code == 422


def test_health_status_and_prometheus(client: TestClient) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"]["version"] == "1"
    assert health["model"]["runtime"] == "forest"
    status = client.get("/api/model-status").json()
    assert status["trained_on_snapshot"] >= 1 and 0.6 < status["metrics"]["accuracy"] <= 1
    assert [f["name"] for f in status["features"]] == list(demo.records(LIVE.head(1))[0])
    client.post("/predict", json={"records": demo.records(LIVE.head(5))})
    assert client.get("/health").json()["prediction_log"]["pending_rows"] in (0, 5)
    text = client.get("/metrics").text
    assert 'driftlab_predictions_total{model_version="1"} 5.0' in text
    assert "driftlab_predict_latency_seconds_bucket" in text
    assert "driftlab_prediction_log_pending_rows" in text


def test_ingest_stream_ndjson_and_single(client: TestClient) -> None:
    import orjson

    recs = demo.records(LIVE.head(3))
    lines = b"\n".join(orjson.dumps({"record": r, "label": 1}) for r in recs)
    r = client.post(
        "/ingest/stream", content=lines, headers={"content-type": "application/x-ndjson"}
    )
    assert r.status_code == 200 and r.json()["rows"] == 3 and r.json()["labeled"] == 3
    r = client.post("/ingest/stream", json={"record": recs[0]})
    assert r.status_code == 200 and r.json()["labeled"] == 0


def test_promote_and_rollback_through_the_api(client: TestClient, trained_copy) -> None:
    from pipelines.models import training
    from pipelines.models.registry import Registry
    from pipelines.store import Store
    from tests.conftest import make_settings

    s = make_settings(trained_copy)
    v2 = training.train(
        Store.open(s),
        Registry.from_settings(s),
        training.TrainConfig(params={"n_estimators": 5}),
        promote=False,
    ).version
    listed = client.get("/api/models").json()["items"]
    assert [v["version"] for v in listed] == [v2, "1"] and listed[1]["aliases"] == ["champion"]
    r = client.post("/api/models/promote", json={"version": v2, "why": "test", "who": "me"})
    assert r.status_code == 200 and r.json()["serving_version"] == v2
    assert (
        client.post("/predict", json={"records": demo.records(LIVE.head(1))}).json()[
            "model_version"
        ]
        == v2
    )
    assert client.post("/api/models/promote", json={"version": v2}).status_code == 409
    assert client.post("/api/models/promote", json={"version": "77"}).status_code == 409
    r = client.post("/api/models/rollback", json={"why": "regression"})
    assert (
        r.status_code == 200
        and r.json()["to_version"] == "1"
        and r.json()["serving_version"] == "1"
    )
    history = client.get("/api/model-status").json()["history"]
    assert [h["event"] for h in history[:2]] == ["rolled_back", "promoted"]
    assert client.post("/api/models/rollback").status_code == 409  # v1 has nothing before it


def test_fastapi_opentelemetry_is_on_only_when_the_environment_configures_it(
    monkeypatch,
) -> None:
    import os

    from api.main import telemetry_config

    for key in [k for k in os.environ if k.startswith(("OTEL_", "FASTAPI_OTEL_"))]:
        monkeypatch.delenv(key)
    assert telemetry_config() == {"tracing": False, "metrics": False, "logs": False}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert telemetry_config() == {"tracing": True, "metrics": True, "logs": True}

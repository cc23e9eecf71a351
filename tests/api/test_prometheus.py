"""GET /metrics: every figure the alert rules and dashboards read, under Prometheus's naming
conventions, with label sets that no client can grow."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from pipelines import demo
from tests.api.test_monitoring import SPLIT, send
from tests.api.test_server import RECORDS
from tests.helpers import ApiServer


def scrape(client: TestClient) -> dict[str, Metric]:
    """The families by name (a counter's without its `_total`), as Prometheus parses them."""
    response = client.get("/metrics")
    assert response.status_code == 200
    return {f.name: f for f in text_string_to_metric_families(response.text)}


def value(family: Metric, **labels: str) -> float:
    found = [s.value for s in family.samples if s.labels == labels and s.name[-8:] != "_created"]
    assert len(found) == 1, (labels, family.samples)
    return found[0]


def test_the_loop_figures_are_exported_with_conventional_names(client: TestClient) -> None:
    send(client, SPLIT.shifted.head(300))  # two /predict calls, 300 /feedback
    for _ in range(2):
        assert client.post("/monitoring/run", params={"window_size": 300}).status_code == 200
    m = scrape(client)
    s = client.app.state.driftlab.settings  # type: ignore[attr-defined]

    assert value(m["driftlab_store_up"]) == 1
    assert value(m["driftlab_model_version"]) == 1
    promoted = value(m["driftlab_champion_promoted_timestamp_seconds"])
    assert 0 < time.time() - promoted < 3600
    assert value(m["driftlab_dataset_drift"], model="tabular") == 1
    assert (
        value(m["driftlab_dataset_drift_streak"], model="tabular") == 2
    )  # both checks found drift
    assert (
        abs(time.time() - value(m["driftlab_drift_check_timestamp_seconds"], model="tabular")) < 120
    )
    assert value(m["driftlab_drift_check_interval_seconds"]) == s.check_interval
    assert value(m["driftlab_drift_detected"], model="tabular", feature="age", role="feature") == 1
    assert value(m["driftlab_live_accuracy_labeled"]) == 300
    assert value(m["driftlab_live_accuracy_floor"]) == s.retrain_accuracy_floor
    assert value(m["driftlab_live_accuracy_min_labeled"]) == s.retrain_min_feedback
    assert value(m["driftlab_estimated_drop_threshold"]) == s.retrain_estimated_drop
    assert 0 < value(m["driftlab_estimated_performance"], metric="accuracy") < 1
    low = value(m["driftlab_estimated_low_performance"], metric="accuracy")
    high = value(m["driftlab_estimated_high_performance"], metric="accuracy")
    assert low <= value(m["driftlab_estimated_performance"], metric="accuracy") <= high
    assert value(m["driftlab_labeling_queue_pending"]) == 0
    assert value(m["driftlab_retrain_running"]) == 0

    # Counters: `_total` in the exposition; what was done, counted once.
    assert value(m["driftlab_predictions"], model_version="1") == 300
    assert m["driftlab_predictions"].type == "counter"
    assert m["driftlab_predictions"].samples[0].name == "driftlab_predictions_total"
    assert value(m["driftlab_feedback"], kind="label") == 300
    assert value(m["driftlab_http_requests"], handler="/predict", code="200") == 2
    assert value(m["driftlab_http_requests"], handler="/feedback", code="200") == 300
    assert value(m["driftlab_http_requests"], handler="/monitoring/run", code="200") == 2
    assert value(m["driftlab_predict_batched_requests"]) == 2  # sampled at the scrape
    assert 1 <= value(m["driftlab_predict_batches"]) <= 2
    flushed = value(m["driftlab_prediction_log_flushed_rows"])
    assert flushed + value(m["driftlab_prediction_log_pending_rows"]) == 300
    assert value(m["driftlab_prediction_log_flush_errors"]) == 0
    for name, family in m.items():
        assert name.startswith("driftlab_"), name
        if family.type == "histogram":
            assert name.endswith(("_seconds", "_confidence")), name


def test_label_sets_stay_bounded_whatever_a_client_sends(client: TestClient) -> None:
    for i in range(5):
        assert client.get(f"/scan-{i}/../admin").status_code == 404
    json = {"content-type": "application/json"}
    assert client.post("/predict", content=b"{not json", headers=json).status_code == 422
    assert client.post("/predict", content=b"{}").status_code == 415  # refused by the guard
    missing = client.post("/api/labeling-queue/nope-123/skip", json={})
    assert missing.status_code in (404, 422)
    requests = scrape(client)["driftlab_http_requests"]
    handlers = {s.labels["handler"] for s in requests.samples if s.name.endswith("_total")}
    assert handlers == {"other", "/predict", "/api/labeling-queue/{prediction_id}/skip"}
    assert value(requests, handler="other", code="404") == 5
    assert value(requests, handler="/predict", code="422") == 1
    assert value(requests, handler="/predict", code="415") == 1


def test_a_store_that_cannot_be_read_answers_store_up_zero(client: TestClient) -> None:
    client.post("/predict", json={"records": demo.records(SPLIT.live.head(3))})
    state = client.app.state.driftlab  # type: ignore[attr-defined]
    broken = state.store.lake.query

    def fail(*args: object, **kwargs: object) -> None:
        raise OSError("catalog unreachable")

    state.store.lake.query = fail
    try:
        m = scrape(client)
    finally:
        state.store.lake.query = broken
    assert value(m["driftlab_store_up"]) == 0
    assert "driftlab_drift_share" not in m and "driftlab_live_accuracy" not in m
    assert value(m["driftlab_predictions"], model_version="1") == 3  # the process still counts


@pytest.mark.e2e
def test_several_api_processes_report_the_sum_of_their_counts(trained_copy: Path) -> None:
    server = ApiServer(trained_copy, DRIFTLAB_API_WORKERS="2")
    server.start(timeout=120)
    folder = trained_copy / "ops" / f"api-metrics-{server.port}"
    try:
        sent = 0
        # A new connection per call: the kernel hands them to either process. Go on until
        # both have answered some, which is what makes a per-process count wrong.
        while sent < 400 and (sent < 40 or len(served_by_process(folder)) < 2):
            r = httpx.post(f"{server.url}/predict", json={"records": RECORDS[sent : sent + 1]})
            assert r.status_code == 200
            sent += 1
        per_process = served_by_process(folder)
        assert len(per_process) == 2 and sum(per_process.values()) == sent, per_process
        for _ in range(6):  # whichever process answers the scrape
            families = {
                f.name: f
                for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
            }
            assert value(families["driftlab_predictions"], model_version="1") == sent
            assert value(families["driftlab_http_requests"], handler="/predict", code="200") == sent
            assert value(families["driftlab_predict_latency_seconds"], le="+Inf") == sent
    finally:
        server.stop()


def served_by_process(folder: Path) -> dict[str, float]:
    """/predict answers counted in each process's own file (multiprocess mode)."""
    counts = {}
    for path in folder.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(path))
        n = sum(v for key, v, _, _ in values if '"/predict"' in key and '"200"' in key)
        if n:
            counts[path.name] = n
    return counts

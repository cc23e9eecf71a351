"""What GET /metrics really exports, for the tests that check Grafana's queries and the
Prometheus rules against it: no hand-kept list of names."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from pipelines import demo
from pipelines.models import training
from tests.api.test_monitoring import SPLIT, send
from tests.conftest import make_settings
from tests.ops.promql import SCRAPE_METRICS, recorded_names

EDGE_FRAME = {
    "id": "cam1-000001",
    "detections": [{"box": [1, 2, 30, 40], "class": 3, "confidence": 0.55}],
    "fps": 24.5,
    "inference_ms": 8.2,
}


def exercise(client: TestClient) -> None:
    """Every kind of thing the app counts or reads from the store: a shadow rollout, shifted
    predictions with feedback, two drift checks that find the shift (a streak), an ingest, an
    edge client's frame (the `vision` extra is installed) and a retrain that ended."""
    state = client.app.state.driftlab  # type: ignore[attr-defined]
    stump = training.TrainConfig(params={"n_estimators": 1, "max_depth": 1})
    version = training.train(state.store, state.registry, stump, promote=False).version
    shadow = client.post("/api/models/shadow", json={"version": version})
    assert shadow.status_code == 200, shadow.text
    send(client, SPLIT.shifted.head(300))
    for _ in range(2):
        check = client.post("/monitoring/run", params={"window_size": 300})
        assert check.status_code == 200 and check.json()["dataset_drift"] is True, check.text
    rows = demo.records(SPLIT.live.head(3))
    ingested = client.post("/ingest/batch", json={"records": rows, "labels": [0, 1, 0]})
    assert ingested.status_code == 200, ingested.text
    edge = client.post("/log", json={**EDGE_FRAME, "ts": time.time()})
    assert edge.status_code == 200 and edge.json()["stored"], edge.text
    assert state.image_log is not None, "the `vision` extra is not installed"
    state.image_log.flush()  # the frame in the lake now: the defect rate reads it from there
    state.log.flush()
    state.store.add_retraining_event(
        {
            "event_id": "e1",
            "trigger": "test",
            "reasons": [],
            "status": "failed",
            "who": "test",
            "model_name": state.settings.model_name,
        }
    )


def sample_names(text: str) -> frozenset[str]:
    """The sample names of an exposition, as Prometheus stores them (`foo_total`,
    `foo_bucket`, `foo_sum`, `foo_count`, a gauge by its name), less the `_created` samples
    prometheus_client adds (Prometheus drops them unless told to keep them)."""
    return frozenset(
        sample.name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    )


@pytest.fixture(scope="session")
def exported_samples(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> frozenset[str]:
    """Every sample name a live app's GET /metrics exports once it has done every kind of
    thing (`exercise`), over a private copy of the trained store."""
    data = tmp_path_factory.mktemp("exported") / "data"
    shutil.copytree(trained_dir, data)
    app = create_app(make_settings(data, flush_interval=0.1, reload_interval=0.2))
    with TestClient(app, base_url="http://localhost") as client:
        exercise(client)
        response = client.get("/metrics")
        assert response.status_code == 200, response.text
        return sample_names(response.text)


@pytest.fixture(scope="session")
def known_series(exported_samples: frozenset[str]) -> frozenset[str]:
    """What a query or rule may read: an exported sample, Prometheus's own `up`, or a
    recording rule's series."""
    return exported_samples | SCRAPE_METRICS | recorded_names()

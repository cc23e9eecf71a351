"""The worker's schedule: a check once enough new predictions exist, never before."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from api.main import create_app
from pipelines import demo
from pipelines.loop.worker import Worker
from tests.conftest import make_settings


def test_tick_checks_only_with_enough_new_predictions(trained_copy: Path) -> None:
    s = make_settings(trained_copy, min_samples=100, window_size=200, compact_interval=0)
    worker = Worker.open(s)
    first = worker.tick()
    assert "fewer than 100" in first["drift"]["skipped"]
    assert first["compact"]["kept"]  # the champion's training snapshot is protected
    with TestClient(create_app(s), base_url="http://localhost") as client:
        client.post(
            "/predict",
            json={"records": demo.records(demo.demo_split(name="survey").shifted.head(150))},
        )
    second = worker.tick()
    assert second["drift"]["dataset_drift"] is True and second["drift"]["n_current"] == 150
    third = worker.tick()  # nothing new since the last check
    assert "0 new predictions" in third["drift"]["skipped"]


def test_no_vision_retrain_without_a_vision_champion(trained_copy: Path) -> None:
    worker = Worker.open(make_settings(trained_copy))
    assert worker.maybe_retrain(vision=True) == {
        "started": False,
        "skipped": "no vision champion",
    }

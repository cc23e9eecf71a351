"""The whole loop with real processes: API + worker on an empty data dir, demo data in, a first
model trained by the notebook, a shifted replay of real data, drift, the queue filling, people
answering it, the policy deciding, a retrain run, the challenger promoted and served without a
restart, then a rollback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines import demo
from tests.helpers import ApiServer, CliProcess

pytestmark = pytest.mark.e2e

LOOP_ENV = {
    "DRIFTLAB_FLUSH_INTERVAL": "0.2",
    "DRIFTLAB_RELOAD_INTERVAL": "0.5",
    "DRIFTLAB_CHECK_INTERVAL": "2",
    "DRIFTLAB_QUEUE_INTERVAL": "1",
    "DRIFTLAB_WINDOW_SIZE": "600",
    "DRIFTLAB_MIN_SAMPLES": "100",
    "DRIFTLAB_QUEUE_BUDGET_PER_HOUR": "150",
    "DRIFTLAB_RETRAIN_OPTUNA_TRIALS": "0",
    # Errors on the (hard) queue items would trigger first; this test follows the drift path.
    "DRIFTLAB_RETRAIN_FAIL_THRESHOLD": "100000",
}


def until(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[tuple[ApiServer, CliProcess]]:
    data = tmp_path / "data"
    api = ApiServer(data, **LOOP_ENV)
    worker = CliProcess(data, "worker", **LOOP_ENV)
    api.start()
    try:
        yield api, worker
    finally:
        worker.stop()
        api.stop()


def test_the_loop_turns(processes: tuple[ApiServer, CliProcess], tmp_path: Path) -> None:
    api, worker = processes
    http = httpx.Client(base_url=api.url, timeout=60)
    split = demo.demo_split()

    # 1. Demo data in, a first model trained by the notebook, picked up by the running API.
    train = split.train
    r = http.post(
        "/ingest/batch",
        json={"records": demo.records(train), "labels": train[demo.LABEL].tolist()},
    )
    assert r.status_code == 200, r.text
    subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "train", "--no-demo", "--n-estimators", "50"],
        env=api.env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    until("the API to serve version 1", lambda: _serving(http) == "1", 30)
    worker.start()

    # 2. Live traffic: the same population first, then the real shift (older women).
    truth: dict[str, int] = {}
    for part in (split.live.head(300), split.shifted):
        for start in range(0, len(part), 100):
            chunk = part.iloc[start : start + 100]
            out = http.post("/predict", json={"records": demo.records(chunk)}).json()
            assert out["model_version"] == "1"
            truth.update(zip(out["prediction_ids"], chunk[demo.LABEL].tolist(), strict=True))

    # 3. The worker sees the drift and fills the queue.
    drift = until(
        "the worker's drift check to flag the shift",
        lambda: (d := http.get("/api/metrics/drift").json()).get("dataset_drift") and d,
        60,
    )
    assert "age" in drift["drifted_features"]
    until("the queue to fill", lambda: http.get("/api/labeling-queue").json()["total"] >= 50, 30)

    # 4. Feedback on a share of the traffic, as a downstream system would send it, and people
    #    answering the queue with the true labels.
    shifted_ids = list(truth)[300:]
    for pid in shifted_ids[::3]:
        r = http.post("/feedback", json={"prediction_id": pid, "label": truth[pid]})
        assert r.status_code == 200, r.text
    answered = 0
    while answered < 60:
        items = http.get("/api/labeling-queue", params={"limit": 20}).json()["items"]
        assert items, "the queue ran dry before 60 answers"
        for item in items:
            pid = item["prediction_id"]
            r = http.post(
                f"/api/labeling-queue/{pid}/label", json={"label": truth[pid], "who": "e2e"}
            )
            assert r.status_code in (200, 409), r.text
            answered += r.status_code == 200

    # 5. The conditions hold (drift and enough new labels); the worker starts a retrain.
    assert http.get("/api/retraining/conditions").json()["figures"]["new_labels"] >= 50
    run = until(
        "the worker to finish a retrain",
        lambda: (
            (s := http.get("/api/retraining/status").json())["latest"]
            and s["latest"]["status"] in {"promoted", "rejected", "failed"}
            and s["latest"]
        ),
        240,
        every=1,
    )
    assert run["trigger"] == "worker", run
    assert any("drift" in r and "new labels" in r for r in run["reasons"]), run["reasons"]
    assert run["status"] == "promoted", run["decision"]
    new = run["candidate_version"]
    assert new == "2" and run["champion_version"] == "1"
    n_train = int(run["metrics"]["n_train"])
    assert n_train > len(train) * 0.7  # the history plus the new labels, not the labels alone

    # 6. The API serves the challenger without a restart; the audit trail says why.
    until("the API to serve the new champion", lambda: _serving(http) == new, 30)
    out = http.post("/predict", json={"records": demo.records(split.shifted.head(1))}).json()
    assert out["model_version"] == new
    history = http.get("/api/model-status").json()["history"]
    assert history[0]["event"] == "promoted" and history[0]["to_version"] == new

    # 7. Roll back: version 1 serves again, also audited.
    r = http.post("/api/models/rollback", json={"why": "e2e rollback", "who": "e2e"})
    assert r.status_code == 200 and r.json()["to_version"] == "1", r.text
    out = http.post("/predict", json={"records": demo.records(split.shifted.head(1))}).json()
    assert out["model_version"] == "1"
    assert http.get("/api/model-status").json()["history"][0]["event"] == "rolled_back"


def _serving(http: httpx.Client) -> str | None:
    r = http.get("/api/model-status")
    return r.json()["version"] if r.status_code == 200 else None

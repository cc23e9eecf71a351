"""The whole loop with real processes: API + worker on an empty data dir, demo data in, a first
model trained by the notebook, a shifted replay of real data, drift, the queue filling, people
answering it, the policy deciding, a retrain run, the challenger run in the shadow of the
champion until labels on live traffic promote it, served without a restart, then a rollback.

The data is the digits demo (`demo.digits_split`): its shift is one that labels can teach, so
the challenger is clearly better and the promotion is deterministic. (With the survey demo the
gate rightly rejects most challengers: see `pipelines/demo/datasets.py`.)"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
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
    # Wait for the feedback too, so that the gate has enough recent labeled rows to judge on.
    "DRIFTLAB_RETRAIN_MIN_NEW_LABELS": "300",
    "DRIFTLAB_RETRAIN_OPTUNA_TRIALS": "0",
    # Errors per class and the accuracy floor would trigger first (after ~30 answers); this
    # test follows the drift path.
    "DRIFTLAB_RETRAIN_FAIL_THRESHOLD": "100000",
    "DRIFTLAB_RETRAIN_ACCURACY_FLOOR": "0",
    # The default rollout (shadow), decided on a hundred labeled pairs, looked at twice.
    "DRIFTLAB_ROLLOUT_LABEL_BUDGET": "100",
    "DRIFTLAB_ROLLOUT_LOOKS": "2",
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
    split = demo.digits_split()
    train, live = split.train, split.live

    def records(frame: pd.DataFrame) -> list[dict[str, float]]:
        return frame[demo.DIGIT_PIXELS].to_dict("records")

    # 1. Demo data in, a first model trained by the notebook, picked up by the running API.
    r = http.post(
        "/ingest/batch", json={"records": records(train), "labels": train["digit"].tolist()}
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

    # 2. Live traffic: the same population first, then the shift (slanted, thicker digits).
    truth: dict[str, int] = {}
    for part in (live, split.shifted):
        for start in range(0, len(part), 100):
            chunk = part.iloc[start : start + 100]
            out = http.post("/predict", json={"records": records(chunk)}).json()
            assert out["model_version"] == "1"
            truth.update(zip(out["prediction_ids"], chunk["digit"].tolist(), strict=True))

    # 3. The worker sees the drift and fills the queue.
    until(
        "the worker's drift check to flag the shift",
        lambda: http.get("/api/metrics/drift").json().get("dataset_drift"),
        60,
    )
    until("the queue to fill", lambda: http.get("/api/labeling-queue").json()["total"] >= 50, 30)

    # 4. Feedback on a share of the traffic, as a downstream system would send it, and people
    #    answering the queue with the true labels.
    shifted_ids = list(truth)[len(live) :]
    for pid in shifted_ids[::2]:
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
    assert http.get("/api/retraining/conditions").json()["figures"]["new_labels"] >= 300
    run = until(
        "the worker to finish a retrain",
        lambda: (
            (s := http.get("/api/retraining/status").json())["latest"]
            and s["latest"]["status"] in {"promoted", "in_rollout", "rejected", "failed"}
            and s["latest"]
        ),
        240,
        every=1,
    )
    assert run["trigger"] == "worker", run
    assert any("drift" in r and "new labels" in r for r in run["reasons"]), run["reasons"]
    assert run["status"] == "in_rollout", run["decision"]
    new = run["candidate_version"]
    assert new == "2" and run["champion_version"] == "1"
    metrics = run["metrics"]
    assert metrics["n_train"] > len(train) * 0.7  # the history plus the labels, not labels alone
    recent = {m: metrics[m]["recent"] for m in ("champion", "challenger")}
    assert recent["challenger"]["n"] >= 30  # the gate judged on the drifted population
    assert recent["challenger"]["accuracy"] > recent["champion"]["accuracy"] + 0.2

    # 6. The challenger answers in the shadow of the champion, never served; labels on the
    #    traffic both answered decide, and the worker promotes it.
    until(
        "the API to run the shadow",
        lambda: (http.get("/health").json().get("rollout") or {}).get("mode") == "shadow",
        30,
    )
    rollout = http.get("/api/models/rollout").json()
    assert rollout["challenger_version"] == new and rollout["retrain_event"] == run["event_id"]
    replay = split.shifted.head(200)
    answered_by_both = []
    for start in range(0, len(replay), 50):
        chunk = replay.iloc[start : start + 50]
        out = http.post("/predict", json={"records": records(chunk)}).json()
        assert out["model_version"] == "1"  # the shadow never serves
        answered_by_both += zip(out["prediction_ids"], chunk["digit"].tolist(), strict=True)
    for pid, digit in answered_by_both[:120]:
        r = http.post("/feedback", json={"prediction_id": pid, "label": digit})
        assert r.status_code == 200, r.text
    until("the live test to promote the challenger", lambda: _serving(http) == new, 60)
    probe = {"records": records(split.shifted.head(1))}
    assert http.post("/predict", json=probe).json()["model_version"] == new
    history = http.get("/api/model-status").json()["history"]
    assert [h["event"] for h in history[:2]] == ["rollout_promoted", "promoted"]
    assert history[1]["to_version"] == new and "significantly better" in history[0]["why"]
    test = history[0]["details"]["comparison"]
    assert test["test"] == "mcnemar_exact" and test["counts"]["c"] > test["counts"]["b"]

    # 7. Roll back: version 1 serves again, also audited.
    r = http.post("/api/models/rollback", json={"why": "e2e rollback", "who": "e2e"})
    assert r.status_code == 200 and r.json()["to_version"] == "1", r.text
    assert http.post("/predict", json=probe).json()["model_version"] == "1"
    assert http.get("/api/model-status").json()["history"][0]["event"] == "rolled_back"


def _serving(http: httpx.Client) -> str | None:
    r = http.get("/api/model-status")
    return r.json()["version"] if r.status_code == 200 else None

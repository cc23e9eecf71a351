"""The prediction log: spool first, flush in one commit, replay what a dead process left."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipelines.ingestion import ingest
from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.store.spool import PredictionLog


def chunk(ids: list[str]) -> dict:
    n = len(ids)
    return {
        "ids": ids,
        "ts": time.time(),
        "model_name": "m",
        "model_version": "1",
        "features": {"f0": [1.0] * n},
        "prediction": ["0"] * n,
        "confidence": [0.9] * n,
        "probabilities": [[0.9, 0.1]] * n,
        "latency_ms": [0.1] * n,
        "uncertain": [False] * n,
    }


@pytest.fixture
def store(settings: Settings) -> Store:
    s = Store.open(settings)
    ingest(s, features=[[1.0]], labels=[0])
    return s


def test_flush_writes_one_commit_and_clears_the_spool(store: Store, tmp_path: Path) -> None:
    log = PredictionLog(store, tmp_path / "spool", flush_interval=3600)
    log.start()
    snap = store.snapshot_id()
    for i in range(10):
        log.append(chunk([f"a{i}", f"b{i}"]))
    assert log.is_pending("a3") and log.pending_rows == 20
    assert sum(p.stat().st_size for p in (tmp_path / "spool").iterdir()) > 0
    assert log.flush() == 20
    assert store.snapshot_id() == snap + 1  # twenty rows, one commit
    assert not log.is_pending("a3") and log.pending_rows == 0
    assert store.existing_prediction_ids([f"a{i}" for i in range(10)]) == {
        f"a{i}" for i in range(10)
    }
    log.close()
    assert list((tmp_path / "spool").iterdir()) == []


def test_replay_recovers_and_skips_rows_already_stored(store: Store, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    dead = PredictionLog(store, spool, flush_interval=3600)
    dead.start()
    dead.append(chunk(["x1", "x2"]))
    dead.flush()  # x1, x2 reach the lake, then the process "dies" before deleting …
    segment = next(spool.iterdir())
    dead.append(chunk(["x3"]))
    # … simulate a crash between commit and delete: the flushed rows are in a spool file again
    import orjson

    (spool / "predictions-999999-dead-0.ndjson").write_bytes(
        orjson.dumps(chunk(["x1", "x2"])) + b"\n" + b'{"torn'
    )
    os.close(dead._fd)  # the process is gone: its lock with it
    dead._fd = None
    assert segment.exists()
    fresh = PredictionLog(store, spool, flush_interval=3600)
    assert fresh.replay_orphans() == 1  # x3 only; x1, x2 were already stored
    n = store.lake.scalar("SELECT count(*) FROM lake.predictions")
    assert n == 3 and list(spool.iterdir()) == []


def test_a_live_process_spool_is_not_replayed(store: Store, tmp_path: Path) -> None:
    live = PredictionLog(store, tmp_path / "spool", flush_interval=3600)
    live.start()
    live.append(chunk(["l1"]))
    other = PredictionLog(store, tmp_path / "spool", flush_interval=3600)
    assert other.replay_orphans() == 0
    live.close()
    assert store.existing_prediction_ids(["l1"]) == {"l1"}

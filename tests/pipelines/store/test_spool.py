"""The prediction log: spool first, flush in one commit, replay what a dead process left."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipelines.loop.ingestion import ingest
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


def test_a_chunk_of_arrays_and_its_replayed_spool_line_make_the_same_rows(
    tmp_path: Path,
) -> None:
    """`append` keeps numpy arrays (a text feature as an object array, the probabilities as a
    matrix, strided columns of a transposed matrix); replay reads the same values back from
    the JSON line as lists. Both must land in the lake as the same rows."""
    import numpy as np

    from pipelines.schema import CATEGORICAL, Feature, FeatureSchema
    from pipelines.store import spool
    from pipelines.store.spool import chunks_to_table

    schema = FeatureSchema((Feature("x"), Feature("city", CATEGORICAL, ("a", "b"))))
    matrix = np.array([[1.5, 0.0], [2.0, 0.0], [-3.25, 0.0]])
    live = {
        **chunk(["p0", "p1", "p2"]),
        "features": {"x": matrix.T[0], "city": np.array(["a", "b", "zz"], dtype=object)},
        "confidence": np.array([0.6, 0.7, 0.95]),
        "probabilities": np.array([[0.6, 0.4], [0.3, 0.7], [0.05, 0.95]]),
        "uncertain": [True, False, False],
    }
    store = Store.open(Settings(data_dir=tmp_path))
    ingest(store, records=[{"x": 1.0, "city": "a"}, {"x": 2.0, "city": "b"}], labels=[0, 1])
    log = PredictionLog(store, tmp_path / "spool", flush_interval=3600)
    log.start()
    log.append(live)
    (segment,) = (tmp_path / "spool").iterdir()
    (replayed,) = spool._read_segment(segment)
    assert replayed["features"] == {"x": [1.5, 2.0, -3.25], "city": ["a", "b", "zz"]}
    assert replayed["probabilities"] == [[0.6, 0.4], [0.3, 0.7], [0.05, 0.95]]
    second = {**replayed, "ids": ["q0", "q1", "q2"], "probabilities": [[1.0, 0.0]] * 3}
    table = chunks_to_table([live, second], schema)
    assert table.equals(chunks_to_table([replayed, second], schema))
    assert table.column("probabilities").to_pylist()[2:4] == [[0.05, 0.95], [1.0, 0.0]]
    assert table.column("features").to_pylist()[2] == {"x": -3.25, "city": "zz"}
    assert table.column("uncertain").to_pylist() == [True, False, False] * 2
    log.close()  # the live chunk's flush goes through the same conversion
    assert store.existing_prediction_ids(["p0", "p1", "p2"]) == {"p0", "p1", "p2"}


def test_large_chunks_are_converted_when_logged_small_ones_at_the_flush(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.store import spool

    monkeypatch.setattr(spool, "PREPARE_MIN_ROWS", 3)
    log = PredictionLog(store, tmp_path / "spool", flush_interval=3600)
    log.start()
    log.append(chunk(["big0", "big1", "big2"]))
    log.append(chunk(["small0"]))
    big, small = log._buffer
    assert big["table"].num_rows == 3 and big["ids"] == ["big0", "big1", "big2"]
    assert "table" not in small
    assert log.flush() == 4
    rows = store.lake.query(
        "SELECT prediction_id, features.f0 AS f0, probabilities FROM lake.predictions "
        "WHERE prediction_id LIKE 'big%' OR prediction_id = 'small0' ORDER BY prediction_id"
    ).to_pylist()
    assert [r["prediction_id"] for r in rows] == ["big0", "big1", "big2", "small0"]
    assert all(r["f0"] == 1.0 and r["probabilities"] == [0.9, 0.1] for r in rows)
    log.close()


def test_replay_reads_arrow_and_json_records_and_skips_a_torn_one(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.store import spool

    monkeypatch.setattr(spool, "PREPARE_MIN_ROWS", 3)
    earlier = PredictionLog(store, tmp_path / "earlier", flush_interval=3600)
    earlier.start()
    earlier.append(chunk(["r1"]))  # committed before the crash
    earlier.close()
    dead = PredictionLog(store, tmp_path / "spool")  # only to prepare records as `append` does
    big, small = dead._prepared(chunk(["r0", "r1", "r2"])), dead._prepared(chunk(["r3"]))
    assert "table" in big and "table" not in small
    torn = spool._record(dead._prepared(chunk(["r4", "r5", "r6"])))[:-5]  # cut by the crash
    (tmp_path / "spool").mkdir()
    segment = tmp_path / "spool" / "predictions-999999-dead-0.spool"
    segment.write_bytes(spool._record(big) + spool._record(small) + torn)
    assert dead.replay_orphans() == 3  # r0, r2 and r3: r1 is in the lake already
    assert not segment.exists()
    counts = dict(
        store.lake.rows(
            "SELECT prediction_id, count(*) FROM lake.predictions "
            "WHERE prediction_id LIKE 'r_' GROUP BY ALL"
        )
    )
    assert counts == {"r0": 1, "r1": 1, "r2": 1, "r3": 1}

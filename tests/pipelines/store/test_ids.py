"""Time-ordered prediction ids, and `Store.prediction` finding rows by them or by a full scan."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

from pipelines.loop.ingestion import ingest
from pipelines.store import Store
from pipelines.store.ids import prediction_id_time, prediction_ids
from pipelines.store.spool import chunks_to_table
from tests.conftest import make_settings


def test_ids_carry_their_time_and_sort_in_row_order() -> None:
    ts = 1_767_225_600.1234  # 2026-01-01
    ids = prediction_ids(3, ts)
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert all(len(i) == 32 for i in ids)
    made = prediction_id_time(ids[0])
    assert made is not None and abs(made.timestamp() - ts) < 0.001
    assert prediction_ids(1, ts + 1)[0] > ids[-1]  # a later millisecond sorts after
    assert prediction_ids(1, ts)[0] != ids[0]  # same millisecond: another random part


def test_other_ids_do_not_parse() -> None:
    old = f"{os.urandom(12).hex()}{0:06x}"
    for other in (old, os.urandom(12).hex(), "edge:cam-a-00000001", "p1", "", "x" * 32):
        assert prediction_id_time(other) is None


def test_prediction_by_id_reads_its_time_window_or_scans(tmp_path: Path) -> None:
    store = Store.open(make_settings(tmp_path / "data"))
    ingest(store, features=[[1.0, 2.0]], labels=[0], batch_id="schema")
    schema = store.dataset_schema()
    assert schema is not None
    day = 24 * 3600.0
    now = time.time()
    chunks = []
    for ts, ids in (
        (now - 2 * day, prediction_ids(2, now - 2 * day)),
        (now - day, [f"{os.urandom(12).hex()}{i:06x}" for i in range(2)]),  # an older id
        (now, ["edge:cam-1", "edge:cam-2"]),
    ):
        chunks.append(
            {
                "ids": ids,
                "ts": ts,
                "model_name": "m",
                "model_version": "1",
                "features": {"f0": [1.0, 2.0], "f1": [3.0, 4.0]},
                "prediction": ["0", "1"],
                "confidence": [0.9, 0.8],
                "probabilities": [[0.9, 0.1], [0.2, 0.8]],
                "latency_ms": [1.0, 1.0],
                "uncertain": [False, False],
            }
        )
    for chunk in chunks:  # one commit each: files with their own time ranges
        store.append_predictions(chunks_to_table([chunk], schema))
    for chunk in chunks:
        for i, pid in enumerate(chunk["ids"]):
            row = store.prediction(pid)
            assert row is not None and row["prediction"] == chunk["prediction"][i]
            assert abs(row["ts"].timestamp() - chunk["ts"]) < 1e-3
    unknown = prediction_ids(1, now - 3 * day)[0]
    assert store.prediction(unknown) is None
    assert store.prediction("edge:nobody") is None
    ts = dt.datetime.fromtimestamp(chunks[1]["ts"], dt.UTC)
    assert store.prediction(chunks[1]["ids"][0], ts) is not None  # a known ts still wins
    store.close()

"""Several processes write the lake at once while another reads: nothing is lost."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from pipelines.loop.ingestion import ingest
from pipelines.store import Store
from tests.conftest import make_settings

pytestmark = pytest.mark.slow

WRITERS, COMMITS, ROWS = 3, 50, 20


def _writer(data_dir: str, worker: int, errors: mp.Queue) -> None:
    try:
        store = Store.open(make_settings(Path(data_dir)))
        for i in range(COMMITS):
            ingest(
                store,
                features=[[float(worker), float(i), float(j)] for j in range(ROWS)],
                labels=[worker] * ROWS,
                batch_id=f"w{worker}-{i}",
            )
    except Exception as exc:  # surfaced to the test
        errors.put(f"writer {worker}: {exc!r}")


def _reader(data_dir: str, stop: mp.Event, errors: mp.Queue, seen: mp.Queue) -> None:
    try:
        store = Store.open(make_settings(Path(data_dir)), read_only=True)
        last = 0
        while not stop.is_set():
            n = int(store.lake.scalar("SELECT count(*) FROM lake.ingested_rows"))
            if n < last:
                errors.put(f"reader saw the row count go back from {last} to {n}")
            last = n
        seen.put(last)
        seen.put(int(store.lake.scalar("SELECT count(*) FROM lake.ingested_rows")))
    except Exception as exc:
        errors.put(f"reader: {exc!r}")


def test_three_writers_and_a_reader(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = Store.open(make_settings(data))
    ingest(store, features=[[0.0, 0.0, 0.0]], labels=[0], batch_id="schema")  # fixes the schema
    ctx = mp.get_context("spawn")
    errors, seen, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    reader = ctx.Process(target=_reader, args=(str(data), stop, errors, seen))
    writers = [ctx.Process(target=_writer, args=(str(data), w, errors)) for w in range(WRITERS)]
    reader.start()
    for p in writers:
        p.start()
    for p in writers:
        p.join(300)
    stop.set()
    reader.join(60)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    assert all(p.exitcode == 0 for p in [*writers, reader])
    # The reader, attached before any writer started, sees every row once they are done.
    last, final = seen.get(timeout=5), seen.get(timeout=5)
    assert 1 <= last <= final == WRITERS * COMMITS * ROWS + 1
    counts = dict(
        store.lake.rows(
            "SELECT label, count(*) FROM lake.ingested_rows WHERE batch_id <> 'schema' GROUP BY 1"
        )
    )
    assert counts == {str(w): COMMITS * ROWS for w in range(WRITERS)}
    batches = store.lake.scalar("SELECT count(DISTINCT batch_id) FROM lake.ingested_rows")
    assert batches == WRITERS * COMMITS + 1

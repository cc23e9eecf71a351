"""Several processes write the lake at once while another reads: nothing is lost, on the
embedded SQLite catalog and on PostgreSQL with the files in S3."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from pipelines.loop.ingestion import ingest
from pipelines.ops.cluster import ClusterLayout
from pipelines.settings import Settings
from pipelines.store import Store
from tests.conftest import cluster_settings

pytestmark = pytest.mark.slow

WRITERS, COMMITS, ROWS = 3, 50, 20


def _settings(fields: dict) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[arg-type]


def _writer(fields: dict, worker: int, errors: mp.Queue) -> None:
    try:
        store = Store.open(_settings(fields))
        for i in range(COMMITS):
            ingest(
                store,
                features=[[float(worker), float(i), float(j)] for j in range(ROWS)],
                labels=[worker] * ROWS,
                batch_id=f"w{worker}-{i}",
            )
    except Exception as exc:  # surfaced to the test
        errors.put(f"writer {worker}: {exc!r}")


def _reader(fields: dict, stop: mp.Event, errors: mp.Queue, seen: mp.Queue) -> None:
    try:
        store = Store.open(_settings(fields), read_only=True)
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


@pytest.fixture(params=["sqlite", "postgres+s3"])
def lake_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict:
    """The settings' fields of a lake on one machine, or of one shared by several."""
    if request.param == "sqlite":
        return {"data_dir": tmp_path / "data"}
    layout: ClusterLayout = request.getfixturevalue("cluster")
    settings = cluster_settings(layout, "writers")
    fields = {name: getattr(settings, name) for name in type(settings).model_fields}
    return {**fields, "s3_secret": settings.s3_secret.get_secret_value()}


def test_three_writers_and_a_reader(lake_settings: dict) -> None:
    store = Store.open(_settings(lake_settings))
    assert store.lake.catalog_uri.startswith(lake_settings.get("catalog_uri") or "sqlite:")
    ingest(store, features=[[0.0, 0.0, 0.0]], labels=[0], batch_id="schema")  # fixes the schema
    ctx = mp.get_context("spawn")
    errors, seen, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    reader = ctx.Process(target=_reader, args=(lake_settings, stop, errors, seen))
    writers = [ctx.Process(target=_writer, args=(lake_settings, w, errors)) for w in range(WRITERS)]
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
    # Compaction merges the many small files and deletes the replaced ones (in the bucket, too)
    # without changing what a reader sees.
    files_before = store.lake.scalar(
        "SELECT count(*) FROM ducklake_list_files('lake', 'ingested_rows')"
    )
    store.compact(older_than_hours=0)
    files_after = store.lake.scalar(
        "SELECT count(*) FROM ducklake_list_files('lake', 'ingested_rows')"
    )
    assert files_after < files_before
    assert store.lake.scalar("SELECT count(*) FROM lake.ingested_rows") == final

"""The store on a real DuckLake: schema fixing, snapshots, time travel, compaction."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from pipelines.loop.ingestion import ingest
from pipelines.schema import SchemaError
from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.store.tables import TABLES


def test_init_creates_every_contract_table(settings: Settings) -> None:
    store = Store.open(settings)
    assert set(store.count_rows()) == set(TABLES)
    assert {
        "ingested_rows",
        "predictions",
        "detections",
        "feedback",
        "labeling_queue",
        "drift_results",
        "retraining_events",
        "model_events",
    } <= set(TABLES)
    Store.open(settings)  # a second process opening it changes nothing


def test_first_batch_fixes_schema_and_later_batches_are_checked(settings: Settings) -> None:
    store = Store.open(settings)
    first = ingest(store, records=[{"x": 1.0, "c": "a"}, {"x": 2.5, "c": "b"}], labels=["u", "v"])
    assert first.schema.names == ["x", "c"]
    assert [f.kind for f in first.schema.features] == ["numeric", "categorical"]
    assert first.schema.label_type == "str"
    with pytest.raises(SchemaError, match="missing feature"):
        ingest(store, records=[{"x": 1.0}])
    with pytest.raises(SchemaError, match="expected a finite number"):
        ingest(store, records=[{"x": "nope", "c": "a"}])
    with pytest.raises(SchemaError, match="2 values, expected 3|expected 2"):
        ingest(store, features=[[1.0, "a", 3.0]])
    ingest(store, features=[[3.0, "c"]], labels=[None])
    rows = store.labeled_rows()
    assert len(rows) == 2  # the unlabeled row is stored but not trained on
    assert store.count_rows()["ingested_rows"] == 3


def test_time_travel_reads_exactly_the_training_snapshot(settings: Settings) -> None:
    store = Store.open(settings)
    ingest(store, features=[[float(i)] for i in range(10)], labels=[i % 2 for i in range(10)])
    snap = store.snapshot_id()
    ingest(store, features=[[100.0]], labels=[1])
    assert len(store.labeled_rows(snap)) == 10
    assert len(store.labeled_rows()) == 11
    np.testing.assert_array_equal(np.sort(store.labeled_rows(snap).columns["f0"]), np.arange(10.0))


def test_snapshot_id_is_the_current_snapshot_of_a_fresh_reader(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.store import lake

    store = Store.open(settings)
    for i in range(3):
        ingest(store, features=[[float(i)]] * 300, labels=[0] * 300)
        current = store.lake.scalar("SELECT id FROM lake.current_snapshot()")
        assert store.snapshot_id() == current
    # A DuckLake whose catalog database is named otherwise: asked through DuckLake instead.
    monkeypatch.setattr(lake, "METADATA", "__no_such_catalog")
    assert store.snapshot_id() == current


def test_compact_keeps_protected_snapshots(settings: Settings) -> None:
    store = Store.open(settings)
    ingest(store, features=[[1.0]], labels=[0])
    protected = store.snapshot_id()
    for i in range(5):
        ingest(store, features=[[float(i)]], labels=[1])
    report = store.compact(keep_snapshots=[protected], older_than_hours=0)
    assert report["snapshots_after"] < report["snapshots_before"]
    assert len(store.labeled_rows(protected)) == 1  # still readable after compaction
    assert len(store.labeled_rows()) == 6
    # an expired snapshot can no longer be read
    with pytest.raises(Exception, match="(?i)snapshot"):
        store.labeled_rows(protected + 1)


def test_a_copied_data_dir_is_independent_of_the_original(settings: Settings, tmp_path) -> None:
    import shutil

    from tests.conftest import make_settings

    store = Store.open(settings)
    for i in range(3):
        ingest(store, features=[[float(i)]] * 300, labels=[0] * 300)  # real Parquet files
    store.close()
    copy = tmp_path / "copy"
    shutil.copytree(settings.data_dir, copy)
    moved = Store.open(make_settings(copy))
    moved.compact(older_than_hours=0)  # merges files and deletes the old ones: in the copy only
    assert len(moved.labeled_rows()) == 900
    assert len(Store.open(settings).labeled_rows()) == 900  # the original still reads


def _catalog_value(settings: Settings, sql: str) -> str:
    """One value from a store's SQLite catalog, through Python's sqlite3: only once no store of
    this process holds the catalog (see `Lake._prepare_catalog`)."""
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(settings.catalog_uri.split(":", 1)[1])) as db:
        return db.execute(sql).fetchone()[0]


def test_a_second_store_in_a_process_never_opens_the_catalog_with_pythons_sqlite(
    settings: Settings, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing Python's sqlite3 connection (a second copy of SQLite) would drop the POSIX locks
    that the first store's DuckDB holds on the catalog: WAL mode and a moved data dir are
    handled through DuckDB's own SQLite instead."""
    import shutil

    from pipelines.store import lake
    from tests.conftest import make_settings

    first = Store.open(settings)
    ingest(first, features=[[1.0]] * 300, labels=[0] * 300)
    first.close()
    shutil.copytree(settings.data_dir, tmp_path / "copy")
    copy = make_settings(tmp_path / "copy")
    open_in_copy = Store.open(copy)  # the catalog is now attached here

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("Python's sqlite3 opened the catalog")

    with monkeypatch.context() as patched:
        patched.setattr(lake.sqlite3, "connect", refused)
        second = Store.open(copy)
        ingest(second, features=[[2.0]] * 300, labels=[1] * 300)
    assert len(open_in_copy.labeled_rows()) == 600
    second.close()
    open_in_copy.close()
    data_path = "SELECT value FROM ducklake_metadata WHERE key = 'data_path'"
    assert _catalog_value(copy, data_path) == copy.data_path  # files recorded under the copy
    assert _catalog_value(copy, "PRAGMA journal_mode") == "wal"


def test_a_catalog_made_without_wal_is_switched_to_it(settings: Settings) -> None:
    Store.open(settings).close()
    assert _catalog_value(settings, "PRAGMA journal_mode=DELETE") == "delete"
    store = Store.open(settings)
    ingest(store, features=[[1.0]], labels=[0])
    assert len(store.labeled_rows()) == 1
    store.close()
    assert _catalog_value(settings, "PRAGMA journal_mode") == "wal"


def test_stores_opened_at_once_on_a_new_data_dir_share_one_catalog(settings: Settings) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: Store.open(settings), range(4)))
    for i, store in enumerate(stores):
        ingest(store, features=[[float(i)]], labels=[i], batch_id=f"b{i}")
    assert all(len(store.labeled_rows()) == 4 for store in stores)
    for store in stores:
        store.close()
    assert _catalog_value(settings, "PRAGMA journal_mode") == "wal"
    assert not [p.name for p in settings.data_dir.rglob(".*") if p.is_file()]


@pytest.mark.slow  # a fresh interpreter with an empty HOME
def test_a_machine_that_never_loaded_the_extension_opens_the_store(tmp_path) -> None:
    """DuckDB copies an installed extension under $HOME/.duckdb; a fresh machine has none, and
    a DuckLake setting used before LOAD made DuckDB look there (and fail) instead."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLAB_")}
    env.update(HOME=str(home), DRIFTLAB_DATA_DIR=str(tmp_path / "data"))
    code = "from pipelines.settings import Settings\nfrom pipelines.store import Store\n"
    code += "print(sorted(Store.open(Settings()).count_rows())[0])"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (home / ".duckdb").is_dir()  # the run really used the empty home


def test_threads_caps_duckdb_in_this_process_only(settings: Settings) -> None:
    capped = Store.open(settings, threads=1)
    default = Store.open(settings)
    assert capped.lake.scalar("SELECT current_setting('threads')") == 1
    (own,) = duckdb.connect().execute("SELECT current_setting('threads')").fetchone() or (0,)
    assert default.lake.scalar("SELECT current_setting('threads')") == own  # DuckDB's default
    ingest(capped, features=[[1.0], [2.0]], labels=[0, 1])  # writes work on one thread
    assert len(default.labeled_rows()) == 2

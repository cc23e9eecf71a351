"""Values come back from the lake exactly as they went in, and `driftlab repair` moves feature
rows inlined in the catalog to Parquet without changing a value."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from pipelines.loop.ingestion import ingest
from pipelines.schema import stored_number
from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.store.lake import extension_file
from pipelines.store.repair import cast_text, parse_inlined
from pipelines.store.spool import chunks_to_table
from pipelines.store.tables import FEATURE_TABLES

# Values DuckLake 1.5.5 changes, or fails to read, in a STRUCT row inlined in its catalog.
HOSTILE_TEXT = ["it's", "back\\slash", "'", "\\'", "a''b", "nul\x00x", "{'a': 1}", "CAST('x' AS X)"]
HOSTILE_NUMBERS = [-0.0, 5e-324, -1.7976931348623157e308, 0.1]


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


def same(a: Any, b: Any) -> bool:
    """Equal, floats bit for bit (so -0.0 is not 0.0)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return isinstance(b, float) and bits(a) == bits(b)
    return a == b


def hostile_records() -> list[dict[str, Any]]:
    numbers = HOSTILE_NUMBERS * 2
    return [{"x": x, "c": t} for x, t in zip(numbers, HOSTILE_TEXT, strict=True)]


def as_stored(record: dict[str, Any]) -> dict[str, Any]:
    """What the store keeps of a record: every value exact, zero unsigned."""
    return {k: stored_number(v) if isinstance(v, float) else v for k, v in record.items()}


def plain_lake(folder: Path, table_option: int | None) -> duckdb.DuckDBPyConnection:
    """DuckDB + DuckLake alone (no driftlab code), small commits inlined, one STRUCT table."""
    folder.mkdir(parents=True)
    con = duckdb.connect()
    for ext in ("ducklake", "sqlite"):
        con.execute(f"INSTALL '{extension_file(ext)}'")
        con.execute(f"LOAD {ext}")
    con.execute(
        f"ATTACH 'ducklake:sqlite:{folder}/catalog.sqlite' AS lake "
        f"(DATA_PATH '{folder}/files/', DATA_INLINING_ROW_LIMIT 200)"
    )
    con.execute("CREATE TABLE lake.t (features STRUCT(x DOUBLE, c VARCHAR))")
    if table_option is not None:
        con.execute(
            f"CALL lake.set_option('data_inlining_row_limit', {table_option}, table_name => 't')"
        )
    return con


def insert(con: duckdb.DuckDBPyConnection, text: str, x: float) -> None:
    con.register("_rows", pa.table({"features": [{"x": x, "c": text}]}))
    con.execute("INSERT INTO lake.t SELECT * FROM _rows")


@pytest.mark.slow
@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_plain_ducklake_changes_inlined_struct_text_unless_the_table_is_parquet_only(
    tmp_path: Path, text: str
) -> None:
    """The DuckLake behaviour the store works around: an inlined STRUCT's text comes back
    changed (or not at all); with the table option `data_inlining_row_limit 0`, which
    `Store.init` sets on the feature tables, the row is written as Parquet and kept."""
    for option, exact in ((None, False), (0, True)):
        con = plain_lake(tmp_path / f"lake-{option}", option)
        insert(con, text, 1.0)
        try:
            got = con.execute("SELECT features.c FROM lake.t").fetchall()[0][0]
        except duckdb.Error:
            got = None  # unreadable
        assert (got == text) is exact, (option, text, got)
        con.close()


def test_plain_ducklake_cannot_read_an_inlined_negative_zero(tmp_path: Path) -> None:
    inlined = plain_lake(tmp_path / "inlined", None)
    insert(inlined, "a", -0.0)
    with pytest.raises(duckdb.ConversionException, match="-0.0"):
        inlined.execute("SELECT features FROM lake.t").fetchall()
    parquet = plain_lake(tmp_path / "parquet", 0)
    insert(parquet, "a", -0.0)
    assert bits(parquet.execute("SELECT features.x FROM lake.t").fetchall()[0][0]) == bits(-0.0)


def test_duckdb_parquet_gives_every_zero_of_a_dictionary_page_the_first_ones_sign(
    tmp_path: Path,
) -> None:
    """Why the store keeps zero unsigned (`pipelines.schema.stored_number`): DuckDB's Parquet
    writer keeps -0.0 and 0.0 as one dictionary entry, so a 0.0 written after a -0.0 reads
    back as -0.0. Unsigned zeros, and every other value, read back exactly."""
    zeros = [-0.0, 0.0, 1.5, 0.0, -0.0] * 20
    con = duckdb.connect()
    for values, exact in ((zeros, False), ([stored_number(v) for v in zeros], True)):
        con.register("_rows", pa.table({"x": values}))
        path = tmp_path / f"{exact}.parquet"
        con.execute(f"COPY (SELECT * FROM _rows) TO '{path}'")
        got = [row[0] for row in con.execute(f"SELECT x FROM '{path}'").fetchall()]
        assert [bits(v) for v in got] == [bits(v) for v in values] or not exact
        assert ([bits(v) for v in got] == [bits(v) for v in values]) is exact


def test_the_store_writes_feature_tables_as_parquet_only(settings: Settings) -> None:
    store = Store.open(settings)
    options = store.lake.rows(
        """SELECT scope_entry, value FROM ducklake_options('lake')
           WHERE option_name = 'data_inlining_row_limit' AND scope = 'TABLE'"""
    )
    assert sorted(options) == sorted((f"main.{t}", "0") for t in FEATURE_TABLES)
    records = hostile_records()
    ingest(store, records=records, labels=list(range(len(records))))
    got = store.lake.query("SELECT features FROM lake.ingested_rows ORDER BY record_id")
    stored = got.column(0).to_pylist()
    assert all(same(as_stored(a), b) for a, b in zip(records, stored, strict=True))
    snapshots = store.snapshot_id()
    Store.open(settings)  # another process opening the store has nothing to set again
    assert store.snapshot_id() == snapshots


@pytest.mark.parametrize(
    ("written", "value"),
    [  # as DuckLake 1.5.5 writes a STRUCT row into its catalog
        ("{'x': CAST('-0.0' AS VARCHAR), 'c': 'it''s'}", {"x": -0.0, "c": "it's"}),
        ("{'x': 5e-324, 'c': CONCAT('nul', chr(0), 'x')}", {"x": 5e-324, "c": "nul\x00x"}),
        ("{'x': 1.7976931348623157e+308, 'c': 'b\\s'}", {"x": 1.7976931348623157e308, "c": "b\\s"}),
        ("{'x': 0.1, 'c': ''''}", {"x": 0.1, "c": "'"}),
        ("{'x': 1e+22, 'c': 'NULL'}", {"x": 1e22, "c": "NULL"}),
        ("{'x': NULL, 'c': '{''a'': 1}, [x]: y'}", {"x": None, "c": "{'a': 1}, [x]: y"}),
    ],
)
def test_repair_reads_what_ducklake_wrote_and_writes_what_its_cast_reads(
    written: str, value: dict[str, Any]
) -> None:
    parsed = parse_inlined(written)
    if isinstance(parsed["x"], str):  # written with a CAST: the feature's type makes it a number
        parsed["x"] = float(parsed["x"])
    assert same(parsed, value)
    read = duckdb.execute("SELECT CAST(? AS STRUCT(x DOUBLE, c VARCHAR))", [cast_text(value)])
    assert same(read.fetchall()[0][0], value)


def repair(settings: Settings) -> list[dict[str, Any]]:
    """`driftlab repair`, run from the shell on the settings' data dir."""
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "repair"],
        capture_output=True,
        text=True,
        env={**os.environ, "DRIFTLAB_DATA_DIR": str(settings.data_dir)},
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.e2e  # `driftlab repair` from the shell, twice
def test_repair_recovers_inlined_feature_rows_exactly_at_every_snapshot(
    settings: Settings,
) -> None:
    store = Store.open(settings)
    for table in FEATURE_TABLES:  # a store whose feature tables inline small commits
        store.lake.write(
            lambda cur, t=table: cur.execute(
                "CALL lake.set_option('data_inlining_row_limit', 200, table_name => ?)", [t]
            )
        )
    records = hostile_records()
    first = ingest(store, records=records, labels=[0, 1] * 4)
    schema = first.schema
    n = len(records)
    chunk = {
        "ids": [f"p{i}" for i in range(n)],
        "ts": 1_700_000_000.0,
        "model_name": "m",
        "model_version": "1",
        "features": {name: [r[name] for r in records] for name in schema.names},
        "prediction": ["0"] * n,
        "confidence": [0.5] * n,
        "probabilities": [[0.5, 0.5]] * n,
        "latency_ms": [1.0] * n,
        "uncertain": [True] * n,
    }
    store.append_predictions(chunks_to_table([chunk], schema))
    snapshot = store.snapshot_id()
    ingest(store, records=[{"x": 1.0, "c": "later"}], labels=[0])
    for table in FEATURE_TABLES:
        with pytest.raises(duckdb.Error, match="inlined data"):
            store.lake.rows(f"SELECT features FROM lake.{table}")
    store.close()

    assert {r["table"]: r["rewritten"] for r in repair(settings)} == {
        "ingested_rows": n,
        "predictions": n,
    }

    store = Store.open(settings)
    reads = {
        "ingested_rows": f"WHERE batch_id = '{first.batch_id}' ORDER BY record_id",
        "predictions": "ORDER BY prediction_id",
    }
    for table, rows in reads.items():
        for at in ("", f"AT (VERSION => {snapshot})"):
            got = store.lake.query(f"SELECT features FROM lake.{table} {at} {rows}")
            assert all(
                same(as_stored(a), b)
                for a, b in zip(records, got.column(0).to_pylist(), strict=True)
            ), (table, at)
    trained_on = store.labeled_rows(snapshot)  # what a model trained at `snapshot` reads
    assert [bits(x) for x in trained_on.columns["x"][:n]] == [
        bits(stored_number(r["x"])) for r in records
    ]
    assert list(trained_on.columns["c"][:n]) == [r["c"] for r in records]
    assert all(r["inlined_rows"] == 0 for r in repair(settings))  # all in Parquet now

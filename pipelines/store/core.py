"""What every table family of the `Store` shares: the lake, the dataset schema, inserts.

`Store` (`pipelines.store.store`) is one small class per family of tables (`ingested`,
`predictions`, `windows`, `feedback`, `labeling_queue`, `events`, `images`) over this core:
every method is one read, or one short write transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import duckdb
import pyarrow as pa

from pipelines.schema import FeatureSchema
from pipelines.store.lake import Lake

DATASET = "default"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class StoreCore:
    """The lake and the dataset schema (cached: it never changes once fixed)."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._schema: FeatureSchema | None = None

    def snapshot_id(self) -> int:
        return self.lake.snapshot_id()

    def dataset_schema(self) -> FeatureSchema | None:
        """The schema fixed by the first batch (it never changes afterwards, so it is cached)."""
        if self._schema is None:
            text = self.lake.scalar(
                "SELECT schema_json FROM lake.datasets WHERE name = ? ORDER BY created_at LIMIT 1",
                [DATASET],
            )
            if text is not None:
                self._schema = FeatureSchema.from_dict(json.loads(text))
        return self._schema

    def _insert(self, name: str, table: pa.Table) -> None:
        def insert(cur: duckdb.DuckDBPyConnection) -> None:
            cur.register("_rows", table)
            try:
                cur.execute(f"INSERT INTO lake.{name} BY NAME SELECT * FROM _rows")
            finally:
                cur.unregister("_rows")

        self.lake.write(insert, what=f"insert {name}")

    def predictions_by_id(
        self, ids: list[str], first: dt.datetime, last: dt.datetime
    ) -> dict[str, dict[str, Any]]:
        """Predictions by id, looked up only in the files of their time range."""
        wanted = pa.table({"prediction_id": pa.array(ids, pa.string())})
        rows = self.lake.query_with(
            """SELECT * FROM lake.predictions SEMI JOIN _ids USING (prediction_id)
               WHERE ts >= ? AND ts <= ?""",
            [first, last],
            {"_ids": wanted},
        )
        return {row["prediction_id"]: row for row in rows.to_pylist()}

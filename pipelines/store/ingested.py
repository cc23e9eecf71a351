"""Ingested rows (`ingested_rows`, `datasets`): the dataset schema, batches of rows and
their labels, and the labeled rows a model is trained on at a snapshot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.schema import FeatureSchema, SchemaError, check_feature_names
from pipelines.store.core import DATASET, StoreCore, new_id, utcnow
from pipelines.store.group import GroupCommit
from pipelines.store.lake import Lake
from pipelines.store.sql import identifier
from pipelines.store.tables import FEATURE_TABLES


@dataclass(frozen=True)
class LabeledRows:
    """Rows with labels at one snapshot: what a model is trained on."""

    snapshot_id: int
    record_ids: list[str]
    columns: dict[str, np.ndarray]
    labels: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.record_ids)


class IngestedRows(StoreCore):
    """Batches of rows into `ingested_rows`; the dataset schema the first batch fixes."""

    def __init__(self, lake: Lake) -> None:
        super().__init__(lake)
        # Batches ingested by several threads at once share commits (see `group`).
        self.ingest_group: GroupCommit[pa.Table, int] = GroupCommit(
            self._commit_ingested, turn=self.lake.commit_lock
        )

    def fix_dataset_schema(self, schema: FeatureSchema) -> FeatureSchema:
        """Record `schema` as the dataset's unless another process got there first.

        Returns the schema in force, which the caller validates its batch against.
        """
        check_feature_names(schema.names)
        struct = ", ".join(
            f"{identifier(f.name)} {'DOUBLE' if f.kind == 'numeric' else 'VARCHAR'}"
            for f in schema.features
        )

        def fix(cur: duckdb.DuckDBPyConnection) -> str:
            row = cur.execute(
                "SELECT schema_json FROM lake.datasets WHERE name = ? LIMIT 1", [DATASET]
            ).fetchone()
            if row is not None:
                return str(row[0])
            text = json.dumps(schema.to_dict())
            cur.execute("INSERT INTO lake.datasets VALUES (?, ?, ?)", [DATASET, text, utcnow()])
            for table in FEATURE_TABLES:
                cur.execute(f"ALTER TABLE lake.{table} ADD COLUMN features STRUCT({struct})")
            return text

        self._schema = FeatureSchema.from_dict(json.loads(self.lake.write(fix, what="fix schema")))
        return self._schema

    def ingest(
        self,
        schema: FeatureSchema,
        columns: dict[str, np.ndarray],
        labels: Sequence[str | None] | None,
        *,
        batch_id: str | None = None,
        source: str = "api",
    ) -> tuple[str, int]:
        """Append one batch of rows; returns (batch_id, the id of a snapshot that holds it).

        Thread-safe: batches that threads ingest while a commit runs share the next one."""
        n = len(next(iter(columns.values())))
        if labels is not None and len(labels) != n:
            raise SchemaError(f"{len(labels)} labels for {n} rows")
        batch_id = batch_id or new_id()
        # Arrow builds the per-row ids and the repeated values itself: Python lists of n items
        # would be a large share of a big batch's time.
        numbers = pa.array(np.arange(n)).cast(pa.string())
        label = pa.nulls(n, pa.string()) if labels is None else pa.array(labels, pa.string())
        table = pa.table(
            {
                "record_id": pc.binary_join_element_wise(f"{batch_id}:", numbers, ""),
                "batch_id": pa.repeat(pa.scalar(batch_id, pa.string()), n),
                "label": label,
                "source": pa.repeat(pa.scalar(source, pa.string()), n),
                "ingested_at": pa.repeat(pa.scalar(utcnow(), pa.timestamp("us", tz="UTC")), n),
                "features": schema.to_arrow(columns),
            }
        )
        return batch_id, self.ingest_group.submit(table)

    def _commit_ingested(self, tables: list[pa.Table]) -> int:
        """One commit for the batches that `ingest` calls queued at once; its snapshot id."""
        self._insert("ingested_rows", pa.concat_tables(tables))
        return self.snapshot_id()

    def labeled_rows(self, snapshot_id: int | None = None) -> LabeledRows:
        """Every labeled row at a snapshot: ingested labels plus human labels on predictions."""
        schema = self.dataset_schema()
        if schema is None:
            raise SchemaError("the store holds no data yet: ingest a labeled batch first")
        snap = self.snapshot_id() if snapshot_id is None else int(snapshot_id)
        at = f"AT (VERSION => {snap})"
        table = self.lake.query(
            f"""
            SELECT record_id, label, source, features FROM lake.ingested_rows {at}
            WHERE label IS NOT NULL
            UNION ALL
            SELECT p.prediction_id, f.label, 'feedback:' || f.source, p.features
            FROM (
                SELECT prediction_id, arg_max(label, ts) AS label, arg_max(source, ts) AS source
                FROM lake.feedback {at} WHERE label IS NOT NULL GROUP BY prediction_id
            ) f JOIN lake.predictions AS p {at} USING (prediction_id)
            -- image predictions (read at the current snapshot: older ones lack `task`)
            WHERE prediction_id NOT IN (
                SELECT prediction_id FROM lake.predictions WHERE task IS NOT NULL)
            ORDER BY record_id
            """
        )
        feats = table.column("features").combine_chunks()
        columns = {name: _to_numpy(feats.field(i)) for i, name in enumerate(schema.names)}
        return LabeledRows(
            snapshot_id=snap,
            record_ids=table.column("record_id").to_pylist(),
            columns=columns,
            labels=table.column("label").to_pylist(),
            sources=table.column("source").to_pylist(),
        )


def _to_numpy(array: pa.Array) -> np.ndarray:
    if pa.types.is_floating(array.type):
        return array.to_numpy(zero_copy_only=False)
    return np.asarray(array.to_pylist(), dtype=object)

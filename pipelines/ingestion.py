"""Ingestion: validate a batch against the dataset schema (fixing it on the first batch), store it.

The API's /ingest endpoints, the notebooks and the demo seeding all come through here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.schema import FeatureSchema, SchemaError, check_row_count, infer_schema
from pipelines.store import Store


@dataclass(frozen=True)
class IngestResult:
    batch_id: str
    rows: int
    labeled: int
    snapshot_id: int
    schema: FeatureSchema


def ingest(
    store: Store,
    *,
    features: list[list[Any]] | None = None,
    records: list[dict[str, Any]] | None = None,
    columns: dict[str, np.ndarray] | None = None,
    labels: Sequence[Any] | None = None,
    batch_id: str | None = None,
    source: str = "api",
    max_rows: int | None = None,
) -> IngestResult:
    """Validate and store one batch in one commit. Raises `SchemaError` with a clear message.

    The rows come as `features` or `records`, or as `columns` already read against the
    dataset schema (`pipelines.bulkjson`)."""
    schema = store.dataset_schema()
    if columns is not None:
        if schema is None:
            raise SchemaError("columns given before the dataset schema is fixed")
        check_row_count(len(next(iter(columns.values()))), max_rows)
    else:
        if schema is None:
            schema = store.fix_dataset_schema(infer_schema(features, records, labels))
        columns = schema.columns(features, records, max_rows=max_rows)
    n = len(next(iter(columns.values())))
    stored_labels = None
    if labels is not None:
        if len(labels) != n:
            raise SchemaError(f"{len(labels)} labels for {n} rows: give one label per row")
        stored_labels = schema.labels_to_store(labels)
    batch_id, snapshot = store.ingest(
        schema, columns, stored_labels, batch_id=batch_id, source=source
    )
    labeled = len(stored_labels) - stored_labels.count(None) if stored_labels else 0
    return IngestResult(batch_id, n, labeled, snapshot, schema)

"""Ingestion: validate a batch against the dataset schema (fixing it on the first batch), store it.

The API's /ingest endpoints, the notebooks and the demo seeding all come through here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.schema import FeatureSchema, SchemaError, brief, check_row_count, infer_schema
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

    The rows come as `features` or `records`, or as `columns` already read against the dataset
    schema (`pipelines.serving.bulkjson`). The first batch fixes the dataset schema, and only once
    all of it (rows and labels) has passed: a rejected first batch writes nothing."""
    _check_batch_id(batch_id)
    schema = store.dataset_schema()
    if columns is not None:
        if schema is None:
            raise SchemaError("columns given before the dataset schema is fixed")
        check_row_count(_rows(columns), max_rows)
    elif schema is not None:
        columns = schema.columns(features, records, max_rows=max_rows)
    else:
        implied = infer_schema(features, records, labels)
        columns = implied.columns(features, records, max_rows=max_rows)
        _checked_labels(implied, labels, _rows(columns))
        schema = store.fix_dataset_schema(implied)
        if schema != implied:  # another process fixed it first: the batch must fit that one
            columns = schema.columns(features, records, max_rows=max_rows)
    stored_labels = _checked_labels(schema, labels, _rows(columns))
    batch_id, snapshot = store.ingest(
        schema, columns, stored_labels, batch_id=batch_id, source=source
    )
    labeled = len(stored_labels) - stored_labels.count(None) if stored_labels else 0
    return IngestResult(batch_id, _rows(columns), labeled, snapshot, schema)


BATCH_ID = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
"""A client's `batch_id`: 1 to 128 characters, none of them a control character (each row's
`record_id` repeats it)."""


def _check_batch_id(batch_id: Any) -> None:
    if batch_id is not None and (
        not isinstance(batch_id, str) or BATCH_ID.fullmatch(batch_id) is None
    ):
        raise SchemaError(
            f"batch_id {brief(batch_id)} is not allowed: 1 to 128 characters, no control characters"
        )


def _rows(columns: dict[str, np.ndarray]) -> int:
    return len(next(iter(columns.values())))


def _checked_labels(
    schema: FeatureSchema, labels: Sequence[Any] | None, n: int
) -> list[str | None] | None:
    """The labels as stored (text), or a SchemaError naming the first wrong one."""
    if labels is None:
        return None
    if len(labels) != n:
        raise SchemaError(f"{len(labels)} labels for {n} rows: give one label per row")
    return schema.labels_to_store(labels)

"""POST /ingest/batch and /ingest/stream: labeled or unlabeled rows into the lake."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep, json_body
from api.routes._body import documented, fields, rows_body
from pipelines.loop.ingestion import IngestResult, ingest
from pipelines.schema import SchemaError

router = APIRouter(prefix="/ingest", tags=["ingestion"])


class IngestIn(BaseModel):
    """One batch: `features` (rows) or `records` (objects), optional `labels` and `batch_id`.
    The first batch fixes the dataset's feature names, types and label type."""

    features: list[list[float | str]] | None = Field(None, examples=[[[1.0, 2.0, 3.0]]])
    records: list[dict[str, float | str]] | None = None
    labels: list[int | str | None] | None = Field(None, examples=[[0]])
    batch_id: str | None = Field(None, examples=["batch_001"])


class IngestOut(BaseModel):
    batch_id: str
    rows: int
    labeled: int
    snapshot_id: int = Field(description="A lake snapshot that contains this batch.")
    features: list[str]


def _out(result: IngestResult) -> IngestOut:
    return IngestOut(
        batch_id=result.batch_id,
        rows=result.rows,
        labeled=result.labeled,
        snapshot_id=result.snapshot_id,
        features=result.schema.names,
    )


def _store(state: StateDep, source: str, **batch: Any) -> IngestOut:
    try:
        result = ingest(
            state.store, source=source, max_rows=state.settings.max_rows_per_request, **batch
        )
    except SchemaError as exc:
        raise HTTPException(422, str(exc)) from None
    state.metrics.ingested.inc(result.rows)
    return _out(result)


@router.post("/batch", response_model=IngestOut, openapi_extra=documented(IngestIn))
async def ingest_batch(state: StateDep, request: Request) -> IngestOut:
    # Parsed on a worker thread with the rest: on the event loop, a 10k-row body's parsing would
    # hold up every other request's reading (clients sending batches at once would queue behind
    # each other).
    return await run_in_threadpool(_ingest_body, state, await request.body())


def _ingest_body(state: StateDep, raw: bytes) -> IngestOut:
    body, bulk = rows_body(
        raw,
        state.store.dataset_schema(),  # None before the first batch: it fixes the schema
        {"features": list, "records": list, "labels": list, "batch_id": str},
    )
    return _store(
        state,
        "api",
        features=body.get("features"),
        records=body.get("records"),
        columns=bulk.columns if bulk is not None else None,
        labels=body.get("labels"),
        batch_id=body.get("batch_id"),
    )


class StreamRecordIn(BaseModel):
    """One row: `record` (object) or `features` (values), and an optional `label`. Send one
    such object as JSON, or many as NDJSON lines (Content-Type: application/x-ndjson)."""

    record: dict[str, float | str] | None = None
    features: list[float | str] | None = None
    label: int | str | None = None


@router.post("/stream", response_model=IngestOut, openapi_extra=documented(StreamRecordIn))
async def ingest_stream(state: StateDep, request: Request) -> IngestOut:
    """All lines are validated before any is stored: a bad line stores nothing."""
    ctype = request.headers.get("content-type", "")
    if "ndjson" in ctype or "jsonl" in ctype:
        raw = await request.body()
        lines = [line for line in raw.splitlines() if line.strip()]
        if not lines:
            raise HTTPException(422, "no NDJSON lines in the body")
        items = []
        for n, line in enumerate(lines, start=1):
            try:
                items.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise HTTPException(422, f"line {n} is not valid JSON: {exc}") from None
    else:
        items = [await json_body(request)]
    allowed: dict[str, type | tuple[type, ...]] = {
        "record": dict,
        "features": list,
        "label": (int, str),
    }
    records: list[dict[str, Any]] = []
    features: list[list[Any]] = []
    labels: list[Any] = []
    for n, item in enumerate(items, start=1):
        try:
            row = fields(item, allowed)
        except HTTPException as exc:
            raise HTTPException(422, f"line {n}: {exc.detail}") from None
        if ("record" in row) == ("features" in row):
            raise HTTPException(422, f'line {n}: give exactly one of "record" or "features"')
        if "record" in row:
            records.append(row["record"])
        else:
            features.append(row["features"])
        labels.append(row.get("label"))
    if records and features:
        raise HTTPException(422, 'mix of "record" and "features" lines: use one form per request')
    has_labels = any(label is not None for label in labels)
    return await run_in_threadpool(
        _store,
        state,
        "stream",
        features=features or None,
        records=records or None,
        labels=labels if has_labels else None,
    )

"""Plain reference versions of the store's optimised reads, that tests hold them to.

Each reads the same rows in one obvious query; the store's own version reads fewer files or
columns. A test compares the two on the same data.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa

from pipelines.schema import SchemaError
from pipelines.store import Store
from pipelines.store.predictions import inspection_filter
from pipelines.store.sql import identifier
from pipelines.store.windows import time_range


def inspection_logs(
    store: Store,
    *,
    limit: int = 50,
    offset: int = 0,
    model_version: str | None = None,
    prediction: str | None = None,
    uncertain: bool | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Recent predictions, newest first, filtered and paged: the plain top-N query.

    `queries.inspection_page` serves the same page from the newest files only (what the
    API and the dashboard use); this one is the reference its tests hold it to.
    """
    cond, params = inspection_filter(model_version, prediction, uncertain, since, until)
    total = int(store.lake.scalar(f"SELECT count(*) FROM lake.predictions WHERE {cond}", params))
    table = store.lake.query(
        f"""SELECT * FROM lake.predictions WHERE {cond}
            ORDER BY ts DESC, prediction_id LIMIT ? OFFSET ?""",
        [*params, int(limit), int(offset)],
    )
    return total, table.to_pylist()


def prediction_window(
    store: Store,
    *,
    limit: int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> pa.Table:
    """The last `limit` predictions (or a time range) in one query: one flat column per
    feature plus `prediction`, `label` (latest human label, if any), `model_version`, `ts`.

    Monitoring reads windows through `window_bounds` + `window_columns`, which scale past
    memory; this plain version is the reference the tests hold that path to.
    """
    schema = store.dataset_schema()
    if schema is None:
        raise SchemaError("the store holds no data yet")
    where, params = time_range(since, until)
    top = "" if limit is None else f"ORDER BY ts DESC LIMIT {int(limit)}"
    feats = ", ".join(f"w.features.{identifier(n)} AS {identifier(n)}" for n in schema.names)
    return store.lake.query(
        f"""
        WITH w AS (
            SELECT prediction_id, ts, model_version, prediction, features
            FROM lake.predictions WHERE {where} {top}
        ),
        f AS (
            SELECT prediction_id, arg_max(label, ts) AS label
            FROM lake.feedback WHERE label IS NOT NULL GROUP BY prediction_id
        )
        SELECT {feats}, w.prediction, f.label, w.model_version, w.ts
        FROM w LEFT JOIN f USING (prediction_id)
        """,
        params,
    )

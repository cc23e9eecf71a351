"""The prediction log (`predictions`): appends, lookups by id, serving figures."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from pipelines.store.core import StoreCore
from pipelines.store.ids import ID_SLACK, prediction_id_time


class Predictions(StoreCore):
    """`predictions`: one row per served answer, written in commits of many rows."""

    def append_predictions(self, table: pa.Table) -> None:
        """One commit for a whole flushed buffer of predictions."""
        self._insert("predictions", table)

    def existing_prediction_ids(self, ids: Iterable[str]) -> set[str]:
        wanted = pa.table({"prediction_id": pa.array(list(ids), pa.string())})
        found = self.lake.query_with(
            "SELECT prediction_id FROM lake.predictions SEMI JOIN _ids USING (prediction_id)",
            None,
            {"_ids": wanted},
        )
        return set(found.column("prediction_id").to_pylist())

    def prediction(
        self, prediction_id: str, ts: dt.datetime | None = None
    ) -> dict[str, Any] | None:
        """One prediction by id. Only the files whose time range holds its `ts` are read:
        the `ts` given, else the time in an id made by `prediction_ids` (within `ID_SLACK`);
        other ids (edge logs, older ids) scan every file."""
        if ts is not None:
            return self.predictions_by_id([prediction_id], ts, ts).get(prediction_id)
        made = prediction_id_time(prediction_id)
        if made is not None:
            first, last = made - ID_SLACK, made + ID_SLACK
            return self.predictions_by_id([prediction_id], first, last).get(prediction_id)
        table = self.lake.query(
            "SELECT * FROM lake.predictions WHERE prediction_id = ? LIMIT 1", [prediction_id]
        )
        return table.to_pylist()[0] if table.num_rows else None

    def prediction_stats(self, since: dt.datetime | None = None) -> dict[str, Any]:
        """Counts and latency percentiles of logged tabular predictions.

        Image predictions (``task`` set) are left out: a YOLO answer takes tens of
        milliseconds where a tabular one takes a fraction of one, and mixing them would make
        both the counts and the percentiles describe neither. `vision_stats` has theirs.
        """
        row = self.lake.rows(
            """SELECT count(*), count(*) FILTER (uncertain),
                      quantile_cont(latency_ms, [0.5, 0.95, 0.99]), max(ts)
               FROM lake.predictions
               WHERE ts >= coalesce(?, TIMESTAMPTZ '1970-01-01') AND task IS NULL""",
            [since],
        )[0]
        q = row[2] or [None, None, None]
        return {
            "predictions": int(row[0]),
            "uncertain": int(row[1]),
            "latency_ms": {"p50": q[0], "p95": q[1], "p99": q[2]},
            "last_prediction_at": row[3],
        }

    def predictions_since(self, since: dt.datetime | None) -> int:
        """How many predictions were logged after `since` (all of them if None)."""
        return int(
            self.lake.scalar(
                "SELECT count(*) FROM lake.predictions "
                "WHERE ts > coalesce(?, TIMESTAMPTZ 'epoch') AND task IS NULL",
                [since],
            )
        )


def inspection_filter(
    model_version: str | None,
    prediction: str | None,
    uncertain: bool | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
) -> tuple[str, list[Any]]:
    """The WHERE condition of an inspection page's filters, and its parameters."""
    where, params = ["TRUE"], []
    for clause, value in (
        ("model_version = ?", model_version),
        ("prediction = ?", prediction),
        ("uncertain = ?", uncertain),
        ("ts >= ?", since),
        ("ts < ?", until),
    ):
        if value is not None:
            where.append(clause)
            params.append(value)
    return " AND ".join(where), params

"""Monitoring windows: the last N predictions, found once and read one column at a time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.store.core import StoreCore
from pipelines.store.sql import identifier


@dataclass(frozen=True)
class WindowBounds:
    """Which predictions form a monitoring window (see `Store.window_bounds`).

    Attributes:
        snapshot_id: The snapshot every read of the window is pinned to.
        n_rows: Predictions in the window.
        start: `ts` of its oldest prediction (None when empty).
        end: `ts` of its newest prediction.
        since: Lower bound of the time range asked for, inclusive.
        until: Upper bound, exclusive.
        cutoff_id: When predictions at `start` straddle the window's edge, only those whose
            `prediction_id` is at least this one belong to it.
    """

    snapshot_id: int
    n_rows: int
    start: dt.datetime | None
    end: dt.datetime | None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    cutoff_id: str | None = None


class Windows(StoreCore):
    """The windows a drift check reads, pinned to one snapshot."""

    def window_bounds(
        self,
        *,
        limit: int | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> WindowBounds:
        """Find the current window once, so that its columns can be read one at a time with
        `window_columns` and `window_labels`: the same rows as `prediction_window` (the last
        `limit` predictions by `ts`, ties at the cutoff broken by `prediction_id`), pinned to
        the current snapshot so that predictions logged meanwhile don't join it halfway."""
        snap = self.snapshot_id()
        table = f"lake.predictions AT (VERSION => {snap})"
        where, params = time_range(since, until)
        total, first, last = self.lake.rows(
            f"SELECT count(*), min(ts), max(ts) FROM {table} WHERE {where}", params
        )[0]
        total = int(total)
        if limit is None or total <= limit:
            return WindowBounds(snap, total, first, last, since, until)
        # The limit-th newest ts, counted from whichever end is nearer: DuckDB's top-N keeps
        # `offset` rows in a heap, and a window is often most of the table. With it comes the
        # ts of the newest row outside the window: if the two differ, exactly `limit` rows have
        # a ts at or after the cutoff and no tie straddles it (the usual case: one query).
        if limit <= total // 2:
            order, offset = "DESC", limit - 1  # [cutoff, newest outside]
        else:
            order, offset = "ASC", total - limit - 1  # [newest outside, cutoff]
        pair = [
            row[0]
            for row in self.lake.rows(
                f"SELECT ts FROM {table} WHERE {where} ORDER BY ts {order} LIMIT 2 OFFSET ?",
                [*params, offset],
            )
        ]
        cutoff = pair[0] if order == "DESC" else pair[1]
        if pair[0] != pair[1]:
            return WindowBounds(snap, int(limit), cutoff, last, since, until)
        newer, tied = self.lake.rows(
            f"SELECT count(*) FILTER (ts > ?), count(*) FILTER (ts = ?) FROM {table} "
            f"WHERE {where} AND ts >= ?",
            [cutoff, cutoff, *params, cutoff],
        )[0]
        cutoff_id = None
        if newer + tied > limit:  # predictions logged at the same instant straddle the cutoff
            cutoff_id = self.lake.scalar(
                f"""SELECT prediction_id FROM {table} WHERE {where} AND ts = ?
                    ORDER BY prediction_id DESC LIMIT 1 OFFSET ?""",
                [*params, cutoff, limit - int(newer) - 1],
            )
        return WindowBounds(snap, int(limit), cutoff, last, since, until, cutoff_id)

    def window_columns(self, bounds: WindowBounds, names: Sequence[str]) -> pa.Table:
        """Some columns of a window, features by name and `prediction`, rows in no set order
        (the same order for every call on the same bounds is not promised either)."""
        schema = self.dataset_schema()
        features = set(schema.names) if schema is not None else set()
        unknown = [n for n in names if n != "prediction" and n not in features]
        if unknown:
            raise KeyError(f"no such window columns: {unknown}")
        select = ", ".join(
            "prediction" if n == "prediction" else f"features.{identifier(n)} AS {identifier(n)}"
            for n in names
        )
        where, params = _window_filter(bounds)
        return self.lake.query(
            f"SELECT {select} FROM lake.predictions AT (VERSION => {bounds.snapshot_id}) "
            f"WHERE {where}",
            params,
        )

    def window_labels(self, bounds: WindowBounds) -> pa.Table:
        """`prediction` and `label` (the latest human label) of the window's labeled rows."""
        where, params = _window_filter(bounds)
        at = f"AT (VERSION => {bounds.snapshot_id})"
        return self.lake.query(
            f"""
            WITH w AS (
                SELECT prediction_id, prediction FROM lake.predictions {at} WHERE {where}
            ),
            f AS (
                SELECT prediction_id, arg_max(label, ts) AS label
                FROM lake.feedback {at} WHERE label IS NOT NULL GROUP BY prediction_id
            )
            SELECT w.prediction, f.label FROM w JOIN f USING (prediction_id)
            """,
            params,
        )

    def window_probabilities(
        self, bounds: WindowBounds, model_version: str, n_classes: int
    ) -> tuple[np.ndarray, list[str | None]]:
        """The probabilities one model version served in a window, for estimating its
        performance: an n×k matrix, and each row's latest human label (None where there is
        none), rows in no set order."""
        where, params = _window_filter(bounds)
        at = f"AT (VERSION => {bounds.snapshot_id})"
        table = self.lake.query(
            f"""
            WITH w AS (
                SELECT prediction_id, probabilities FROM lake.predictions {at}
                WHERE {where} AND model_version = ? AND probabilities IS NOT NULL
            ),
            f AS (
                SELECT prediction_id, arg_max(label, ts) AS label
                FROM lake.feedback {at} WHERE label IS NOT NULL GROUP BY prediction_id
            )
            SELECT w.probabilities, f.label FROM w LEFT JOIN f USING (prediction_id)
            """,
            [*params, model_version],
        )
        proba = _probability_matrix(table.column("probabilities"), n_classes)
        return proba, table.column("label").to_pylist()


def _probability_matrix(column: pa.ChunkedArray, n_classes: int) -> np.ndarray:
    """A `DOUBLE[]` column of rows with `n_classes` entries each as an n×k float matrix (a row
    of another length, from a version with other classes, is a ValueError)."""
    array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths != n_classes).any():
        raise ValueError(f"probabilities of another length than the model's {n_classes} classes")
    values = array.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64).reshape(len(array), n_classes)


def time_range(since: dt.datetime | None, until: dt.datetime | None) -> tuple[str, list[Any]]:
    """A WHERE condition on `ts` for an optional [since, until) range of tabular predictions
    (image predictions, `task` set, have their own window), and its parameters."""
    where, params = ["task IS NULL"], []
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if until is not None:
        where.append("ts < ?")
        params.append(until)
    return " AND ".join(where), params


def _window_filter(bounds: WindowBounds) -> tuple[str, list[Any]]:
    """The WHERE condition selecting a window's rows; `ts >= start` lets DuckLake prune files."""
    where, params = time_range(bounds.since, bounds.until)
    if bounds.start is not None:
        where += " AND ts >= ?"
        params.append(bounds.start)
    if bounds.cutoff_id is not None:
        where += " AND (ts > ? OR prediction_id >= ?)"
        params += [bounds.start, bounds.cutoff_id]
    return where, params

"""The store: every read and write driftlab makes to the lake, as plain functions of a `Store`.

Each write is one short transaction (a batch of rows, one commit) so that the API, the worker,
the dashboard and notebooks can all write at once; reads return Arrow tables.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.schema import FeatureSchema, SchemaError, check_feature_names
from pipelines.settings import Settings
from pipelines.store.group import GroupCommit
from pipelines.store.ids import ID_SLACK, prediction_id_time
from pipelines.store.lake import Lake
from pipelines.store.sql import identifier
from pipelines.store.tables import FEATURE_TABLES, TABLES

logger = logging.getLogger(__name__)

DATASET = "default"
QUEUE_SOURCE = "labeling-queue"
"""`feedback.source` of labels given in the labeling queue."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_id() -> str:
    return uuid.uuid4().hex


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


class Store:
    """driftlab's tables in one DuckLake, opened by any number of processes at once."""

    def __init__(self, lake: Lake) -> None:
        self.lake = lake
        self._schema: FeatureSchema | None = None
        # Batches ingested by several threads at once share commits (see `group`).
        self.ingest_group: GroupCommit[pa.Table, int] = GroupCommit(self._commit_ingested)

    @classmethod
    def open(
        cls, settings: Settings, *, read_only: bool = False, threads: int | None = None
    ) -> Store:
        """The store `settings` name; `threads` caps the DuckDB threads of this attachment
        (default: one per core)."""
        lake = Lake(
            settings.catalog_uri,
            settings.data_path,
            read_only=read_only,
            inlining_row_limit=settings.inlining_row_limit,
            override_data_path=settings.data_path_follows_data_dir,
            threads=threads,
        )
        store = cls(lake)
        if not read_only:
            store.init()
        return store

    def close(self) -> None:
        self.lake.close()

    def init(self) -> None:
        """Create missing tables and add missing columns (safe from many processes at once).

        A store made by an older driftlab gains the columns added since; nothing is dropped.
        """
        existing = self._existing_columns()
        todo = []
        for name, ddl in TABLES.items():
            if name not in existing:
                todo.append(f"CREATE TABLE IF NOT EXISTS lake.{name} ({ddl})")
                continue
            for column in _columns(ddl):
                if column.split()[0] not in existing[name]:
                    todo.append(f"ALTER TABLE lake.{name} ADD COLUMN IF NOT EXISTS {column}")
        if todo:
            self.lake.write(lambda cur: _run_all(cur, todo), what="create tables")
        self._never_inline(FEATURE_TABLES)

    def _never_inline(self, tables: Sequence[str]) -> None:
        """Make every commit to `tables` a Parquet file, never rows inlined in the catalog.

        DuckLake keeps an inlined STRUCT value as SQL text and reads it back with a cast that
        does not undo its own escaping: a text field `it's` came back as `its`, a backslash
        was dropped, and a `-0.0` made every later read of the table fail
        (`tests/pipelines/store/test_exact_values.py` shows it on plain DuckLake). The
        `features` columns are STRUCTs; the other tables' scalar columns read back exactly
        inlined, and keep the catalog's cheap small commits. The option is kept in the
        catalog, so it holds for every process and notebook that attaches the lake.
        """
        done = {
            row[0]
            for row in self.lake.rows(
                """SELECT scope_entry FROM ducklake_options('lake')
                   WHERE option_name = 'data_inlining_row_limit' AND scope = 'TABLE'
                     AND value = '0'"""
            )
        }
        todo = [
            f"CALL lake.set_option('data_inlining_row_limit', 0, table_name => '{table}')"
            for table in tables
            if f"main.{table}" not in done
        ]
        if todo:
            self.lake.write(lambda cur: _run_all(cur, todo), what="store tables as Parquet")

    def _existing_columns(self) -> dict[str, set[str]]:
        rows = self.lake.rows(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = 'lake'"
        )
        out: dict[str, set[str]] = {}
        for table, column in rows:
            out.setdefault(table, set()).add(column)
        return out

    def snapshot_id(self) -> int:
        return self.lake.snapshot_id()

    # -- dataset schema ------------------------------------------------------------------------

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

    # -- ingestion -----------------------------------------------------------------------------

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
        # were a large share of a big batch's time.
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

    def _insert(self, name: str, table: pa.Table) -> None:
        def insert(cur: duckdb.DuckDBPyConnection) -> None:
            cur.register("_rows", table)
            try:
                cur.execute(f"INSERT INTO lake.{name} BY NAME SELECT * FROM _rows")
            finally:
                cur.unregister("_rows")

        self.lake.write(insert, what=f"insert {name}")

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

    def count_rows(self) -> dict[str, int]:
        """Row counts of every table (for /health and the dashboard)."""
        parts = " UNION ALL ".join(f"SELECT '{name}', count(*) FROM lake.{name}" for name in TABLES)
        return {name: int(n) for name, n in self.lake.rows(parts)}

    # -- predictions ---------------------------------------------------------------------------

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
            return self._predictions_by_id([prediction_id], ts, ts).get(prediction_id)
        made = prediction_id_time(prediction_id)
        if made is not None:
            first, last = made - ID_SLACK, made + ID_SLACK
            return self._predictions_by_id([prediction_id], first, last).get(prediction_id)
        table = self.lake.query(
            "SELECT * FROM lake.predictions WHERE prediction_id = ? LIMIT 1", [prediction_id]
        )
        return table.to_pylist()[0] if table.num_rows else None

    def inspection_logs(
        self,
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
        total = int(self.lake.scalar(f"SELECT count(*) FROM lake.predictions WHERE {cond}", params))
        table = self.lake.query(
            f"""SELECT * FROM lake.predictions WHERE {cond}
                ORDER BY ts DESC, prediction_id LIMIT ? OFFSET ?""",
            [*params, int(limit), int(offset)],
        )
        return total, table.to_pylist()

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

    # -- monitoring windows --------------------------------------------------------------------

    def prediction_window(
        self,
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
        schema = self.dataset_schema()
        if schema is None:
            raise SchemaError("the store holds no data yet")
        where, params = _time_range(since, until)
        top = "" if limit is None else f"ORDER BY ts DESC LIMIT {int(limit)}"
        feats = ", ".join(f"w.features.{identifier(n)} AS {identifier(n)}" for n in schema.names)
        return self.lake.query(
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
        where, params = _time_range(since, until)
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

    def predictions_since(self, since: dt.datetime | None) -> int:
        """How many predictions were logged after `since` (all of them if None)."""
        return int(
            self.lake.scalar(
                "SELECT count(*) FROM lake.predictions "
                "WHERE ts > coalesce(?, TIMESTAMPTZ 'epoch') AND task IS NULL",
                [since],
            )
        )

    def add_drift_results(self, rows: list[dict[str, Any]]) -> None:
        """One commit for a whole check (one row per feature and test)."""
        if rows:
            self._insert("drift_results", pa.Table.from_pylist(rows, schema=_DRIFT_SCHEMA))

    def latest_drift_results(self) -> list[dict[str, Any]]:
        """Every row of the most recent drift check."""
        return self.lake.query(
            """SELECT * FROM lake.drift_results
               WHERE run_id = (SELECT arg_max(run_id, ts) FROM lake.drift_results
                               WHERE modality IS DISTINCT FROM 'image')
               ORDER BY drifted DESC, p_adjusted NULLS LAST, feature"""
        ).to_pylist()

    def drift_history(self, limit_runs: int = 100) -> list[dict[str, Any]]:
        """Per run and feature: statistic, effect size and verdict, for trends over time."""
        return self.lake.query(
            """WITH runs AS (
                   SELECT run_id, max(ts) AS ts FROM lake.drift_results
                   WHERE modality IS DISTINCT FROM 'image'
                   GROUP BY run_id ORDER BY ts DESC LIMIT ?
               )
               SELECT d.run_id, d.ts, d.feature, d.test, d.statistic, d.p_adjusted,
                      d.effect_size, d.drifted, d.dataset_drift, d.drift_share
               FROM lake.drift_results d SEMI JOIN runs USING (run_id)
               ORDER BY d.ts, d.feature""",
            [int(limit_runs)],
        ).to_pylist()

    # -- feedback ------------------------------------------------------------------------------

    def add_feedback(
        self,
        prediction_id: str,
        *,
        label: str | None,
        correct: bool | None,
        source: str = "api",
        who: str | None = None,
        model_version: str | None = None,
    ) -> str:
        feedback_id = new_id()
        table = pa.table(
            {
                "feedback_id": [feedback_id],
                "prediction_id": [prediction_id],
                "label": pa.array([label], pa.string()),
                "correct": pa.array([correct], pa.bool_()),
                "source": [source],
                "who": pa.array([who], pa.string()),
                "model_version": pa.array([model_version], pa.string()),
                "ts": pa.array([utcnow()], pa.timestamp("us", tz="UTC")),
            }
        )
        self._insert("feedback", table)
        return feedback_id

    def add_labels(
        self,
        prediction_ids: Sequence[str],
        labels: Sequence[str],
        *,
        source: str,
        who: str | None = None,
    ) -> int:
        """Labels for many predictions in one commit (a downstream system's backlog, a
        benchmark); `correct` is left to be read from the prediction."""
        n = len(prediction_ids)
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} predictions")
        now = pa.scalar(utcnow(), pa.timestamp("us", tz="UTC"))
        table = pa.table(
            {
                "feedback_id": pa.array([new_id() for _ in range(n)], pa.string()),
                "prediction_id": pa.array(prediction_ids, pa.string()),
                "label": pa.array(labels, pa.string()),
                "correct": pa.nulls(n, pa.bool_()),
                "source": pa.repeat(pa.scalar(source), n),
                "who": pa.repeat(pa.scalar(who, pa.string()), n),
                "model_version": pa.nulls(n, pa.string()),
                "ts": pa.repeat(now, n),
            }
        )
        self._insert("feedback", table)
        return n

    def feedback_accuracy(self, model_version: str | None = None) -> dict[str, Any]:
        """Live accuracy of served predictions from the feedback that came back.

        Labels given in the labeling queue are left out: the queue holds the predictions the
        model was least sure of, so their accuracy (about half) says nothing about traffic.
        """
        row = self.lake.rows(
            f"""
            WITH last AS (
                SELECT prediction_id, arg_max(label, ts) AS label, arg_max(correct, ts) AS correct
                FROM lake.feedback WHERE source <> '{QUEUE_SOURCE}' GROUP BY prediction_id
            )
            SELECT count(*),
                   count(*) FILTER (coalesce(l.correct, l.label = p.prediction))
            FROM last l JOIN lake.predictions p USING (prediction_id)
            WHERE (l.correct IS NOT NULL OR l.label IS NOT NULL) AND p.task IS NULL
              AND (? IS NULL OR p.model_version = ?)
            """,
            [model_version, model_version],
        )[0]
        n, right = int(row[0]), int(row[1])
        return {"n": n, "accuracy": right / n if n else None}

    # -- labeling queue ------------------------------------------------------------------------
    # `labeling_queue` is an event log: one `enqueued` row per item (with its informativeness
    # score and the prediction's `ts`, which lets joins prune predictions files), then at most
    # one `labeled` or `skipped` row. An item's status is its answer, or `pending`.

    def queue_candidates(self, since: dt.datetime, limit: int = 100_000) -> pa.Table:
        """The newest `limit` uncertain predictions logged at or after `since` that never
        entered the queue."""
        return self.lake.query(
            """SELECT prediction_id, ts, model_version, probabilities FROM lake.predictions
               WHERE uncertain AND ts >= ? AND probabilities IS NOT NULL
                 AND prediction_id NOT IN (
                     SELECT prediction_id FROM lake.labeling_queue WHERE prediction_ts >= ?)
               ORDER BY ts DESC LIMIT ?""",
            [since, since, int(limit)],
        )

    def queue_enqueued_since(self, since: dt.datetime) -> int:
        return int(
            self.lake.scalar(
                "SELECT count(*) FROM lake.labeling_queue WHERE event = 'enqueued' AND ts >= ?",
                [since],
            )
        )

    def enqueue(self, rows: pa.Table) -> None:
        """One commit for a batch of `enqueued` events (prediction_id, score, model_version,
        prediction_ts)."""
        n = rows.num_rows
        if not n:
            return
        now = pa.scalar(utcnow(), pa.timestamp("us", tz="UTC"))
        table = rows.append_column(
            "event_id", pa.array([new_id() for _ in range(n)], pa.string())
        ).append_column("event", pa.repeat(pa.scalar("enqueued"), n))
        table = table.append_column("ts", pa.repeat(now, n))
        self._insert("labeling_queue", table)

    def queue_items(
        self, *, status: str | None = "pending", limit: int = 20, offset: int = 0
    ) -> tuple[int, list[dict[str, Any]]]:
        """A page of queue items with the prediction each is about.

        Pending items come most informative first (older first on ties: they waited longest);
        answered ones most recent first. `status` None lists every item, pending first.
        """
        state = """
            WITH q AS (
                SELECT prediction_id,
                       min(ts) FILTER (event = 'enqueued') AS enqueued_at,
                       max(score) FILTER (event = 'enqueued') AS score,
                       min(prediction_ts) AS prediction_ts,
                       arg_max(event, ts) FILTER (event <> 'enqueued') AS answer,
                       arg_max(label, ts) FILTER (event = 'labeled') AS label,
                       arg_max(who, ts) FILTER (event <> 'enqueued') AS who,
                       max(ts) FILTER (event <> 'enqueued') AS answered_at
                FROM lake.labeling_queue GROUP BY prediction_id
            )
            SELECT *, coalesce(answer, 'pending') AS status FROM q WHERE enqueued_at IS NOT NULL
        """
        where = "TRUE" if status is None else "status = ?"
        params: list[Any] = [] if status is None else [status]
        total = int(self.lake.scalar(f"SELECT count(*) FROM ({state}) WHERE {where}", params))
        page = self.lake.query(
            f"""SELECT prediction_id, enqueued_at, score, prediction_ts, status, label, who,
                       answered_at
                FROM ({state}) WHERE {where}
                ORDER BY status <> 'pending', -score NULLS LAST, answered_at DESC,
                         enqueued_at, prediction_id
                LIMIT ? OFFSET ?""",
            [*params, int(limit), int(offset)],
        ).to_pylist()
        if not page:
            return total, []
        found = self._predictions_by_id(
            [item["prediction_id"] for item in page],
            min(item["prediction_ts"] for item in page),
            max(item["prediction_ts"] for item in page),
        )
        for item in page:
            pred = found.get(item["prediction_id"], {})
            item.update(
                {k: pred.get(k) for k in _QUEUE_PREDICTION_FIELDS},
                features=pred.get("features") or {},
            )
        return total, page

    def _predictions_by_id(
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

    def queue_item(self, prediction_id: str) -> dict[str, Any] | None:
        """The item's queue state: `enqueued_at`, `status`, `prediction_ts`; None if unknown."""
        row = self.lake.rows(
            """SELECT min(ts) FILTER (event = 'enqueued'), min(prediction_ts),
                      arg_max(event, ts) FILTER (event <> 'enqueued')
               FROM lake.labeling_queue WHERE prediction_id = ?""",
            [prediction_id],
        )[0]
        if row[0] is None:
            return None
        return {"enqueued_at": row[0], "prediction_ts": row[1], "status": row[2] or "pending"}

    def answer_queue_item(
        self,
        prediction_id: str,
        *,
        event: str,
        label: str | None,
        correct: bool | None,
        who: str,
        model_version: str | None,
    ) -> str | None:
        """Record a human's answer to a pending item in one commit: the queue event and, for a
        label, the feedback row that makes it training data.

        The pending check runs inside the write, under the store's write lock, so two people
        answering the same item at once record one answer. Returns None when recorded, or the
        item's status when it was not pending (`missing` for an unknown id).
        """
        if event not in {"labeled", "skipped"}:
            raise ValueError(f"unknown queue event {event!r}")

        def answer(cur: duckdb.DuckDBPyConnection) -> str | None:
            enqueued, answered = cur.execute(
                """SELECT count(*) FILTER (event = 'enqueued'),
                          arg_max(event, ts) FILTER (event <> 'enqueued')
                   FROM lake.labeling_queue WHERE prediction_id = ?""",
                [prediction_id],
            ).fetchall()[0]
            if not enqueued:
                return "missing"
            if answered is not None:
                return str(answered)
            now = utcnow()
            cur.execute(
                """INSERT INTO lake.labeling_queue
                   (event_id, prediction_id, event, label, who, model_version, ts)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [new_id(), prediction_id, event, label, who, model_version, now],
            )
            if label is not None:
                cur.execute(
                    """INSERT INTO lake.feedback
                       (feedback_id, prediction_id, label, correct, source, who, model_version, ts)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    [new_id(), prediction_id, label, correct, QUEUE_SOURCE, who, model_version]
                    + [now],
                )
            return None

        return self.lake.write(answer, what="answer queue item")

    def queue_progress(self, since: dt.datetime) -> dict[str, int]:
        """Pending items, and items labeled or skipped since `since`."""
        row = self.lake.rows(
            """WITH q AS (
                   SELECT prediction_id,
                          count(*) FILTER (event = 'enqueued') AS enqueued,
                          arg_max(event, ts) FILTER (event <> 'enqueued') AS answer,
                          max(ts) FILTER (event <> 'enqueued') AS answered_at
                   FROM lake.labeling_queue GROUP BY prediction_id
               )
               SELECT count(*) FILTER (enqueued > 0 AND answer IS NULL),
                      count(*) FILTER (answer = 'labeled' AND answered_at >= ?),
                      count(*) FILTER (answer = 'skipped' AND answered_at >= ?)
               FROM q""",
            [since, since],
        )[0]
        return {"pending": int(row[0]), "labeled": int(row[1]), "skipped": int(row[2])}

    # -- what the retraining policy looks at ---------------------------------------------------

    def new_labels(self, snapshot_id: int | None) -> int:
        """Labels that arrived after `snapshot_id` (a model's training snapshot): labeled
        ingested rows plus predictions that got their first label since."""
        if snapshot_id is None:
            at_then = "SELECT NULL::VARCHAR AS prediction_id WHERE FALSE"
            ingested_then = "SELECT 0"
        else:
            snap = int(snapshot_id)
            at_then = (
                f"SELECT prediction_id FROM lake.feedback AT (VERSION => {snap}) "
                "WHERE label IS NOT NULL"
            )
            ingested_then = (
                f"SELECT count(*) FROM lake.ingested_rows AT (VERSION => {snap}) "
                "WHERE label IS NOT NULL"
            )
        return int(
            self.lake.scalar(
                f"""SELECT (SELECT count(*) FROM lake.ingested_rows WHERE label IS NOT NULL)
                           - ({ingested_then})
                           + (SELECT count(DISTINCT prediction_id) FROM lake.feedback
                              WHERE label IS NOT NULL AND prediction_id NOT IN ({at_then})
                                AND prediction_id NOT IN (
                                    SELECT prediction_id FROM lake.predictions
                                    WHERE task IS NOT NULL))"""
            )
        )

    def errors_per_class(self, model_version: str | None) -> dict[str, int]:
        """Wrong predictions of one model version per class, from the latest feedback on each.

        The class is the true label when the feedback gives one; a bare "correct: false"
        counts against the predicted class (the one the model got wrong).
        """
        rows = self.lake.rows(
            """WITH last AS (
                   SELECT prediction_id, arg_max(label, ts) AS label,
                          arg_max(correct, ts) AS correct
                   FROM lake.feedback GROUP BY prediction_id
               )
               SELECT coalesce(l.label, p.prediction) AS cls, count(*)
               FROM last l JOIN lake.predictions p USING (prediction_id)
               WHERE (? IS NULL OR p.model_version = ?) AND p.task IS NULL
                 AND (l.label <> p.prediction OR (l.label IS NULL AND NOT l.correct))
               GROUP BY cls ORDER BY cls""",
            [model_version, model_version],
        )
        return {str(cls): int(n) for cls, n in rows}

    # -- retraining runs -----------------------------------------------------------------------

    def add_retraining_event(self, row: dict[str, Any]) -> None:
        """One state of a run (`running`, then `promoted`, `rejected` or `failed`): rows share
        the run's `event_id`; the latest row is the run's state."""
        full: dict[str, Any] = {name: None for name in _RETRAIN_SCHEMA.names}
        full.update(row, ts=row.get("ts") or utcnow())
        for key in ("reasons", "metrics", "decision"):
            if full[key] is not None and not isinstance(full[key], str):
                full[key] = json.dumps(full[key], default=str)
        self._insert("retraining_events", pa.Table.from_pylist([full], schema=_RETRAIN_SCHEMA))

    def retraining_runs(
        self,
        limit: int = 50,
        event_id: str | None = None,
        *,
        model_name: str | None = None,
        unnamed_as: str | None = None,
    ) -> list[dict[str, Any]]:
        """Runs newest first, each as its latest state plus `started_at`.

        Args:
            model_name: Only the runs of this registered model (each model has its own
                cooldown and "last retrain"); None lists every run.
            unnamed_as: The model a run recorded without a name belongs to (runs logged
                before vision existed carry none: they are the tabular model's).
        """
        latest = ", ".join(
            f"arg_max({c}, ts) AS {c}" for c in _RETRAIN_SCHEMA.names if c not in ("event_id", "ts")
        )
        # The model filter applies after grouping: any row of a run may carry its name.
        rows = self.lake.query(
            f"""WITH r AS (
                    SELECT event_id, min(ts) AS started_at, max(ts) AS updated_at, {latest}
                    FROM lake.retraining_events
                    WHERE ? IS NULL OR event_id = ?
                    GROUP BY event_id
                )
                SELECT * FROM r
                WHERE ?::VARCHAR IS NULL OR coalesce(model_name, ?::VARCHAR) = ?::VARCHAR
                ORDER BY started_at DESC LIMIT ?""",
            [event_id, event_id, model_name, unnamed_as, model_name, int(limit)],
        ).to_pylist()
        for row in rows:
            for key in ("reasons", "metrics", "decision"):
                if row.get(key):
                    row[key] = json.loads(row[key])
        return rows

    # -- models --------------------------------------------------------------------------------

    def add_model_event(
        self,
        model_name: str,
        event: str,
        from_version: str | None,
        to_version: str | None,
        *,
        who: str,
        why: str,
    ) -> None:
        table = pa.table(
            {
                "event_id": [new_id()],
                "ts": pa.array([utcnow()], pa.timestamp("us", tz="UTC")),
                "model_name": [model_name],
                "event": [event],
                "from_version": pa.array([from_version], pa.string()),
                "to_version": pa.array([to_version], pa.string()),
                "who": [who],
                "why": [why],
            }
        )
        self._insert("model_events", table)

    def model_events(self, model_name: str, limit: int = 100) -> list[dict[str, Any]]:
        return self.lake.query(
            "SELECT * FROM lake.model_events WHERE model_name = ? ORDER BY ts DESC LIMIT ?",
            [model_name, limit],
        ).to_pylist()

    # -- upkeep --------------------------------------------------------------------------------

    def compact(self, keep_snapshots: Iterable[int] = (), older_than_hours: float = 24.0) -> dict:
        """Merge small files and expire old snapshots, never one in `keep_snapshots`.

        Snapshots that a registered model was trained on must be passed in `keep_snapshots`:
        they stay readable with `AT (VERSION => n)` (their files are kept).
        """
        keep = {int(s) for s in keep_snapshots}
        cutoff = utcnow() - dt.timedelta(hours=older_than_hours)
        before = self.lake.rows("SELECT count(*) FROM ducklake_snapshots('lake')")[0][0]
        latest = self.snapshot_id()
        expire = [
            int(sid)
            for (sid,) in self.lake.rows(
                "SELECT snapshot_id FROM ducklake_snapshots('lake') WHERE snapshot_time < ?",
                [cutoff],
            )
            if int(sid) not in keep and int(sid) != latest
        ]
        cur = self.lake.cursor()
        cur.execute("CALL ducklake_merge_adjacent_files('lake')")
        if expire:
            cur.execute("CALL ducklake_expire_snapshots('lake', versions => ?)", [expire])
        cur.execute("CALL ducklake_cleanup_old_files('lake', cleanup_all => true)")
        after = self.lake.rows("SELECT count(*) FROM ducklake_snapshots('lake')")[0][0]
        return {
            "snapshots_before": int(before),
            "snapshots_after": int(after),
            "kept": sorted(keep),
        }

    # == vision ===================================================================================
    # Image predictions share `predictions` (with `task` = detect / classify and `image_ref`), so
    # the queue, feedback and inspection logs see them; the tabular queries above leave them out
    # (`task IS NULL`). Boxes go to `detections`, per-image drift inputs to `image_features`, and
    # the original labeled images to `ingested_images`.

    def append_image_predictions(
        self, predictions: pa.Table, detections: pa.Table, features: pa.Table
    ) -> int:
        """Write image predictions, their boxes and features in one commit; returns the rows
        written.

        Predictions whose id is already in the lake are skipped, with their boxes and features:
        an edge client resending a log after a lost answer never duplicates it. The check runs
        inside the write, under the store's write lock, and looks only at the files of the
        batch's time range (a resend carries the original `ts`).
        """
        if predictions.num_rows == 0:
            return 0
        ts = predictions.column("ts")
        first, last = pc.min(ts).as_py(), pc.max(ts).as_py()

        def insert(cur: duckdb.DuckDBPyConnection) -> int:
            cur.register("_p", predictions)
            cur.register("_d", detections)
            cur.register("_f", features)
            try:
                cur.execute(
                    """CREATE OR REPLACE TEMP TABLE _new AS
                       SELECT DISTINCT prediction_id FROM _p WHERE prediction_id NOT IN (
                           SELECT prediction_id FROM lake.predictions
                           WHERE ts >= ? AND ts <= ?)""",
                    [first, last],
                )
                n = int(cur.execute("SELECT count(*) FROM _new").fetchone()[0])  # type: ignore[index]
                if n:
                    for table, source in (
                        ("predictions", "_p"),
                        ("detections", "_d"),
                        ("image_features", "_f"),
                    ):
                        cur.execute(
                            f"""INSERT INTO lake.{table} BY NAME SELECT * FROM {source}
                                WHERE prediction_id IN (SELECT prediction_id FROM _new)"""
                        )
                cur.execute("DROP TABLE _new")
                return n
            finally:
                for name in ("_p", "_d", "_f"):
                    cur.unregister(name)

        return self.lake.write(insert, what="insert image predictions")

    def ingest_images(
        self, rows: Sequence[dict[str, Any]], *, batch_id: str | None = None
    ) -> tuple[str, int]:
        """Append original labeled images (already in the image store) in one commit.

        Each row: `image_ref`, `task`, `split` (train / val / test), `label` (class name, or
        JSON boxes), `width`, `height`, optional `record_id` and `source`. Returns
        (batch_id, snapshot id).
        """
        batch_id = batch_id or new_id()
        now = utcnow()
        table = pa.Table.from_pylist(
            [
                {
                    "record_id": row.get("record_id") or f"{batch_id}:{i}",
                    "batch_id": batch_id,
                    "image_ref": row["image_ref"],
                    "task": row["task"],
                    "split": row["split"],
                    "label": row["label"],
                    "source": row.get("source", "api"),
                    "width": int(row["width"]),
                    "height": int(row["height"]),
                    "ingested_at": now,
                }
                for i, row in enumerate(rows)
            ],
            schema=_arrow_schema("ingested_images"),
        )
        self._insert("ingested_images", table)
        return batch_id, self.snapshot_id()

    def vision_training_set(
        self, model_name: str, task: str, snapshot_id: int | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """Every labeled image of a task at a snapshot: the original images with their split,
        plus the latest human label of each served image of `model_name` (split `human`).

        Returns (snapshot id, rows of `record_id`, `image_ref`, `split`, `label`, `source`,
        `width`, `height`, `model_version`), ordered by record id.
        """
        snap = self.snapshot_id() if snapshot_id is None else int(snapshot_id)
        at = f"AT (VERSION => {snap})"
        rows = self.lake.query(
            f"""
            SELECT record_id, image_ref, split, label, source, width, height,
                   NULL::VARCHAR AS model_version
            FROM lake.ingested_images {at} WHERE task = ? AND label IS NOT NULL
            UNION ALL
            SELECT p.prediction_id, p.image_ref, 'human', f.label, 'feedback:' || f.source,
                   NULL, NULL, p.model_version
            FROM (
                SELECT prediction_id, arg_max(label, ts) AS label, arg_max(source, ts) AS source
                FROM lake.feedback {at} WHERE label IS NOT NULL GROUP BY prediction_id
            ) f JOIN lake.predictions AS p {at} USING (prediction_id)
            WHERE p.model_name = ? AND p.task = ? AND p.image_ref IS NOT NULL
            ORDER BY record_id
            """,
            [task, model_name, task],
        ).to_pylist()
        return snap, rows

    def vision_new_labels(self, model_name: str, snapshot_id: int | None) -> int:
        """Image labels that arrived after `snapshot_id`: human labels on served images of
        `model_name` plus original labeled images ingested since."""
        if snapshot_id is None:
            then_images, then_labels = "SELECT 0", "SELECT NULL::VARCHAR WHERE FALSE"
        else:
            at = f"AT (VERSION => {int(snapshot_id)})"
            then_images = f"SELECT count(*) FROM lake.ingested_images {at}"
            then_labels = f"SELECT prediction_id FROM lake.feedback {at} WHERE label IS NOT NULL"
        return int(
            self.lake.scalar(
                f"""SELECT (SELECT count(*) FROM lake.ingested_images) - ({then_images})
                    + (SELECT count(DISTINCT f.prediction_id)
                       FROM lake.feedback f JOIN lake.predictions p USING (prediction_id)
                       WHERE f.label IS NOT NULL AND p.model_name = ? AND p.task IS NOT NULL
                         AND f.prediction_id NOT IN ({then_labels}))""",
                [model_name],
            )
        )

    def vision_label_outcomes(
        self, model_name: str, model_version: str | None
    ) -> list[dict[str, Any]]:
        """The latest human answer on each served image of one vision model version that
        was judged wrong: `task`, `prediction` (class, or JSON boxes), `label` (class, JSON
        boxes, or None for a bare "wrong") for `retrainer.image_errors_per_class`."""
        return self.lake.query(
            """WITH last AS (
                   SELECT prediction_id, arg_max(label, ts) AS label,
                          arg_max(correct, ts) AS correct
                   FROM lake.feedback GROUP BY prediction_id
               )
               SELECT p.task, p.prediction, l.label
               FROM last l JOIN lake.predictions p USING (prediction_id)
               WHERE p.model_name = ? AND p.task IS NOT NULL
                 AND (?::VARCHAR IS NULL OR p.model_version = ?::VARCHAR)
                 AND (NOT l.correct OR (l.correct IS NULL AND l.label <> p.prediction))
               ORDER BY p.prediction_id""",
            [model_name, model_version, model_version],
        ).to_pylist()

    def image_feature_window(
        self, model_name: str, *, limit: int = 1000, since: dt.datetime | None = None
    ) -> pa.Table:
        """The per-image features of the last `limit` served images of `model_name`."""
        return self.lake.query(
            """SELECT * FROM lake.image_features
               WHERE model_name = ? AND ts >= coalesce(?, TIMESTAMPTZ 'epoch')
               ORDER BY ts DESC, prediction_id DESC LIMIT ?""",
            [model_name, since, int(limit)],
        )

    def vision_stats(self, model_name: str, since: dt.datetime | None = None) -> dict[str, Any]:
        """Serving figures of the vision model: images, uncertain share, latency and edge
        inference percentiles, edge FPS, defect rate (share of images with a detection),
        a confidence histogram (10 bins over 0–1) and counts and confidence per class."""
        params = [model_name, since]
        where = "model_name = ? AND ts >= coalesce(?, TIMESTAMPTZ 'epoch')"
        n, uncertain, p50, p99 = self.lake.rows(
            f"""SELECT count(*), count(*) FILTER (uncertain),
                       quantile_cont(latency_ms, 0.5), quantile_cont(latency_ms, 0.99)
                FROM lake.predictions WHERE {where} AND task IS NOT NULL""",
            params,
        )[0]
        f = self.lake.rows(
            f"""SELECT count(*), count(*) FILTER (n_detections > 0),
                       avg(fps) FILTER (origin = 'edge'),
                       quantile_cont(inference_ms, 0.5), quantile_cont(inference_ms, 0.99)
                FROM lake.image_features WHERE {where}""",
            params,
        )[0]
        per_class = self.lake.rows(
            f"""SELECT d.class, count(*), avg(d.confidence), count(*) FILTER (d.uncertain)
                FROM lake.detections d SEMI JOIN (
                    SELECT prediction_id FROM lake.predictions WHERE {where}) p
                USING (prediction_id) GROUP BY d.class ORDER BY d.class""",
            params,
        )
        hist = dict(
            self.lake.rows(
                f"""SELECT least(floor(d.confidence * 10), 9)::INTEGER AS bin, count(*)
                    FROM lake.detections d SEMI JOIN (
                        SELECT prediction_id FROM lake.predictions WHERE {where}) p
                    USING (prediction_id) GROUP BY bin""",
                params,
            )
        )
        if not hist:  # classification: the top-1 confidence of each image
            hist = dict(
                self.lake.rows(
                    f"""SELECT least(floor(confidence * 10), 9)::INTEGER AS bin, count(*)
                        FROM lake.predictions WHERE {where} AND task = 'classify'
                        GROUP BY bin""",
                    params,
                )
            )
            per_class = self.lake.rows(
                f"""SELECT prediction, count(*), avg(confidence), count(*) FILTER (uncertain)
                    FROM lake.predictions WHERE {where} AND task = 'classify'
                    GROUP BY prediction ORDER BY prediction""",
                params,
            )
        n_features, with_detections = int(f[0]), int(f[1])
        return {
            "images": int(n),
            "uncertain": int(uncertain),
            "latency_ms_p50": p50,
            "latency_ms_p99": p99,
            "edge_fps": f[2],
            "inference_ms_p50": f[3],
            "inference_ms_p99": f[4],
            "defect_rate": with_detections / n_features if n_features else None,
            "confidence_histogram": {
                "edges": [round(i / 10, 1) for i in range(11)],
                "counts": [int(hist.get(i, 0)) for i in range(10)],
            },
            "per_class": {
                str(cls): {"count": int(c), "mean_confidence": conf, "uncertain": int(u)}
                for cls, c, conf, u in per_class
            },
        }

    def vision_queue_candidates(self, since: dt.datetime) -> pa.Table:
        """Uncertain detection predictions logged at or after `since` that never entered the
        queue, with an informativeness score: the margin ``1 - |2c - 1|`` of their least
        certain uncertain box (1 at confidence 0.5, as `labeling.informativeness` for two
        classes)."""
        return self.lake.query(
            """SELECT p.prediction_id, p.ts, p.model_version,
                      max(1 - abs(2 * d.confidence - 1)) AS score
               FROM lake.predictions p JOIN lake.detections d USING (prediction_id)
               WHERE p.uncertain AND p.task = 'detect' AND p.ts >= ? AND d.ts >= ?
                 AND d.uncertain
                 AND p.prediction_id NOT IN (
                     SELECT prediction_id FROM lake.labeling_queue WHERE prediction_ts >= ?)
               GROUP BY ALL""",
            [since, since, since],
        )

    def latest_vision_drift(self) -> list[dict[str, Any]]:
        """Every row of the most recent image drift check."""
        return self.lake.query(
            """SELECT * FROM lake.drift_results
               WHERE run_id = (SELECT arg_max(run_id, ts) FROM lake.drift_results
                               WHERE modality = 'image')
               ORDER BY drifted DESC, p_adjusted NULLS LAST, feature"""
        ).to_pylist()


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


def _time_range(since: dt.datetime | None, until: dt.datetime | None) -> tuple[str, list[Any]]:
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
    where, params = _time_range(bounds.since, bounds.until)
    if bounds.start is not None:
        where += " AND ts >= ?"
        params.append(bounds.start)
    if bounds.cutoff_id is not None:
        where += " AND (ts > ? OR prediction_id >= ?)"
        params += [bounds.start, bounds.cutoff_id]
    return where, params


def _run_all(cur: duckdb.DuckDBPyConnection, statements: Sequence[str]) -> None:
    for statement in statements:
        cur.execute(statement)


def _columns(ddl: str) -> list[str]:
    """`name TYPE` entries of a table's DDL (no nested commas in these types)."""
    return [part.strip() for part in ddl.split(",") if part.strip()]


def _to_numpy(array: pa.Array) -> np.ndarray:
    if pa.types.is_floating(array.type):
        return array.to_numpy(zero_copy_only=False)
    return np.asarray(array.to_pylist(), dtype=object)


_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
}


def _arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a table's scalar columns, from its DDL in `TABLES`."""
    fields = (column.split() for column in _columns(TABLES[table]))
    return pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in fields])


_DRIFT_SCHEMA = _arrow_schema("drift_results")
_RETRAIN_SCHEMA = _arrow_schema("retraining_events")
_QUEUE_PREDICTION_FIELDS = (
    "model_name",
    "model_version",
    "prediction",
    "confidence",
    "probabilities",
    "image_ref",
    "task",
    "ts",
)

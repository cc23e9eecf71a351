"""The labeling queue (`labeling_queue`): uncertain predictions waiting for a person."""

from __future__ import annotations

import datetime as dt
from typing import Any

import duckdb
import pyarrow as pa

from pipelines.store.core import StoreCore, new_id, utcnow
from pipelines.store.feedback import QUEUE_SOURCE


class LabelingQueue(StoreCore):
    """`labeling_queue` is an event log: one `enqueued` row per item (with its informativeness
    score and the prediction's `ts`, which lets joins prune predictions files), then at most
    one `labeled` or `skipped` row. An item's status is its answer, or `pending`."""

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
        found = self.predictions_by_id(
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

"""Feedback (`feedback`): what the right answer to a prediction was, and the figures the
retraining policy reads from it (new labels, errors per class, live accuracy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pipelines.store.core import StoreCore, new_id, utcnow

QUEUE_SOURCE = "labeling-queue"
"""`feedback.source` of labels given in the labeling queue."""


class Feedback(StoreCore):
    """`feedback` rows, and what they say about a model."""

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

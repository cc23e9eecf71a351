"""Vision tables: image predictions share `predictions` (with `task` = detect / classify and
`image_ref`), so the queue, feedback and inspection logs see them, and the tabular queries leave
them out (`task IS NULL`). Boxes go to `detections`, per-image drift inputs to
`image_features`, and the original labeled images to `ingested_images`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.store.core import StoreCore, new_id, utcnow
from pipelines.store.tables import arrow_schema


class Images(StoreCore):
    """The image log, the labeled images and the figures of the vision model."""

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
            schema=arrow_schema("ingested_images"),
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
        boxes, or None for a bare "wrong") for `retraining_conditions.image_errors_per_class`."""
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
            f"""SELECT avg(fps) FILTER (origin = 'edge'),
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
        return {
            "images": int(n),
            "uncertain": int(uncertain),
            "latency_ms_p50": p50,
            "latency_ms_p99": p99,
            "edge_fps": f[0],
            "inference_ms_p50": f[1],
            "inference_ms_p99": f[2],
            "defect_rate": self.defect_rate(model_name, since),
            "confidence_histogram": {
                "edges": [round(i / 10, 1) for i in range(11)],
                "counts": [int(hist.get(i, 0)) for i in range(10)],
            },
            "per_class": {
                str(cls): {"count": int(c), "mean_confidence": conf, "uncertain": int(u)}
                for cls, c, conf, u in per_class
            },
        }

    def recent_image_refs(self, model_name: str, limit: int) -> list[str]:
        """The stored images of the last `limit` predictions of `model_name` that kept one
        (API uploads, and edge frames sent because they were uncertain), newest first."""
        rows = self.lake.rows(
            """SELECT image_ref FROM lake.predictions
               WHERE model_name = ? AND image_ref IS NOT NULL
               ORDER BY ts DESC, prediction_id DESC LIMIT ?""",
            [model_name, int(limit)],
        )
        return [str(row[0]) for row in rows]

    def defect_rate(self, model_name: str, since: dt.datetime | None = None) -> float | None:
        """Share of the images served or logged (since `since`) with at least one detection;
        None without images. One cheap query: /metrics reads it at each scrape."""
        n, with_detections = self.lake.rows(
            """SELECT count(*), count(*) FILTER (n_detections > 0) FROM lake.image_features
               WHERE model_name = ? AND ts >= coalesce(?, TIMESTAMPTZ 'epoch')""",
            [model_name, since],
        )[0]
        return int(with_detections) / int(n) if n else None

    def vision_queue_candidates(self, since: dt.datetime) -> pa.Table:
        """Uncertain detection predictions logged at or after `since` that never entered the
        queue, with an informativeness score: the margin ``1 - |2c - 1|`` of their least
        certain uncertain box (1 at confidence 0.5, as `labeling_policy.informativeness` for two
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

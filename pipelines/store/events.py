"""The audit trail: drift checks (`drift_results`), retraining runs (`retraining_events`) and
champion moves (`model_events`)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa

from pipelines.store.core import StoreCore, new_id, utcnow
from pipelines.store.tables import arrow_schema

_DRIFT_SCHEMA = arrow_schema("drift_results")
_RETRAIN_SCHEMA = arrow_schema("retraining_events")


class Events(StoreCore):
    """Rows that record what happened: one commit per check, run state or move."""

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

    def drift_history(self, limit_runs: int = 100, *, image: bool = False) -> list[dict[str, Any]]:
        """Per run and feature: statistic, effect size and verdict, for trends over time (of
        the image checks with `image`)."""
        return self.lake.query(
            """WITH runs AS (
                   SELECT run_id, max(ts) AS ts FROM lake.drift_results
                   WHERE (modality IS NOT DISTINCT FROM 'image') = ?
                   GROUP BY run_id ORDER BY ts DESC LIMIT ?
               )
               SELECT d.run_id, d.ts, d.feature, d.role, d.test, d.statistic, d.p_adjusted,
                      d.effect_size, d.drifted, d.dataset_drift, d.drift_share
               FROM lake.drift_results d SEMI JOIN runs USING (run_id)
               ORDER BY d.ts, d.feature""",
            [image, int(limit_runs)],
        ).to_pylist()

    def drift_check_streak(self, *, image: bool = False) -> int:
        """How many tabular (or `image`) drift checks in a row, up to the latest, found dataset
        drift (0 when the latest did not)."""
        row = self.lake.rows(
            """WITH runs AS (
                   SELECT run_id, max(ts) AS ts, bool_or(dataset_drift) AS drift
                   FROM lake.drift_results WHERE (modality IS NOT DISTINCT FROM 'image') = ?
                   GROUP BY run_id
               )
               SELECT count(*) FILTER (ts > coalesce(
                          (SELECT max(ts) FROM runs WHERE NOT coalesce(drift, false)),
                          TIMESTAMPTZ 'epoch'))
               FROM runs""",
            [image],
        )[0]
        return int(row[0])

    def latest_vision_drift(self) -> list[dict[str, Any]]:
        """Every row of the most recent image drift check."""
        return self.lake.query(
            """SELECT * FROM lake.drift_results
               WHERE run_id = (SELECT arg_max(run_id, ts) FROM lake.drift_results
                               WHERE modality = 'image')
               ORDER BY drifted DESC, p_adjusted NULLS LAST, feature"""
        ).to_pylist()

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

    def add_model_event(
        self,
        model_name: str,
        event: str,
        from_version: str | None,
        to_version: str | None,
        *,
        who: str,
        why: str,
        rollout_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """One row of the model's history; a rollout's rows carry its id and their figures
        (`details`, stored as JSON)."""
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
                "rollout_id": pa.array([rollout_id], pa.string()),
                "details": pa.array(
                    [None if details is None else json.dumps(details, default=str)], pa.string()
                ),
            }
        )
        self._insert("model_events", table)

    def serving_since(self, model_name: str, version: str) -> dt.datetime | None:
        """When `version` last became the champion (promoted, or rolled back to)."""
        return self.lake.rows(
            """SELECT max(ts) FROM lake.model_events
               WHERE model_name = ? AND to_version = ? AND event IN ('promoted', 'rolled_back')""",
            [model_name, version],
        )[0][0]

    def model_events(self, model_name: str, limit: int = 100) -> list[dict[str, Any]]:
        """The model's history, newest first (`details` parsed back from JSON)."""
        rows = self.lake.query(
            "SELECT * FROM lake.model_events WHERE model_name = ? ORDER BY ts DESC LIMIT ?",
            [model_name, limit],
        ).to_pylist()
        for row in rows:
            if row.get("details"):
                row["details"] = json.loads(row["details"])
        return rows

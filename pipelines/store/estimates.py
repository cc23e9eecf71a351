"""Performance estimates: per check and metric, what the window's probabilities say the model's
performance is, with its band, beside what labels realized and the champion's reference."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipelines.store.core import StoreCore
from pipelines.store.tables import arrow_schema

_SCHEMA = arrow_schema("performance_estimates")


class Estimates(StoreCore):
    """One commit per check (a row per metric)."""

    def add_performance_estimates(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            self._insert("performance_estimates", pa.Table.from_pylist(rows, schema=_SCHEMA))

    def performance_history(
        self, limit_runs: int = 100, model_version: str | None = None
    ) -> list[dict[str, Any]]:
        """The latest `limit_runs` checks' rows, oldest first (one row per check and metric);
        only one model version's with `model_version`."""
        return self.lake.query(
            """WITH runs AS (
                   SELECT run_id, max(ts) AS ts FROM lake.performance_estimates
                   WHERE ?::VARCHAR IS NULL OR model_version = ?::VARCHAR
                   GROUP BY run_id ORDER BY ts DESC LIMIT ?
               )
               SELECT e.* FROM lake.performance_estimates e SEMI JOIN runs USING (run_id)
               ORDER BY e.ts, e.run_id, e.metric""",
            [model_version, model_version, int(limit_runs)],
        ).to_pylist()

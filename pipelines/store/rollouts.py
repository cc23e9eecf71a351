"""Rollouts: which challenger runs beside the champion (`model_events` rows with a
`rollout_id`), what a shadow answered (`shadow_predictions`), and the labels that judge them.

A rollout starts with a `rollout_started` row and ends with a `rollout_promoted` or
`rollout_stopped` row of the same id; in between, `rollout_figures` rows record the live test
as labels arrive. The active rollout of a model is the newest one that has not ended.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from pipelines.store.core import StoreCore

STARTED = "rollout_started"
FIGURES = "rollout_figures"
PROMOTED = "rollout_promoted"
STOPPED = "rollout_stopped"
ENDED = (PROMOTED, STOPPED)

# The truth a label gives about a prediction: its latest label, else the served class when
# the latest feedback says "correct"; `first_at` orders the labels as they arrived.
_TRUTH = """
    SELECT prediction_id, arg_max(label, ts) AS label, arg_max(correct, ts) AS correct,
           min(ts) AS first_at
    FROM lake.feedback GROUP BY prediction_id
"""


class Rollouts(StoreCore):
    """The rollout rows and the label counts a rollout's test reads."""

    def active_rollout(self, model_name: str) -> dict[str, Any] | None:
        """The running rollout of `model_name` as its `rollout_started` row (`details`
        parsed), or None: the newest rollout, unless it has ended. An older one that never
        ended (two started at once) is superseded by it, never revived when it ends."""
        rows = self.lake.query(
            f"""WITH newest AS (
                    SELECT * FROM lake.model_events
                    WHERE model_name = ? AND event = '{STARTED}'
                    ORDER BY ts DESC LIMIT 1
                )
                SELECT * FROM newest WHERE rollout_id NOT IN (
                    SELECT rollout_id FROM lake.model_events
                    WHERE model_name = ? AND event IN {ENDED} AND rollout_id IS NOT NULL)""",
            [model_name, model_name],
        ).to_pylist()
        if not rows:
            return None
        row = rows[0]
        row["details"] = json.loads(row["details"] or "{}")
        return row

    def rollout_events(self, rollout_id: str) -> list[dict[str, Any]]:
        """Every row of one rollout, oldest first."""
        rows = self.lake.query(
            "SELECT * FROM lake.model_events WHERE rollout_id = ? ORDER BY ts", [rollout_id]
        ).to_pylist()
        for row in rows:
            row["details"] = json.loads(row["details"] or "{}")
        return rows

    # -- shadow answers ------------------------------------------------------------------------

    def append_shadow_predictions(self, table: pa.Table) -> None:
        """One commit for a flushed buffer of shadow answers."""
        self._insert("shadow_predictions", table)

    def existing_shadow_ids(self, ids: Iterable[str]) -> set[str]:
        wanted = pa.table({"prediction_id": pa.array(list(ids), pa.string())})
        found = self.lake.query_with(
            "SELECT prediction_id FROM lake.shadow_predictions "
            "SEMI JOIN _ids USING (prediction_id)",
            None,
            {"_ids": wanted},
        )
        return set(found.column("prediction_id").to_pylist())

    def shadow_agreement(self, rollout_id: str, since: dt.datetime) -> dict[str, Any]:
        """How often the shadow answered what the champion served, overall and per served class
        (with what the shadow said instead)."""
        rows = self.lake.rows(
            """SELECT p.prediction, s.prediction, count(*)
               FROM lake.shadow_predictions s JOIN lake.predictions p USING (prediction_id)
               WHERE s.rollout_id = ? AND s.ts >= ? AND p.ts >= ?
               GROUP BY ALL""",
            [rollout_id, since, since],
        )
        total = sum(n for *_, n in rows)
        agree = sum(n for served, shadow, n in rows if served == shadow)
        per_class: dict[str, dict[str, Any]] = {}
        for served, shadow, n in rows:
            entry = per_class.setdefault(served, {"n": 0, "disagree": 0, "shadow_said": {}})
            entry["n"] += n
            if served != shadow:
                entry["disagree"] += n
                entry["shadow_said"][shadow] = n
        for entry in per_class.values():
            entry["disagreement"] = entry["disagree"] / entry["n"]
        return {
            "n": total,
            "agreement": agree / total if total else None,
            "per_class": dict(sorted(per_class.items())),
        }

    def shadow_pairs(
        self, rollout_id: str, since: dt.datetime, limit: int
    ) -> list[tuple[bool, bool]]:
        """(champion right, shadow right) for the shadowed predictions with a label, in the
        order their first label arrived; at most `limit`.

        A bare "correct: true" makes the served class the truth. A bare "correct: false" says
        the champion was wrong and the truth is unknown: the pair counts only when the shadow
        said the same class (then both were wrong).
        """
        rows = self.lake.rows(
            f"""WITH truth AS ({_TRUTH})
                SELECT p.prediction, s.prediction, t.label, t.correct
                FROM lake.shadow_predictions s
                JOIN lake.predictions p USING (prediction_id)
                JOIN truth t USING (prediction_id)
                WHERE s.rollout_id = ? AND s.ts >= ? AND p.ts >= ?
                  AND (t.label IS NOT NULL OR t.correct
                       OR (NOT t.correct AND s.prediction = p.prediction))
                ORDER BY t.first_at, prediction_id
                LIMIT ?""",
            [rollout_id, since, since, int(limit)],
        )
        pairs = []
        for served, shadow, label, correct in rows:
            if label is None and correct:
                label = served
            if label is None:  # wrong, and the shadow agreed
                pairs.append((False, False))
            else:
                pairs.append((served == label, shadow == label))
        return pairs

    def arm_labels(
        self, model_name: str, versions: tuple[str, str], since: dt.datetime, limit: int
    ) -> list[tuple[str, bool]]:
        """(model version, right) for the labeled predictions `versions` served since `since`,
        in the order their first label arrived; at most `limit` rows."""
        rows = self.lake.rows(
            f"""WITH truth AS ({_TRUTH})
                SELECT p.model_version, coalesce(t.label = p.prediction, t.correct)
                FROM lake.predictions p JOIN truth t USING (prediction_id)
                WHERE p.ts >= ? AND p.model_name = ? AND p.model_version IN (?, ?)
                  AND p.task IS NULL AND (t.label IS NOT NULL OR t.correct IS NOT NULL)
                ORDER BY t.first_at, prediction_id
                LIMIT ?""",
            [since, model_name, versions[0], versions[1], int(limit)],
        )
        return [(str(version), bool(right)) for version, right in rows]

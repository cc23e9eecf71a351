"""The shadow challenger's answers, logged like served predictions but to `shadow_predictions`.

A `PredictionLog` with its own spool segments (`shadow-*.spool`): an answer is in the spool
before the served answer goes out, and reaches the lake in one commit per flush. A chunk is one
model call's shadowed rows: `ids` (the served predictions' ids), `ts`, `rollout_id`,
`model_name`, `model_version`, `prediction`, `confidence` and `probabilities`.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.store.spool import PredictionLog, probability_lists

ROLE = "shadow"


class ShadowLog(PredictionLog):
    """The log of shadow answers; it also counts the rows answered and the shadow calls that
    failed (for /metrics)."""

    prefix = "shadow-"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered = 0
        self.failed = 0

    def _prepared(self, chunk: dict[str, Any]) -> dict[str, Any]:
        return chunk  # converted with its whole flush: a few columns, no features

    def _commit(self, chunks: list[dict[str, Any]]) -> None:
        self.store.append_shadow_predictions(shadow_table(chunks))

    def _present(self, ids: list[str]) -> set[str]:
        return self.store.existing_shadow_ids(ids)

    def _drop_present(self, chunks: list[dict[str, Any]], present: set[str]) -> list[dict]:
        kept = []
        for chunk in chunks:
            rows = [i for i, pid in enumerate(chunk["ids"]) if pid not in present]
            if len(rows) == len(chunk["ids"]):
                kept.append(chunk)
            elif rows:
                out = dict(chunk)
                for key in ("ids", "prediction", "confidence", "probabilities"):
                    out[key] = [chunk[key][i] for i in rows]
                kept.append(out)
        return kept


def shadow_table(chunks: list[dict[str, Any]]) -> pa.Table:
    """The chunks as one Arrow table shaped like `lake.shadow_predictions`."""
    counts = np.fromiter((len(c["ids"]) for c in chunks), np.int64, len(chunks))
    owner = pa.array(np.repeat(np.arange(len(chunks)), counts))

    def per_chunk(key: str, type_: pa.DataType) -> pa.Array:
        return pa.array([c[key] for c in chunks], type_).take(owner)

    ts = pa.array(
        [dt.datetime.fromtimestamp(c["ts"], dt.UTC) for c in chunks], pa.timestamp("us", tz="UTC")
    ).take(owner)
    chain = itertools.chain.from_iterable
    return pa.table(
        {
            "prediction_id": pa.array(list(chain(c["ids"] for c in chunks)), pa.string()),
            "ts": ts,
            "rollout_id": per_chunk("rollout_id", pa.string()),
            "model_name": per_chunk("model_name", pa.string()),
            "model_version": per_chunk("model_version", pa.string()),
            "role": pa.repeat(pa.scalar(ROLE), int(counts.sum())),
            "prediction": pa.array(list(chain(c["prediction"] for c in chunks)), pa.string()),
            "confidence": pa.array(
                np.concatenate([np.asarray(c["confidence"], float) for c in chunks])
            ),
            "probabilities": probability_lists(chunks),
        }
    )

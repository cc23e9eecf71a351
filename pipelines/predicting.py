"""The prediction path shared by the API and the dashboard: validate, predict, flag, log."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.schema import SchemaError
from pipelines.serving import ServingModel
from pipelines.store.ids import prediction_ids
from pipelines.store.spool import PredictionLog


@dataclass(frozen=True)
class Band:
    """The seeds' uncertainty rule: low < confidence < high means a human should look."""

    low: float = 0.4
    high: float = 0.7

    def uncertain(self, confidence: np.ndarray) -> np.ndarray:
        return (confidence > self.low) & (confidence < self.high)


def predict(
    model: ServingModel,
    log: PredictionLog,
    band: Band,
    *,
    features: list[list[Any]] | None = None,
    records: list[dict[str, Any]] | None = None,
    max_rows: int | None = None,
) -> dict[str, Any]:
    """Predict a payload and log every row durably before returning the answer."""
    started = time.perf_counter()
    schema = model.schema
    columns = schema.columns(features, records, max_rows=max_rows)
    index, proba = model.predict(schema.encode(columns))
    classes = model.classes
    if not classes:
        raise SchemaError("the serving model has no classes")
    # Plain lists from here on: the log line and the answer share them (one conversion each).
    labels = [classes[i] for i in index.tolist()]
    confidence = proba.max(axis=1)  # the probability of the argmax class
    uncertain = band.uncertain(confidence).tolist()
    confidence_list = confidence.tolist()
    proba_list = proba.tolist()
    latency_ms = (time.perf_counter() - started) * 1000.0
    n = len(labels)
    ts = time.time()
    ids = prediction_ids(n, ts)  # carry `ts`: feedback finds them without a full scan
    log.append(
        {
            "ids": ids,
            "ts": ts,
            "model_name": model.name,
            "model_version": model.version,
            "features": {k: v.tolist() for k, v in columns.items()},
            "prediction": [str(v) for v in labels],
            "confidence": confidence_list,
            "probabilities": proba_list,
            "latency_ms": [latency_ms] * n,
            "uncertain": uncertain,
        }
    )
    return {
        "predictions": labels,
        "probabilities": confidence_list,
        "class_probabilities": proba_list,
        "classes": list(classes),
        "prediction_ids": ids,
        "model_version": model.version,
        "uncertain": uncertain,
    }

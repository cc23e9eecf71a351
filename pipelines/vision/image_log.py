"""The image log: every image prediction, the API's or an edge client's, logged durably.

Each becomes one chunk of :class:`ImageLog` (`prediction_chunk`): acknowledged only once it is
in the spool file, then written to the lake in one commit with its boxes (``detections``) and
its per-image features (``image_features``), exactly like tabular predictions.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.serving.band import Band
from pipelines.store import Store
from pipelines.store.spool import PredictionLog
from pipelines.store.tables import arrow_schema
from pipelines.vision.images import (
    FEATURE_COLUMNS,
)


class InvalidPayload(ValueError):
    """An upload or edge log payload that can't be accepted; the message says why."""


NO_OBJECT = "none"
"""`top_class` of an image in which nothing was detected."""

_PREDICTIONS = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("prediction", pa.string()),
        ("confidence", pa.float64()),
        ("probabilities", pa.list_(pa.float64())),
        ("latency_ms", pa.float64()),
        ("uncertain", pa.bool_()),
        ("image_ref", pa.string()),
        ("task", pa.string()),
        ("origin", pa.string()),
    ]
)
_DETECTIONS = arrow_schema("detections")
_FEATURES = arrow_schema("image_features")


def output_features(
    task: str,
    detections: list[dict[str, Any]],
    top: str | None,
    confidence: float | None,
    width: float,
    height: float,
) -> dict[str, Any]:
    """Per-image output features: detections per image, mean relative box area, mean
    confidence, and the class of the best box (or the predicted class)."""
    if task == "classify":
        return {
            "n_detections": None,
            "mean_box_area": None,
            "mean_confidence": confidence,
            "top_class": top,
        }
    area = max(width * height, 1.0)
    sizes = [
        max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) / area for b in (d["box"] for d in detections)
    ]
    return {
        "n_detections": float(len(detections)),
        "mean_box_area": float(np.mean(sizes)) if sizes else None,
        "mean_confidence": float(np.mean([d["confidence"] for d in detections]))
        if detections
        else None,
        "top_class": top if detections else NO_OBJECT,
    }


def prediction_chunk(
    *,
    prediction_id: str,
    ts: float,
    model_name: str,
    model_version: str,
    task: str,
    origin: str,
    detections: list[dict[str, Any]],
    probabilities: list[float] | None,
    names: tuple[str, ...] | list[str],
    latency_ms: float,
    band: Band,
    image_ref: str | None,
    quality: dict[str, float] | None,
    width: float,
    height: float,
    fps: float | None = None,
    inference_ms: float | None = None,
) -> dict[str, Any]:
    """One image's log chunk (the spool line), and the answer's fields, from raw outputs.

    `detections` are dicts with `box`, `class`, `name`, `confidence`; their `uncertain` flag
    is set here from the band.
    """
    if task == "classify":
        if not probabilities:
            raise InvalidPayload("a classification needs its probabilities")
        top_index = int(np.argmax(probabilities))
        confidence: float | None = float(probabilities[top_index])
        top: str | None = names[top_index] if top_index < len(names) else str(top_index)
        uncertain = bool(band.uncertain(np.array([confidence]))[0])
        prediction = top
        boxes: list[dict[str, Any]] = []
    else:
        conf = np.array([d["confidence"] for d in detections], dtype=float)
        flags = band.uncertain(conf).tolist() if len(conf) else []
        boxes = [{**d, "uncertain": bool(flag)} for d, flag in zip(detections, flags, strict=True)]
        boxes.sort(key=lambda d: -d["confidence"])
        confidence = boxes[0]["confidence"] if boxes else None
        top = boxes[0]["name"] if boxes else None
        uncertain = any(flags)
        prediction = json.dumps(
            [
                {
                    "box": [round(float(v), 2) for v in d["box"]],
                    "class": int(d["class"]),
                    "name": d["name"],
                    "confidence": round(float(d["confidence"]), 4),
                }
                for d in boxes
            ]
        )
    return {
        "ids": [prediction_id],
        "ts": ts,
        "model_name": model_name,
        "model_version": model_version,
        "task": task,
        "origin": origin,
        "prediction": [prediction],
        "confidence": [confidence],
        "probabilities": [list(probabilities) if task == "classify" and probabilities else None],
        "latency_ms": [latency_ms],
        "uncertain": [uncertain],
        "image_ref": [image_ref],
        "detections": [boxes],
        "quality": [quality],
        "outputs": [output_features(task, boxes, top, confidence, width, height)],
        "fps": [fps],
        "inference_ms": [inference_ms],
    }


def image_tables(chunks: list[dict[str, Any]]) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The rows of `predictions`, `detections` and `image_features` for a list of chunks
    (a prediction id seen twice in the list is kept once)."""
    seen: set[str] = set()
    preds, dets, feats = [], [], []
    for c in chunks:
        ts = dt.datetime.fromtimestamp(c["ts"], dt.UTC)
        for i, pid in enumerate(c["ids"]):
            if pid in seen:
                continue
            seen.add(pid)
            preds.append(
                {
                    "prediction_id": pid,
                    "ts": ts,
                    "model_name": c["model_name"],
                    "model_version": c["model_version"],
                    "prediction": c["prediction"][i],
                    "confidence": c["confidence"][i],
                    "probabilities": c["probabilities"][i],
                    "latency_ms": c["latency_ms"][i],
                    "uncertain": c["uncertain"][i],
                    "image_ref": c["image_ref"][i],
                    "task": c["task"],
                    "origin": c["origin"],
                }
            )
            for d in c["detections"][i]:
                x1, y1, x2, y2 = (float(v) for v in d["box"])
                dets.append(
                    {
                        "prediction_id": pid,
                        "ts": ts,
                        "x1": x1,
                        "y1": y1,
                        "x2": x2,
                        "y2": y2,
                        "class": d["name"],
                        "confidence": float(d["confidence"]),
                        "uncertain": bool(d["uncertain"]),
                        "class_index": int(d["class"]),
                    }
                )
            quality = c["quality"][i] or {}
            feats.append(
                {
                    "prediction_id": pid,
                    "ts": ts,
                    "model_name": c["model_name"],
                    "model_version": c["model_version"],
                    "origin": c["origin"],
                    **{k: quality.get(k) for k in FEATURE_COLUMNS},
                    **c["outputs"][i],
                    "fps": c["fps"][i],
                    "inference_ms": c["inference_ms"][i],
                }
            )
    predictions = pa.Table.from_pylist(preds, schema=_PREDICTIONS)
    return (
        predictions,
        pa.Table.from_pylist(dets, schema=_DETECTIONS),
        pa.Table.from_pylist(feats, schema=_FEATURES),
    )


class ImageLog(PredictionLog):
    """The prediction log of image predictions: its own spool segments, three tables per
    commit, and whole chunks dropped on replay when their id is in the lake already."""

    prefix = "images-"

    def __init__(self, store: Store, spool_dir: Path, **kwargs: Any) -> None:
        super().__init__(store, spool_dir, **kwargs)
        self._dedupe = threading.Lock()

    def _prepared(self, chunk: dict[str, Any]) -> dict[str, Any]:
        return chunk  # `image_tables` converts a whole flush at once (a few rows per image)

    def _commit(self, chunks: list[dict[str, Any]]) -> None:
        self.store.append_image_predictions(*image_tables(chunks))

    def _drop_present(self, chunks: list[dict[str, Any]], present: set[str]) -> list[dict]:
        return [c for c in chunks if not set(c["ids"]) & present]

    def append_once(self, chunk: dict[str, Any]) -> bool:
        """Append unless the chunk's id is pending here or already in the lake; True if
        appended. One lock around check and append: two copies of a resend racing in this
        process log once (and the commit itself skips ids already in the lake)."""
        (pid,) = chunk["ids"]
        with self._dedupe:
            if self.is_pending(pid) or self.store.existing_prediction_ids([pid]):
                return False
            self.append(chunk)
            return True

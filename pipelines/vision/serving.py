"""Serving a vision champion: load it from the registry, predict an upload, log everything.

The vision model is a registered model of its own (``Settings.vision_model_name``), served by
the same :class:`pipelines.serving.ModelHolder` as the tabular one (it polls the ``champion``
alias and swaps atomically), with :func:`vision_loader` as its loader. Its files are kept under
``<data_dir>/cache/vision/<name>/v<version>/``: ONNX Runtime reads the ``.onnx`` from there and
a retrain fine-tunes from the ``.pt``.

Every image prediction, whether the API made it (POST /predict/image) or an edge client did
(POST /log), becomes one chunk of :class:`ImageLog`: acknowledged only once it is in the spool
file, written to the lake in one commit with its boxes (``detections``) and its per-image
features (``image_features``), exactly like tabular predictions. An edge log is keyed by the
id the client gave it, so a resend after a lost answer is recognised (pending in this process,
or already in the lake) and never stored twice.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.predicting import Band
from pipelines.registry import (
    VISION_META,
    VISION_ONNX,
    VISION_ONNX_INT8,
    VISION_WEIGHTS,
    Registry,
)
from pipelines.schema import is_finite_number, stored_number
from pipelines.store.ids import prediction_ids
from pipelines.store.spool import PredictionLog
from pipelines.store.store import Store, _arrow_schema
from pipelines.vision.images import (
    FEATURE_COLUMNS,
    ImageError,
    decode_image,
    image_features,
    store_image,
)
from pipelines.vision.yolo import ImagePrediction, Predictor

logger = logging.getLogger(__name__)

NO_OBJECT = "none"
"""`top_class` of an image in which nothing was detected."""

EDGE_PREFIX = "edge:"
"""Edge logs are stored under `edge:<client id>`, apart from the API's own ids."""

CLIENT_ID = re.compile(r"^[A-Za-z0-9_.\-]{8,120}$")
LABEL_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
"""An edge log's names (model, version, class): kept as sent, so bounded and printable."""

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
_DETECTIONS = _arrow_schema("detections")
_FEATURES = _arrow_schema("image_features")


class InvalidLog(ValueError):
    """An edge log (or upload payload) that can't be accepted; the message says why."""


@dataclass
class VisionModel:
    """A registered YOLO version ready to answer.

    Attributes:
        name: Registered model name.
        version: Registry version.
        task: "detect" or "classify".
        names: Class names by index.
        imgsz: Input side it was trained at.
        predictor: The ONNX (or, without an export, PyTorch) predictor.
        folder: Where its files are kept (``best.pt``, ``model.onnx``, ``vision.json``).
        snapshot_id: The store snapshot its training images were read at.
    """

    name: str
    version: str
    task: str
    names: tuple[str, ...]
    imgsz: int
    predictor: Predictor
    folder: Path
    snapshot_id: int | None = None

    @property
    def runtime(self) -> str:
        return self.predictor.runtime

    @property
    def weights(self) -> Path:
        return self.folder / VISION_WEIGHTS

    @property
    def classes(self) -> tuple[str, ...]:
        return self.names


def version_folder(cache_dir: Path, registry: Registry, version: str) -> Path:
    """A version's files, downloaded once (they never change for a version)."""
    folder = cache_dir / registry.model_name / f"v{version}"
    if (folder / VISION_META).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Downloaded aside, then renamed into place: another process may be doing the same.
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".v{version}-"))
    try:
        got = registry.serving_files(version, tmp)
        try:
            os.rename(got, folder)
        except OSError:
            if not (folder / VISION_META).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_vision_version(
    registry: Registry, version: str, cache_dir: Path, *, threads: int | None = 1
) -> VisionModel:
    """A registered vision version as a :class:`VisionModel` (ONNX Runtime when exported).

    Args:
        threads: ONNX Runtime intra-op threads. One, like the tabular sessions: requests run
            concurrently and more threads per call fight over a couple of cores.
    """
    info = registry.version(version)
    folder = version_folder(cache_dir, registry, version)
    meta = json.loads((folder / VISION_META).read_text())
    int8_file, onnx_file = folder / VISION_ONNX_INT8, folder / VISION_ONNX
    if int8_file.exists():  # registered only after it agreed with the float export
        predictor = Predictor.from_onnx(int8_file, threads=threads)
    elif onnx_file.exists():
        predictor = Predictor.from_onnx(onnx_file, threads=threads)
    else:
        predictor = Predictor.from_weights(folder / VISION_WEIGHTS, imgsz=int(meta["imgsz"]))
    return VisionModel(
        registry.model_name,
        str(version),
        meta["task"],
        tuple(meta["names"]),
        int(meta["imgsz"]),
        predictor,
        folder,
        info.snapshot_id,
    )


def vision_loader(cache_dir: Path) -> Any:
    """The `ModelHolder` loader of vision versions kept under `cache_dir`."""

    def load(registry: Registry, version: str) -> VisionModel:
        return load_vision_version(registry, version, cache_dir)

    return load


# -- answers and log chunks -----------------------------------------------------------------


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
            raise InvalidLog("a classification needs its probabilities")
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


# -- the two ways in ------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """What an upload may be (`Settings.image_max_bytes`, `image_max_pixels`)."""

    max_bytes: int
    max_pixels: int


def decode_payload_image(text: str, limits: Limits) -> bytes:
    """The bytes of a base64 image in a JSON body (data-URL prefix allowed), size-checked
    before decoding: base64 grows 4/3."""
    if not isinstance(text, str) or not text:
        raise InvalidLog('"image" must be a non-empty base64 string')
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > limits.max_bytes * 4 // 3 + 8:
        raise ImageTooLargeText(
            f"the base64 image is over the {limits.max_bytes:,}-byte limit once decoded"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidLog('"image" is not valid base64') from None


class ImageTooLargeText(ImageError):
    status = 413


def predict_image(
    model: VisionModel,
    log: ImageLog,
    band: Band,
    data: bytes,
    *,
    images_dir: Path,
    limits: Limits,
    conf: float = 0.25,
) -> dict[str, Any]:
    """Decode (safely), store, predict and log one uploaded image; the answer.

    Raises:
        ImageError: Not an acceptable image (its `status` is the HTTP code).
    """
    started = time.perf_counter()
    image = decode_image(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    stored = store_image(data, images_dir, image.suffix)
    result: ImagePrediction = model.predictor.predict(image.pixels, conf=conf)
    quality = image_features(image.pixels)
    latency_ms = (time.perf_counter() - started) * 1000.0
    ts = time.time()
    prediction_id = prediction_ids(1, ts)[0]  # carries `ts`: feedback reads only its files
    chunk = prediction_chunk(
        prediction_id=prediction_id,
        ts=ts,
        model_name=model.name,
        model_version=model.version,
        task=model.task,
        origin="api",
        detections=[d.to_dict() for d in result.detections],
        probabilities=list(result.probabilities) or None,
        names=model.names,
        latency_ms=latency_ms,
        band=band,
        image_ref=stored.ref,
        quality=quality,
        width=image.width,
        height=image.height,
        inference_ms=result.latency_ms,
    )
    log.append(chunk)
    return answer(
        chunk, names=model.names, runtime=result.runtime, width=image.width, height=image.height
    )


def answer(
    chunk: dict[str, Any],
    *,
    names: tuple[str, ...] | list[str],
    runtime: str | None,
    width: int,
    height: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prediction_id": chunk["ids"][0],
        "model_name": chunk["model_name"],
        "model_version": chunk["model_version"],
        "task": chunk["task"],
        "uncertain": chunk["uncertain"][0],
        "image_ref": chunk["image_ref"][0],
        "width": width,
        "height": height,
        "latency_ms": round(chunk["latency_ms"][0], 3),
        "runtime": runtime,
    }
    if chunk["task"] == "classify":
        out.update(
            {
                "class": chunk["prediction"][0],
                "confidence": chunk["confidence"][0],
                "probabilities": dict(zip(names, chunk["probabilities"][0], strict=False)),
            }
        )
    else:
        out["detections"] = [
            {
                "box": [float(v) for v in d["box"]],
                "class": d["name"],
                "class_index": int(d["class"]),
                "confidence": float(d["confidence"]),
                "uncertain": bool(d["uncertain"]),
            }
            for d in chunk["detections"][0]
        ]
    return out


def log_edge(
    log: ImageLog,
    band: Band,
    payload: dict[str, Any],
    *,
    model_name: str,
    names: tuple[str, ...] | list[str] | None,
    images_dir: Path,
    limits: Limits,
) -> dict[str, Any]:
    """Accept one edge client's log (its own detections, the frame when uncertain).

    Idempotent by the client's `id`: a log seen before (pending here or in the lake) is
    answered with ``duplicate: true`` and stored nothing.

    Raises:
        InvalidLog: A malformed payload (the message says which field).
        ImageError: The attached frame is not an acceptable image.
    """
    client_id = payload.get("id")
    if not isinstance(client_id, str) or not CLIENT_ID.match(client_id):
        raise InvalidLog('"id" must be 8-120 characters of letters, digits, "_", "-" or "."')
    task = payload.get("task", "detect")
    if task not in ("detect", "classify"):
        raise InvalidLog('"task" must be "detect" or "classify"')
    ts = _number(payload, "ts", default=time.time())
    if not 0 < ts < time.time() + 86_400:
        raise InvalidLog('"ts" must be epoch seconds, not in the future')
    width, height = _number(payload, "width", 0.0), _number(payload, "height", 0.0)
    detections = _detections(payload.get("detections") or [], names)
    probabilities = payload.get("probabilities")
    if task == "classify":
        if (
            not isinstance(probabilities, list)
            or not probabilities
            or not all(map(is_finite_number, probabilities))
        ):
            raise InvalidLog('a classification log needs "probabilities": a list of numbers')
    image_ref, quality = None, payload.get("quality")
    if quality is not None and (
        not isinstance(quality, dict)
        or not all(is_finite_number(quality.get(k)) for k in FEATURE_COLUMNS)
    ):
        raise InvalidLog(f'"quality" must hold numbers for {", ".join(FEATURE_COLUMNS)}')
    prediction_id = EDGE_PREFIX + client_id
    if log.is_pending(prediction_id) or log.store.existing_prediction_ids([prediction_id]):
        return {"prediction_id": prediction_id, "duplicate": True, "stored": False}
    if payload.get("frame") is not None:
        data = decode_payload_image(payload["frame"], limits)
        image = decode_image(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
        image_ref = store_image(data, images_dir, image.suffix).ref
        quality = image_features(image.pixels)
        width, height = float(image.width), float(image.height)
    model_version = payload.get("model_version")
    if model_version is not None and not isinstance(model_version, str | int):
        raise InvalidLog('"model_version" must be a string')
    if model_version is not None and not LABEL_TEXT.fullmatch(str(model_version)):
        raise InvalidLog('"model_version" must be 1-64 characters, no control characters')
    edge_model = payload.get("model_name")
    if edge_model is not None and (
        not isinstance(edge_model, str) or not LABEL_TEXT.fullmatch(edge_model)
    ):
        raise InvalidLog('"model_name" must be 1-64 characters, no control characters')
    chunk = prediction_chunk(
        prediction_id=prediction_id,
        ts=ts,
        model_name=edge_model or model_name,
        model_version=str(model_version) if model_version is not None else "edge",
        task=task,
        origin="edge",
        detections=detections,
        probabilities=[stored_number(p) for p in probabilities or []]
        if task == "classify"
        else None,
        names=list(names or []),
        latency_ms=_number(payload, "inference_ms", 0.0),
        band=band,
        image_ref=image_ref,
        quality={k: stored_number(v) for k, v in quality.items() if k in FEATURE_COLUMNS}
        if quality
        else None,
        width=width,
        height=height,
        fps=_number(payload, "fps", None),
        inference_ms=_number(payload, "inference_ms", None),
    )
    stored = log.append_once(chunk)
    return {
        "prediction_id": prediction_id,
        "duplicate": not stored,
        "stored": stored,
        "uncertain": chunk["uncertain"][0],
        "image_ref": image_ref,
    }


def _number(payload: dict[str, Any], key: str, default: Any) -> Any:
    value = payload.get(key, default)
    if value is None:
        return default
    if not is_finite_number(value):
        raise InvalidLog(f'"{key}" must be a finite number')
    return stored_number(value)


def _detections(raw: Any, names: tuple[str, ...] | list[str] | None) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) > 1000:
        raise InvalidLog('"detections" must be a list of at most 1000 boxes')
    out = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict):
            raise InvalidLog(f"detections[{i}] must be an object")
        box, cls, conf = d.get("box"), d.get("class"), d.get("confidence")
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(map(is_finite_number, box))
            or box[2] < box[0]
            or box[3] < box[1]
        ):
            raise InvalidLog(f"detections[{i}].box must be [x1, y1, x2, y2] with x1<=x2, y1<=y2")
        if isinstance(cls, bool) or not isinstance(cls, int) or cls < 0:
            raise InvalidLog(f"detections[{i}].class must be a class index (integer >= 0)")
        if names and cls >= len(names):
            raise InvalidLog(f"detections[{i}].class {cls} is not one of the {len(names)} classes")
        if not is_finite_number(conf) or not 0 <= conf <= 1:
            raise InvalidLog(f"detections[{i}].confidence must be within [0, 1]")
        name = d.get("name")
        if name is not None and (not isinstance(name, str) or not LABEL_TEXT.fullmatch(name)):
            raise InvalidLog(f"detections[{i}].name must be 1-64 characters, no control characters")
        name = name or (names[cls] if names else str(cls))
        out.append(
            {
                "box": [stored_number(v) for v in box],
                "class": cls,
                "name": name,
                "confidence": stored_number(conf),
            }
        )
    return out

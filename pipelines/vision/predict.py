"""An uploaded image answered: decoded safely, stored by content, predicted and logged.

POST /predict/image and the dashboard's Predict page both come through `predict_image`.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.serving.band import Band
from pipelines.store.ids import prediction_ids
from pipelines.vision.image_log import ImageLog, InvalidPayload, prediction_chunk
from pipelines.vision.images import (
    ImageError,
    decode_image,
    image_features,
    store_image,
)
from pipelines.vision.model import VisionModel
from pipelines.vision.predictor import ImagePrediction


@dataclass(frozen=True)
class Limits:
    """What an upload may be (`Settings.image_max_bytes`, `image_max_pixels`)."""

    max_bytes: int
    max_pixels: int


def decode_payload_image(text: str, limits: Limits) -> bytes:
    """The bytes of a base64 image in a JSON body (data-URL prefix allowed), size-checked
    before decoding: base64 grows 4/3."""
    if not isinstance(text, str) or not text:
        raise InvalidPayload('"image" must be a non-empty base64 string')
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > limits.max_bytes * 4 // 3 + 8:
        raise ImageTooLargeText(
            f"the base64 image is over the {limits.max_bytes:,}-byte limit once decoded"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPayload('"image" is not valid base64') from None


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

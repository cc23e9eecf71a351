"""Edge logs: a client's own detections for one frame, with the frame when uncertain (POST /log).

An edge log is keyed by the id the client gave it, so a resend after a lost answer is
recognised (pending in this process, or already in the lake) and never stored twice.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from pipelines.schema import is_finite_number, stored_number
from pipelines.serving.band import Band
from pipelines.vision.image_log import ImageLog, prediction_chunk
from pipelines.vision.images import (
    FEATURE_COLUMNS,
    decode_image,
    image_features,
    store_image,
)
from pipelines.vision.predict import InvalidPayload, Limits, decode_payload_image

EDGE_PREFIX = "edge:"
"""Edge logs are stored under `edge:<client id>`, apart from the API's own ids."""

CLIENT_ID = re.compile(r"^[A-Za-z0-9_.\-]{8,120}$")
LABEL_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,64}")
"""An edge log's names (model, version, class): kept as sent, so bounded and printable."""


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
        InvalidPayload: A malformed payload (the message says which field).
        ImageError: The attached frame is not an acceptable image.
    """
    client_id = payload.get("id")
    if not isinstance(client_id, str) or not CLIENT_ID.match(client_id):
        raise InvalidPayload('"id" must be 8-120 characters of letters, digits, "_", "-" or "."')
    task = payload.get("task", "detect")
    if task not in ("detect", "classify"):
        raise InvalidPayload('"task" must be "detect" or "classify"')
    ts = _number(payload, "ts", default=time.time())
    if not 0 < ts < time.time() + 86_400:
        raise InvalidPayload('"ts" must be epoch seconds, not in the future')
    width, height = _number(payload, "width", 0.0), _number(payload, "height", 0.0)
    detections = _detections(payload.get("detections") or [], names)
    probabilities = payload.get("probabilities")
    if task == "classify":
        if (
            not isinstance(probabilities, list)
            or not probabilities
            or not all(map(is_finite_number, probabilities))
        ):
            raise InvalidPayload('a classification log needs "probabilities": a list of numbers')
    image_ref, quality = None, payload.get("quality")
    if quality is not None and (
        not isinstance(quality, dict)
        or not all(is_finite_number(quality.get(k)) for k in FEATURE_COLUMNS)
    ):
        raise InvalidPayload(f'"quality" must hold numbers for {", ".join(FEATURE_COLUMNS)}')
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
        raise InvalidPayload('"model_version" must be a string')
    if model_version is not None and not LABEL_TEXT.fullmatch(str(model_version)):
        raise InvalidPayload('"model_version" must be 1-64 characters, no control characters')
    edge_model = payload.get("model_name")
    if edge_model is not None and (
        not isinstance(edge_model, str) or not LABEL_TEXT.fullmatch(edge_model)
    ):
        raise InvalidPayload('"model_name" must be 1-64 characters, no control characters')
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
        raise InvalidPayload(f'"{key}" must be a finite number')
    return stored_number(value)


def _detections(raw: Any, names: tuple[str, ...] | list[str] | None) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or len(raw) > 1000:
        raise InvalidPayload('"detections" must be a list of at most 1000 boxes')
    out = []
    for i, d in enumerate(raw):
        if not isinstance(d, dict):
            raise InvalidPayload(f"detections[{i}] must be an object")
        box, cls, conf = d.get("box"), d.get("class"), d.get("confidence")
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(map(is_finite_number, box))
            or box[2] < box[0]
            or box[3] < box[1]
        ):
            raise InvalidPayload(
                f"detections[{i}].box must be [x1, y1, x2, y2] with x1<=x2, y1<=y2"
            )
        if isinstance(cls, bool) or not isinstance(cls, int) or cls < 0:
            raise InvalidPayload(f"detections[{i}].class must be a class index (integer >= 0)")
        if names and cls >= len(names):
            raise InvalidPayload(
                f"detections[{i}].class {cls} is not one of the {len(names)} classes"
            )
        if not is_finite_number(conf) or not 0 <= conf <= 1:
            raise InvalidPayload(f"detections[{i}].confidence must be within [0, 1]")
        name = d.get("name")
        if name is not None and (not isinstance(name, str) or not LABEL_TEXT.fullmatch(name)):
            raise InvalidPayload(
                f"detections[{i}].name must be 1-64 characters, no control characters"
            )
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

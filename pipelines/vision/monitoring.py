"""Image drift: quality and output features of served images against the champion's training
images, through the same drift engine and the same `drift_results` table as tabular data.

The reference is the champion's own training images (the originals at its training snapshot):
their quality features (``images.image_features``) and the champion's outputs on them
(detections per image, mean relative box area, mean confidence, class of the best box). It is
built once per champion version and cached under ``<data_dir>/cache``. The current window is
the last ``window_size`` served images of the vision model (API and edge), whose features were
stored when they were logged. Results are stored with ``modality = 'image'``, so the tabular
loop's "latest check" never mistakes an image check for its own.
"""

from __future__ import annotations

import logging
import pickle
import time
from typing import Any

import numpy as np

from pipelines.drift import DriftPolicy, ReferenceProfile, build_reference_profile, check_drift
from pipelines.drift.reference import Role
from pipelines.loop.monitoring import _PER_COLUMN
from pipelines.models.registry import CHAMPION, Registry
from pipelines.settings import Settings
from pipelines.store import Store, new_id, utcnow
from pipelines.vision.image_log import NO_OBJECT
from pipelines.vision.images import FEATURE_COLUMNS, image_features
from pipelines.vision.model import VisionModel, load_vision_version
from pipelines.vision.retrain import load_stored_path

logger = logging.getLogger(__name__)

OUTPUT_NUMERIC = ("n_detections", "mean_box_area", "mean_confidence")
OUTPUT_CLASS = "top_class"
NUMERIC = (*FEATURE_COLUMNS, *OUTPUT_NUMERIC)
ROLES: dict[str, Role] = {name: "prediction" for name in (*OUTPUT_NUMERIC, OUTPUT_CLASS)}
"""The model's outputs: checked and reported like the inputs, but the drift share and the
dataset verdict count the image quality features alone (the drift engine's roles). A
detector that finds fewer objects is a symptom to report, not an input that moved."""
MAX_REFERENCE_IMAGES = 2000
"""Training images profiled at most (evenly spaced): enough for every test's power."""


def reference_frame(settings: Settings, store: Store, model: VisionModel) -> dict[str, np.ndarray]:
    """Features of the champion's original training images and its outputs on them."""
    _, rows = store.vision_training_set(model.name, model.task, model.snapshot_id)
    originals = [r for r in rows if r["split"] != "human"]
    if len(originals) > MAX_REFERENCE_IMAGES:
        step = len(originals) / MAX_REFERENCE_IMAGES
        originals = [originals[int(i * step)] for i in range(MAX_REFERENCE_IMAGES)]
    columns: dict[str, list[Any]] = {name: [] for name in (*NUMERIC, OUTPUT_CLASS)}
    for row in originals:
        pixels = load_stored_path(settings.images_dir / row["image_ref"])
        for name, value in image_features(pixels).items():
            columns[name].append(value)
        result = model.predictor.predict(pixels, conf=settings.vision_conf)
        for name, value in output_features(result, pixels.shape[1], pixels.shape[0]).items():
            columns[name].append(value)
    return feature_arrays(columns)


def output_features(result: Any, width: int, height: int) -> dict[str, Any]:
    """The output features `image_log.output_features` stores, from an ImagePrediction."""
    if result.task == "classify":
        top = result.top_class
        return {
            "n_detections": np.nan,
            "mean_box_area": np.nan,
            "mean_confidence": result.confidence,
            OUTPUT_CLASS: result.names[top] if top is not None else NO_OBJECT,
        }
    boxes = result.detections
    area = max(width * height, 1)
    return {
        "n_detections": float(len(boxes)),
        "mean_box_area": float(
            np.mean([(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]) / area for d in boxes])
        )
        if boxes
        else np.nan,
        "mean_confidence": float(np.mean([d.confidence for d in boxes])) if boxes else np.nan,
        OUTPUT_CLASS: boxes[0].name if boxes else NO_OBJECT,
    }


def feature_arrays(columns: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    out = {
        name: np.array([np.nan if v is None else v for v in columns[name]], dtype=np.float64)
        for name in NUMERIC
    }
    out[OUTPUT_CLASS] = np.array(
        [NO_OBJECT if v is None else str(v) for v in columns[OUTPUT_CLASS]], dtype=object
    )
    return out


def window_arrays(table: Any) -> dict[str, np.ndarray]:
    """The columns the check compares, from `Store.image_feature_window`'s table."""
    return feature_arrays(
        {name: table.column(name).to_pylist() for name in (*NUMERIC, OUTPUT_CLASS)}
    )


def reference_profile(settings: Settings, store: Store, model: VisionModel) -> ReferenceProfile:
    """The champion's reference profile, built once per version (cached on disk)."""
    cache = settings.reference_cache(model.name, model.version)
    if cache.exists():
        cached: ReferenceProfile = pickle.loads(cache.read_bytes())
        if all(cached.roles.get(name) == role for name, role in ROLES.items()):
            return cached
        # else: built before the outputs had their role; rebuilt below
    started = time.perf_counter()
    profile = build_reference_profile(
        reference_frame(settings, store, model),
        numeric=NUMERIC,
        categorical=[OUTPUT_CLASS],
        roles=ROLES,
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(profile))
    tmp.replace(cache)
    logger.info(
        "image reference profile for %s v%s: %d images (%.2f s)",
        model.name,
        model.version,
        profile.n_rows,
        time.perf_counter() - started,
    )
    return profile


def check(
    settings: Settings,
    store: Store,
    registry: Registry | None = None,
    *,
    model: VisionModel | None = None,
    window_size: int | None = None,
    min_samples: int | None = None,
    trigger: str = "manual",
    save: bool = True,
) -> dict[str, Any]:
    """Compare the last served images with the vision champion's training images; store the
    per-column results (``modality = 'image'``) and return the summary.

    The worker calls this beside the tabular check; without a vision champion it returns
    ``status: "no_model"`` rather than failing.
    """
    started = time.perf_counter()
    if model is None:
        registry = registry or Registry.vision_from_settings(settings)
        version = registry.alias_version(CHAMPION)
        if version is None:
            return {"status": "no_model", "model_name": settings.vision_model_name}
        model = load_vision_version(registry, version, settings.vision_cache_dir)
    policy = DriftPolicy(
        alpha=settings.drift_alpha,
        correction=settings.drift_correction,  # type: ignore[arg-type]
        min_samples=settings.min_samples if min_samples is None else min_samples,
        drift_share_threshold=settings.drift_share_threshold,
    )
    table = store.image_feature_window(model.name, limit=window_size or settings.window_size)
    n = table.num_rows
    summary: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if n < policy.min_samples:
        return {**summary, "status": "insufficient_data", "n_current": n}
    profile = reference_profile(settings, store, model)
    current = window_arrays(table)
    report = check_drift(profile, current, policy)
    ts = table.column("ts").to_pylist()
    run = {
        "run_id": new_id(),
        "ts": utcnow(),
        "model_version": model.version,
        "window_start": min(ts),
        "window_end": max(ts),
        "dataset_drift": report.dataset_drift,
        "drift_share": report.drift_share,
        "method": report.method,
        "trigger": trigger,
        "modality": "image",
    }
    if save:
        store.add_drift_results(
            [{**run, **{k: r[k] for k in _PER_COLUMN}} for r in report.to_records()]
        )
    return {
        **summary,
        **report.summary(),
        "run_id": run["run_id"],
        "n_current": n,
        "drifted_features": report.drifted_features(),
        "drifted_outputs": report.drifted_outputs(),
        "window_start": run["window_start"],
        "window_end": run["window_end"],
        "seconds": round(time.perf_counter() - started, 3),
    }

"""Retraining the vision model: the same run, lock and audit trail as the tabular loop.

A run reads every labeled image of one store snapshot (the original training images plus the
people's reviewed labels on served images), exports them as a YOLO dataset, fine-tunes the
champion's weights on it (the user's weights, or a fresh architecture, when there is no
champion), registers the weights and their ONNX export with the snapshot, and gates: champion
and challenger are scored on the same two held-out sets,

* ``fixed``: the original images of the ``val`` split, never trained on;
* ``recent``: the human-labeled served images that a stable hash of their id holds out
  (``training.heldout_mask``; the same image stays held out in every later run),

with mAP50-95 (detection) or top-1 (classification) as the primary metric and per-class recall
for the "no class drops" rule, through ``promotion_gate.gate_sets``. The run's states are
``retraining_events`` rows and it holds ``retraining_control``'s lock, so a vision and a
tabular retrain never run at once. ``retraining_control.trigger(..., vision=True)`` starts this
module in the background (``python -m pipelines.vision.retrain``); ``driftlab retrain
--vision`` (``make retrain-vision``) runs it in the foreground, and ``driftlab train --vision``
(``make train-vision``) bootstraps the first champion on the demo digits (`bootstrap`).

One run, start to finish (its data, its scoring, its gate, its command line): longer than most
modules, and kept whole so that a reader follows a run in one file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.loop import retraining_control, retraining_runs
from pipelines.loop.promotion_gate import FIXED, RECENT
from pipelines.loop.retraining_policy import RetrainPolicy
from pipelines.models.registry import CHALLENGER, CHAMPION, Registry
from pipelines.models.training import heldout_mask
from pipelines.settings import Settings, get_settings
from pipelines.store import Store, new_id
from pipelines.vision import data as vdata
from pipelines.vision import datasets, yolo
from pipelines.vision.images import store_image
from pipelines.vision.model import load_vision_version
from pipelines.vision.offline import prepare_offline
from pipelines.vision.predictor import Predictor

logger = logging.getLogger(__name__)

RECENT_SHARE = 0.2
"""Share of human-labeled images held out to judge both models on recent traffic."""
MATCH_IOU = 0.5
"""A predicted box finds its object at this overlap (for per-class recall)."""

# The demo's first model, trained from scratch: 1,500 canvases (or digits) at the model's input
# side, 15 epochs of 32 images. On 2 CPU cores at 128 px the detector reaches mAP50 ≈ 0.9 and
# mAP50-95 ≈ 0.7 on held-out canvases in about ten minutes (`benchmarks/README.md`, vision).
DEMO_TRAIN, DEMO_VAL, DEMO_EPOCHS, DEMO_BATCH = 1500, 200, 15, 32


def prepare(settings: Settings, runs_dir: Path | None = None) -> Path:
    """Ultralytics offline, in our folders: the configured YOLO dir (or one the environment
    already chose, as `process_env` passes to child processes)."""
    config = settings.yolo_config_dir_override
    if config is None and not os.environ.get("YOLO_CONFIG_DIR"):
        config = settings.yolo_config_dir
    return prepare_offline(
        config,
        runs_dir=runs_dir or settings.runs_dir / "vision",
        datasets_dir=settings.data_dir / "datasets",
    )


# -- the training set -----------------------------------------------------------------------


def ingest_items(
    store: Store,
    settings: Settings,
    items: Sequence[vdata.DetectionItem | vdata.ClassificationItem],
    *,
    split: str,
    task: str,
    names: Sequence[str],
    source: str = "demo",
) -> int:
    """Store labeled images (content-addressed) and record them as original training data.

    Returns the snapshot id of the commit.
    """
    import cv2

    rows = []
    for item in items:
        image = item.image if isinstance(item.image, np.ndarray) else load_stored_path(item.image)
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError("could not encode an image as PNG")
        stored = store_image(png.tobytes(), settings.images_dir, ".png")
        if isinstance(item, vdata.DetectionItem):
            label = boxes_json(item.boxes)
        else:
            label = names[item.label]
        rows.append(
            {
                "record_id": f"{source}:{split}:{item.key}" if item.key else None,
                "image_ref": stored.ref,
                "task": task,
                "split": split,
                "label": label,
                "source": source,
                "width": image.shape[1],
                "height": image.shape[0],
            }
        )
    _, snapshot = store.ingest_images(rows)
    return snapshot


def load_stored_path(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def boxes_json(boxes: Sequence[vdata.Box]) -> str:
    """Boxes as label text: the same JSON a person's box label is stored as."""
    return json.dumps([{"class": b.cls, "box": [b.x1, b.y1, b.x2, b.y2]} for b in boxes])


def parse_boxes(text: str) -> tuple[vdata.Box, ...]:
    return tuple(
        vdata.Box(int(b["class"]), *[float(v) for v in b["box"]]) for b in json.loads(text)
    )


def seed_demo(
    store: Store,
    settings: Settings,
    *,
    task: str | None = None,
    n_train: int = 40,
    n_val: int = 12,
    size: int = 128,
    seed: int = 0,
) -> int:
    """The demo's original training images (handwritten digits): train and val splits."""
    task = task or settings.vision_task
    if task == "detect":
        train: list[Any] = vdata.make_detection_set(n_train, split="train", size=size, seed=seed)
        val: list[Any] = vdata.make_detection_set(n_val, split="val", size=size, seed=seed)
    else:
        train = vdata.make_classification_set(n_train, split="train", size=size, seed=seed)
        val = vdata.make_classification_set(n_val, split="val", size=size, seed=seed)
    ingest_items(store, settings, train, split="train", task=task, names=vdata.DIGIT_NAMES)
    return ingest_items(store, settings, val, split="val", task=task, names=vdata.DIGIT_NAMES)


def bootstrap(
    settings: Settings,
    store: Store,
    registry: Registry | None = None,
    *,
    task: str | None = None,
    epochs: int | None = None,
    imgsz: int | None = None,
    n_train: int = DEMO_TRAIN,
    n_val: int = DEMO_VAL,
    **train_overrides: Any,
) -> dict[str, Any]:
    """A first vision champion on the demo digits (`driftlab train --vision`,
    `make train-vision`): seed the demo images unless original images of the task are in the
    store already, train from scratch (or `vision_weights`), register, promote.

    With a champion already there it does nothing and says so: the next model comes from a
    retrain, which fine-tunes and gates, never from a second bootstrap that would skip the gate.
    """
    registry = registry or Registry.vision_from_settings(settings)
    task = task or settings.vision_task
    # A run without a champion trains the configured task: make it this one.
    settings = settings.model_copy(update={"vision_task": task})
    champion = registry.alias_version(CHAMPION)
    if champion is not None:
        return {"status": "exists", "model_name": registry.model_name, "champion": champion}
    imgsz = imgsz or settings.vision_imgsz
    _, rows = store.vision_training_set(registry.model_name, task)
    seeded = 0
    if not any(r["split"] == "train" for r in rows):
        # Canvases at the model's input side: no resize between the data and the model.
        seed_demo(store, settings, task=task, n_train=n_train, n_val=n_val, size=imgsz)
        seeded = n_train + n_val
    final = run(
        settings,
        store,
        registry,
        trigger="bootstrap",
        who="bootstrap",
        reasons=["no vision champion yet: first model on the demo digits"],
        epochs=epochs or DEMO_EPOCHS,
        imgsz=imgsz,
        **{"batch": DEMO_BATCH, **train_overrides},
    )
    return {**final, "seeded_images": seeded}


@dataclasses.dataclass
class TrainingSet:
    """The labeled images of a snapshot, sorted into what trains and what judges."""

    snapshot_id: int
    task: str
    names: tuple[str, ...]
    train: list[Any]
    fixed: list[Any]
    recent: list[Any]

    def counts(self) -> dict[str, int]:
        return {"train": len(self.train), FIXED: len(self.fixed), RECENT: len(self.recent)}


def training_set(
    store: Store,
    settings: Settings,
    *,
    task: str,
    names: Sequence[str],
    snapshot_id: int | None = None,
) -> TrainingSet:
    """Read the original images and the reviewed labels of a snapshot back as dataset items
    (images as paths into the image store)."""
    snap, rows = store.vision_training_set(settings.vision_model_name, task, snapshot_id)
    human = [r for r in rows if r["split"] == "human"]
    held = heldout_mask([r["record_id"] for r in human], RECENT_SHARE)
    out = TrainingSet(snap, task, tuple(names), [], [], [])
    for row in rows:
        if row["split"] != "human":
            item = _item(row, settings, task, names)
            (out.fixed if row["split"] in ("val", "test") else out.train).append(item)
    for row, is_held in zip(human, held, strict=True):
        (out.recent if is_held else out.train).append(_item(row, settings, task, names))
    return out


def _item(row: dict[str, Any], settings: Settings, task: str, names: Sequence[str]) -> Any:
    path = settings.images_dir / row["image_ref"]
    key = row["record_id"].replace(":", "-")[:120]
    if task == "detect":
        return vdata.DetectionItem(path, parse_boxes(row["label"]), key)
    return vdata.ClassificationItem(path, list(names).index(row["label"]), key)


def export(
    items_by_split: dict[str, list[Any]], root: Path, task: str, names: Sequence[str]
) -> Path:
    """A YOLO dataset folder: ``data.yaml`` (detection) or the root (classification)."""
    if root.exists():
        shutil.rmtree(root)
    if task == "detect":
        return datasets.export_detection_dataset(items_by_split, root, names)
    return datasets.export_classification_dataset(items_by_split, root, names)


# -- scoring --------------------------------------------------------------------------------


def evaluate(
    weights: Path,
    items: list[Any],
    *,
    task: str,
    names: Sequence[str],
    workdir: Path,
    imgsz: int,
    device: str = "cpu",
) -> dict[str, float]:
    """The gate's figures of one model on one held-out set: the primary metric (mAP50-95 by
    Ultralytics' validator, or top-1), per-class recall (a box found at IoU ≥ 0.5, or the
    class predicted) and `n`."""
    if not items:
        return {"n": 0.0}
    out: dict[str, float] = {"n": float(len(items))}
    predictor = Predictor.from_weights(weights, imgsz=imgsz, device=device)
    found = np.zeros(len(names))
    support = np.zeros(len(names))
    if task == "detect":
        data_yaml = export({"train": items, "val": items}, workdir / "dataset", task, names)
        metrics = yolo.validate(
            weights, data_yaml, workdir / "runs", imgsz=imgsz, device=device, name="val"
        )
        out["map50_95"] = metrics.get("map50_95", 0.0)
        out["map50"] = metrics.get("map50", 0.0)
        for item in items:
            result = predictor.predict(load_stored_path(item.image))
            for box in item.boxes:
                support[box.cls] += 1
                if any(
                    d.cls == box.cls
                    and yolo.box_iou(d.box, (box.x1, box.y1, box.x2, box.y2)) >= MATCH_IOU
                    for d in result.detections
                ):
                    found[box.cls] += 1
    else:
        right = 0
        for item in items:
            result = predictor.predict(load_stored_path(item.image))
            support[item.label] += 1
            if result.top_class == item.label:
                found[item.label] += 1
                right += 1
        out["top1"] = right / len(items)
    for i, name in enumerate(names):
        if support[i]:
            out[f"recall_{name}"] = float(found[i] / support[i])
    return out


def int8_export(
    onnx_file: Path,
    train: Sequence[Any],
    held_out: Sequence[Any],
    min_agreement: float,
    workdir: Path,
    *,
    calibration_images: int = 32,
) -> tuple[Path | None, dict[str, float]]:
    """The int8 export calibrated on training images, and whether it may be served: it must
    reproduce `min_agreement` of the float export's answers on the held-out images.

    Returns the file (None when it fell short) and the figures, logged with the version.
    """
    calibration = [load_stored_path(i.image) for i in list(train)[:calibration_images]]
    int8_file = yolo.quantize_onnx(onnx_file, calibration, workdir / "model-int8.onnx")
    images = [load_stored_path(i.image) for i in held_out]
    figures = yolo.agreement(Predictor.from_onnx(onnx_file), Predictor.from_onnx(int8_file), images)
    served = figures["matched"] >= min_agreement
    if not served:
        logger.warning(
            "int8 export reproduces %.0f%% of the float export's answers (< %.0f%%): not served",
            100 * figures["matched"],
            100 * min_agreement,
        )
    metrics = {f"int8_{k}": v for k, v in figures.items()} | {"int8_served": float(served)}
    return (int8_file if served else None), metrics


# -- the run --------------------------------------------------------------------------------


def run(
    settings: Settings,
    store: Store,
    registry: Registry | None = None,
    *,
    trigger: str = "manual",
    who: str = "driftlab",
    reasons: list[str] | None = None,
    event_id: str | None = None,
    epochs: int | None = None,
    imgsz: int | None = None,
    promote: bool = True,
    hold_lock: bool = True,
    policy: RetrainPolicy | None = None,
    **train_overrides: Any,
) -> dict[str, Any]:
    """One vision retraining run, start to finish; returns its final event (also stored).

    Args:
        epochs: Fine-tuning epochs (default ``Settings.vision_epochs``).
        imgsz: Input side (default ``Settings.vision_imgsz``).
        hold_lock: Take the retrain lock; False when the caller already holds it.
        policy: Gate thresholds (default from the settings); its primary metric is replaced
            by the task's (mAP50-95 or top-1).
        **train_overrides: Further Ultralytics train arguments (``fliplr=0.0``, ``batch``...).

    Raises:
        RetrainBusy: Another run holds the lock (recorded as `skipped`).
    """
    registry = registry or Registry.vision_from_settings(settings)
    event_id = event_id or new_id()
    base = {
        "event_id": event_id,
        "trigger": trigger,
        "who": who,
        "reasons": reasons or [],
        "model_name": registry.model_name,
    }
    return retraining_runs.recorded(
        settings,
        store,
        registry,
        base=base,
        hold_lock=hold_lock,
        body=lambda run: _fine_tune_and_gate(
            settings,
            store,
            registry,
            run=run,
            epochs=epochs or settings.vision_epochs,
            imgsz=imgsz or settings.vision_imgsz,
            promote=promote,
            policy=policy,
            overrides=train_overrides,
        ),
    )


def _fine_tune_and_gate(
    settings: Settings,
    store: Store,
    registry: Registry,
    *,
    run: dict[str, Any],
    epochs: int,
    imgsz: int,
    promote: bool,
    policy: RetrainPolicy | None,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    champion_version, snapshot = run["champion_version"], run["snapshot_id"]
    workdir = settings.runs_dir / "vision" / run["event_id"]
    prepare(settings, workdir)
    cache = settings.vision_cache_dir
    champion = load_vision_version(registry, champion_version, cache) if champion_version else None
    task = champion.task if champion else settings.vision_task
    names = champion.names if champion else vdata.DIGIT_NAMES
    data = training_set(store, settings, task=task, names=names, snapshot_id=snapshot)
    if not data.train or not data.fixed:
        raise ValueError(
            f"need original training images of both splits (train, val) for {task!r}; "
            f"found {data.counts()}: ingest labeled images first"
        )
    dataset = export({"train": data.train, "val": data.fixed}, workdir / "dataset", task, names)
    start_from = champion.weights if champion else settings.vision_weights
    device = yolo.resolve_device(settings.vision_device)
    result = yolo.train(
        dataset,
        workdir / "runs",
        task=task,  # type: ignore[arg-type]
        weights=start_from,
        architecture=settings.vision_architecture,
        epochs=epochs,
        imgsz=imgsz,
        name="train",
        device=device,
        **{"fliplr": 0.5 if settings.vision_flip else 0.0, **overrides},
    )
    onnx_file = yolo.export_onnx(result.weights, imgsz=imgsz, dest=workdir / "model.onnx")
    int8_file = None
    if settings.vision_int8:
        int8_file, int8_metrics = int8_export(
            onnx_file, data.train, data.fixed, settings.vision_int8_min_agreement, workdir
        )
        result.metrics.update(int8_metrics)
    version = registry.log_vision_model(
        weights=result.weights,
        onnx_file=onnx_file,
        int8_file=int8_file,
        task=task,
        names=list(names),
        imgsz=imgsz,
        metrics=result.metrics,
        params={
            "epochs": epochs,
            "imgsz": imgsz,
            "architecture": settings.vision_architecture,
            "started_from": f"v{champion_version}" if champion else str(start_from),
            **overrides,
        },
        snapshot_id=snapshot,
        tags={
            "retrain_event": run["event_id"],
            "trigger": run["trigger"],
            **{f"n_{k}": str(v) for k, v in data.counts().items()},
        },
    )
    registry.set_alias(CHALLENGER, version)
    sets = {FIXED: data.fixed, RECENT: data.recent}

    def score(weights: Path, who: str) -> dict[str, dict[str, float]]:
        return {
            name: evaluate(
                weights,
                items,
                task=task,
                names=names,
                workdir=workdir / f"eval-{who}-{name}",
                imgsz=imgsz,
                device=device,
            )
            for name, items in sets.items()
        }

    scores = {"challenger": score(result.weights, "challenger")}
    if champion is not None:
        scores["champion"] = score(champion.weights, "champion")
    gate_policy = dataclasses.replace(
        policy or RetrainPolicy.from_settings(settings),
        primary_metric=yolo.PRIMARY_METRIC[task],  # type: ignore[index]
    )
    status, decision = retraining_runs.gate_and_promote(
        store, registry, run, version, scores, gate_policy, promote=promote
    )
    return {
        "status": status,
        "candidate_version": version,
        "metrics": {
            **scores,
            "training": result.metrics,
            "counts": data.counts(),
            "primary_metric": gate_policy.primary_metric,
        },
        "decision": decision,
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.vision.retrain`: what `retraining_control.trigger(vision=True)`
    starts."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.vision.retrain")
    parser.add_argument("--event-id", default=None)
    parser.add_argument("--trigger", default="manual")
    parser.add_argument("--who", default="cli")
    parser.add_argument("--reasons", default="[]", help="JSON list of reasons")
    parser.add_argument("--lock-fd", type=int, default=None, help="a retrain lock already held")
    parser.add_argument("--lock-lease", default=None, help="a retrain lease already held")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--imgsz", type=int, default=None)
    parser.add_argument("--no-promote", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    held = retraining_control.adopt(settings, fd=args.lock_fd, lease=args.lock_lease)
    store = Store.open(settings)
    try:
        final = run(
            settings,
            store,
            trigger=args.trigger,
            who=args.who,
            reasons=json.loads(args.reasons),
            event_id=args.event_id,
            epochs=args.epochs,
            imgsz=args.imgsz,
            promote=not args.no_promote,
            hold_lock=held is None,
        )
    finally:
        if held is not None:
            held.release()
        store.close()
    sys.stdout.write(json.dumps(final, default=str, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

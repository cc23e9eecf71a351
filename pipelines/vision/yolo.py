"""YOLO models offline: build, train or fine-tune, validate, export to ONNX (float and int8).

Models are built from Ultralytics' architecture files (``yolo11n.yaml``, ``yolo11n-cls.yaml``)
with random weights, because ``YOLO("yolo11n.pt")`` downloads; a user who has pretrained weights
passes their path. A finished model is fine-tuned with ``YOLO(best).train(data=...)``
(``resume=True`` is only for an interrupted run). Every run writes under the runs dir it is
given, never in the working directory. Serving them is `pipelines.vision.predictor`'s.

Images are ``H×W×3`` uint8 RGB arrays, as everywhere in ``pipelines.vision``.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.vision.offline import prepare_offline
from pipelines.vision.predictor import TASKS, Predictor, Task

logger = logging.getLogger(__name__)

# The metric a gate compares, per task: COCO mAP@[.50:.95] for boxes, top-1 for classes.
PRIMARY_METRIC: dict[Task, str] = {"detect": "map50_95", "classify": "top1"}

_METRIC_KEYS = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "map50",
    "metrics/mAP50-95(B)": "map50_95",
    "metrics/accuracy_top1": "top1",
    "metrics/accuracy_top5": "top5",
    "fitness": "fitness",
}


def _yolo_class() -> Any:
    prepare_offline()
    from ultralytics import YOLO

    return YOLO


def resolve_device(spec: str = "auto") -> str:
    """Ultralytics' device argument for `DRIFTLAB_VISION_DEVICE`: `auto` is the first CUDA
    device when torch sees one, else "cpu"; "cpu" and device indices ("0", "0,1") pass as they
    are."""
    if spec != "auto":
        return spec
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def architecture_file(task: Task, architecture: str = "yolo11n") -> str:
    """The Ultralytics model file for a task, e.g. ``yolo11n.yaml`` / ``yolo11n-cls.yaml``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return f"{architecture}.yaml" if task == "detect" else f"{architecture}-cls.yaml"


def build_model(task: Task, weights: Path | None = None, architecture: str = "yolo11n") -> Any:
    """An Ultralytics ``YOLO`` model: from ``weights`` when given, else freshly initialised.

    Args:
        task: "detect" or "classify".
        weights: A ``.pt`` file (the user's pretrained weights, or a champion's) to start from.
            Only trusted files: a ``.pt`` is a pickle and runs code when loaded.
        architecture: Model family and size when building from scratch ("yolo11n", "yolo11s"…).

    Returns:
        ``ultralytics.YOLO``.
    """
    if weights is not None:
        model = _load_weights(Path(weights))
        if model.task != task:
            raise ValueError(f"{weights} holds a {model.task!r} model, not {task!r}")
        return model
    return _yolo_class()(architecture_file(task, architecture), task=task)


@dataclass(frozen=True)
class TrainResult:
    """What a training run left behind.

    Attributes:
        weights: The best epoch's ``.pt`` (by Ultralytics' fitness on the val split).
        last: The last epoch's ``.pt``.
        run_dir: The run's folder under the runs dir (args, results.csv, weights/).
        metrics: The best weights' validation figures, named as :data:`PRIMARY_METRIC`
            ("map50_95", "map50", "precision", "recall" or "top1", "top5").
        seconds: Wall time of the run.
    """

    weights: Path
    last: Path
    run_dir: Path
    metrics: dict[str, float]
    seconds: float


def train(
    data: Path,
    runs_dir: Path,
    *,
    task: Task,
    weights: Path | None = None,
    architecture: str = "yolo11n",
    epochs: int = 10,
    imgsz: int = 64,
    batch: int = 16,
    name: str = "train",
    seed: int = 0,
    device: str = "cpu",
    workers: int = 0,
    **overrides: Any,
) -> TrainResult:
    """Train from scratch, or fine-tune from ``weights`` (a finished model's best ``.pt``).

    Args:
        data: The ``data.yaml`` of a detection dataset, or a classification dataset's root
            (as written by ``pipelines.vision.data``).
        runs_dir: Parent of the run folder (``<runs_dir>/<name>``, numbered if taken).
        task: "detect" or "classify".
        weights: Start from these weights; None: from the architecture, randomly initialised.
        architecture: Model family and size when starting from scratch.
        epochs: Passes over the training split.
        imgsz: Input side in pixels (a multiple of 32).
        batch: Images per step.
        name: Run folder name.
        seed: Seeds Ultralytics' RNGs (runs are deterministic on CPU).
        device: "cpu", or "0" for the first GPU.
        workers: Data-loader processes; 0 loads in the training process, which on a couple of
            shared cores is the fastest and leaves the other processes their CPU.
        **overrides: Further Ultralytics train arguments (``fliplr=0.0`` for digits, ``lr0``...).

    Returns:
        A TrainResult.
    """
    model = build_model(task, weights, architecture)
    args: dict[str, Any] = {
        "data": str(data),
        "epochs": epochs,
        "imgsz": imgsz,
        "batch": batch,
        "project": str(Path(runs_dir).expanduser().resolve()),
        "name": name,
        "seed": seed,
        "device": device,
        "workers": workers,
        "plots": False,
        # Ultralytics' AMP check downloads yolo11n.pt on a GPU; mixed precision buys nothing on CPU.
        "amp": False,
        "verbose": False,
        **overrides,
    }
    started = time.perf_counter()
    model.train(**args)
    seconds = time.perf_counter() - started
    trainer = model.trainer
    best, last = Path(trainer.best), Path(trainer.last)
    metrics = _named_metrics(trainer.metrics or {})
    logger.info("trained %s in %.1f s: %s", best, seconds, metrics)
    return TrainResult(
        best if best.exists() else last, last, Path(trainer.save_dir), metrics, seconds
    )


def validate(
    weights: Path,
    data: Path,
    runs_dir: Path,
    *,
    imgsz: int | None = None,
    split: str = "val",
    batch: int = 16,
    device: str = "cpu",
    name: str = "val",
) -> dict[str, float]:
    """Score weights on one split of a dataset: the figures a champion/challenger gate compares.

    Args:
        weights: A ``.pt`` file.
        data: ``data.yaml`` (detection) or dataset root (classification).
        runs_dir: Parent of the validation run's folder.
        imgsz: Input side; default: the side the weights were trained at.
        split: "val" or "test".
        batch: Images per step.
        device: "cpu" or a GPU index.
        name: Run folder name.

    Returns:
        ``map50_95``, ``map50``, ``precision``, ``recall`` (detection) or ``top1``, ``top5``
        (classification), plus ``fitness``.
    """
    model = _load_weights(Path(weights))
    args: dict[str, Any] = {
        "data": str(data),
        "split": split,
        "batch": batch,
        "device": device,
        "workers": 0,
        "plots": False,
        "verbose": False,
        "project": str(Path(runs_dir).expanduser().resolve()),
        "name": name,
    }
    if imgsz is not None:
        args["imgsz"] = imgsz
    result = model.val(**args)
    return _named_metrics(result.results_dict)


def export_onnx(weights: Path, *, imgsz: int | None = None, dest: Path | None = None) -> Path:
    """Export weights to ONNX (batch 1, fixed input size, opset chosen by Ultralytics).

    The graph is simplified with onnxslim when it is installed (Ultralytics would otherwise try
    to install it). The file carries Ultralytics' metadata (task, class names, input size),
    which :meth:`Predictor.from_onnx` reads, so it is self-describing.

    Args:
        weights: A ``.pt`` file.
        imgsz: Input side; default: the side the weights were trained at.
        dest: Where to put the ``.onnx``; default: next to the weights.

    Returns:
        The ``.onnx`` path.
    """
    import importlib.util

    model = _load_weights(Path(weights))
    args: dict[str, Any] = {
        "format": "onnx",
        "simplify": importlib.util.find_spec("onnxslim") is not None,
        "dynamic": False,
        "nms": False,
        "device": "cpu",
        "verbose": False,
    }
    if imgsz is not None:
        args["imgsz"] = imgsz
    produced = Path(model.export(**args))
    if dest is None or Path(dest).resolve() == produced.resolve():
        return produced
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    shutil.move(produced, dest)
    return Path(dest)


def quantize_onnx(onnx_file: Path, calibration: Sequence[np.ndarray], dest: Path) -> Path:
    """An int8 copy of an ONNX export: static QDQ quantization calibrated on real images.

    Weights are int8 per channel and activations uint8, with ranges from running the export on
    ``calibration`` images (the training set's, pre-processed exactly as :class:`Predictor`
    does). The head's last layers stay float: its decode puts box pixels (0 to S) and scores
    (0 to 1) in one tensor, and a single uint8 scale for both would turn every score into 0;
    the final 1x1 convolutions of the box and class branches stay float too, which keeps served
    confidences close to the float model's (the uncertainty band reads them). The int8 network
    runs faster than the float export (``python -m benchmarks --only vision`` times both) and
    reproduces most, not all, of its boxes: :func:`agreement` measures how many on any model,
    and a retrain serves the int8 export only when it reproduces enough of them.

    Args:
        onnx_file: An export from :func:`export_onnx`.
        calibration: RGB images; 16-64 are plenty.
        dest: The ``.onnx`` to write (it keeps the export's Ultralytics metadata).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ValueError("quantization needs calibration images")
    source = Predictor.from_onnx(onnx_file)
    batches = [source.preprocess(image)[0] for image in calibration]
    graph = onnx.load(str(onnx_file))
    input_name = graph.graph.input[0].name
    head = _head_prefix(graph)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    prepared = dest.with_name(dest.stem + "-prepared.onnx")

    class Images(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.left = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.left, None)
            return None if batch is None else {input_name: batch}

        def rewind(self) -> None:
            self.left = iter(batches)

    try:
        quant_pre_process(str(onnx_file), str(prepared), skip_symbolic_shape=True)
        nodes = [n.name for n in onnx.load(str(prepared)).graph.node]
        keep_float = [
            name
            for name in nodes
            if name.startswith(head)
            and (
                source.task == "classify"
                or not name.startswith((f"{head}cv2", f"{head}cv3"))
                or name.endswith(".2/Conv")
            )
        ]
        quantize_static(
            str(prepared),
            str(dest),
            Images(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=keep_float,
        )
    finally:
        prepared.unlink(missing_ok=True)
    quantized = onnx.load(str(dest))  # quantization drops the metadata Predictor reads
    have = {p.key for p in quantized.metadata_props}
    for prop in graph.metadata_props:
        if prop.key not in have:
            quantized.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(quantized, str(dest))
    return dest


def _head_prefix(graph: Any) -> str:
    """``/model.N/``: the module that produces the graph's output (the detect/classify head)."""
    output = graph.graph.output[0].name
    producer = next(n for n in graph.graph.node if output in n.output)
    parts = producer.name.split("/")
    if len(parts) < 3 or not parts[1].startswith("model."):
        raise ValueError(f"not an Ultralytics export: output made by {producer.name!r}")
    return f"/{parts[1]}/"


def agreement(
    reference: Predictor,
    other: Predictor,
    images: Sequence[np.ndarray],
    *,
    conf: float = 0.05,
    iou: float = 0.5,
) -> dict[str, float]:
    """How well ``other`` reproduces ``reference``'s answers on ``images``.

    Detection: the share of the reference's boxes (at ``conf``) with a same-class box at
    IoU >= ``iou`` in the other's answer. Classification: the share of images with the same
    top class. ``confidence_gap`` is the mean confidence difference over the matched ones.
    """
    matched, total, gaps = 0, 0, []
    for image in images:
        ours, theirs = reference.predict(image, conf=conf), other.predict(image, conf=conf)
        if reference.task == "classify":
            total += 1
            if ours.top_class == theirs.top_class:
                matched += 1
                gaps.append(abs((ours.confidence or 0.0) - (theirs.confidence or 0.0)))
            continue
        total += len(ours.detections)
        for det in ours.detections:
            twins = [
                d for d in theirs.detections if d.cls == det.cls and box_iou(d.box, det.box) >= iou
            ]
            if twins:
                matched += 1
                gaps.append(min(abs(d.confidence - det.confidence) for d in twins))
    return {
        "compared": float(total),
        "matched": matched / total if total else 1.0,
        "confidence_gap": float(np.mean(gaps)) if gaps else 0.0,
    }


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _load_weights(weights: Path) -> Any:
    """``YOLO(weights)`` for a task we support, whichever it is."""
    if not weights.is_file():
        raise FileNotFoundError(f"no weights file at {weights}")
    model = _yolo_class()(str(weights))
    if model.task not in TASKS:
        raise ValueError(f"{weights} holds a {model.task!r} model; only {TASKS} are supported")
    return model


def _named_metrics(raw: dict[str, Any]) -> dict[str, float]:
    return {_METRIC_KEYS[k]: float(v) for k, v in raw.items() if k in _METRIC_KEYS}

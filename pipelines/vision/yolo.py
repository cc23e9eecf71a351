"""YOLO models offline: build, train or fine-tune, validate, export to ONNX, predict two ways.

Models are built from Ultralytics' architecture files (``yolo11n.yaml``, ``yolo11n-cls.yaml``)
with random weights, because ``YOLO("yolo11n.pt")`` downloads; a user who has pretrained weights
passes their path. A finished model is fine-tuned with ``YOLO(best).train(data=...)``
(``resume=True`` is only for an interrupted run). Every run writes under the runs dir it is
given, never in the working directory.

:class:`Predictor` answers the same way whichever runtime it wraps: the PyTorch module or the
ONNX export in ONNX Runtime (several times faster on CPU). Both go through the same
pre-processing (letterbox to the square input for detection; shortest-side resize and centre
crop for classification, exactly Ultralytics' validation transforms) and the same post-processing
(confidence filter and per-class NMS in numpy), so only the network differs, which is what lets a
test hold the two to the same answers, and what makes the ONNX path need neither torch nor
Ultralytics at serving time.

Images are ``H×W×3`` uint8 RGB arrays, as everywhere in ``pipelines.vision``.
"""

from __future__ import annotations

import ast
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from pipelines.vision.offline import prepare_offline

logger = logging.getLogger(__name__)

Task = Literal["detect", "classify"]
Runtime = Literal["torch", "onnx"]
TASKS: tuple[Task, ...] = ("detect", "classify")

# The metric a gate compares, per task: COCO mAP@[.50:.95] for boxes, top-1 for classes.
PRIMARY_METRIC: dict[Task, str] = {"detect": "map50_95", "classify": "top1"}

# Ultralytics' letterbox grey and its prediction defaults.
PAD_VALUE = 114
DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.7
DEFAULT_MAX_DET = 300
MAX_NMS_CANDIDATES = 30_000
# Offsets boxes of different classes apart so one NMS pass never lets them suppress each other.
CLASS_OFFSET = 7680.0

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
    (0 to 1) in one tensor, and a single uint8 scale for both turned every score into 0; the
    final 1x1 convolutions of the box and class branches stay float too, which keeps served
    confidences within ~0.01 of the float model's (the uncertainty band reads them).
    Measured on YOLO11n, 2 threads: the network 1.3-1.8x faster than the float export; over
    30 held-out frames 89-95% of the float model's boxes reproduced (same class, IoU >= 0.5),
    mAP50 within 0.035 (``benchmarks/bench_vision.py`` times it; :func:`agreement`
    measures the second figure on any model).

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


# --- prediction -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    """One detected object.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the image given to the predictor.
        cls: Class index.
        name: Class name.
        confidence: The class score (0–1).
    """

    box: tuple[float, float, float, float]
    cls: int
    name: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": list(self.box),
            "class": self.cls,
            "name": self.name,
            "confidence": self.confidence,
        }


@dataclass(frozen=True)
class ImagePrediction:
    """A model's answer for one image; the same structure whichever runtime produced it.

    Attributes:
        task: "detect" or "classify".
        detections: The objects found, most confident first (detection; empty otherwise).
        probabilities: One per class, by class index (classification; empty otherwise).
        names: Class names by index.
        runtime: "torch" or "onnx".
        latency_ms: Pre-processing, network and post-processing time.
    """

    task: Task
    detections: tuple[Detection, ...] = ()
    probabilities: tuple[float, ...] = ()
    names: tuple[str, ...] = field(default=(), repr=False)
    runtime: Runtime = "onnx"
    latency_ms: float = 0.0

    @property
    def top_class(self) -> int | None:
        """The most likely class (classification), else None."""
        return int(np.argmax(self.probabilities)) if self.probabilities else None

    @property
    def confidence(self) -> float | None:
        """Top-1 probability (classification) or the best detection's score; None if nothing."""
        if self.probabilities:
            return float(max(self.probabilities))
        return self.detections[0].confidence if self.detections else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "runtime": self.runtime,
            "latency_ms": self.latency_ms,
        }
        if self.task == "detect":
            out["detections"] = [d.to_dict() for d in self.detections]
        else:
            top = self.top_class
            out["class"] = top
            out["name"] = self.names[top] if top is not None else None
            out["confidence"] = self.confidence
            out["probabilities"] = list(self.probabilities)
        return out


@dataclass(frozen=True)
class _Letterbox:
    """How an image was fitted into the square input, to map boxes back."""

    gain: float
    left: int
    top: int
    width: int
    height: int


class Predictor:
    """Runs a YOLO network on images, through PyTorch or ONNX Runtime, with one pre- and
    post-processing in numpy for both.

    Build it with :meth:`from_weights` (``.pt``, PyTorch), :meth:`from_onnx` (``.onnx``,
    ONNX Runtime) or :meth:`load` (by suffix).
    """

    def __init__(
        self,
        forward: Callable[[np.ndarray], np.ndarray],
        *,
        task: Task,
        names: Sequence[str],
        imgsz: int,
        runtime: Runtime,
        end2end: bool = False,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unsupported task {task!r}; expected one of {TASKS}")
        self.forward = forward
        self.task: Task = task
        self.names = tuple(names)
        self.imgsz = int(imgsz)
        self.runtime: Runtime = runtime
        self.end2end = end2end

    @classmethod
    def from_weights(
        cls, weights: Path, *, imgsz: int | None = None, threads: int | None = None
    ) -> Predictor:
        """The PyTorch path: the ``.pt`` model, fused (conv+batch-norm) and in eval mode.

        Args:
            weights: A ``.pt`` file (trusted: it is a pickle).
            imgsz: Input side; default: the side it was trained at.
            threads: If given, ``torch.set_num_threads`` (process-wide in PyTorch).
        """
        prepare_offline()
        import torch
        from ultralytics.nn.tasks import load_checkpoint

        if threads is not None:
            torch.set_num_threads(threads)
        module, ckpt = load_checkpoint(str(weights), device="cpu", fuse=True)
        task = module.task
        if task not in TASKS:
            raise ValueError(f"{weights} holds a {task!r} model; only {TASKS} are supported")
        size = imgsz or _as_side(ckpt.get("train_args", {}).get("imgsz", 640))

        def forward(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = module(torch.from_numpy(batch))
            if isinstance(out, list | tuple):
                out = out[0]
            return out.numpy()  # type: ignore[no-any-return]

        head = module.model[-1]
        return cls(
            forward,
            task=task,
            names=_names_list(module.names),
            imgsz=size,
            runtime="torch",
            end2end=bool(getattr(head, "end2end", False)),
        )

    @classmethod
    def from_onnx(cls, path: Path, *, threads: int | None = None) -> Predictor:
        """The ONNX Runtime path; task, class names and input size come from the file's metadata.

        Args:
            path: An ``.onnx`` file from :func:`export_onnx`.
            threads: Intra-op threads; default: ONNX Runtime's (one per physical core).
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        missing = {"task", "names", "imgsz"} - set(meta)
        if missing:
            raise ValueError(f"{path} lacks Ultralytics metadata {sorted(missing)}")
        input_name = session.get_inputs()[0].name
        task = meta["task"]
        if task not in TASKS:
            raise ValueError(f"{path} holds a {task!r} model; only {TASKS} are supported")

        def forward(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {input_name: batch})[0]  # type: ignore[no-any-return]

        return cls(
            forward,
            task=task,
            names=_names_list(ast.literal_eval(meta["names"])),
            imgsz=_as_side(ast.literal_eval(meta["imgsz"])),
            runtime="onnx",
            end2end=meta.get("end2end", "False") == "True",
        )

    @classmethod
    def load(cls, path: Path, *, threads: int | None = None) -> Predictor:
        """:meth:`from_onnx` for ``.onnx`` files, :meth:`from_weights` otherwise."""
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            return cls.from_onnx(path, threads=threads)
        return cls.from_weights(path, threads=threads)

    # -- the two halves shared by both runtimes --

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, _Letterbox | None]:
        """The network input ``(1, 3, S, S)`` float32 in 0–1, and how to map boxes back."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got {image.dtype} {image.shape}")
        if self.task == "classify":
            fitted, letterbox = _resize_center_crop(image, self.imgsz), None
        else:
            fitted, letterbox = _letterbox(image, self.imgsz)
        chw = np.ascontiguousarray(fitted.transpose(2, 0, 1)[None], dtype=np.float32)
        chw *= 1.0 / 255.0
        return chw, letterbox

    def raw(self, image: np.ndarray) -> np.ndarray:
        """The network's output for one image, before any post-processing."""
        return self.forward(self.preprocess(image)[0])

    def predict(
        self,
        image: np.ndarray,
        *,
        conf: float = DEFAULT_CONF,
        iou: float = DEFAULT_IOU,
        max_det: int = DEFAULT_MAX_DET,
    ) -> ImagePrediction:
        """Detections or class probabilities for one RGB image.

        Args:
            image: ``H×W×3`` uint8 RGB.
            conf: Detections scoring below this are dropped.
            iou: Overlap above which NMS keeps only the better of two same-class boxes.
            max_det: Most detections returned.
        """
        started = time.perf_counter()
        batch, letterbox = self.preprocess(image)
        out = self.forward(batch)
        if self.task == "classify":
            probabilities = tuple(float(p) for p in out[0])
            return ImagePrediction(
                "classify",
                probabilities=probabilities,
                names=self.names,
                runtime=self.runtime,
                latency_ms=(time.perf_counter() - started) * 1000,
            )
        assert letterbox is not None
        if self.end2end:
            rows = out[0]
            rows = rows[rows[:, 4] >= conf][:max_det]
            boxes, scores, classes = rows[:, :4], rows[:, 4], rows[:, 5].astype(np.int64)
        else:
            boxes, scores, classes = _decode(out[0], conf, iou, max_det)
        boxes = _unletterbox(boxes, letterbox)
        detections = tuple(
            Detection(
                (float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                int(c),
                self.names[int(c)] if int(c) < len(self.names) else str(int(c)),
                float(s),
            )
            for b, s, c in zip(boxes, scores, classes, strict=True)
        )
        return ImagePrediction(
            "detect",
            detections=detections,
            names=self.names,
            runtime=self.runtime,
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    def predict_many(self, images: Sequence[np.ndarray], **kwargs: Any) -> list[ImagePrediction]:
        """:meth:`predict` for each image (the exported graph takes one image at a time)."""
        return [self.predict(image, **kwargs) for image in images]


def _names_list(names: dict[int, str] | Sequence[str]) -> list[str]:
    if isinstance(names, dict):
        return [str(names[i]) for i in range(len(names))]
    return [str(n) for n in names]


def _as_side(imgsz: Any) -> int:
    if isinstance(imgsz, list | tuple):
        if len(set(imgsz)) != 1:
            raise ValueError(f"only square inputs are supported, got {imgsz}")
        return int(imgsz[0])
    return int(imgsz)


def _letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, _Letterbox]:
    """Fit into ``size × size`` keeping the aspect ratio, grey padding split evenly (as
    Ultralytics' ``LetterBox(auto=False)``, which its ONNX predictions use)."""
    h, w = image.shape[:2]
    gain = min(size / h, size / w)
    new_w, new_h = round(w * gain), round(h * gain)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(
        image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    return padded, _Letterbox(gain, left, top, w, h)


def _unletterbox(boxes: np.ndarray, letterbox: _Letterbox) -> np.ndarray:
    out = boxes.astype(np.float64, copy=True)
    out[:, [0, 2]] = (out[:, [0, 2]] - letterbox.left) / letterbox.gain
    out[:, [1, 3]] = (out[:, [1, 3]] - letterbox.top) / letterbox.gain
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, letterbox.width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, letterbox.height)
    return out


def _resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Shortest side to ``size`` (Pillow bilinear), then the central square: Ultralytics'
    ``classify_transforms``, which its classification training validates with."""
    from PIL import Image

    h, w = image.shape[:2]
    if (h <= w and h == size) or (w <= h and w == size):
        resized = image
    else:
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(size * long / short)
        new_w, new_h = (new_long, size) if h <= w else (size, new_long)
        resized = np.asarray(
            Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
        )
    h, w = resized.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return resized[top : top + size, left : left + size]


def _decode(
    out: np.ndarray, conf: float, iou: float, max_det: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(4 + classes, anchors)`` → boxes xyxy, scores, classes after per-class NMS."""
    rows = out.T  # (anchors, 4 + classes)
    class_scores = rows[:, 4:]
    classes = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(rows)), classes]
    keep = scores > conf
    rows, scores, classes = rows[keep], scores[keep], classes[keep]
    if len(scores) > MAX_NMS_CANDIDATES:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS_CANDIDATES]
        rows, scores, classes = rows[top], scores[top], classes[top]
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kept = nms(boxes + classes[:, None] * CLASS_OFFSET, scores, iou)[:max_det]
    return boxes[kept], scores[kept], classes[kept]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression: indices kept, best score first (torchvision's rule:
    a box goes when its IoU with a kept one is above ``iou``)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


def thread_count() -> int:
    """Cores this process may use (what a benchmark compares both runtimes at)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

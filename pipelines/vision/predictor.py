"""YOLO predictions the same way whichever runtime: the PyTorch module or its ONNX export.

:class:`Predictor` wraps either: the ``.pt`` model (PyTorch) or the ONNX export in ONNX Runtime
(several times faster on CPU). Both go through the same pre-processing (letterbox to the square
input for detection; shortest-side resize and centre crop for classification, exactly
Ultralytics' validation transforms) and the same post-processing (confidence filter and
per-class NMS in numpy), so only the network differs, which is what lets a test hold the two to
the same answers, and what makes the ONNX path need neither torch nor Ultralytics at serving
time.

Images are ``H×W×3`` uint8 RGB arrays, as everywhere in ``pipelines.vision``.
"""

from __future__ import annotations

import ast
import logging
import os
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

# Ultralytics' letterbox grey and its prediction defaults.
PAD_VALUE = 114
DEFAULT_CONF = 0.25
DEFAULT_IOU = 0.7
DEFAULT_MAX_DET = 300
MAX_NMS_CANDIDATES = 30_000
# Offsets boxes of different classes apart so one NMS pass never lets them suppress each other.
CLASS_OFFSET = 7680.0


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
        cls,
        weights: Path,
        *,
        imgsz: int | None = None,
        threads: int | None = None,
        device: str = "cpu",
    ) -> Predictor:
        """The PyTorch path: the ``.pt`` model, fused (conv+batch-norm) and in eval mode.

        Args:
            weights: A ``.pt`` file (trusted: it is a pickle).
            imgsz: Input side; default: the side it was trained at.
            threads: If given, ``torch.set_num_threads`` (process-wide in PyTorch).
            device: "cpu", "auto" (a CUDA GPU if torch sees one) or a CUDA index ("0").
        """
        prepare_offline()
        import torch
        from ultralytics.nn.tasks import load_checkpoint

        from pipelines.vision.yolo import resolve_device

        if threads is not None:
            torch.set_num_threads(threads)
        index = resolve_device(device).split(",")[0]
        where = torch.device("cpu" if index == "cpu" else f"cuda:{index}")
        module, ckpt = load_checkpoint(str(weights), device=where, fuse=True)
        task = module.task
        if task not in TASKS:
            raise ValueError(f"{weights} holds a {task!r} model; only {TASKS} are supported")
        size = imgsz or _as_side(ckpt.get("train_args", {}).get("imgsz", 640))

        def forward(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                out = module(torch.from_numpy(batch).to(where))
            if isinstance(out, list | tuple):
                out = out[0]
            return out.cpu().numpy()  # type: ignore[no-any-return]

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
    def from_onnx(cls, path: Path, *, threads: int | None = None, device: str = "cpu") -> Predictor:
        """The ONNX Runtime path; task, class names and input size come from the file's metadata.

        Args:
            path: An ``.onnx`` file from :func:`export_onnx`.
            threads: Intra-op threads; default: ONNX Runtime's (one per physical core).
            device: "cpu", or "auto" / a CUDA index to run on CUDA when this ONNX Runtime has
                its CUDA provider (`onnxruntime-gpu`); else the CPU.
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers: list[Any] = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            index = 0 if device == "auto" else int(device.split(",")[0])
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        session = ort.InferenceSession(str(path), options, providers=providers)
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

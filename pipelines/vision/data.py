"""Demo images made from real handwriting, and the shifts a camera stream suffers.

There is no model hub and no dataset download here, so the demo data comes from the 1,797
handwritten digits that ship inside scikit-learn (``load_digits``, 8×8 scans of real pen strokes
by 43 writers). They are rendered as dark ink on slightly tinted paper with a little sensor noise:

* a **classification** set: one digit per image, upscaled;
* a **detection** set: one to a few digits at random sizes and places on a larger canvas, each
  with the tight box around its ink (what a careful labeler would draw), class = the digit.

Everything is deterministic for a given seed. The digits are split once, stratified by class and
with a fixed seed, into disjoint train / val / test pools, so a validation image never shows a
pen stroke the model trained on, whatever seed renders the canvases.

In memory an image is an ``H×W×3`` uint8 array in **RGB** order (Pillow's, not OpenCV's BGR);
an item may instead point at an image file (``Path``), which is how stored uploads come back for
retraining. `pipelines.vision.datasets` writes them as the folder layouts Ultralytics trains on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
DIGIT_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))

# The digit pools never change with the rendering seed: train/val/test stay disjoint.
SPLIT_SEED = 20_240_601
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}

# An ink pixel, for the tight box: a quarter of full pen pressure (load_digits' 16 levels).
INK_THRESHOLD = 0.25
# A box cut by the frame edge is kept while this share of its area is still in view.
MIN_VISIBLE = 0.4


@dataclass(frozen=True)
class Box:
    """One labelled object: class index and corners in pixels (x2, y2 exclusive edges)."""

    cls: int
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    def to_yolo(
        self, image_width: int, image_height: int
    ) -> tuple[int, float, float, float, float]:
        """``(class, cx, cy, w, h)`` normalised to the image, as a YOLO label line holds it."""
        return (
            self.cls,
            (self.x1 + self.x2) / 2 / image_width,
            (self.y1 + self.y2) / 2 / image_height,
            self.width / image_width,
            self.height / image_height,
        )

    @classmethod
    def from_yolo(cls, values: Sequence[float], image_width: int, image_height: int) -> Box:
        """The inverse of :meth:`to_yolo`."""
        c, cx, cy, w, h = values
        return cls(
            int(c),
            (cx - w / 2) * image_width,
            (cy - h / 2) * image_height,
            (cx + w / 2) * image_width,
            (cy + h / 2) * image_height,
        )


@dataclass(frozen=True)
class ClassificationItem:
    """An image and its class index; ``key`` names its file on export (default: its position)."""

    image: np.ndarray | Path
    label: int
    key: str = ""


@dataclass(frozen=True)
class DetectionItem:
    """An image and its boxes (none: a background image); ``key`` names its files on export."""

    image: np.ndarray | Path
    boxes: tuple[Box, ...]
    key: str = ""


# --- the digits -------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ink = (bunch.images / 16.0).astype(np.float32)  # 0 = blank paper, 1 = full pen pressure
    ink.setflags(write=False)
    labels = bunch.target.astype(np.int64)
    labels.setflags(write=False)
    return ink, labels


def digit_split(split: Split) -> np.ndarray:
    """Indices into ``load_digits`` of one pool: 70/15/15 %, stratified, fixed forever."""
    if split not in SPLIT_FRACTIONS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    _, labels = _digits()
    rng = np.random.default_rng(SPLIT_SEED)
    chosen = []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        n_train = round(len(members) * SPLIT_FRACTIONS["train"])
        n_val = round(len(members) * SPLIT_FRACTIONS["val"])
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val)}
        start, stop = bounds.get(split, (n_train + n_val, len(members)))
        chosen.append(members[start:stop])
    return np.sort(np.concatenate(chosen))


def _paper_and_ink(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Colours of one sheet: off-white paper with a tint, blue-black to black ink."""
    paper = rng.uniform(205, 245) + rng.uniform(-8, 8, size=3)
    ink = rng.uniform(15, 70) + np.array([0.0, 0.0, rng.uniform(0, 50)])
    return paper.astype(np.float32), ink.astype(np.float32)


def _upscale(ink: np.ndarray, width: int, height: int) -> np.ndarray:
    """An 8×8 ink map at ``width × height``: cubic, so strokes come out smooth, not blocky."""
    return np.clip(cv2.resize(ink, (width, height), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _finish(canvas: np.ndarray, rng: np.random.Generator, noise: float = 2.0) -> np.ndarray:
    canvas = canvas + rng.normal(0.0, noise, canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def make_classification_set(
    n: int | None = None, *, split: Split = "train", size: int = 32, seed: int = 0
) -> list[ClassificationItem]:
    """Single digits rendered at ``size × size`` pixels.

    Args:
        n: How many (drawn from the split's pool in a seed-dependent order, repeating the pool
            with fresh colours and noise when ``n`` exceeds it); default: the whole pool once.
        split: Which pool of digits: "train", "val" or "test".
        size: Side of the square images.
        seed: Renders the colours and noise and picks the order.

    Returns:
        Items with keys ``digit-<split>-<i>``.
    """
    ink, labels = _digits()
    pool = digit_split(split)
    rng = np.random.default_rng([seed, SPLITS.index(split), 1])
    count = len(pool) if n is None else n
    order = np.concatenate([rng.permutation(pool) for _ in range(-(-count // len(pool)))])[:count]
    items = []
    for i, index in enumerate(order):
        paper, pen = _paper_and_ink(rng)
        alpha = _upscale(ink[index], size, size)[..., None]
        image = _finish(paper * (1 - alpha) + pen * alpha, rng)
        items.append(ClassificationItem(image, int(labels[index]), f"digit-{split}-{i:05d}"))
    return items


def make_detection_set(
    n: int,
    *,
    split: Split = "train",
    size: int = 128,
    seed: int = 0,
    max_objects: int = 4,
    digit_scale: tuple[float, float] = (0.2, 0.45),
    empty_share: float = 0.05,
) -> list[DetectionItem]:
    """Canvases with a few handwritten digits each and the tight box around every digit's ink.

    Args:
        n: Number of images.
        split: Which pool the digits come from.
        size: Side of the square canvases in pixels.
        seed: Renders everything: which digits, where, how large, colours and noise.
        max_objects: Most digits on one canvas (at least one, unless the image is empty).
        digit_scale: Range of a digit's side as a share of the canvas side.
        empty_share: Share of images with no digit at all (background images teach the model
            that paper alone is not a digit).

    Returns:
        Items with keys ``canvas-<split>-<i>``; boxes in pixels, class = the digit.
    """
    if max_objects < 1 or not 0 < digit_scale[0] <= digit_scale[1] <= 1:
        raise ValueError("need max_objects >= 1 and 0 < digit_scale[0] <= digit_scale[1] <= 1")
    ink, labels = _digits()
    pool = digit_split(split)
    rng = np.random.default_rng([seed, SPLITS.index(split), 2])
    items = []
    for i in range(n):
        paper, pen = _paper_and_ink(rng)
        # A faint light gradient across the sheet, as under a desk lamp.
        ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
        light = (
            1.0
            + rng.uniform(-0.06, 0.06) * ramp[None, :]
            + rng.uniform(-0.06, 0.06) * ramp[:, None]
        )
        canvas = paper[None, None, :] * light[..., None]
        alpha = np.zeros((size, size), dtype=np.float32)
        boxes: list[Box] = []
        wanted = 0 if rng.random() < empty_share else int(rng.integers(1, max_objects + 1))
        taken: list[tuple[int, int, int, int]] = []
        for _ in range(wanted):
            index = int(rng.choice(pool))
            side = int(round(rng.uniform(*digit_scale) * size))
            # Handwriting is a little taller than wide or the other way round; never square.
            w = max(4, int(round(side * rng.uniform(0.75, 1.0))))
            h = max(4, side)
            spot = _free_spot(rng, size, w, h, taken)
            if spot is None:
                continue
            x, y = spot
            patch = _upscale(ink[index], w, h)
            alpha[y : y + h, x : x + w] = np.maximum(alpha[y : y + h, x : x + w], patch)
            rows = np.flatnonzero((patch >= INK_THRESHOLD).any(axis=1))
            cols = np.flatnonzero((patch >= INK_THRESHOLD).any(axis=0))
            if rows.size == 0:
                continue
            taken.append((x, y, w, h))
            boxes.append(
                Box(
                    int(labels[index]),
                    float(x + cols[0]),
                    float(y + rows[0]),
                    float(x + cols[-1] + 1),
                    float(y + rows[-1] + 1),
                )
            )
        a = alpha[..., None]
        image = _finish(canvas * (1 - a) + pen * a, rng)
        items.append(DetectionItem(image, tuple(boxes), f"canvas-{split}-{i:05d}"))
    return items


def _free_spot(
    rng: np.random.Generator, size: int, w: int, h: int, taken: list[tuple[int, int, int, int]]
) -> tuple[int, int] | None:
    """A top-left corner where a ``w × h`` patch touches no placed patch (2 px apart)."""
    if w > size or h > size:
        return None
    for _ in range(50):
        x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
        if all(
            x + w + 2 <= tx or tx + tw + 2 <= x or y + h + 2 <= ty or ty + th + 2 <= y
            for tx, ty, tw, th in taken
        ):
            return x, y
    return None


# --- shifts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shift:
    """How a stream drifts away from the training images. The identity by default.

    Attributes:
        brightness: Exposure factor (0.5 = half as bright, 1.5 = half as bright again).
        blur: Gaussian blur sigma in pixels (focus, motion, a dirty lens).
        noise: Standard deviation of Gaussian sensor noise in grey levels (low light, high ISO).
        scale: Zoom about the centre (below 1: the camera moved away and objects look smaller).
    """

    brightness: float = 1.0
    blur: float = 0.0
    noise: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.brightness < 0 or self.blur < 0 or self.noise < 0 or self.scale <= 0:
            raise ValueError(f"invalid shift {self}")


DEMO_SHIFT = Shift(brightness=0.55, blur=1.0, noise=6.0, scale=0.8)
"""The demo camera's drift: darker, softer, noisier, and farther away (digits 20% smaller).
The demo detector loses about a quarter of its mAP50-95 on it (`benchmarks/README.md`)."""


def brighten(image: np.ndarray, factor: float) -> np.ndarray:
    """Multiply every channel by ``factor`` (a change of exposure), saturating at 0 and 255."""
    return np.clip(np.rint(image.astype(np.float32) * factor), 0, 255).astype(np.uint8)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (0: unchanged)."""
    if sigma <= 0:
        return image.copy()
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT_101)


def add_noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Add Gaussian noise of ``sigma`` grey levels, the same for the same seed."""
    if sigma <= 0:
        return image.copy()
    rng = np.random.default_rng(seed)
    noisy = image.astype(np.float32) + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def zoom(image: np.ndarray, factor: float) -> np.ndarray:
    """Zoom about the centre, keeping the image size.

    Zooming out leaves a margin with no scene in it; it is filled with the median colour of the
    image's border, which for paper or a wall is what a wider view would mostly have shown
    (mirroring the edge instead would duplicate objects that have no box).
    """
    if factor == 1:
        return image.copy()
    h, w = image.shape[:2]
    matrix = np.array(
        [[factor, 0.0, (1 - factor) * (w - 1) / 2], [0.0, factor, (1 - factor) * (h - 1) / 2]]
    )
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    fill = tuple(float(v) for v in np.median(border, axis=0))
    return cv2.warpAffine(
        image,
        matrix,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill,
    )


def zoom_boxes(boxes: Sequence[Box], factor: float, width: int, height: int) -> tuple[Box, ...]:
    """The boxes of :func:`zoom`'s output; a box mostly pushed out of the frame is dropped."""
    out = []
    for box in boxes:
        x1 = factor * (box.x1 - width / 2) + width / 2
        x2 = factor * (box.x2 - width / 2) + width / 2
        y1 = factor * (box.y1 - height / 2) + height / 2
        y2 = factor * (box.y2 - height / 2) + height / 2
        cx1, cy1 = max(0.0, x1), max(0.0, y1)
        cx2, cy2 = min(float(width), x2), min(float(height), y2)
        full = (x2 - x1) * (y2 - y1)
        visible = max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1)
        if full > 0 and visible / full >= MIN_VISIBLE:
            out.append(Box(box.cls, cx1, cy1, cx2, cy2))
    return tuple(out)


def apply_shift(image: np.ndarray, shift: Shift, seed: int = 0) -> np.ndarray:
    """All of a shift, in the order light meets a camera: framing, optics, exposure, sensor."""
    out = zoom(image, shift.scale)
    out = blur(out, shift.blur)
    out = brighten(out, shift.brightness)
    return add_noise(out, shift.noise, seed)


def shift_item(
    item: DetectionItem | ClassificationItem, shift: Shift, seed: int = 0
) -> DetectionItem | ClassificationItem:
    """The same item seen through ``shift``; a detection item's boxes follow the zoom."""
    image = pixels(item.image)
    shifted = apply_shift(image, shift, seed)
    if isinstance(item, DetectionItem):
        h, w = image.shape[:2]
        return replace(item, image=shifted, boxes=zoom_boxes(item.boxes, shift.scale, w, h))
    return replace(item, image=shifted)


def pixels(image: np.ndarray | Path) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    from PIL import Image

    with Image.open(image) as im:
        return np.asarray(im.convert("RGB"))

"""YOLO dataset folders: the layouts Ultralytics trains on, written from items and read back.

:func:`export_detection_dataset` and :func:`export_classification_dataset` write them; the
retrain pipeline feeds them the original training set plus the reviewed labels.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from pipelines.vision.data import SPLITS, Box, ClassificationItem, DetectionItem

logger = logging.getLogger(__name__)

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def export_detection_dataset(
    splits: Mapping[str, Sequence[DetectionItem]], root: Path, names: Sequence[str]
) -> Path:
    """Write a YOLO detection dataset and return its ``data.yaml``.

    Layout: ``root/images/<split>/<key>.png`` (or the source file's own suffix),
    ``root/labels/<split>/<key>.txt`` with one ``class cx cy w h`` line per box (normalised,
    an empty file for a background image) and ``root/data.yaml`` with the absolute ``path``, so
    training finds it from any working directory.

    Args:
        splits: "train" and "val" are required by Ultralytics; "test" is optional.
        root: A folder that does not exist yet or is empty: stale files from an earlier export
            would silently join the training set.
        names: Class names by index.

    Returns:
        The path of ``data.yaml``.
    """
    _check_splits(splits)
    root = _fresh_root(root)
    n_classes = len(names)
    for split, items in splits.items():
        image_dir, label_dir = root / "images" / split, root / "labels" / split
        image_dir.mkdir(parents=True)
        label_dir.mkdir(parents=True)
        for stem, item in zip(_keys(items), items, strict=True):
            width, height = _write_image(item.image, image_dir, stem)
            lines = []
            for box in item.boxes:
                if not 0 <= box.cls < n_classes:
                    raise ValueError(f"{stem}: class {box.cls} outside the {n_classes} names")
                c, cx, cy, w, h = box.to_yolo(width, height)
                lines.append(f"{c} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}\n")
            (label_dir / f"{stem}.txt").write_text("".join(lines))
    yaml_lines = [f"path: {_yaml_str(str(root))}"]
    yaml_lines += [f"{split}: images/{split}" for split in splits]
    yaml_lines.append("names:")
    yaml_lines += [f"  {i}: {_yaml_str(name)}" for i, name in enumerate(names)]
    data_yaml = root / "data.yaml"
    data_yaml.write_text("\n".join(yaml_lines) + "\n")
    logger.info(
        "exported detection dataset %s: %s",
        root,
        {split: len(items) for split, items in splits.items()},
    )
    return data_yaml


def export_classification_dataset(
    splits: Mapping[str, Sequence[ClassificationItem]], root: Path, names: Sequence[str]
) -> Path:
    """Write the ``root/<split>/<class name>/<key>.png`` tree Ultralytics classifies from.

    Ultralytics numbers the classes by the sorted folder names, so ``names`` must already be in
    sorted order (checked): otherwise class 2 of ours would silently be another class for the
    model. Every class gets a folder in every split, even an empty one, for the same reason.

    Returns:
        ``root``, what ``train(data=...)`` takes for classification.
    """
    _check_splits(splits)
    if list(names) != sorted(names) or len(set(names)) != len(names):
        raise ValueError("class names must be unique and sorted, as Ultralytics orders folders")
    for name in names:
        if not _KEY.match(name):
            raise ValueError(f"class name {name!r} is not a safe folder name")
    root = _fresh_root(root)
    for split, items in splits.items():
        for name in names:
            (root / split / name).mkdir(parents=True)
        for stem, item in zip(_keys(items), items, strict=True):
            if not 0 <= item.label < len(names):
                raise ValueError(f"{stem}: class {item.label} outside the {len(names)} names")
            _write_image(item.image, root / split / names[item.label], stem)
    logger.info(
        "exported classification dataset %s: %s",
        root,
        {split: len(items) for split, items in splits.items()},
    )
    return root


def read_detection_labels(label_file: Path, width: int, height: int) -> tuple[Box, ...]:
    """The boxes of one YOLO label file, in pixels of a ``width × height`` image."""
    boxes = []
    for number, line in enumerate(label_file.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise ValueError(f"{label_file}:{number}: expected 5 values, got {len(parts)}")
        boxes.append(Box.from_yolo([float(p) for p in parts], width, height))
    return tuple(boxes)


def read_detection_dataset(data_yaml: Path, split: str) -> list[DetectionItem]:
    """One split of a dataset written by :func:`export_detection_dataset`, images as paths."""
    from PIL import Image

    root = data_yaml.parent
    items = []
    for image_file in sorted((root / "images" / split).iterdir()):
        with Image.open(image_file) as im:
            width, height = im.size
        label_file = root / "labels" / split / f"{image_file.stem}.txt"
        boxes = read_detection_labels(label_file, width, height) if label_file.exists() else ()
        items.append(DetectionItem(image_file, boxes, image_file.stem))
    return items


def _check_splits(splits: Mapping[str, Sequence[object]]) -> None:
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected {SPLITS}")
    for required in ("train", "val"):
        if not splits.get(required):
            raise ValueError(f"the {required!r} split is required and must not be empty")


def _fresh_root(root: Path) -> Path:
    root = root.expanduser().resolve()
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; export into a new folder")
    root.mkdir(parents=True, exist_ok=True)
    return root


def _keys(items: Sequence[ClassificationItem | DetectionItem]) -> list[str]:
    """File stems: the items' keys, or their positions; unique and safe as file names."""
    keys = [item.key or f"{i:06d}" for i, item in enumerate(items)]
    for key in keys:
        if not _KEY.match(key):
            raise ValueError(f"item key {key!r} is not a safe file name")
    if len(set(keys)) != len(keys):
        raise ValueError("item keys must be unique within a split")
    return keys


def _write_image(image: np.ndarray | Path, folder: Path, stem: str) -> tuple[int, int]:
    """Write (PNG, lossless) or copy one image; return its width and height."""
    if isinstance(image, Path):
        from PIL import Image

        with Image.open(image) as im:
            size = im.size
        shutil.copyfile(image, folder / f"{stem}{image.suffix.lower()}")
        return size
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{stem}: expected an H×W×3 uint8 RGB array, got {image.shape}")
    if not cv2.imwrite(str(folder / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {folder / stem}.png")
    return image.shape[1], image.shape[0]


def _yaml_str(value: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    import json

    return json.dumps(value)

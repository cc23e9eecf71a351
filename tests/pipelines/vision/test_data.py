"""Demo image sets: deterministic, disjoint pools, boxes on the ink, YOLO export round trip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.vision import data, datasets
from pipelines.vision.data import Box, DetectionItem, Shift


def test_digit_pools_are_disjoint_stratified_and_fixed() -> None:
    pools = {split: set(data.digit_split(split).tolist()) for split in data.SPLITS}
    assert sum(len(p) for p in pools.values()) == 1797
    assert not pools["train"] & pools["val"] and not pools["train"] & pools["test"]
    assert not pools["val"] & pools["test"]
    _, labels = data._digits()
    for split, pool in pools.items():
        counts = np.bincount(labels[sorted(pool)], minlength=10)
        share = data.SPLIT_FRACTIONS[split]
        assert np.all(np.abs(counts - np.bincount(labels) * share) <= 1), split


def test_sets_are_deterministic_per_seed() -> None:
    a = data.make_detection_set(6, size=64, seed=3)
    b = data.make_detection_set(6, size=64, seed=3)
    c = data.make_detection_set(6, size=64, seed=4)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.image, y.image) and x.boxes == y.boxes and x.key == y.key
    assert any(not np.array_equal(x.image, z.image) for x, z in zip(a, c, strict=True))
    first = data.make_classification_set(12, split="val", size=32, seed=1)
    again = data.make_classification_set(12, split="val", size=32, seed=1)
    assert [i.label for i in first] == [i.label for i in again]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(first, again, strict=True))
    assert first[0].image.shape == (32, 32, 3) and first[0].image.dtype == np.uint8


def test_boxes_are_tight_around_the_ink() -> None:
    items = data.make_detection_set(10, size=96, seed=0, empty_share=0.0)
    assert all(item.boxes for item in items)
    for item in items:
        gray = cv2.cvtColor(item.image, cv2.COLOR_RGB2GRAY).astype(float)
        paper = np.median(gray)
        for box in item.boxes:
            assert 0 <= box.x1 < box.x2 <= 96 and 0 <= box.y1 < box.y2 <= 96
            assert 0 <= box.cls < 10
            inside = gray[int(box.y1) : int(box.y2), int(box.x1) : int(box.x2)]
            # Ink is darker than paper: each box holds clearly dark pixels.
            assert inside.min() < paper - 60


def test_export_detection_round_trip(tmp_path: Path) -> None:
    train = data.make_detection_set(5, split="train", size=64, seed=0)
    val = data.make_detection_set(3, split="val", size=64, seed=0)
    val.append(DetectionItem(val[0].image, (), "background"))
    data_yaml = datasets.export_detection_dataset(
        {"train": train, "val": val}, tmp_path / "ds", data.DIGIT_NAMES
    )
    text = data_yaml.read_text()
    assert f'path: "{tmp_path / "ds"}"' in text and "train: images/train" in text
    assert '  9: "9"' in text
    for split, items in (("train", train), ("val", val)):
        back = datasets.read_detection_dataset(data_yaml, split)
        assert [b.key for b in back] == sorted(i.key for i in items)
        by_key = {i.key: i for i in items}
        for item in back:
            original = by_key[item.key]
            pixels = cv2.cvtColor(cv2.imread(str(item.image)), cv2.COLOR_BGR2RGB)
            assert np.array_equal(pixels, original.image)  # PNG: lossless
            assert len(item.boxes) == len(original.boxes)
            for got, want in zip(item.boxes, original.boxes, strict=True):
                assert got.cls == want.cls
                assert np.allclose(
                    [got.x1, got.y1, got.x2, got.y2],
                    [want.x1, want.y1, want.x2, want.y2],
                    atol=1e-4,
                )
    assert (tmp_path / "ds" / "labels" / "val" / "background.txt").read_text() == ""


def test_export_refuses_stale_folders_and_bad_items(tmp_path: Path) -> None:
    items = data.make_detection_set(2, size=32, seed=0, empty_share=0.0)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "leftover.png").write_bytes(b"x")
    with pytest.raises(FileExistsError):
        datasets.export_detection_dataset({"train": items, "val": items}, tmp_path / "old", "01")
    with pytest.raises(ValueError, match="'val' split is required"):
        datasets.export_detection_dataset({"train": items}, tmp_path / "a", data.DIGIT_NAMES)
    bad = [DetectionItem(items[0].image, (Box(12, 0, 0, 4, 4),))]
    with pytest.raises(ValueError, match="class 12"):
        datasets.export_detection_dataset(
            {"train": bad, "val": bad}, tmp_path / "b", data.DIGIT_NAMES
        )
    twins = [DetectionItem(items[0].image, (), "same"), DetectionItem(items[1].image, (), "same")]
    with pytest.raises(ValueError, match="unique"):
        datasets.export_detection_dataset({"train": twins, "val": items}, tmp_path / "c", "01")
    with pytest.raises(ValueError, match="safe file name"):
        datasets.export_detection_dataset(
            {"train": [DetectionItem(items[0].image, (), "../escape")], "val": items},
            tmp_path / "d",
            "01",
        )


def test_export_classification_layout_and_paths(tmp_path: Path) -> None:
    train = data.make_classification_set(20, split="train", size=32)
    val = data.make_classification_set(10, split="val", size=32)
    src = tmp_path / "upload.png"
    cv2.imwrite(str(src), cv2.cvtColor(val[0].image, cv2.COLOR_RGB2BGR))
    val.append(data.ClassificationItem(src, val[0].label, "from-store"))
    root = datasets.export_classification_dataset(
        {"train": train, "val": val}, tmp_path / "cls", data.DIGIT_NAMES
    )
    assert sorted(p.name for p in (root / "train").iterdir()) == list(data.DIGIT_NAMES)
    for split, items in (("train", train), ("val", val)):
        for item in items:
            assert len(list((root / split / str(item.label)).glob(f"{item.key}.png"))) == 1
    assert (root / "val" / str(val[0].label) / "from-store.png").read_bytes() == src.read_bytes()
    with pytest.raises(ValueError, match="sorted"):
        datasets.export_classification_dataset(
            {"train": train, "val": val}, tmp_path / "x", ["b", "a"]
        )


def test_shifts_are_pure_and_do_what_they_say() -> None:
    image = data.make_detection_set(1, size=64, seed=2, empty_share=0.0)[0].image
    before = image.copy()
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    dark = data.brighten(image, 0.5)
    assert abs(dark.mean() - image.mean() * 0.5) < 1
    sharpness = cv2.Laplacian(gray, cv2.CV_64F).var()
    blurred = cv2.cvtColor(data.blur(image, 2.0), cv2.COLOR_RGB2GRAY)
    assert cv2.Laplacian(blurred, cv2.CV_64F).var() < sharpness / 4
    noisy = data.add_noise(image, 10, seed=1)
    assert np.array_equal(noisy, data.add_noise(image, 10, seed=1))
    assert 8 < (noisy.astype(float) - image).std() < 12
    assert data.zoom(image, 0.5).shape == image.shape
    assert np.array_equal(data.apply_shift(image, Shift()), image)
    assert np.array_equal(image, before)  # nothing changed in place
    with pytest.raises(ValueError):
        Shift(scale=0)


def test_zoom_moves_boxes_with_the_pixels() -> None:
    item = data.make_detection_set(1, size=96, seed=5, empty_share=0.0, max_objects=1)[0]
    shifted = data.shift_item(item, Shift(scale=0.5))
    assert isinstance(shifted, DetectionItem)
    (box,) = shifted.boxes
    (orig,) = item.boxes
    assert box.width == pytest.approx(orig.width / 2) and box.height == pytest.approx(
        orig.height / 2
    )
    gray = cv2.cvtColor(shifted.image, cv2.COLOR_RGB2GRAY).astype(float)
    mask = np.ones_like(gray, dtype=bool)
    mask[int(box.y1) - 1 : int(np.ceil(box.y2)) + 1, int(box.x1) - 1 : int(np.ceil(box.x2)) + 1] = (
        False
    )
    # All the ink is inside the moved box: outside it, only paper.
    assert gray[~mask].min() < gray[mask].min() - 40
    # Zooming in past an object's edge drops the box once most of it leaves the frame.
    edge = [Box(0, 0.0, 0.0, 10.0, 10.0)]
    assert data.zoom_boxes(edge, 3.0, 96, 96) == ()

"""Upload decoding, content-addressed storage, image quality features and their drift."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipelines.drift import build_reference_profile, check_drift
from pipelines.vision import data, images
from pipelines.vision.images import ImageTooLarge, NotAnImage


def encode(pixels: np.ndarray, fmt: str = "PNG", **params: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **params)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width × height and holds a few compressed bytes: a bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    return data.make_detection_set(1, size=48, seed=1, empty_share=0.0)[0].image


def test_decode_good_images(picture: np.ndarray) -> None:
    png = images.decode_image(encode(picture))
    assert png.format == "PNG" and png.suffix == ".png"
    assert np.array_equal(png.pixels, picture)
    assert (png.width, png.height) == (48, 48)
    jpeg = images.decode_image(encode(picture, "JPEG", quality=95))
    assert jpeg.format == "JPEG" and np.abs(jpeg.pixels.astype(int) - picture).mean() < 3
    grey = images.decode_image(encode(picture[..., 0]))
    assert grey.pixels.shape == (48, 48, 3)
    rgba = images.decode_image(encode(np.dstack([picture, np.full((48, 48), 255, np.uint8)])))
    assert np.array_equal(rgba.pixels, picture)


def test_decode_applies_exif_orientation(picture: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    decoded = images.decode_image(encode(picture[:, :40], "JPEG", quality=95, exif=exif))
    assert decoded.pixels.shape == (40, 48, 3)
    upright = np.rot90(picture[:, :40], k=-1)  # turned the other way, the mean gap is ~30
    assert np.abs(decoded.pixels.astype(int) - upright).mean() < 5


@pytest.mark.parametrize(
    ("payload", "error", "message"),
    [
        (b"", NotAnImage, "empty"),
        (b"hello, this is text and not a picture", NotAnImage, "not an image"),
        (b"GIF89a" + b"\x00" * 64, NotAnImage, "accepted formats"),
    ],
)
def test_decode_rejects_non_images(payload: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message) as info:
        images.decode_image(payload)
    assert info.value.status == 415


def test_decode_rejects_truncated_files(picture: np.ndarray) -> None:
    whole = encode(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    with pytest.raises(NotAnImage, match="corrupt or truncated"):
        images.decode_image(whole[: len(whole) // 2])


def test_decode_rejects_bombs_before_decoding() -> None:
    bomb = png_header_only(50_000, 50_000)  # 2.5 gigapixels declared in ~100 bytes
    assert len(bomb) < 200
    with pytest.raises(ImageTooLarge, match="2,500,000,000 pixels; at most 40,000,000") as info:
        images.decode_image(bomb)
    assert info.value.status == 413
    with pytest.raises(ImageTooLarge, match="pixels"):
        images.decode_image(png_header_only(300, 300), max_pixels=80_000)
    with pytest.raises(ImageTooLarge, match="bytes"):
        images.decode_image(b"\x89PNG" + b"\x00" * 2000, max_bytes=1000)


def test_store_is_content_addressed_and_write_once(tmp_path: Path, picture: np.ndarray) -> None:
    payload = encode(picture)
    decoded = images.decode_image(payload)
    first = images.store_image(payload, tmp_path, decoded.suffix)
    second = images.store_image(payload, tmp_path, decoded.suffix)
    assert first.created and not second.created
    assert first.ref == f"{decoded.sha256[:2]}/{decoded.sha256[2:4]}/{decoded.sha256}.png"
    assert first.path == tmp_path / first.ref and first.path.read_bytes() == payload
    assert np.array_equal(images.load_stored(tmp_path, first.ref), picture)
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]  # no temp left
    with pytest.raises(ValueError):
        images.resolve_ref(tmp_path, "../../etc/passwd")


def test_features_match_hand_computation(picture: np.ndarray) -> None:
    got = images.image_features(picture)
    assert set(got) == set(images.FEATURE_COLUMNS)
    r, g, b = (picture[..., i].astype(np.float64) for i in range(3))
    luma = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY).astype(np.float64)
    assert np.abs(luma - (0.299 * r + 0.587 * g + 0.114 * b)).max() <= 1  # ITU-R 601, rounded
    assert got["brightness"] == pytest.approx(luma.mean())
    assert got["contrast"] == pytest.approx(luma.std())
    # The 4-neighbour Laplacian, by hand with numpy (OpenCV's ksize=1 kernel, reflected border).
    padded = np.pad(luma, 1, mode="reflect")
    laplacian = (
        padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * luma
    )
    assert got["blur"] == pytest.approx(laplacian.var())
    assert (got["mean_r"], got["mean_g"], got["mean_b"]) == pytest.approx(
        (r.mean(), g.mean(), b.mean())
    )
    top, bottom = np.max(picture, axis=2).astype(float), np.min(picture, axis=2).astype(float)
    saturation = np.where(top > 0, np.rint(255 * (top - bottom) / np.maximum(top, 1)), 0)
    assert got["saturation"] == pytest.approx(saturation.mean(), abs=0.5)
    assert (got["width"], got["height"]) == (48.0, 48.0)


def test_drift_engine_flags_shifted_images_only() -> None:
    reference = [item.image for item in data.make_detection_set(150, size=48, seed=1)]
    same = [item.image for item in data.make_detection_set(150, size=48, seed=2)]
    darker_blurred = [
        data.apply_shift(image, data.Shift(brightness=0.7, blur=1.5))
        for image in (item.image for item in data.make_detection_set(150, size=48, seed=3))
    ]
    profile = build_reference_profile(
        images.feature_columns(reference), numeric=images.FEATURE_COLUMNS
    )
    calm = check_drift(profile, images.feature_columns(same))
    assert calm.status == "ok" and not calm.dataset_drift, calm.drifted_features()
    shifted = check_drift(profile, images.feature_columns(darker_blurred))
    assert shifted.dataset_drift
    assert {"brightness", "blur", "contrast"} <= set(shifted.drifted_features())
    assert "width" not in shifted.drifted_features()

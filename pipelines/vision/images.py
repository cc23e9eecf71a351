"""Uploaded images: decoded without trusting them, stored by content, measured for drift.

Decoding is where a hostile upload does harm: a 40 KB PNG can declare 50,000 × 50,000 pixels
and take 7.5 GB to decode, and a truncated or mislabelled file must become a clear client error,
not a 500. So :func:`decode_image` checks the byte size first, then reads only the header and
checks the declared pixel count *before* decoding anything, and accepts only a few formats.

A stored image is named by the SHA-256 of its bytes (``ab/cd/<sha256>.<ext>`` under the images
dir): the same frame posted twice is stored once, a name can never point at other content, and
several API workers may write the same file at once without harm (written aside, then linked
into place; the first one wins and later ones find it there).

:func:`image_features` turns an image into a few quality numbers that a camera's drift shows up
in (exposure, contrast, focus, colour cast, resolution); :func:`feature_columns` lays a batch out
as the numeric columns ``pipelines.drift`` tests.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# 40 megapixels: a 7,680 × 5,120 photo; ~120 MB once decoded to RGB.
DEFAULT_MAX_PIXELS = 40_000_000
ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP"})
SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}

FEATURE_COLUMNS: tuple[str, ...] = (
    "brightness",
    "contrast",
    "blur",
    "mean_r",
    "mean_g",
    "mean_b",
    "saturation",
    "width",
    "height",
)

_REF = re.compile(r"^([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{64})(\.[a-z]{3,4})$")


class ImageError(ValueError):
    """An upload that is not an acceptable image; the message says why, for the client.

    Attributes:
        status: The HTTP status an API should answer with.
    """

    status = 400


class NotAnImage(ImageError):
    """Not an image, a format we do not accept, or a corrupt/truncated file."""

    status = 415


class ImageTooLarge(ImageError):
    """Too many bytes, or a header that declares too many pixels (a decompression bomb)."""

    status = 413


@dataclass(frozen=True)
class DecodedImage:
    """A safely decoded upload.

    Attributes:
        pixels: ``H×W×3`` uint8 in RGB order, EXIF orientation applied.
        format: The container format as Pillow names it ("JPEG", "PNG", ...).
        sha256: Hex digest of the uploaded bytes (the stored file's name).
    """

    pixels: np.ndarray
    format: str
    sha256: str

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.format]


def decode_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: Iterable[str] = ALLOWED_FORMATS,
) -> DecodedImage:
    """Decode an uploaded image, refusing anything that is not a plain, reasonably sized picture.

    Args:
        data: The uploaded bytes.
        max_bytes: Largest accepted upload.
        max_pixels: Largest accepted ``width × height``, checked from the header before any
            pixel is decoded.
        formats: Accepted Pillow format names.

    Returns:
        The pixels (RGB; grey, palette, alpha and CMYK images are converted, alpha dropped),
        the format and the bytes' SHA-256.

    Raises:
        ImageTooLarge: Over ``max_bytes`` or ``max_pixels``.
        NotAnImage: Empty, unrecognised, not an accepted format, or corrupt.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise NotAnImage("the upload is empty")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"the upload is {len(data):,} bytes; at most {max_bytes:,} accepted")
    accepted = frozenset(formats)
    try:
        # Pillow's own bomb check warns or raises depending on a process-wide setting; ours is
        # explicit below, so silence its warning here rather than change that global.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = _pillow_open()(io.BytesIO(data), formats=sorted(accepted))
    except UnidentifiedImageError:
        raise NotAnImage(
            f"not an image, or not one of the accepted formats ({', '.join(sorted(accepted))})"
        ) from None
    except Image.DecompressionBombError as exc:
        # Pillow refuses far larger sizes than ours while opening; keep the size it read.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        declared = f" = {int(found[1]):,} pixels" if found else " too many pixels"
        raise ImageTooLarge(
            f"the image declares{declared}; at most {max_pixels:,} accepted"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(f"unreadable image: {exc}") from None
    with im:
        width, height = im.size
        if width < 1 or height < 1:
            raise NotAnImage(f"the image declares a size of {width}×{height}")
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"the image is {width}×{height} = {width * height:,} pixels; "
                f"at most {max_pixels:,} accepted"
            )
        fmt = str(im.format)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                oriented = ImageOps.exif_transpose(im) or im
                rgb = oriented.convert("RGB")
        except Image.DecompressionBombError:
            raise ImageTooLarge(
                f"the image is too large to decode; at most {max_pixels:,} pixels accepted"
            ) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise NotAnImage(f"corrupt or truncated {fmt} image: {exc}") from None
    pixels = np.asarray(rgb, dtype=np.uint8)
    return DecodedImage(pixels, fmt, hashlib.sha256(data).hexdigest())


def _pillow_open() -> Any:
    """Pillow's own ``Image.open``. Importing Ultralytics replaces it process-wide with a
    wrapper that, on an unidentified file, tries to install and import ``pi-heif`` (a
    ModuleNotFoundError offline, i.e. a 500 for a non-image upload); the original is kept."""
    from PIL import Image

    patches = sys.modules.get("ultralytics.utils.patches")
    return getattr(patches, "_image_open", Image.open)


# --- content-addressed storage ----------------------------------------------------------------


@dataclass(frozen=True)
class StoredImage:
    """Where an image's bytes live.

    Attributes:
        ref: ``ab/cd/<sha256><suffix>``, relative to the images dir: what tables record.
        path: The absolute file path.
        sha256: Hex digest of the bytes.
        created: False when the same bytes were already stored.
    """

    ref: str
    path: Path
    sha256: str
    created: bool


def image_ref(sha256: str, suffix: str) -> str:
    """The relative path of an image with this digest and suffix (e.g. ".png")."""
    ref = f"{sha256[:2]}/{sha256[2:4]}/{sha256}{suffix.lower()}"
    if not _REF.match(ref):
        raise ValueError(f"not a sha256 hex digest and image suffix: {sha256!r}, {suffix!r}")
    return ref


def resolve_ref(images_dir: Path, ref: str) -> Path:
    """The file of a stored image; refuses anything that is not a ref made by this module."""
    if not _REF.match(ref):
        raise ValueError(f"not an image ref: {ref!r}")
    return images_dir / ref


def store_image(data: bytes, images_dir: Path, suffix: str) -> StoredImage:
    """Store bytes under their SHA-256, once.

    Callers decode first (:func:`decode_image`), so nothing that is not an image is stored,
    and pass its ``suffix``.

    Args:
        data: The image's bytes, exactly as uploaded.
        images_dir: Root of the image store (created if missing).
        suffix: File suffix with the dot, e.g. ".jpg".

    Returns:
        Where it lives, and whether this call created it.
    """
    sha256 = hashlib.sha256(data).hexdigest()
    ref = image_ref(sha256, suffix)
    path = images_dir / ref
    if path.exists():
        return StoredImage(ref, path, sha256, created=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        try:
            # A hard link never replaces an existing name: the first writer wins, atomically.
            os.link(tmp, path)
            created = True
        except FileExistsError:
            created = False
    finally:
        os.unlink(tmp)
    return StoredImage(ref, path, sha256, created)


def load_stored(images_dir: Path, ref: str) -> np.ndarray:
    """The RGB pixels of a stored image (already checked when it was stored)."""
    with resolve_ref(images_dir, ref).open("rb") as f:
        return decode_image(f.read(), max_bytes=2**62, max_pixels=2**62).pixels


# --- quality features -------------------------------------------------------------------------


def image_features(pixels: np.ndarray) -> dict[str, float]:
    """Quality numbers of one RGB image, all on the 0–255 grey-level scale where they have one.

    * ``brightness``, ``contrast``: mean and standard deviation of the luma (ITU-R 601 grey,
      as OpenCV computes it): exposure and flat lighting.
    * ``blur``: variance of the Laplacian of the luma; it falls as focus goes (the usual
      sharpness measure; low is blurry).
    * ``mean_r``, ``mean_g``, ``mean_b``: channel means: colour casts, a changed white balance.
    * ``saturation``: mean HSV saturation (0–255): washed-out or over-saturated colour.
    * ``width``, ``height``: in pixels: a camera or resolution change.
    """
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 RGB array, got {pixels.dtype} {pixels.shape}")
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    laplacian = cv2.Laplacian(gray, cv2.CV_64F)
    means = pixels.reshape(-1, 3).mean(axis=0, dtype=np.float64)
    saturation = cv2.cvtColor(pixels, cv2.COLOR_RGB2HSV)[..., 1]
    return {
        "brightness": float(gray.mean(dtype=np.float64)),
        "contrast": float(gray.std(dtype=np.float64)),
        "blur": float(laplacian.var()),
        "mean_r": float(means[0]),
        "mean_g": float(means[1]),
        "mean_b": float(means[2]),
        "saturation": float(saturation.mean(dtype=np.float64)),
        "width": float(pixels.shape[1]),
        "height": float(pixels.shape[0]),
    }


def feature_columns(images: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """The quality features of a batch as ``{column: float64 array}``.

    The mapping is what ``pipelines.drift.build_reference_profile`` and ``check_drift`` take;
    pass ``numeric=FEATURE_COLUMNS``.
    """
    rows = [image_features(image) for image in images]
    return {
        name: np.array([row[name] for row in rows], dtype=np.float64) for name in FEATURE_COLUMNS
    }

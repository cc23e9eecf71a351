"""The vision champion: a registered YOLO version, loaded for serving.

The vision model is a registered model of its own (``Settings.vision_model_name``), served by
the same :class:`pipelines.serving.model.ModelHolder` as the tabular one (it polls the
``champion`` alias and swaps atomically), with :func:`vision_loader` as its loader. Its files
are kept under ``<cache_dir>/vision/<name>/v<version>/``: ONNX Runtime reads the ``.onnx``
from there and a retrain fine-tunes from the ``.pt``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.models.registry import (
    VISION_META,
    VISION_ONNX,
    VISION_ONNX_INT8,
    VISION_WEIGHTS,
    Registry,
)
from pipelines.vision.predictor import Predictor


@dataclass
class VisionModel:
    """A registered YOLO version ready to answer.

    Attributes:
        name: Registered model name.
        version: Registry version.
        task: "detect" or "classify".
        names: Class names by index.
        imgsz: Input side it was trained at.
        predictor: The ONNX (or, without an export, PyTorch) predictor.
        folder: Where its files are kept (``best.pt``, ``model.onnx``, ``vision.json``).
        snapshot_id: The store snapshot its training images were read at.
    """

    name: str
    version: str
    task: str
    names: tuple[str, ...]
    imgsz: int
    predictor: Predictor
    folder: Path
    snapshot_id: int | None = None

    @property
    def runtime(self) -> str:
        return self.predictor.runtime

    @property
    def weights(self) -> Path:
        return self.folder / VISION_WEIGHTS

    @property
    def classes(self) -> tuple[str, ...]:
        return self.names


def version_folder(cache_dir: Path, registry: Registry, version: str) -> Path:
    """A version's files, downloaded once (they never change for a version)."""
    folder = cache_dir / registry.model_name / f"v{version}"
    if (folder / VISION_META).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Downloaded aside, then renamed into place: another process may be doing the same.
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".v{version}-"))
    try:
        got = registry.serving_files(version, tmp)
        try:
            os.rename(got, folder)
        except OSError:
            if not (folder / VISION_META).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_vision_version(
    registry: Registry,
    version: str,
    cache_dir: Path,
    *,
    threads: int | None = 1,
    device: str = "cpu",
) -> VisionModel:
    """A registered vision version as a :class:`VisionModel` (ONNX Runtime when exported).

    Args:
        threads: ONNX Runtime intra-op threads. One, like the tabular sessions: requests run
            concurrently and more threads per call fight over a couple of cores.
        device: `DRIFTLAB_VISION_DEVICE` ("auto", "cpu" or a CUDA index).
    """
    info = registry.version(version)
    folder = version_folder(cache_dir, registry, version)
    meta = json.loads((folder / VISION_META).read_text())
    int8_file, onnx_file = folder / VISION_ONNX_INT8, folder / VISION_ONNX
    if int8_file.exists():  # registered only after it agreed with the float export
        predictor = Predictor.from_onnx(int8_file, threads=threads, device=device)
    elif onnx_file.exists():
        predictor = Predictor.from_onnx(onnx_file, threads=threads, device=device)
    else:
        predictor = Predictor.from_weights(
            folder / VISION_WEIGHTS, imgsz=int(meta["imgsz"]), device=device
        )
    return VisionModel(
        registry.model_name,
        str(version),
        meta["task"],
        tuple(meta["names"]),
        int(meta["imgsz"]),
        predictor,
        folder,
        info.snapshot_id,
    )


def vision_loader(cache_dir: Path, device: str = "cpu") -> Any:
    """The `ModelHolder` loader of vision versions kept under `cache_dir`, run on `device`."""

    def load(registry: Registry, version: str) -> VisionModel:
        return load_vision_version(registry, version, cache_dir, device=device)

    return load

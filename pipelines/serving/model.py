"""Serving models: a champion compiled for fast inference, swapped atomically when it changes.

`ServingModel.from_files` runs the fastest form a version was registered with: the compiled
forest (`pipelines.serving.forest`, made for scikit-learn tree ensembles), else the ONNX export,
else the scikit-learn estimator itself. All three give the same probabilities (the compiled
forest sums scikit-learn's own leaf values; an ONNX export that differs from the estimator by
more than 1e-4 is not registered), but scikit-learn's `predict_proba` has a large fixed cost
per call, which single-row requests pay in full (`python -m benchmarks --only serving` times
the three runtimes on one 10k-row batch).

A version registered with a calibration map (`calibration.json`,
`pipelines.models.calibration`) serves its runtime's probabilities through it; one without the
file serves them as they are.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.models.calibration import CALIBRATION_FILE, Calibration
from pipelines.models.registry import CHAMPION, FOREST_FILE, Registry
from pipelines.schema import FeatureSchema
from pipelines.serving.forest import CompiledForest
from pipelines.serving.poller import Poller

logger = logging.getLogger(__name__)


# Batches of at least PARALLEL_MIN_ROWS rows are cut into slices of PARALLEL_SLICE_ROWS that a
# small thread pool runs through the same model (the compiled forest and a one-thread ONNX
# Runtime session both release the GIL and allow concurrent calls), so a large batch uses every
# core (`python -m benchmarks --only serving` prints batch rows/s and the model's one-thread time).
# Many small slices rather than one per core, because the cores are shared with the event
# loop, the flusher and other processes: a busy core then takes fewer slices instead of holding
# up the batch (ONNX Runtime's own intra-op threads split the work evenly, so one busy core
# holds up the whole call). Single rows never touch the pool.
PARALLEL_MIN_ROWS = 2_000
PARALLEL_SLICE_ROWS = 1_000

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _inference_pool() -> ThreadPoolExecutor | None:
    """The process's slice runners, one per usable core (None on one core), made on first use."""
    global _pool
    with _pool_lock:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if _pool is None and (cores or 1) > 1:
            _pool = ThreadPoolExecutor(min(cores or 1, 4), thread_name_prefix="onnx")
        return _pool


def _sliced(run: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """`run` (which must release the GIL) over slices of a large batch on the pool's threads."""

    def proba(x: np.ndarray) -> np.ndarray:
        pool = _inference_pool() if len(x) >= PARALLEL_MIN_ROWS else None
        if pool is None:
            return run(x)
        slices = range(0, len(x), PARALLEL_SLICE_ROWS)
        return np.concatenate(list(pool.map(run, (x[i : i + PARALLEL_SLICE_ROWS] for i in slices))))

    return proba


def onnx_session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread per call: requests run concurrently, and threads would fight over 2 cores.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


@dataclass
class ServingModel:
    """A registered model version ready to answer: schema, classes and a probability function."""

    name: str
    version: str
    schema: FeatureSchema
    predict_proba: Callable[[np.ndarray], np.ndarray]
    runtime: str  # "forest" (pipelines.serving.forest), "onnx" or "sklearn"
    snapshot_id: int | None = None
    # The calibration map `predict_proba` applies (`pipelines.models.calibration`): "isotonic",
    # "sigmoid", "temperature", or "none" for a version registered without one.
    calibration: str = "none"

    @property
    def classes(self) -> tuple[Any, ...]:
        return self.schema.classes

    @cached_property
    def class_array(self) -> np.ndarray:
        """The classes as an object array: `class_array[indices]` labels many rows at once."""
        return _objects(self.classes)

    @cached_property
    def class_texts(self) -> np.ndarray:
        """Each class as the text the prediction log stores, as an object array."""
        return _objects([str(c) for c in self.classes])

    @classmethod
    def from_files(
        cls,
        name: str,
        version: str,
        folder: Path,
        estimator: Any = None,
        snapshot_id: int | None = None,
    ) -> ServingModel:
        """The version in `folder` (its serving files), on the fastest runtime it has.

        Args:
            estimator: The scikit-learn estimator, served when the folder holds neither a
                compiled forest nor an ONNX export.
        """
        schema = FeatureSchema.from_dict(json.loads((folder / "schema.json").read_text()))
        runtime, raw = _raw_runtime(name, version, folder, schema, estimator)
        calibration_file = folder / CALIBRATION_FILE
        if not calibration_file.exists():
            return cls(name, version, schema, raw, runtime, snapshot_id)
        calibration = Calibration.from_dict(json.loads(calibration_file.read_text()))
        if calibration.n_classes != len(schema.classes):
            raise RuntimeError(
                f"{name} v{version}: its calibration maps {calibration.n_classes} classes, "
                f"its schema has {len(schema.classes)}"
            )

        def calibrated(x: np.ndarray) -> np.ndarray:
            return calibration.apply(raw(x))

        proba = calibrated if calibration.calibrated else raw
        return cls(name, version, schema, proba, runtime, snapshot_id, calibration.method)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class indices and the probability matrix for an encoded float32 matrix."""
        proba = np.asarray(self.predict_proba(x), dtype=np.float64)
        return proba.argmax(axis=1), proba


def _raw_runtime(
    name: str, version: str, folder: Path, schema: FeatureSchema, estimator: Any
) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """The fastest runtime in `folder` and its raw probability function."""
    forest_file = folder / FOREST_FILE
    if forest_file.exists():
        forest = CompiledForest.load(forest_file)
        forest.predict_proba(np.zeros((1, len(schema.features)), np.float32))  # compile now
        return "forest", _sliced(forest.predict_proba)
    onnx_file = folder / "model.onnx"
    if onnx_file.exists():
        session = onnx_session(onnx_file.read_bytes())
        out = session.get_outputs()[1].name  # [label, probabilities]
        inp = session.get_inputs()[0].name

        def run(x: np.ndarray) -> np.ndarray:
            return session.run([out], {inp: x})[0]

        return "onnx", _sliced(run)
    if estimator is None:
        raise RuntimeError(f"{name} v{version} has no ONNX export and no estimator given")
    return "sklearn", estimator.predict_proba


def _objects(values: Any) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def load_version(registry: Registry, version: str) -> ServingModel:
    info = registry.version(version)
    with tempfile.TemporaryDirectory() as tmp:
        folder = registry.serving_files(version, Path(tmp))
        has_runtime = (folder / FOREST_FILE).exists() or (folder / "model.onnx").exists()
        estimator = None if has_runtime else registry.load_estimator(version)
        return ServingModel.from_files(
            registry.model_name, version, folder, estimator, snapshot_id=info.snapshot_id
        )


class ModelHolder(Poller):
    """Holds the serving champion; a poller swaps in a new one when the alias moves.

    Requests read `holder.model` once and use that object to the end, so a swap never fails a
    request in flight: the old model stays alive until its last request lets go of it.
    """

    thread_name = "model-poller"

    def __init__(
        self,
        registry: Registry,
        *,
        alias: str = CHAMPION,
        interval: float = 2.0,
        loader: Callable[[Registry, str], Any] | None = None,
    ):
        super().__init__(interval)
        self.registry = registry
        self.alias = alias
        # How a version becomes a serving model (the vision holder passes its own loader).
        self.loader = loader or load_version
        self.model: Any = None  # a ServingModel, or what `loader` returns
        self.last_check: float | None = None
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Load the alias's version if it differs from the one serving; True if swapped."""
        with self._lock:
            version = self.registry.alias_version(self.alias)
            self.last_check = time.time()
            if version is None or (self.model is not None and self.model.version == version):
                return False
            started = time.perf_counter()
            model = self.loader(self.registry, version)
            old = self.model.version if self.model else None
            self.model = model  # one reference assignment: atomic for readers
            logger.info(
                "serving %s v%s (was v%s, %s runtime, loaded in %.2f s)",
                model.name,
                version,
                old,
                model.runtime,
                time.perf_counter() - started,
            )
            return True

"""Monitoring: drift of the inputs and outputs and performance, from the store, on a window.

The reference is the champion's training set (its recorded snapshot) with the champion's own
predictions on it; its profile is built once per champion and cached in memory and on disk, so
a check pays only for the current window. The current window is the last `window_size`
predictions (or a time range). Results go to `drift_results`, one row per column, and the
champion's estimated performance on the same window (`estimated_performance`) to
`performance_estimates`, under the same run id.
"""

from __future__ import annotations

import logging
import pickle
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipelines.drift import (
    DriftPolicy,
    DriftReport,
    ReferenceProfile,
    build_reference_profile,
    check_drift,
)
from pipelines.loop.estimated_performance import WindowEstimate, estimate_window
from pipelines.models.registry import CHAMPION, Registry
from pipelines.schema import CATEGORICAL, SchemaError
from pipelines.serving.model import ServingModel, load_version
from pipelines.settings import Settings
from pipelines.store import Store, new_id, utcnow
from pipelines.store.windows import WindowBounds

logger = logging.getLogger(__name__)

PREDICTION, LABEL = "prediction", "label"

# What `drift_results` keeps of each column's result (the run's own fields are added to each).
_PER_COLUMN = (
    "feature",
    "kind",
    "role",
    "test",
    "statistic",
    "p_value",
    "p_adjusted",
    "effect_metric",
    "effect_size",
    "threshold",
    "drifted",
    "status",
    "missing_share",
    "n_reference",
    "n_current",
)
# Windows larger than this are read from the store one column at a time (see StoreWindow).
COLUMNWISE_ABOVE_ROWS = 5_000_000


@dataclass
class CheckResult:
    """What one check found: the drift report and the live performance on the same window."""

    run_id: str
    model_version: str
    report: DriftReport | None
    performance: dict[str, Any]
    n_current: int
    seconds: float
    status: str
    window_start: Any = None
    window_end: Any = None
    records: list[dict[str, Any]] = field(default_factory=list)
    estimate: WindowEstimate | None = None

    def summary(self) -> dict[str, Any]:
        out = {
            "run_id": self.run_id,
            "model_version": self.model_version,
            "status": self.status,
            "n_current": self.n_current,
            "seconds": round(self.seconds, 3),
            "performance": self.performance,
            "window_start": self.window_start,
            "window_end": self.window_end,
            "estimated_performance": self.estimate.summary() if self.estimate else None,
        }
        if self.report is not None:
            out.update(self.report.summary())
            out["drifted_features"] = self.report.drifted_features()
            out["drifted_outputs"] = self.report.drifted_outputs()
        return out


def performance(
    predictions: list[Any] | np.ndarray, labels: list[Any] | np.ndarray, classes: list[str]
) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class error of the served predictions that got a label."""
    pred = np.asarray(predictions, dtype=object)
    true = np.asarray(labels, dtype=object)
    has = np.array([v is not None for v in true], dtype=bool)
    pred, true = pred[has], true[has]
    n = int(has.sum())
    if n == 0:
        return {"n_labeled": 0, "accuracy": None, "macro_f1": None, "per_class": {}}
    f1s, per_class = [], {}
    for cls in classes:
        tp = int(np.sum((pred == cls) & (true == cls)))
        fp = int(np.sum((pred == cls) & (true != cls)))
        fn = int(np.sum((pred != cls) & (true == cls)))
        support = tp + fn
        denom = 2 * tp + fp + fn
        f1s.append(2 * tp / denom if denom else 0.0)
        per_class[cls] = {
            "support": support,
            "errors": fn,
            "error_rate": fn / support if support else None,
        }
    return {
        "n_labeled": n,
        "accuracy": float(np.mean(pred == true)),
        "macro_f1": float(np.mean(f1s)),
        "per_class": per_class,
    }


# glibc's mallopt parameters (malloc.h): M_TRIM_THRESHOLD and M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_MMAP_THRESHOLD = 256 << 20
HEAP_TRIM_THRESHOLD = 512 << 20


def keep_window_memory() -> bool:
    """Let this process reuse the memory of one check in the next (glibc only; True if set).

    A 1M-row check allocates a few dozen arrays of 8-16 MB. glibc serves blocks that large by
    mmap and gives them back on free, so every such array page-faults its memory in afresh.
    With blocks up to 256 MB taken from the heap, and up to 512 MB of free heap kept rather
    than returned to the kernel, an array reuses memory freed before it, in the same check or
    the previous one (`python -m benchmarks --only drift` times a check in a fresh process).
    The cost: a process that ran a check keeps that memory (RSS does not drop back between
    checks). Elsewhere (musl, macOS) nothing changes.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_THRESHOLD)
        and mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_THRESHOLD)
    )


class Monitor:
    """Runs drift + performance checks for the serving champion of one store and registry.

    Making one calls `keep_window_memory` (process-wide, once is enough): the processes that
    check drift (worker, API, notebooks) are the ones with large short-lived arrays.
    """

    def __init__(self, settings: Settings, store: Store, registry: Registry) -> None:
        keep_window_memory()
        self.settings = settings
        self.store = store
        self.registry = registry
        self._profiles: dict[str, tuple[ReferenceProfile, list[str]]] = {}
        self._lock = threading.Lock()

    def policy(self, **overrides: Any) -> DriftPolicy:
        s = self.settings
        base = {
            "alpha": s.drift_alpha,
            "correction": s.drift_correction,
            "min_samples": s.min_samples,
            "drift_share_threshold": s.drift_share_threshold,
        }
        return DriftPolicy(**{**base, **overrides})

    # -- the reference ---------------------------------------------------------------------------

    def reference(self, model: ServingModel) -> tuple[ReferenceProfile, list[str]]:
        """The champion's reference profile (built once; cached in memory and under data/)."""
        with self._lock:
            if model.version in self._profiles:
                return self._profiles[model.version]
            cache = self.settings.reference_cache(model.name, model.version)
            if cache.exists():
                profile = pickle.loads(cache.read_bytes())
            else:
                profile = self._build_reference(model)
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp")
                tmp.write_bytes(pickle.dumps(profile))
                tmp.replace(cache)
            names = [f.name for f in model.schema.features]
            self._profiles[model.version] = (profile, names)
            return profile, names

    def _build_reference(self, model: ServingModel) -> ReferenceProfile:
        if model.snapshot_id is None:
            raise SchemaError(f"model v{model.version} has no training snapshot recorded")
        rows = self.store.labeled_rows(model.snapshot_id)
        index, _ = model.predict(model.schema.encode(rows.columns))
        frame: dict[str, Any] = dict(rows.columns)
        frame[PREDICTION] = np.array([str(model.classes[i]) for i in index], dtype=object)
        frame[LABEL] = np.asarray(rows.labels, dtype=object)
        numeric = [f.name for f in model.schema.features if f.kind != CATEGORICAL]
        categorical = [f.name for f in model.schema.features if f.kind == CATEGORICAL]
        started = time.perf_counter()
        profile = build_reference_profile(
            frame,
            numeric=numeric,
            categorical=[*categorical, PREDICTION, LABEL],
            roles={PREDICTION: "prediction", LABEL: "label"},
        )
        logger.info(
            "reference profile for v%s: %d rows at snapshot %s (%.2f s)",
            model.version,
            len(rows),
            model.snapshot_id,
            time.perf_counter() - started,
        )
        return profile

    # -- a check -----------------------------------------------------------------------------

    def champion(self) -> ServingModel:
        version = self.registry.alias_version(CHAMPION)
        if version is None:
            raise SchemaError("no champion model yet: train one first (`make train`)")
        return load_version(self.registry, version)

    def check(
        self,
        *,
        model: ServingModel | None = None,
        window_size: int | None = None,
        since: Any = None,
        until: Any = None,
        policy: DriftPolicy | None = None,
        trigger: str = "manual",
        save: bool = True,
    ) -> CheckResult:
        """Compare the current window with the champion's reference; store the results."""
        started = time.perf_counter()
        model = model or self.champion()
        profile, names = self.reference(model)
        if window_size is None and (since or until):
            limit = None  # a time range without a size: the whole range
        else:
            limit = window_size or self.settings.window_size
        window = StoreWindow(
            self.store,
            self.store.window_bounds(limit=limit, since=since, until=until),
            [*names, PREDICTION],
        )
        policy = policy or self.policy()
        run_id = new_id()
        n, start, end = window.num_rows, window.bounds.start, window.bounds.end
        classes = [str(c) for c in model.classes]
        labeled = window.labeled
        perf = performance(
            labeled.column(PREDICTION).to_pylist(), labeled.column(LABEL).to_pylist(), classes
        )
        info = self.registry.version(model.version)
        estimate = estimate_window(
            self.store, window.bounds, model, info.metrics, calibrated=model.calibration != "none"
        )
        if n < policy.min_samples:
            return CheckResult(
                run_id,
                model.version,
                None,
                perf,
                n,
                time.perf_counter() - started,
                "insufficient_data",
                start,
                end,
                estimate=estimate,
            )
        report = check_drift(profile, window, policy)
        run = {
            "run_id": run_id,
            "ts": utcnow(),
            "model_version": model.version,
            "window_start": start,
            "window_end": end,
            "dataset_drift": report.dataset_drift,
            "drift_share": report.drift_share,
            "method": report.method,
            "trigger": trigger,
        }
        records = [{**run, **{k: r[k] for k in _PER_COLUMN}} for r in report.to_records()]
        if save:
            self.store.add_drift_results(records)
            if estimate is not None:
                keep = ("run_id", "ts", "window_start", "window_end", "trigger")
                self.store.add_performance_estimates(estimate.records({k: run[k] for k in keep}))
        result = CheckResult(
            run_id,
            model.version,
            report,
            perf,
            n,
            time.perf_counter() - started,
            report.status,
            start,
            end,
            records,
            estimate,
        )
        logger.info(
            "drift check %s on %d predictions: dataset_drift=%s share=%.2f drifted=%s (%.2f s)",
            run_id[:8],
            n,
            report.dataset_drift,
            report.drift_share,
            report.drifted_features(),
            result.seconds,
        )
        return result


class StoreWindow(Mapping[str, Any]):
    """The current window as a mapping of column → array, read from the store.

    A window of up to `columnwise_above` rows is read in one query on first use (the fastest
    way); a larger one column by column, when the drift engine asks for each: the engine
    profiles a column and lets it go, so a check then holds about one column per worker thread
    (50M rows: ~0.4 GB a column, where the whole window would take ~6 GB). `label` is the
    latest human label (null where there is none).
    """

    def __init__(
        self,
        store: Store,
        bounds: WindowBounds,
        names: list[str],
        *,
        columnwise_above: int = COLUMNWISE_ABOVE_ROWS,
    ) -> None:
        self.store = store
        self.bounds = bounds
        self._read = [n for n in names if n != LABEL]  # the label comes from the feedback
        self.columnwise = bounds.n_rows > columnwise_above
        self._columns: dict[str, pa.ChunkedArray | np.ndarray] | None = None
        self._read_lock = threading.Lock()
        self._labeled: pa.Table | None = None

    @property
    def num_rows(self) -> int:
        """Rows in the window, known without reading a column (the engine asks for it)."""
        return self.bounds.n_rows

    @property
    def labeled(self) -> pa.Table:
        """`prediction` and `label` of the predictions that got a label (read once)."""
        if self._labeled is None:
            self._labeled = self.store.window_labels(self.bounds)
        return self._labeled

    def __getitem__(self, name: str) -> pa.ChunkedArray | np.ndarray:
        if name == LABEL:
            labels = self.labeled.column(LABEL)
            missing = pa.nulls(self.num_rows - len(labels), labels.type)
            return pa.chunked_array([*labels.chunks, missing], labels.type)
        if name not in self._read:
            raise KeyError(name)
        if self.columnwise:
            column = self.store.window_columns(self.bounds, [name]).column(0)
            # One contiguous copy lets the Arrow chunks go here rather than after the column's
            # tests: one copy of the column less per worker (0.4 GB at 50M rows).
            return _contiguous(column)
        if self._columns is None:
            with self._read_lock:  # the engine's worker threads ask at once: read once
                if self._columns is None:
                    table = self.store.window_columns(self.bounds, self._read)
                    # Numbers as contiguous numpy once, here: the engine's threads then do pure
                    # numpy work (`python -m benchmarks --only drift` times a check end to end).
                    self._columns = {n: _contiguous(table.column(n)) for n in self._read}
        return self._columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter([*self._read, LABEL])

    def __len__(self) -> int:
        return len(self._read) + 1


def _contiguous(column: pa.ChunkedArray) -> pa.ChunkedArray | np.ndarray:
    """Numbers as one float numpy array (nulls become NaN, as the engine reads them); text
    stays Arrow, which the engine counts with Arrow's own value_counts."""
    return column.to_numpy() if pa.types.is_floating(column.type) else column


def latest_summary(store: Store, *, vision: bool = False) -> dict[str, Any]:
    """The latest check's dataset figures and per-column rows, for the API and dashboard: the
    tabular model's, or (`vision`) the latest image check's. `drifted_features` are the
    inputs that drifted, which the drift share counts; `drifted_outputs` the model's outputs
    (role "prediction"), reported apart."""
    rows = store.latest_vision_drift() if vision else store.latest_drift_results()
    if not rows:
        return {"run_id": None, "features": []}
    first = rows[0]
    return {
        "run_id": first["run_id"],
        "ts": first["ts"],
        "model_version": first["model_version"],
        "window_start": first["window_start"],
        "window_end": first["window_end"],
        "n_current": max(r["n_current"] for r in rows),
        "dataset_drift": first["dataset_drift"],
        "drift_share": first["drift_share"],
        "method": first["method"],
        "drifted_features": [r["feature"] for r in rows if r["drifted"] and r["role"] == "feature"],
        "drifted_outputs": [
            r["feature"] for r in rows if r["drifted"] and r["role"] == "prediction"
        ],
        "features": rows,
    }


def frames(monitor: Monitor, model: ServingModel, window_size: int) -> tuple[Any, Any]:
    """Reference (training snapshot) and current (last predictions) feature frames, pandas."""
    import pandas as pd

    rows = monitor.store.labeled_rows(model.snapshot_id)
    names = [f.name for f in model.schema.features]
    reference = pd.DataFrame({n: rows.columns[n] for n in names})
    # The same window selection as `Monitor.check` (snapshot-pinned, same tie-break at the
    # cutoff), so Evidently's report and ours look at the same rows.
    bounds = monitor.store.window_bounds(limit=window_size)
    current = monitor.store.window_columns(bounds, names).to_pandas()
    return reference, current


def evidently_report(reference: Any, current: Any, path: Path) -> Path:
    """Evidently's data-drift report (its own defaults) as a self-contained HTML file."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()], include_tests=True).run(
        current_data=current, reference_data=reference
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path

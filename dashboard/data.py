"""What the dashboard process holds while it runs: one store, registry, serving model and log.

Dash runs callbacks on many threads; opening the lake, MLflow or the ONNX session per callback
would cost more than the callbacks' own work, so they are opened once per process by
`open_services` (called from `create_app`) and shared (a store gives each thread its own
cursor).

The lake is attached twice: `store`, read-only, for every page read, and `writer` for the few
writes (feedback, labels, promotions, retrain events, the prediction log): page reads can't
take a write lock by mistake. (Concurrent reads can still meet a rare stall of a whole second,
SQLite's busy sleep; `Lake` keeps its busy timeout below that and retries, which makes such
stalls rare, not impossible: see `lake.SQLITE_BUSY_TIMEOUT_MS`.)

The dashboard predicts and labels like the API does, so it holds a `PredictionLog` of its own:
the Predict page's answers are logged durably before they are shown, like any prediction.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.loop.feedback import FeedbackError, give
from pipelines.schema import FeatureSchema, SchemaError
from pipelines.serving.services import Serving, ServingParts
from pipelines.settings import Settings
from pipelines.store import Store

logger = logging.getLogger(__name__)

# Reference ranges change only with the champion: computed once per (version, snapshot).
_RANGES_LOCK = threading.Lock()


@dataclass
class Services(ServingParts):
    settings: Settings
    store: Store  # read-only: every page read
    writer: Store  # read-write: feedback, labels, promotions, retrain events, prediction log
    serving: Serving  # the registry, the champion, the prediction log, the band
    started_at: float = field(default_factory=time.time)
    # Pages that show many independent figures read them at once (see `gather`).
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(4, thread_name_prefix="dashboard-read")
    )
    _ranges: dict[tuple[str, int], dict[str, dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: Settings) -> Services:
        writer = Store.open(settings)  # first: creates missing tables for the reader
        return cls(
            settings=settings,
            store=Store.open(settings, read_only=True),
            writer=writer,
            serving=Serving.start(settings, writer),
        )

    def gather(self, **reads: Callable[[], Any]) -> dict[str, Any]:
        """Run independent reads at once; their results by name (the first error is raised)."""
        futures = {name: self.pool.submit(read) for name, read in reads.items()}
        return {name: future.result() for name, future in futures.items()}

    def stop(self) -> None:
        self.pool.shutdown(wait=True)
        self.serving.stop()
        self.store.close()
        self.writer.close()

    def schema(self) -> FeatureSchema | None:
        """The serving champion's schema (with classes and categories), else the dataset's."""
        model = self.models.model
        return model.schema if model is not None else self.store.dataset_schema()

    def reference_ranges(self) -> dict[str, dict[str, Any]]:
        """The champion's training ranges per feature (empty without a champion)."""
        from pipelines.store.queries import reference_ranges

        model = self.models.model
        if model is None or model.snapshot_id is None:
            return {}
        key = (model.version, model.snapshot_id)
        with _RANGES_LOCK:
            if key not in self._ranges:
                self._ranges[key] = reference_ranges(self.store, model.schema, model.snapshot_id)
            return self._ranges[key]

    def feedback(
        self,
        prediction: dict[str, Any],
        *,
        label: Any = None,
        correct: bool | None = None,
        who: str = "dashboard",
    ) -> str:
        """A person's verdict on a prediction this process made, checked and recorded by
        `pipelines.loop.feedback.give` as `POST /feedback` records it.

        Only the id is taken from `prediction` (the page keeps it in the browser): the
        predicted class and model version are read back from the lake, flushing this
        process's log if the prediction is still in it.

        Raises:
            SchemaError: the feedback can't be recorded (the page shows the message).
        """
        try:
            row = give(
                self.writer,
                self.log,
                self.schema(),
                prediction["prediction_id"],
                label=label,
                correct=correct,
                source="dashboard",
                who=who,
            )
        except FeedbackError as exc:
            raise SchemaError(str(exc)) from None
        return row.feedback_id


_services: Services | None = None
_lock = threading.Lock()


def open_services(settings: Settings) -> Services:
    """Open the process's services once (later calls return the same ones)."""
    global _services
    with _lock:
        if _services is None:
            _services = Services.start(settings)
        return _services


def services() -> Services:
    """The services `create_app` opened; a callback runs only after that."""
    if _services is None:
        raise RuntimeError("dashboard services are not open: build the app with create_app()")
    return _services


def close_services() -> None:
    global _services
    with _lock:
        if _services is not None:
            _services.stop()
            _services = None


def tail_lines(path: Path, n: int, block: int = 16_384) -> list[str]:
    """The last `n` lines of a log file, read from its end (logs grow all day)."""
    if not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - block))
        lines = f.read().decode("utf-8", "replace").splitlines()
    return lines[-n:]

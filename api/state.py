"""What the API holds while it runs: one store, registry, serving model and prediction log."""

from __future__ import annotations

import gc
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from api.metrics import Metrics
from api.store_metrics import StoreFigures
from pipelines.loop.monitoring import Monitor
from pipelines.ops import logs, supervisor
from pipelines.serving import bulkjson
from pipelines.serving.model import ModelHolder
from pipelines.serving.predict import Batcher
from pipelines.serving.rollout import CanaryGuard
from pipelines.serving.services import Serving, ServingParts, VisionServing
from pipelines.settings import Settings
from pipelines.store import Store

if TYPE_CHECKING:  # the vision extra is optional: imported only when it is there
    from pipelines.vision.image_log import ImageLog

logger = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 20, 10)
"""The cyclic GC's thresholds in a serving process (Python's defaults: 700, 10, 10).

A 10k-row request allocates 10k-20k containers (its parsed rows); with the defaults, each 700
of them start a young collection that walks the rows still alive. After 50k allocations a
young collection runs once every few such requests, and finds mostly what finished ones left.
The server's long-lived objects are frozen at start-up (`gc.freeze`), so the rarer full
collections stay short. (`python -m benchmarks --only serving` prints the server's CPU per
10k-row batch.)
"""


@dataclass
class AppState(ServingParts):
    settings: Settings
    store: Store
    serving: Serving  # the registry, the champion, the prediction log, the band
    metrics: Metrics
    monitor: Monitor
    vision_serving: VisionServing | None = None  # None without the `vision` extra
    started_at: float = field(default_factory=time.time)
    batcher: Batcher = field(init=False)  # /predict's micro-batcher, over `log` and `band`
    canary_guard: CanaryGuard = field(init=False)  # each canary arm's last minute, here
    store_figures: CollectorRegistry = field(init=False)  # the store's figures for /metrics

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.log, self.band)
        self.canary_guard = CanaryGuard(self.settings.rollout_guard_factor)
        self.store_figures = CollectorRegistry(auto_describe=False)
        self.store_figures.register(StoreFigures(self))

    @property
    def vision(self) -> ModelHolder | None:
        """The vision champion's holder (None without the `vision` extra)."""
        return self.vision_serving.models if self.vision_serving is not None else None

    @property
    def image_log(self) -> ImageLog | None:
        return self.vision_serving.log if self.vision_serving is not None else None

    @classmethod
    def start(cls, settings: Settings) -> AppState:
        # Every ONNX call releases the GIL, and taking it back from a thread running Python
        # (the prediction flusher building its Arrow table) waits up to the switch interval,
        # 5 ms by default: beside a busy thread a short model call waits that long for it.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        logs.configure_from_env(settings)
        supervisor.follow()  # a uvicorn worker process dies with `driftlab api`
        store = Store.open(settings, threads=settings.api_db_threads)
        serving = Serving.start(settings, store)
        state = cls(
            settings=settings,
            store=store,
            serving=serving,
            metrics=Metrics(),
            monitor=Monitor(settings, store, serving.registry),
            vision_serving=VisionServing.start(settings, store),
        )
        bulkjson.warm_up()
        # What start-up loaded (MLflow, scikit-learn, onnxruntime, pandas…) lives as long as the
        # process; frozen, the cyclic GC stops re-scanning it in every full collection, which
        # would stall every request in flight meanwhile (it shows in /predict's p99 under load).
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        return state

    def stop(self) -> None:
        self.metrics.forget_process()
        self.serving.stop()
        if self.vision_serving is not None:
            self.vision_serving.stop()
        self.store.close()

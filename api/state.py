"""What the API holds while it runs: one store, registry, serving model and prediction log."""

from __future__ import annotations

import gc
import logging
import sys
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipelines.monitoring import Monitor
from pipelines.predicting import Band
from pipelines.registry import Registry
from pipelines.serving import ModelHolder
from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.store.spool import PredictionLog

logger = logging.getLogger(__name__)


@dataclass
class Metrics:
    """Prometheus series, in a registry of the app's own (several apps can live in one test)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.predictions = Counter(
            "driftlab_predictions", "Predictions served", ["model_version"], registry=r
        )
        self.uncertain = Counter(
            "driftlab_uncertain_predictions", "Predictions flagged uncertain", registry=r
        )
        self.latency = Histogram(
            "driftlab_predict_latency_seconds",
            "Time to validate, predict and log one /predict call",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.ingested = Counter("driftlab_ingested_rows", "Rows ingested", registry=r)
        self.feedback = Counter("driftlab_feedback", "Feedback received", ["kind"], registry=r)
        self.model_version = Gauge(
            "driftlab_model_version", "Version number of the serving champion", registry=r
        )
        self.drift_score = Gauge(
            "driftlab_drift_effect_size",
            "Effect size (normalized Wasserstein / Jensen-Shannon) per column, latest check",
            ["feature"],
            registry=r,
        )
        self.drift_detected = Gauge(
            "driftlab_drift_detected",
            "1 if the column drifted in the latest check",
            ["feature"],
            registry=r,
        )
        self.drift_share = Gauge(
            "driftlab_drift_share", "Share of drifted features, latest check", registry=r
        )
        self.dataset_drift = Gauge(
            "driftlab_dataset_drift", "1 if the latest check found dataset drift", registry=r
        )
        self.live_accuracy = Gauge(
            "driftlab_live_accuracy", "Accuracy of served predictions from feedback", registry=r
        )
        self.log_pending = Gauge(
            "driftlab_prediction_log_pending_rows",
            "Predictions acknowledged, not yet in the lake",
            registry=r,
        )


@dataclass
class AppState:
    settings: Settings
    store: Store
    registry: Registry
    models: ModelHolder
    log: PredictionLog
    band: Band
    metrics: Metrics
    monitor: Monitor
    started_at: float = field(default_factory=time.time)

    @classmethod
    def start(cls, settings: Settings) -> AppState:
        # Every ONNX call releases the GIL, and taking it back from a thread running Python
        # (the prediction flusher building its Arrow table) waits up to the switch interval,
        # 5 ms by default: beside a busy thread a one-row call took 0.76 ms on average instead
        # of 8 us. 0.5 ms gave /predict +6 to +21% requests/s in three paired wrk runs.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        store = Store.open(settings)
        registry = Registry.from_settings(settings)
        log = PredictionLog(
            store,
            settings.spool_dir,
            flush_interval=settings.flush_interval,
            max_rows=settings.flush_max_rows,
        )
        log.start()  # replays what a crashed process left in the spool
        models = ModelHolder(registry, interval=settings.reload_interval)
        try:
            models.refresh()
        except Exception:
            logger.exception("could not load the champion; serving will answer 503 until it can")
        models.start()
        state = cls(
            settings=settings,
            store=store,
            registry=registry,
            models=models,
            log=log,
            band=Band(settings.uncertainty_low, settings.uncertainty_high),
            metrics=Metrics(),
            monitor=Monitor(settings, store, registry),
        )
        # What start-up loaded (MLflow, scikit-learn, onnxruntime, pandas…) lives as long as the
        # process; frozen, the cyclic GC stops re-scanning it in every full collection, which
        # otherwise stalled all requests for 100+ ms (the p99 of /predict under load).
        gc.collect()
        gc.freeze()
        return state

    def stop(self) -> None:
        self.models.stop()
        self.log.close()
        self.store.close()

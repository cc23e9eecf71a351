"""What the API holds while it runs: one store, registry, serving model and prediction log."""

from __future__ import annotations

import gc
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipelines.loop.monitoring import Monitor
from pipelines.ops import logs, supervisor
from pipelines.serving import bulkjson
from pipelines.serving.model import ModelHolder
from pipelines.serving.predict import Batcher
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
        # The latest check's performance of the champion on its window (`metric`: accuracy,
        # macro_f1, and precision, recall, roc_auc for a binary model): estimated from its
        # probabilities, the ends of the estimate's band, realized from labels, and the
        # held-out reference the drop is measured from.
        self.performance = {
            kind: Gauge(f"driftlab_{kind}_performance", text, ["metric"], registry=r)
            for kind, text in (
                ("estimated", "Performance estimated from calibrated probabilities, latest check"),
                ("estimated_low", "Lower end of the estimate's band, latest check"),
                ("estimated_high", "Upper end of the estimate's band, latest check"),
                ("realized", "Performance on the labeled predictions of the latest check"),
                ("reference", "The champion's held-out performance"),
            )
        }
        self.log_pending = Gauge(
            "driftlab_prediction_log_pending_rows",
            "Predictions acknowledged, not yet in the lake",
            registry=r,
        )
        # -- vision --
        self.image_predictions = Counter(
            "driftlab_image_predictions",
            "Images predicted (origin api) or logged by edge clients (origin edge)",
            ["origin", "model_version"],
            registry=r,
        )
        self.images_with_detections = Counter(
            "driftlab_images_with_detections",
            "Images with at least one detection (the defect rate's numerator)",
            ["origin"],
            registry=r,
        )
        self.image_latency = Histogram(
            "driftlab_image_predict_latency_seconds",
            "Decode, store, predict and log one /predict/image call",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=r,
        )
        self.edge_inference = Histogram(
            "driftlab_edge_inference_seconds",
            "Inference time per frame reported by edge clients",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=r,
        )
        self.edge_fps = Gauge(
            "driftlab_edge_fps", "Latest FPS reported by an edge client", registry=r
        )
        self.detection_confidence = Histogram(
            "driftlab_detection_confidence",
            "Confidence of detections (or of the top class)",
            buckets=tuple(i / 10 for i in range(1, 11)),
            registry=r,
        )
        self.detections = Counter(
            "driftlab_detections", "Detections (or top classes) per class", ["cls"], registry=r
        )
        self.defect_rate = Gauge(
            "driftlab_defect_rate",
            "Share of served images with at least one detection (from the store)",
            registry=r,
        )

    def observe_image(self, out: dict, *, origin: str) -> None:
        """Count one image answer (POST /predict/image)."""
        self.image_predictions.labels(origin, out["model_version"]).inc()
        self.image_latency.observe(out["latency_ms"] / 1000.0)
        if out["task"] == "classify":
            self.detection_confidence.observe(out["confidence"])
            self.detections.labels(out["class"]).inc()
            return
        if out["detections"]:
            self.images_with_detections.labels(origin).inc()
        for d in out["detections"]:
            self.detection_confidence.observe(d["confidence"])
            self.detections.labels(d["class"]).inc()

    def observe_edge(self, payload: dict, out: dict) -> None:
        """Count one stored edge log (POST /log)."""
        self.image_predictions.labels("edge", str(payload.get("model_version") or "edge")).inc()
        if isinstance(payload.get("fps"), int | float):
            self.edge_fps.set(payload["fps"])
        if isinstance(payload.get("inference_ms"), int | float):
            self.edge_inference.observe(payload["inference_ms"] / 1000.0)
        detections = payload.get("detections") or []
        if detections:
            self.images_with_detections.labels("edge").inc()
        for d in detections:
            self.detection_confidence.observe(float(d["confidence"]))
            self.detections.labels(str(d.get("name") or d["class"])).inc()


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

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.log, self.band)

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
        self.serving.stop()
        if self.vision_serving is not None:
            self.vision_serving.stop()
        self.store.close()

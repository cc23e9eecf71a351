"""What one API process counts for Prometheus, and how several processes add up.

`Metrics` holds the series this process records: requests, predictions, latencies, the
prediction log's progress, images. The figures that live in the store (drift, estimated and
live performance, the queue, retrains) are not counted here: `api.store_metrics` reads them
at each scrape, so every process reports the same values.

With `DRIFTLAB_API_WORKERS` > 1, uvicorn runs the API in several processes and a scrape
reaches one of them. `driftlab api` then points prometheus_client's multiprocess mode at a
fresh folder (`prepare_multiprocess`) before the workers start: every process writes its
series to memory-mapped files there, and `/metrics` adds up every process's files
(`process_registry`), so counters and histograms are sums over processes. Gauges say how:
the prediction log's backlog is summed over live processes, an edge client's FPS is the most
recent value any process saw.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess

from pipelines.settings import Settings

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
"""The label value for anything outside a bounded set (a class or version a client made up)."""


def prepare_multiprocess(settings: Settings, port: int) -> Path:
    """An empty folder for the series of the API processes on `port`, set in the environment
    that uvicorn's worker processes inherit. Emptied at each start: files left by a previous
    run would add its counts to this one's."""
    folder = settings.data_dir / "ops" / f"api-metrics-{port}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ[MULTIPROCESS_ENV] = str(folder)
    return folder


def multiprocess_dir() -> str | None:
    """The folder this process's series go to, when it is one of several API processes."""
    return os.environ.get(MULTIPROCESS_ENV) or None


@dataclass
class Metrics:
    """Prometheus series, in a registry of the app's own (several apps can live in one test)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.http_requests = Counter(
            "driftlab_http_requests",
            "HTTP responses by route and status code",
            ["handler", "code"],
            registry=r,
        )
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
        self.batches = Counter(
            "driftlab_predict_batches", "Model calls made by /predict's micro-batcher", registry=r
        )
        self.batched_requests = Counter(
            "driftlab_predict_batched_requests",
            "/predict requests those model calls answered (their ratio: requests per call)",
            registry=r,
        )
        self.rollout_requests = Counter(
            "driftlab_rollout_requests",
            "/predict requests served on each arm of a canary (champion, challenger)",
            ["arm"],
            registry=r,
        )
        self.shadow_answered = Counter(
            "driftlab_shadow_predictions",
            "Rows a shadow challenger answered beside the champion (logged, never served)",
            registry=r,
        )
        self.shadow_failed = Counter(
            "driftlab_shadow_failures",
            "Shadow model calls or logs that failed (the served answers went out all the same)",
            registry=r,
        )
        self.shadow_pending = Gauge(
            "driftlab_shadow_log_pending_rows",
            "Shadow answers logged to the spool, not yet in the lake",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.ingested = Counter("driftlab_ingested_rows", "Rows ingested", registry=r)
        self.feedback = Counter("driftlab_feedback", "Feedback received", ["kind"], registry=r)
        self.log_pending = Gauge(
            "driftlab_prediction_log_pending_rows",
            "Predictions acknowledged, not yet in the lake",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.log_flushed = Counter(
            "driftlab_prediction_log_flushed_rows",
            "Predictions the prediction log committed to the lake",
            registry=r,
        )
        self.log_flush_errors = Counter(
            "driftlab_prediction_log_flush_errors",
            "Failed commits of the prediction log to the lake (each is retried; the spool "
            "keeps the rows)",
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
            "driftlab_edge_fps",
            "Latest FPS reported by an edge client",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.detection_confidence = Histogram(
            "driftlab_detection_confidence",
            "Confidence of detections (or of the top class)",
            buckets=tuple(i / 10 for i in range(1, 11)),
            registry=r,
        )
        self.detections = Counter(
            "driftlab_detections",
            "Detections (or top classes) per class of the vision champion",
            ["cls"],
            registry=r,
        )
        self._sampled = dict.fromkeys(
            ("batches", "requests", "flushed", "errors", "shadow", "shadow_failed"), 0
        )
        self._responses: dict[tuple[str, int], Any] = {}  # labelled children, looked up once

    def count_response(self, handler: str, status: int) -> None:
        """One HTTP response (`api.http_metrics`): on the hot path, so the labelled child is
        looked up once per (route, status)."""
        child = self._responses.get((handler, status))
        if child is None:
            child = self._responses[handler, status] = self.http_requests.labels(
                handler, str(status)
            )
        child.inc()

    # -- what this process's parts counted themselves ------------------------------------------

    def sample(self, batcher: Any, log: Any, shadow_log: Any) -> None:
        """Bring the series up to date with what the batcher and the prediction logs count
        (plain attributes: `pipelines` does not know about Prometheus). Called at each scrape
        and every second (`api.main`): in multiprocess mode a scrape reaches one process, and
        the others' files must be current too."""
        self.log_pending.set(log.pending_rows)
        self.shadow_pending.set(shadow_log.pending_rows)
        for key, counter, now in (
            ("batches", self.batches, batcher.batches),
            ("requests", self.batched_requests, batcher.requests),
            ("flushed", self.log_flushed, log.flushed_rows),
            ("errors", self.log_flush_errors, log.flush_errors),
            ("shadow", self.shadow_answered, shadow_log.answered),
            ("shadow_failed", self.shadow_failed, shadow_log.failed),
        ):
            if now > self._sampled[key]:
                counter.inc(now - self._sampled[key])
                self._sampled[key] = now

    def forget_process(self) -> None:
        """At shutdown in multiprocess mode: drop this process's live gauges (its backlog is
        flushed; a sum over live processes must no longer count it)."""
        if multiprocess_dir() is not None:
            multiprocess.mark_process_dead(os.getpid())

    # -- images ------------------------------------------------------------------------------

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

    def observe_edge(
        self, payload: dict, *, version: str | None, names: tuple[str, ...] | None
    ) -> None:
        """Count one stored edge log (POST /log). The client's own words become label values
        only when they name the vision champion's version and classes: a label set must stay
        bounded, whatever a client sends."""
        sent = str(payload.get("model_version") or "")
        self.image_predictions.labels("edge", sent if sent == version else OTHER).inc()
        if isinstance(payload.get("fps"), int | float):
            self.edge_fps.set(payload["fps"])
        if isinstance(payload.get("inference_ms"), int | float):
            self.edge_inference.observe(payload["inference_ms"] / 1000.0)
        detections = payload.get("detections") or []
        if detections:
            self.images_with_detections.labels("edge").inc()
        names = names or ()
        for d in detections:
            self.detection_confidence.observe(float(d["confidence"]))
            name = d.get("name")
            if name is None and isinstance(d.get("class"), int) and 0 <= d["class"] < len(names):
                name = names[d["class"]]
            self.detections.labels(name if name in names else OTHER).inc()


def process_registry(metrics: Metrics) -> CollectorRegistry:
    """The registry a scrape reads this process's series from: its own, or the sum over every
    API process's files in multiprocess mode."""
    folder = multiprocess_dir()
    if folder is None:
        return metrics.registry
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=folder)
    return registry

"""The worker: the loop's schedule, in its own process.

* every `queue_interval` seconds: move the most informative uncertain predictions into the
  labeling queue (`labeling_queue.refresh`; one enqueuer keeps the hourly budget exact);
* every `check_interval` seconds: a drift + performance check if at least `min_samples`
  predictions arrived since the last one, the same for the vision champion's images, then the
  retraining decision of each model, which starts a retrain in the background when the policy
  says so (`retrain_auto`; the vision model only once it has a champion);
* every `compact_interval` seconds: compact the lake (keeping every snapshot a registered
  model was trained on);
* every round (`queue_interval` seconds): read the running rollout's labels, record its
  figures and promote or stop its challenger when the live test decides
  (`pipelines.loop.rollouts`).

It only reads the predictions table and writes small batches, so it never slows the API.

On a shared (PostgreSQL) catalog any number of workers may run, on any hosts: they contend for
the `worker` lease (`pipelines.store.leases`), and only its holder acts; the others stand by
and take over within two `lease_interval`s of its death. A worker that loses the lease stops
acting before the next job. On the embedded SQLite catalog a worker always acts.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pipelines.loop import labeling_queue, retraining_conditions, retraining_control, rollouts
from pipelines.loop.labeling_policy import QueuePolicy
from pipelines.loop.monitoring import Monitor
from pipelines.models.registry import CHAMPION, Registry, kept_snapshots
from pipelines.schema import SchemaError
from pipelines.settings import Settings
from pipelines.store import Store, utcnow
from pipelines.store.leases import Lease, LeaseKeeper, new_holder

logger = logging.getLogger(__name__)


@dataclass
class Worker:
    settings: Settings
    store: Store
    registry: Registry
    monitor: Monitor = field(init=False)
    last_check_at: Any = None
    last_vision_check_at: Any = None
    last_compact: float = field(default_factory=time.monotonic)
    last_queue_scan: dt.datetime | None = None
    vision_registry: Registry = field(init=False)
    lease: LeaseKeeper | None = None  # set by `run` on a shared catalog

    def __post_init__(self) -> None:
        self.monitor = Monitor(self.settings, self.store, self.registry)
        self.vision_registry = Registry.vision_from_settings(self.settings)

    @classmethod
    def open(cls, settings: Settings) -> Worker:
        store = Store.open(settings)
        registry = Registry.from_settings(settings)
        return cls(settings, store, registry)

    @staticmethod
    def keeper(settings: Settings) -> LeaseKeeper:
        """This process's claim on the `worker` lease (not started): valid for 1.5 intervals,
        tried every half interval, so a standby takes over within two."""
        lease = Lease(
            settings.catalog_uri, "worker", new_holder("worker"), 1.5 * settings.lease_interval
        )
        return LeaseKeeper(lease, settings.lease_interval / 2)

    @property
    def acting(self) -> bool:
        """Whether this worker may act now: always on one machine; on a shared catalog, only
        while it holds the `worker` lease."""
        return self.lease is None or self.lease.active

    def tick(self) -> dict[str, Any]:
        """One round of every job (compaction only when due); returns what it did (also
        logged). A worker that loses its lease mid-round stops before the next job."""
        did: dict[str, Any] = {"queue": self.refresh_queue(), "rollout": self.judge_rollout()}
        if not self.acting:
            return {**did, "stopped": "lost the worker lease"}
        new = self.store.predictions_since(self.last_check_at)
        if new >= self.settings.min_samples:
            try:
                result = self.monitor.check(trigger="worker")
                self.last_check_at = result.window_end
                did["drift"] = result.summary()
            except SchemaError as exc:
                did["drift"] = {"skipped": str(exc)}
        else:
            did["drift"] = {
                "skipped": f"{new} new predictions, fewer than {self.settings.min_samples}"
            }
        did["vision_drift"] = self.vision_check()
        if not self.acting:
            return {**did, "stopped": "lost the worker lease"}
        if self.settings.retrain_auto:
            did["retrain"] = self.maybe_retrain()
            did["vision_retrain"] = self.maybe_retrain(vision=True)
        if self.acting and time.monotonic() - self.last_compact >= self.settings.compact_interval:
            did["compact"] = self.store.compact(kept_snapshots(self.settings))
            self.last_compact = time.monotonic()
        logger.info("worker tick: %s", {k: _short(v) for k, v in did.items()})
        return did

    def vision_check(self) -> dict[str, Any]:
        """The image drift check of the vision champion, when `min_samples` images arrived
        since the last one (and the `vision` extra is installed)."""
        try:
            from pipelines.vision import monitoring as vision_monitoring
        except ImportError:
            return {"skipped": "the vision extra is not installed"}
        s = self.settings
        new = self.store.image_feature_window(
            s.vision_model_name, limit=s.min_samples, since=self.last_vision_check_at
        ).num_rows
        if new < s.min_samples:
            return {"skipped": f"{new} new images, fewer than {s.min_samples}"}
        try:
            result = vision_monitoring.check(s, self.store, trigger="worker")
        except Exception as exc:  # the tabular loop goes on
            logger.exception("image drift check failed")
            return {"failed": str(exc)}
        if result.get("window_end") is not None:
            self.last_vision_check_at = result["window_end"]
        return result

    def refresh_queue(self) -> dict[str, Any]:
        if not self.acting:
            return {"skipped": "standby"}
        now = utcnow()
        policy = QueuePolicy.from_settings(self.settings)
        enqueued = labeling_queue.refresh(
            self.store, policy, now=now, last_scan=self.last_queue_scan
        )
        self.last_queue_scan = now
        return {"enqueued": enqueued}

    def judge_rollout(self) -> dict[str, Any]:
        """The running rollout's live test, acted on (`rollouts.evaluate`)."""
        if not self.acting:
            return {"skipped": "standby"}
        try:
            return rollouts.evaluate(self.settings, self.store, self.registry)
        except Exception as exc:  # the rest of the loop goes on; the next round retries
            logger.exception("judging the rollout failed")
            return {"failed": str(exc)}

    def maybe_retrain(self, *, vision: bool = False) -> dict[str, Any]:
        """Ask the retraining policy about one model; start a run in the background if it
        says so. The vision model is asked only once it has a champion: there is nothing to
        fine-tune or gate before (`driftlab train --vision` bootstraps one). The tabular
        model goes first in a tick; when it started a run, the shared lock makes the vision
        verdict say "already running" and the vision run waits for a later tick."""
        if not self.acting:
            return {"started": False, "skipped": "standby"}
        if vision and self.vision_registry.alias_version(CHAMPION) is None:
            return {"started": False, "skipped": "no vision champion"}
        verdict = retraining_conditions.check(
            self.settings, self.store, self.registry, vision=vision
        )
        if not verdict["should_retrain"]:
            keys = ("reasons", "blocked_by", "not_met")
            return {"started": False, **{k: verdict[k] for k in keys if verdict[k]}}
        try:
            run = retraining_control.trigger(
                self.settings,
                self.store,
                trigger="worker",
                who="worker",
                reasons=verdict["reasons"],
                vision=vision,
            )
        except retraining_control.RetrainBusy as exc:
            return {"started": False, "blocked_by": [str(exc)]}
        return {"started": True, **run, "reasons": verdict["reasons"]}

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        s = self.settings
        logger.info(
            "worker started: queue every %.0f s, drift check and retraining decision every "
            "%.0f s (window %d, min %d new predictions)",
            s.queue_interval,
            s.check_interval,
            s.window_size,
            s.min_samples,
        )
        if s.shared_catalog:
            self.lease = self.keeper(s).start()
            logger.info(
                "worker %s: %s",
                self.lease.lease.holder,
                "active" if self.acting else "standing by",
            )
        try:
            self._schedule(stop)
        finally:
            if self.lease is not None:
                self.lease.stop()  # releases it: a standby takes over at its next try

    def _schedule(self, stop: threading.Event) -> None:
        s = self.settings
        next_check = time.monotonic()
        was_acting = self.acting
        while not stop.is_set():
            if self.acting != was_acting:
                was_acting = self.acting
                logger.warning("worker now %s", "active" if was_acting else "standing by")
                next_check = time.monotonic()  # a new holder starts with a full round
            if not was_acting:
                stop.wait(s.lease_interval / 4)
                continue
            try:
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + s.check_interval
                    self.tick()
                else:
                    self.refresh_queue()
                    self.judge_rollout()
            except Exception:  # keep the schedule going; the next round retries
                logger.exception("worker round failed")
            stop.wait(max(0.0, min(s.queue_interval, next_check - time.monotonic())))


def _short(value: Any) -> Any:
    if isinstance(value, dict) and "dataset_drift" in value:
        keys = ("status", "n_current", "dataset_drift", "drift_share", "drifted_features")
        return {k: value.get(k) for k in keys}
    return value

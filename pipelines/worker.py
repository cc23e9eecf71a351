"""The worker: scheduled drift checks and store upkeep, in its own process.

Every `check_interval` seconds it runs a drift + performance check if at least `min_samples`
predictions arrived since the last one, and every `compact_interval` seconds it compacts the
lake (keeping every snapshot a registered model was trained on). It only reads the
predictions table and writes small result batches, so it never slows the API.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pipelines.monitoring import Monitor
from pipelines.registry import Registry
from pipelines.schema import SchemaError
from pipelines.settings import Settings
from pipelines.store import Store

logger = logging.getLogger(__name__)


@dataclass
class Worker:
    settings: Settings
    store: Store
    registry: Registry
    monitor: Monitor = field(init=False)
    last_check_at: Any = None
    last_compact: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.monitor = Monitor(self.settings, self.store, self.registry)

    @classmethod
    def open(cls, settings: Settings) -> Worker:
        store = Store.open(settings)
        registry = Registry.from_settings(settings)
        return cls(settings, store, registry)

    def tick(self) -> dict[str, Any]:
        """One round of scheduled work; returns what it did (also logged)."""
        did: dict[str, Any] = {}
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
        if time.monotonic() - self.last_compact >= self.settings.compact_interval:
            did["compact"] = self.store.compact(self.registry.trained_snapshots())
            self.last_compact = time.monotonic()
        logger.info("worker tick: %s", {k: _short(v) for k, v in did.items()})
        return did

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        logger.info(
            "worker started: drift check every %.0f s (window %d, min %d new predictions)",
            self.settings.check_interval,
            self.settings.window_size,
            self.settings.min_samples,
        )
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # keep the schedule going; the next tick retries
                logger.exception("worker tick failed")
            stop.wait(self.settings.check_interval)


def _short(value: Any) -> Any:
    if isinstance(value, dict) and "dataset_drift" in value:
        keys = ("status", "n_current", "dataset_drift", "drift_share", "drifted_features")
        return {k: value.get(k) for k in keys}
    return value

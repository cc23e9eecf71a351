"""The serving side of a rollout: which requests a challenger answers, and its health.

`RolloutHolder` polls the store for the model's running rollout (`pipelines.loop.rollouts`
starts and ends them) every `reload_interval` seconds, like `ModelHolder` polls the champion
alias, and keeps the challenger loaded. A rollout applies only while the champion it was
started beside is the one serving.

* shadow: `LiveRollout.shadows()` samples the requests the challenger answers too (every one
  at share 1); `pipelines.serving.predict` runs it in the same batched call as the champion.
* canary: `LiveRollout.serves(client)` says whether the challenger serves a request. With a
  client key (the `X-Client-Id` header) the choice is a hash of the key and the rollout id, so
  a client stays on one arm for the whole rollout; without one, each request is drawn.

`CanaryGuard` watches each arm's answers over the last minute in this process and says when
the canary's 5xx share or p99 latency exceeds the champion's by the set factor: the API then
stops the rollout at once, without waiting for labels.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pipelines.models.registry import Registry
from pipelines.serving.model import ServingModel, load_version
from pipelines.serving.poller import Poller
from pipelines.store import Store

logger = logging.getLogger(__name__)

CHAMPION_ARM, CHALLENGER_ARM = "champion", "challenger"


@dataclass(frozen=True)
class LiveRollout:
    """A running rollout as this process serves it."""

    rollout_id: str
    mode: str  # "shadow" or "canary"
    share: float
    champion_version: str
    model: ServingModel  # the challenger

    def applies_to(self, champion: ServingModel) -> bool:
        """Whether it runs beside the champion serving now (not one promoted meanwhile)."""
        return champion.version == self.champion_version

    def shadows(self) -> bool:
        """Whether the shadow answers one more request too."""
        return self.mode == "shadow" and (self.share >= 1 or random.random() < self.share)

    def serves(self, client: str | None) -> bool:
        """Whether the canary serves a request (sticky for a given client key)."""
        if self.mode != "canary":
            return False
        if not client:
            return random.random() < self.share
        digest = hashlib.blake2b(f"{self.rollout_id}:{client}".encode(), digest_size=8).digest()
        return int.from_bytes(digest) / 2**64 < self.share


class RolloutHolder(Poller):
    """This process's view of the model's running rollout, refreshed by a poller thread."""

    thread_name = "rollout-poller"

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        interval: float = 2.0,
        loader: Callable[[Registry, str], ServingModel] = load_version,
    ) -> None:
        super().__init__(interval)
        self.store = store
        self.registry = registry
        self.loader = loader
        self.current: LiveRollout | None = None
        self._lock = threading.Lock()

    def refresh(self) -> LiveRollout | None:
        """Read the running rollout now; load its challenger when it is a new one."""
        with self._lock:
            row = self.store.active_rollout(self.registry.model_name)
            if row is None:
                self.current = None
                return None
            if self.current is not None and self.current.rollout_id == row["rollout_id"]:
                return self.current
            same = self.current is not None and self.current.model.version == row["to_version"]
            model = self.current.model if same and self.current else None
            model = model or self.loader(self.registry, row["to_version"])
            self.current = LiveRollout(
                row["rollout_id"],
                row["details"]["mode"],
                float(row["details"]["share"]),
                row["from_version"],
                model,
            )
            logger.info(
                "%s rollout %s: v%s beside v%s at share %.2f",
                self.current.mode,
                self.current.rollout_id,
                model.version,
                self.current.champion_version,
                self.current.share,
            )
            return self.current

    def drop(self, rollout_id: str) -> None:
        """Stop applying a rollout now (the guard stopped it; the store says so next poll)."""
        with self._lock:
            if self.current is not None and self.current.rollout_id == rollout_id:
                self.current = None


class CanaryGuard:
    """Each arm's answers over the last `window` seconds, and whether the canary is failing.

    The canary fails when, with at least `min_requests` answers in each arm, its 5xx share
    exceeds `factor` times the champion's (and is at least `min_errors` errors), or its p99
    latency exceeds `factor` times the champion's.
    """

    def __init__(
        self,
        factor: float,
        *,
        window: float = 60.0,
        min_requests: int = 50,
        min_errors: int = 5,
        check_every: float = 1.0,
    ) -> None:
        self.factor = factor
        self.window = window
        self.min_requests = min_requests
        self.min_errors = min_errors
        self.check_every = check_every
        self._seen: dict[str, collections.deque[tuple[float, float, bool]]] = {
            CHAMPION_ARM: collections.deque(),
            CHALLENGER_ARM: collections.deque(),
        }
        self._lock = threading.Lock()
        self._next_check = 0.0

    def record(self, arm: str, latency_ms: float, error: bool) -> None:
        now = time.monotonic()
        with self._lock:
            self._seen[arm].append((now, latency_ms, error))

    def reset(self) -> None:
        with self._lock:
            for seen in self._seen.values():
                seen.clear()

    def failing(self) -> str | None:
        """Why the canary must be rolled back, or None (checked at most every `check_every`
        seconds)."""
        now = time.monotonic()
        with self._lock:
            if now < self._next_check:
                return None
            self._next_check = now + self.check_every
            for seen in self._seen.values():
                while seen and seen[0][0] < now - self.window:
                    seen.popleft()
            champion, canary = list(self._seen[CHAMPION_ARM]), list(self._seen[CHALLENGER_ARM])
        return self.judge(champion, canary)

    def judge(
        self, champion: list[tuple[float, float, bool]], canary: list[tuple[float, float, bool]]
    ) -> str | None:
        if len(champion) < self.min_requests or len(canary) < self.min_requests:
            return None
        errors = sum(e for *_, e in canary)
        share = errors / len(canary)
        base = sum(e for *_, e in champion) / len(champion)
        if errors >= self.min_errors and share > self.factor * base:
            return (
                f"canary 5xx share {share:.1%} over the last {self.window:.0f} s exceeds "
                f"{self.factor:g}× the champion's {base:.1%}"
            )
        p99 = float(np.percentile([ms for _, ms, e in canary if not e] or [0.0], 99))
        base_p99 = float(np.percentile([ms for _, ms, e in champion if not e] or [0.0], 99))
        if base_p99 > 0 and p99 > self.factor * base_p99:
            return (
                f"canary p99 latency {p99:.1f} ms over the last {self.window:.0f} s exceeds "
                f"{self.factor:g}× the champion's {base_p99:.1f} ms"
            )
        return None

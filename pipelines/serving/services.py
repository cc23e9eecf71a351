"""What a process that serves predictions holds, opened in one place for the API and the dashboard.

`Serving`: the registry, the champion being served (`ModelHolder`, which polls the `champion`
alias and swaps the model atomically), the prediction log over the process's store (which
replays what a crashed process left in the spool before anything new is logged), the
uncertainty band, and the running rollout (`RolloutHolder`) with the log of its shadow's
answers; `Serving.route` says which model answers a request. `VisionServing`: the same for
the vision champion and its image log, or None without the `vision` extra. The API
(`api.state`) opens both at start-up; the dashboard (`dashboard.data`, `dashboard.vision`)
opens them too, so a prediction made on its Predict page is served, flagged and logged exactly
as one made through the API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.models.registry import Registry
from pipelines.serving.band import Band
from pipelines.serving.model import ModelHolder, ServingModel
from pipelines.serving.predict import Shadow
from pipelines.serving.rollout import CHALLENGER_ARM, CHAMPION_ARM, RolloutHolder
from pipelines.serving.shadow_log import ShadowLog
from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.store.spool import PredictionLog

if TYPE_CHECKING:  # the vision extra is optional: imported only when it is there
    from pipelines.vision.image_log import ImageLog

logger = logging.getLogger(__name__)


def started_holder(
    registry: Registry,
    settings: Settings,
    loader: Callable[[Registry, str], Any] | None = None,
) -> ModelHolder:
    """A holder of `registry`'s champion, loaded now if there is one, polling from now on.

    A champion that fails to load is logged, not raised: the process serves what it can
    (a 503 for predictions) and picks the champion up at the next poll that succeeds.
    """
    holder = ModelHolder(registry, interval=settings.reload_interval, loader=loader)
    try:
        holder.refresh()
    except Exception:
        logger.exception("could not load the champion of %s; will retry", registry.model_name)
    holder.start()
    return holder


@dataclass
class Serving:
    """The tabular champion, its running rollout and the prediction logs of one process."""

    registry: Registry
    models: ModelHolder
    log: PredictionLog
    band: Band
    rollouts: RolloutHolder
    shadow_log: ShadowLog
    _shadow: Shadow | None = None

    @classmethod
    def start(cls, settings: Settings, store: Store) -> Serving:
        """Open everything over `store` (read-write: the logs write through it)."""
        registry = Registry.from_settings(settings)
        log = PredictionLog.started(store, settings)  # replays what a crashed process left
        rollouts = RolloutHolder(store, registry, interval=settings.reload_interval)
        try:
            rollouts.refresh()
        except Exception:
            logger.exception("could not read the running rollout; will retry")
        rollouts.start()
        return cls(
            registry=registry,
            models=started_holder(registry, settings),
            log=log,
            band=Band(settings.uncertainty_low, settings.uncertainty_high),
            rollouts=rollouts,
            shadow_log=ShadowLog.started(store, settings),
        )

    def route(
        self, champion: ServingModel, client: str | None = None
    ) -> tuple[ServingModel, Shadow | None, str | None]:
        """Who answers a request: the model that serves it, the shadow that answers it too
        (or None), and its arm in a canary ("champion" or "challenger"; None outside one).

        Args:
            client: The client's key (`X-Client-Id`): a canary keeps a client on one arm.
        """
        rollout = self.rollouts.current
        if rollout is None or not rollout.applies_to(champion):
            return champion, None, None
        if rollout.mode == "shadow":
            if not rollout.shadows():
                return champion, None, None
            if self._shadow is None or self._shadow.rollout is not rollout:
                self._shadow = Shadow(rollout, self.shadow_log)  # one per rollout: batchable
            return champion, self._shadow, None
        if rollout.serves(client):
            return rollout.model, None, CHALLENGER_ARM
        return champion, None, CHAMPION_ARM

    def stop(self) -> None:
        """Stop polling and flush the logs (what is acknowledged reaches the lake)."""
        self.models.stop()
        self.rollouts.stop()
        self.log.close()
        self.shadow_log.close()


class ServingParts:
    """Shortcuts to the parts of a holder's `serving`, for the API's state and the dashboard's
    services, which both hold one `Serving` and read its parts by name."""

    serving: Serving

    @property
    def registry(self) -> Registry:
        return self.serving.registry

    @property
    def models(self) -> ModelHolder:
        return self.serving.models

    @property
    def log(self) -> PredictionLog:
        return self.serving.log

    @property
    def band(self) -> Band:
        return self.serving.band


@dataclass
class VisionServing:
    """The vision champion and the image log of one process."""

    models: ModelHolder
    log: ImageLog

    @classmethod
    def start(cls, settings: Settings, store: Store) -> VisionServing | None:
        """Open them over `store`, or None without the `vision` extra."""
        try:
            from pipelines.vision.image_log import ImageLog
            from pipelines.vision.model import vision_loader
        except ImportError as exc:
            logger.info("vision disabled (%s): install the `vision` extra to serve images", exc)
            return None
        log = ImageLog.started(store, settings)  # replays image logs a crash left
        registry = Registry.vision_from_settings(settings)
        loader = vision_loader(settings.vision_cache_dir, settings.vision_device)
        models = started_holder(registry, settings, loader)
        return cls(models=models, log=log)

    def stop(self) -> None:
        self.models.stop()
        self.log.close()

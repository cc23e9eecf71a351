"""What a process that serves predictions holds, opened in one place for the API and the dashboard.

`Serving`: the registry, the champion being served (`ModelHolder`, which polls the `champion`
alias and swaps the model atomically), the prediction log over the process's store (which
replays what a crashed process left in the spool before anything new is logged) and the
uncertainty band. `VisionServing`: the same for the vision champion and its image log, or
None without the `vision` extra. The API (`api.state`) opens both at start-up; the dashboard
(`dashboard.data`, `dashboard.vision`) opens them too, so a prediction made on its Predict page
is served, flagged and logged exactly as one made through the API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.models.registry import Registry
from pipelines.serving.band import Band
from pipelines.serving.model import ModelHolder
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
    """The tabular champion and the prediction log of one process."""

    registry: Registry
    models: ModelHolder
    log: PredictionLog
    band: Band

    @classmethod
    def start(cls, settings: Settings, store: Store) -> Serving:
        """Open everything over `store` (read-write: the log writes through it)."""
        registry = Registry.from_settings(settings)
        log = PredictionLog.started(store, settings)  # replays what a crashed process left
        return cls(
            registry=registry,
            models=started_holder(registry, settings),
            log=log,
            band=Band(settings.uncertainty_low, settings.uncertainty_high),
        )

    def stop(self) -> None:
        """Stop polling and flush the log (what is acknowledged reaches the lake)."""
        self.models.stop()
        self.log.close()


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
        models = started_holder(registry, settings, vision_loader(settings.vision_cache_dir))
        return cls(models=models, log=log)

    def stop(self) -> None:
        self.models.stop()
        self.log.close()

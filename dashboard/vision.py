"""The dashboard's vision services: the vision champion and an image log of its own.

The Predict page answers image uploads the way POST /predict/image does
(`pipelines.vision.predict.predict_image`: decoded safely, stored by content, logged durably
before it is shown), and the Labeling page needs the vision model's class names. Both need the
vision champion loaded in this process, and image predictions go through an `ImageLog` (their
own spool segments, three tables per commit), not the tabular `PredictionLog`.

They are opened on first use, not with the app: most dashboards serve a tabular model only,
and without the `vision` extra importing them would fail. `vision()` answers None then, and
the pages say why.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dashboard.data import services
from pipelines.serving.model import ModelHolder
from pipelines.serving.services import VisionServing

if TYPE_CHECKING:
    from pipelines.vision.image_log import ImageLog
    from pipelines.vision.predict import Limits

logger = logging.getLogger(__name__)


@dataclass
class VisionServices:
    holder: ModelHolder  # the vision champion (polls the alias, like the API's)
    log: ImageLog  # image predictions made on the Predict page
    limits: Limits  # what an upload may be, as the API checks it

    @property
    def model(self) -> Any:
        """The vision champion being served, None before there is one."""
        return self.holder.model

    def names_of(self, version: str | None) -> tuple[str, ...] | None:
        """Class names of a vision version: the served champion's, or the version's own
        from the registry (a queue item made by an older version keeps its classes)."""
        model = self.holder.model
        if model is not None and (version is None or model.version == version):
            return tuple(model.names)
        if version is None:
            return None
        from pipelines.vision.model import load_vision_version

        s = services().settings
        try:
            other = load_vision_version(self.holder.registry, version, s.vision_cache_dir)
        except Exception:  # a deleted version: the caller says it cannot label it
            logger.exception("could not load vision version %s", version)
            return None
        return tuple(other.names)


_vision: VisionServices | None = None
_unavailable: str | None = None
_lock = threading.Lock()


def vision() -> VisionServices | None:
    """The vision services, opened once; None without the `vision` extra (see `unavailable`)."""
    global _vision, _unavailable
    with _lock:
        if _vision is not None or _unavailable is not None:
            return _vision
        s = services()
        serving = VisionServing.start(s.settings, s.writer)
        if serving is None:
            _unavailable = "vision is not installed: pip install -e '.[vision]'"
            return None
        from pipelines.vision.predict import Limits

        limits = Limits(s.settings.image_max_bytes, s.settings.image_max_pixels)
        _vision = VisionServices(serving.models, serving.log, limits)
        return _vision


def unavailable() -> str | None:
    """Why `vision()` is None, if it is."""
    return _unavailable


def close() -> None:
    """Stop the poller and flush the image log (the app's shutdown calls it)."""
    global _vision
    with _lock:
        if _vision is not None:
            _vision.holder.stop()
            _vision.log.close()
            _vision = None

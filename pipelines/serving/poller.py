"""A holder refreshed by a background thread: what the champion's and the rollout's holders share.

A subclass says how to `refresh`; `start` calls it every `interval` seconds on a daemon thread
until `stop`. A refresh that fails is logged and kept in `last_error`, and the holder goes on
serving what it held.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

logger = logging.getLogger(__name__)


class Poller:
    """Calls `refresh` every `interval` seconds on a thread named `thread_name`."""

    thread_name = "poller"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> Any:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _poll(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
                self.last_error = None
            except Exception as exc:  # keep serving what is held
                self.last_error = str(exc)
                logger.exception("%s failed", self.thread_name)

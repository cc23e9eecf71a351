"""Each process's log under `<data_dir>/logs/<name>.log`, rotated at midnight.

`configure` sets up the console and the file for a long-running process (`api`, `worker`,
`dashboard`); `tail` reads the latest lines back for the dashboard's Overview page.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
from collections import deque
from pathlib import Path

from pipelines.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"
PROCESSES = ("api", "worker", "dashboard")
KEEP_DAYS = 14
NOISY = ("mlflow", "alembic", "urllib3", "papermill", "httpx", "werkzeug")


def configure(
    verbose: bool = False, settings: Settings | None = None, name: str | None = None
) -> None:
    """Log to stderr and, for a named process, to `<logs_dir>/<name>.log` (daily rotation)."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not any(type(h) is logging.StreamHandler for h in root.handlers):
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(console)
    if settings is not None and name is not None:
        path = log_path(settings, name)
        if any(getattr(h, "baseFilename", None) == str(path) for h in root.handlers):
            return  # already set up in this process
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        # Several uvicorn workers append to the same file; each line is one write, so lines
        # stay whole. Only the process that finds the day changed rotates it.
        handler = logging.handlers.TimedRotatingFileHandler(
            path, when="midnight", backupCount=KEEP_DAYS, utc=True
        )
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


ENV = "DRIFTLAB_LOG_PROCESS"
"""Names the process log of a child that can't inherit handlers (uvicorn's spawned workers)."""


def configure_from_env(settings: Settings) -> None:
    """In a process started for `driftlab api` with several workers, log where its parent does."""
    name = os.environ.get(ENV)
    if name in PROCESSES:
        configure(settings=settings, name=name)


def log_path(settings: Settings, name: str) -> Path:
    if name not in PROCESSES:
        raise ValueError(f"unknown process log {name!r}; one of {', '.join(PROCESSES)}")
    return settings.logs_dir / f"{name}.log"


def tail(settings: Settings, name: str, lines: int = 20) -> list[str]:
    """The last `lines` lines of a process's current log (empty if it never ran)."""
    path = log_path(settings, name)
    if not path.exists():
        return []
    with path.open("rb") as f:
        # Read only the end: logs grow all day.
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 256 * lines))
        last = deque(f.read().decode("utf-8", "replace").splitlines(), maxlen=lines + 1)
    if size > 256 * lines and len(last) > lines:
        last.popleft()  # the first line may be cut
    return list(last)[-lines:]

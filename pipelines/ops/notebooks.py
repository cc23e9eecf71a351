"""Run the parameterized notebooks with papermill; executed copies are kept in data/runs/."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.settings import Settings

logger = logging.getLogger(__name__)

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"


def run_notebook(name: str, settings: Settings, parameters: dict[str, Any] | None = None) -> Path:
    """Execute `notebooks/<name>.ipynb` with `parameters`; returns the executed copy's path.

    Every notebook takes a `result_path` parameter: its result JSON goes next to the copy.

    The kernel inherits this process's environment, so it opens the same store and registry.
    """
    import papermill

    source = NOTEBOOKS_DIR / f"{name}.ipynb"
    if not source.exists():
        raise FileNotFoundError(f"no notebook {source}")
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    output = settings.runs_dir / f"{name}-{stamp}.ipynb"
    parameters = {"result_path": str(output.with_suffix(".json")), **(parameters or {})}
    logger.info("running %s -> %s with %s", source.name, output, parameters)
    # The kernel inherits the environment: hand it this process's store and registry.
    with _environment(settings.process_env()):
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(NOTEBOOKS_DIR.parent),
        )
    return output


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a kernel start, then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

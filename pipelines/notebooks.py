"""Run the parameterized notebooks with papermill; executed copies are kept in data/runs/."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path
from typing import Any

from pipelines.settings import Settings

logger = logging.getLogger(__name__)

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


def run_notebook(name: str, settings: Settings, parameters: dict[str, Any] | None = None) -> Path:
    """Execute `notebooks/<name>.ipynb` with `parameters`; returns the executed copy's path.

    Every notebook takes a `result_path` parameter: its result JSON goes next to the copy.

    The kernel inherits this process's environment, so it opens the same store and registry.
    """
    import papermill

    # The kernel inherits the environment: hand it this process's resolved store and registry.
    os.environ.update(settings.process_env())
    source = NOTEBOOKS_DIR / f"{name}.ipynb"
    if not source.exists():
        raise FileNotFoundError(f"no notebook {source}")
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    output = settings.runs_dir / f"{name}-{stamp}.ipynb"
    parameters = {"result_path": str(output.with_suffix(".json")), **(parameters or {})}
    logger.info("running %s -> %s with %s", source.name, output, parameters)
    papermill.execute_notebook(
        str(source),
        str(output),
        parameters=parameters,
        kernel_name="python3",
        progress_bar=False,
        cwd=str(NOTEBOOKS_DIR.parent),
    )
    return output

"""The library's layout keeps its promises: pure modules do no I/O, no module shadows the
standard library, and modules stay a size a reader takes in at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"

PURE = [
    "pipelines.settings",
    "pipelines.schema",
    "pipelines.sameorigin",
    "pipelines.drift",
    "pipelines.estimation",
    "pipelines.loop.labeling_policy",
    "pipelines.loop.retraining_policy",
    "pipelines.loop.promotion_gate",
    "pipelines.serving.band",
]
"""Modules of rules and statistics, importable (and testable) without a store, a registry,
a web framework or a deep-learning runtime."""

IO_PACKAGES = ("duckdb", "mlflow", "fastapi", "torch", "dash", "httpx", "ultralytics")

LONG = {
    "pipelines/cli.py": "every command in one place",
    "pipelines/settings.py": "every setting in one place",
    "pipelines/vision/retrain.py": "one run, start to finish",
}
"""Modules allowed past `MAX_LINES`, each with the reason (also in its docstring)."""

MAX_LINES = 500


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_nothing_that_does_io(module: str) -> None:
    code = f"import sys, {module}; print(sorted(set(sys.modules) & set({IO_PACKAGES!r})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", f"{module} imports {done.stdout.strip()}"


def test_no_module_shadows_the_standard_library() -> None:
    clashes = [
        str(path.relative_to(PIPELINES.parent))
        for path in PIPELINES.rglob("*.py")
        if path.stem in sys.stdlib_module_names
    ]
    assert not clashes


def test_modules_stay_short_unless_they_say_why() -> None:
    long = {
        str(path.relative_to(PIPELINES.parent))
        for path in PIPELINES.rglob("*.py")
        if len(path.read_text().splitlines()) > MAX_LINES
    }
    assert long <= set(LONG), sorted(long - set(LONG))

"""The parameterized notebooks, executed by papermill on small parameters."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from pipelines import demo
from pipelines.models.registry import CHAMPION, Registry
from pipelines.ops.notebooks import NOTEBOOKS_DIR, run_notebook
from pipelines.settings import Settings
from pipelines.store import Store
from tests.conftest import make_settings


@pytest.mark.parametrize(
    "name", ["train", "drift_report", "drift_report_vision", "retrain", "explore"]
)
def test_notebooks_are_thin_and_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines():
        assert ":" in line and "#" in line, f"parameter without type or comment: {line}"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and "def " not in cell.source


@pytest.mark.slow
def test_train_notebook_seeds_an_empty_store_and_registers(settings: Settings) -> None:
    out = run_notebook("train", settings, {"n_estimators": 5, "max_depth": 4})
    result = json.loads(out.with_suffix(".json").read_text())
    assert out.exists() and out.parent == settings.runs_dir
    registry = Registry.from_settings(settings)
    assert registry.alias_version(CHAMPION) == result["version"] == "1"
    assert registry.version("1").params["n_estimators"] == "5"
    store = Store.open(settings)
    assert len(store.labeled_rows(result["snapshot_id"])) == result["n_train"] + result["n_test"]


@pytest.mark.slow
def test_drift_notebook_writes_results_and_evidently_html(trained_copy: Path) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app

    s = make_settings(trained_copy)
    with TestClient(create_app(s), base_url="http://localhost") as client:
        client.post(
            "/predict",
            json={"records": demo.records(demo.demo_split(name="survey").shifted.head(300))},
        )
    out = run_notebook("drift_report", s, {"window_size": 300})
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["dataset_drift"] is True and "age" in result["drifted_features"]
    html = Path(result["report_html"])
    assert html.exists() and html.stat().st_size > 100_000 and html.parent == s.reports_dir
    assert Path(result["plot"]).exists() and Path(result["performance_plot"]).exists()
    store = Store.open(s)
    assert store.latest_drift_results()[0]["run_id"] == result["run_id"]
    estimated = result["estimated_performance"]["metrics"]["accuracy"]
    (stored,) = [r for r in store.performance_history(1) if r["metric"] == "accuracy"]
    assert (stored["run_id"], stored["estimated"]) == (result["run_id"], estimated["estimated"])


@pytest.mark.slow
def test_explore_notebook_reads_the_live_store(trained_copy: Path) -> None:
    out = run_notebook("explore", make_settings(trained_copy), {"recent": 5})
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert [o for o in outputs if o.output_type == "error"] == []
    assert "champion" in str(outputs)  # the registry table shows the champion alias

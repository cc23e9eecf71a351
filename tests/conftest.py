"""Shared fixtures: isolated HOME-like dirs, a trained store, a real API server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipelines.settings import Settings, get_settings
from tests.helpers import ApiServer

if TYPE_CHECKING:
    from pipelines.ops.cluster import ClusterLayout


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Jupyter, IPython, MLflow and Ultralytics write into $HOME: give them a temp one."""
    home = tmp_path_factory.mktemp("home")
    env = {
        "IPYTHONDIR": home / "ipython",
        "JUPYTER_CONFIG_DIR": home / "jupyter-config",
        "JUPYTER_DATA_DIR": home / "jupyter-data",
        "JUPYTER_RUNTIME_DIR": home / "jupyter-runtime",
        "YOLO_CONFIG_DIR": home / "yolo",
        "MPLCONFIGDIR": home / "mpl",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ.update(
        {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "YOLO_OFFLINE": "1"}
    )
    for key in [k for k in os.environ if k.startswith("DRIFTLAB_")]:
        del os.environ[key]  # a developer's own settings must not leak into tests
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def make_settings(data_dir: Path, **overrides: object) -> Settings:
    return Settings(data_dir=data_dir, _env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings on an empty temp data dir, also visible to `get_settings()`."""
    monkeypatch.setenv("DRIFTLAB_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield make_settings(tmp_path / "data")
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the survey demo's rows ingested and a champion trained (once per
    session). The survey (8 features, 2 categorical) is what most tests read and write."""
    from pipelines import demo
    from pipelines.models import training
    from pipelines.models.registry import Registry
    from pipelines.store import Store

    data = tmp_path_factory.mktemp("trained") / "data"
    s = make_settings(data)
    store = Store.open(s)
    demo.seed_store(store, name="survey")
    registry = Registry.from_settings(s)
    training.train(store, registry, training.TrainConfig(params={"n_estimators": 30}))
    store.close()
    return data


@pytest.fixture
def trained_copy(trained_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the trained data dir, for tests that change the registry or lake."""
    dest = tmp_path / "data"
    shutil.copytree(trained_dir, dest)
    return dest


@pytest.fixture
def api_server(trained_copy: Path) -> Iterator[ApiServer]:
    """A real `driftlab api` process on a free port over a private trained store."""
    server = ApiServer(trained_copy)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ClusterLayout]:
    """A real PostgreSQL and S3 server (the layout of `driftlab up --cluster 2`), on free ports,
    with the lake's and the registry's databases and the bucket made; stopped afterwards."""
    from pipelines.ops.cluster import ClusterLayout

    layout = ClusterLayout.on_free_ports(tmp_path / "cluster")
    pg, s3 = layout.start_services()
    try:
        yield layout
    finally:
        s3.stop()
        pg.stop()


def cluster_settings(layout: ClusterLayout, node: str, **overrides: object) -> Settings:
    """Settings of one process of a test cluster: the shared lake and registry, its own
    data dir (`<cluster>/<node>`)."""
    return layout.settings(node, _env_file=None, **overrides)

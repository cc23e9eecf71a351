from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from tests.conftest import make_settings


@pytest.fixture
def client(trained_copy: Path) -> Iterator[TestClient]:
    """The app in-process over a private trained store (flushes every 0.1 s)."""
    app = create_app(make_settings(trained_copy, flush_interval=0.1, reload_interval=0.2))
    with TestClient(app, base_url="http://localhost") as c:
        yield c


@pytest.fixture(scope="module")
def refusing_client(
    trained_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """One app per module over a private trained store, for tests whose requests are all
    refused or answered without a write: none of them can change what another sees."""
    data = tmp_path_factory.mktemp("refusals") / "data"
    shutil.copytree(trained_dir, data)
    app = create_app(make_settings(data, flush_interval=0.1, reload_interval=0.2))
    with TestClient(app, base_url="http://localhost") as c:
        yield c


@pytest.fixture
def empty_client(tmp_path: Path) -> Iterator[TestClient]:
    """The app over an empty store: no data, no model."""
    app = create_app(make_settings(tmp_path / "data", flush_interval=0.1))
    with TestClient(app, base_url="http://localhost") as c:
        yield c

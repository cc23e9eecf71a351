"""A bounded schemathesis run over the OpenAPI schema of a live server: never a 5xx."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.helpers import ApiServer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    shutil.copytree(trained_dir, data)
    server = ApiServer(data)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(live: ApiServer):
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


def test_no_server_errors(api_schema) -> None:
    # schemathesis' pytest plugin predates pytest 9, so each operation gets its own
    # hypothesis run here: generated bodies (valid and not) must never produce a 5xx.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/ingest/batch", "/feedback"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def no_5xx(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
            )

        no_5xx()

"""Object-storage settings become a DuckDB secret, boto3's environment and a child's settings."""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipelines.models.registry import sqlalchemy_uri
from pipelines.store.lake import extension_file
from pipelines.store.object_storage import ObjectStorage, is_object_store
from tests.conftest import make_settings

S3 = {
    "s3_endpoint": "http://minio.internal:9000/",
    "s3_key_id": "driftlab",
    "s3_secret": "it's-secret",
    "s3_url_style": "path",
    "s3_use_ssl": False,
}


def _secret(storage: ObjectStorage) -> dict[str, str]:
    """The secret DuckDB made from `duckdb_secret_sql`, as DuckDB reports it."""
    con = duckdb.connect()
    con.execute(f"INSTALL '{extension_file('httpfs')}'")
    con.execute("LOAD httpfs")
    con.execute(storage.duckdb_secret_sql())
    (text,) = con.execute("SELECT secret_string FROM duckdb_secrets()").fetchone()  # type: ignore[misc]
    return dict(part.split("=", 1) for part in text.split(";") if "=" in part)


def test_settings_become_a_duckdb_secret(tmp_path: Path) -> None:
    storage = ObjectStorage.from_settings(make_settings(tmp_path, **S3))
    assert storage.endpoint == "minio.internal:9000"  # DuckDB wants no scheme
    secret = _secret(storage)
    assert secret["type"] == "s3"
    assert secret["key_id"] == "driftlab"
    assert secret["endpoint"] == "minio.internal:9000"
    assert secret["url_style"] == "path"
    assert secret["use_ssl"] == "false"
    assert secret["region"] == "us-east-1"
    assert "SECRET 'it''s-secret'" in storage.duckdb_secret_sql()  # quoted as a literal


def test_without_a_key_the_machine_credentials_are_used(tmp_path: Path) -> None:
    storage = ObjectStorage.from_settings(make_settings(tmp_path))
    assert "PROVIDER credential_chain" in storage.duckdb_secret_sql()
    assert storage.endpoint_url is None
    assert storage.boto_env() == {"AWS_DEFAULT_REGION": "us-east-1"}


def test_boto_gets_the_endpoint_with_its_scheme(tmp_path: Path) -> None:
    storage = ObjectStorage.from_settings(make_settings(tmp_path, **S3))
    assert storage.boto_env() == {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "driftlab",
        "AWS_SECRET_ACCESS_KEY": "it's-secret",
        "MLFLOW_S3_ENDPOINT_URL": "http://minio.internal:9000",
    }


def test_children_open_the_same_lake_and_bucket(tmp_path: Path) -> None:
    local = make_settings(tmp_path).process_env()
    assert "DRIFTLAB_DATA_PATH" not in local  # the default follows the data dir
    assert not any(key.startswith("DRIFTLAB_S3_") for key in local)
    shared = make_settings(tmp_path, data_path="s3://lake/files/", **S3)
    env = shared.process_env()
    assert env["DRIFTLAB_DATA_PATH"] == "s3://lake/files/"
    assert env["DRIFTLAB_S3_SECRET"] == "it's-secret"
    assert env["DRIFTLAB_S3_USE_SSL"] == "false"
    child = make_settings(
        tmp_path,
        **{
            k.removeprefix("DRIFTLAB_").lower(): v
            for k, v in env.items()
            if k.startswith("DRIFTLAB_S3_")
        },
    )
    assert ObjectStorage.from_settings(child) == ObjectStorage.from_settings(shared)
    assert "it's-secret" not in repr(shared)  # never shown


def test_locations() -> None:
    assert is_object_store("s3://bucket/lake/")
    assert not is_object_store("/data/lake/files/")
    assert (
        sqlalchemy_uri("postgresql://u@db:5432/mlflow") == "postgresql+psycopg://u@db:5432/mlflow"
    )
    assert sqlalchemy_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"

"""S3-compatible object storage (AWS S3, MinIO, moto): one set of settings, two clients.

The lake's Parquet files go there through DuckDB's `httpfs` extension (a DuckDB secret), and
MLflow's artifacts through boto3 (environment variables). `DRIFTLAB_S3_*` fill both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipelines.settings import Settings
from pipelines.store.sql import string_literal


def is_object_store(location: str) -> bool:
    """Whether a data path or artifact location is on object storage (not a local folder)."""
    return location.startswith(("s3://", "s3a://", "gs://", "r2://"))


@dataclass(frozen=True)
class ObjectStorage:
    endpoint: str  # host:port of an S3-compatible server; "" for AWS S3
    key_id: str
    secret: str
    region: str
    url_style: str  # "vhost" or "path"
    use_ssl: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStorage:
        return cls(
            endpoint=settings.s3_endpoint.split("://", 1)[-1].rstrip("/"),
            key_id=settings.s3_key_id,
            secret=settings.s3_secret.get_secret_value(),
            region=settings.s3_region,
            url_style=settings.s3_url_style,
            use_ssl=settings.s3_use_ssl,
        )

    def duckdb_secret_sql(self) -> str:
        """`CREATE SECRET` for DuckDB's httpfs: every `s3://` path of the connection uses it."""
        options = [
            "TYPE s3",
            f"REGION {string_literal(self.region)}",
            f"URL_STYLE {string_literal(self.url_style)}",
            f"USE_SSL {'true' if self.use_ssl else 'false'}",
        ]
        if self.key_id:
            options += [
                f"KEY_ID {string_literal(self.key_id)}",
                f"SECRET {string_literal(self.secret)}",
            ]
        else:  # no key in the settings: the machine's own (environment, instance profile)
            options.append("PROVIDER credential_chain")
        if self.endpoint:
            options.append(f"ENDPOINT {string_literal(self.endpoint)}")
        return f"CREATE OR REPLACE SECRET driftlab_s3 ({', '.join(options)})"

    @property
    def endpoint_url(self) -> str | None:
        """The endpoint as boto3 wants it (with its scheme), None for AWS S3."""
        if not self.endpoint:
            return None
        return f"{'https' if self.use_ssl else 'http'}://{self.endpoint}"

    def boto_env(self) -> dict[str, str]:
        """What boto3 (MLflow's S3 artifact store) reads from the environment."""
        env = {"AWS_DEFAULT_REGION": self.region}
        if self.key_id:
            env |= {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret}
        if self.endpoint_url:
            env["MLFLOW_S3_ENDPOINT_URL"] = self.endpoint_url
        return env

    def export_for_boto(self) -> None:
        """Set `boto_env` in this process, where MLflow's artifact store reads it."""
        os.environ.update(self.boto_env())

"""`driftlab up --cluster N`: the layout for several machines, tried on one.

One lake (a PostgreSQL catalog, Parquet files in an S3 bucket), one registry (MLflow on the
same PostgreSQL, artifacts in the same bucket), and processes that share nothing else: N API
replicas on consecutive ports, two workers (one active, one standby, through the `worker`
lease) and the dashboard, each with a data dir of its own (a host's local disk: spool, logs,
caches). `docs/operations.md` shows the same layout on real hosts.

Locally the PostgreSQL is Debian's (a cluster under `<data_dir>/cluster/postgres`) and the
object store is moto's server, which keeps objects in memory: a local cluster starts empty
each time. Point `DRIFTLAB_S3_*` and `DRIFTLAB_CATALOG_URI` at MinIO or S3 and a real
PostgreSQL to keep it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.ops.local_services import LocalPostgres, LocalS3, free_port
from pipelines.settings import Settings
from pipelines.store.leases import Lease, holder_pid

LAKE_DB, MLFLOW_DB, BUCKET = "lake", "mlflow", "driftlab"


@dataclass
class ClusterLayout:
    """Where each part of a local cluster lives and listens."""

    root: Path  # <data_dir>/cluster
    replicas: int
    api_port: int  # replica i listens on api_port + i - 1
    dashboard_port: int
    pg_port: int
    s3_port: int
    workers: int = 2

    @classmethod
    def from_settings(
        cls, settings: Settings, replicas: int, *, pg_port: int = 54329, s3_port: int = 9000
    ) -> ClusterLayout:
        return cls(
            root=settings.data_dir / "cluster",
            replicas=replicas,
            api_port=settings.api_port,
            dashboard_port=settings.dashboard_port,
            pg_port=pg_port,
            s3_port=s3_port,
        )

    @classmethod
    def on_free_ports(cls, root: Path, replicas: int = 2) -> ClusterLayout:
        """A layout whose every port is a free one (tests, benchmarks)."""
        return cls(
            root=root,
            replicas=replicas,
            api_port=free_port(),
            dashboard_port=free_port(),
            pg_port=free_port(),
            s3_port=free_port(),
        )

    @property
    def postgres(self) -> LocalPostgres:
        return LocalPostgres(self.root / "postgres", self.pg_port)

    @property
    def object_store(self) -> LocalS3:
        return LocalS3(self.s3_port)

    def shared_env(self) -> dict[str, str]:
        """What every process of the cluster shares: the lake and the registry."""
        pg, s3 = self.postgres, self.object_store
        return {
            "DRIFTLAB_CATALOG_URI": f"postgres:{pg.conninfo(LAKE_DB)}",
            "DRIFTLAB_DATA_PATH": f"s3://{BUCKET}/lake/",
            "DRIFTLAB_MLFLOW_URI": pg.sqlalchemy_url(MLFLOW_DB),
            "DRIFTLAB_MLFLOW_ARTIFACTS": f"s3://{BUCKET}/mlflow",
            "DRIFTLAB_S3_ENDPOINT": s3.endpoint.split("://", 1)[1],
            "DRIFTLAB_S3_KEY_ID": s3.key_id,
            "DRIFTLAB_S3_SECRET": s3.secret,
            "DRIFTLAB_S3_REGION": s3.region,
            "DRIFTLAB_S3_URL_STYLE": "path",
            "DRIFTLAB_S3_USE_SSL": "false",
        }

    def node_env(self, node: str) -> dict[str, str]:
        """The environment of one process: the shared lake and registry, its own data dir."""
        return {**self.shared_env(), "DRIFTLAB_DATA_DIR": str(self.root / node)}

    def settings(self, node: str, **overrides: Any) -> Settings:
        """The settings of one process, in this process (its `node_env`, then `overrides`)."""
        fields = {k.removeprefix("DRIFTLAB_").lower(): v for k, v in self.node_env(node).items()}
        return Settings(**{**fields, **overrides})

    def active_worker(
        self, running: Mapping[str, subprocess.Popen[bytes]], wait_s: float = 30.0
    ) -> str | None:
        """The name of the running worker that holds the `worker` lease (waits for one)."""
        lease = Lease(self.shared_env()["DRIFTLAB_CATALOG_URI"], "worker", "probe", 1.0)
        try:
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                current = lease.current()
                if current is not None:
                    pid = holder_pid(current["holder"])
                    return next((n for n, proc in running.items() if proc.pid == pid), None)
                time.sleep(0.5)
            return None
        finally:
            lease.close()

    def api_ports(self) -> dict[str, int]:
        return {f"api-{i}": self.api_port + i - 1 for i in range(1, self.replicas + 1)}

    def processes(self) -> dict[str, tuple[list[str], dict[str, str]]]:
        """Every driftlab process of the cluster: name → (argv after `python -m`, env)."""
        cli = ["pipelines.cli"]
        procs: dict[str, tuple[list[str], dict[str, str]]] = {}
        for name, port in self.api_ports().items():
            procs[name] = ([*cli, "api", "--port", str(port)], self.node_env(name))
        for i in range(1, self.workers + 1):
            procs[f"worker-{i}"] = ([*cli, "worker"], self.node_env(f"worker-{i}"))
        procs["dashboard"] = ([*cli, "dashboard"], self.node_env("dashboard"))
        return procs

    def start_services(self, *, fresh: bool = True) -> tuple[LocalPostgres, LocalS3]:
        """Start PostgreSQL and the object store, with the databases and the bucket.

        `fresh`: start from nothing (moto kept no objects of a previous run, so an old
        catalog would point at files that are gone)."""
        if fresh and self.root.exists():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        pg = self.postgres.start()
        for db in (LAKE_DB, MLFLOW_DB):
            pg.create_database(db)
        s3 = self.object_store.start()
        s3.create_bucket(BUCKET)
        return pg, s3

    def banner(self, active_worker: str | None = None) -> str:
        """The layout, for the console; `active_worker` is the worker holding the lease."""
        s3 = self.object_store
        lines = [
            f"\ndriftlab cluster is up ({self.replicas} API replicas, {self.workers} workers)",
            f"  postgres   127.0.0.1:{self.pg_port}  databases {LAKE_DB} (catalog, leases) "
            f"and {MLFLOW_DB} (registry)",
            f"  s3         {s3.endpoint}  bucket {BUCKET} (moto: in memory)",
        ]
        for name, port in self.api_ports().items():
            lines.append(f"  {name:<10} http://127.0.0.1:{port}  data {self.root / name}")
        for i in range(1, self.workers + 1):
            name = f"worker-{i}"
            role = (
                "?" if active_worker is None else "active" if name == active_worker else "standby"
            )
            lines.append(f"  {name:<10} {role:<8} data {self.root / name}")
        lines.append(f"  dashboard  http://127.0.0.1:{self.dashboard_port}")
        lines.append(f"  catalog    {self.shared_env()['DRIFTLAB_CATALOG_URI']}")
        return "\n".join(lines) + "\n"

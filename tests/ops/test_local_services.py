"""The local PostgreSQL and S3 servers, real ones: rows survive a restart of PostgreSQL, objects
go through moto's S3 with boto3 and with DuckDB's httpfs, and both free their port on stop."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest

from pipelines.ops.local_services import (
    LocalPostgres,
    LocalS3,
    free_port,
    port_open,
    postgres_bin,
)
from pipelines.store.lake import extension_file
from pipelines.store.sql import string_literal

# Real servers (and Debian's postgresql, which `make test` installs, `make test-fast` doesn't).
pytestmark = pytest.mark.e2e

BUCKET = "driftlab-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[LocalS3]:
    with LocalS3(free_port()) as server:
        server.create_bucket(BUCKET)
        yield server


def test_postgres_bin_finds_initdb() -> None:
    initdb = postgres_bin("initdb")
    assert initdb.name == "initdb" and os.access(initdb, os.X_OK)


def test_postgres_bin_names_the_package_when_missing() -> None:
    with pytest.raises(RuntimeError, match="apt-get install postgresql"):
        postgres_bin("no-such-postgres-program")


def test_postgres_keeps_rows_across_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "pg"
    pg = LocalPostgres(root, free_port())
    with pg:
        assert pg.start() is pg  # already running: nothing to do
        pg.create_database("driftlab")
        pg.create_database("driftlab")  # exists: nothing to do
        with psycopg.connect(pg.conninfo("driftlab"), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
            conn.execute("INSERT INTO t VALUES (%s, %s)", [1, "kept"])
            assert conn.execute("SELECT name FROM t").fetchall() == [("kept",)]
            settings = dict(conn.execute("SELECT name, setting FROM pg_settings").fetchall())
        assert settings["max_connections"] == "200"
        assert settings["fsync"] == "on" and settings["synchronous_commit"] == "on"
        assert settings["listen_addresses"] == "127.0.0.1"
        assert (root / f".s.PGSQL.{pg.port}").is_socket()
        assert pg.pid is not None
        if os.geteuid() == 0:  # PostgreSQL refuses root: it runs as the `postgres` OS user
            assert os.stat(f"/proc/{pg.pid}").st_uid == pwd.getpwnam("postgres").pw_uid
    assert pg.pid is None
    assert not port_open(pg.port)
    pg.stop()  # stopped already: nothing to do

    with LocalPostgres(root, pg.port) as again:
        with psycopg.connect(again.conninfo("driftlab")) as conn:
            assert conn.execute("SELECT id, name FROM t").fetchall() == [(1, "kept")]
    assert not port_open(pg.port)


def test_postgres_urls() -> None:
    pg = LocalPostgres(Path("/nowhere"), 5433)
    assert pg.conninfo("lake") == "dbname=lake host=127.0.0.1 port=5433 user=postgres"
    assert pg.sqlalchemy_url("mlflow") == "postgresql+psycopg://postgres@127.0.0.1:5433/mlflow"


def test_s3_puts_and_gets_an_object(s3: LocalS3) -> None:
    s3.create_bucket(BUCKET)  # exists: nothing to do
    client = s3.client()
    client.put_object(Bucket=BUCKET, Key="a/b.txt", Body=b"hello")
    assert client.get_object(Bucket=BUCKET, Key="a/b.txt")["Body"].read() == b"hello"


def test_duckdb_writes_and_reads_parquet_on_s3(s3: LocalS3) -> None:
    con = duckdb.connect()
    con.execute(f"INSTALL {string_literal(str(extension_file('httpfs')))}")
    con.execute("LOAD httpfs")
    con.execute(
        f"""CREATE SECRET (
            TYPE s3, KEY_ID {string_literal(s3.key_id)}, SECRET {string_literal(s3.secret)},
            REGION {string_literal(s3.region)}, ENDPOINT '127.0.0.1:{s3.port}',
            URL_STYLE 'path', USE_SSL false
        )"""
    )
    con.execute(f"COPY (SELECT 42 AS x) TO 's3://{BUCKET}/x.parquet'")
    assert con.execute(f"SELECT x FROM 's3://{BUCKET}/x.parquet'").fetchall() == [(42,)]
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert "x.parquet" in keys


def test_s3_stop_frees_the_port(tmp_path: Path) -> None:
    server = LocalS3(free_port(), log=tmp_path / "moto.log").start()
    pid = server.pid
    assert pid is not None and port_open(server.port)
    server.stop()
    assert server.pid is None
    assert not port_open(server.port)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    server.stop()  # stopped already: nothing to do

"""The DuckLake connection: extensions from pip packages, the attach, retried write transactions.

DuckDB alone lets one process write a database file; DuckLake keeps the catalog in SQLite (or
PostgreSQL) and the data in Parquet files, so every driftlab process attaches the same lake and
commits ACID snapshots concurrently. A commit that loses a race is retried with backoff.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from pipelines.store.commit_lock import AdvisoryCommitLock, CommitLock, FileCommitLock
from pipelines.store.object_storage import ObjectStorage, is_object_store
from pipelines.store.sql import string_literal

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Error texts of commits that lost a race with another writer; anything else is a real error.
# Errors of a commit that lost a race with another writer; the whole transaction is re-run.
# "values were supplied": DuckLake's "table ducklake_inlined_data_N_M has k columns but k+1
# values were supplied", a commit of an attachment whose cached schema another attachment has
# just changed (stores opened at once on a new data dir, then the first batch adds `features`);
# the re-run reads the current schema and commits (tests/pipelines/store/test_store.py).
_RETRYABLE = (
    "conflict",
    "locked",
    "busy",
    "database is locked",
    "unique constraint",
    "values were supplied",
)


_SETUP = "__driftlab_catalog_setup"
"""The SQLite catalog attached alone, briefly, before the lake is (`Lake._prepare_catalog`)."""

METADATA = "__ducklake_metadata_lake"
"""The catalog database (SQLite or PostgreSQL) DuckLake attaches for the lake `lake`."""

SQLITE_BUSY_TIMEOUT_MS = 900
"""How long SQLite itself waits for a busy catalog before `Lake._retry` takes over.

The SQLite inside DuckDB's sqlite extension is built without `usleep`: its busy handler
sleeps in whole seconds, and gives up at once when the timeout is under one second. On a
read-write attachment every DuckLake transaction opens a fresh catalog connection, and the
process's last one to close checkpoints and deletes the WAL under an exclusive lock; a
thread opening a connection in that instant (or while the next one rebuilds the WAL index)
finds the catalog busy, and with a timeout of a second or more sleeps 1.0 s, where the lock
is held for well under a millisecond. Under 1 s, SQLite reports "database is locked" at once
and `_retry` tries again after milliseconds. Writers of one machine queue on the `.writelock`
file lock, not here, so they lose no fairness. (A build with `usleep` would poll finely up to
0.9 s.) This makes the stall rarer, not impossible: under load a WAL read retry can still
sleep a whole second (`python -m benchmarks --only store` counts such reads).
"""


def extension_file(name: str) -> Path:
    """The `.duckdb_extension` file shipped in the `duckdb-extension-<name>` pip package."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package duckdb-extension-{name} is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    path = root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        found = sorted(root.glob(f"extensions/*/{name}.duckdb_extension"))
        raise RuntimeError(
            f"no {name} extension for duckdb {duckdb.__version__} in {root} (found {found}); "
            f"pin duckdb-extension-{name} to the duckdb version"
        )
    return path


def _create_wal_catalog(catalog: Path) -> None:
    """Make an empty SQLite catalog in WAL mode (persistent: readers never wait for a commit).

    Made under a private name and linked into place, so no other process or thread ever opens
    it before it is whole, and Python's sqlite3 (a second copy of SQLite in this process, see
    `Lake._prepare_catalog`) is closed before anyone else can hold a lock on it.
    """
    private = catalog.with_name(f".{catalog.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        with contextlib.closing(sqlite3.connect(private)) as db:
            db.execute("PRAGMA journal_mode=WAL")
        try:
            os.link(private, catalog)
        except FileExistsError:
            pass  # another process or thread won the race: use its catalog
        except OSError:  # a filesystem without hard links
            if not catalog.exists():
                os.replace(private, catalog)
    finally:
        private.unlink(missing_ok=True)


def _is_retryable(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _RETRYABLE)


class Lake:
    """One process's attachment of the lake (`lake.` schema), shared by its threads.

    Args:
        catalog_uri: `sqlite:<path>` or `postgres:<libpq connection string>`.
        data_path: where DuckLake writes Parquet files (a folder or an object-store URL).
        read_only: attach without write access (readers such as the dashboard may use it).
        inlining_row_limit: commits of up to this many rows are kept inside the catalog, so the
            many small human writes don't each make a Parquet file.
        override_data_path: record `data_path` in a SQLite catalog that has another one (the
            embedded default, whose files move with the data dir when it is copied or moved).
        threads: DuckDB's worker threads for this attachment (None: DuckDB's default, one per
            core). On two cores a second thread mostly adds CPU to a write of a few 10k rows
            (`python -m benchmarks --only store`): one thread leaves the other core to a
            server's requests.
        object_storage: credentials and endpoint for a `data_path` on object storage.
    """

    def __init__(
        self,
        catalog_uri: str,
        data_path: str,
        *,
        read_only: bool = False,
        inlining_row_limit: int = 200,
        override_data_path: bool = False,
        busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
        threads: int | None = None,
        object_storage: ObjectStorage | None = None,
    ) -> None:
        self.catalog_uri = catalog_uri
        self.data_path = data_path
        self.read_only = read_only
        self._local = threading.local()
        self._con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
        try:  # the bar would print on long queries; in a Jupyter kernel it wants ipywidgets
            self._con.execute("SET enable_progress_bar = false")
        except duckdb.Error:
            logger.debug("could not switch off the progress bar")
        if threads is not None:
            self._con.execute(f"SET threads = {int(threads)}")
        backend = catalog_uri.split(":", 1)[0]
        if backend not in {"sqlite", "postgres"}:
            raise ValueError(
                f"catalog_uri must start with sqlite: or postgres:, got {catalog_uri!r}"
            )
        for ext in ("ducklake", backend):
            self._con.execute(f"INSTALL {string_literal(str(extension_file(ext)))}")
            self._con.execute(f"LOAD {ext}")
        # DuckLake's own commit retry (on snapshot conflicts): many quick tries, not 10 slow ones.
        # Set after LOAD: before it, on a machine whose ~/.duckdb has no copy of the extension
        # yet, DuckDB tries to autoload it for the setting's name and fails.
        self._con.execute("SET ducklake_max_retry_count = 200")
        self._con.execute("SET ducklake_retry_wait_ms = 10")
        self._con.execute("SET ducklake_retry_backoff = 1.2")
        if backend == "sqlite":
            # Catalog tables are small, yet a scan split over worker threads opened one SQLite
            # connection per thread, each with the extension's 5 s busy timeout instead of ours
            # (see `SQLITE_BUSY_TIMEOUT_MS`). GLOBAL: each thread's cursor is its own connection.
            self._con.execute("SET GLOBAL sqlite_disable_multithreaded_scans = true")
        if is_object_store(data_path):
            self._con.execute(f"INSTALL {string_literal(str(extension_file('httpfs')))}")
            self._con.execute("LOAD httpfs")
            if object_storage is not None:
                self._con.execute(object_storage.duckdb_secret_sql())
        # Writers take turns (`pipelines.store.commit_lock`): on a SQLite catalog, an OS file
        # lock, queued in the kernel rather than polling SQLite's busy lock, which under load
        # lets one process starve for seconds; on PostgreSQL, an advisory lock in the catalog.
        self._commit_lock: CommitLock | None = None
        if backend == "sqlite":
            catalog = Path(catalog_uri.split(":", 1)[1])
            catalog.parent.mkdir(parents=True, exist_ok=True)
            if not read_only:
                self._commit_lock = FileCommitLock(catalog.with_name(catalog.name + ".writelock"))
            self._prepare_catalog(catalog, data_path if override_data_path else None)
        elif not read_only:
            self._commit_lock = AdvisoryCommitLock(catalog_uri)
        if "://" not in data_path:
            Path(data_path).mkdir(parents=True, exist_ok=True)
        options = [
            f"DATA_PATH {string_literal(data_path)}",
            f"DATA_INLINING_ROW_LIMIT {int(inlining_row_limit)}",
        ]
        if backend == "sqlite":
            # Below 1 s on purpose: see `SQLITE_BUSY_TIMEOUT_MS`.
            options.append(f"META_BUSY_TIMEOUT {int(busy_timeout_ms)}")
        if read_only:
            options.append("READ_ONLY")
        self._attach_sql = (
            f"ATTACH {string_literal('ducklake:' + catalog_uri)} AS lake ({', '.join(options)})"
        )
        # Two processes attaching a brand-new catalog at once race to create it: retry.
        self._retry(lambda: self._con.execute(self._attach_sql), what="attach")

    def reattach(self) -> None:
        """Attach the lake again, before any other thread uses this attachment.

        DuckLake reads a table's options (its inlining limit) when the lake is attached: an
        attachment made while another process was still creating the tables and setting their
        options goes on inlining rows into a table that must never inline them, and a later
        column change makes those commits fail ("… has 8 columns but 9 values were supplied")
        however often they are retried. `Store.init` calls this when the options were not
        there yet at attach time.
        """
        self._local = threading.local()  # cursors of the old attachment
        self._con.execute("DETACH lake")
        self._retry(lambda: self._con.execute(self._attach_sql), what="attach")

    def _prepare_catalog(self, catalog: Path, data_path: str | None) -> None:
        """Put a SQLite catalog in WAL mode and, given `data_path`, record it there.

        Both go through DuckDB's own SQLite (the sqlite extension), never Python's `sqlite3`
        on an existing catalog: a process holds one lock table per copy of SQLite, and closing
        any descriptor of a file drops every POSIX lock the process holds on it. Python's
        connection closing would silently release the locks that another attachment of this
        process (the dashboard and a notebook kernel in one process, a test opening two
        stores) holds on the catalog and its WAL index, mid-transaction.

        The data path: DuckLake's attach-time override is not enough for a moved catalog: file
        cleanup after compaction resolves paths against the recorded data path, and would
        delete the *old* location's files.
        """
        if not catalog.exists():
            _create_wal_catalog(catalog)
        self._retry(
            lambda: self._con.execute(
                f"ATTACH {string_literal(str(catalog))} AS {_SETUP} (TYPE sqlite)"
            ),
            what="attach the catalog",
        )
        try:
            mode = self._retry(
                lambda: self._con.execute(
                    f"SELECT * FROM sqlite_query('{_SETUP}', 'PRAGMA journal_mode')"
                ).fetchall()[0][0],
                what="read the journal mode",
            )
            if data_path is not None:
                self._retry(lambda: self._record_data_path(data_path), what="record data path")
        finally:
            self._con.execute(f"DETACH {_SETUP}")
        if str(mode).lower() != "wal":
            # A catalog made before driftlab used WAL: no driftlab attachment of this process
            # holds it (each one switches it first), and the switch needs a connection outside
            # a transaction, which DuckDB's SQLite does not offer.
            with contextlib.closing(sqlite3.connect(catalog, timeout=30)) as db:
                db.execute("PRAGMA journal_mode=WAL")

    def _record_data_path(self, data_path: str) -> None:
        exists = self._con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
            [_SETUP, "ducklake_metadata"],
        ).fetchall()[0][0]
        if not exists:
            return  # a new catalog: the attach records data_path
        rows = self._con.execute(
            f"SELECT value FROM {_SETUP}.ducklake_metadata WHERE key = 'data_path'"
        ).fetchall()
        if rows and rows[0][0] != data_path:
            logger.info("data dir moved: files now under %s (were %s)", data_path, rows[0][0])
            self._con.execute(
                f"UPDATE {_SETUP}.ducklake_metadata SET value = ? WHERE key = 'data_path'",
                [data_path],
            )

    # -- connections ---------------------------------------------------------------------------

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections are not shared across threads)."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
        return cur

    def close(self) -> None:
        self._con.close()
        if self._commit_lock is not None:
            self._commit_lock.close()

    # -- reads ---------------------------------------------------------------------------------

    def query(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pa.Table:
        """Run a read and return an Arrow table (each call sees the latest snapshot)."""
        return self._retry(lambda: self.cursor().execute(sql, params).to_arrow_table(), what="read")

    def rows(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> list[tuple]:
        return self._retry(lambda: self.cursor().execute(sql, params).fetchall(), what="read")

    def query_with(
        self, sql: str, params: list[Any] | None, tables: dict[str, pa.Table]
    ) -> pa.Table:
        """`query` with Arrow tables registered under the given names for the statement
        (a list of ids to join against), retried like any read."""

        def read() -> pa.Table:
            cur = self.cursor()
            for name, table in tables.items():
                cur.register(name, table)
            try:
                return cur.execute(sql, params).to_arrow_table()
            finally:
                for name in tables:
                    cur.unregister(name)

        return self._retry(read, what="read")

    def scalar(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> Any:
        # fetchall, not fetchone: an unfinished result keeps the SQLite catalog read-locked.
        rows = self._retry(lambda: self.cursor().execute(sql, params).fetchall(), what="read")
        return rows[0][0] if rows else None

    def snapshot_id(self) -> int:
        """The id of the latest committed snapshot: what a reader sees now.

        Read from the catalog's own table, through the catalog database DuckLake attaches
        (`__ducklake_metadata_lake`): the cheapest way, and every `/ingest/batch` answer pays
        for it after its commit. `current_snapshot()` costs more (it opens a DuckLake
        transaction first), and `max(snapshot_id)` over `ducklake_snapshots()` far more (it
        builds every snapshot's change list, so its cost grows with the snapshots). (Python's
        own sqlite3 must not open the catalog beside DuckDB's SQLite: two copies of SQLite in
        one process release each other's POSIX locks.)
        """
        try:
            return int(self.scalar(f"SELECT max(snapshot_id) FROM {METADATA}.ducklake_snapshot"))
        except duckdb.CatalogException:  # a DuckLake that names its catalog otherwise
            return int(self.scalar("SELECT id FROM lake.current_snapshot()"))

    # -- writes --------------------------------------------------------------------------------

    def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T], *, what: str = "write") -> T:
        """Run `fn` in one short transaction and commit it, retrying if another writer won.

        `fn` must be safe to run again: it is re-run from the start after a lost race.
        """
        if self.read_only:
            raise RuntimeError("this lake is attached read-only")
        cur = self.cursor()

        def attempt() -> T:
            with self.commit_lock():
                return transaction()

        def transaction() -> T:
            cur.execute("BEGIN TRANSACTION")
            try:
                result = fn(cur)
                cur.execute("COMMIT")
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass  # the failed commit already ended the transaction
                raise
            return result

        return self._retry(attempt, what=what)

    @contextlib.contextmanager
    def commit_lock(self) -> Iterator[None]:
        """Held around every write: writers of all processes (and, on PostgreSQL, of all
        machines) take turns (`pipelines.store.commit_lock`). Reentrant in a thread: a group
        commit takes it before it gathers its batch, then writes (`pipelines.store.group`)."""
        if self._commit_lock is None or getattr(self._local, "holds_commit_lock", False):
            yield
            return
        with self._commit_lock.held():
            self._local.holds_commit_lock = True
            try:
                yield
            finally:
                self._local.holds_commit_lock = False

    @staticmethod
    def _retry(fn: Callable[[], T], *, what: str, attempts: int = 30) -> T:
        delay = 0.005
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except duckdb.Error as exc:
                if attempt == attempts or not _is_retryable(exc):
                    raise
                logger.debug("%s lost a race (attempt %d): %s", what, attempt, exc)
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)
        raise AssertionError("unreachable")

"""How the lake's writers take turns: one commit at a time, across processes and machines.

DuckLake retries a commit that lost a race, but many writers racing on one catalog waste their
work and can starve one of them (and on PostgreSQL, concurrent commits to one table have been
reported to fail outright: duckdb/ducklake#1094, #1283). driftlab queues them instead:

* SQLite catalog (one machine): an OS file lock beside the catalog, queued in the kernel
  (`FileCommitLock`).
* PostgreSQL catalog (several machines): a session-level advisory lock in the catalog's own
  database (`AdvisoryCommitLock`), queued by PostgreSQL. A process that dies holding it loses
  it with its connection, so a `kill -9` never leaves the lake locked.

Either is held only around one short transaction (`Lake.write`).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import psycopg

from pipelines.store import postgres

logger = logging.getLogger(__name__)

ADVISORY_KEY = zlib.crc32(b"driftlab.lake.commit")
"""The advisory lock's key (advisory locks are per database: one lake per database)."""

WAIT_TIMEOUT = "60s"
"""Longest wait for the lock: a holder stuck that long (a paused process) fails the write
with a clear error rather than hanging every writer of the lake."""


class CommitLock(Protocol):
    def held(self) -> contextlib.AbstractContextManager[None]: ...

    def close(self) -> None: ...


class FileCommitLock:
    """An `flock` on a file beside a SQLite catalog: the writers of one machine."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def close(self) -> None:
        pass


class AdvisoryCommitLock:
    """`pg_advisory_lock` on one session per process; this process's threads queue on a
    thread lock first, so the session only ever waits for other processes."""

    def __init__(self, catalog_uri: str) -> None:
        self.catalog_uri = catalog_uri
        self._thread_lock = threading.Lock()
        self._session: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._session is None or self._session.closed:
            self._session = postgres.connect(self.catalog_uri)
            self._session.execute(f"SET lock_timeout = '{WAIT_TIMEOUT}'")
        return self._session

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._thread_lock:
            session = self._acquire()
            try:
                yield
            finally:
                try:
                    session.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_KEY])
                except psycopg.Error:  # the session is gone, and its lock with it
                    self._reset()

    def _acquire(self) -> psycopg.Connection:
        for attempt in (1, 2):  # a session dropped since the last write: reconnect once
            try:
                session = self._connection()
                session.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_KEY])
                return session
            except psycopg.errors.LockNotAvailable as exc:
                raise TimeoutError(
                    f"the lake's commit lock was held by another process for over "
                    f"{WAIT_TIMEOUT} (see pg_locks where locktype = 'advisory')"
                ) from exc
            except psycopg.OperationalError:
                self._reset()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _reset(self) -> None:
        if self._session is not None:
            with contextlib.suppress(psycopg.Error):
                self._session.close()
        self._session = None

    def close(self) -> None:
        with self._thread_lock:
            self._reset()

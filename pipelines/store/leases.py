"""Leases in PostgreSQL: one holder at a time across machines, lost unless renewed.

With a shared (PostgreSQL) catalog there is no disk that every host sees, so what one machine
does with file locks (one worker, one retrain at a time) goes through a row of
`driftlab_leases` in the catalog's database. Only PostgreSQL's clock decides expiry; the holder
counts its own validity from *before* each renewal, so it always gives up before another process
can take over (`LeaseKeeper.active`). `epoch` grows at each change of holder: a fencing number
to tell one tenure from the next in logs and events.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from pipelines.store import postgres

logger = logging.getLogger(__name__)

_CREATE = """
CREATE TABLE IF NOT EXISTS driftlab_leases (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    epoch       bigint NOT NULL,
    acquired_at timestamptz NOT NULL,
    renewed_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
)
"""

# Take a free or expired lease, or renew one this holder has: one statement, so two
# contenders cannot both win (the row lock of ON CONFLICT orders them).
_TAKE = """
INSERT INTO driftlab_leases AS l (name, holder, epoch, acquired_at, renewed_at, expires_at)
VALUES (%(name)s, %(holder)s, 1, now(), now(), now() + %(ttl)s * interval '1 second')
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder,
    epoch = CASE WHEN l.holder = excluded.holder THEN l.epoch ELSE l.epoch + 1 END,
    acquired_at = CASE WHEN l.holder = excluded.holder THEN l.acquired_at ELSE now() END,
    renewed_at = now(),
    expires_at = excluded.expires_at
WHERE l.holder = excluded.holder OR l.expires_at < now()
RETURNING epoch
"""


def _clock() -> float:
    """Seconds that go on counting while the machine is suspended (Linux's `CLOCK_BOOTTIME`;
    `monotonic` stops), so a host waking from sleep knows its lease ran out meanwhile."""
    if hasattr(time, "CLOCK_BOOTTIME"):
        return time.clock_gettime(time.CLOCK_BOOTTIME)
    return time.monotonic()


def new_holder(role: str) -> str:
    """A holder name that says which process it is: role, host, pid and a random tail."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def holder_pid(holder: str) -> int:
    """The process id in a `new_holder` name (on its own host)."""
    return int(holder.split(":")[1])


@dataclass
class Lease:
    """One named lease for one would-be holder, in the catalog's database."""

    catalog_uri: str
    name: str
    holder: str
    ttl_s: float

    def __post_init__(self) -> None:
        self._session: psycopg.Connection | None = None
        self._lock = threading.Lock()  # one session, used by the keeper and callers

    def _run(self, sql: str, params: dict[str, Any]) -> list[tuple]:
        with self._lock:
            for attempt in (1, 2):  # a dropped session: reconnect once
                try:
                    if self._session is None or self._session.closed:
                        self._session = postgres.connect(self.catalog_uri)
                        _create_table(self._session)
                    cur = self._session.execute(sql, params)
                    return cur.fetchall() if cur.description else []
                except psycopg.OperationalError:
                    self._close_session()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def try_acquire(self) -> int | None:
        """Take the lease if it is free or expired, or renew it if this holder has it;
        returns the epoch, or None when another holder has it."""
        rows = self._run(_TAKE, {"name": self.name, "holder": self.holder, "ttl": self.ttl_s})
        return int(rows[0][0]) if rows else None

    def release(self) -> None:
        """Give the lease up now (only if this holder has it)."""
        self._run(
            # Expired, not deleted: the epoch goes on counting from it.
            "UPDATE driftlab_leases SET expires_at = '-infinity' "
            "WHERE name = %(name)s AND holder = %(holder)s",
            {"name": self.name, "holder": self.holder},
        )

    def current(self) -> dict[str, Any] | None:
        """The unexpired holder of this lease (any holder), or None."""
        rows = self._run(
            "SELECT holder, epoch, acquired_at, expires_at FROM driftlab_leases "
            "WHERE name = %(name)s AND expires_at >= now()",
            {"name": self.name},
        )
        if not rows:
            return None
        holder, epoch, acquired_at, expires_at = rows[0]
        return {
            "holder": holder,
            "epoch": epoch,
            "acquired_at": acquired_at,
            "expires_at": expires_at,
        }

    def _close_session(self) -> None:
        if self._session is not None:
            try:
                self._session.close()
            except psycopg.Error:
                pass
        self._session = None

    def close(self) -> None:
        with self._lock:
            self._close_session()


def _create_table(session: psycopg.Connection) -> None:
    try:
        session.execute(_CREATE)
    except psycopg.errors.UniqueViolation:
        pass  # another process created it at the same instant


class LeaseKeeper:
    """Tries to take and keep a lease in a background thread, every `every_s` seconds.

    `active` is True while this process may act as the holder: from a successful take or
    renewal until `ttl_s` after the moment that request was *sent*, which is never later than
    PostgreSQL's expiry. A keeper whose renewals fail (PostgreSQL unreachable, lease taken)
    stops being active on its own, before anyone else can take over.
    """

    def __init__(self, lease: Lease, every_s: float, *, release_on_stop: bool = True) -> None:
        self.lease = lease
        self.every_s = every_s
        self.release_on_stop = release_on_stop
        self.epoch: int | None = None
        self._valid_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{lease.name}", daemon=True)

    @property
    def active(self) -> bool:
        return _clock() < self._valid_until

    def attempt(self) -> bool:
        """One take-or-renew now; returns `active`."""
        sent = _clock()
        was_active = self.active
        try:
            epoch = self.lease.try_acquire()
        except psycopg.Error as exc:
            logger.warning("lease %s: could not renew: %s", self.lease.name, exc)
            return self.active
        if epoch is None:
            self._valid_until = 0.0
            if was_active:
                logger.warning("lease %s lost to another holder", self.lease.name)
        else:
            self._valid_until = sent + self.lease.ttl_s
            if not was_active:
                logger.info(
                    "lease %s taken by %s (epoch %d)", self.lease.name, self.lease.holder, epoch
                )
            self.epoch = epoch
        return self.active

    def start(self) -> LeaseKeeper:
        self.attempt()
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.attempt()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self.release_on_stop and self.active:
            try:
                self.lease.release()
            except psycopg.Error as exc:  # it expires on its own
                logger.warning("lease %s: could not release: %s", self.lease.name, exc)
        self._valid_until = 0.0
        self.lease.close()

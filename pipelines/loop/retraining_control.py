"""Starting and following retraining runs: one at a time across processes, in the background.

`trigger` starts `driftlab retrain` (or, for the vision model, `pipelines.vision.retrain`) as a
child process and returns at once; the API, the worker and the dashboard all call it. A lock
keeps it to one run at a time across processes, whichever model: a file lock under `data/runs/`
on one machine, the `retrain` lease (`pipelines.store.leases`) on a shared PostgreSQL catalog.
The lock is taken here and handed to the child, which holds it until it exits. `status` and
`history` read the runs back from their `retraining_events` rows.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.settings import Settings
from pipelines.store import Store, new_id, utcnow
from pipelines.store.leases import Lease, LeaseKeeper, new_holder

logger = logging.getLogger(__name__)

LOCK_NAME = "retrain.lock"
TABULAR, VISION = "tabular", "vision"
MODELS = (TABULAR, VISION)


class RetrainBusy(RuntimeError):
    """Another retrain holds the lock."""


def model_name(settings: Settings, vision: bool = False) -> str:
    """The registered model a retrain of this kind trains."""
    return settings.vision_model_name if vision else settings.model_name


def last_retrain_at(settings: Settings, store: Store, *, vision: bool = False) -> float | None:
    """When the model's last run started (epoch seconds), None if never: its cooldown.

    Per model: a vision run must not hold back the tabular loop, nor the reverse.
    """
    runs = store.retraining_runs(
        limit=1, model_name=model_name(settings, vision), unnamed_as=settings.model_name
    )
    return runs[0]["started_at"].timestamp() if runs else None


def is_running(settings: Settings) -> bool:
    """Whether some process (on a shared catalog: on any machine) holds the retrain lock."""
    if settings.shared_catalog:
        lease = _retrain_lease(settings, holder="probe")
        try:
            return lease.current() is not None
        finally:
            lease.close()
    try:
        with lock(settings):
            return False
    except RetrainBusy:
        return True


class HeldLock:
    """The retrain lock, held by this process; `handoff` passes it to the run's child."""

    def handoff(self) -> tuple[list[str], tuple[int, ...]]:
        """Arguments and file descriptors that give the lock to a child process."""
        raise NotImplementedError

    def detach(self) -> None:
        """Drop this process's hold after a handoff: the child holds the lock from now on."""
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class FileLock(HeldLock):
    """An `flock` under `data/runs/` (one machine). It belongs to the open file, not the
    process: a child that inherits the descriptor holds the lock until it exits."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def handoff(self) -> tuple[list[str], tuple[int, ...]]:
        return ["--lock-fd", str(self.fd)], (self.fd,)

    def detach(self) -> None:
        os.close(self.fd)  # the child's copy keeps the lock

    def release(self) -> None:
        os.close(self.fd)  # releases the lock, also when the process dies


class LeaseLock(HeldLock):
    """The `retrain` lease in the PostgreSQL catalog (several machines). The holder renews it
    while the run lasts; a run killed outright loses it `RETRAIN_LEASE_INTERVALS` renewal
    intervals later. The child adopts the same holder name and renews it from then on."""

    def __init__(self, settings: Settings, holder: str) -> None:
        self.keeper = LeaseKeeper(_retrain_lease(settings, holder=holder), settings.lease_interval)

    @classmethod
    def take(cls, settings: Settings, holder: str, *, refused: str) -> LeaseLock:
        """Take (or, for the holder it was handed to, renew) the lease and keep renewing it.

        Raises:
            RetrainBusy: Another holder has it (`refused` says why).
        """
        held = cls(settings, holder)
        if not held.keeper.attempt():
            held.keeper.stop()
            raise RetrainBusy(refused)
        held.keeper.start()
        return held

    def handoff(self) -> tuple[list[str], tuple[int, ...]]:
        return [f"--lock-lease={self.keeper.lease.holder}"], ()

    def detach(self) -> None:
        self.keeper.release_on_stop = False
        self.keeper.stop()

    def release(self) -> None:
        self.keeper.stop()


RETRAIN_LEASE_INTERVALS = 6
"""A retrain's lease outlives its last renewal by this many `lease_interval`s: long enough for
the child to start and adopt it, short enough that a killed run frees the lock within a minute
(at the default 10 s)."""


def _retrain_lease(settings: Settings, *, holder: str) -> Lease:
    return Lease(
        settings.catalog_uri,
        "retrain",
        holder,
        ttl_s=RETRAIN_LEASE_INTERVALS * settings.lease_interval,
    )


def acquire(settings: Settings) -> HeldLock:
    """Take the retrain lock: a file lock on one machine, the `retrain` lease in PostgreSQL
    when the catalog is shared.

    Raises:
        RetrainBusy: Another run holds it.
    """
    if settings.shared_catalog:
        return LeaseLock.take(
            settings, new_holder("retrain"), refused="a retraining run is already in progress"
        )
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.runs_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RetrainBusy("a retraining run is already in progress") from None
    return FileLock(fd)


def adopt(settings: Settings, *, fd: int | None, lease: str | None) -> HeldLock | None:
    """The lock `trigger` handed to this process (`--lock-fd` or `--lock-lease`), if any.

    Raises:
        RetrainBusy: The handed lease expired before this process could renew it.
    """
    if fd is not None:
        return FileLock(fd)
    if lease is None:
        return None
    return LeaseLock.take(
        settings, lease, refused="the retrain lease expired before the run started"
    )


@contextlib.contextmanager
def lock(settings: Settings) -> Iterator[None]:
    held = acquire(settings)
    try:
        yield
    finally:
        held.release()


def trigger(
    settings: Settings,
    store: Store,
    *,
    trigger: str,
    who: str,
    reasons: list[str] | None = None,
    vision: bool = False,
) -> dict[str, Any]:
    """Start a retrain in the background (`driftlab retrain`); returns its event at once.

    Args:
        vision: Retrain the vision model instead (`python -m pipelines.vision.retrain`, same
            arguments, same lock: one retrain at a time, whichever model).

    Raises:
        RetrainBusy: A run is in progress.
    """
    held = acquire(settings)  # held from here to the end of the run, by the child
    child_args, child_fds = held.handoff()
    handed = False
    try:
        event_id = new_id()
        store.add_retraining_event(
            {
                "event_id": event_id,
                "trigger": trigger,
                "reasons": reasons or [],
                "status": "queued",
                "who": who,
                "model_name": settings.vision_model_name if vision else settings.model_name,
            }
        )
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = settings.logs_dir / f"retrain-{event_id}.log"
        entry = ["pipelines.vision.retrain"] if vision else ["pipelines.cli", "retrain"]
        command = [
            sys.executable,
            "-m",
            *entry,
            "--event-id",
            event_id,
            # Client text only ever as `--option=value`: a value like "--help" stays a value.
            f"--trigger={trigger}",
            f"--who={who}",
            f"--reasons={json.dumps(reasons or [])}",
            *child_args,
        ]
        with open(log_path, "ab") as log:
            subprocess.Popen(
                command,
                env={**os.environ, **settings.process_env()},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=child_fds,
                start_new_session=True,  # survives the API's restart and its Ctrl-C
                cwd=Path(__file__).resolve().parents[2],
            )
        handed = True
    finally:
        if handed:
            held.detach()  # the child holds it now
        else:
            held.release()
    logger.info("retrain %s started (%s by %s): %s", event_id, trigger, who, reasons)
    return {"event_id": event_id, "status": "queued", "log": settings.relative(log_path)}


def status(settings: Settings, store: Store, *, vision: bool = False) -> dict[str, Any]:
    """The model's run in progress (if any) and its latest one.

    `running` is whether a run of this model is in progress; `busy` whether any retrain
    holds the shared lock (then none can start, whichever model). A run still marked queued
    or running while no process holds the lock has died (killed, or its kernel failed to
    start); it is reported as `lost`.
    """
    busy = is_running(settings)
    name = model_name(settings, vision)
    runs = store.retraining_runs(limit=1, model_name=name, unnamed_as=settings.model_name)
    latest = runs[0] if runs else None
    in_progress = latest is not None and latest["status"] in {"queued", "running"}
    if latest is not None and in_progress and not busy:
        age = (utcnow() - latest["updated_at"]).total_seconds()
        if age > 30:  # a queued run takes a few seconds to start its process and take the lock
            latest = {**latest, "status": "lost"}
    running = busy and in_progress
    return {
        "model": VISION if vision else TABULAR,
        "model_name": name,
        "running": running,
        "busy": busy,
        "current": latest if running else None,
        "latest": latest,
    }


def history(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    return store.retraining_runs(limit=limit)


def wait(store: Store, event_id: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """Block until a run leaves queued/running (for the CLI and tests)."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = store.retraining_runs(limit=1, event_id=event_id)
        if runs and runs[0]["status"] not in {"queued", "running"}:
            return runs[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"retrain {event_id} still {runs[0]['status'] if runs else '?'}")
        time.sleep(0.5)

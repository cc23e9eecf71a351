"""Processes that a driftlab supervisor starts die with it, even when it is killed with -9.

`driftlab up` runs the API, the worker and the dashboard as its children (`run_all`), and
`driftlab api` with `DRIFTLAB_API_WORKERS` > 1 runs uvicorn's worker processes. Ctrl-C stops
them all; so does killing the supervisor outright, which would otherwise leave the API serving
on its port, where the next `make up` could not bind it. A supervisor names itself in the
environment of its children (`ENV`); a process started by it calls `follow` first thing, and
the kernel sends it SIGTERM when the supervisor dies (Linux's `PR_SET_PDEATHSIG`; elsewhere
nothing changes). Only direct children follow: a grandchild (a retrain's notebook kernel)
inherits the variable but has another parent, and ignores it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

ENV = "DRIFTLAB_SUPERVISOR_PID"
RESTART_AFTER_S = 10.0
"""With `run_all(restart=True)`: a child that dies sooner after its start cannot start (a port in
use, a bad setting), and everything stops rather than retrying it forever."""
_PR_SET_PDEATHSIG = 1


def children_env() -> dict[str, str]:
    """What to add to a child's environment so that it follows this process."""
    return {ENV: str(os.getpid())}


def follow() -> None:
    """Die with the supervisor that started this process, if one did."""
    supervisor = os.environ.get(ENV, "")
    if not supervisor.isdigit() or os.getppid() != int(supervisor):
        return  # no supervisor, or not its direct child (the supervisor itself, a grandchild)
    if not sys.platform.startswith("linux"):
        return  # no parent-death signal here
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        logger.warning("could not ask to die with the supervisor: errno %d", ctypes.get_errno())
    elif os.getppid() != int(supervisor):  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_all(
    commands: Mapping[str, Sequence[str]],
    env: Mapping[str, str],
    *,
    started: Callable[[Mapping[str, subprocess.Popen[bytes]]], Any] = lambda procs: None,
    env_of: Mapping[str, Mapping[str, str]] | None = None,
    restart: bool = False,
) -> int:
    """Run every command as a child that follows this process, until Ctrl-C or SIGTERM, or
    until one of them exits (then the others are stopped too); returns 0, or 1 if a child
    exited on its own. `started` is given the processes once they are all started; `env_of` adds
    variables to some commands' environment (by name). With `restart`, a child that exits is
    started again instead (a local cluster, where a killed replica or worker comes back the
    way a process manager would bring it back on its host)."""
    env = {**env, **children_env()}
    env_of = env_of or {}

    def launch(name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(list(commands[name]), env={**env, **env_of.get(name, {})})

    procs = {name: launch(name) for name in commands}
    since = dict.fromkeys(procs, time.monotonic())
    started(procs)
    sys.stdout.flush()
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        for name, proc in procs.items():
            if proc.poll() is None:
                continue
            if restart and time.monotonic() - since[name] > RESTART_AFTER_S:
                logger.warning("%s exited with code %s; starting it again", name, proc.returncode)
                procs[name], since[name] = launch(name), time.monotonic()
            else:
                logger.error("%s exited with code %s; stopping everything", name, proc.returncode)
                stopping, code = True, 1
        time.sleep(1.0 if restart else 0.5)
    for proc in procs.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return code

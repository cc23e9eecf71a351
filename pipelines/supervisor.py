"""Processes that a driftlab supervisor starts die with it, even when it is killed with -9.

`driftlab up` runs the API, the worker and the dashboard as its children, and `driftlab api`
with `DRIFTLAB_API_WORKERS` > 1 runs uvicorn's worker processes. Ctrl-C stops them all, but a
supervisor killed outright used to leave its children running: the API kept serving on its
port, and the next `make up` could not bind it. A supervisor names itself in the environment
of its children (`ENV`); a process started by it calls `follow` first thing, and the kernel
sends it SIGTERM when the supervisor dies (Linux's `PR_SET_PDEATHSIG`; elsewhere nothing
changes). Only direct children follow: a grandchild (a retrain's notebook kernel) inherits
the variable but has another parent, and ignores it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

ENV = "DRIFTLAB_SUPERVISOR_PID"
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

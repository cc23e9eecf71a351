"""Test helpers: real driftlab processes (API, worker) in subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited while we looked
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CliProcess:
    """`python -m pipelines.cli <command>` over `data_dir`, its output in a log file."""

    def __init__(self, data_dir: Path, command: str = "api", **env: str) -> None:
        self.data_dir = data_dir
        self.command = command
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DRIFTLAB_DATA_DIR": str(data_dir),
            "DRIFTLAB_API_PORT": str(self.port),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"{command}-{self.port}.log"

    def start(self, timeout: float = 60.0) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", self.command],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.command} exited early:\n{self.output()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{self.command} did not come up:\n{self.output()}")

    def ready(self) -> bool:
        return True

    def output(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no flush, no cleanup, like a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class ApiServer(CliProcess):
    """`driftlab api` on 127.0.0.1:<free port>; started once /health answers."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        super().__init__(data_dir, "api", **env)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

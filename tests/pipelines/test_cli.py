"""The command line: help lists every command; the API refuses to be exposed without a key;
`driftlab up`'s processes die with it."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pipelines import cli
from tests.conftest import make_settings
from tests.helpers import children, free_port, kill_all, running, wait_until


def test_help_lists_every_subcommand_and_the_version() -> None:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = list(sub.choices)
    assert {"up", "api", "train", "drift", "retrain", "worker", "repair"} <= set(commands)
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in commands:
        assert f"    {name}" in out, name
    version = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert version.strip() == f"driftlab {importlib.metadata.version('driftlab')}"


def test_refuses_public_bind_without_key(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="refusing to listen on 0.0.0.0"):
        cli.check_bind("0.0.0.0", make_settings(tmp_path))
    cli.check_bind("0.0.0.0", make_settings(tmp_path, api_key="k"))
    cli.check_bind("127.0.0.1", make_settings(tmp_path))


@pytest.mark.e2e
def test_models_list_and_rollback_from_the_shell(trained_copy: Path) -> None:
    def driftlab(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DRIFTLAB_DATA_DIR": str(trained_copy)}
        return subprocess.run(
            [sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, env=env
        )

    listed = driftlab("models", "list")
    assert listed.returncode == 0
    assert json.loads(listed.stdout)[0]["aliases"] == ["champion"]
    refused = driftlab("models", "rollback")
    assert refused.returncode == 1 and "no earlier champion" in refused.stderr


@pytest.mark.e2e
def test_the_processes_of_a_killed_up_stop(trained_copy: Path) -> None:
    """`kill -9` of `driftlab up`: the kernel sends its API, worker and dashboard SIGTERM,
    so none goes on running and holding its port."""
    api_port, dashboard_port = free_port(), free_port()
    env = {
        **os.environ,
        "DRIFTLAB_DATA_DIR": str(trained_copy),
        "DRIFTLAB_API_PORT": str(api_port),
        "DRIFTLAB_DASHBOARD_PORT": str(dashboard_port),
    }

    def serving() -> bool:
        try:
            api = httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=2)
            dashboard = httpx.get(f"http://127.0.0.1:{dashboard_port}/", timeout=2)
        except httpx.HTTPError:
            return False
        return api.status_code == 200 and dashboard.status_code == 200

    log = trained_copy.parent / "up.log"
    with open(log, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "up"], env=env, stdout=out, stderr=out
        )
    started: list[int] = []
    try:
        assert wait_until(serving, timeout=120), log.read_text()[-3000:]
        started = children(up.pid)
        assert len(started) == 3  # api, worker, dashboard
        up.kill()
        up.wait(10)
        assert wait_until(lambda: not any(running(pid) for pid in started), timeout=30), [
            pid for pid in started if running(pid)
        ]
        assert not serving()
    finally:
        if up.poll() is None:
            up.kill()
        kill_all(started)

"""The command line: help lists every command; the API refuses to be exposed without a key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import cli
from tests.conftest import make_settings

COMMANDS = ["up", "api", "train", "drift", "worker", "models", "compact", "init"]


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in COMMANDS:
        assert f"    {name}" in out, name


def test_refuses_public_bind_without_key(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="refusing to listen on 0.0.0.0"):
        cli.check_bind("0.0.0.0", make_settings(tmp_path))
    cli.check_bind("0.0.0.0", make_settings(tmp_path, api_key="k"))
    cli.check_bind("127.0.0.1", make_settings(tmp_path))


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

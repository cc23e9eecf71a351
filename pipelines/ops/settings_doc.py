"""docs/configuration.md, generated from `Settings`: `python -m pipelines.ops.settings_doc`.

`make docs` writes it; a test fails when the file and the settings disagree, so every setting
is documented with its variable, its default and its meaning, and none is documented twice.
"""

from __future__ import annotations

import sys
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from pipelines.settings import Settings

HEADER = """# Configuration

<!-- Generated from pipelines/settings.py by `make docs`: change the settings, not this file. -->

Every setting is an environment variable, or a line `NAME=value` of a `.env` file in the
directory driftlab runs from (`.env.example` lists the common ones); the environment wins over
`.env`. Lists are comma-separated. Paths may start with `~`; relative ones are taken from the
directory driftlab runs from. A default shown as "unset" is derived as its meaning says, mostly
from `DRIFTLAB_DATA_DIR`.

A process reads its settings once, when it starts: restart it after a change. Backups, moving a
data dir, running beyond one machine and the security settings are in
[operations](operations.md).

| variable | default | meaning |
|---|---|---|
"""


def variable(name: str, field: FieldInfo) -> str:
    """The environment variable a setting is read from."""
    return field.alias or f"DRIFTLAB_{name.upper()}"


def default(field: FieldInfo) -> str:
    """A setting's default as a reader would type it; derived ones say so in their meaning."""
    value: Any = field.get_default(call_default_factory=True)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value in (None, "", []):
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def render() -> str:
    rows = [
        f"| `{variable(name, field)}` | {default(field)} | {field.description or ''} |"
        for name, field in Settings.model_fields.items()
    ]
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())

"""The README documents every setting (its configuration table is the settings' reference)."""

from __future__ import annotations

from pathlib import Path

from pipelines.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_has_a_row_in_the_readme_configuration_table() -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `DRIFTLAB_")]
    table = "\n".join(rows)
    missing = []
    for name, field in Settings.model_fields.items():
        env = field.alias or f"DRIFTLAB_{name.upper()}"
        stem, _, suffix = env.rpartition("_")
        # A pair may share one row: `DRIFTLAB_UNCERTAINTY_LOW` / `_HIGH`.
        paired = f"`{stem}_" in table and f"/ `_{suffix}`" in table
        if f"`{env}`" not in table and not paired:
            missing.append(env)
    assert not missing, f"settings without a README row: {missing}"

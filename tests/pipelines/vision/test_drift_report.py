"""The image drift report's choice of columns: what drifted first, inputs before outputs."""

from __future__ import annotations

from pipelines.vision.drift_report import most_drifted


def test_drifted_inputs_come_first_then_outputs_then_the_largest_effects() -> None:
    rows = [
        {"feature": "top_class", "role": "prediction", "drifted": True, "effect_size": 0.9},
        {"feature": "contrast", "role": "feature", "drifted": False, "effect_size": 0.3},
        {"feature": "brightness", "role": "feature", "drifted": True, "effect_size": 0.2},
        {"feature": "blur", "role": "feature", "drifted": True, "effect_size": 0.5},
        {"feature": "mean_r", "role": "feature", "drifted": False, "effect_size": None},
    ]
    assert most_drifted(rows, 4) == ["blur", "brightness", "top_class", "contrast"]
    assert most_drifted(rows, 2) == ["blur", "brightness"]
    assert most_drifted([], 4) == []

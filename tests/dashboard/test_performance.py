"""The estimated-performance chart and card, from literal checks."""

from __future__ import annotations

import datetime as dt

import pytest

from dashboard import performance

T0 = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC)


def _check(i: int, estimated: float, realized: float | None, n_labeled: int = 0) -> dict:
    return {
        "run_id": f"run{i}",
        "ts": T0 + dt.timedelta(minutes=i),
        "model_version": "3",
        "n_window": 500,
        "n_labeled": n_labeled,
        "calibrated": True,
        "metrics": {
            "accuracy": {
                "estimated": estimated,
                "low": estimated - 0.04,
                "high": estimated + 0.04,
                "std": 0.02,
                "realized": realized,
                "reference": 0.9,
            }
        },
    }


CHECKS = [_check(0, 0.88, None), _check(1, 0.75, 0.72, 40), _check(2, 0.70, None)]


def test_chart_draws_band_estimate_realized_reference_and_harm() -> None:
    fig = performance.chart(CHECKS, {"run1": ["age", "income"]}, harm=0.05)
    band, estimated, realized = fig.data
    assert band.name == "band" and band.fill == "toself"
    assert list(band.y) == pytest.approx([0.92, 0.79, 0.74, 0.66, 0.71, 0.84])
    assert list(estimated.y) == [0.88, 0.75, 0.70]
    assert "drifted: age, income" in estimated.text[1] and "no drifted" in estimated.text[0]
    assert list(realized.y) == [0.72] and realized.text == ("40 labeled",)
    lines = sorted(shape.y0 for shape in fig.layout.shapes)
    assert lines == pytest.approx([0.85, 0.9])  # harm = reference − 0.05, the reference


def test_chart_without_checks_says_why() -> None:
    fig = performance.chart([], {}, harm=0.05)
    assert not fig.data and "no performance estimate yet" in fig.layout.annotations[0].text


def test_card_shows_estimate_band_and_realized() -> None:
    card = str(performance.card(CHECKS[1]))
    assert "75.0%" in card and "band 71.0%–79.0%" in card
    assert "realized 72.0% on 40" in card and "held-out 90.0%" in card
    assert "uncalibrated" not in card
    assert "uncalibrated" in str(performance.card({**CHECKS[1], "calibrated": False}))
    assert "no estimate yet" in str(performance.card(None))


def test_drifted_features_by_run_leave_out_prediction_and_label() -> None:
    rows = [
        {"run_id": "a", "feature": "age", "drifted": True},
        {"run_id": "a", "feature": "prediction", "drifted": True},
        {"run_id": "a", "feature": "income", "drifted": False},
        {"run_id": "b", "feature": "label", "drifted": True},
    ]
    assert performance.drifted_by_run(rows) == {"a": ["age"]}

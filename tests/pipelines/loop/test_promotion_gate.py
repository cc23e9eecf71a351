"""The promotion gate on tables of crafted metrics."""

import json
import math

import pytest

from pipelines.loop.promotion_gate import gate, gate_sets, sampling_noise
from pipelines.loop.retraining_policy import RetrainPolicy

POLICY = RetrainPolicy()


def _metrics(macro_f1=0.80, accuracy=0.82, log_loss=0.50, **recalls):
    m = {"accuracy": accuracy, "macro_f1": macro_f1, "log_loss": log_loss, "ece": 0.03}
    recalls = recalls or {"a": 0.85, "b": 0.80, "c": 0.75}
    m.update({f"recall_{k}": v for k, v in recalls.items()})
    return m


CHAMPION = _metrics()

# (champion, challenger, policy, promote, fragments expected in the reasons)
GATE_CASES = {
    "clearly-better": (
        CHAMPION,
        _metrics(macro_f1=0.84, a=0.86, b=0.83, c=0.80),
        POLICY,
        True,
        ("macro_f1 0.8000 → 0.8400", "gain +0.0400", "no class recall drops"),
    ),
    "equal-is-not-enough": (CHAMPION, dict(CHAMPION), POLICY, False, ("gain +0.0000",)),
    "equal-passes-with-zero-margin": (
        CHAMPION,
        dict(CHAMPION),
        RetrainPolicy(gate_margin=0.0),
        True,
        ("gain +0.0000, margin 0.0000",),
    ),
    "gain-below-margin": (CHAMPION, _metrics(macro_f1=0.804), POLICY, False, ("gain +0.0040",)),
    "gain-exactly-margin-despite-rounding": (
        _metrics(macro_f1=0.81),
        _metrics(macro_f1=0.815),  # 0.815 - 0.81 == 0.00499999... in binary
        POLICY,
        True,
        ("gain +0.0050",),
    ),
    "worse": (CHAMPION, _metrics(macro_f1=0.70), POLICY, False, ("gain -0.1000",)),
    "better-on-average-but-one-class-collapses": (
        CHAMPION,
        _metrics(macro_f1=0.86, accuracy=0.90, a=0.99, b=0.99, c=0.30),
        POLICY,
        False,
        ("recall of class 'c' drops 0.750 → 0.300 (-0.450, allowed 0.050)",),
    ),
    "class-drop-within-tolerance": (
        CHAMPION,
        _metrics(macro_f1=0.83, a=0.95, b=0.90, c=0.71),
        POLICY,
        True,
        ("largest change -0.040 on 'c'",),
    ),
    "class-drop-just-over-tolerance": (
        CHAMPION,
        _metrics(macro_f1=0.83, a=0.95, b=0.90, c=0.69),
        POLICY,
        False,
        ("recall of class 'c' drops",),
    ),
    "class-missing-in-challenger": (
        CHAMPION,
        {k: v for k, v in _metrics(macro_f1=0.9).items() if k != "recall_b"},
        POLICY,
        False,
        ("recall of class 'b' missing or not a number for the challenger",),
    ),
    "new-class-in-challenger": (
        CHAMPION,
        _metrics(macro_f1=0.83, a=0.85, b=0.80, c=0.75, d=0.6),
        POLICY,
        True,
        ("class 'd' is new",),
    ),
    "primary-missing-in-champion": (
        {k: v for k, v in CHAMPION.items() if k != "macro_f1"},
        _metrics(macro_f1=0.9),
        POLICY,
        False,
        ("macro_f1 missing or not a number for the champion: cannot compare",),
    ),
    "primary-missing-in-both": (
        {},
        {},
        POLICY,
        False,
        ("for the champion and challenger", "no per-class recall"),
    ),
    "primary-nan-in-challenger": (
        CHAMPION,
        _metrics(macro_f1=math.nan),
        POLICY,
        False,
        ("for the challenger: cannot compare",),
    ),
    "primary-not-a-number": (
        CHAMPION,
        {**_metrics(), "macro_f1": "0.9"},
        POLICY,
        False,
        ("cannot compare",),
    ),
    "no-per-class-recall": (
        {"macro_f1": 0.8},
        {"macro_f1": 0.9},
        POLICY,
        False,
        ("no per-class recall",),
    ),
    "lower-is-better-primary-improves": (
        CHAMPION,
        _metrics(log_loss=0.40),
        RetrainPolicy(primary_metric="log_loss"),
        True,
        ("log_loss 0.5000 → 0.4000 (lower is better, gain +0.1000",),
    ),
    "lower-is-better-primary-worsens": (
        CHAMPION,
        _metrics(macro_f1=0.95, log_loss=0.60),
        RetrainPolicy(primary_metric="log_loss"),
        False,
        ("gain -0.1000",),
    ),
}


@pytest.mark.parametrize(
    ("champion", "challenger", "policy", "promote", "fragments"),
    GATE_CASES.values(),
    ids=GATE_CASES.keys(),
)
def test_gate(champion, challenger, policy, promote, fragments):
    result = gate(champion, challenger, policy)
    text = " | ".join(result.reasons)
    assert result.promote is promote, text
    for fragment in fragments:
        assert fragment in text


def test_gate_puts_failures_first_and_reports_deltas():
    challenger = _metrics(macro_f1=0.86, accuracy=0.90, a=0.99, b=0.99, c=0.30)
    result = gate(CHAMPION, {**challenger, "extra": 1.0})
    assert result.reasons[0].startswith("recall of class 'c' drops")
    assert result.reasons[1].startswith("macro_f1 0.8000 → 0.8600")
    assert result.deltas == pytest.approx(
        {
            "accuracy": 0.08,
            "macro_f1": 0.06,
            "log_loss": 0.0,
            "ece": 0.0,
            "recall_a": 0.14,
            "recall_b": 0.19,
            "recall_c": -0.45,
        }
    )
    assert json.loads(json.dumps(result.to_dict()))["promote"] is False


def _set(f1: float, r0: float, r1: float, n: float) -> dict[str, float]:
    return {"macro_f1": f1, "recall_0": r0, "recall_1": r1, "n": n}


@pytest.mark.parametrize(
    ("champion", "challenger", "promote", "first"),
    [
        pytest.param(
            {"fixed": _set(0.70, 0.8, 0.6, 500), "recent": _set(0.50, 0.6, 0.4, 60)},
            {"fixed": _set(0.68, 0.78, 0.58, 500), "recent": _set(0.60, 0.62, 0.58, 60)},
            True,
            "[recent] macro_f1 0.5000 → 0.6000",
            id="better-on-recent-no-worse-on-fixed",
        ),
        pytest.param(
            {"fixed": _set(0.70, 0.8, 0.6, 500), "recent": _set(0.50, 0.6, 0.4, 60)},
            {"fixed": _set(0.60, 0.7, 0.5, 500), "recent": _set(0.60, 0.62, 0.58, 60)},
            False,
            "[fixed] macro_f1 0.7000 → 0.6000",
            id="gives-up-the-old-population",
        ),
        pytest.param(
            {"fixed": _set(0.70, 0.8, 0.6, 500), "recent": _set(0.50, 0.6, 0.4, 60)},
            {"fixed": _set(0.72, 0.8, 0.64, 500), "recent": _set(0.502, 0.6, 0.41, 60)},
            False,
            "[recent] macro_f1 0.5000 → 0.5020",
            id="not-better-where-the-drift-is",
        ),
        pytest.param(
            {"fixed": _set(0.70, 0.8, 0.6, 500), "recent": _set(0.50, 0.6, 0.4, 10)},
            {"fixed": _set(0.72, 0.8, 0.64, 500), "recent": _set(0.10, 0.1, 0.1, 10)},
            True,
            "[fixed] decides: 10 recent labeled rows < 30",
            id="too-few-recent-rows-fixed-decides",
        ),
    ],
)
def test_gate_sets(champion, challenger, promote, first) -> None:

    result = gate_sets(champion, challenger)
    assert result.promote is promote, result.reasons
    assert result.reasons[0].startswith(first) or result.reasons[1].startswith(first)
    assert (result.failures == 0) is promote
    assert all(r.startswith(("[recent] ", "[fixed] ")) for r in result.reasons)


@pytest.mark.parametrize(
    ("support", "promote"),
    [
        pytest.param(15, True, id="one-row-of-15-is-noise"),
        pytest.param(1500, False, id="the-same-drop-on-1500-rows-is-real"),
        pytest.param(None, False, id="unknown-support-uses-the-tolerance"),
    ],
)
def test_class_drop_is_judged_against_its_sampling_noise(support, promote) -> None:

    champion = {"macro_f1": 0.80, "recall_a": 0.933, "recall_b": 0.70}
    challenger = {"macro_f1": 0.85, "recall_a": 0.867, "recall_b": 0.80}
    if support is not None:
        champion |= {"support_a": support, "support_b": support}
    result = gate(champion, challenger)
    assert result.promote is promote, result.reasons
    # Agresti–Coull: p = (14 + 2) / 19, two standard errors of p on 19 rows.
    p = 16 / 19
    assert sampling_noise(14 / 15, 15) == pytest.approx(2 * (p * (1 - p) / 19) ** 0.5)
    assert sampling_noise(1.0, 7) > 0.2  # a perfect recall on 7 rows is far from certain
    assert sampling_noise(0.933, None) == 0.0

"""The retraining decision and the promotion gate on tables of crafted cases."""

import json
import math

import pytest

from pipelines.loop.retraining_policy import Conditions, Decision, RetrainPolicy, decide, gate

NOW = 1_000_000.0
POLICY = RetrainPolicy()


def _c(**kwargs):
    return Conditions(now=NOW, **kwargs)


# (conditions, should_retrain, fragments expected in reasons, in blocked_by, in not_met);
# an empty tuple means that list must be empty.
DECIDE_CASES = {
    "quiet": (_c(), False, (), (), ()),
    "share-drift-with-labels": (
        _c(drift_share=0.62, new_labels=57),
        True,
        ("drift share 0.62 ≥ 0.30 and 57 new labels ≥ 50",),
        (),
        (),
    ),
    "share-exactly-at-threshold": (
        _c(drift_share=0.3, new_labels=50),
        True,
        ("drift share 0.30 ≥ 0.30 and 50 new labels ≥ 50",),
        (),
        (),
    ),
    "share-just-below": (_c(drift_share=0.29, new_labels=500), False, (), (), ()),
    "dataset-drift-flag-with-labels": (
        _c(dataset_drift=True, drift_share=0.1, drifted_features=("age", "fare"), new_labels=80),
        True,
        ("dataset drift (age, fare) and 80 new labels ≥ 50",),
        (),
        (),
    ),
    "dataset-drift-lists-at-most-five-features": (
        _c(dataset_drift=True, drifted_features=tuple("abcdefg"), new_labels=50),
        True,
        ("dataset drift (a, b, c, d, e and 2 more)",),
        (),
        (),
    ),
    "drift-without-enough-labels": (
        _c(dataset_drift=True, drift_share=0.5, new_labels=49),
        False,
        (),
        (),
        ("drift share 0.50 ≥ 0.30 and 49 new labels < 50",),
    ),
    "labels-without-drift": (_c(new_labels=5000, min_p_value=0.2), False, (), (), ()),
    "class-errors-at-threshold": (
        _c(errors_per_class={"cat": 10, "dog": 3}),
        True,
        ("errors per class ≥ 10: 'cat' 10",),
        (),
        (),
    ),
    "class-errors-worst-first": (
        _c(errors_per_class={"a": 11, "b": 25, "c": 9}),
        True,
        ("errors per class ≥ 10: 'b' 25, 'a' 11",),
        (),
        (),
    ),
    "class-errors-below": (_c(errors_per_class={"cat": 9, "dog": 9}), False, (), (), ()),
    "low-accuracy-enough-feedback": (
        _c(live_accuracy=0.52, n_feedback=40, champion_accuracy=0.91),
        True,
        ("live accuracy 0.52 < floor 0.60 (held-out 0.91) on 40 labeled predictions ≥ 30",),
        (),
        (),
    ),
    "low-accuracy-too-little-feedback": (
        _c(live_accuracy=0.1, n_feedback=29),
        False,
        (),
        (),
        ("live accuracy 0.10 < floor 0.60 on 29 labeled predictions < 30",),
    ),
    "accuracy-at-floor": (_c(live_accuracy=0.6, n_feedback=1000), False, (), (), ()),
    "no-feedback-yet": (_c(live_accuracy=None, n_feedback=0), False, (), (), ()),
    "running-blocks": (
        _c(errors_per_class={"cat": 50}, running=True),
        False,
        ("'cat' 50",),
        ("a retrain is already running",),
        (),
    ),
    "cooldown-blocks": (
        _c(drift_share=0.9, new_labels=100, last_retrain_at=NOW - 120),
        False,
        ("drift share 0.90",),
        ("last retrain 120 s ago < cooldown 600 s (ready in 480 s)",),
        (),
    ),
    "cooldown-over-exactly": (
        _c(drift_share=0.9, new_labels=100, last_retrain_at=NOW - 600),
        True,
        ("drift share 0.90",),
        (),
        (),
    ),
    "clock-skew-waits": (
        _c(errors_per_class={"cat": 50}, last_retrain_at=NOW + 30),
        False,
        ("'cat' 50",),
        ("last retrain -30 s ago",),
        (),
    ),
    "blocked-with-nothing-due": (
        _c(running=True, last_retrain_at=NOW - 1),
        False,
        (),
        ("already running", "last retrain 1 s ago"),
        (),
    ),
    "all-three-triggers": (
        _c(
            drift_share=0.4,
            new_labels=60,
            errors_per_class={"x": 12},
            live_accuracy=0.3,
            n_feedback=100,
            last_retrain_at=NOW - 3600,
        ),
        True,
        ("drift share 0.40", "'x' 12", "live accuracy 0.30"),
        (),
        (),
    ),
}


@pytest.mark.parametrize(
    ("conditions", "should", "reasons", "blocked", "not_met"),
    DECIDE_CASES.values(),
    ids=DECIDE_CASES.keys(),
)
def test_decide(conditions, should, reasons, blocked, not_met):
    decision = decide(conditions, POLICY)
    assert decision.should_retrain is should
    for got, expected in (
        (decision.reasons, reasons),
        (decision.blocked_by, blocked),
        (decision.not_met, not_met),
    ):
        text = " | ".join(got)
        assert bool(got) == bool(expected), text
        for fragment in expected:
            assert fragment in text


def test_decide_follows_the_policy_it_is_given():
    conditions = _c(drift_share=0.2, new_labels=10, last_retrain_at=NOW - 60)
    assert not decide(conditions).should_retrain
    loose = RetrainPolicy(drift_share_threshold=0.2, min_new_labels=10, cooldown_s=30)
    decision = decide(conditions, loose)
    assert decision.should_retrain
    assert decision.reasons == ["drift share 0.20 ≥ 0.20 and 10 new labels ≥ 10"]


def test_decision_and_conditions_serialize_to_json():
    conditions = _c(drifted_features=("a",), errors_per_class={"cat": 12}, running=True)
    decision = decide(conditions)
    payload = json.loads(json.dumps(decision.to_dict()))
    assert payload == {
        "should_retrain": False,
        "reasons": ["errors per class ≥ 10: 'cat' 12"],
        "blocked_by": ["a retrain is already running"],
        "not_met": [],
    }
    figures = json.loads(json.dumps(conditions.to_dict()))
    assert figures["drifted_features"] == ["a"]
    assert figures["errors_per_class"] == {"cat": 12}
    assert json.loads(json.dumps(POLICY.to_dict()))["min_new_labels"] == 50
    assert Decision(**payload) == decision  # the JSON holds every field


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


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"min_new_labels": -1}, id="labels"),
        pytest.param({"cooldown_s": -1.0}, id="cooldown"),
        pytest.param({"drift_share_threshold": 1.5}, id="share"),
        pytest.param({"accuracy_floor": -0.1}, id="floor"),
        pytest.param({"class_tolerance": 2.0}, id="tolerance"),
        pytest.param({"gate_margin": -0.01}, id="margin"),
    ],
)
def test_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        RetrainPolicy(**kwargs)


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
    from pipelines.loop.retraining_policy import gate_sets

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
    from pipelines.loop.retraining_policy import sampling_noise

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

"""The retraining decision on tables of crafted cases."""

import json
import math

import pytest

from pipelines.loop.retraining_policy import (
    Conditions,
    Decision,
    RetrainPolicy,
    accuracy_drop,
    decide,
)

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


DRIFT = {"dataset_drift": True, "drift_share": 0.8, "drifted_features": ("age",)}
NO_HARM = {"estimated_drop": 0.01, "estimated_drop_low": -0.02, "estimated_drop_high": 0.04}
HARM = {"estimated_drop": 0.12, "estimated_drop_low": 0.08, "estimated_drop_high": 0.16}
# Large but not significant: the band reaches below zero.
UNSURE = {"estimated_drop": 0.09, "estimated_drop_low": -0.01, "estimated_drop_high": 0.19}

# (conditions, policy, should_retrain, fragment in the reasons, fragment in not_met)
IMPACT_CASES = {
    "drift-without-impact-waits": (
        _c(**DRIFT, **NO_HARM, new_labels=80),
        POLICY,
        False,
        None,
        "drift without estimated impact: dataset drift (age) with drift share 0.80 ≥ 0.30, "
        "but estimated accuracy drop +0.010 (band -0.020 to +0.040)",
    ),
    "drift-with-an-unsure-drop-waits": (
        _c(**DRIFT, **UNSURE, new_labels=80),
        POLICY,
        False,
        None,
        "not a significant drop of 0.050 or more",
    ),
    "drift-with-impact-retrains": (
        _c(**DRIFT, **HARM, new_labels=80),
        POLICY,
        True,
        "estimated accuracy drop +0.120 (band +0.080 to +0.160) ≥ 0.050 with dataset drift",
        None,
    ),
    "impact-without-drift-retrains": (
        _c(**HARM, new_labels=80),
        POLICY,
        True,
        "estimated accuracy drop +0.120 (band +0.080 to +0.160) ≥ 0.050 and 80 new labels",
        None,
    ),
    "impact-without-labels-waits": (
        _c(**HARM, new_labels=3),
        POLICY,
        False,
        None,
        "≥ 0.050 and 3 new labels < 50",
    ),
    "drift-rule-ignores-the-estimate": (
        _c(**DRIFT, **NO_HARM, new_labels=80),
        RetrainPolicy(retrain_on="drift"),
        True,
        "dataset drift (age) with drift share 0.80 ≥ 0.30 and 80 new labels ≥ 50",
        None,
    ),
    "no-estimate-falls-back-to-drift": (
        _c(**DRIFT, new_labels=80),
        POLICY,
        True,
        "dataset drift (age) with drift share 0.80 ≥ 0.30 and 80 new labels ≥ 50",
        None,
    ),
    "a-realized-drop-is-impact-too": (
        _c(
            **DRIFT,
            **NO_HARM,
            new_labels=80,
            champion_accuracy=0.9,
            n_reference=500,
            live_accuracy=0.75,
            n_feedback=200,
        ),
        POLICY,
        True,
        "realized accuracy drop +0.150",
        None,
    ),
    "concept-shift-shows-in-the-floor": (
        _c(**NO_HARM, champion_accuracy=0.9, n_reference=500, live_accuracy=0.4, n_feedback=40),
        POLICY,
        True,
        "live accuracy 0.40 < floor 0.60 (held-out 0.90) on 40 labeled predictions ≥ 30",
        None,
    ),
}


@pytest.mark.parametrize(
    ("conditions", "policy", "should", "reason", "not_met"),
    IMPACT_CASES.values(),
    ids=IMPACT_CASES.keys(),
)
def test_impact_rule(conditions, policy, should, reason, not_met):
    decision = decide(conditions, policy)
    assert decision.should_retrain is should, decision
    reasons, missed = " | ".join(decision.reasons), " | ".join(decision.not_met)
    assert (reason in reasons) if reason else not reasons
    assert not_met is None or not_met in missed, missed


def test_accuracy_drop_band_is_two_binomial_errors_in_quadrature():
    drop, low, high = accuracy_drop(0.9, 400, 0.8, 100)
    se = math.sqrt(0.9 * 0.1 / 400 + 0.8 * 0.2 / 100)
    assert drop == pytest.approx(0.1)
    assert (low, high) == (pytest.approx(0.1 - 1.96 * se), pytest.approx(0.1 + 1.96 * se))


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


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"min_new_labels": -1}, id="labels"),
        pytest.param({"cooldown_s": -1.0}, id="cooldown"),
        pytest.param({"drift_share_threshold": 1.5}, id="share"),
        pytest.param({"accuracy_floor": -0.1}, id="floor"),
        pytest.param({"class_tolerance": 2.0}, id="tolerance"),
        pytest.param({"gate_margin": -0.01}, id="margin"),
        pytest.param({"estimated_drop": 1.5}, id="drop"),
        pytest.param({"retrain_on": "vibes"}, id="retrain-on"),
    ],
)
def test_policy_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        RetrainPolicy(**kwargs)


def test_output_drift_counts_only_through_its_own_setting():
    """The model's outputs drifting (class mix, confidence) while its inputs did not: reported,
    but a retrain only when `output_drift` says so."""
    moved = _c(drifted_outputs=("top_class", "n_detections"), new_labels=80)
    assert decide(moved).to_dict() == {
        "should_retrain": False,
        "reasons": [],
        "blocked_by": [],
        "not_met": [],
    }
    assert moved.to_dict()["drifted_outputs"] == ["top_class", "n_detections"]
    decision = decide(moved, RetrainPolicy(output_drift=True))
    assert decision.should_retrain
    assert decision.reasons == ["output drift (top_class, n_detections) and 80 new labels ≥ 50"]
    # Inputs drifted too: the inputs lead, the outputs follow in the same sentence.
    both = decide(_c(**DRIFT, drifted_outputs=("prediction",), new_labels=80))
    assert both.reasons == [
        "dataset drift (age) with drift share 0.80 ≥ 0.30 and 80 new labels ≥ 50"
    ]

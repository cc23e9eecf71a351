"""Verdict rules on crafted cases."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from statsmodels.stats.multitest import multipletests

from pipelines.drift import (
    DriftPolicy,
    adjust_p_values,
    build_reference_profile,
    check_drift,
    compare_frames,
    label_drift,
    prediction_drift,
)
from pipelines.drift.engine import FeatureResult, _decide


def _frame(n, seed, shifts=None, n_numeric=4):
    rng = np.random.default_rng(seed)
    data = {f"x{i}": rng.normal(size=n) for i in range(n_numeric)}
    for name, shift in (shifts or {}).items():
        data[name] = data[name] + shift
    data["color"] = rng.choice(["red", "green", "blue"], size=n, p=[0.5, 0.3, 0.2])
    return pd.DataFrame(data)


def test_huge_n_with_negligible_shift_is_significant_but_not_drift():
    ref, cur = _frame(200_000, 0), _frame(200_000, 1, {"x0": 0.03})
    report = compare_frames(ref, cur)
    x0 = next(f for f in report.features if f.feature == "x0")
    assert x0.p_adjusted < 1e-6  # the KS test alone would alarm...
    assert x0.effect_size < 0.1  # ...but the shift is 3% of a std
    assert not x0.drifted
    assert not report.dataset_drift


def test_real_shift_in_one_feature_drifts_the_dataset():
    ref, cur = _frame(5_000, 0), _frame(5_000, 1, {"x2": 0.25})
    report = compare_frames(ref, cur)
    assert report.drifted_features() == ["x2"]
    assert report.drift_share == pytest.approx(1 / 5)
    assert report.dataset_drift  # default rule "any"
    assert not report.share_exceeded
    share_rule = compare_frames(ref, cur, policy=DriftPolicy(dataset_rule="share"))
    assert not share_rule.dataset_drift


def test_categorical_shift_is_detected():
    ref = _frame(5_000, 0)
    cur = _frame(5_000, 1)
    cur["color"] = np.random.default_rng(2).choice(
        ["red", "green", "blue"], 5_000, p=[0.2, 0.3, 0.5]
    )
    report = compare_frames(ref, cur)
    assert report.drifted_features() == ["color"]


def test_same_distribution_does_not_drift():
    report = compare_frames(_frame(5_000, 0), _frame(5_000, 1))
    assert report.n_drifted == 0 and not report.dataset_drift
    assert report.status == "ok" and report.n_features == 5


def _result(name, p, effect=1.0):
    return FeatureResult(
        feature=name,
        kind="numeric",
        role="feature",
        test="ks",
        statistic=0.5,
        p_value=p,
        p_adjusted=None,
        effect_metric="wasserstein",
        effect_size=effect,
        threshold=0.05,
        min_effect=0.1,
        drifted=False,
        status="ok",
        n_reference=1000,
        n_current=1000,
        missing_share=0.0,
    )


# Sorted p-values 0.01, 0.02, 0.03, 0.04, 0.5 with m = 5: BH multiplies them by 5/rank, giving
# 0.05, 0.05, 0.05, 0.05, 0.5 (< 0.05 fails), while 0.005 * 5 = 0.025 passes Bonferroni.
@pytest.mark.parametrize(
    ("p_values", "correction", "expected"),
    [
        ([0.001, 0.01, 0.02, 0.03, 0.5], "bh", [True, True, True, True, False]),
        ([0.001, 0.01, 0.02, 0.03, 0.5], "bonferroni", [True, False, False, False, False]),
        ([0.001, 0.01, 0.02, 0.03, 0.5], "none", [True, True, True, True, False]),
        ([0.04, 0.045, 0.3, 0.6, 0.9], "bh", [False] * 5),
        ([0.04, 0.045, 0.3, 0.6, 0.9], "none", [True, True, False, False, False]),
        ([0.005, 0.2, 0.3, 0.6, 0.9], "bonferroni", [True, False, False, False, False]),
    ],
)
def test_multiple_testing_corrections(p_values, correction, expected):
    results = [_result(f"f{i}", p) for i, p in enumerate(p_values)]
    report = _decide(results, DriftPolicy(correction=correction), 1000, 1000)
    assert [f.drifted for f in report.features] == expected


def test_effect_size_gate_blocks_significant_but_small_changes():
    results = [_result("big", 1e-9, effect=0.3), _result("small", 1e-9, effect=0.05)]
    report = _decide(results, DriftPolicy(), 1000, 1000)
    assert [f.drifted for f in report.features] == [True, False]


@pytest.mark.parametrize("method", ["bh", "bonferroni"])
def test_adjusted_p_values_match_statsmodels(method):
    p = np.random.default_rng(0).uniform(size=40) ** 3
    expected = multipletests(p, method={"bh": "fdr_bh", "bonferroni": "bonferroni"}[method])[1]
    np.testing.assert_allclose(adjust_p_values(p, method), expected, rtol=1e-12)


def test_share_rule_uses_the_threshold():
    results = [_result(f"f{i}", 1e-6 if i < 3 else 0.9) for i in range(10)]
    policy = DriftPolicy(dataset_rule="share", drift_share_threshold=0.3)
    report = _decide(results, policy, 1000, 1000)
    assert report.drift_share == pytest.approx(0.3)
    assert report.dataset_drift and report.share_exceeded
    stricter = _decide(results, DriftPolicy(dataset_rule="share", drift_share_threshold=0.31), 1, 1)
    assert not stricter.dataset_drift


def test_min_samples_gives_no_verdict():
    ref = _frame(5_000, 0)
    cur = _frame(5_000, 1, {"x0": 3.0})
    cur.loc[50:, "x0"] = np.nan  # 50 usable values left: a huge shift, but too few values
    report = compare_frames(ref, cur)
    x0 = next(f for f in report.features if f.feature == "x0")
    assert x0.status == "insufficient_data" and not x0.drifted and x0.p_value is None
    assert x0.missing_share == pytest.approx(0.99)
    assert report.n_features == 4  # x0 is out of the share's denominator

    tiny = compare_frames(ref, _frame(99, 1, {"x0": 3.0}))
    assert tiny.status == "insufficient_data" and not tiny.dataset_drift
    assert compare_frames(
        ref, _frame(99, 1, {"x0": 3.0}), policy=DriftPolicy(min_samples=50)
    ).dataset_drift


def test_profile_is_reused_and_inputs_can_be_arrow_or_dicts():
    ref, cur = _frame(3_000, 0), _frame(3_000, 1, {"x1": 0.5})
    profile = build_reference_profile(ref, numeric=["x0", "x1"], categorical=["color"])
    from_pandas = check_drift(profile, cur)
    from_arrow = check_drift(profile, pa.Table.from_pandas(cur))
    from_dict = check_drift(profile, {c: cur[c].to_numpy() for c in cur.columns}, n_jobs=1)
    for other in (from_arrow, from_dict):
        assert other.to_records() == from_pandas.to_records()
    assert from_pandas.drifted_features() == ["x1"]


def test_records_are_flat_and_complete():
    report = compare_frames(_frame(1_000, 0), _frame(1_000, 1))
    records = report.to_records()
    assert len(records) == 5
    for record in records:
        assert {"feature", "test", "statistic", "p_value", "effect_size", "drifted"} <= set(record)
        assert all(not isinstance(v, dict | list) for v in record.values())
    assert report.summary()["method"].startswith("numeric=ks+wasserstein")


def test_prediction_and_label_drift_are_reported_apart_from_features():
    rng = np.random.default_rng(0)
    ref, cur = _frame(4_000, 0), _frame(4_000, 1)
    ref["pred"] = rng.choice(["cat", "dog"], 4_000, p=[0.5, 0.5])
    cur["pred"] = rng.choice(["cat", "dog"], 4_000, p=[0.8, 0.2])
    ref["proba"], cur["proba"] = rng.beta(2, 2, 4_000), rng.beta(2, 2, 4_000)
    profile = build_reference_profile(
        ref,
        numeric=["x0", "proba"],
        categorical=["color", "pred"],
        roles={"pred": "prediction", "proba": "prediction"},
    )
    report = check_drift(profile, cur)
    assert report.prediction_drift is True and report.label_drift is None
    assert not report.dataset_drift and report.n_features == 2
    assert [f.feature for f in report.features] == ["x0", "color", "proba", "pred"]

    assert prediction_drift(ref["pred"], cur["pred"], output="class").drifted
    assert not prediction_drift(ref["proba"], cur["proba"], output="probability").drifted
    assert not label_drift(ref["color"], cur["color"]).drifted


def test_policy_is_validated():
    with pytest.raises(ValueError):
        DriftPolicy(correction="holm")
    with pytest.raises(ValueError):
        DriftPolicy(numeric_test="chisquare")
    with pytest.raises(ValueError):
        DriftPolicy(numeric_effect="ks")


def test_distance_as_main_test_decides_on_the_distance_alone():
    ref, cur = _frame(2_000, 0), _frame(2_000, 1, {"x0": 0.6})
    policy = DriftPolicy(numeric_test="psi", numeric_effect=None, correction="bh")
    report = compare_frames(ref, cur, policy=policy)
    x0 = next(f for f in report.features if f.feature == "x0")
    assert x0.p_value is None and x0.threshold == 0.1 and x0.drifted

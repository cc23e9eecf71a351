"""Schema inference, validation messages and encoding."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipelines.schema import CATEGORICAL, NUMERIC, FeatureSchema, SchemaError, infer_schema


def test_infer_from_records_and_matrix() -> None:
    s = infer_schema(records=[{"a": 1, "b": "x"}], labels=["yes"])
    assert [(f.name, f.kind) for f in s.features] == [("a", NUMERIC), ("b", CATEGORICAL)]
    assert s.label_type == "str"
    m = infer_schema(features=[[1.0, 2.0]], labels=[1])
    assert m.names == ["f0", "f1"] and m.label_type == "int"
    with pytest.raises(SchemaError, match="mixes numbers and text"):
        infer_schema(features=[[1.0], ["x"]])


def test_encode_uses_training_categories_and_unknown_is_minus_one() -> None:
    s = infer_schema(records=[{"a": 1.0, "b": "x"}])
    cols = s.columns(records=[{"a": 1.0, "b": "x"}, {"a": 2.0, "b": "y"}, {"a": 3.0, "b": "z"}])
    trained = s.with_training_facts({"a": cols["a"][:2], "b": cols["b"][:2]}, [0, 1])
    x = trained.encode(cols)
    np.testing.assert_array_equal(x, np.array([[1, 0], [2, 1], [3, -1]], dtype=np.float32))
    assert trained.classes == (0, 1)
    assert FeatureSchema.from_dict(trained.to_dict()) == trained


def test_labels() -> None:
    s = FeatureSchema((), label_type="int", classes=(0, 1))
    assert s.label_to_store(1) == "1" and s.label_to_store("0") == "0"
    for bad in (2, True, 1.5, "a", None):
        with pytest.raises(SchemaError):
            s.label_to_store(bad)
    assert s.label_from_store("1") == 1


def test_a_batch_of_labels_is_checked_like_each_label() -> None:
    s = FeatureSchema((), label_type="int", classes=(0, 1))
    for good in ([1, "0", None, 1, 0, "1", None], [1, "0", 1, 0, "1"]):
        want = [None if v is None else s.label_to_store(v) for v in good]
        assert s.labels_to_store(good) == want
    for bad in ([1, True], [0, 2], [1, 1.0], [0, [1]], [0, {"a": 1}], [0, 7, 1, 2, "x"]):
        with pytest.raises(SchemaError) as batch_error:
            s.labels_to_store(bad)
        with pytest.raises(SchemaError) as one_error:
            s.label_to_store(bad[1])  # the first bad label of each
        assert str(batch_error.value) == str(one_error.value)


def test_huge_integers_are_a_clear_error() -> None:
    s = infer_schema(features=[[1.0, 2.0]])
    for payload in ({"features": [[10**400, 1.0]]}, {"records": [{"f0": 10**400, "f1": 1.0}]}):
        with pytest.raises(SchemaError, match="feature 'f0': expected a finite number"):
            s.columns(**payload)


def test_non_finite_numbers_are_refused_in_small_and_large_columns() -> None:
    """Columns of a few values are checked in Python, longer ones by numpy: same verdicts."""
    s = infer_schema(records=[{"a": 1.0, "b": "x"}])  # text too: numbers come as lists
    for bad in (math.nan, math.inf, -math.inf, 10**400):
        for rows in (1, 3, 40):
            records = [{"a": 1.0, "b": "x"} for _ in range(rows)]
            records[-1]["a"] = bad
            with pytest.raises(SchemaError, match=f"row {rows - 1}, feature 'a': expected a fin"):
                s.columns(records=records)
    for rows in (1, 3, 40):
        got = s.columns(records=[{"a": 10**300, "b": "x"}] * rows)["a"]
        assert got.dtype == np.float64 and got.tolist() == [1e300] * rows


def test_records_are_checked_row_by_row_whatever_their_shape() -> None:
    from collections import OrderedDict

    s = infer_schema(records=[{"a": 1.0, "b": "x"}])
    good = [{"a": 1.0, "b": "x"}, {"b": "y", "a": 2.0}]
    np.testing.assert_array_equal(s.columns(records=good)["a"], [1.0, 2.0])
    ordered = [OrderedDict(a=3.0, b="z")]  # a dict subclass goes the slow way, to the same end
    assert s.columns(records=ordered)["b"].tolist() == ["z"]
    cases = [
        ([*good, {"a": 1.0, "c": "x"}], r"records\[2\]: unknown feature\(s\) \['c'\]; missing"),
        ([*good, {"a": 1.0}], r"records\[2\]: missing feature\(s\) \['b'\]"),
        ([{"a": 1.0, "b": "x", "c": 0}], r"records\[0\]: unknown feature\(s\) \['c'\]"),
        ([*good, [1.0, "x"]], r"records\[2\] must be an object"),
    ]
    for records, message in cases:
        with pytest.raises(SchemaError, match=message):
            s.columns(records=records)


def test_numeric_features_refuse_numeric_strings_and_booleans() -> None:
    """numpy reads "1.5" as 1.5 and True as 1.0: an all-number schema must not let it."""
    s = infer_schema(features=[[1.0, 2.0]])
    np.testing.assert_array_equal(s.columns(features=[[1, 2.5]])["f1"], [2.5])
    for bad, shown in (("1.5", "'1.5'"), (True, "True"), (None, "None")):
        with pytest.raises(SchemaError, match=f"row 1, feature 'f0': .* got {shown}"):
            s.columns(features=[[1.0, 2.0], [bad, 2.0]])

"""Feature schemas: what a dataset's rows look like, and turning request payloads into columns.

The first ingested batch fixes the dataset schema (names, kinds, label type); a trained model
carries a copy extended with what it learned (categories of each categorical feature, classes).
Every payload is validated here, so the API, the notebooks and the CLI give the same messages.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, TypeGuard

import numpy as np
import pyarrow as pa

NUMERIC = "numeric"
CATEGORICAL = "categorical"


class SchemaError(ValueError):
    """A payload does not fit the schema; the message says what is wrong, for the user."""


FEATURE_NAME_RULE = (
    "1 to 64 characters: letters and digits (any script), underscore, space and "
    ". - ( ) [ ] / % + # : @, not starting or ending with a space"
)
"""What a feature name may be (the first batch's record keys, or given names). Names are
also unique regardless of letter case: the lake's column names are case-insensitive."""

_FEATURE_NAME = re.compile(r"[\w.()\[\]/%+#:@-](?:[\w .()\[\]/%+#:@-]{0,62}[\w.()\[\]/%+#:@-])?")

BRIEF_CHARS = 60
"""How much of a client's value an error message repeats."""


def brief(value: Any) -> str:
    """`repr(value)` for an error message, cut short: a message names the bad value, it never
    sends a megabyte back."""
    text = repr(value)
    if len(text) <= BRIEF_CHARS:
        return text
    return f"{text[:BRIEF_CHARS]}… ({len(text):,} characters)"


def check_feature_names(names: Sequence[Any]) -> None:
    """A SchemaError unless every name follows `FEATURE_NAME_RULE` and no two differ only in
    letter case."""
    seen: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str) or _FEATURE_NAME.fullmatch(name) is None:
            raise SchemaError(f"feature name {brief(name)} is not allowed: {FEATURE_NAME_RULE}")
        key = name.casefold()
        if key in seen:
            raise SchemaError(
                f"feature names {brief(seen[key])} and {brief(name)} differ only in letter case"
            )
        seen[key] = name


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str = NUMERIC
    categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureSchema:
    """Ordered features plus the label's type; a model's schema also lists its classes."""

    features: tuple[Feature, ...]
    label_type: str = "int"  # "int" or "str": how labels are given back to clients
    classes: tuple[Any, ...] = field(default=())

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": [
                {"name": f.name, "kind": f.kind, "categories": list(f.categories)}
                for f in self.features
            ],
            "label_type": self.label_type,
            "classes": list(self.classes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        return cls(
            features=tuple(
                Feature(f["name"], f.get("kind", NUMERIC), tuple(f.get("categories", ())))
                for f in data["features"]
            ),
            label_type=data.get("label_type", "int"),
            classes=tuple(data.get("classes", ())),
        )

    def arrow_type(self) -> pa.StructType:
        """The Arrow type of the `features` column in the lake."""
        return pa.struct(
            [(f.name, pa.float64() if f.kind == NUMERIC else pa.string()) for f in self.features]
        )

    def with_training_facts(
        self, columns: dict[str, np.ndarray], labels: Sequence[Any]
    ) -> FeatureSchema:
        """A copy that records the categories and classes seen in training data."""
        features = tuple(
            replace(f, categories=tuple(sorted(set(columns[f.name].tolist()))))
            if f.kind == CATEGORICAL
            else f
            for f in self.features
        )
        return replace(self, features=features, classes=tuple(sorted(set(labels))))

    # -- labels --------------------------------------------------------------------------------

    def label_to_store(self, label: Any) -> str:
        """Labels are stored as text; this checks the type and that it is a known class."""
        if self.label_type == "int":
            if isinstance(label, bool) or not isinstance(label, int | str):
                raise SchemaError(f"label {brief(label)} is not an integer class label")
            try:
                value: Any = int(label)
            except ValueError:
                raise SchemaError(f"label {brief(label)} is not an integer class label") from None
        else:
            if not isinstance(label, str | int) or isinstance(label, bool):
                raise SchemaError(f"label {brief(label)} is not a text class label")
            value = str(label)
        if self.classes and value not in self.classes:
            raise SchemaError(
                f"label {brief(label)} is not one of the classes {list(self.classes)}"
            )
        return str(value)

    def labels_to_store(self, labels: Sequence[Any]) -> list[str | None]:
        """`label_to_store` for a batch (None stays None, unlabeled), each distinct label
        checked once: a 10k-row batch has a handful of classes, not 10k of them."""
        if set(map(type, labels)) <= {int, str}:  # the common case, no bool (True == 1)
            # In order of first appearance: an error names the first bad label, as below.
            texts = {label: self.label_to_store(label) for label in dict.fromkeys(labels)}
            return list(map(texts.__getitem__, labels))
        checked: dict[tuple[type, Any], str] = {}
        out: list[str | None] = []
        for label in labels:
            if label is None:
                out.append(None)
                continue
            key = (type(label), label)  # the type too: True == 1, yet True is no int label
            try:
                stored = checked.get(key)
            except TypeError:  # unhashable (a list, an object): never a label, said below
                stored = None
            if stored is None:
                stored = self.label_to_store(label)  # raises for anything but a class
                checked[key] = stored
            out.append(stored)
        return out

    def label_from_store(self, text: str) -> Any:
        return int(text) if self.label_type == "int" else text

    # -- payloads ------------------------------------------------------------------------------

    def columns(
        self,
        features: list[list[Any]] | None = None,
        records: list[dict[str, Any]] | None = None,
        *,
        max_rows: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Validate a payload (`features` matrix or `records`) into one array per feature."""
        rows = _one_of(features, records)
        check_row_count(len(rows), max_rows)
        names = self._names
        if features is not None:
            raw = _feature_columns(features, names, all_numeric=not self._lookups)
        else:
            raw = _record_columns(records or [], names)
        checked = zip(self.features, raw, strict=True)
        return {feat.name: _check_column(col, feat) for feat, col in checked}

    @cached_property
    def _names(self) -> list[str]:
        return [f.name for f in self.features]

    @cached_property
    def _lookups(self) -> dict[str, dict[str, int]]:
        """Per categorical feature, category -> index (built once per schema, not per call)."""
        return {
            f.name: {c: i for i, c in enumerate(f.categories)}
            for f in self.features
            if f.kind != NUMERIC
        }

    def encode(self, columns: dict[str, np.ndarray]) -> np.ndarray:
        """The float32 matrix a model sees: categories become their index (-1 if unseen)."""
        n = len(next(iter(columns.values())))
        x = np.empty((n, len(self.features)), dtype=np.float32)
        lookups = self._lookups
        for j, feat in enumerate(self.features):
            col = columns[feat.name]
            if feat.kind == NUMERIC:
                x[:, j] = col
            else:
                get = lookups[feat.name].get
                x[:, j] = [get(v, -1) for v in col]
        return x

    def to_arrow(self, columns: dict[str, Any]) -> pa.StructArray:
        """The `features` column as the lake stores it: every value exact, zero unsigned
        (see `stored_number`)."""
        arrays = [
            pa.array(np.asarray(columns[f.name], dtype=np.float64) + 0.0)
            if f.kind == NUMERIC
            else pa.array(columns[f.name], type=pa.string())
            for f in self.features
        ]
        return pa.StructArray.from_arrays(arrays, names=self._names)


def infer_schema(
    features: list[list[Any]] | None = None,
    records: list[dict[str, Any]] | None = None,
    labels: Sequence[Any] | None = None,
    names: Sequence[str] | None = None,
) -> FeatureSchema:
    """The schema a first batch implies: numbers are numeric, text is categorical."""
    rows = _one_of(features, records)
    if records is not None:
        first = records[0]
        if not isinstance(first, dict) or not first:
            raise SchemaError("records[0] must be a non-empty object of feature: value")
        names = list(first)
        check_feature_names(names)
        matrix = _records_to_matrix(records, names)
    else:
        width = len(rows[0]) if isinstance(rows[0], list) else 0
        if width == 0:
            raise SchemaError("features[0] must be a non-empty list of values")
        names = list(names) if names else [f"f{i}" for i in range(width)]
        check_feature_names(names)
        matrix = _checked_matrix(rows, names)
    feats = []
    for j, name in enumerate(names):
        column = matrix[:, j]
        is_text = [isinstance(v, str) for v in column]
        kind = CATEGORICAL if all(is_text) else NUMERIC
        if any(is_text) and not all(is_text):
            raise SchemaError(f"feature {brief(name)} mixes numbers and text in its first batch")
        feats.append(Feature(str(name), kind))
    label_type = "int"
    present = [lab for lab in (labels or []) if lab is not None]
    if any(isinstance(lab, str) for lab in present):
        label_type = "str"
    schema = FeatureSchema(tuple(feats), label_type=label_type)
    schema.columns(features, records)  # the first batch must pass its own schema
    return schema


def stored_number(value: int | float) -> float:
    """A client's number as the lake keeps it: the same float, except that -0.0 becomes 0.0.

    DuckDB's Parquet writer keeps -0.0 and 0.0 as one dictionary entry (they compare equal),
    so in a file that holds both every zero comes back with the sign of the first one stored,
    and a client's 0.0 can read back as -0.0 (`tests/pipelines/store/test_exact_values.py`
    shows it). Zero is therefore stored unsigned, which keeps every other value exact and
    changes no comparison or arithmetic a model does.
    """
    return float(value) + 0.0


def check_row_count(rows: int, max_rows: int | None) -> None:
    """A SchemaError when one request brings more than `max_rows` rows."""
    if max_rows is not None and rows > max_rows:
        raise SchemaError(f"{rows} rows in one request; the limit is {max_rows}")


def _one_of(features: list | None, records: list | None) -> list:
    if (features is None) == (records is None):
        raise SchemaError('give exactly one of "features" (a list of rows) or "records"')
    rows = features if features is not None else records
    if not isinstance(rows, list) or not rows:
        raise SchemaError("no rows: the list is empty")
    return rows


def _checked_matrix(features: list[list[Any]], names: list[str]) -> np.ndarray:
    """The rows as a matrix: float64 when all are numbers, objects otherwise."""
    _check_rows(features, names)
    matrix = _numbers_matrix_or_none(features)
    if matrix is not None:
        return matrix
    return np.array(features, dtype=object).reshape(len(features), len(names))


def _records_to_matrix(
    records: list[dict[str, Any]], names: list[str], offset: int = 0
) -> np.ndarray:
    expected = set(names)
    for i, rec in enumerate(records, start=offset):
        if not isinstance(rec, dict):
            raise SchemaError(f"records[{i}] must be an object of feature: value")
        if rec.keys() != expected:
            unknown = sorted(set(rec) - expected)
            missing = [n for n in names if n not in rec]
            parts = []
            if unknown:
                parts.append(f"unknown feature(s) {brief(unknown)}")
            if missing:
                parts.append(f"missing feature(s) {brief(missing)}")
            raise SchemaError(f"records[{i}]: {'; '.join(parts)}")
    matrix = np.empty((len(records), len(names)), dtype=object)
    for j, name in enumerate(names):
        matrix[:, j] = [rec[name] for rec in records]
    return matrix


def _feature_columns(features: list[list[Any]], names: list[str], *, all_numeric: bool) -> list:
    """`features` rows as one sequence per feature: float64 columns when `all_numeric` and
    every value is a number, lists otherwise (each checked later, against its feature)."""
    _check_rows(features, names)
    if all_numeric:
        matrix = _numbers_matrix_or_none(features)
        if matrix is not None:
            return list(matrix.T)
    # Text is allowed somewhere: transpose the rows (a comprehension per column is faster than
    # `zip(*features)`; numpy's all-numbers attempt would only fail on the first text).
    return [[row[j] for row in features] for j in range(len(names))]


def _check_rows(features: list[list[Any]], names: list[str]) -> None:
    """Every row a list of one value per feature, or a SchemaError naming the first that is
    not (the common case, all good, is two passes in C)."""
    width = len(names)
    if set(map(type, features)) == {list} and set(map(len, features)) == {width}:
        return
    for i, row in enumerate(features):
        if not isinstance(row, list):
            raise SchemaError(f"features[{i}] must be a list of {width} values")
        if len(row) != width:
            raise SchemaError(
                f"features[{i}] has {len(row)} values, expected {width} ({', '.join(names)})"
            )


def _numbers_matrix_or_none(features: list[list[Any]]) -> np.ndarray | None:
    """The rows (checked by `_check_rows`) as a float64 matrix, or None when some value is not
    a number (or is a bool)."""
    try:  # fails fast on the first text that is not a number
        matrix = np.array(features, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    # Only JSON numbers: numpy also reads "1.5" as 1.5 and True as 1.0, which a numeric feature
    # must refuse (the per-column checks then name the value).
    if not set(map(type, itertools.chain.from_iterable(features))) <= _NUMBER_TYPES:
        return None
    return matrix


def _record_columns(records: list[dict[str, Any]], names: list[str]) -> list[Any]:
    """`records` as one sequence per feature, after the same checks as `_records_to_matrix`."""
    # Every record a dict with as many keys as there are names, each name found: then its keys
    # are exactly the names. Three passes in C, faster than comparing each key set in Python.
    if set(map(type, records)) == {dict} and set(map(len, records)) == {len(names)}:
        try:
            return [[rec[name] for rec in records] for name in names]
        except KeyError:
            pass
    expected = set(names)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or rec.keys() != expected:
            _records_to_matrix(records[i : i + 1], names, offset=i)  # raises the message
    return [[rec[name] for rec in records] for name in names]  # dict subclasses, all good


_NUMBER_TYPES = frozenset((int, float))

_FEW = 16
"""Columns of at most this many values (single rows, small batches) are checked value by value
in Python: numpy's fixed cost per call outweighs a few values, so for a single row the Python
loop is the cheaper check (single-row /predict: `python -m benchmarks --only serving`)."""


def is_finite_number(value: Any) -> TypeGuard[int | float]:
    """Whether a JSON value is a number a float holds: not a bool, not NaN or infinite, not an
    integer beyond float range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


def _check_column(column: Any, feat: Feature) -> np.ndarray:
    if feat.kind == NUMERIC:
        if isinstance(column, np.ndarray) and column.dtype == np.float64:
            bad = np.flatnonzero(~np.isfinite(column))
            if bad.size:
                raise SchemaError(
                    f"row {bad[0]}, feature {feat.name!r}: expected a finite number, "
                    f"got {column[bad[0]]}"
                )
            return column
        if set(map(type, column)) <= _NUMBER_TYPES:  # plain JSON numbers: check them at once
            try:
                values = np.array(column, dtype=np.float64)
            except OverflowError:
                values = None  # an int too large for a float: the loop below says which
            # A few values are checked in Python: numpy's per-call cost outweighs them.
            if values is not None and (
                all(map(math.isfinite, column))
                if len(column) <= _FEW
                else np.isfinite(values).all()
            ):
                return values
        for i, v in enumerate(column):
            if not is_finite_number(v):
                raise SchemaError(
                    f"row {i}, feature {feat.name!r}: expected a finite number, got {brief(v)}"
                )
        return np.asarray(column, dtype=np.float64)
    if set(map(type, column)) != {str}:
        for i, v in enumerate(column):
            if not isinstance(v, str):
                raise SchemaError(f"row {i}, feature {feat.name!r}: expected text, got {brief(v)}")
    out = np.empty(len(column), dtype=object)
    out[:] = column
    return out

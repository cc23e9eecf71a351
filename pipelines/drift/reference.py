"""Column profiles: everything a drift check needs from one sample, computed once.

A reference profile is built once per champion model (from its training or reference window)
and reused by every check, so a check only pays for profiling the current window. The same
profile classes describe the current window, which keeps every statistical test a function of
two profiles.

No I/O here: inputs are numpy arrays, pandas objects or pyarrow arrays/tables.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

Kind = Literal["numeric", "categorical"]
Role = Literal["feature", "prediction", "label"]

DEFAULT_BINS = 10


@dataclass(frozen=True, eq=False)
class NumericProfile:
    """A numeric sample, sorted, with the summaries the tests reuse.

    Attributes:
        values: The finite values, sorted ascending (NaN, None and ±inf dropped).
        n_missing: How many values were dropped as missing or non-finite.
        mean: Mean of ``values`` (NaN when empty).
        std: Population standard deviation (ddof=0, as Evidently's normed Wasserstein).
        bin_edges: Inner PSI bin edges: the reference quantiles at 1/k, ..., (k-1)/k,
            de-duplicated. Bins are ``[edge_i, edge_{i+1})`` with open ends, so values outside
            the reference range still land in the first or last bin.
        bin_counts: Counts of ``values`` in those bins.
    """

    values: np.ndarray
    n_missing: int
    mean: float
    std: float
    bin_edges: np.ndarray
    bin_counts: np.ndarray
    kind: Kind = field(default="numeric", init=False)

    @property
    def n(self) -> int:
        """Number of usable (non-missing) values."""
        return int(self.values.size)

    @property
    def missing_share(self) -> float:
        """Share of the input that was missing or non-finite."""
        total = self.n + self.n_missing
        return self.n_missing / total if total else 0.0

    def counts_in(self, edges: np.ndarray) -> np.ndarray:
        """Counts of this sample in the bins defined by another profile's ``edges``.

        The values are sorted, so this costs one binary search per edge, not per value.
        """
        return _bin_counts(self.values, edges)


@dataclass(frozen=True, eq=False)
class CategoricalProfile:
    """Category counts of a sample (missing values dropped).

    Attributes:
        categories: The distinct non-missing values, as an object array.
        counts: How often each category occurs (same order as ``categories``).
        n_missing: How many values were missing.
    """

    categories: np.ndarray
    counts: np.ndarray
    n_missing: int
    kind: Kind = field(default="categorical", init=False)

    @property
    def n(self) -> int:
        """Number of usable (non-missing) values."""
        return int(self.counts.sum())

    @property
    def missing_share(self) -> float:
        """Share of the input that was missing."""
        total = self.n + self.n_missing
        return self.n_missing / total if total else 0.0

    def frequencies(self) -> dict[Any, int]:
        """Category → count, for display and storage."""
        return dict(zip(self.categories.tolist(), self.counts.tolist(), strict=True))


ColumnProfile = NumericProfile | CategoricalProfile


@dataclass(frozen=True, eq=False)
class ReferenceProfile:
    """Profiles of every monitored column of a reference sample.

    Attributes:
        columns: Column name → profile.
        roles: Column name → "feature", "prediction" or "label".
        n_rows: Rows in the reference sample.
        n_bins: Number of PSI bins used for numeric columns.
    """

    columns: dict[str, ColumnProfile]
    roles: dict[str, Role]
    n_rows: int
    n_bins: int = DEFAULT_BINS

    def kind(self, column: str) -> Kind:
        """The kind ("numeric" or "categorical") of a profiled column."""
        return self.columns[column].kind


def profile_numeric(values: Any, n_bins: int = DEFAULT_BINS) -> NumericProfile:
    """Profile a numeric sample.

    Args:
        values: Array-like of numbers; NaN, None and ±inf are dropped and counted as missing.
        n_bins: Number of quantile bins for PSI.

    Returns:
        A NumericProfile.
    """
    raw = _to_float_array(values)
    finite = np.isfinite(raw)
    kept = raw[finite] if not finite.all() else raw
    # np.sort copies, so the caller's array is never reordered.
    sorted_values = np.sort(kept)
    edges = _quantile_edges(sorted_values, n_bins)
    return NumericProfile(
        values=sorted_values,
        n_missing=int(raw.size - sorted_values.size),
        mean=float(sorted_values.mean()) if sorted_values.size else float("nan"),
        std=float(sorted_values.std()) if sorted_values.size else float("nan"),
        bin_edges=edges,
        bin_counts=_bin_counts(sorted_values, edges),
    )


def profile_categorical(values: Any) -> CategoricalProfile:
    """Profile a categorical sample (strings, booleans, integers, pandas categoricals...).

    Args:
        values: Array-like, pandas Series or pyarrow array; None/NaN are dropped as missing.

    Returns:
        A CategoricalProfile.
    """
    categories, counts, n_missing = _value_counts(values)
    return CategoricalProfile(categories=categories, counts=counts, n_missing=n_missing)


def profile_column(values: Any, kind: Kind, n_bins: int = DEFAULT_BINS) -> ColumnProfile:
    """Profile one column as ``kind``."""
    if kind == "numeric":
        return profile_numeric(values, n_bins=n_bins)
    if kind == "categorical":
        return profile_categorical(values)
    raise ValueError(f"unknown column kind {kind!r}; expected 'numeric' or 'categorical'")


def build_reference_profile(
    reference: Any,
    numeric: Iterable[str] | None = None,
    categorical: Iterable[str] | None = None,
    roles: Mapping[str, Role] | None = None,
    n_bins: int = DEFAULT_BINS,
) -> ReferenceProfile:
    """Profile the reference sample once; pass the result to every drift check.

    Args:
        reference: A pandas DataFrame, a pyarrow Table or a mapping of column name → array.
        numeric: Numeric columns. When neither ``numeric`` nor ``categorical`` is given, kinds
            are inferred: numbers are numeric; strings, booleans and categoricals categorical.
        categorical: Categorical columns.
        roles: Column → "prediction" or "label" for the model's output and the ground truth;
            other columns are features. A class prediction is categorical, a probability
            numeric (one column per class if several).
        n_bins: Number of reference-quantile bins for numeric PSI.

    Returns:
        A ReferenceProfile.
    """
    kinds = resolve_kinds(reference, numeric, categorical)
    roles = dict(roles or {})
    unknown = set(roles) - set(kinds)
    if unknown:
        raise ValueError(f"roles given for columns that are not profiled: {sorted(unknown)}")
    columns = {
        name: profile_column(column_values(reference, name), kind, n_bins)
        for name, kind in kinds.items()
    }
    logger.debug("built reference profile of %d columns", len(columns))
    return ReferenceProfile(
        columns=columns,
        roles={name: roles.get(name, "feature") for name in kinds},
        n_rows=num_rows(reference),
        n_bins=n_bins,
    )


def resolve_kinds(
    data: Any, numeric: Iterable[str] | None, categorical: Iterable[str] | None
) -> dict[str, Kind]:
    """Column → kind, from explicit lists or inferred from dtypes when both are None."""
    if numeric is None and categorical is None:
        return {name: _infer_kind(column_values(data, name)) for name in column_names(data)}
    kinds: dict[str, Kind] = {name: "numeric" for name in numeric or ()}
    for name in categorical or ():
        if name in kinds:
            raise ValueError(f"column {name!r} is listed as both numeric and categorical")
        kinds[name] = "categorical"
    missing = set(kinds) - set(column_names(data))
    if missing:
        raise KeyError(f"columns not found in the data: {sorted(missing)}")
    return kinds


def column_names(data: Any) -> list[str]:
    """Column names of a DataFrame, pyarrow Table or mapping."""
    if isinstance(data, pa.Table):
        return list(data.column_names)
    if isinstance(data, pd.DataFrame):
        return [str(c) for c in data.columns]
    return list(data.keys())


def column_values(data: Any, name: str) -> Any:
    """One column, in its native container (Series, ChunkedArray or array)."""
    if isinstance(data, pa.Table):
        return data.column(name)
    return data[name]


def num_rows(data: Any) -> int:
    """Number of rows of a DataFrame, pyarrow Table or mapping of equal-length arrays.

    A mapping with an integer ``num_rows`` attribute (a window read lazily, column by column)
    is taken at its word: counting must not read every column.
    """
    if isinstance(data, pa.Table | pd.DataFrame):
        return len(data)
    known = getattr(data, "num_rows", None)
    if isinstance(known, int):
        return known
    return max((len(v) for v in data.values()), default=0)


def _infer_kind(values: Any) -> Kind:
    if isinstance(values, pa.ChunkedArray | pa.Array):
        t = values.type
        is_number = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        return "numeric" if is_number else "categorical"
    dtype = values.dtype if hasattr(values, "dtype") else np.asarray(values).dtype
    is_number = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    return "numeric" if is_number else "categorical"


def _to_float_array(values: Any) -> np.ndarray:
    if isinstance(values, pa.ChunkedArray | pa.Array):
        # Casting first turns nulls into NaN instead of an object array.
        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    if isinstance(values, pd.Series | pd.Index):
        return values.to_numpy(dtype=np.float64, na_value=np.nan)
    # float() of None is NaN for numpy, so object arrays with None convert too.
    return np.asarray(values, dtype=np.float64)


def _value_counts(values: Any) -> tuple[np.ndarray, np.ndarray, int]:
    if isinstance(values, pa.ChunkedArray | pa.Array):
        total = len(values)
        counted = pc.value_counts(values.drop_null())
        categories = np.asarray(counted.field("values").to_pylist(), dtype=object)
        counts = counted.field("counts").to_numpy().astype(np.int64)
        return categories, counts, int(total - counts.sum())
    series = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values))
    if isinstance(series.dtype, pd.CategoricalDtype):
        # Codes make counting a bincount; -1 marks missing values.
        codes = series.cat.codes.to_numpy()
        counts = np.bincount(codes[codes >= 0], minlength=len(series.cat.categories))
        present = counts > 0
        categories = np.asarray(series.cat.categories, dtype=object)[present]
        return categories, counts[present].astype(np.int64), int((codes < 0).sum())
    counted = series.value_counts(dropna=True, sort=False)
    categories = np.asarray(counted.index, dtype=object)
    counts = counted.to_numpy().astype(np.int64)
    return categories, counts, int(len(series) - counts.sum())


def _bin_counts(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # Bin i is [edge_{i-1}, edge_i): a value equal to an edge goes to the bin above it.
    cuts = np.searchsorted(sorted_values, edges, side="left")
    return np.diff(np.concatenate(([0], cuts, [sorted_values.size])))


def _quantile_edges(sorted_values: np.ndarray, n_bins: int) -> np.ndarray:
    if n_bins < 2:
        raise ValueError("n_bins must be at least 2")
    if sorted_values.size == 0:
        return np.empty(0)
    # np.quantile's default ("linear") rule, read off the sorted values instead of paying for
    # np.quantile's partition of the whole array.
    position = np.linspace(0.0, 1.0, n_bins + 1)[1:-1] * (sorted_values.size - 1)
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, sorted_values.size - 1)
    frac = position - below
    lo, hi = sorted_values[below], sorted_values[above]
    quantiles = lo + (hi - lo) * frac
    # Ties (integer-valued data) give equal quantiles; equal edges would make empty bins.
    return np.unique(quantiles)

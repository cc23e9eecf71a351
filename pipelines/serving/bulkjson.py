"""Large JSON request bodies read straight into feature columns, without Python objects.

A 10k-row body of the survey demo is 80k values. orjson makes a Python object of each (and a
list or dict per row), and validation then walks them all again to check their types and build
numpy columns: together the largest share of a bulk /predict or /ingest/batch (`python -m
benchmarks --only serving` prints each line's CPU per batch, and both readers' times).
`read_bulk` reads the body's bytes once, in a numba kernel, checking them against the feature
schema as it goes: numbers land in float64 columns, text in object arrays of str (one object
per distinct value) built through Arrow.

It is a fast path, never a second set of rules. It takes a body only when it reads it exactly
as `orjson.loads` plus `FeatureSchema.columns` would, and answers None for anything else, so
that the ordinary path runs and gives its usual answer or its usual error message: a number
with more than 15 significant digits or an exponent beyond 22 (then a double is not simply
digits times a power of ten), a string with an escape or a non-ASCII byte, a wrong type, width
or key, a duplicate or unknown key, malformed JSON. `tests/pipelines/test_bulkjson.py` checks
that both paths agree, value for value, on generated bodies, and that every kind of bad input
is handed on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from pipelines.schema import CATEGORICAL, NUMERIC, Feature, FeatureSchema

MIN_BYTES = 16_384
"""Smaller bodies take the ordinary path: single rows (a /predict of one survey row is ~150
bytes) and small batches have too few values to gain from the kernel, which is for bulk
requests."""

MATRIX_KEYS = ("features", "records")


@dataclass(frozen=True)
class Bulk:
    """A body read by `read_bulk`: its rows as validated columns, and its other keys."""

    form: str  # "features" or "records"
    rows: int
    columns: dict[str, np.ndarray]  # as `FeatureSchema.columns` returns them
    others: dict[str, Any]  # the body's other keys, parsed by orjson


def read_bulk(
    body: bytes, schema: FeatureSchema, keys: Sequence[str] = (), *, min_bytes: int = MIN_BYTES
) -> Bulk | None:
    """The body's rows as columns, if it is a JSON object with "features" or "records" that
    fit `schema` and otherwise only `keys`; None when the ordinary path must read it."""
    if len(body) < min_bytes or not schema.features:
        return None
    names = [f.name.encode() for f in schema.features]
    numeric = np.array([f.kind == NUMERIC for f in schema.features])
    slot = np.where(numeric, np.cumsum(numeric) - 1, np.cumsum(~numeric) - 1).astype(np.int64)
    tops = [k.encode() for k in (*MATRIX_KEYS, *(k for k in keys if k not in MATRIX_KEYS))]
    buf = np.frombuffer(body, dtype=np.uint8)
    width = len(names)
    cap = len(body) // (2 * width + 1) + 1  # a row takes at least "[v,v,...]" and a comma
    numbers = np.empty((int(numeric.sum()), cap))
    spans = np.empty((int((~numeric).sum()), 2, cap), dtype=np.int64)  # text: start, end
    found = np.full((len(tops), 2), -1, dtype=np.int64)
    from pipelines.serving import bulkjson_kernels as kernels  # numba: imported on first use

    form, n = kernels.parse(
        buf, *_packed(names), numeric, slot, *_packed(tops), numbers, spans, found
    )
    if form < 0:
        return None
    others = {}
    for k in range(len(MATRIX_KEYS), len(tops)):
        start, end = found[k]
        if start >= 0:
            try:
                others[tops[k].decode()] = orjson.loads(body[start:end])
            except orjson.JSONDecodeError:
                return None
    columns = {}
    for feat, is_number, s in zip(schema.features, numeric, slot, strict=True):
        if is_number:
            columns[feat.name] = numbers[s, :n]
        else:
            columns[feat.name] = _text(buf, spans[s, 0, :n], spans[s, 1, :n])
    return Bulk(MATRIX_KEYS[form], int(n), columns, others)


def warm_up() -> None:
    """Load the kernels now (numba's import and its on-disk cache), not at the first bulk
    request."""
    schema = FeatureSchema((Feature("number"), Feature("text", CATEGORICAL)))
    read_bulk(b'{"features": [[0, "a"]]}', schema, min_bytes=0)


def _packed(items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings as one uint8 array and the offsets of their ends (starting at 0)."""
    data = np.frombuffer(b"".join(items) or b"\0", dtype=np.uint8)
    return data, np.cumsum([0] + [len(i) for i in items]).astype(np.int64)


def _text(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """The strings at these spans of the body (checked ASCII by the kernel) as an object array,
    as `FeatureSchema.columns` gives a text column: one str object per distinct value, shared."""
    lengths = ends - starts
    offsets = np.zeros(len(starts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    from pipelines.serving import bulkjson_kernels as kernels

    data = kernels.gather(buf, starts, ends, int(offsets[-1]))
    strings = pa.StringArray.from_buffers(
        len(starts), pa.py_buffer(offsets), pa.py_buffer(data)
    ).dictionary_encode()
    values = np.array(strings.dictionary.to_pylist(), dtype=object)
    return values[strings.indices.to_numpy()]

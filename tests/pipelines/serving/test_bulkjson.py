"""The bulk reader answers exactly as orjson + `FeatureSchema.columns`, or hands the body on."""

from __future__ import annotations

import random

import numpy as np
import orjson
import pytest

from pipelines.schema import CATEGORICAL, Feature, FeatureSchema, SchemaError
from pipelines.serving.bulkjson import read_bulk

SCHEMA = FeatureSchema((Feature("age"), Feature("job", CATEGORICAL), Feature("rate")))
KEYS = ("labels", "batch_id")


def ordinary(body: bytes, schema: FeatureSchema = SCHEMA) -> dict[str, np.ndarray]:
    payload = orjson.loads(body)
    return schema.columns(payload.get("features"), payload.get("records"))


def assert_same(columns: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(columns) == list(expected)
    for name, want in expected.items():
        got = columns[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        if want.dtype == np.float64:  # bit for bit: -0.0 is not 0.0 here
            np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64), err_msg=name)
        else:
            assert got.tolist() == want.tolist(), name


def number_text(rng: random.Random) -> str:
    """A JSON number as clients write them: ints, short decimals, exponents, signs, zeros."""
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randint(-(10**15) + 1, 10**15 - 1))
    if kind == 1:
        return repr(round(rng.uniform(-1e4, 1e4), rng.randint(0, 6)))
    if kind == 2:
        digits = str(rng.randint(1, 10 ** rng.randint(1, 15) - 1))
        return f"{rng.choice(['', '-'])}{digits}{rng.choice(['e', 'E'])}{rng.randint(-22, 5)}"
    if kind == 3:
        return rng.choice(["0", "-0", "0.0", "-0.0", "0e5", "-0.000", "1E+2", "1.5e-3"])
    if kind == 4:
        return f"0.{'0' * rng.randint(0, 5)}{rng.randint(1, 10**9)}"
    return str(rng.randint(0, 16))


JOBS = ["nurse", "", "a b", "x" * 40, "~!#$%&'()*+,-./:;<=>?@[]^_`{|}"]


def body_of(rng: random.Random, rows: int, form: str, extra: str = "") -> bytes:
    """A body written by hand (spacing, key order, number forms vary) with `rows` rows."""
    sp = lambda: rng.choice(["", " ", "\n  ", "\t"])  # noqa: E731
    out = []
    for _ in range(rows):
        values = {
            "age": number_text(rng),
            "job": '"' + rng.choice(JOBS) + '"',
            "rate": number_text(rng),
        }
        if form == "features":
            out.append("[" + ",".join(sp() + values[k] + sp() for k in values) + "]")
        else:
            keys = list(values)
            rng.shuffle(keys)
            out.append("{" + ",".join(f'{sp()}"{k}"{sp()}:{sp()}{values[k]}' for k in keys) + "}")
    rows_text = f",{sp()}".join(out)
    return f'{sp()}{{{sp()}"{form}"{sp()}:{sp()}[{sp()}{rows_text}]{extra}}}{sp()}'.encode()


@pytest.mark.parametrize("form", ["features", "records"])
def test_generated_bodies_read_as_the_ordinary_path_reads_them(form: str) -> None:
    rng = random.Random(7)
    for _ in range(40):
        body = body_of(rng, rng.randint(1, 300), form)
        bulk = read_bulk(body, SCHEMA, min_bytes=0)
        assert bulk is not None, body[:300]
        assert bulk.form == form and bulk.rows == len(orjson.loads(body)[form])
        assert_same(bulk.columns, ordinary(body))


def test_decimal_numbers_are_the_correctly_rounded_doubles() -> None:
    rng = random.Random(11)
    texts = []
    for _ in range(20_000):
        digits = str(rng.randint(1, 10 ** rng.randint(1, 15) - 1))
        point = rng.randint(0, len(digits))
        mantissa = (digits[:point] or "0") + ("." + digits[point:] if digits[point:] else "")
        texts.append(f"{mantissa}e{rng.randint(-7, 7)}")  # 10^-22 … 10^22
    schema = FeatureSchema((Feature("x"),))
    body = ('{"features": [' + ",".join(f"[{t}]" for t in texts) + "]}").encode()
    bulk = read_bulk(body, schema, min_bytes=0)
    assert bulk is not None
    expected = np.array([float(t) for t in texts])  # Python's float() rounds correctly
    np.testing.assert_array_equal(bulk.columns["x"].view(np.int64), expected.view(np.int64))


def test_other_keys_are_parsed_by_orjson() -> None:
    extra = ', "labels": [1, "a", null], "batch_id": "b\\"1"'
    body = body_of(random.Random(1), 5, "records", extra)
    bulk = read_bulk(body, SCHEMA, KEYS, min_bytes=0)
    assert bulk is not None and bulk.others == {"labels": [1, "a", None], "batch_id": 'b"1'}
    assert read_bulk(body, SCHEMA, min_bytes=0) is None  # keys it was not told of: handed on


GOOD = '[4, "nurse", 0.5]'


@pytest.mark.parametrize(
    "body",
    [
        '{"features": [@, [4, "nurse"]]}',  # too short
        '{"features": [@, [4, "nurse", 1, 2]]}',  # too long
        '{"features": [@, ["4", "nurse", 1]]}',  # text for a number
        '{"features": [@, [4, 5, 1]]}',  # a number for text
        '{"features": [@, [true, "nurse", 1]]}',
        '{"features": [@, [null, "nurse", 1]]}',
        '{"features": [@, [NaN, "nurse", 1]]}',
        '{"features": [@, [Infinity, "nurse", 1]]}',
        '{"features": [@, [1e999, "nurse", 1]]}',
        '{"features": [@, [0.30000000000000004, "nurse", 1]]}',  # 17 digits
        '{"features": [@, [12345678901234567, "nurse", 1]]}',
        '{"features": [@, [1.5e-30, "nurse", 1]]}',  # beyond an exact power of ten
        '{"features": [@, [01, "nurse", 1]]}',
        '{"features": [@, [1., "nurse", 1]]}',
        '{"features": [@, [.5, "nurse", 1]]}',
        '{"features": [@, [+1, "nurse", 1]]}',
        '{"features": [@, [-, "nurse", 1]]}',
        '{"features": [@, [1e, "nurse", 1]]}',
        '{"features": [@, [4, "nu\\"rse", 1]]}',  # an escape
        '{"features": [@, [4, "infirmi\u00e8re", 1]]}',  # not ASCII
        '{"features": [@, [4, "nur\tse", 1]]}',  # a control character
        '{"features": [@, [4, "nurse, 1]]}',  # unterminated
        '{"features": [@, {"age": 4}]}',
        '{"features": [@, 4]}',
        '{"features": [@]] }',
        '{"features": [@] } x',
        '{"features": [@]',
        '{"features": [@],}',
        '{"features": [@,]}',
        '{"features": []}',
        '{"features": [[]]}',
        '{"features": null}',
        '{"features": [@], "features": [@]}',  # repeated key
        '{"features": [@], "records": []}',  # both forms
        '{"features": [@], "extra": 1}',  # unknown key
        '{"labels": [1]}',  # no rows at all
        '{"features": [@], "labels": [1}',  # other key not JSON
        '{"features": [@], "labels": }',
        "[@]",
        '{"records": [{"age": 4, "job": "nurse"}]}',  # missing
        '{"records": [{"age": 4, "job": "nurse", "rate": 1, "x": 2}]}',  # unknown
        '{"records": [{"age": 4, "job": "nurse", "age": 1}]}',  # repeated
        '{"records": [{"age": 4, "job": "nurse", "ra\\u0074e": 1}]}',  # escaped name
        '{"records": [{"age": 4, "job": "nurse", "rate": 1,}]}',
        '{"records": [{}]}',
        '{"records": [[4, "nurse", 1]]}',
    ],
)
def test_everything_else_is_handed_on(body: str) -> None:
    """Each body with one good row (@) and one thing the fast path does not take."""
    assert read_bulk(body.replace("@", GOOD).encode(), SCHEMA, KEYS, min_bytes=0) is None


def test_what_is_handed_on_is_what_the_ordinary_path_refuses() -> None:
    """The fast path does not judge: a body it hands on gets the ordinary path's message."""
    body = b'{"features": [%s, ["4", "nurse", 1]]}' % GOOD.encode()  # noqa: UP031
    assert read_bulk(body, SCHEMA, min_bytes=0) is None
    with pytest.raises(SchemaError, match="row 1, feature 'age': expected a finite number"):
        ordinary(body)


def test_small_bodies_and_schemas_without_features_take_the_ordinary_path() -> None:
    body = ('{"features": [' + GOOD + "]}").encode()
    assert read_bulk(body, SCHEMA) is None  # under MIN_BYTES
    assert read_bulk(body, SCHEMA, min_bytes=0) is not None
    assert read_bulk(body, FeatureSchema(()), min_bytes=0) is None

"""The current window read from the store column by column gives the same check as one table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from pipelines.drift import build_reference_profile, check_drift
from pipelines.loop.monitoring import LABEL, PREDICTION, StoreWindow, performance
from pipelines.schema import CATEGORICAL, Feature, FeatureSchema
from pipelines.settings import Settings
from pipelines.store import Store
from tests.conftest import make_settings
from tests.pipelines.store import oracles

CLASSES = ("0", "1")
SCHEMA = FeatureSchema(
    (Feature("x"), Feature("y"), Feature("color", CATEGORICAL, ("red", "green", "blue"))),
    label_type="str",
    classes=CLASSES,
)
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def predictions(start: int, n: int, seed: int, shift: float, ts_step: int = 1) -> pa.Table:
    """Rows start..start+n; `ts_step` rows share each timestamp (a batch logged at once)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(shift, 1.0, n)
    x[::50] = np.nan  # missing values count in the missing share
    columns = {
        "x": x,
        "y": rng.integers(0, 20, n).astype(float),
        "color": rng.choice(np.array(["red", "green", "blue"], dtype=object), n),
    }
    micros = (np.arange(start, start + n) // ts_step).astype(np.int64)
    return pa.table(
        {
            "prediction_id": [f"p{i:06d}" for i in range(start, start + n)],
            "ts": pa.array(
                [T0 + dt.timedelta(microseconds=int(m)) for m in micros],
                pa.timestamp("us", tz="UTC"),
            ),
            "model_version": pa.repeat(pa.scalar("1"), n),
            "prediction": rng.choice(np.array(CLASSES, dtype=object), n),
            "features": SCHEMA.to_arrow(columns),
        }
    )


def fill(store: Store, ts_step: int, labels: bool) -> list[pa.Table]:
    """Three commits (three data files): older rows, then the shifted recent ones; labels."""
    store.fix_dataset_schema(SCHEMA)
    chunks = [
        predictions(0, 1500, seed=1, shift=0.0, ts_step=ts_step),
        predictions(1500, 1500, seed=2, shift=0.5, ts_step=ts_step),
        predictions(3000, 1000, seed=3, shift=0.5, ts_step=ts_step),
    ]
    for chunk in chunks:
        store.append_predictions(chunk)
    for i in range(2000, 4000, 50) if labels else ():
        label = CLASSES[i % 2]
        store.add_feedback(f"p{i:06d}", label="1" if label == "0" else "0", correct=None)
        store.add_feedback(f"p{i:06d}", label=label, correct=None)  # the latest label counts
    return chunks


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Predictions one microsecond apart: the newest n are well defined for both paths."""
    store = Store.open(make_settings(tmp_path_factory.mktemp("window") / "data"))
    fill(store, ts_step=1, labels=True)
    yield store
    store.close()


def reference_profile():
    rng = np.random.default_rng(0)
    n = 2000
    frame = {
        "x": rng.normal(0.0, 1.0, n),
        "y": rng.integers(0, 20, n).astype(float),
        "color": rng.choice(np.array(["red", "green", "blue"], dtype=object), n),
        PREDICTION: rng.choice(np.array(CLASSES, dtype=object), n),
        LABEL: rng.choice(np.array(CLASSES, dtype=object), n),
    }
    return build_reference_profile(
        frame,
        numeric=["x", "y"],
        categorical=["color", PREDICTION, LABEL],
        roles={PREDICTION: "prediction", LABEL: "label"},
    )


def one_table(window: pa.Table) -> dict[str, np.ndarray]:
    return {
        name: window.column(name).to_numpy()
        if pa.types.is_floating(window.column(name).type)
        else np.asarray(window.column(name).to_pylist(), dtype=object)
        for name in ["x", "y", "color", PREDICTION, LABEL]
    }


@pytest.mark.parametrize("columnwise", [False, True])
@pytest.mark.parametrize(
    ("limit", "since"),
    [(1000, None), (2500, None), (10_000, None), (None, T0 + dt.timedelta(microseconds=200))],
)
def test_window_read_by_columns_matches_one_table(
    store: Store, columnwise: bool, limit: int | None, since: dt.datetime | None
) -> None:
    table = oracles.prediction_window(store, limit=limit, since=since)
    bounds = store.window_bounds(limit=limit, since=since)
    window = StoreWindow(
        store, bounds, ["x", "y", "color", PREDICTION], columnwise_above=0 if columnwise else 10**9
    )
    assert window.columnwise is columnwise
    assert bounds.n_rows == table.num_rows == len(window[LABEL]) == len(window["x"])
    assert bounds.start == pa.compute.min(table.column("ts")).as_py()
    assert bounds.end == pa.compute.max(table.column("ts")).as_py()

    profile = reference_profile()
    expected = check_drift(profile, one_table(table), n_jobs=1).to_records()
    got = check_drift(profile, window, n_jobs=2).to_records()
    assert [r["feature"] for r in got] == [r["feature"] for r in expected]
    for mine, theirs in zip(got, expected, strict=True):
        for key, value in theirs.items():
            if isinstance(value, float):
                assert mine[key] == pytest.approx(value, rel=1e-12, abs=1e-15, nan_ok=True), key
            else:
                assert mine[key] == value, key
    assert any(r["drifted"] for r in got)  # the window holds the shifted rows

    classes = list(CLASSES)
    assert performance(
        window.labeled.column(PREDICTION).to_pylist(),
        window.labeled.column(LABEL).to_pylist(),
        classes,
    ) == performance(table.column(PREDICTION).to_pylist(), table.column(LABEL).to_pylist(), classes)


def test_window_cut_inside_a_tie_takes_the_newest_ids_and_ignores_later_rows(
    settings: Settings,
) -> None:
    store = Store.open(settings)
    chunks = fill(
        store, ts_step=7, labels=False
    )  # batches of 7 predictions logged at the same instant
    bounds = store.window_bounds(limit=2499)
    assert bounds.cutoff_id == "p001501"  # inside the batch of rows 1498..1504
    store.append_predictions(predictions(4000, 100, seed=4, shift=0.0))  # logged meanwhile
    got = store.window_columns(bounds, ["x"]).column("x").to_numpy(zero_copy_only=False)
    everything = pa.concat_tables(chunks).column("features").combine_chunks().field("x")
    expected = everything.to_numpy(zero_copy_only=False)[1501:]
    np.testing.assert_array_equal(np.sort(got), np.sort(expected))
    assert store.window_bounds(limit=2499).snapshot_id > bounds.snapshot_id


@pytest.mark.parametrize("limit", [703, 2502])  # cuts between two batches, from either end
def test_window_cut_between_two_tied_batches_needs_no_id(settings: Settings, limit: int) -> None:
    store = Store.open(settings)
    fill(store, ts_step=7, labels=False)  # 4000 rows: 571 batches of 7 and one of 3
    bounds = store.window_bounds(limit=limit)
    assert bounds.cutoff_id is None and bounds.n_rows == limit
    assert store.window_columns(bounds, ["x"]).num_rows == limit


def test_window_columns_rejects_unknown_names(store: Store) -> None:
    bounds = store.window_bounds(limit=10)
    with pytest.raises(KeyError):
        store.window_columns(bounds, ["nope"])
    window = StoreWindow(store, bounds, ["x", PREDICTION])
    with pytest.raises(KeyError):
        window["y"]
    assert list(window) == ["x", PREDICTION, LABEL] and len(window) == 3

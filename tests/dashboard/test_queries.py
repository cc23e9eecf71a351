"""`pipelines.store.queries` against a real trained store, checked with numpy."""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.loop.monitoring import Monitor
from pipelines.models.registry import CHAMPION, Registry
from pipelines.store import Store
from pipelines.store import queries as dq
from tests.conftest import make_settings
from tests.dashboard.conftest import log_traffic
from tests.pipelines.store import oracles


@pytest.fixture(scope="module")
def traffic_dir(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private trained store for the module, with 120 predictions (60 shifted) logged."""
    data = tmp_path_factory.mktemp("queries") / "data"
    shutil.copytree(trained_dir, data)
    log_traffic(make_settings(data), live=60, shifted=60, name="survey")
    return data


@pytest.fixture(scope="module")
def store(traffic_dir: Path) -> Iterator[Store]:
    s = Store.open(make_settings(traffic_dir))
    yield s
    s.close()


def _champion(store: Store, data_dir: Path) -> tuple[Registry, Any]:
    registry = Registry.from_settings(make_settings(data_dir))
    version = registry.alias_version(CHAMPION)
    assert version is not None
    return registry, registry.version(version)


def test_reference_ranges_are_the_training_rows_quantiles(store: Store, traffic_dir: Path) -> None:
    _, info = _champion(store, traffic_dir)
    schema = store.dataset_schema()
    assert schema is not None
    rows = store.labeled_rows(info.snapshot_id)
    ranges = dq.reference_ranges(store, schema, info.snapshot_id)
    age = np.asarray(rows.columns["age"], dtype=float)
    assert ranges["age"]["min"] == age.min() and ranges["age"]["max"] == age.max()
    assert ranges["age"]["p05"] == pytest.approx(np.quantile(age, 0.05))
    assert ranges["age"]["median"] == pytest.approx(np.quantile(age, 0.5))
    occupation = Counter(rows.columns["occupation"].tolist())
    shares = ranges["occupation"]["shares"]
    assert shares == pytest.approx({k: v / len(rows) for k, v in occupation.items()})
    assert list(shares) == [k for k, _ in occupation.most_common()]


def test_distribution_counts_both_sides_over_shared_bins(store: Store, traffic_dir: Path) -> None:
    _, info = _champion(store, traffic_dir)
    n_train = len(store.labeled_rows(info.snapshot_id))
    since = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    until = dt.datetime.now(dt.UTC)
    numeric = dq.distribution(
        store, "age", "numeric", snapshot_id=info.snapshot_id, since=since, until=until
    )
    assert len(numeric["bins"]) == dq.HISTOGRAM_BINS
    assert sum(numeric["reference"]) == n_train and sum(numeric["current"]) == 120
    ages = np.asarray(store.labeled_rows(info.snapshot_id).columns["age"], dtype=float)
    assert numeric["bins"][0] == ages.min()  # the youngest are in training, not the window
    assert np.allclose(np.diff(numeric["bins"]), numeric["width"])
    # The shifted cohort (32 and over) fills the bins past the oldest in training (27).
    upper = [i for i, b in enumerate(numeric["bins"]) if b > ages.max()]
    assert sum(numeric["current"][i] for i in upper) == 60
    assert sum(numeric["reference"][i] for i in upper) == 0
    cat = dq.distribution(
        store, "occupation", "categorical", snapshot_id=info.snapshot_id, since=since, until=until
    )
    assert sum(cat["reference"]) == n_train and sum(cat["current"]) == 120
    totals = [r + c for r, c in zip(cat["reference"], cat["current"], strict=True)]
    assert totals == sorted(totals, reverse=True)


def test_per_minute_versions_and_champion_since(store: Store, traffic_dir: Path) -> None:
    registry, info = _champion(store, traffic_dir)
    now = dt.datetime.now(dt.UTC)
    minutes = dq.predictions_per_minute(store, now - dt.timedelta(hours=1))
    assert sum(m["n"] for m in minutes) == 120
    assert all(m["uncertain"] <= m["n"] for m in minutes)
    assert dq.prediction_counts_by_version(store) == {info.version: 120}
    since = dq.champion_since(store, registry.model_name, info.version)
    promoted = [e for e in store.model_events(registry.model_name) if e["event"] == "promoted"]
    assert [(e["to_version"], e["ts"]) for e in promoted] == [(info.version, since)]
    registered = dt.datetime.fromtimestamp(info.created_at_ms / 1000, dt.UTC)
    assert registered <= since <= now
    assert dq.detections(store, "no-such-id") == []


def test_latest_check_by_trigger(  # last: it adds a check to the module's store
    store: Store, traffic_dir: Path
) -> None:
    settings = make_settings(traffic_dir)
    assert dq.latest_check_by(store, "worker") is None
    before = dt.datetime.now(dt.UTC)
    Monitor(settings, store, Registry.from_settings(settings)).check(trigger="worker")
    heartbeat = dq.latest_check_by(store, "worker")
    assert heartbeat is not None and before <= heartbeat <= dt.datetime.now(dt.UTC)


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"offset": 50},
        {"offset": 115},
        {"offset": 500},
        {"prediction": "1"},
        {"uncertain": True, "offset": 3},
        {"model_version": "nope"},
        {
            "since": dt.datetime(2000, 1, 1, tzinfo=dt.UTC),
            "until": dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
        },
    ],
)
def test_inspection_page_is_the_store_s_page(store: Store, filters: dict) -> None:
    kwargs: dict[str, Any] = {"limit": 10, **filters}
    assert dq.inspection_page(store, **kwargs) == oracles.inspection_logs(store, **kwargs)


def test_inspection_page_over_a_week_of_traffic(trained_copy: Path) -> None:
    """Predictions spread over 7 days: the page is found by widening spans back in time."""
    from benchmarks.bench_dashboard import prediction_chunk
    from pipelines import demo

    store = Store.open(make_settings(trained_copy))
    schema = store.dataset_schema()
    assert schema is not None
    live = demo.demo_split(name="survey").live
    pool = {name: live[name].to_numpy() for name in schema.names}
    t0 = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    rng = np.random.default_rng(1)
    store.append_predictions(
        prediction_chunk(
            pool,
            schema,
            start=0,
            n_rows=5000,
            total=5000,
            t0=t0,
            version="1",
            model_name="m",
            rng=rng,
        )
    )
    week = dt.datetime.now(dt.UTC) - dt.timedelta(days=3)
    for filters in (
        {},
        {"offset": 40},
        {"offset": 400},
        {"offset": 4990},
        {"since": week},
        {"prediction": "1", "offset": 1000},
        {"uncertain": True, "offset": 2000},
    ):
        kwargs: dict[str, Any] = {"limit": 20, **filters}
        assert dq.inspection_page(store, **kwargs) == oracles.inspection_logs(store, **kwargs), (
            filters
        )
    store.close()

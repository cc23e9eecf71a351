"""A real `driftlab api` process: crash durability, hot swap under load, no-restart updates."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from pipelines import demo
from pipelines.loop.ingestion import ingest
from pipelines.models import training
from pipelines.models.registry import Registry
from pipelines.store import Store
from tests.conftest import make_settings
from tests.helpers import ApiServer, children, kill_all, running, wait_until

RECORDS = demo.records(demo.demo_split(name="survey").live)


def hammer(url: str, stop: threading.Event, acked: list, failures: list, versions: set) -> None:
    with httpx.Client(timeout=10) as http:
        i = 0
        while not stop.is_set():
            body = {"records": RECORDS[i % len(RECORDS) : i % len(RECORDS) + 2]}
            i += 2
            try:
                r = http.post(f"{url}/predict", json=body)
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            if r.status_code != 200:
                failures.append(f"{r.status_code} {r.text[:200]}")
                continue
            out = r.json()
            acked.extend(out["prediction_ids"])
            versions.add(out["model_version"])


@pytest.mark.e2e
def test_acknowledged_predictions_survive_kill_9(trained_copy: Path) -> None:
    # A long flush interval: when the process dies, the acknowledged rows are only in the spool.
    server = ApiServer(trained_copy, DRIFTLAB_FLUSH_INTERVAL="60")
    server.start()
    acked: list[str] = []
    failures: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=hammer, args=(server.url, stop, acked, failures, set()))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    time.sleep(2.0)
    server.kill()  # mid-load: requests are in flight
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) > 100
    restarted = ApiServer(trained_copy)
    restarted.start()  # replays the dead process's spool before serving
    try:
        store = Store.open(make_settings(trained_copy), read_only=True)
        assert store.existing_prediction_ids(acked) == set(acked)
        n, distinct = store.lake.rows(
            "SELECT count(*), count(DISTINCT prediction_id) FROM lake.predictions"
        )[0]
        assert n == distinct  # nothing duplicated by the replay
        # A request spooled but killed before its answer went out may be stored too: at most
        # one per client thread, never fewer than were acknowledged.
        assert len(set(acked)) <= n <= len(set(acked)) + 4 * 2
    finally:
        restarted.stop()


@pytest.mark.e2e
def test_hot_swap_under_concurrent_requests(trained_copy: Path) -> None:
    server = ApiServer(trained_copy, DRIFTLAB_RELOAD_INTERVAL="0.3")
    server.start()
    acked: list[str] = []
    failures: list[str] = []
    versions: set[str] = set()
    stop = threading.Event()
    threads = [
        threading.Thread(target=hammer, args=(server.url, stop, acked, failures, versions))
        for _ in range(4)
    ]
    try:
        for t in threads:
            t.start()
        s = make_settings(trained_copy)
        result = training.train(
            Store.open(s),
            Registry.from_settings(s),
            training.TrainConfig(params={"n_estimators": 10}),
        )
        deadline = time.time() + 15
        while result.version not in versions and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
        server.stop()
    assert failures == []
    assert versions == {"1", result.version}
    assert len(acked) > 50


@pytest.mark.e2e
def test_new_data_and_training_serve_without_restart(api_server: ApiServer) -> None:
    """The user story: POST labeled rows, train in another process, /predict moves on."""
    split = demo.demo_split(name="survey")
    rows = split.shifted.head(500)
    with httpx.Client(base_url=api_server.url, timeout=30) as http:
        r = http.post(
            "/ingest/batch",
            json={"records": demo.records(rows), "labels": rows["affair"].tolist()},
        )
        assert r.status_code == 200 and r.json()["labeled"] == 500
        before = http.post("/predict", json={"records": RECORDS[:1]}).json()["model_version"]
        s = make_settings(api_server.data_dir)
        store = Store.open(s)
        result = training.train(store, Registry.from_settings(s))
        assert result.n_train + result.n_test == len(store.labeled_rows(result.snapshot_id))
        deadline = time.time() + 10
        version = before
        while version == before and time.time() < deadline:
            time.sleep(0.2)
            version = http.post("/predict", json={"records": RECORDS[:1]}).json()["model_version"]
        assert version == result.version != before


def test_bootstrap_store_from_api(tmp_path: Path) -> None:
    """Ingest before any model exists, then train: the schema came from the first batch."""
    data = tmp_path / "data"
    store = Store.open(make_settings(data))
    rows = demo.demo_split(name="survey").train.head(300)
    ingest(store, records=demo.records(rows), labels=rows["affair"].tolist())
    s = make_settings(data)
    result = training.train(store, Registry.from_settings(s))
    # The held-out 20% is drawn by a hash of each row's id: about 60 of the 300.
    assert result.promoted and result.n_train + result.n_test == 300 and 30 < result.n_test < 90


@pytest.mark.e2e
def test_workers_of_a_killed_api_supervisor_stop_and_free_the_port(trained_copy: Path) -> None:
    """`kill -9` of `driftlab api` with two worker processes: each gets SIGTERM from the
    kernel, flushes its log and exits, so none goes on serving on the port."""
    server = ApiServer(trained_copy, DRIFTLAB_API_WORKERS="2")
    server.start(timeout=120)
    assert server.proc is not None
    acked = httpx.post(f"{server.url}/predict", json={"records": RECORDS[:3]}, timeout=10)
    assert acked.status_code == 200
    workers = children(server.proc.pid)
    assert len(workers) >= 2  # the two workers (and multiprocessing's resource tracker)
    server.kill()
    try:
        assert wait_until(lambda: not any(running(pid) for pid in workers), timeout=30), [
            pid for pid in workers if running(pid)
        ]
    finally:
        kill_all(workers)  # whatever outlived the test
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/health", timeout=2)
    restarted = ApiServer(trained_copy)
    restarted.start()
    try:
        store = Store.open(make_settings(trained_copy), read_only=True)
        ids = acked.json()["prediction_ids"]
        assert store.existing_prediction_ids(ids) == set(ids)
    finally:
        restarted.stop()

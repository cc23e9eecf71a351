"""Dashboard fixtures: a store with live traffic, a real dashboard server, a headless Chromium."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.settings import Settings
from tests.conftest import make_settings
from tests.helpers import free_port

CHROMIUM = Path("/usr/bin/chromium")
# The flags Debian's chromium needs to run headless as root, without a GPU, offline.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# path, a selector a callback fills once the page has its data
PAGES = [
    ("overview", "/", "#overview-cards .card"),
    ("drift", "/drift", "#drift-latest-table"),
    ("models", "/models", "#models-versions-table"),
    ("inspections", "/inspections", ".ag-row"),
    ("predict", "/predict", "#predict-submit"),
    ("labeling", "/labeling", "#labeling-prediction"),
    ("retraining", "/retraining", "#retraining-conditions-table"),
]


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll `check` until it returns something truthy (writes reach the lake within ~1 s)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def stored_label(data_dir: Path, prediction_id: str) -> tuple[str, str] | None:
    """(label, source) of the label a prediction got, once it is in the store (the prediction
    itself reaches the lake with the dashboard's next log flush), or None after the wait."""
    from pipelines.store import Store

    store = Store.open(make_settings(data_dir), read_only=True)
    try:

        def labeled() -> tuple[str, str] | None:
            rows = store.labeled_rows()
            found = zip(rows.record_ids, rows.labels, rows.sources, strict=True)
            return next(((label, src) for rid, label, src in found if rid == prediction_id), None)

        return eventually(labeled)
    finally:
        store.close()


def log_traffic(settings: Settings, *, live: int, shifted: int, name: str) -> dict[str, Any]:
    """Predict records of demo `name` through the API's own path (`predicting.predict`, durable
    log): `live` of the training population, then `shifted` of the shift. Returns counts."""
    from pipelines import demo
    from pipelines.models.registry import Registry
    from pipelines.serving import predict as predicting
    from pipelines.serving.band import Band
    from pipelines.serving.model import ModelHolder
    from pipelines.store import Store
    from pipelines.store.spool import PredictionLog

    store = Store.open(settings)
    holder = ModelHolder(Registry.from_settings(settings))
    holder.refresh()
    assert holder.model is not None
    log = PredictionLog(store, settings.spool_dir, flush_interval=60)
    log.start()
    split = demo.demo_split(name=name)
    records = demo.records(split.live)[:live] + demo.records(split.shifted)[:shifted]
    band = Band(settings.uncertainty_low, settings.uncertainty_high)
    uncertain = 0
    for start in range(0, len(records), 50):
        out = predicting.predict(holder.model, log, band, records=records[start : start + 50])
        uncertain += sum(out["uncertain"])
    log.close()  # one flush into the lake
    store.close()
    return {"predictions": len(records), "uncertain": uncertain}


def go_live(data: Path, *, name: str, live: int, shifted: int) -> None:
    """Turn a trained data dir into one with live traffic of demo `name` (`live` predictions
    of the training population, then `shifted`), a drift check of them, the uncertain ones in
    the labeling queue, and an Evidently report file."""
    from pipelines.loop import labeling_queue
    from pipelines.loop.labeling_policy import QueuePolicy
    from pipelines.loop.monitoring import Monitor
    from pipelines.models.registry import Registry
    from pipelines.store import Store

    settings = make_settings(data)
    counts = log_traffic(settings, live=live, shifted=shifted, name=name)
    store = Store.open(settings)
    Monitor(settings, store, Registry.from_settings(settings)).check(window_size=live + shifted)
    enqueued = labeling_queue.refresh(store, QueuePolicy())
    store.close()
    # What `make drift` leaves for the Drift page to link to.
    settings.reports_dir.mkdir(parents=True, exist_ok=True)
    (settings.reports_dir / "evidently-test.html").write_text("<html>evidently report</html>")
    assert enqueued >= 3, f"too few uncertain predictions to label: {counts}"


@pytest.fixture(scope="module")
def live_dir(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private trained store (the survey demo) with 400 predictions (the last 200 shifted),
    a drift check of them, the uncertain ones in the labeling queue, and an Evidently report
    file."""
    data = tmp_path_factory.mktemp("dashboard") / "data"
    shutil.copytree(trained_dir, data)
    go_live(data, name="survey", live=200, shifted=200)
    return data


class DashboardServer:
    """`python -m dashboard` on 127.0.0.1:<free port> over `data_dir`, as `driftlab dashboard`
    runs it. The API port points at a free port nobody listens on (the Overview says "down").
    No API key unless `env` sets DRIFTLAB_API_KEY."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,  # without DRIFTLAB_* settings: `tests.conftest` removed them
            "DRIFTLAB_DATA_DIR": str(data_dir),
            "DRIFTLAB_DASHBOARD_PORT": str(self.port),
            "DRIFTLAB_API_PORT": str(free_port()),
            "DRIFTLAB_FLUSH_INTERVAL": "0.2",
            "DRIFTLAB_RETRAIN_OPTUNA_TRIALS": "0",
            **env,
        }
        self.log = data_dir.parent / f"dashboard-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextmanager
    def running(cls, data_dir: Path, **env: str) -> Iterator[DashboardServer]:
        """A started server, stopped on the way out whatever happened."""
        server = cls(data_dir, **env)
        server.start()
        try:
            yield server
        finally:
            server.stop()

    def start(self, timeout: float = 60.0) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dashboard"], env=self.env, stdout=out, stderr=out
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dashboard exited early:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"dashboard did not come up:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def dashboard(live_dir: Path) -> Iterator[DashboardServer]:
    with DashboardServer.running(live_dir) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (its own browser download does not work here)."""
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: `apt-get install -y chromium` (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Page:
    """A browser tab that records every console error, page error and failed request."""

    _ids = itertools.count()

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.tab = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.tab.set_default_timeout(20_000)
        self.errors: list[str] = []
        self.tab.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )
        self.tab.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.tab.on(
            "response",
            lambda r: self.errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
        )

    def open(self, path: str, ready: str) -> Any:
        """Go to `path` and wait until `ready` (a selector a callback fills) is visible."""
        self.tab.goto(self.base + path)
        self.tab.wait_for_selector(ready, state="visible")
        return self.tab


@pytest.fixture
def page(browser: Any, dashboard: DashboardServer) -> Iterator[Page]:
    tab = Page(browser, dashboard.url)
    try:
        yield tab
    finally:
        tab.tab.close()

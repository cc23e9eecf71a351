"""The operations stack end to end, with the real binaries: Prometheus scrapes a live API, a
shifted stream with wrong feedback makes a retrain alert fire, Alertmanager posts it to
/webhook/alert with the key, a retrain starts under the alert's name, a shadow rollout runs,
and every Grafana panel's query finds data in that Prometheus."""

from __future__ import annotations

import contextlib
import itertools
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipelines import demo
from pipelines.models import training
from pipelines.models.registry import Registry
from pipelines.ops import grafana, observe
from pipelines.ops.grafana import rate
from pipelines.settings import Settings
from pipelines.store import Store
from tests.conftest import make_settings
from tests.helpers import ApiServer, free_port, wait_until

KEY = "observe-test-key"
SPLIT = demo.demo_split(name="survey")
RETRAIN_ALERTS = {"DriftlabDatasetDrift", "DriftlabLiveAccuracyBelowFloor"}


def quicken(rendered: observe.Rendered) -> None:
    """The shipped `for:` durations and Alertmanager waits are minutes: seconds here."""
    for path in (rendered.prometheus_config.parent / "rules").glob("*.yml"):
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = "4s"
        path.write_text(yaml.safe_dump(rules, sort_keys=False))
    config = yaml.safe_load(rendered.alertmanager_config.read_text())
    config["route"].update(group_wait="1s", group_interval="4s", repeat_interval="1h")
    rendered.alertmanager_config.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture
def stack(trained_copy: Path, tmp_path: Path) -> Iterator[tuple[ApiServer, Settings]]:
    """The API with a key, and Prometheus and Alertmanager watching it (2 s intervals: a
    scrape must end within one, on a machine that also runs the retrain)."""
    # The gate keeps v1 (a margin no challenger can beat): the panels read v1's live accuracy
    # whenever the retrain ends.
    server = ApiServer(
        trained_copy, DRIFTLAB_API_KEY=KEY, DRIFTLAB_RETRAIN_AUTO="false", DRIFTLAB_GATE_MARGIN="1"
    )
    server.start(timeout=120)
    settings = make_settings(
        trained_copy,
        api_port=server.port,
        api_key=KEY,
        prometheus_port=free_port(),
        alertmanager_port=free_port(),
    )
    rendered = observe.render(settings, tmp_path / "ops", scrape_interval="2s")
    quicken(rendered)
    procs = []
    try:
        for name, command in observe.commands(settings, rendered).items():
            log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
            procs.append((subprocess.Popen(command, stdout=log, stderr=log), log))
        for url in observe.urls(settings).values():
            assert wait_until(lambda url=url: ready(url), timeout=60), url
        yield server, settings
    finally:
        for proc, log in procs:
            proc.terminate()
            proc.wait(10)
            log.close()
        server.stop()


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def query(settings: Settings, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{observe.urls(settings)['prometheus']}/api/v1/query", params={"query": expr})
    assert r.status_code == 200, (expr, r.text)
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def shifted_traffic_with_wrong_feedback(api: httpx.Client) -> None:
    """300 shifted predictions, each told it was wrong; two drift checks that find the
    shift; and one edge client's frame for the vision series."""
    frame = SPLIT.shifted.head(300)
    for start in range(0, 300, 100):
        out = api.post("/predict", json={"records": demo.records(frame.iloc[start : start + 100])})
        assert out.status_code == 200, out.text
        answer = out.json()
        for pid, predicted in zip(answer["prediction_ids"], answer["predictions"], strict=True):
            wrong = api.post("/feedback", json={"prediction_id": pid, "label": 1 - predicted})
            assert wrong.status_code == 200, wrong.text
    for _ in range(2):
        check = api.post("/monitoring/run", params={"window_size": 300})
        assert check.json()["dataset_drift"] is True, check.text
    edge = {
        "id": "cam1-000001",
        "ts": time.time(),
        "detections": [{"box": [1, 2, 30, 40], "class": 3, "confidence": 0.55}],
        "fps": 24.5,
        "inference_ms": 8.2,
    }
    assert api.post("/log", json=edge).status_code == 200  # the `vision` extra is installed


def labeled_traffic(api: httpx.Client, n: int) -> None:
    """`n` live predictions, each given its true label."""
    frame = SPLIT.live.head(n)
    out = api.post("/predict", json={"records": demo.records(frame)})
    assert out.status_code == 200, out.text
    truth = frame[SPLIT.label].tolist()
    for pid, label in zip(out.json()["prediction_ids"], truth, strict=True):
        sent = api.post("/feedback", json={"prediction_id": pid, "label": label})
        assert sent.status_code == 200, sent.text


@contextlib.contextmanager
def steady_traffic(url: str) -> Iterator[None]:
    """A client predicting a row every 0.2 s meanwhile: rates need a counter that moves."""
    stop = threading.Event()
    rows = demo.records(SPLIT.live.head(50))
    refused: list[str] = []

    def run() -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": KEY}, timeout=30) as client:
            for i in itertools.count():
                if stop.wait(0.2):
                    return
                answer = client.post("/predict", json={"records": [rows[i % len(rows)]]})
                if answer.status_code != 200:
                    refused.append(answer.text)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert refused == []


@pytest.mark.e2e
def test_an_alert_starts_a_retrain_and_every_panel_finds_data(
    stack: tuple[ApiServer, Settings],
) -> None:
    server, settings = stack
    stump = training.TrainConfig(params={"n_estimators": 1, "max_depth": 1})
    registry = Registry.from_settings(settings)
    challenger = training.train(Store.open(settings), registry, stump, promote=False).version
    with (
        httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60) as api,
        steady_traffic(server.url),
    ):
        shifted_traffic_with_wrong_feedback(api)

        def retrains() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = api.get("/api/retraining/history").json()["items"]
            return items

        assert wait_until(lambda: bool(retrains()), timeout=120), query(settings, "ALERTS")
        run = retrains()[0]
        assert run["who"] == "alert-webhook"
        assert run["trigger"].removeprefix("alert:") in RETRAIN_ALERTS, run
        assert any(reason.startswith("alert Driftlab") for reason in run["reasons"]), run

        def firing() -> set[str]:
            alerts = query(settings, 'ALERTS{alertstate="firing"}')
            return {a["metric"]["alertname"] for a in alerts}

        assert wait_until(lambda: RETRAIN_ALERTS <= firing(), timeout=30), firing()
        assert not {"DriftlabApiDown", "DriftlabStoreUnavailable"} & firing()

        # A shadow beside the champion (started now: a running rollout would have blocked the
        # alert's retrain), its answers labeled: what the rollout panels read.
        shadow = api.post("/api/models/shadow", json={"version": challenger, "why": "panels"})
        assert shadow.status_code == 200, shadow.text
        labeled_traffic(api, 20)
        assert wait_until(
            lambda: (
                query(settings, "driftlab_rollout_labels > 0")
                and query(settings, grafana.concrete(rate("driftlab_shadow_predictions_total")))
            ),
            timeout=30,
        ), query(settings, "driftlab_rollout_labels")

        # Every panel of every dashboard finds series (annotations wait for a promotion).
        empty = [
            (name, expr)
            for name, board in grafana.dashboards().items()
            for expr in grafana.panel_queries(board, annotations=False)
            if not query(settings, grafana.concrete(expr, "30s"))
        ]
        assert empty == []

        # Leave no retrain running into the next test's temp dir.
        assert wait_until(
            lambda: retrains()[0]["status"] not in {"queued", "running"}, timeout=300
        ), retrains()[0]
        assert retrains()[0]["status"] == "rejected", retrains()[0]

"""Shadow and canary rollouts through the API: who answers, what is logged, what decides."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from pipelines import demo
from pipelines.loop import rollouts
from pipelines.models import training
from pipelines.models.registry import CHALLENGER, CHAMPION, Registry
from pipelines.serving.rollout import CanaryGuard
from pipelines.settings import Settings
from pipelines.store import Store
from tests.api.test_prometheus import scrape, value
from tests.conftest import make_settings

LIVE = demo.demo_split(name="survey").live
RECORDS = demo.records(LIVE.head(300))


@pytest.fixture
def settings(trained_copy: Path) -> Settings:
    # A small budget and one look: a decision from a few hundred labels.
    return make_settings(
        trained_copy,
        flush_interval=0.1,
        reload_interval=0.2,
        rollout_label_budget=40,
        rollout_looks=1,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url="http://localhost") as c:
        yield c


@pytest.fixture
def weak_version(settings: Settings) -> str:
    """A registered stump (one tree of depth 1), never promoted: it disagrees with the
    champion on about one live request in seven."""
    return training.train(
        Store.open(settings),
        Registry.from_settings(settings),
        training.TrainConfig(params={"n_estimators": 1, "max_depth": 1}),
        promote=False,
    ).version


def _flushed(client: TestClient) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        health = client.get("/health").json()
        shadow = (health.get("rollout") or {}).get("shadow_log", {})
        if not health["prediction_log"]["pending_rows"] and not shadow.get("pending_rows"):
            return
        time.sleep(0.05)
    raise AssertionError("the prediction logs did not flush")


def _predict_all(client: TestClient, headers: dict[str, str] | None = None) -> list[dict]:
    """The records as 30 requests of 10 rows, then one by one for the rest."""
    out = []
    for start in range(0, 100, 10):
        r = client.post("/predict", json={"records": RECORDS[start : start + 10]}, headers=headers)
        assert r.status_code == 200, r.text
        out.append(r.json())
    for record in RECORDS[100:]:
        r = client.post("/predict", json={"records": [record]}, headers=headers)
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


def _served(answers: list[dict]) -> dict[str, tuple[str, str]]:
    """prediction id -> (served class, version)."""
    return {
        pid: (str(label), a["model_version"])
        for a in answers
        for pid, label in zip(a["prediction_ids"], a["predictions"], strict=True)
    }


def _shadowed(store: Store, rollout_id: str) -> dict[str, dict[str, Any]]:
    rows = store.lake.query(
        "SELECT * FROM lake.shadow_predictions WHERE rollout_id = ?", [rollout_id]
    ).to_pylist()
    return {r["prediction_id"]: r for r in rows}


def test_a_shadow_answers_every_request_and_is_never_served(
    client: TestClient, settings: Settings, weak_version: str
) -> None:
    r = client.post("/api/models/shadow", json={"version": weak_version, "why": "try it"})
    assert r.status_code == 200, r.text
    started = r.json()
    assert started["mode"] == "shadow" and started["share"] == 1.0
    assert started["champion_version"] == "1"
    assert Registry.from_settings(settings).alias_version(CHALLENGER) == weak_version

    served = _served(_predict_all(client))
    _flushed(client)
    assert {version for _, version in served.values()} == {"1"}  # the shadow never serves
    store = Store.open(settings)
    shadowed = _shadowed(store, started["rollout_id"])
    assert set(shadowed) == set(served)  # under the served ids, every one of them
    assert {r["model_version"] for r in shadowed.values()} == {weak_version}
    assert {r["role"] for r in shadowed.values()} == {"shadow"}
    logged = store.lake.rows("SELECT DISTINCT model_version FROM lake.predictions")
    assert logged == [("1",)]  # the prediction log holds the served answers only

    status = client.get("/api/models/rollout").json()
    assert status["state"] == "running" and status["challenger_version"] == weak_version
    agreement = status["agreement"]
    disagree = sum(1 for pid, (label, _) in served.items() if shadowed[pid]["prediction"] != label)
    assert agreement["n"] == len(served) == 300
    assert agreement["agreement"] == pytest.approx(1 - disagree / 300)
    assert 0 < disagree < 300
    assert sum(c["disagree"] for c in agreement["per_class"].values()) == disagree
    assert status["verdict"]["action"] == "continue"  # no labels yet

    metrics = scrape(client)
    assert value(metrics["driftlab_rollout_active"], mode="shadow") == 1
    assert value(metrics["driftlab_rollout_active"], mode="canary") == 0
    assert value(metrics["driftlab_rollout_agreement"]) == pytest.approx(agreement["agreement"])
    assert value(metrics["driftlab_rollout_challenger_version"]) == int(weak_version)
    assert value(metrics["driftlab_rollout_labels"]) == 0
    assert value(metrics["driftlab_shadow_predictions"]) == 300
    assert value(metrics["driftlab_shadow_log_pending_rows"]) == 0


def test_bad_rollout_requests_are_refused_with_a_reason(
    client: TestClient, weak_version: str
) -> None:
    for body, code, words in (
        ({"version": "1"}, 409, "champion already"),
        ({"version": "77"}, 409, "no version 77"),
        ({"version": weak_version, "share": 0}, 422, "greater than 0"),
        ({"version": weak_version, "share": 1.5}, 422, "less than or equal to 1"),
        ({"version": "x"}, 422, "pattern"),
    ):
        r = client.post("/api/models/shadow", json=body)
        assert r.status_code == code and words in r.text, (body, r.text)
    r = client.post("/api/models/canary", json={"version": weak_version, "share": 1.0})
    assert r.status_code == 422 and "less than 1" in r.text
    assert client.post("/api/models/rollout/stop").status_code == 409  # none running
    assert client.post("/api/models/rollout/promote").status_code == 409
    assert client.post("/api/models/shadow", json={"version": weak_version}).status_code == 200
    r = client.post("/api/models/canary", json={"version": weak_version})
    assert r.status_code == 409 and "stop it first" in r.text
    assert client.get("/api/models/rollout").json()["state"] == "running"


def _label_for(
    served: dict[str, tuple[str, str]], shadowed: dict[str, dict[str, Any]], *, favour: str
) -> tuple[list[str], list[str]]:
    """Labels for 40 predictions: every discordant pair (up to 30) decided for `favour`
    ("shadow" or "champion"), then concordant ones."""
    discordant = [p for p, (label, _) in served.items() if shadowed[p]["prediction"] != label]
    concordant = [p for p, (label, _) in served.items() if shadowed[p]["prediction"] == label]
    ids = discordant[:30] + concordant[: 40 - len(discordant[:30])]
    labels = [shadowed[p]["prediction"] if favour == "shadow" else served[p][0] for p in ids]
    return ids, labels


@pytest.mark.parametrize("favour", ["shadow", "champion"])
def test_the_live_test_promotes_a_better_shadow_and_stops_a_worse_one(
    client: TestClient, settings: Settings, weak_version: str, favour: str
) -> None:
    started = client.post("/api/models/shadow", json={"version": weak_version}).json()
    served = _served(_predict_all(client))
    _flushed(client)
    store, registry = Store.open(settings), Registry.from_settings(settings)
    ids, labels = _label_for(served, _shadowed(store, started["rollout_id"]), favour=favour)
    assert len(ids) == 40
    for pid, label in zip(ids, labels, strict=True):
        r = client.post("/feedback", json={"prediction_id": pid, "label": label})
        assert r.status_code == 200, r.text

    verdict = client.get("/api/models/rollout").json()["verdict"]
    assert verdict["comparison"]["counts"]["n"] == 40
    outcome = rollouts.evaluate(settings, store, registry)
    events = [e["event"] for e in store.rollout_events(started["rollout_id"])]
    if favour == "shadow":
        assert outcome["state"] == "promoted", outcome
        assert registry.alias_version(CHAMPION) == weak_version
        assert events == ["rollout_started", "rollout_figures", "rollout_promoted"]
        history = store.model_events(registry.model_name, limit=5)
        assert history[1]["event"] == "promoted" and history[1]["to_version"] == weak_version
    else:
        assert outcome["state"] == "stopped" and "significantly worse" in outcome["why"]
        assert registry.alias_version(CHAMPION) == "1"
        assert events == ["rollout_started", "rollout_figures", "rollout_stopped"]
    figures = store.rollout_events(started["rollout_id"])[1]["details"]
    counts = figures["comparison"]["counts"]
    assert figures["labels"] == counts["n"] == 40 and counts["b"] + counts["c"] > 0
    assert figures["comparison"]["p_value"] < settings.rollout_alpha
    assert registry.alias_version(CHALLENGER) is None
    # The rollout is over: requests are served by the champion alone, and the API says so.
    client.post("/api/models/reload")
    after = client.get("/api/models/rollout").json()
    assert after["state"] == "none"
    assert after["last"]["ended"] == (
        "rollout_promoted" if favour == "shadow" else "rollout_stopped"
    )


def test_a_canary_serves_its_share_and_keeps_each_client_on_one_arm(
    client: TestClient, weak_version: str
) -> None:
    r = client.post("/api/models/canary", json={"version": weak_version, "share": 0.3})
    assert r.status_code == 200, r.text
    arms: dict[str, set[str]] = {}
    for n in range(60):
        key = f"client-{n}"
        for record in RECORDS[n * 3 : n * 3 + 3]:
            out = client.post("/predict", json={"records": [record]}, headers={"X-Client-Id": key})
            assert out.status_code == 200, out.text
            arms.setdefault(key, set()).add(out.json()["model_version"])
    assert all(len(versions) == 1 for versions in arms.values())  # sticky per client
    on_canary = sum(1 for versions in arms.values() if versions == {weak_version})
    assert 8 <= on_canary <= 30, on_canary  # about 30% of 60 clients
    metrics = client.get("/metrics").text
    assert 'driftlab_rollout_requests_total{arm="challenger"}' in metrics


def test_a_failing_canary_is_rolled_back_without_waiting_for_labels(
    client: TestClient, settings: Settings, weak_version: str
) -> None:
    state = client.app.state.driftlab
    state.canary_guard = CanaryGuard(3.0, min_requests=5, min_errors=3, check_every=0)
    client.post("/api/models/canary", json={"version": weak_version, "share": 0.5})
    live = state.serving.rollouts.current
    assert live is not None and live.mode == "canary"

    def broken(x: Any) -> Any:
        raise RuntimeError("the canary's runtime is broken")

    live.model.predict_proba = broken
    codes = []
    safe = TestClient(client.app, base_url="http://localhost", raise_server_exceptions=False)
    for n in range(40):
        r = safe.post("/predict", json={"records": [RECORDS[n]]})
        codes.append(r.status_code)
    assert 500 in codes and codes[-10:] == [200] * 10  # rolled back: the champion serves all
    store = Store.open(settings)
    deadline = time.monotonic() + 10
    while store.active_rollout(settings.model_name) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    ended = store.model_events(settings.model_name, limit=1)[0]
    assert ended["event"] == "rollout_stopped" and ended["who"] == "canary guard"
    assert "5xx share" in ended["why"] and ended["details"]["rolled_back"] is True

"""Retraining runs on a real store and registry: conditions, the run, the gate, one at a time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sklearn.metrics import accuracy_score

from pipelines import demo, retrainer, training
from pipelines.predicting import Band, predict
from pipelines.registry import CHALLENGER, CHAMPION, Registry
from pipelines.serving import load_version
from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.store.spool import PredictionLog
from tests.conftest import make_settings


@pytest.fixture
def loop(trained_copy: Path) -> tuple[Settings, Store, Registry]:
    settings = make_settings(trained_copy, retrain_optuna_trials=0)
    return settings, Store.open(settings), Registry.from_settings(settings)


def serve_and_label(
    settings: Settings, store: Store, registry: Registry, n: int, *, label_every: int = 1
) -> tuple[list[str], list[int]]:
    """Serve `n` shifted rows through the real prediction path, then label every
    `label_every`-th one with its true class as feedback. Returns (predictions, truths)."""
    model = load_version(registry, registry.alias_version(CHAMPION) or "")
    part = demo.demo_split().shifted.head(n)
    log = PredictionLog(store, settings.spool_dir)
    log.start()
    out = predict(model, log, Band(), records=demo.records(part))
    log.close()
    truth = part[demo.LABEL].tolist()
    for i, (pid, label) in enumerate(zip(out["prediction_ids"], truth, strict=True)):
        if i % label_every == 0:
            store.add_feedback(
                pid, label=str(label), correct=None, source="test", model_version=model.version
            )
    return [str(p) for p in out["predictions"]], truth


def test_conditions_gather_the_figures_from_the_store(loop) -> None:
    settings, store, registry = loop
    predicted, truth = serve_and_label(settings, store, registry, 120, label_every=2)
    figures = retrainer.conditions(settings, store, registry)
    labeled = range(0, 120, 2)
    assert figures.new_labels == len(labeled)
    assert figures.n_feedback == len(labeled)
    p = [predicted[i] for i in labeled]
    t = [str(truth[i]) for i in labeled]
    assert figures.live_accuracy == pytest.approx(accuracy_score(t, p))
    wrong: dict[str, int] = {}
    for a, b in zip(t, p, strict=True):
        if a != b:
            wrong[a] = wrong.get(a, 0) + 1
    assert dict(figures.errors_per_class) == wrong
    assert not figures.dataset_drift and figures.last_retrain_at is None and not figures.running
    champion = registry.version(registry.alias_version(CHAMPION) or "")
    assert figures.champion_accuracy == pytest.approx(champion.metrics["accuracy"])


def test_a_run_trains_on_history_plus_labels_and_gates_on_shared_heldout(loop) -> None:
    settings, store, registry = loop
    serve_and_label(settings, store, registry, 600)
    champion = registry.alias_version(CHAMPION)
    result = retrainer.run(settings, store, registry, trigger="test", who="tester")

    metrics = result["metrics"]
    original = registry.version(champion or "").tags["n_train"]
    # History plus the ~480 human labels not held out, never the new labels alone.
    assert metrics["n_train"] > int(original) + 400
    for model in ("champion", "challenger"):
        assert metrics[model]["fixed"]["n"] > 500  # the demo's held-out rows
        assert 90 < metrics[model]["recent"]["n"] < 150  # ~20% of 600 human labels
    assert metrics["champion"]["recent"]["n"] == metrics["challenger"]["recent"]["n"]

    events = store.retraining_runs(event_id=result["event_id"])
    assert events[0]["status"] == result["status"] in {"promoted", "rejected"}
    assert events[0]["decision"]["promote"] is (result["status"] == "promoted")
    history = store.lake.rows(
        "SELECT status FROM lake.retraining_events WHERE event_id = ? ORDER BY ts",
        [result["event_id"]],
    )
    assert [s for (s,) in history] == ["running", result["status"]]
    now = registry.alias_version(CHAMPION)
    if result["status"] == "promoted":
        assert now == result["candidate_version"] and registry.alias_version(CHALLENGER) is None
        assert store.model_events(registry.model_name, limit=1)[0]["why"].startswith("retrain")
    else:
        assert now == champion and registry.alias_version(CHALLENGER) == result["candidate_version"]


def test_the_gate_never_promotes_a_degraded_challenger(loop) -> None:
    settings, store, registry = loop
    serve_and_label(settings, store, registry, 300)
    champion = registry.alias_version(CHAMPION)
    stump = training.TrainConfig(params={"n_estimators": 1, "max_depth": 1})
    result = retrainer.run(settings, store, registry, trigger="test", config=stump)
    assert result["status"] == "rejected"
    assert result["decision"]["promote"] is False
    assert any("macro_f1" in r for r in result["decision"]["reasons"][:2])
    assert registry.alias_version(CHAMPION) == champion
    assert registry.alias_version(CHALLENGER) == result["candidate_version"]


def test_one_run_at_a_time(loop) -> None:
    settings, store, registry = loop
    with retrainer._lock(settings):
        assert retrainer.is_running(settings)
        with pytest.raises(retrainer.RetrainBusy):
            retrainer.trigger(settings, store, trigger="test", who="t")
        with pytest.raises(retrainer.RetrainBusy):
            retrainer.run(settings, store, registry, trigger="test", event_id="e1")
        assert retrainer.status(settings, store)["running"] is True
    assert store.retraining_runs(event_id="e1")[0]["status"] == "skipped"
    assert not retrainer.is_running(settings)


def test_a_run_whose_process_died_is_reported_lost(loop) -> None:
    settings, store, _ = loop
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    store.add_retraining_event({"event_id": "dead", "status": "running", "ts": old})
    status = retrainer.status(settings, store)
    assert status["running"] is False and status["current"] is None
    assert status["latest"]["event_id"] == "dead" and status["latest"]["status"] == "lost"

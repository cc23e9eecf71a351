"""Retraining runs on a real store and registry: conditions, the run, the gate, one at a time."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sklearn.metrics import accuracy_score

from pipelines import demo
from pipelines.loop import retraining_conditions, retraining_control, retraining_runs
from pipelines.loop.promotion_gate import GateResult
from pipelines.models import training
from pipelines.models.registry import CHALLENGER, CHAMPION, Registry
from pipelines.serving.band import Band
from pipelines.serving.model import load_version
from pipelines.serving.predict import predict
from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.store.spool import PredictionLog
from tests.conftest import make_settings


@pytest.fixture
def loop(trained_copy: Path) -> tuple[Settings, Store, Registry]:
    settings = make_settings(trained_copy, retrain_optuna_trials=0, rollout="direct")
    return settings, Store.open(settings), Registry.from_settings(settings)


def serve_and_label(
    settings: Settings, store: Store, registry: Registry, n: int, *, label_every: int = 1
) -> tuple[list[str], list[int]]:
    """Serve `n` shifted rows through the real prediction path, then label every
    `label_every`-th one with its true class as feedback. Returns (predictions, truths)."""
    model = load_version(registry, registry.alias_version(CHAMPION) or "")
    part = demo.demo_split(name="survey").shifted.head(n)
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
    figures = retraining_conditions.conditions(settings, store, registry)
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


@pytest.mark.slow
def test_a_run_trains_on_history_plus_labels_and_gates_on_shared_heldout(loop) -> None:
    settings, store, registry = loop
    serve_and_label(settings, store, registry, 600)
    champion = registry.alias_version(CHAMPION)
    result = retraining_runs.run(settings, store, registry, trigger="test", who="tester")

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


@pytest.mark.slow
def test_a_challenger_that_passes_the_gate_goes_to_a_shadow_rollout_by_default(
    trained_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(trained_copy, retrain_optuna_trials=0)
    assert settings.rollout == "shadow"
    store, registry = Store.open(settings), Registry.from_settings(settings)
    serve_and_label(settings, store, registry, 300)
    # Whatever the held-out figures say (the gate has its own tests): it passes.
    monkeypatch.setattr(
        retraining_runs, "gate_sets", lambda *a: GateResult(True, ["passed (test)"])
    )
    result = retraining_runs.run(settings, store, registry, trigger="test", who="tester")
    assert result["status"] == "in_rollout", result["decision"]
    rollout = result["decision"]["rollout"]
    assert rollout["mode"] == "shadow" and rollout["share"] == settings.rollout_shadow_share
    assert registry.alias_version(CHAMPION) == "1"  # not promoted: the live test decides
    assert registry.alias_version(CHALLENGER) == result["candidate_version"]
    running = store.active_rollout(registry.model_name)
    assert running is not None and running["rollout_id"] == rollout["rollout_id"]
    assert running["details"]["retrain_event"] == result["event_id"]  # run <-> rollout
    assert store.retraining_runs(event_id=result["event_id"])[0]["status"] == "in_rollout"
    verdict = retraining_conditions.check(settings, store, registry)
    assert any("a rollout is running (shadow of v2 beside v1)" in b for b in verdict["blocked_by"])


@pytest.mark.slow
def test_the_gate_never_promotes_a_degraded_challenger(loop) -> None:
    settings, store, registry = loop
    serve_and_label(settings, store, registry, 300)
    champion = registry.alias_version(CHAMPION)
    stump = training.TrainConfig(params={"n_estimators": 1, "max_depth": 1})
    result = retraining_runs.run(settings, store, registry, trigger="test", config=stump)
    assert result["status"] == "rejected"
    assert result["decision"]["promote"] is False
    assert any("macro_f1" in r for r in result["decision"]["reasons"][:2])
    assert registry.alias_version(CHAMPION) == champion
    assert registry.alias_version(CHALLENGER) == result["candidate_version"]


def test_one_run_at_a_time(loop) -> None:
    settings, store, registry = loop
    with retraining_control.lock(settings):
        assert retraining_control.is_running(settings)
        with pytest.raises(retraining_control.RetrainBusy):
            retraining_control.trigger(settings, store, trigger="test", who="t")
        with pytest.raises(retraining_control.RetrainBusy):
            retraining_runs.run(settings, store, registry, trigger="test", event_id="e1")
        # The lock is busy for every model, but no run of either model is in progress.
        for vision in (False, True):
            st = retraining_control.status(settings, store, vision=vision)
            assert st["busy"] is True and st["running"] is False
        assert retraining_conditions.conditions(
            settings, store, registry
        ).running  # nothing can start
    assert store.retraining_runs(event_id="e1")[0]["status"] == "skipped"
    assert not retraining_control.is_running(settings)


def test_cooldown_and_status_are_per_model(loop) -> None:
    """A vision run neither starts the tabular cooldown nor shows as the tabular run."""
    settings, store, registry = loop
    now = dt.datetime.now(dt.UTC)
    vision_name = settings.vision_model_name
    with retraining_control.lock(settings):
        store.add_retraining_event(
            {"event_id": "v1", "status": "running", "model_name": vision_name, "ts": now}
        )
        tabular = retraining_control.status(settings, store)
        vision = retraining_control.status(settings, store, vision=True)
        assert tabular["running"] is False and tabular["latest"] is None
        assert vision["running"] is True and vision["current"]["event_id"] == "v1"
    assert retraining_conditions.conditions(settings, store, registry).last_retrain_at is None
    vision_last = retraining_control.last_retrain_at(settings, store, vision=True)
    assert vision_last == pytest.approx(now.timestamp(), abs=1)
    # A run recorded without a model name (older rows, `driftlab retrain` runs) is tabular.
    store.add_retraining_event({"event_id": "t0", "status": "rejected", "ts": now})
    assert retraining_control.status(settings, store)["latest"]["event_id"] == "t0"
    assert retraining_control.status(settings, store, vision=True)["latest"]["event_id"] == "v1"


def test_vision_conditions_without_a_vision_model(loop) -> None:
    settings, store, registry = loop
    verdict = retraining_conditions.check(settings, store, registry, vision=True)
    assert verdict["model"] == "vision" and verdict["model_name"] == settings.vision_model_name
    assert verdict["champion_version"] is None and verdict["should_retrain"] is False
    assert verdict["figures"]["new_labels"] == 0 and verdict["figures"]["errors_per_class"] == {}


@pytest.mark.parametrize(
    ("rows", "want"),
    [
        # classification: the true class, or the predicted one for a bare "wrong"
        ([{"task": "classify", "prediction": "3", "label": "8"}], {"8": 1}),
        ([{"task": "classify", "prediction": "3", "label": None}], {"3": 1}),
        # detection: a box given another class, a missed object, a false box
        (
            [
                {
                    "task": "detect",
                    "prediction": '[{"class": 1, "name": "1", "box": [0, 0, 5, 5]},'
                    ' {"class": 2, "name": "2", "box": [9, 9, 20, 20]}]',
                    "label": '[{"class": 7, "box": [0, 0, 5, 5]},'
                    ' {"class": 4, "box": [30, 30, 40, 40]}]',
                }
            ],
            {"1": 1, "2": 1, "4": 1, "7": 1},
        ),
        # the same classes, boxes moved: no class error
        (
            [
                {
                    "task": "detect",
                    "prediction": '[{"class": 1, "name": "one", "box": [0, 0, 5, 5]}]',
                    "label": '[{"class": 1, "box": [1, 1, 6, 6]}]',
                }
            ],
            {},
        ),
        (
            [{"task": "detect", "prediction": '[{"class": 1, "name": "one"}]', "label": None}],
            {"one": 1},
        ),
    ],
)
def test_image_errors_per_class(rows, want) -> None:
    assert retraining_conditions.image_errors_per_class(rows) == want


def test_a_run_whose_process_died_is_reported_lost(loop) -> None:
    settings, store, _ = loop
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    store.add_retraining_event({"event_id": "dead", "status": "running", "ts": old})
    status = retraining_control.status(settings, store)
    assert status["running"] is False and status["current"] is None
    assert status["latest"]["event_id"] == "dead" and status["latest"]["status"] == "lost"

"""The Models page's rollout panel: its views of `rollouts.status` (no browser), and starting,
watching, stopping and promoting a rollout in a real browser, each move confirmed.

The browser tests share their own dashboard over their own data dir (the session's trained
survey store and a second, weaker version registered beside the champion), so the moves here
never reach the other dashboard modules; they run in file order.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard import rollout_panel
from pipelines import demo
from pipelines.models import training
from pipelines.models.registry import CHALLENGER, CHAMPION, Registry
from pipelines.settings import Settings
from pipelines.store import Store
from tests.conftest import make_settings
from tests.dashboard.conftest import DashboardServer, Page

READY = "#models-rollout-state"  # the panel's first figure, filled once the page has its data


def _text(component: Any) -> str:
    """The text a Dash component tree shows."""
    if component is None:
        return ""
    if isinstance(component, str | int | float):
        return str(component)
    if isinstance(component, list | tuple):
        return " ".join(_text(child) for child in component)
    return _text(getattr(component, "children", None))


RUNNING = {
    "state": "running", "rollout_id": "abcdef0123", "mode": "shadow", "share": 0.5,
    "champion_version": "1", "challenger_version": "2", "started_at": None,
    "started_by": "dashboard", "why": "try it", "retrain_event": "feedbeef99",
    "running_for_s": 60.0,
    "agreement": {"n": 10, "agreement": 0.8, "per_class": {
        "0": {"n": 6, "disagree": 2, "disagreement": 2 / 6, "shadow_said": {"1": 2}},
        "1": {"n": 4, "disagree": 0, "disagreement": 0.0, "shadow_said": {}},
    }},
    "verdict": {
        "action": "continue", "reason": "waiting for 100 labels (7 so far; ...)", "look": 0,
        "looks": 4, "next_look_at": 100, "alpha_per_look": 0.0125,
        "comparison": {
            "test": "mcnemar_exact", "counts": {"n": 7, "b": 1, "c": 0, "both": 5},
            "champion_accuracy": 6 / 7, "challenger_accuracy": 5 / 7, "difference": -1 / 7,
            "statistic": 0.0, "p_value": 1.0, "noninferiority_z": -1.2,
            "p_noninferior": 0.885, "margin": 0.01,
        },
    },
}  # fmt: skip


def test_the_running_view_shows_the_live_test_and_the_shadow_s_disagreement() -> None:
    text = _text(rollout_panel.status_view(RUNNING))
    for shown in (
        "shadow running", "50% of requests", "v1 vs v2", "by dashboard", "try it", "feedbeef",
        "7", "next at 100", "0.857 vs 0.714", "mcnemar_exact", "0.885", "80.0%",
        "waiting for 100 labels", "33.3%", "1: 2",
    ):  # fmt: skip
        assert shown in text, shown
    canary = {
        **RUNNING,
        "mode": "canary",
        "agreement": None,
        "verdict": {
            **RUNNING["verdict"],  # type: ignore[dict-item]
            "comparison": {
                **RUNNING["verdict"]["comparison"],  # type: ignore[index]
                "test": "fisher_exact",
                "counts": dict(
                    n_champion=90, right_champion=80, n_challenger=9, right_challenger=8
                ),
            },
        },
    }
    text = _text(rollout_panel.status_view(canary))
    assert "canary running" in text and "fisher_exact" in text and "challenger 8/9" in text
    assert "Agreement" not in text and "disagrees" not in text


def test_the_last_rollout_says_how_it_ended() -> None:
    last = {
        **{k: RUNNING[k] for k in ("mode", "share", "champion_version", "challenger_version")},
        "started_at": None, "started_by": "worker", "why": "retrain", "retrain_event": None,
        "ended": "rollout_promoted", "ended_at": None, "ended_by": "worker",
        "ended_why": "the challenger is significantly better",
    }  # fmt: skip
    text = _text(rollout_panel.status_view({"state": "none", "last": last}))
    assert "shadow promoted" in text and "v2 beside v1" in text
    assert "by worker" in text and "significantly better" in text
    assert "no rollout yet" in _text(rollout_panel.status_view({"state": "none", "last": None}))


# -- in a browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weak_version(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A private copy of the trained store with a stump registered beside the champion."""
    import shutil

    data = tmp_path_factory.mktemp("rollout-dashboard") / "data"
    shutil.copytree(trained_dir, data)
    settings = make_settings(data)
    store = Store.open(settings)
    try:
        version = training.train(
            store,
            Registry.from_settings(settings),
            training.TrainConfig(params={"n_estimators": 1, "max_depth": 1}),
            promote=False,
        ).version
    finally:
        store.close()
    return data, version


@pytest.fixture(scope="module")
def dashboard(weak_version: tuple[Path, str]) -> Iterator[DashboardServer]:
    """This module's dashboard (in place of conftest's survey one, so `page` opens it too)."""
    with DashboardServer.running(weak_version[0]) as server:
        yield server


def _shadow_traffic(settings: Settings, n: int) -> None:
    """`n` requests served as the API serves them (the running shadow answers too, logged),
    each labeled with the class the champion served."""
    from pipelines.loop.feedback import give
    from pipelines.serving import predict as predicting
    from pipelines.serving.services import Serving

    store = Store.open(settings)
    serving = Serving.start(settings, store)
    try:
        assert serving.rollouts.current is not None
        for record in demo.records(demo.demo_split(name="survey").live.head(n)):
            champion = serving.models.model
            assert champion is not None
            model, shadow, _ = serving.route(champion)
            assert shadow is not None
            out = predicting.predict(
                model, serving.log, serving.band, records=[record], shadow=shadow
            )
            pid, label = out["prediction_ids"][0], out["predictions"][0]
            give(store, serving.log, model.schema, pid, label=label, source="test", who="test")
    finally:
        serving.stop()  # flushes both logs into the lake
        store.close()


def _events(settings: Settings, n: int) -> list[dict[str, Any]]:
    store = Store.open(settings, read_only=True)
    try:
        return store.model_events(Registry.from_settings(settings).model_name, limit=n)
    finally:
        store.close()


@pytest.mark.e2e
def test_start_watch_and_stop_a_shadow_with_confirmation(
    page: Page, dashboard: DashboardServer, weak_version: tuple[Path, str]
) -> None:
    settings = make_settings(dashboard.data_dir)
    registry = Registry.from_settings(settings)
    champion, version = registry.alias_version(CHAMPION), weak_version[1]
    tab = page.open("/models", READY)
    assert "no rollout yet" in tab.inner_text("#models-rollout-status")
    assert tab.is_disabled("#models-rollout-stop") and tab.is_disabled("#models-rollout-promote")
    tab.on("dialog", lambda dialog: dialog.accept())  # the confirmations
    tab.click("#models-rollout-version")
    tab.click(f".dash-dropdown-option:has-text('v{version}')")
    tab.wait_for_function("document.querySelector('#models-rollout-share').value === '1'")
    tab.fill("#models-rollout-why", "browser rollout")
    tab.click("#models-rollout-start")
    tab.wait_for_selector(
        f"#models-rollout-message:has-text('shadow of v{version} started beside v{champion}')"
    )
    store = Store.open(settings, read_only=True)
    running = store.active_rollout(registry.model_name)
    store.close()
    assert running is not None
    assert (running["who"], running["why"]) == ("dashboard", "browser rollout")
    assert (running["from_version"], running["to_version"]) == (champion, version)
    assert running["details"]["mode"] == "shadow" and running["details"]["share"] == 1.0
    assert registry.alias_version(CHALLENGER) == version
    tab.wait_for_selector(f"{READY}:has-text('shadow running')")
    panel = tab.inner_text("#models-rollout-status")
    assert f"v{champion} vs v{version}" in panel and "no shadowed predictions yet" in panel

    # Live traffic and labels: the reloaded panel shows the agreement and the live test.
    _shadow_traffic(settings, 60)
    tab = page.open("/models", "#models-rollout-agreement")
    panel = tab.inner_text("#models-rollout-status")
    assert "mcnemar_exact" in panel and "1.000 vs" in panel  # labels are what the champion said
    assert "with the champion on 60 shadowed predictions" in panel

    tab.click("#models-rollout-stop")
    tab.wait_for_selector(f"#models-rollout-message:has-text('rollout of v{version} stopped')")
    tab.wait_for_selector(f"{READY}:has-text('shadow stopped')")
    assert "browser rollout" in tab.inner_text("#models-rollout-status")
    ended = _events(settings, 1)[0]
    assert (ended["event"], ended["who"], ended["rollout_id"]) == (
        "rollout_stopped",
        "dashboard",
        running["rollout_id"],
    )
    assert registry.alias_version(CHAMPION) == champion
    assert registry.alias_version(CHALLENGER) is None
    assert page.errors == []


@pytest.mark.e2e
def test_a_refused_canary_says_why_and_promote_now_moves_the_champion(
    page: Page, dashboard: DashboardServer, weak_version: tuple[Path, str]
) -> None:
    settings = make_settings(dashboard.data_dir)
    registry = Registry.from_settings(settings)
    champion, version = registry.alias_version(CHAMPION), weak_version[1]
    tab = page.open("/models", READY)
    tab.on("dialog", lambda dialog: dialog.accept())
    tab.click("#models-rollout-version")
    tab.click(f".dash-dropdown-option:has-text('v{version}')")
    tab.get_by_label("canary").check()
    tab.wait_for_function("document.querySelector('#models-rollout-share').value === '0.1'")
    tab.fill("#models-rollout-share", "1")  # a canary serving every request: refused
    tab.click("#models-rollout-start")
    tab.wait_for_selector("#models-rollout-message.error:has-text('out of range')")
    store = Store.open(settings, read_only=True)
    assert store.active_rollout(registry.model_name) is None
    store.close()

    tab.fill("#models-rollout-share", "0.2")
    tab.click("#models-rollout-start")
    tab.wait_for_selector(f"#models-rollout-message:has-text('canary of v{version} started')")
    tab.wait_for_selector(f"{READY}:has-text('canary running')")
    tab.click("#models-rollout-promote")
    tab.wait_for_selector(f"#models-rollout-message:has-text('champion v{champion} → v{version}')")
    assert registry.alias_version(CHAMPION) == version
    tab.wait_for_selector(f"{READY}:has-text('canary promoted')")
    # The page's own tables follow: the new champion's row, the promotion in the history.
    tab.wait_for_selector("#models-events:has-text('rollout_promoted')")
    events = [(e["event"], e["who"]) for e in _events(settings, 3)]
    assert events == [
        ("rollout_promoted", "dashboard"),
        ("promoted", "dashboard"),
        ("rollout_started", "dashboard"),
    ]
    assert page.errors == []

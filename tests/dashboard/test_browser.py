"""The running dashboard in a real browser (Debian's Chromium through Playwright), over the
survey demo's store (a form of 8 features; the digits demo's pages: test_digits_browser.py).

One dashboard process and one browser serve the whole module; each test opens its own tab and
fails on any console error, page error or failed request. The retrain test runs last: its run
may promote a new champion.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.loop import estimated_performance, labeling_queue, retraining_control
from pipelines.store import Store
from tests.conftest import make_settings
from tests.dashboard.conftest import PAGES, DashboardServer, Page, stored_label

pytestmark = pytest.mark.e2e


def test_every_page_renders_without_errors(page: Page, tmp_path: Path) -> None:
    for name, path, ready in PAGES:
        tab = page.open(path, ready)
        tab.wait_for_load_state("networkidle")
        tab.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    assert page.errors == []
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(f"{n}.png" for n, *_ in PAGES)


def test_overview_shows_the_estimated_accuracy_beside_the_realized(
    page: Page, dashboard: DashboardServer
) -> None:
    store = Store.open(make_settings(dashboard.data_dir), read_only=True)
    latest = estimated_performance.latest(store)
    assert latest is not None  # the fixture's drift check estimated it
    accuracy = latest["metrics"]["accuracy"]
    tab = page.open("/", "#overview-performance .scatterlayer .trace")
    card = tab.locator("#overview-cards .card", has_text="Estimated accuracy").inner_text()
    assert f"{accuracy['estimated']:.1%}" in card
    assert f"band {accuracy['low']:.1%}–{accuracy['high']:.1%}" in card
    legend = tab.locator("#overview-performance .legend").text_content() or ""
    assert "estimated" in legend and "band" in legend
    links = tab.locator("#overview-monitoring a")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert hrefs == [
        "http://127.0.0.1:9090/alerts",
        "http://127.0.0.1:9093",
        f"http://127.0.0.1:{dashboard.env['DRIFTLAB_API_PORT']}/metrics",
    ]
    assert page.errors == []


def test_drift_page_shows_the_vision_model_s_image_check(
    page: Page, dashboard: DashboardServer
) -> None:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    check = {
        "run_id": "image-check-1", "ts": now, "model_version": "3", "window_start": now,
        "window_end": now, "n_reference": 200, "n_current": 120, "test": "ks",
        "dataset_drift": True, "drift_share": 0.5, "method": "share", "modality": "image",
    }  # fmt: skip
    rows = [
        {**check, "feature": feature, "role": role, "drifted": drifted, "effect_size": effect}
        for feature, role, drifted, effect in (
            ("brightness", "feature", True, 0.4),
            ("sharpness", "feature", False, 0.0),
            ("top_class", "prediction", True, 0.3),
        )
    ]
    store = Store.open(make_settings(dashboard.data_dir))
    try:
        store.add_drift_results(rows)
    finally:
        store.close()
    tab = page.open("/drift", "#drift-summary .card")
    tabular = tab.locator("#drift-summary").inner_text()
    tab.get_by_label("vision model (images)").check()
    tab.wait_for_function(
        "document.querySelector('#drift-summary').innerText.includes('top_class')"
    )
    cards = tab.locator("#drift-summary").inner_text().lower()
    assert "dataset drift\nyes\nbrightness" in cards and "120\nimages" in cards
    assert "output drift\n1\ntop_class" in cards  # an output, not an input
    assert "evidently" not in cards and "evidently" in tabular.lower()  # a tabular report
    table = tab.locator("#drift-latest-table").inner_text()
    assert "brightness" in table and "prediction" in table
    assert not tab.locator("#drift-distribution-panel").is_visible()
    tab.get_by_label("tabular model").check()
    tab.wait_for_selector("#drift-distribution-panel", state="visible")
    assert page.errors == []


def test_drift_page_links_the_latest_evidently_report(page: Page) -> None:
    tab = page.open("/drift", "#drift-report-link")
    href = tab.get_attribute("#drift-report-link", "href")
    assert href == "/reports/evidently-test.html"
    report = tab.request.get(page.base + href)
    assert report.ok and "evidently report" in report.text()
    # Only the notebook's report files are served, nothing else under the data dir.
    for other in ("/reports/notes.txt", "/reports/evidently-x.html", "/reports/.hidden.html"):
        assert tab.request.get(page.base + other).status == 404
    escape = tab.request.get(page.base + "/reports/..%2Flake%2Fcatalog.sqlite")
    assert b"SQLite format" not in escape.body()  # Dash's page shell, not the file
    assert page.errors == []


def test_labeling_a_class_takes_the_item_out_and_stores_the_label(
    page: Page, dashboard: DashboardServer
) -> None:
    store = Store.open(make_settings(dashboard.data_dir), read_only=True)
    first = labeling_queue.items(store, status="pending", limit=1)["items"][0]["prediction_id"]
    tab = page.open("/labeling", "#labeling-prediction")
    assert first in tab.inner_text("#labeling-item")
    tab.click("#labeling-actions button.labeling-class >> nth=0")  # class "0"
    tab.wait_for_selector(f"#labeling-message:has-text('labeled {first}')")
    tab.wait_for_function(
        f"!document.querySelector('#labeling-item').innerText.includes('{first}')"
    )
    labeled = {
        i["prediction_id"]: i for i in labeling_queue.items(store, status="labeled")["items"]
    }
    assert labeled[first]["label"] == "0"
    assert labeled[first]["who"] == "dashboard"
    pending = [
        i["prediction_id"]
        for i in labeling_queue.items(store, status="pending", limit=500)["items"]
    ]
    assert first not in pending

    # The keyboard: a digit class is its own key, so "1" labels the next item as class "1".
    second = labeling_queue.items(store, status="pending", limit=1)["items"][0]["prediction_id"]
    assert second in tab.inner_text("#labeling-item")
    tab.keyboard.press("1")
    tab.wait_for_selector(f"#labeling-message:has-text('labeled {second}')")
    labeled = {
        i["prediction_id"]: i for i in labeling_queue.items(store, status="labeled")["items"]
    }
    assert labeled[second]["label"] == "1"
    store.close()
    assert page.errors == []


def test_predict_then_wrong_and_a_class_is_feedback(page: Page, dashboard: DashboardServer) -> None:
    tab = page.open("/predict", "#predict-submit")
    tab.click("#predict-submit")
    predicted = tab.wait_for_selector("#predict-label").inner_text()
    pid = re.search(r"id ([0-9a-f]+)", tab.inner_text("#predict-answer")).group(1)  # type: ignore[union-attr]
    other = "1" if predicted == "0" else "0"
    tab.click("#predict-wrong")
    tab.click(f"#predict-classes button:text-is('{other}')")
    tab.wait_for_selector("#predict-feedback:has-text('recorded (wrong)')")

    assert stored_label(dashboard.data_dir, pid) == (other, "feedback:dashboard")
    assert page.errors == []


def test_trigger_starts_a_retraining_run(page: Page, dashboard: DashboardServer) -> None:
    settings = make_settings(dashboard.data_dir)
    store = Store.open(settings, read_only=True)
    before = {r["event_id"] for r in retraining_control.history(store)}
    tab = page.open("/retraining", "#retraining-conditions-table")
    tab.click("#retraining-trigger")
    tab.wait_for_selector("#retraining-message:has-text('started')")
    runs = [r for r in retraining_control.history(store) if r["event_id"] not in before]
    assert len(runs) == 1 and runs[0]["trigger"] == "dashboard"
    tab.wait_for_selector(f"#retraining-state:has-text('{runs[0]['event_id'][:8]}')")
    # Let the background run finish before the data dir goes: it must end, not hang or die.
    final = retraining_control.wait(store, runs[0]["event_id"], timeout_s=240)
    assert final["status"] in {"promoted", "in_rollout", "rejected"}, final
    store.close()
    assert page.errors == []


def test_promote_and_roll_back_with_confirmation(page: Page, dashboard: DashboardServer) -> None:
    """After the retrain above there are two versions: promote the other one, then roll back."""
    from pipelines.models.registry import CHAMPION, Registry

    settings = make_settings(dashboard.data_dir)
    registry = Registry.from_settings(settings)
    champion = registry.alias_version(CHAMPION)
    other = next(v.version for v in registry.versions() if v.version != champion)
    tab = page.open("/models", "#models-versions-table")
    tab.on("dialog", lambda dialog: dialog.accept())  # the confirmation
    tab.click("#models-promote-version")
    tab.click(f".dash-dropdown-option:has-text('v{other}')")
    tab.fill("#models-why", "browser test")
    tab.click("#models-promote")
    tab.wait_for_selector(f"#models-message:has-text('champion v{champion} → v{other}')")
    assert registry.alias_version(CHAMPION) == other
    tab.click("#models-rollback")
    tab.wait_for_selector(f"#models-message:has-text('champion v{other} → v{champion}')")
    assert registry.alias_version(CHAMPION) == champion
    store = Store.open(settings, read_only=True)
    events = store.model_events(registry.model_name, limit=2)
    store.close()
    assert [(e["event"], e["who"]) for e in events] == [
        ("rolled_back", "dashboard"),
        ("promoted", "dashboard"),
    ]
    assert events[1]["why"] == "browser test"
    assert page.errors == []

"""The dashboard against other sites' pages, and its API key.

Plain HTTP first: the requests a hostile page makes (a callback posted from its own origin,
a DNS-rebound host name, a made-up dropdown value), built the way Dash's renderer builds
them. Then a real browser on a dashboard with DRIFTLAB_API_KEY set: writes are refused until
the key is entered in the navbar, and only the right key unlocks.

Two dashboards over two copies of one data dir (the survey champion and a second registered
version, so there is something to promote): `dashboard` has no key, `keyed` has one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.loop import retraining_control
from pipelines.models import training
from pipelines.models.registry import CHAMPION, Registry
from pipelines.store import Store
from tests.conftest import make_settings
from tests.dashboard.conftest import DashboardServer, Page

pytestmark = pytest.mark.e2e

KEY = "correct horse battery staple"
CALLBACK = "/_dash-update-component"
LOCKED = "enter the API key (top right)"
EVIL = "http://evil.example"
HTTP_TIMEOUT = 60.0  # other test runs may share the CPU


@pytest.fixture(scope="module")
def versions_dir(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained survey store with a second version registered, not promoted."""
    data = tmp_path_factory.mktemp("security") / "data"
    shutil.copytree(trained_dir, data)
    settings = make_settings(data)
    store = Store.open(settings)
    config = training.TrainConfig(params={"n_estimators": 10})
    training.train(store, Registry.from_settings(settings), config, promote=False)
    store.close()
    return data


@pytest.fixture(scope="module")
def keyed_dir(versions_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("security-keyed") / "data"
    shutil.copytree(versions_dir, data)
    return data


@pytest.fixture(scope="module")
def dashboard(versions_dir: Path, keyed_dir: Path) -> Iterator[DashboardServer]:
    """No key (in place of conftest's, so `page` opens it); `keyed_dir` is copied first."""
    with DashboardServer.running(versions_dir) as server:
        yield server


@pytest.fixture(scope="module")
def keyed(keyed_dir: Path) -> Iterator[DashboardServer]:
    with DashboardServer.running(keyed_dir, DRIFTLAB_API_KEY=KEY) as server:
        yield server


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, timeout=HTTP_TIMEOUT, **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, timeout=HTTP_TIMEOUT, **kwargs)


def champion_and_other(server: DashboardServer) -> tuple[str, str]:
    registry = Registry.from_settings(make_settings(server.data_dir))
    champion = registry.alias_version(CHAMPION)
    assert champion is not None
    return champion, next(v.version for v in registry.versions() if v.version != champion)


def champion_of(server: DashboardServer) -> str | None:
    return Registry.from_settings(make_settings(server.data_dir)).alias_version(CHAMPION)


def callback_body(
    server: DashboardServer, output: str, changed: str, values: dict[str, Any]
) -> dict[str, Any]:
    """A callback request as Dash's renderer sends it, for the callback that writes `output`
    when `changed` fires (both "id.property", as /_dash-dependencies lists them); `values`
    by "id.property"."""

    def writes(dep: dict[str, Any]) -> bool:
        outputs = [o.split("@")[0] for o in dep["output"].strip(".").split("...")]
        fired = [f"{i['id']}.{i['property']}" for i in dep["inputs"]]
        return output in outputs and changed in fired

    deps = get(server.url + "/_dash-dependencies").json()
    (dep,) = [d for d in deps if writes(d)]

    def prop(spec: dict[str, Any]) -> Any:
        if '["ALL"]' in spec["id"]:
            return []  # a pattern that matches no component on the page
        key = f"{spec['id']}.{spec['property']}"
        given = {"value": values[key]} if key in values else {}
        return {"id": spec["id"], "property": spec["property"], **given}

    outputs = [
        {"id": o.rsplit(".", 1)[0], "property": o.rsplit(".", 1)[1]}
        for o in dep["output"].strip(".").split("...")
    ]
    return {
        "output": dep["output"],
        "outputs": outputs if dep["output"].startswith("..") else outputs[0],
        "inputs": [prop(i) for i in dep["inputs"]],
        "state": [prop(s) for s in dep["state"]],
        "changedPropIds": [changed],
    }


def promote_body(server: DashboardServer, version: str) -> dict[str, Any]:
    """The request the Models page sends when its Promote is confirmed."""
    return callback_body(
        server,
        "models-moved.data",
        "models-confirm-promote.submit_n_clicks",
        {
            "models-confirm-promote.submit_n_clicks": 1,
            "models-promote-version.value": version,
            "models-why.value": "posted by a test",
            "models-moved.data": 0,
        },
    )


def test_a_foreign_host_is_refused_reads_included(dashboard: DashboardServer) -> None:
    for path in ("/", "/models", "/_dash-layout", "/assets/style.css", "/reports/x.html"):
        got = get(dashboard.url + path, headers={"Host": "evil.example"})
        assert got.status_code == 400, path
        assert "DRIFTLAB_ALLOWED_HOSTS" in got.json()["detail"]
    refused = post(
        dashboard.url + CALLBACK, json={}, headers={"Host": f"evil.example:{dashboard.port}"}
    )
    assert refused.status_code == 400
    for own in (f"127.0.0.1:{dashboard.port}", f"localhost:{dashboard.port}"):
        assert get(dashboard.url + "/models", headers={"Host": own}).status_code == 200


def test_a_callback_from_another_sites_page_is_refused_and_writes_nothing(
    dashboard: DashboardServer,
) -> None:
    champion, other = champion_and_other(dashboard)
    body = promote_body(dashboard, other)
    for origin in (EVIL, "null", f"http://localhost:{dashboard.port + 1}"):
        refused = post(dashboard.url + CALLBACK, json=body, headers={"Origin": origin})
        assert refused.status_code == 403, origin
        assert "DRIFTLAB_ALLOWED_ORIGINS" in refused.json()["detail"]
    assert champion_of(dashboard) == champion

    # The same request from the dashboard's own page passes: without a key, it promotes.
    done = post(dashboard.url + CALLBACK, json=body, headers={"Origin": dashboard.url})
    assert done.status_code == 200
    assert (
        f"champion v{champion} → v{other}" in done.json()["response"]["models-message"]["children"]
    )
    assert champion_of(dashboard) == other


def test_a_made_up_feature_name_is_refused_by_the_drift_page(dashboard: DashboardServer) -> None:
    for feature in ('age" FROM lake.predictions; --', {"not": "a name"}, "AGE"):
        body = callback_body(
            dashboard,
            "drift-distribution.figure",
            "drift-feature.value",
            {"drift-feature.value": feature},
        )
        got = post(dashboard.url + CALLBACK, json=body, headers={"Origin": dashboard.url})
        assert got.status_code == 200, got.text
        assert "is not a feature of the dataset" in got.text


# Every write callback, as a click fires it: (an output it writes, the input that fired,
# the values it reads). Each must answer LOCKED before it looks at anything else.
WRITES = {
    "move": ("models-moved.data", "models-confirm-rollback.submit_n_clicks", {}),
    "trigger": ("retraining-started.data", "retraining-trigger.n_clicks", {}),
    "answer": ("labeling-done.data", "labeling-skip.n_clicks", {}),
    "answer_image": ("labeling-done.data", "labeling-confirm-boxes.n_clicks", {}),
    "predict": ("predict-result.data", "predict-submit.n_clicks", {}),
    "feedback": ("predict-feedback.className", "predict-correct.n_clicks", {}),
    "predict_image": (
        "predict-image-result.data",
        "predict-image-upload.contents",
        {"predict-image-upload.contents": "data:image/png;base64,iVBORw0KGgo="},
    ),
    "image_feedback": ("predict-image-feedback.className", "predict-image-correct.n_clicks", {}),
}


@pytest.mark.parametrize("name", list(WRITES))
def test_without_a_session_a_keyed_dashboard_writes_nothing(
    keyed: DashboardServer, name: str
) -> None:
    output, fired, values = WRITES[name]
    current = {"prediction_id": "p-1", "task": "detect", "names": ["a"], "predicted": []}
    result = {"prediction_id": "p-1", "prediction": "0", "model_version": "1", "task": "detect"}
    values = {
        fired: 1,
        "labeling-current.data": current,
        "predict-result.data": result,
        "predict-image-result.data": result,
        **values,
    }
    champion = champion_of(keyed)
    body = callback_body(keyed, output, fired, values)
    locked = post(keyed.url + CALLBACK, json=body, headers={"Origin": keyed.url})
    assert locked.status_code == 200, locked.text
    assert LOCKED in locked.text
    assert champion_of(keyed) == champion


def test_a_promotion_posted_without_a_session_is_locked(keyed: DashboardServer) -> None:
    champion, other = champion_and_other(keyed)
    locked = post(
        keyed.url + CALLBACK, json=promote_body(keyed, other), headers={"Origin": keyed.url}
    )
    assert locked.status_code == 200
    assert LOCKED in locked.json()["response"]["models-message"]["children"]
    assert champion_of(keyed) == champion


def test_the_key_unlocks_a_session_cookie_only_the_dashboard_reads(
    keyed: DashboardServer,
) -> None:
    def unlock(key: Any) -> httpx.Response:
        body = callback_body(
            keyed,
            "shell-lock.style",
            "shell-unlock.n_clicks",
            {"shell-unlock.n_clicks": 1, "shell-key.value": key},
        )
        return post(keyed.url + CALLBACK, json=body, headers={"Origin": keyed.url})

    for given in (KEY + " ", KEY.upper(), "", None, [KEY], {"key": KEY}):
        wrong = unlock(given)
        assert wrong.status_code == 200 and "set-cookie" not in wrong.headers, given
        assert wrong.json()["response"]["shell-key-message"]["children"] == "wrong key"
    right = unlock(KEY)
    cookie = right.headers["set-cookie"]
    assert cookie.startswith("driftlab_dashboard=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Expires" not in cookie  # gone when the browser closes


def test_without_a_key_there_is_no_unlock_control(page: Page) -> None:
    tab = page.open("/models", "#models-versions-table")
    assert tab.locator("#shell-lock").count() == 0
    assert page.errors == []


def test_a_keyed_dashboard_promotes_only_once_unlocked_with_the_right_key(
    browser: Any, keyed: DashboardServer
) -> None:
    champion, other = champion_and_other(keyed)
    page = Page(browser, keyed.url)
    tab = page.open("/models", "#models-versions-table")
    tab.on("dialog", lambda dialog: dialog.accept())  # the confirmation
    assert tab.is_visible("#shell-lock")

    def promote() -> None:
        """Ask for `other`, confirm, and wait for the Models page's answer."""
        tab.click("#models-promote-version")
        tab.click(f".dash-dropdown-option:has-text('v{other}')")
        with tab.expect_response(
            lambda r: CALLBACK in r.url and "models-moved" in (r.request.post_data or "")
        ):
            tab.click("#models-promote")

    promote()
    tab.wait_for_selector(f"#models-message:has-text('{LOCKED}')")
    assert champion_of(keyed) == champion

    tab.fill("#shell-key", "not the key")
    tab.click("#shell-unlock")
    tab.wait_for_selector("#shell-key-message:has-text('wrong key')")
    assert tab.is_visible("#shell-lock")
    promote()
    assert LOCKED in tab.inner_text("#models-message")
    assert champion_of(keyed) == champion

    tab.fill("#shell-key", KEY)
    tab.press("#shell-key", "Enter")
    tab.wait_for_selector("#shell-lock", state="hidden")
    promote()
    tab.wait_for_selector(f"#models-message:has-text('champion v{champion} → v{other}')")
    assert champion_of(keyed) == other

    # Once per browser session: a reload keeps it, another browser (context) is asked again.
    tab.reload()
    tab.wait_for_selector("#models-versions-table")
    assert tab.locator("#shell-lock").count() == 0
    other_browser = Page(browser, keyed.url)
    try:
        assert other_browser.open("/models", "#shell-lock").is_visible("#shell-key")
    finally:
        other_browser.tab.close()
    tab.close()
    assert page.errors == []


def test_a_keyed_dashboard_neither_retrains_nor_predicts_while_locked(
    browser: Any, keyed: DashboardServer
) -> None:
    store = Store.open(make_settings(keyed.data_dir), read_only=True)
    before = [r["event_id"] for r in retraining_control.history(store)]
    page = Page(browser, keyed.url)
    try:
        tab = page.open("/retraining", "#retraining-conditions-table")
        tab.click("#retraining-trigger")
        tab.wait_for_selector(f"#retraining-message:has-text('{LOCKED}')")
        assert [r["event_id"] for r in retraining_control.history(store)] == before

        tab = page.open("/predict", "#predict-submit")
        tab.click("#predict-submit")
        tab.wait_for_selector(f"#predict-error:has-text('{LOCKED}')")
        assert not tab.is_visible("#predict-answer")
    finally:
        page.tab.close()
        store.close()
    assert page.errors == []

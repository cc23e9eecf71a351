"""The dashboard on the digits demo (the default), in a real browser: a queued row of 64 pixels
is shown as the 8×8 image it is and labeled with a click or its digit's key; on Predict a digit
is drawn on the canvas or taken from the demo stream, predicted, and a wrong answer corrected.

Its own dashboard over its own data dir: a small forest trained on the demo's clean digits, and
live traffic that ends in the shift (slanted, thicker strokes), checked and queued.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from pipelines import demo
from pipelines.loop import labeling_queue
from pipelines.models import training
from pipelines.models.registry import Registry
from pipelines.store import Store
from tests.conftest import make_settings
from tests.dashboard.conftest import PAGES, DashboardServer, Page, go_live, stored_label

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    """This module's dashboard (in place of conftest's survey one, so `page` opens it too)."""
    data = tmp_path_factory.mktemp("digits-dashboard") / "data"
    settings = make_settings(data)
    store = Store.open(settings)
    demo.seed_store(store, name="digits")
    config = training.TrainConfig(params={"n_estimators": 30})
    training.train(store, Registry.from_settings(settings), config)
    store.close()
    go_live(data, name="digits", live=50, shifted=150)
    with DashboardServer.running(data) as server:
        yield server


def _figure(tab: Any, graph: str) -> Any:
    """The first trace of a dcc.Graph as plotly holds it in the page."""
    return tab.evaluate(f"document.querySelector('#{graph} .js-plotly-plot').data[0]")


def test_the_pages_that_list_every_feature_render_on_the_digits(page: Page) -> None:
    """Drift, Models and Inspections show every feature; Labeling and Predict: the tests below."""
    for name, path, ready in PAGES:
        if name in ("drift", "models", "inspections"):
            page.open(path, ready).wait_for_load_state("networkidle")
    assert page.errors == []


def test_a_digit_item_is_an_image_labeled_by_click_or_its_key(
    page: Page, dashboard: DashboardServer
) -> None:
    store = Store.open(make_settings(dashboard.data_dir), read_only=True)
    first = labeling_queue.items(store, status="pending", limit=1)["items"][0]
    tab = page.open("/labeling", "#labeling-digit .js-plotly-plot")
    assert first["prediction_id"] in tab.inner_text("#labeling-item")
    shown = _figure(tab, "labeling-digit")
    assert shown["z"] == demo.digit_image(first["features"]).tolist()
    assert tab.get_attribute("#labeling-item details", "open") is None  # the 64 numbers folded
    keys = tab.eval_on_selector_all(
        "#labeling-classes button.labeling-class", "bs => bs.map(b => b.dataset.key)"
    )
    assert keys == [str(d) for d in range(10)]

    tab.click("#labeling-classes button[data-key='7']")
    tab.wait_for_selector(f"#labeling-message:has-text('labeled {first['prediction_id']}')")
    second = labeling_queue.items(store, status="pending", limit=1)["items"][0]["prediction_id"]
    tab.wait_for_selector(f"#labeling-item:has-text('{second}')")
    tab.keyboard.press("0")
    tab.wait_for_selector(f"#labeling-message:has-text('labeled {second}')")
    labeled = {
        i["prediction_id"]: i["label"]
        for i in labeling_queue.items(store, status="labeled")["items"]
    }
    assert labeled == {first["prediction_id"]: "7", second: "0"}
    store.close()
    assert page.errors == []


def test_draw_or_take_a_demo_digit_predict_and_correct_it(
    page: Page, dashboard: DashboardServer
) -> None:
    tab = page.open("/predict", "#predict-digit-canvas .js-plotly-plot")
    assert sum(map(sum, _figure(tab, "predict-digit-canvas")["z"])) > 0  # a demo digit to start

    # Drawing: clear, then a click inks the cell under the pointer, a second one erases it.
    tab.click("#predict-digit-clear")
    tab.wait_for_selector("#predict-digit-source:has-text('blank')")
    cell = tab.locator("#predict-digit-canvas .nsewdrag").bounding_box()
    x, y = cell["x"] + cell["width"] * 2.5 / 8, cell["y"] + cell["height"] * 5.5 / 8  # row 5, col 2
    tab.mouse.click(x, y)
    tab.wait_for_function(
        "document.querySelector('#predict-digit-canvas .js-plotly-plot').data[0].z[5][2] === 16"
    )
    tab.mouse.click(x, y)
    tab.wait_for_function(
        "document.querySelector('#predict-digit-canvas .js-plotly-plot').data[0].z[5][2] === 0"
    )

    # A digit of the shift from the demo stream, predicted, said wrong, corrected.
    tab.check("#predict-digit-shifted input")
    tab.click("#predict-digit-random")
    tab.wait_for_selector("#predict-digit-source:has-text('from the shift')")
    tab.click("#predict-submit")
    predicted = tab.wait_for_selector("#predict-label").inner_text()
    pid = re.search(r"id ([0-9a-f]+)", tab.inner_text("#predict-answer")).group(1)  # type: ignore[union-attr]
    assert len(_figure(tab, "predict-probabilities")["y"]) == 10
    other = "3" if predicted != "3" else "8"
    tab.click("#predict-wrong")
    tab.click(f"#predict-classes button:text-is('{other}')")
    tab.wait_for_selector("#predict-feedback:has-text('recorded (wrong)')")

    assert stored_label(dashboard.data_dir, pid) == (other, "feedback:dashboard")
    assert page.errors == []

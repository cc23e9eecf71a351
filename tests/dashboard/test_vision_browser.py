"""The Labeling page on an image item, in a real browser: the predicted boxes drawn on the
image, a wrong box deleted, a missing one drawn with the mouse, saved as a box label.

Its own dashboard over its own data dir: a tiny vision champion (one epoch on a dozen 64-px
canvases) and two edge logs with uncertain boxes in the labeling_queue. No tabular model: the page
must work for a vision-only workbench too.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.loop import labeling_queue
from pipelines.loop.labeling_policy import QueuePolicy
from pipelines.serving.band import Band
from pipelines.store import Store
from tests.conftest import make_settings
from tests.dashboard.conftest import DashboardServer, Page

pytestmark = pytest.mark.e2e

SIDE = 64
# Two boxes the "edge client" reports on each frame: both inside the uncertainty band.
BOXES = [
    {"box": [4.0, 6.0, 30.0, 34.0], "class": 3, "confidence": 0.55},
    {"box": [36.0, 30.0, 60.0, 58.0], "class": 5, "confidence": 0.45},
]


@pytest.fixture(scope="module")
def vision_dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardServer]:
    import cv2

    from pipelines.vision import data as vdata
    from pipelines.vision import retrain
    from pipelines.vision.edge_log import log_edge
    from pipelines.vision.image_log import ImageLog
    from pipelines.vision.predict import Limits

    data = tmp_path_factory.mktemp("vision-dashboard") / "data"
    s = make_settings(data, vision_imgsz=SIDE)
    store = Store.open(s)
    retrain.seed_demo(store, s, task="detect", n_train=8, n_val=4, size=SIDE)
    final = retrain.run(s, store, epochs=1, imgsz=SIDE, batch=8, fliplr=0.0, trigger="bootstrap")
    assert final["status"] == "promoted", final
    log = ImageLog(store, s.spool_dir, flush_interval=60)
    log.start()
    for i, item in enumerate(vdata.make_detection_set(2, split="test", size=SIDE, seed=7)):
        ok, png = cv2.imencode(".png", cv2.cvtColor(item.image, cv2.COLOR_RGB2BGR))
        assert ok
        payload = {
            "id": f"cam-test-{i:06d}",
            "ts": time.time(),
            "model_version": "1",
            "width": SIDE,
            "height": SIDE,
            "detections": BOXES,
            "frame": base64.b64encode(png.tobytes()).decode(),
        }
        log_edge(
            log,
            Band(0.4, 0.7),
            payload,
            model_name=s.vision_model_name,
            names=vdata.DIGIT_NAMES,
            images_dir=s.images_dir,
            limits=Limits(s.image_max_bytes, s.image_max_pixels),
        )
    log.close()
    assert labeling_queue.refresh(store, QueuePolicy()) == 2
    store.close()
    with DashboardServer.running(data) as server:
        yield server


@pytest.fixture
def vpage(browser: Any, vision_dashboard: DashboardServer) -> Iterator[Page]:
    tab = Page(browser, vision_dashboard.url)
    try:
        yield tab
    finally:
        tab.tab.close()


def test_review_boxes_delete_one_draw_one_and_save(
    vpage: Page, vision_dashboard: DashboardServer, tmp_path: Path
) -> None:
    store = Store.open(make_settings(vision_dashboard.data_dir), read_only=True)
    first = labeling_queue.items(store, status="pending", limit=1)["items"][0]["prediction_id"]
    tab = vpage.open("/labeling", "#labeling-box-panel .labeling-box-row")
    assert first in tab.inner_text("#labeling-item")
    assert tab.locator(".labeling-box-row").count() == 2
    assert tab.locator("#labeling-classes").is_hidden()  # no tabular classes for an image

    # Delete the second box (a false detection), then draw the missing object.
    tab.locator(".labeling-box-row").nth(1).locator("button:text-is('delete')").click()
    tab.wait_for_function("document.querySelectorAll('.labeling-box-row').length === 1")
    area = tab.locator("#labeling-image .nsewdrag").first.bounding_box()
    assert area is not None
    # The image fills the square plot area (y down): drag from (40, 8) to (60, 28) pixels.
    scale = min(area["width"], area["height"]) / SIDE
    x0 = area["x"] + (area["width"] - SIDE * scale) / 2
    y0 = area["y"] + (area["height"] - SIDE * scale) / 2
    tab.mouse.move(x0 + 40 * scale, y0 + 8 * scale)
    tab.mouse.down()
    tab.mouse.move(x0 + 50 * scale, y0 + 18 * scale, steps=5)
    tab.mouse.move(x0 + 60 * scale, y0 + 28 * scale, steps=5)
    tab.mouse.up()
    tab.wait_for_function("document.querySelectorAll('.labeling-box-row').length === 2")
    tab.screenshot(path=str(tmp_path / "labeling-boxes.png"), full_page=True)
    tab.click("#labeling-save-boxes")
    tab.wait_for_selector(f"#labeling-message:has-text('labeled {first} with 2 boxes')")

    labeled = {
        i["prediction_id"]: i for i in labeling_queue.items(store, status="labeled")["items"]
    }
    boxes = json.loads(labeled[first]["label"])
    store.close()
    assert boxes[0] == {"class": 3, "box": BOXES[0]["box"]}  # kept as predicted
    drawn = boxes[1]
    assert drawn["class"] == 0  # the "class of a new box" default
    assert drawn["box"] == pytest.approx([40, 8, 60, 28], abs=2.5)
    assert labeled[first]["who"] == "dashboard"
    # The next item is on screen now.
    tab.wait_for_function(
        f"!document.querySelector('#labeling-item').innerText.includes('{first}')"
    )
    assert vpage.errors == []


def test_predict_page_answers_an_image_upload_with_feedback(
    vpage: Page, vision_dashboard: DashboardServer, tmp_path: Path
) -> None:
    import cv2

    from pipelines.vision import data as vdata

    image = vdata.make_detection_set(1, split="test", size=SIDE, seed=21)[0].image
    path = tmp_path / "upload.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    tab = vpage.open("/predict", "#predict-image-upload")
    tab.set_input_files("#predict-image-upload input[type=file]", str(path))
    tab.wait_for_selector("#predict-image-label")
    pid = tab.inner_text("#predict-image-answer").rsplit("id ", 1)[1].strip()
    tab.click("#predict-image-correct")
    tab.wait_for_selector("#predict-image-feedback:has-text('recorded (correct)')")
    store = Store.open(make_settings(vision_dashboard.data_dir), read_only=True)

    def logged() -> Any:
        row = store.prediction(pid)
        return row if row and row["task"] == "detect" else None

    deadline = time.monotonic() + 15
    while not logged() and time.monotonic() < deadline:
        time.sleep(0.2)
    row = logged()
    feedback = store.lake.rows(
        "SELECT correct, source FROM lake.feedback WHERE prediction_id = ?", [pid]
    )
    store.close()
    assert row is not None and row["origin"] == "api" and row["image_ref"]
    assert feedback == [(True, "dashboard")]
    # The Overview now shows the vision model's hour: images, defect rate, the histogram.
    overview = vpage.open("/", "#overview-vision h3")
    panel = overview.inner_text("#overview-vision").lower()  # cards show titles in capitals
    assert "defect rate" in panel and "images" in panel
    assert overview.locator("#overview-vision .js-plotly-plot").count() == 1
    assert vpage.errors == []

"""Vision through the loop: store snapshot → YOLO dataset, fine-tune + gate + promote, the
image endpoints (good and bad uploads, edge logs, stored images, metrics), a box label through
the queue, and the image drift check.

One tiny detector is trained once for the module (a dozen 64-px canvases, 1 epoch): the point
is the plumbing, not accuracy.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from pipelines.loop import labeling_queue
from pipelines.loop.labeling_policy import QueuePolicy
from pipelines.loop.retraining_policy import RetrainPolicy
from pipelines.models.registry import CHAMPION, Registry
from pipelines.store import Store, queries
from pipelines.vision import data as vdata
from pipelines.vision import datasets, retrain, yolo
from pipelines.vision.predictor import Predictor
from tests.conftest import make_settings

pytestmark = pytest.mark.slow

IMGSZ = 64
# Every box of the untrained-ish model counts as uncertain, so the queue gets items.
BAND = {"uncertainty_low": 0.0, "uncertainty_high": 0.999, "vision_conf": 0.001}


def png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with demo images ingested and a first vision champion (no champion yet:
    promoted without a gate)."""
    data = tmp_path_factory.mktemp("vision") / "data"
    s = make_settings(data, vision_imgsz=IMGSZ)
    store = Store.open(s)
    retrain.seed_demo(store, s, task="detect", n_train=24, n_val=6, size=IMGSZ)
    final = retrain.run(s, store, epochs=1, imgsz=IMGSZ, batch=8, trigger="bootstrap", fliplr=0.0)
    store.close()
    assert final["status"] == "promoted", final
    assert final["decision"]["reasons"] == ["no champion to gate"]
    return data


@pytest.fixture
def vclient(vision_dir: Path, tmp_path: Path) -> Iterator[TestClient]:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(vision_dir, data)
    settings = make_settings(
        data, flush_interval=0.1, reload_interval=0.2, vision_imgsz=IMGSZ, **BAND
    )
    with TestClient(create_app(settings), base_url="http://localhost") as c:
        yield c


def state(client: TestClient):  # noqa: ANN201 - the app's AppState
    return client.app.state.driftlab  # type: ignore[attr-defined]


def test_dataset_export_round_trip_from_a_snapshot(vision_dir: Path, tmp_path: Path) -> None:
    s = make_settings(vision_dir)
    store = Store.open(s, read_only=True)
    try:
        snap, rows = store.vision_training_set(s.vision_model_name, "detect")
        data = retrain.training_set(store, s, task="detect", names=vdata.DIGIT_NAMES)
    finally:
        store.close()
    assert data.snapshot_id == snap and data.counts() == {"train": 24, "fixed": 6, "recent": 0}
    originals = vdata.make_detection_set(24, split="train", size=IMGSZ, seed=0)
    data_yaml = retrain.export(
        {"train": data.train, "val": data.fixed}, tmp_path / "ds", "detect", vdata.DIGIT_NAMES
    )
    back = datasets.read_detection_dataset(data_yaml, "train")
    assert len(back) == 24
    by_key = {item.key: item for item in back}
    for original in originals:
        item = by_key[f"demo-train-{original.key}"]
        assert np.array_equal(retrain.load_stored_path(item.image), original.image)
        assert len(item.boxes) == len(original.boxes)
        for got, want in zip(item.boxes, original.boxes, strict=True):
            assert got.cls == want.cls
            assert np.allclose(
                [got.x1, got.y1, got.x2, got.y2], [want.x1, want.y1, want.x2, want.y2], atol=1e-3
            )


def test_predict_image_good_and_bad_uploads(vclient: TestClient) -> None:
    image = vdata.make_detection_set(1, split="test", size=IMGSZ, seed=3)[0].image
    r = vclient.post("/predict/image", files={"file": ("a.png", png(image), "image/png")})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["task"] == "detect" and out["model_version"] == "1"
    assert out["runtime"] == "onnx" and out["width"] == IMGSZ
    assert out["detections"], "with conf 0.001 even a one-epoch model finds boxes"
    d = out["detections"][0]
    assert len(d["box"]) == 4 and d["class"] in vdata.DIGIT_NAMES and d["uncertain"]
    # The same image as base64 JSON: same boxes, stored once (content-addressed).
    r2 = vclient.post("/predict/image", json={"image": base64.b64encode(png(image)).decode()})
    assert r2.status_code == 200 and r2.json()["image_ref"] == out["image_ref"]
    assert r2.json()["detections"] == out["detections"]
    stored = vclient.get(f"/api/images/{out['image_ref']}")
    assert stored.status_code == 200 and stored.content == png(image)

    bad = [
        ({"files": {"file": ("x.txt", b"hello, not an image", "text/plain")}}, 415, "not an image"),
        ({"files": {"file": ("e.png", b"", "image/png")}}, 415, "empty"),
        ({"files": {"other": ("a.png", png(image), "image/png")}}, 422, "'file'"),
        ({"json": {"image": "***"}}, 422, "base64"),
        ({"json": {"picture": "x"}}, 422, "unknown field"),
        ({"content": b"{}", "headers": {"content-type": "text/plain"}}, 415, "multipart"),
        ({"files": {"file": ("bomb.png", bomb_png(60_000, 60_000), "image/png")}}, 413, "pixels"),
        ({"files": {"file": ("t.png", png(image)[:200], "image/png")}}, 415, ""),
    ]
    for kwargs, status, text in bad:
        r = vclient.post("/predict/image", **kwargs)
        assert r.status_code == status, (kwargs.keys(), r.text)
        assert text in r.json()["detail"]
    assert vclient.get("/api/images/../../etc/passwd").status_code == 404

    st = state(vclient)
    st.image_log.flush()
    _, logs = queries.inspection_page(st.store, limit=10)
    assert {row["prediction_id"] for row in logs} >= {
        out["prediction_id"],
        r2.json()["prediction_id"],
    }
    row = st.store.prediction(out["prediction_id"])
    assert row["task"] == "detect" and row["image_ref"] == out["image_ref"]
    everything = vclient.get("/api/metrics").json()
    # Image predictions are counted under "vision" only, not in the tabular figures.
    assert everything["predictions"] == 0 and everything["latency_ms"]["p50"] is None
    metrics = everything["vision"]
    assert metrics["images"] == 2 and metrics["defect_rate"] == 1.0
    assert sum(metrics["confidence_histogram"]["counts"]) == 2 * len(out["detections"])
    prom = vclient.get("/metrics").text
    assert 'driftlab_image_predictions_total{model_version="1",origin="api"} 2.0' in prom
    assert "driftlab_defect_rate 1.0" in prom


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares `width × height` pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def test_box_label_through_the_queue(vclient: TestClient) -> None:
    st = state(vclient)
    images = [item.image for item in vdata.make_detection_set(3, split="test", size=IMGSZ, seed=5)]
    ids = []
    for image in images:
        r = vclient.post("/predict/image", files={"file": ("a.png", png(image), "image/png")})
        ids.append(r.json()["prediction_id"])
    st.image_log.flush()
    assert labeling_queue.refresh(st.store, QueuePolicy()) == 3
    page = vclient.get("/api/labeling-queue").json()
    item = next(i for i in page["items"] if i["prediction_id"] == ids[0])
    assert item["image_ref"] and json.loads(item["prediction"])

    # Keep the first box with a new class, drop the rest, draw a missing one.
    first = json.loads(item["prediction"])[0]
    boxes = [
        {"box": first["box"], "class": (first["class"] + 1) % 10},
        {"box": [2, 3, 20, 30], "class": "7"},
    ]
    bad = vclient.post(
        f"/api/labeling-queue/{ids[0]}/label", json={"boxes": [{"box": [5, 5, 1, 1], "class": 1}]}
    )
    assert bad.status_code == 422 and "x1 < x2" in bad.json()["detail"]
    bad = vclient.post(
        f"/api/labeling-queue/{ids[0]}/label", json={"boxes": [{"box": [1, 1, 5, 5], "class": 12}]}
    )
    assert bad.status_code == 422 and "not one of" in bad.json()["detail"]
    bad = vclient.post(f"/api/labeling-queue/{ids[0]}/label", json={"label": "3"})
    assert bad.status_code == 422 and "boxes" in bad.json()["detail"]
    r = vclient.post(f"/api/labeling-queue/{ids[0]}/label", json={"boxes": boxes, "who": "ana"})
    assert r.status_code == 200, r.text
    assert r.json()["correct"] is False and r.json()["who"] == "ana"
    # Confirming the model's boxes as they are is a correct prediction.
    predicted = json.loads(st.store.prediction(ids[1])["prediction"])
    r = vclient.post(
        f"/api/labeling-queue/{ids[1]}/label",
        json={"boxes": [{"box": d["box"], "class": d["class"]} for d in predicted]},
    )
    assert r.status_code == 200 and r.json()["correct"] is True
    assert (
        vclient.post(f"/api/labeling-queue/{ids[1]}/label", json={"boxes": []}).status_code == 409
    )

    # The reviewed boxes are training data at the next snapshot, with their lineage.
    s = st.settings
    data = retrain.training_set(st.store, s, task="detect", names=vdata.DIGIT_NAMES)
    human = [i for i in data.train + data.recent if i.key.startswith(ids[0][:20])]
    assert len(human) == 1
    assert [(b.cls, b.x1) for b in human[0].boxes] == [
        (boxes[0]["class"], first["box"][0]),
        (7, 2.0),
    ]
    labeled = vclient.get("/api/labeling-queue", params={"status": "labeled"}).json()["items"]
    assert {i["prediction_id"] for i in labeled} == set(ids[:2])
    # Image labels stay out of the tabular loop's figures.
    assert (
        st.store.new_labels(None) == 0
        and st.store.vision_new_labels(s.vision_model_name, None) >= 2
    )


def test_edge_log_is_idempotent(vclient: TestClient) -> None:
    image = vdata.make_detection_set(1, split="test", size=IMGSZ, seed=9)[0].image
    payload = {
        "id": "cam1-000001",
        "ts": time.time(),
        "model_version": "1",
        "width": IMGSZ,
        "height": IMGSZ,
        "detections": [{"box": [1, 2, 30, 40], "class": 3, "confidence": 0.55}],
        "frame": base64.b64encode(png(image)).decode(),
        "fps": 24.5,
        "inference_ms": 8.2,
    }
    first = vclient.post("/log", json=payload).json()
    assert first["stored"] and first["uncertain"] and first["image_ref"]
    assert vclient.post("/log", json=payload).json()["duplicate"] is True  # still pending
    state(vclient).image_log.flush()
    assert vclient.post("/log", json=payload).json()["duplicate"] is True  # now in the lake
    r = vclient.post("/log", json={**payload, "id": "x"})
    assert r.status_code == 422 and '"id"' in r.json()["detail"]
    r = vclient.post(
        "/log",
        json={
            **payload,
            "id": "cam1-000002",
            "detections": [{"box": [1, 2, 3], "class": 1, "confidence": 0.5}],
        },
    )
    assert r.status_code == 422 and "box" in r.json()["detail"]
    r = vclient.post(
        "/log", json={**payload, "id": "cam1-000003", "frame": base64.b64encode(b"nope").decode()}
    )
    assert r.status_code == 415 and r.json()["detail"].startswith("frame:")
    metrics = vclient.get("/api/vision/metrics").json()
    assert metrics["images"] == 1 and metrics["edge_fps"] == pytest.approx(24.5)
    assert metrics["per_class"]["3"]["count"] == 1
    # Prometheus labels only what the champion knows: a made-up class or version is "other".
    made_up = {"box": [1, 2, 30, 40], "class": 3, "confidence": 0.9, "name": "<evil>"}
    r = vclient.post(
        "/log",
        json={**payload, "id": "cam1-000004", "model_version": "v-9999", "detections": [made_up]},
    )
    assert r.status_code == 200 and r.json()["stored"]
    text = vclient.get("/metrics").text
    assert 'driftlab_detections_total{cls="3"} 1.0' in text
    assert 'driftlab_detections_total{cls="other"} 1.0' in text and "evil" not in text
    assert 'driftlab_image_predictions_total{model_version="1",origin="edge"} 1.0' in text
    assert 'driftlab_image_predictions_total{model_version="other",origin="edge"} 1.0' in text


def test_fine_tune_gate_promote_and_hot_reload(vclient: TestClient, tmp_path: Path) -> None:
    st = state(vclient)
    s = st.settings
    assert st.vision.model.version == "1"
    registry = Registry.vision_from_settings(s)
    # With an int8 export, served whatever its agreement (a one-epoch model's boxes are noise).
    int8 = s.model_copy(update={"vision_int8": True, "vision_int8_min_agreement": 1e-9})
    final = retrain.run(
        int8,
        st.store,
        registry,
        epochs=1,
        imgsz=IMGSZ,
        batch=8,
        fliplr=0.0,
        trigger="manual",
        # Ties pass: a one-epoch model's mAP is noise; the test is about the plumbing.
        policy=RetrainPolicy(gate_margin=0.0, class_tolerance=1.0),
    )
    assert final["candidate_version"] == "2"
    assert final["metrics"]["primary_metric"] == "map50_95"
    for who in ("champion", "challenger"):
        assert "map50_95" in final["metrics"][who]["fixed"]
    assert any("map50_95" in r for r in final["decision"]["reasons"])
    assert registry.version("2").params["started_from"] == "v1"  # fine-tuned from the champion
    metrics = registry.version("2").metrics
    assert metrics["int8_served"] == 1.0
    folder = registry.serving_files("2", tmp_path)
    assert {"model.onnx", "model-int8.onnx", "best.pt"} <= {p.name for p in folder.iterdir()}
    # The agreement logged with the version is the two registered exports' on the fixed images.
    fixed = retrain.training_set(st.store, s, task="detect", names=vdata.DIGIT_NAMES).fixed
    again = yolo.agreement(
        Predictor.from_onnx(folder / "model.onnx"),
        Predictor.from_onnx(folder / "model-int8.onnx"),
        [retrain.load_stored_path(i.image) for i in fixed],
    )
    assert (metrics["int8_compared"], metrics["int8_matched"]) == (
        again["compared"],
        again["matched"],
    )
    assert final["status"] == ("promoted" if final["decision"]["promote"] else "rejected")
    if final["status"] == "promoted":
        assert registry.alias_version(CHAMPION) == "2"
        deadline = time.monotonic() + 10
        while st.vision.model.version != "2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert st.vision.model.version == "2"  # hot-reloaded, no restart
        assert st.vision.model.predictor.runtime == "onnx"  # the int8 export
        assert (st.vision.model.folder / "model-int8.onnx").exists()
        assert vclient.get("/api/vision/model").json()["version"] == "2"
    runs = st.store.retraining_runs(limit=1)
    assert runs[0]["model_name"] == s.vision_model_name and runs[0]["status"] == final["status"]


def test_image_drift_check_through_the_api(
    vclient: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from pipelines.vision import monitoring

    st = state(vclient)
    monkeypatch.setattr(st.settings, "min_samples", 20)
    items = vdata.make_detection_set(24, split="test", size=IMGSZ, seed=11)
    dark = [vdata.apply_shift(i.image, vdata.Shift(brightness=0.35, blur=1.5)) for i in items]
    for image in dark:
        vclient.post("/predict/image", files={"file": ("a.png", png(image), "image/png")})
    r = vclient.post("/monitoring/run", params={"model": "vision"})  # flushes the image log
    result = r.json()
    assert r.status_code == 200 and result["model"] == "vision", r.text
    assert result["status"] == "ok" and result["n_current"] == 24
    drifted = set(result["drifted_features"])
    assert {"brightness", "mean_r"} <= drifted
    assert not drifted & set(monitoring.ROLES)  # the model's outputs are never inputs
    assert set(result["drifted_outputs"]) <= set(monitoring.ROLES)

    latest = vclient.get("/api/metrics/drift", params={"model": "vision"}).json()
    assert latest["run_id"] == result["run_id"] and set(latest["drifted_features"]) == drifted
    roles = {row["feature"]: row["role"] for row in latest["features"]}
    assert {roles[name] for name in monitoring.ROLES} == {"prediction"}
    assert {roles[name] for name in set(roles) - set(monitoring.ROLES)} == {"feature"}
    history = vclient.get("/api/metrics/drift/history", params={"model": "vision"}).json()
    assert {row["run_id"] for row in history["items"]} == {result["run_id"]}
    assert vclient.get("/api/metrics/drift/history").json()["items"] == []  # tabular: none
    assert st.store.latest_drift_results() == []  # the tabular view is untouched

    # The retrain trigger counts the inputs alone (it counted `top_class` before).
    conditions = vclient.get("/api/retraining/conditions", params={"model": "vision"}).json()
    assert set(conditions["figures"]["drifted_features"]) == drifted
    assert set(conditions["figures"]["drifted_outputs"]) == set(result["drifted_outputs"])

    families = {f.name: f for f in text_string_to_metric_families(vclient.get("/metrics").text)}
    detected = {
        (s.labels["feature"], s.labels["role"]): s.value
        for s in families["driftlab_drift_detected"].samples
        if s.labels["model"] == "vision"
    }
    assert detected[("brightness", "feature")] == 1.0
    assert ("top_class", "prediction") in detected
    share = [s for s in families["driftlab_drift_share"].samples if s.labels["model"] == "vision"]
    assert share[0].value == pytest.approx(result["drift_share"])
    assert io  # keep the import for bytes helpers


def test_image_drift_report_notebook(vclient: TestClient) -> None:
    """`driftlab drift --vision`: the check stored, the drifted columns plotted, inputs before
    outputs, and frames of both sides."""
    import json

    from pipelines.ops.notebooks import run_notebook

    st = state(vclient)
    items = vdata.make_detection_set(24, split="test", size=IMGSZ, seed=12)
    for item in items:
        dark = vdata.apply_shift(item.image, vdata.Shift(brightness=0.35))
        vclient.post("/predict/image", files={"file": ("a.png", png(dark), "image/png")})
    st.image_log.flush()
    out = run_notebook("drift_report_vision", st.settings, {"min_samples": 20, "frames": 4})
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["status"] == "ok" and result["n_current"] == 24
    assert "brightness" in result["drifted_features"]
    assert result["run_id"] == st.store.latest_vision_drift()[0]["run_id"]
    for key in ("plot", "frames"):
        png_file = Path(result[key])
        assert png_file.parent == st.settings.reports_dir
        assert png_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class Flaky:
    """The app's TestClient behind a switch: while `down`, every call fails to connect."""

    def __init__(self, client: TestClient) -> None:
        self.client, self.down, self.lose_answers = client, False, False

    def _call(self, method: str, *args: object, **kwargs: object) -> object:
        import httpx

        if self.down:
            raise httpx.ConnectError("connection refused")
        response = getattr(self.client, method)(*args, **kwargs)
        if self.lose_answers:  # the log arrived, its answer did not
            raise httpx.ReadTimeout("timed out")
        return response

    def get(self, *args: object, **kwargs: object) -> object:
        return self._call("get", *args, **kwargs)

    def post(self, *args: object, **kwargs: object) -> object:
        return self._call("post", *args, **kwargs)


def test_edge_client_spools_and_resends_without_loss_or_duplicates(
    vclient: TestClient, tmp_path: Path
) -> None:
    from pipelines.vision import edge_client

    video = edge_client.write_test_video(tmp_path / "cam.avi", n_frames=9)
    frames = list(edge_client.open_source(str(video)))
    assert len(frames) == 9 and frames[0].shape == (480, 640, 3)
    http = Flaky(vclient)
    client = edge_client.EdgeClient(
        "http://edge_client.test", tmp_path / "spool", http=http, max_fps=0, client_id="cam-a"
    )
    assert client.refresh_model(force=True) and client.version == "1"
    for frame in frames[:3]:  # API up
        client.process(frame)
    http.down = True
    for frame in frames[3:6]:  # API down: spooled, the stream goes on
        client.process(frame)
    assert client.stats.spooled == 3 and len(client.spool) == 3
    http.down, http.lose_answers = False, True
    client.process(frames[6])  # reaches the API, but the client never hears back
    assert len(client.spool) == 4
    http.lose_answers = False
    for frame in frames[7:]:  # API back: the backlog goes first, resends are recognised
        client.process(frame)
    assert len(client.spool) == 0 and client.stats.resent == 4
    assert client.stats.duplicates == 1

    st = state(vclient)
    st.image_log.flush()
    ids = st.store.existing_prediction_ids(f"edge:cam-a-{i:08d}" for i in range(1, 12))
    assert ids == {f"edge:cam-a-{i:08d}" for i in range(1, 10)}  # all 9, none lost
    total, rows = queries.inspection_page(st.store, limit=100)
    edge_rows = [r for r in rows if r["prediction_id"].startswith("edge:cam-a-")]
    assert len(edge_rows) == 9  # none twice
    stats = client.stats.summary()
    assert stats["frames"] == 9 and stats["inference_ms_mean"] > 0


def test_classification_loop_end_to_end(tmp_path: Path) -> None:
    """A classifier through the whole loop: upload → prediction → uncertain → queue → a class
    label → a top-1 gated fine-tune on originals plus the label → promoted and served."""
    side = 32
    data = tmp_path / "data"
    settings = make_settings(
        data,
        vision_task="classify",
        vision_imgsz=side,
        flush_interval=0.1,
        reload_interval=0.2,
        **BAND,
    )
    store = Store.open(settings)
    retrain.seed_demo(store, settings, task="classify", n_train=20, n_val=10, size=side)
    int8 = settings.model_copy(update={"vision_int8": True})  # served only if it agrees
    first = retrain.run(int8, store, epochs=1, imgsz=side, batch=16, trigger="bootstrap")
    store.close()
    assert first["status"] == "promoted" and first["metrics"]["primary_metric"] == "top1"
    registry = Registry.vision_from_settings(settings)
    metrics = registry.version(first["candidate_version"]).metrics
    folder = registry.serving_files(first["candidate_version"], tmp_path / "files")
    served = (folder / "model-int8.onnx").exists()
    assert served == (metrics["int8_matched"] >= 0.9) == (metrics["int8_served"] == 1.0)

    images = vdata.make_classification_set(3, split="test", size=side, seed=4)
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        st = state(client)
        ids = []
        for item in images:
            r = client.post("/predict/image", files={"file": ("d.png", png(item.image), "x")})
            assert r.status_code == 200, r.text
            out = r.json()
            assert out["task"] == "classify" and out["uncertain"] is True
            assert set(out["probabilities"]) == set(vdata.DIGIT_NAMES)
            ids.append(out["prediction_id"])
        st.image_log.flush()
        # Classifications queue like tabular rows: scored from their probabilities, judged by
        # the configured band (as the worker's refresh does).
        assert labeling_queue.refresh(st.store, QueuePolicy.from_settings(st.settings)) == 3
        page = client.get("/api/labeling-queue").json()
        assert {i["prediction_id"] for i in page["items"]} == set(ids)
        bad = client.post(f"/api/labeling-queue/{ids[0]}/label", json={"label": "eleven"})
        assert bad.status_code == 422 and "not one of" in bad.json()["detail"]
        truth = vdata.DIGIT_NAMES[images[0].label]
        r = client.post(f"/api/labeling-queue/{ids[0]}/label", json={"label": truth})
        assert r.status_code == 200 and r.json()["label"] == truth
        s = st.settings
        assert st.store.vision_new_labels(s.vision_model_name, first["snapshot_id"]) == 1

        final = retrain.run(
            s,
            st.store,
            epochs=1,
            imgsz=side,
            batch=16,
            trigger="manual",
            # Ties pass: one epoch's top-1 is noise; the plumbing is under test.
            policy=RetrainPolicy(gate_margin=0.0, class_tolerance=1.0),
        )
        assert final["metrics"]["primary_metric"] == "top1"
        assert final["metrics"]["counts"]["train"] + final["metrics"]["counts"]["recent"] == 21
        assert "top1" in final["metrics"]["champion"]["fixed"]
        assert any("top1" in reason for reason in final["decision"]["reasons"])
        assert final["status"] == "promoted", final["decision"]
        deadline = time.monotonic() + 10
        while st.vision.model.version != "2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/api/vision/model").json()["version"] == "2"
        r = client.post("/predict/image", files={"file": ("d.png", png(images[1].image), "x")})
        assert r.json()["model_version"] == "2"  # the next upload is answered by the new model


def test_worker_starts_a_vision_retrain_when_due(
    vclient: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Image labels that correct the vision champion make its retrain due: the worker asks
    the same policy and starts the vision run (the run itself is tested above)."""
    from pipelines.loop import retraining_conditions, retraining_control
    from pipelines.loop.worker import Worker

    st = state(vclient)
    image = vdata.make_detection_set(1, split="test", size=IMGSZ, seed=13)[0].image
    out = vclient.post("/predict/image", files={"file": ("a.png", png(image), "image/png")}).json()
    pid = out["prediction_id"]
    st.image_log.flush()
    labeling_queue.refresh(st.store, QueuePolicy())
    r = vclient.post(
        f"/api/labeling-queue/{pid}/label", json={"boxes": [{"box": [2, 3, 20, 30], "class": 7}]}
    )
    assert r.status_code == 200 and r.json()["correct"] is False
    s = st.settings.model_copy(update={"retrain_fail_threshold": 1, "retrain_cooldown": 0})
    verdict = retraining_conditions.check(s, st.store, Registry.from_settings(s), vision=True)
    # The bootstrap run just now holds the vision model in its cooldown by default...
    waiting = retraining_conditions.check(
        st.settings, st.store, Registry.from_settings(s), vision=True
    )
    assert any("cooldown" in b for b in waiting["blocked_by"])
    # ...but not the tabular model: each model has its own.
    assert (
        retraining_conditions.conditions(s, st.store, Registry.from_settings(s)).last_retrain_at
        is None
    )
    # One labeled image, one reviewed 7: each class counts the boxes it is short of or over.
    predicted = Counter(d["class"] for d in out["detections"])
    want = {c: abs((c == "7") - predicted[c]) for c in {*predicted, "7"}}
    assert verdict["should_retrain"] and verdict["figures"]["new_labels"] == 1
    assert verdict["figures"]["errors_per_class"] == {c: n for c, n in want.items() if n}

    started: list[dict] = []
    monkeypatch.setattr(
        retraining_control, "trigger", lambda *a, **kw: started.append(kw) or {"event_id": "x"}
    )
    worker = Worker(s, st.store, Registry.from_settings(s))
    did = worker.maybe_retrain(vision=True)
    assert did["started"] is True and started[0]["vision"] is True
    assert started[0]["reasons"] == verdict["reasons"]

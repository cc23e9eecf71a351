"""YOLO offline: a one-epoch train of each task, validation, ONNX export, torch vs ONNX.

One tiny run per task is shared by the module (imgsz 32–64, a handful of images, 1 epoch): the
point is the plumbing and the two runtimes agreeing, not accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.vision import data, datasets, yolo
from pipelines.vision.offline import prepare_offline
from pipelines.vision.predictor import Predictor, nms

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("yolo")
    # conftest points YOLO_CONFIG_DIR at the session's temp home; keep it, move the runs here.
    prepare_offline(runs_dir=root / "default-runs", datasets_dir=root / "datasets")
    return root


@pytest.fixture(scope="module")
def detector(workdir: Path) -> tuple[yolo.TrainResult, Path, list[data.DetectionItem]]:
    train = data.make_detection_set(8, split="train", size=64, seed=0, empty_share=0.0)
    val = data.make_detection_set(4, split="val", size=64, seed=0, empty_share=0.0)
    data_yaml = datasets.export_detection_dataset(
        {"train": train, "val": val}, workdir / "det", data.DIGIT_NAMES
    )
    result = yolo.train(
        data_yaml, workdir / "runs", task="detect", epochs=1, imgsz=64, batch=8, name="det"
    )
    return result, data_yaml, val


@pytest.fixture(scope="module")
def classifier(workdir: Path) -> tuple[yolo.TrainResult, Path, list[data.ClassificationItem]]:
    train = data.make_classification_set(40, split="train", size=32)
    val = data.make_classification_set(20, split="val", size=32)
    root = datasets.export_classification_dataset(
        {"train": train, "val": val}, workdir / "cls", data.DIGIT_NAMES
    )
    result = yolo.train(
        root,
        workdir / "runs",
        task="classify",
        epochs=1,
        imgsz=32,
        batch=16,
        name="cls",
        fliplr=0.0,
    )
    return result, root, val


def test_offline_preparation(workdir: Path) -> None:
    config = prepare_offline()  # a bare call keeps the folders chosen before
    assert os.environ["YOLO_OFFLINE"] == "1" and os.environ["YOLO_AUTOINSTALL"] == "false"
    assert (config / "Ultralytics" / "Arial.ttf").stat().st_size > 100_000
    assert (config / "Ultralytics" / "Arial.Unicode.ttf").exists()
    from ultralytics.utils import SETTINGS

    assert SETTINGS["sync"] is False and SETTINGS["mlflow"] is False
    assert SETTINGS["runs_dir"] == str(workdir / "default-runs")


def test_detection_train_validate(detector: tuple, workdir: Path) -> None:
    result, data_yaml, _ = detector
    assert result.weights.is_file() and result.weights.suffix == ".pt"
    assert result.run_dir.parent == (workdir / "runs").resolve()
    assert set(result.metrics) >= {"map50_95", "map50", "precision", "recall"}
    metrics = yolo.validate(result.weights, data_yaml, workdir / "runs", imgsz=64)
    # The best weights on the same val split: the figures training's final validation gave.
    for name in ("map50_95", "map50", "precision", "recall"):
        assert metrics[name] == pytest.approx(result.metrics[name], abs=1e-9), name
    assert metrics["map50"] >= metrics[yolo.PRIMARY_METRIC["detect"]]  # 0.5 is the loosest IoU


def test_detection_torch_and_onnx_agree(detector: tuple, workdir: Path) -> None:
    result, _, val = detector
    onnx_path = yolo.export_onnx(result.weights, dest=workdir / "exported" / "det.onnx")
    torch_side = Predictor.from_weights(result.weights)
    onnx_side = Predictor.from_onnx(onnx_path)
    assert (onnx_side.task, onnx_side.imgsz, onnx_side.names) == ("detect", 64, data.DIGIT_NAMES)
    assert (torch_side.imgsz, torch_side.names) == (64, data.DIGIT_NAMES)
    for item in val:
        # The raw network outputs: every anchor's box and class scores.
        a, b = torch_side.raw(item.image), onnx_side.raw(item.image)
        assert a.shape == b.shape == (1, 4 + 10, 84)
        assert np.abs(a - b).max() < 1e-3
        # After NMS: one untrained epoch scores low, so look at every candidate.
        ours = torch_side.predict(item.image, conf=0.0, max_det=5)
        theirs = onnx_side.predict(item.image, conf=0.0, max_det=50)
        assert ours.runtime == "torch" and theirs.runtime == "onnx"
        assert len(ours.detections) == 5
        for det in ours.detections:
            twin = [
                d
                for d in theirs.detections
                if d.cls == det.cls and np.allclose(d.box, det.box, atol=0.05)
            ]
            assert twin and abs(twin[0].confidence - det.confidence) < 1e-4
        x1, y1, x2, y2 = ours.detections[0].box
        assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 64
        assert set(ours.to_dict()["detections"][0]) == {"box", "class", "name", "confidence"}


def test_detection_boxes_map_back_to_the_original_image(detector: tuple, workdir: Path) -> None:
    result, _, val = detector
    predictor = Predictor.from_weights(result.weights)
    wide = np.concatenate([val[0].image, val[1].image], axis=1)  # 64 × 128: letterboxed
    found = predictor.predict(wide, conf=0.0, max_det=20).detections
    assert found and all(0 <= d.box[0] <= d.box[2] <= 128 for d in found)
    assert all(0 <= d.box[1] <= d.box[3] <= 64 for d in found)


def test_classification_train_export_agree(classifier: tuple, workdir: Path) -> None:
    result, root, val = classifier
    assert set(result.metrics) >= {"top1", "top5"}
    metrics = yolo.validate(result.weights, root, workdir / "runs")
    onnx_path = yolo.export_onnx(result.weights)
    assert onnx_path.suffix == ".onnx" and onnx_path.parent == result.weights.parent
    torch_side = Predictor.load(result.weights)
    onnx_side = Predictor.load(onnx_path)
    assert onnx_side.task == torch_side.task == "classify"
    probs_torch = np.array([torch_side.predict(i.image).probabilities for i in val])
    probs_onnx = np.array([onnx_side.predict(i.image).probabilities for i in val])
    assert probs_torch.shape == (20, 10)
    assert np.allclose(probs_torch.sum(axis=1), 1, atol=1e-5)
    assert np.abs(probs_torch - probs_onnx).max() < 1e-4
    # Our preprocessing is Ultralytics' validation transform: same top-1 on the same images.
    labels = np.array([i.label for i in val])
    assert (probs_torch.argmax(axis=1) == labels).mean() == pytest.approx(metrics["top1"], abs=1e-6)
    answer = onnx_side.predict(val[0].image).to_dict()
    assert answer["class"] == int(probs_onnx[0].argmax()) and answer["name"] == str(answer["class"])


def test_fine_tune_from_weights(classifier: tuple, workdir: Path) -> None:
    result, root, _ = classifier
    tuned = yolo.train(
        root,
        workdir / "runs",
        task="classify",
        weights=result.weights,
        epochs=1,
        imgsz=32,
        batch=16,
        name="tuned",
        fliplr=0.0,
    )
    assert tuned.weights.is_file() and tuned.run_dir.name.startswith("tuned")
    with pytest.raises(ValueError, match="not 'detect'"):
        yolo.build_model("detect", result.weights)


def test_nms_matches_the_textbook_rule() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # IoU(0, 1) = 81/119 = 0.68; IoU(3, 0) = 0.9.
    assert nms(boxes, scores, 0.7).tolist() == [3, 1, 2]
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]


def test_int8_export_keeps_the_head_float_and_close_to_the_float_export(
    detector: tuple, workdir: Path
) -> None:
    import onnx

    result, _, val = detector
    fp32_path = yolo.export_onnx(result.weights, dest=workdir / "int8" / "det.onnx")
    calibration = [i.image for i in data.make_detection_set(8, split="train", size=64, seed=5)]
    int8_path = yolo.quantize_onnx(fp32_path, calibration, workdir / "int8" / "det-int8.onnx")
    fp32, int8 = Predictor.from_onnx(fp32_path), Predictor.from_onnx(int8_path)
    assert (int8.task, int8.imgsz, int8.names) == ("detect", 64, data.DIGIT_NAMES)
    graph = onnx.load(str(int8_path)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QuantizeLinear") > 50  # the backbone is int8 …
    producer = next(n for n in graph.node if graph.output[0].name in n.output)
    assert producer.op_type == "Concat"  # … the decode that mixes boxes and scores is not
    assert not any(n.name.endswith("-prepared.onnx") for n in (workdir / "int8").iterdir())
    for item in val:
        a, b = fp32.raw(item.image)[0], int8.raw(item.image)[0]
        assert np.abs(a[:4] - b[:4]).mean() < 2.0  # box coordinates, in pixels of 64
        assert np.abs(a[4:] - b[4:]).mean() < 0.02  # class scores
    same = yolo.agreement(fp32, fp32, [i.image for i in val], conf=0.0)
    assert same["matched"] == 1.0 and same["confidence_gap"] == 0.0 and same["compared"] > 0
    with pytest.raises(ValueError, match="calibration images"):
        yolo.quantize_onnx(fp32_path, [], workdir / "int8" / "none.onnx")


def test_box_agreement_counts_moved_boxes_as_missed(detector: tuple) -> None:
    result, _, val = detector
    torch_side = Predictor.from_weights(result.weights)

    def shifted(batch: np.ndarray) -> np.ndarray:
        out = torch_side.forward(batch).copy()
        out[:, 0] += 1000.0  # every box far to the right: clipped to nothing, no IoU left
        return out

    moved = Predictor(
        shifted, task="detect", names=torch_side.names, imgsz=torch_side.imgsz, runtime="torch"
    )
    images = [i.image for i in val]
    got = yolo.agreement(torch_side, moved, images, conf=0.0)
    assert got["compared"] > 0 and got["matched"] == 0.0


def test_the_device_setting_picks_cuda_only_when_torch_sees_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torch

    from tests.conftest import make_settings

    assert yolo.resolve_device("cpu") == "cpu" and yolo.resolve_device("0,1") == "0,1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert yolo.resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert yolo.resolve_device("auto") == "0"
    assert make_settings(tmp_path).vision_device == "auto"
    with pytest.raises(ValueError, match="vision_device"):
        make_settings(tmp_path, vision_device="gpu")


def test_a_cpu_machine_serves_on_the_cpu_whatever_the_device_setting(
    detector: tuple, workdir: Path
) -> None:
    result, _, val = detector
    onnx_file = yolo.export_onnx(result.weights, dest=workdir / "device" / "det.onnx")
    image = val[0].image
    on_cpu = Predictor.from_onnx(onnx_file, device="cpu").raw(image)
    auto = Predictor.from_onnx(onnx_file, device="auto").raw(image)  # no CUDA provider here
    assert np.array_equal(auto, on_cpu)
    torch_auto = Predictor.from_weights(result.weights, device="auto").raw(image)
    assert np.abs(torch_auto - on_cpu).max() < 1e-3


@pytest.mark.slow
def test_a_short_training_finds_digits_on_an_easy_held_out_set(workdir: Path) -> None:
    """Tiny settings, a real figure: a detector trained for a few epochs on large single digits
    finds them on canvases drawn from held-out pen strokes (untrained, its mAP50 is 0)."""
    easy = {"size": 64, "max_objects": 1, "digit_scale": (0.5, 0.8), "empty_share": 0.0}
    train = data.make_detection_set(600, split="train", seed=0, **easy)
    val = data.make_detection_set(100, split="val", seed=1, **easy)
    data_yaml = datasets.export_detection_dataset(
        {"train": train, "val": val}, workdir / "easy", data.DIGIT_NAMES
    )
    result = yolo.train(
        data_yaml, workdir / "runs", task="detect", epochs=14, imgsz=64, batch=16,
        name="easy", fliplr=0.0, warmup_epochs=1,
    )  # fmt: skip
    metrics = yolo.validate(result.weights, data_yaml, workdir / "runs", imgsz=64, name="easy-val")
    assert metrics["map50"] > 0.3, metrics

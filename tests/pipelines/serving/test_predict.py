"""The shared prediction path: one request, several at once, and the API's micro-batcher."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipelines import demo
from pipelines.models.registry import CHAMPION, Registry
from pipelines.serving.band import Band
from pipelines.serving.model import ServingModel, load_version
from pipelines.serving.predict import Batcher, Shadow, predict, predict_many
from pipelines.serving.rollout import LiveRollout
from pipelines.serving.shadow_log import ShadowLog
from pipelines.store import Store
from pipelines.store.ids import prediction_id_row
from pipelines.store.spool import PREPARE_MIN_ROWS, PredictionLog
from tests.conftest import make_settings

ROWS = demo.records(demo.demo_split(name="survey").live.head(40))


@pytest.fixture
def served(trained_copy: Path, tmp_path: Path):
    """The trained champion and a started prediction log over a private store."""
    settings = make_settings(trained_copy)
    registry = Registry.from_settings(settings)
    model = load_version(registry, registry.alias_version(CHAMPION))
    store = Store.open(settings)
    log = PredictionLog(store, tmp_path / "spool", flush_interval=60)
    log.start()
    try:
        yield model, log
    finally:
        log.close()
        store.close()


def columns(model: ServingModel, rows: list[dict]) -> dict[str, np.ndarray]:
    return model.schema.columns(records=rows)


def test_a_large_requests_rows_are_pending_until_flushed(served) -> None:
    """Large chunks track their pending rows as ranges of ids; small ones as a set."""
    model, log = served
    rows = (ROWS * 20)[: PREPARE_MIN_ROWS + 5]
    small = predict(model, log, Band(), records=ROWS[:2])["prediction_ids"]
    large = predict(model, log, Band(), records=rows)["prediction_ids"]
    assert log.pending_rows == len(rows) + 2
    assert all(log.is_pending(i) for i in large + small)
    request, last = prediction_id_row(large[-1])
    assert not log.is_pending(f"{request}{last + 1:06x}")  # one past its last row
    assert not log.is_pending("no-such-id") and not log.is_pending(large[0][:-6] + "zzzzzz")
    assert log.flush() == len(rows) + 2
    assert log.pending_rows == 0 and not any(log.is_pending(i) for i in large + small)
    stored = log.store.lake.scalar(
        "SELECT count(*) FROM lake.predictions WHERE prediction_id IN "
        f"({', '.join('?' * len(large))})",
        large,
    )
    assert stored == len(rows)


def test_many_requests_answer_as_each_would_alone(served) -> None:
    model, log = served
    band = Band()
    requests = [ROWS[:1], ROWS[1:4], ROWS[4:5], ROWS[5:20]]
    together = predict_many(model, log, band, [(columns(model, r), 0.0) for r in requests])
    alone = [predict(model, log, band, records=r) for r in requests]
    for t, a, rows in zip(together, alone, requests, strict=True):
        assert len(t["predictions"]) == len(rows)
        for key in ("predictions", "probabilities", "class_probabilities", "uncertain"):
            assert t[key] == a[key], key
        assert t["model_version"] == a["model_version"] == model.version
    ids = [i for t in together for i in t["prediction_ids"]]
    assert len(set(ids)) == len(ids) == 20
    # Every row of the four requests is in the log, with its own features and answer.
    assert all(log.is_pending(i) for i in ids)
    log.flush()
    stored = log.store.lake.query(
        "SELECT prediction_id, prediction FROM lake.predictions WHERE prediction_id IN "
        f"({', '.join('?' * len(ids))})",
        ids,
    ).to_pylist()
    predicted = {
        i: str(p)
        for t in together
        for i, p in zip(t["prediction_ids"], t["predictions"], strict=True)
    }
    assert {r["prediction_id"]: r["prediction"] for r in stored} == predicted


def test_requests_of_one_turn_share_one_model_call(served) -> None:
    model, log = served
    batcher = Batcher(log, Band())
    calls: list[int] = []

    def counted(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return model.predict_proba(x)

    counting = replace(model, predict_proba=counted)

    async def burst() -> list[dict]:
        return await asyncio.gather(
            *(batcher.predict(counting, columns(model, [row]), 0.0) for row in ROWS[:12])
        )

    answers = asyncio.run(burst())
    assert calls == [12]  # twelve requests, one model call
    assert (batcher.batches, batcher.requests) == (1, 12)
    alone = predict(model, log, Band(), records=ROWS[:12])
    assert [a["predictions"][0] for a in answers] == alone["predictions"]
    assert [a["probabilities"][0] for a in answers] == alone["probabilities"]


def test_a_large_request_goes_alone_and_a_swap_splits_the_turn(served) -> None:
    model, log = served
    batcher = Batcher(log, Band(), alone_rows=10)
    swapped = replace(model, version="99")

    async def mixed() -> list[dict]:
        return await asyncio.gather(
            batcher.predict(model, columns(model, ROWS[:1]), 0.0),
            batcher.predict(model, columns(model, ROWS[:30]), 0.0),  # >= alone_rows
            batcher.predict(swapped, columns(model, ROWS[1:2]), 0.0),
            batcher.predict(model, columns(model, ROWS[2:3]), 0.0),
        )

    answers = asyncio.run(mixed())
    assert [a["model_version"] for a in answers] == [
        model.version,
        model.version,
        "99",
        model.version,
    ]
    assert [len(a["predictions"]) for a in answers] == [1, 30, 1, 1]
    assert batcher.batches == 3  # the large one alone, then one call per model


def test_a_failed_model_call_fails_every_request_of_its_batch(served) -> None:
    model, log = served
    batcher = Batcher(log, Band())

    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("onnx session died")

    failing = replace(model, predict_proba=broken)

    async def burst() -> list:
        calls = (batcher.predict(failing, columns(model, [row]), 0.0) for row in ROWS[:3])
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(burst())
    assert all(isinstance(r, RuntimeError) and "died" in str(r) for r in results)
    assert log.pending_rows == 0  # nothing was acknowledged, nothing logged


def test_a_shadow_answers_the_flagged_requests_of_a_turn_in_one_more_call(
    served, tmp_path: Path
) -> None:
    model, log = served
    calls: list[int] = []

    def counted(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return 1.0 - model.predict_proba(x)  # a challenger that disagrees everywhere

    challenger = replace(model, version="2", predict_proba=counted)
    rollout = LiveRollout("r1", "shadow", 0.5, model.version, challenger)
    shadow_log = ShadowLog(log.store, tmp_path / "shadow-spool", flush_interval=60)
    shadow_log.start()
    shadow = Shadow(rollout, shadow_log)
    batcher = Batcher(log, Band())
    flagged = [n % 3 == 0 for n in range(12)]

    async def burst() -> list[dict]:
        return await asyncio.gather(
            *(
                batcher.predict(model, columns(model, ROWS[n : n + 2]), 0.0, shadow if on else None)
                for n, on in enumerate(flagged)
            )
        )

    answers = asyncio.run(burst())
    assert calls == [8]  # one shadow call: four flagged requests of two rows
    assert {a["model_version"] for a in answers} == {model.version}  # served by the champion
    assert shadow_log.answered == 8 and shadow_log.flush() == 8
    rows = log.store.lake.query("SELECT * FROM lake.shadow_predictions").to_pylist()
    expected = {
        pid for a, on in zip(answers, flagged, strict=True) if on for pid in a["prediction_ids"]
    }
    assert {r["prediction_id"] for r in rows} == expected
    served_class = {
        pid: str(p)
        for a in answers
        for pid, p in zip(a["prediction_ids"], a["predictions"], strict=True)
    }
    assert all(r["prediction"] != served_class[r["prediction_id"]] for r in rows)
    assert {(r["model_version"], r["rollout_id"], r["role"]) for r in rows} == {
        ("2", "r1", "shadow")
    }
    shadow_log.close()


def test_a_failing_shadow_never_fails_the_served_answer(served, tmp_path: Path) -> None:
    model, log = served

    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("the shadow's runtime is broken")

    rollout = LiveRollout("r1", "shadow", 1.0, model.version, replace(model, predict_proba=broken))
    shadow_log = ShadowLog(log.store, tmp_path / "shadow-spool", flush_interval=60)
    shadow_log.start()
    out = predict(model, log, Band(), records=ROWS[:3], shadow=Shadow(rollout, shadow_log))
    assert len(out["predictions"]) == 3 and log.pending_rows == 3
    assert (shadow_log.failed, shadow_log.answered, shadow_log.pending_rows) == (1, 0, 0)
    shadow_log.close()

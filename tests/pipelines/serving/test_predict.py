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
from pipelines.serving.predict import Batcher, predict, predict_many
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

"""The labeling queue over a real store: what enters, in which order, and what an answer does."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pipelines.loop import labeling_queue
from pipelines.loop.labeling_policy import QueuePolicy, informativeness
from pipelines.models.registry import Registry
from pipelines.schema import FeatureSchema
from pipelines.serving.band import Band
from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.store.spool import chunks_to_table
from tests.conftest import make_settings


@pytest.fixture
def trained(trained_copy: Path) -> tuple[Settings, Store, FeatureSchema]:
    settings = make_settings(trained_copy)
    store = Store.open(settings)
    registry = Registry.from_settings(settings)
    info = registry.version(registry.alias_version("champion") or "")
    from pipelines.serving.model import load_version

    schema = load_version(registry, info.version).schema
    return settings, store, schema


def log_predictions(store: Store, proba: np.ndarray, *, ts: float | None = None) -> list[str]:
    """Predictions with these probabilities (classes 0/1), as the API's flusher writes them."""
    schema = store.dataset_schema()
    assert schema is not None
    n = len(proba)
    ids = [f"p{time.monotonic_ns()}-{i}" for i in range(n)]
    rows = store.labeled_rows().columns
    chunk = {
        "ids": ids,
        "ts": ts or time.time(),
        "model_name": "driftlab-tabular",
        "model_version": "1",
        "features": {k: v[:n].tolist() for k, v in rows.items()},
        "prediction": [str(int(p.argmax())) for p in proba],
        "confidence": proba.max(axis=1).tolist(),
        "probabilities": proba.tolist(),
        "latency_ms": [1.0] * n,
        "uncertain": Band().uncertain(proba.max(axis=1)).tolist(),
    }
    store.append_predictions(chunks_to_table([chunk], schema))
    return ids


def two_class(top: list[float]) -> np.ndarray:
    top_arr = np.asarray(top)
    return np.column_stack([top_arr, 1 - top_arr])


def test_refresh_enqueues_uncertain_most_informative_first_within_budget(trained) -> None:
    _, store, _ = trained
    confident = [0.95, 0.9, 0.05]
    uncertain = [0.45, 0.55, 0.6, 0.65, 0.52]
    ids = log_predictions(store, two_class(confident + uncertain))
    policy = QueuePolicy(budget_per_hour=3)
    assert labeling_queue.refresh(store, policy) == 3
    assert labeling_queue.refresh(store, policy) == 0  # the hour's budget is spent

    page = labeling_queue.items(store)
    assert page["total"] == 3
    got = [item["prediction_id"] for item in page["items"]]
    scores = informativeness(two_class(uncertain), "margin")
    expected = [ids[3 + i] for i in np.argsort(-scores, kind="stable")[:3]]
    assert got == expected  # 0.52, 0.45 and 0.55 tie-break by row order: nearest to 0.5 first
    first = page["items"][0]
    assert first["score"] == pytest.approx(scores.max())
    assert first["model_version"] == "1"
    assert set(first["features"]) == set(store.dataset_schema().names)
    assert first["probabilities"] == pytest.approx([0.52, 0.48])


def test_budget_counts_the_last_hour_only(trained) -> None:
    _, store, _ = trained
    log_predictions(store, two_class([0.5, 0.55, 0.6]))
    policy = QueuePolicy(budget_per_hour=2)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1, minutes=1)
    assert labeling_queue.refresh(store, policy) == 2
    # An hour later the two enqueued no longer count, but the third prediction is also older
    # than the window, so nothing new enters.
    assert labeling_queue.refresh(store, policy, now=later) == 0
    log_predictions(store, two_class([0.5]), ts=later.timestamp() - 5)
    assert labeling_queue.refresh(store, policy, now=later) == 1


def test_label_writes_feedback_with_lineage_and_leaves_the_queue(trained) -> None:
    _, store, schema = trained
    ids = log_predictions(store, two_class([0.5, 0.6]))
    labeling_queue.refresh(store, QueuePolicy())
    before = len(store.labeled_rows())

    out = labeling_queue.answer(store, schema, ids[0], label=1, who="ana")
    assert out == {
        "prediction_id": ids[0],
        "status": "labeled",
        "label": "1",
        "correct": False,  # the model said 0
        "model_version": "1",
        "who": "ana",
    }
    pending = labeling_queue.items(store)
    assert [i["prediction_id"] for i in pending["items"]] == [ids[1]]
    labeled = labeling_queue.items(store, status="labeled")["items"]
    assert [(i["prediction_id"], i["label"], i["who"]) for i in labeled] == [(ids[0], "1", "ana")]

    rows = store.labeled_rows()
    assert len(rows) == before + 1
    assert rows.sources[rows.record_ids.index(ids[0])] == "feedback:labeling-queue"
    feedback = store.lake.query(
        "SELECT label, correct, who, model_version, source FROM lake.feedback"
    ).to_pylist()
    assert feedback == [
        {"label": "1", "correct": False, "who": "ana", "model_version": "1",
         "source": "labeling-queue"}
    ]  # fmt: skip


def test_errors_are_specific(trained) -> None:
    _, store, schema = trained
    ids = log_predictions(store, two_class([0.5, 0.6, 0.99]))
    labeling_queue.refresh(store, QueuePolicy())
    with pytest.raises(labeling_queue.InvalidLabel, match="not one of the classes"):
        labeling_queue.answer(store, schema, ids[0], label=7, who="ana")
    with pytest.raises(labeling_queue.ItemNotFound):
        labeling_queue.answer(store, schema, "nope", label=1, who="ana")
    with pytest.raises(labeling_queue.ItemNotFound):  # confident: never enqueued
        labeling_queue.skip(store, ids[2], who="ana")
    labeling_queue.skip(store, ids[1], who="ana")
    with pytest.raises(labeling_queue.AlreadyAnswered, match="already skipped"):
        labeling_queue.answer(store, schema, ids[1], label=1, who="bo")
    labeling_queue.answer(store, schema, ids[0], label=0, who="ana")
    with pytest.raises(labeling_queue.AlreadyAnswered, match="already labeled"):
        labeling_queue.skip(store, ids[0], who="bo")
    with pytest.raises(labeling_queue.QueueError, match="unknown status"):
        labeling_queue.items(store, status="done")


def test_two_people_answering_at_once_record_one_answer(trained) -> None:
    settings, store, schema = trained
    ids = log_predictions(store, two_class([0.5]))
    labeling_queue.refresh(store, QueuePolicy())
    results: list[str] = []
    barrier = threading.Barrier(4)

    def answer(who: str) -> None:
        mine = Store.open(settings)  # a store per thread, as separate processes would have
        barrier.wait()
        try:
            labeling_queue.answer(mine, schema, ids[0], label=0, who=who)
            results.append("ok")
        except labeling_queue.AlreadyAnswered:
            results.append("conflict")

    threads = [threading.Thread(target=answer, args=(f"p{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict"] * 3 + ["ok"]
    n = store.lake.scalar("SELECT count(*) FROM lake.feedback WHERE prediction_id = ?", [ids[0]])
    assert n == 1


def test_progress_counts_toward_the_next_retrain(trained) -> None:
    settings, store, schema = trained
    ids = log_predictions(store, two_class([0.5, 0.55, 0.6]))
    labeling_queue.refresh(store, QueuePolicy())
    labeling_queue.answer(store, schema, ids[0], label=1, who="ana")
    labeling_queue.skip(store, ids[1], who="ana")
    out = labeling_queue.progress(store, settings)
    assert out == {
        "pending": 1,
        "labeled_today": 1,
        "skipped_today": 1,
        "new_labels": 1,
        "needed_for_retrain": settings.retrain_min_new_labels - 1,
    }


def test_an_incremental_scan_reads_only_recent_predictions(trained) -> None:
    _, store, _ = trained
    now = dt.datetime.now(dt.UTC)
    old_ids = log_predictions(store, two_class([0.5]), ts=now.timestamp() - 600)
    new_ids = log_predictions(store, two_class([0.55]), ts=now.timestamp() - 5)
    scanned = now - dt.timedelta(seconds=30)  # the last scan: the old one was seen then
    assert labeling_queue.refresh(store, QueuePolicy(), now=now, last_scan=scanned) == 1
    assert [i["prediction_id"] for i in labeling_queue.items(store)["items"]] == new_ids
    assert (
        labeling_queue.refresh(store, QueuePolicy(), now=now) == 1
    )  # a full scan finds the old one
    assert {i["prediction_id"] for i in labeling_queue.items(store)["items"]} == {
        *old_ids,
        *new_ids,
    }

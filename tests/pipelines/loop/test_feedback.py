"""Feedback checks shared by POST /feedback and the dashboard: lookup, label, verdict, lineage."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipelines.loop.feedback import InvalidFeedback, NoSchema, PredictionNotFound, give, verdict
from pipelines.models.registry import Registry
from pipelines.schema import FeatureSchema
from pipelines.serving import predict as predicting
from pipelines.serving.band import Band
from pipelines.serving.model import ServingModel, load_version
from pipelines.store import Store
from pipelines.store.spool import PredictionLog
from tests.conftest import make_settings


@pytest.fixture
def served(trained_copy: Path) -> Iterator[tuple[Store, PredictionLog, ServingModel]]:
    """A store, a started log that only flushes when asked, and the champion."""
    settings = make_settings(trained_copy)
    store = Store.open(settings)
    registry = Registry.from_settings(settings)
    model = load_version(registry, registry.alias_version("champion") or "")
    log = PredictionLog(store, settings.spool_dir, flush_interval=3600)
    log.start()
    try:
        yield store, log, model
    finally:
        log.close()
        store.close()


@pytest.fixture(scope="module")
def schema(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> FeatureSchema:
    """The champion's schema (classes "0" and "1"), for the checks that need nothing else."""
    data = tmp_path_factory.mktemp("feedback") / "data"
    shutil.copytree(trained_dir, data)
    registry = Registry.from_settings(make_settings(data))
    return load_version(registry, registry.alias_version("champion") or "").schema


def _predict(model: ServingModel, log: PredictionLog) -> dict[str, Any]:
    store = log.store
    columns = store.labeled_rows().columns
    record = {name: values.tolist()[0] for name, values in columns.items()}
    out = predicting.predict(model, log, Band(), records=[record])
    return {"id": out["prediction_ids"][0], "prediction": str(out["predictions"][0])}


def _other(schema: FeatureSchema, label: str) -> str:
    return next(c for c in map(str, schema.classes or []) if c != label)


@pytest.mark.parametrize(
    ("label", "correct", "expected"),
    [
        (None, True, (None, True)),
        (None, False, (None, False)),
        ("1", None, ("1", True)),
        (1, None, ("1", True)),  # a class as the client types it
        ("0", None, ("0", False)),
        ("1", True, ("1", True)),
    ],
)
def test_verdict_stores_the_label_and_derives_correct(
    schema: FeatureSchema, label: Any, correct: Any, expected: Any
) -> None:
    assert verdict(schema, "1", label=label, correct=correct) == expected


@pytest.mark.parametrize(
    ("label", "correct", "message"),
    [
        (None, None, 'give "label"'),
        ("7", None, "not one of the classes"),
        ("0", True, '"correct": True contradicts the label and the prediction'),
    ],
)
def test_verdict_refuses(schema: FeatureSchema, label: Any, correct: Any, message: str) -> None:
    with pytest.raises(InvalidFeedback, match=message):
        verdict(schema, "1", label=label, correct=correct)


def test_feedback_on_a_pending_prediction_flushes_it_and_keeps_lineage(
    served: tuple[Store, PredictionLog, ServingModel],
) -> None:
    store, log, model = served
    made = _predict(model, log)
    assert log.is_pending(made["id"])  # answered, not yet in the lake
    wrong = _other(model.schema, made["prediction"])
    row = give(store, log, model.schema, made["id"], label=wrong, source="dashboard", who="ann")
    assert not log.is_pending(made["id"])
    assert (row.label, row.correct, row.model_version) == (wrong, False, model.version)
    stored = store.lake.query(
        "SELECT label, correct, source, who, model_version FROM lake.feedback "
        "WHERE feedback_id = ?",
        [row.feedback_id],
    ).to_pylist()
    assert stored == [
        {
            "label": wrong,
            "correct": False,
            "source": "dashboard",
            "who": "ann",
            "model_version": model.version,
        }
    ]


def test_unknown_prediction_and_missing_schema(
    served: tuple[Store, PredictionLog, ServingModel],
) -> None:
    store, log, model = served
    with pytest.raises(PredictionNotFound, match="no prediction with id 'nope'"):
        give(store, log, model.schema, "nope", correct=True)
    made = _predict(model, log)
    with pytest.raises(NoSchema, match="no dataset schema yet"):
        give(store, log, None, made["id"], correct=True)
    n = store.lake.scalar(
        "SELECT count(*) FROM lake.feedback WHERE prediction_id = ?", [made["id"]]
    )
    assert n == 0

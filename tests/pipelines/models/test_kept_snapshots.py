"""Compaction keeps the training snapshot of every registered model, vision ones included."""

from __future__ import annotations

from pathlib import Path

from pipelines import demo
from pipelines.loop.ingestion import ingest
from pipelines.models import training
from pipelines.models.registry import Registry, kept_snapshots
from pipelines.store import Store
from tests.conftest import make_settings


def test_compaction_keeps_the_vision_models_training_snapshot(trained_copy: Path) -> None:
    s = make_settings(trained_copy)
    store = Store.open(s)
    ingest(store, records=demo.records(demo.demo_split(name="survey").live.head(5)))
    vision_snapshot = store.snapshot_id()
    # A version of the vision model, registered at that snapshot (what it holds is not the
    # point: only its recorded snapshot is).
    vision = Registry.vision_from_settings(s)
    training.train(store, vision, training.TrainConfig(params={"n_estimators": 5}), promote=False)
    assert vision_snapshot in vision.trained_snapshots()
    assert vision_snapshot not in Registry.from_settings(s).trained_snapshots()
    for _ in range(3):  # later snapshots, so that the vision one is neither first nor last
        ingest(store, records=demo.records(demo.demo_split(name="survey").live.head(2)))

    store.compact(kept_snapshots(s), older_than_hours=0)

    rows = store.lake.scalar(
        f"SELECT count(*) FROM lake.ingested_rows AT (VERSION => {vision_snapshot})"
    )
    assert rows > 0  # still readable: the vision model's training set can be read back
    assert set(Registry.from_settings(s).trained_snapshots()) <= set(kept_snapshots(s))

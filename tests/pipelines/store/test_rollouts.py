"""The rollout rows in the store: which rollout runs, and what a label says about a pair."""

from __future__ import annotations

import datetime as dt
import time

import pyarrow as pa

from pipelines.serving.shadow_log import shadow_table
from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.store.rollouts import STARTED, STOPPED

MODEL = "driftlab-tabular"


def _start(store: Store, rollout_id: str, version: str) -> None:
    store.add_model_event(
        MODEL, STARTED, "1", version, who="t", why="t", rollout_id=rollout_id,
        details={"mode": "shadow", "share": 1.0},
    )  # fmt: skip
    time.sleep(0.002)  # distinct timestamps


def test_the_newest_rollout_runs_and_an_older_one_never_comes_back(settings: Settings) -> None:
    store = Store.open(settings)
    assert store.active_rollout(MODEL) is None
    _start(store, "a", "2")
    _start(store, "b", "3")  # started at the same time as "a", by another process
    running = store.active_rollout(MODEL)
    assert running is not None and running["rollout_id"] == "b"
    assert running["details"] == {"mode": "shadow", "share": 1.0}
    store.add_model_event(MODEL, STOPPED, "1", "3", who="t", why="done", rollout_id="b")
    assert store.active_rollout(MODEL) is None  # "a" is superseded, not revived
    assert store.active_rollout("another-model") is None


def _predictions(store: Store, served: dict[str, str], ts: dt.datetime) -> None:
    n = len(served)
    store.lake.write(
        lambda cur: (
            cur.register(
                "_p",
                pa.table(
                    {
                        "prediction_id": list(served),
                        "ts": pa.array([ts] * n, pa.timestamp("us", tz="UTC")),
                        "model_name": [MODEL] * n,
                        "model_version": ["1"] * n,
                        "prediction": list(served.values()),
                    }
                ),
            ),
            cur.execute("INSERT INTO lake.predictions BY NAME SELECT * FROM _p"),
        )
    )


def test_pairs_read_what_each_kind_of_label_says(settings: Settings) -> None:
    store = Store.open(settings)
    now = dt.datetime.now(dt.UTC)
    served = {"p1": "a", "p2": "a", "p3": "a", "p4": "a", "p5": "a", "p6": "a"}
    shadow = {"p1": "b", "p2": "b", "p3": "a", "p4": "b", "p5": "a", "p6": "b"}
    _predictions(store, served, now)
    store.append_shadow_predictions(
        shadow_table(
            [
                {
                    "ids": list(shadow),
                    "ts": now.timestamp(),
                    "rollout_id": "r",
                    "model_name": MODEL,
                    "model_version": "2",
                    "prediction": list(shadow.values()),
                    "confidence": [0.9] * 6,
                    "probabilities": [[0.1, 0.9]] * 6,
                }
            ]
        )
    )
    store.add_feedback("p1", label="b", correct=None)  # the shadow was right
    store.add_feedback("p2", label=None, correct=True)  # the served class was right
    store.add_feedback("p3", label=None, correct=False)  # both said "a": both wrong
    store.add_feedback("p4", label=None, correct=False)  # champion wrong, shadow unknown
    store.add_feedback("p5", label="c", correct=None)
    store.add_feedback("p5", label="a", correct=None)  # corrected: the latest label counts
    pairs = store.shadow_pairs("r", now - dt.timedelta(seconds=1), limit=10)
    assert pairs == [(False, True), (True, False), (False, False), (True, True)]
    assert store.shadow_pairs("r", now - dt.timedelta(seconds=1), limit=2) == pairs[:2]
    agreement = store.shadow_agreement("r", now - dt.timedelta(seconds=1))
    assert agreement["n"] == 6 and agreement["agreement"] == 2 / 6
    assert agreement["per_class"]["a"]["shadow_said"] == {"b": 4}
    assert store.arm_labels(MODEL, ("1", "2"), now - dt.timedelta(seconds=1), 10) == [
        ("1", False), ("1", True), ("1", False), ("1", False), ("1", True),
    ]  # fmt: skip

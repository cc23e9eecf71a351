"""The demo data: real rows from statsmodels, and a shift that costs the first model accuracy."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from pipelines import demo
from pipelines.schema import infer_schema


def test_split_is_deterministic_and_the_shift_is_real() -> None:
    split = demo.demo_split(seed=0)
    assert len(split.train) + len(split.live) + len(split.shifted) == 6366
    assert split.train.equals(demo.demo_split(seed=0).train)
    assert (split.train["age"] < 32).all() and (split.shifted["age"] >= 32).all()
    assert abs(split.train["affair"].mean() - 0.27) < 0.02
    assert abs(split.shifted["affair"].mean() - 0.40) < 0.02
    schema = infer_schema(records=demo.records(split.train), labels=split.train["affair"].tolist())
    cols = schema.columns(records=demo.records(split.train))
    trained = schema.with_training_facts(cols, split.train["affair"].tolist())

    def encode(frame):
        return trained.encode(trained.columns(records=demo.records(frame)))

    model = RandomForestClassifier(100, max_depth=10, random_state=0).fit(
        encode(split.train), split.train["affair"]
    )
    live = float(np.mean(model.predict(encode(split.live)) == split.live["affair"]))
    shifted = float(np.mean(model.predict(encode(split.shifted)) == split.shifted["affair"]))
    assert live - shifted > 0.04, (live, shifted)  # the shift costs accuracy

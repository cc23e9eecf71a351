"""The demo data: real rows from statsmodels, and a shift that costs the first model accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def test_the_digits_shift_is_one_that_labels_can_teach() -> None:
    """The claim in `pipelines/demo.py`: ~0.95 → ~0.4 on the shift, back to ~0.9 with labels."""
    split = demo.demo_split(name="digits")
    x = split.features
    first = RandomForestClassifier(50, random_state=0).fit(split.train[x], split.train["digit"])
    test, pool = split.shifted.iloc[:300], split.shifted.iloc[300:]
    assert first.score(split.live[x], split.live["digit"]) > 0.9
    assert first.score(test[x], test["digit"]) < 0.6
    both = pd.concat([split.train, pool])
    second = RandomForestClassifier(50, random_state=0).fit(both[x], both["digit"])
    assert second.score(test[x], test["digit"]) > 0.85
    assert {len(split.train), len(split.live), len(split.shifted)} == {900, 200, 697}
    stream = list(demo.replay(name="digits"))
    assert len(stream) == 897 and set(stream[0][0]) == set(demo.DIGIT_PIXELS)

"""The demo data: real rows (digits from scikit-learn, the survey from statsmodels), and shifts
that cost the first model accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from pipelines import demo
from pipelines.schema import infer_schema


def test_split_is_deterministic_and_the_shift_is_real() -> None:
    split = demo.demo_split(seed=0, name="survey")
    assert len(split.train) + len(split.live) + len(split.shifted) == 6366
    assert split.train.equals(demo.demo_split(seed=0, name="survey").train)
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
    """The claim in `pipelines/demo/datasets.py`: ~0.95 → ~0.4 on the shift, back to ~0.9
    with labels."""
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


def test_digits_are_the_default_demo() -> None:
    from pipelines.demo.simulate import SimulationConfig
    from pipelines.settings import Settings

    assert demo.DEFAULT_DEMO == "digits" == Settings(_env_file=None).demo  # type: ignore[call-arg]
    assert SimulationConfig().demo == "digits"
    assert demo.demo_split().label == demo.DIGIT_LABEL


def test_a_row_of_pixels_is_an_image_and_back() -> None:
    assert demo.is_digit_schema(demo.DIGIT_PIXELS)
    assert demo.is_digit_schema(list(reversed(demo.DIGIT_PIXELS)))  # any order
    assert not demo.is_digit_schema(demo.DIGIT_PIXELS[:63])
    assert not demo.is_digit_schema(["age", "educ"])
    record, label = demo.demo_digit(np.random.default_rng(0), shifted=True)
    assert 0 <= label <= 9 and set(record) == set(demo.DIGIT_PIXELS)
    shifted = demo.digits_split().shifted  # the digit is a row of the shift, with its class
    rows = shifted[(shifted[demo.DIGIT_PIXELS] == pd.Series(record)).all(axis=1)]
    assert len(rows) >= 1 and label in set(rows[demo.DIGIT_LABEL])
    image = demo.digit_image(record)
    assert image.shape == (8, 8)
    assert image[0, 1] == record["px1"] and image[1, 0] == record["px8"]  # row by row
    assert demo.digit_record(image) == record
    assert demo.digit_record([[20.0] * 8] * 8)["px0"] == demo.DIGIT_INK  # clipped to 0–16
    assert demo.digit_image({}).sum() == 0.0  # missing pixels are blank paper
    with pytest.raises(ValueError, match="8×8"):
        demo.digit_record([[1.0] * 8] * 7)

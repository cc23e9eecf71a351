"""The demo dataset: real survey data shipped inside statsmodels, with a real population shift.

Fair's 1974 Redbook survey of 6,366 married women (`statsmodels.datasets.fair`): eight answers
(marriage rating, age, years married, children, religiousness, education, own and husband's
occupation) and whether the respondent reported an extramarital affair. The shift is the real
difference between cohorts: the model is trained on women under 32, and the stream then brings
women of 32 and over, whose features (age, years married, children) and whose base rate of the
label (27% → 40%) both differ: the default forest trained on the young cohort scores 0.74 on
unseen young women and 0.65 on the older ones (tests/pipelines/test_demo.py asserts the gap).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

LABEL = "affair"
SHIFT_FEATURE, SHIFT_AGE = "age", 32.0

OCCUPATIONS = {
    1: "student",
    2: "farming/semi-skilled/unskilled",
    3: "white-collar",
    4: "teacher/nurse/artist/skilled",
    5: "managerial/business",
    6: "professional",
}


def demo_frame() -> pd.DataFrame:
    """The whole dataset: 8 features (2 categorical) and the binary label `affair`."""
    from statsmodels.datasets import fair

    raw = fair.load_pandas().data
    frame = raw.drop(columns=["affairs"]).copy()
    for col in ("occupation", "occupation_husb"):
        frame[col] = frame[col].astype(int).map(OCCUPATIONS)
    frame[LABEL] = (raw["affairs"] > 0).astype(int)
    return frame


@dataclass(frozen=True)
class DemoSplit:
    """train: what the first model learns from; live: unseen rows of the same population;
    shifted: the other cohort, in a random order."""

    train: pd.DataFrame
    live: pd.DataFrame
    shifted: pd.DataFrame

    @property
    def features(self) -> list[str]:
        return [c for c in self.train.columns if c != LABEL]


def demo_split(seed: int = 0, live_share: float = 0.25) -> DemoSplit:
    frame = demo_frame()
    rng = np.random.default_rng(seed)
    young = frame[frame[SHIFT_FEATURE] < SHIFT_AGE].sample(frac=1.0, random_state=rng)
    old = frame[frame[SHIFT_FEATURE] >= SHIFT_AGE].sample(frac=1.0, random_state=rng)
    n_live = int(len(young) * live_share)
    return DemoSplit(
        train=young.iloc[n_live:].reset_index(drop=True),
        live=young.iloc[:n_live].reset_index(drop=True),
        shifted=old.reset_index(drop=True),
    )


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as `{feature: value}` dicts, as a client would send them (label left out)."""
    return frame.drop(columns=[LABEL]).to_dict(orient="records")


def replay(seed: int = 0, *, shifted: bool = True) -> Iterator[tuple[dict[str, Any], int]]:
    """The demo stream: (record, true label), first the same population, then the shift."""
    split = demo_split(seed)
    parts = [split.live, split.shifted] if shifted else [split.live]
    for part in parts:
        for rec, label in zip(records(part), part[LABEL].tolist(), strict=True):
            yield rec, int(label)


def seed_store(store: Any, seed: int = 0) -> int:
    """Ingest the demo training rows (with labels) into an empty store; returns rows added."""
    from pipelines.ingestion import ingest

    split = demo_split(seed)
    result = ingest(
        store,
        records=records(split.train),
        labels=split.train[LABEL].tolist(),
        batch_id=f"demo-train-{seed}",
        source="demo",
    )
    return result.rows

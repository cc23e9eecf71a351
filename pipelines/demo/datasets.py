"""The demo datasets: real data shipped with the installed libraries, each with a real shift.

`DRIFTLAB_DEMO` picks which one `make up` seeds and `make simulate` replays.

`digits` (the default): scikit-learn's 1,797 handwritten digits, 8×8 pixels of ink 0–16. The
first model learns 900 clean digits; the stream then brings 200 more clean ones, then the other
697 written the way a new population of writers would (slanted by 25 degrees, thicker strokes):
the first model falls from ~0.95 to ~0.4 accuracy on them, and a few hundred labels bring it
back to ~0.9, so a retrain's challenger passes the gate and takes over. `is_digit_schema`,
`digit_image` and `digit_record` let a page show a row of pixels as the image it is.

`survey`: Fair's 1974 Redbook survey of 6,366 married women (`statsmodels.datasets.fair`):
eight answers (marriage rating, age, years married, children, religiousness, education, own
and husband's occupation) and whether the respondent reported an extramarital affair. The
shift is the real difference between cohorts: the model is trained on women under 32, and the
stream then brings women of 32 and over, whose features (age, years married, children) and
whose base rate of the label (27% → 40%) both differ: the default forest trained on the young
cohort scores 0.74 on unseen young women and 0.65 on the older ones. That shift is in who
arrives, not in how the answers relate to the label, so a few hundred labels teach a forest
little and the promotion gate rightly rejects most challengers. (tests/pipelines/test_demo.py
asserts both demos' claims.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_DEMO",
    "DEMOS",
    "DIGIT_INK",
    "DIGIT_LABEL",
    "DIGIT_PIXELS",
    "DIGIT_SIDE",
    "DemoSplit",
    "LABEL",
    "OCCUPATIONS",
    "demo_digit",
    "demo_frame",
    "demo_split",
    "digit_image",
    "digit_record",
    "digits_frame",
    "digits_split",
    "is_digit_schema",
    "records",
    "replay",
    "seed_store",
    "shift_digits",
]

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


DEMOS = ("digits", "survey")
"""`DRIFTLAB_DEMO`: which demo `make up` seeds and `make simulate` replays."""
DEFAULT_DEMO = "digits"


@dataclass(frozen=True)
class DemoSplit:
    """train: what the first model learns from; live: unseen rows of the same population;
    shifted: the other population, in a random order; label: the label's column."""

    train: pd.DataFrame
    live: pd.DataFrame
    shifted: pd.DataFrame
    label: str = LABEL

    @property
    def features(self) -> list[str]:
        return [c for c in self.train.columns if c != self.label]


def demo_split(seed: int = 0, live_share: float = 0.25, name: str = DEFAULT_DEMO) -> DemoSplit:
    if name == "digits":
        return digits_split(seed)
    if name != "survey":
        raise ValueError(f"unknown demo {name!r}; one of {', '.join(DEMOS)}")
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
    labels = [c for c in (LABEL, DIGIT_LABEL) if c in frame.columns]
    return frame.drop(columns=labels).to_dict(orient="records")


def replay(
    seed: int = 0, *, shifted: bool = True, name: str = DEFAULT_DEMO
) -> Iterator[tuple[dict[str, Any], int]]:
    """The demo stream: (record, true label), first the same population, then the shift."""
    split = demo_split(seed, name=name)
    parts = [split.live, split.shifted] if shifted else [split.live]
    for part in parts:
        for rec, label in zip(records(part), part[split.label].tolist(), strict=True):
            yield rec, int(label)


def seed_store(store: Any, seed: int = 0, name: str = DEFAULT_DEMO) -> int:
    """Ingest the demo training rows (with labels) into an empty store; returns rows added."""
    from pipelines.loop.ingestion import ingest

    split = demo_split(seed, name=name)
    result = ingest(
        store,
        records=records(split.train),
        labels=split.train[split.label].tolist(),
        batch_id=f"demo-train-{name}-{seed}" if name != "survey" else f"demo-train-{seed}",
        source="demo",
    )
    return result.rows


# -- the digits demo (the default): a shift that new labels can learn ----------------------------
# In the survey above the shift is in who arrives, not in how the answers relate to the label, so
# a forest gains little from a few hundred labels of the new cohort and the promotion gate
# rightly rejects most challengers. The digits below shift the way a new population of writers
# would (slanted by 25 degrees, thicker strokes): the first model falls from ~0.95 to ~0.4
# accuracy on them, and a few hundred labels bring it back, so a retrain is promoted.

DIGIT_SIDE = 8
DIGIT_PIXELS = [f"px{i}" for i in range(DIGIT_SIDE * DIGIT_SIDE)]
"""The 64 pixel features, row by row from the top left (as `load_digits` flattens them)."""
DIGIT_LABEL = "digit"
DIGIT_INK = 16.0
"""The darkest pixel value (0 is blank paper)."""


def shift_digits(images: np.ndarray) -> np.ndarray:
    """8×8 digit images slanted by 25 degrees and written with a thicker pen, flattened to 64
    pixel columns (0–16, as in scikit-learn's `load_digits`)."""
    from scipy import ndimage

    slanted = (ndimage.rotate(im, 25, reshape=False, order=1) for im in images)
    out = [np.clip(ndimage.grey_dilation(im, (2, 1)), 0, DIGIT_INK) for im in slanted]
    return np.asarray(out).reshape(len(images), -1)


def digits_frame(*, shifted: bool) -> pd.DataFrame:
    """scikit-learn's 1,797 handwritten digits, one column per pixel plus `digit`, clean or
    shifted."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (
        shift_digits(digits.images) if shifted else digits.images.reshape(len(digits.target), -1)
    )
    frame = pd.DataFrame(pixels.astype(float), columns=DIGIT_PIXELS)
    frame[DIGIT_LABEL] = digits.target
    return frame


def digits_split(seed: int = 0) -> DemoSplit:
    """900 clean digits to train on, 200 more clean ones, then the other 697 shifted."""
    clean, shifted = digits_frame(shifted=False), digits_frame(shifted=True)
    order = np.random.default_rng(seed).permutation(len(clean))
    return DemoSplit(
        train=clean.iloc[order[:900]].reset_index(drop=True),
        live=clean.iloc[order[900:1100]].reset_index(drop=True),
        shifted=shifted.iloc[order[1100:]].reset_index(drop=True),
        label=DIGIT_LABEL,
    )


def demo_digit(
    rng: np.random.Generator, *, shifted: bool, seed: int = 0
) -> tuple[dict[str, float], int]:
    """One digit of the demo stream, as a client sends it, and its true class: a clean one of
    the training population (`live`) or one of the shift."""
    pixels, labels = _stream_digits(seed, shifted)
    i = int(rng.integers(len(labels)))
    return dict(zip(DIGIT_PIXELS, pixels[i].tolist(), strict=True)), int(labels[i])


@lru_cache(maxsize=4)
def _stream_digits(seed: int, shifted: bool) -> tuple[np.ndarray, np.ndarray]:
    """The pixels and labels of one part of the digits stream, made once per process (making
    the split slants every digit: too slow to repeat per click of the Predict page's random
    digit)."""
    split = digits_split(seed)
    part = split.shifted if shifted else split.live
    pixels = part[DIGIT_PIXELS].to_numpy(dtype=float)
    labels = part[DIGIT_LABEL].to_numpy(dtype=int)
    pixels.flags.writeable = labels.flags.writeable = False  # shared between callers
    return pixels, labels


def is_digit_schema(names: Sequence[str]) -> bool:
    """Whether these feature names are the digits demo's 64 pixels (so a row is an image)."""
    return len(names) == len(DIGIT_PIXELS) and set(names) == set(DIGIT_PIXELS)


def digit_image(record: Mapping[str, Any]) -> np.ndarray:
    """A record of the 64 pixel features as its 8×8 image (a missing value is blank paper)."""
    values = [record.get(name) for name in DIGIT_PIXELS]
    pixels = np.array([0.0 if v is None else float(v) for v in values])
    return pixels.reshape(DIGIT_SIDE, DIGIT_SIDE)


def digit_record(image: Any) -> dict[str, float]:
    """An 8×8 image (nested lists or an array) as the record of its 64 pixel features, each
    clipped to the demo's 0–16 range; the inverse of `digit_image`."""
    pixels = np.clip(np.asarray(image, dtype=float), 0.0, DIGIT_INK)
    if pixels.shape != (DIGIT_SIDE, DIGIT_SIDE):
        raise ValueError(f"a digit is {DIGIT_SIDE}×{DIGIT_SIDE} pixels, not {pixels.shape}")
    return dict(zip(DIGIT_PIXELS, pixels.ravel().tolist(), strict=True))

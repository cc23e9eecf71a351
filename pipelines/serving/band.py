"""The uncertainty band: predictions whose confidence lies inside it go to a person. Pure.

Serving flags each prediction with it (`pipelines.serving.predict`); the labeling policy ranks
what the band let through (`pipelines.loop.labeling_policy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Band:
    """low < confidence < high: the model is unsure enough that a person should look."""

    low: float = 0.4
    high: float = 0.7

    def uncertain(self, confidence: np.ndarray) -> np.ndarray:
        return (confidence > self.low) & (confidence < self.high)

"""The lake: the only package that speaks SQL. Everything else calls these functions."""

from pipelines.store.lake import Lake
from pipelines.store.store import LabeledRows, Store, new_id, utcnow

__all__ = ["LabeledRows", "Lake", "Store", "new_id", "utcnow"]

"""The lake: the only package that speaks SQL. Everything else calls these functions."""

from pipelines.store.core import new_id, utcnow
from pipelines.store.ingested import LabeledRows
from pipelines.store.lake import Lake
from pipelines.store.store import Store

__all__ = ["LabeledRows", "Lake", "Store", "new_id", "utcnow"]

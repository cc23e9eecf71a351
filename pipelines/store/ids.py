"""Prediction ids that carry their time, so a lookup by id reads only the files of that time.

`predictions` is partitioned into files by commit, and the lake keeps each file's `ts` range:
a query that bounds `ts` skips every other file, one that looks for an id alone opens them
all (a cost that grows with the number of commits). An id made by `prediction_ids` starts
with its prediction's `ts` in milliseconds, like a UUIDv7, so `Store.prediction` can derive
that bound from the id alone. Ids made otherwise (edge logs `edge:…`, random hex ids of an
older format) don't parse, and are looked up by a full scan.

Layout, 32 lowercase hex digits: 12 of Unix time in ms, the version digit `7`, 13 random
(one draw per request), 6 of the row's index in its request. The ids of one request sort in
row order; ids of one millisecond sort by their random part.
"""

from __future__ import annotations

import datetime as dt
import os
import re

__all__ = ["ID_SLACK", "prediction_id_row", "prediction_id_time", "prediction_ids", "request_ids"]

_PATTERN = re.compile(r"[0-9a-f]{12}7[0-9a-f]{19}")

ID_SLACK = dt.timedelta(seconds=1)
"""How far around its id's time a prediction's `ts` is looked for. The two are one clock
reading, so this only absorbs rounding; it costs nothing, files span far longer."""


_row_suffixes: list[str] = []
"""`f"{i:06x}"` for the row indexes asked for so far: a 10k-row request then only joins two
strings per row, which is cheaper than formatting each index again. Replaced, never changed in
place, so a thread always reads a complete list."""


def prediction_ids(n: int, ts: float) -> list[str]:
    """Ids for the `n` rows of one request predicted at `ts` (Unix seconds)."""
    return request_ids(n, ts)[1]


def request_ids(n: int, ts: float) -> tuple[str, list[str]]:
    """`prediction_ids` and the part they share (see `prediction_id_row`)."""
    head = f"{int(ts * 1000):012x}7{os.urandom(7).hex()[:13]}"
    global _row_suffixes
    suffixes = _row_suffixes
    if n > len(suffixes):  # grows to the largest request seen
        suffixes = _row_suffixes = [f"{i:06x}" for i in range(n)]
    return head, [head + suffix for suffix in suffixes[:n]]


def prediction_id_time(prediction_id: str) -> dt.datetime | None:
    """The time an id made by `prediction_ids` was made at; None for any other id."""
    if _PATTERN.fullmatch(prediction_id) is None:
        return None
    try:
        return dt.datetime.fromtimestamp(int(prediction_id[:12], 16) / 1000, dt.UTC)
    except (OverflowError, ValueError, OSError):  # 12 hex digits reach past the year 9999
        return None


def prediction_id_row(prediction_id: str) -> tuple[str, int] | None:
    """(its request's part, the row's index in its request) of an id made by
    `prediction_ids`; None for any other id."""
    if _PATTERN.fullmatch(prediction_id) is None:
        return None
    return prediction_id[:-6], int(prediction_id[-6:], 16)

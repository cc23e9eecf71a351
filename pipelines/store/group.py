"""Group commit: writes that arrive while a commit runs share the next one.

Each DuckLake commit has a fixed cost that does not depend on its rows: with the SQLite
catalog, the transaction's metadata reads, the stats and snapshot rows, and the snapshot id
read after it (`python -m benchmarks --only store` prints a 1-row and a 10k-row commit's CPU).
Writers commit one at a time anyway (`Lake.write` holds the lake's commit lock: a file lock
on one machine, an advisory lock in a PostgreSQL catalog), so a writer that finds a commit
running waits; here, while it waits, it queues its
rows, and the first waiter to get the turn commits everything queued in one transaction
(the leader/follower scheme of database group commit). A lone writer commits at once, alone:
nothing waits for a timer.

The leader takes the lake's commit lock (`turn`) *before* it gathers the queue: while it waits
for another process's commit (another API replica's, on a shared catalog), this process's
writers keep joining its batch.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("item", "done", "result", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """Calls `commit(items)` for batches of the items that `submit` was given, from any number
    of threads; every `submit` returns the result of the commit that carried its item (or
    raises its error). `commit` must write all the items or none of them."""

    def __init__(
        self,
        commit: Callable[[list[T]], R],
        turn: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self._commit = commit
        self._outer_turn = turn  # the processes' turn (the lake's commit lock)
        self._queue: list[_Slot[T, R]] = []
        self._queue_lock = threading.Lock()
        self._turn = threading.Lock()  # one commit at a time
        self.commits = 0  # commits made, and the items they carried
        self.items = 0

    def submit(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._queue_lock:
            self._queue.append(slot)
        with self._turn:
            if not slot.done:  # nobody took it while this thread waited: lead the next commit
                with self._outer_turn():
                    with self._queue_lock:
                        batch, self._queue = self._queue, []
                    self._run(batch)
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        try:
            result = self._commit([s.item for s in batch])
        except BaseException as exc:  # every writer of the group hears of it
            for s in batch:
                s.error, s.done = exc, True
            return
        self.commits += 1
        self.items += len(batch)
        for s in batch:
            s.result, s.done = result, True

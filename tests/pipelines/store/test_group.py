"""Group commit: concurrent writers share commits, each hears its own commit's outcome."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipelines.loop.ingestion import ingest
from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.store.group import GroupCommit


def test_writers_that_arrive_during_a_commit_share_the_next_one() -> None:
    committed: list[list[int]] = []
    first_started = threading.Event()
    release = threading.Event()

    def commit(items: list[int]) -> int:
        if not committed:  # hold the first commit until every other writer has queued
            first_started.set()
            release.wait(10)
        committed.append(items)
        return len(committed)

    group: GroupCommit[int, int] = GroupCommit(commit)
    with ThreadPoolExecutor(9) as pool:
        first = pool.submit(group.submit, 0)
        first_started.wait(10)
        rest = [pool.submit(group.submit, i) for i in range(1, 9)]
        deadline = time.monotonic() + 10
        while len(group._queue) < 8 and time.monotonic() < deadline:
            time.sleep(0.005)
        release.set()
        results = {0: first.result(timeout=10)} | {
            i: f.result(timeout=10) for i, f in enumerate(rest, 1)
        }
    assert [sorted(c) for c in committed] == [[0], list(range(1, 9))]  # the 8 waiters: 1 commit
    assert results == {0: 1} | {i: 2 for i in range(1, 9)}  # each: its own commit's result
    assert (group.commits, group.items) == (2, 9)


def test_a_failed_commit_fails_its_writers_only() -> None:
    calls = []

    def commit(items: list[str]) -> str:
        calls.append(items)
        if "bad" in items:
            raise OSError("disk full")
        return "ok"

    group: GroupCommit[str, str] = GroupCommit(commit)
    with pytest.raises(OSError, match="disk full"):
        group.submit("bad")
    assert group.submit("good") == "ok"  # the next commit is not poisoned
    assert calls == [["bad"], ["good"]]
    assert (group.commits, group.items) == (1, 1)


def test_concurrent_ingests_all_land_and_each_snapshot_holds_its_batch(
    settings: Settings,
) -> None:
    store = Store.open(settings)
    ingest(store, features=[[0.0, 0.0]], labels=[0])  # fixes the schema

    def one(i: int) -> tuple[str, int]:
        rows = [[float(i), float(j)] for j in range(300)]  # above the inlining limit
        result = ingest(store, features=rows, labels=[i % 2] * 300, batch_id=f"b{i}")
        return result.batch_id, result.snapshot_id

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(16)))
    assert store.count_rows()["ingested_rows"] == 1 + 16 * 300
    for batch_id, snapshot in results:
        held = store.labeled_rows(snapshot).record_ids
        assert sum(r.startswith(f"{batch_id}:") for r in held) == 300
    # Every ingest after the first went through the group (16 batches; shared or not).
    assert store.ingest_group.items == 17
    assert store.ingest_group.commits <= 17

"""Reads from several threads of one read-write attachment never wait a whole second.

The SQLite in DuckDB's sqlite extension sleeps in whole seconds when it finds the catalog
busy (see `lake.SQLITE_BUSY_TIMEOUT_MS`); with a busy timeout of 1 s or more, 2-4 threads ×
20 reads met 1-3 reads of ≥1.0 s per run. The bound below sits under that one-second sleep,
not near a typical read (~10-30 ms), so a slow machine does not fail it; the stall does.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pipelines.ingestion import ingest
from pipelines.store import Store
from tests.conftest import make_settings

THREADS, READS, ROUNDS = 4, 20, 3
STALL_S = 0.95  # SQLite's busy sleep is 1.0 s; nothing else in a catalog read comes close


def test_threads_reading_a_read_write_lake_do_not_stall(tmp_path: Path) -> None:
    store = Store.open(make_settings(tmp_path / "data"))  # read-write, as the API's
    ingest(store, features=[[1.0, 2.0]] * 5, labels=[0] * 5, batch_id="b")
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def reads() -> None:
        mine = []
        try:
            for _ in range(READS):
                started = time.perf_counter()
                store.lake.scalar("SELECT count(*) FROM lake.ingested_rows")
                mine.append(time.perf_counter() - started)
        except BaseException as exc:
            errors.append(exc)
        with lock:
            latencies.extend(mine)

    try:
        for _ in range(ROUNDS):  # each round starts from no open catalog connection
            threads = [threading.Thread(target=reads) for _ in range(THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        store.close()
    assert not errors
    assert len(latencies) == THREADS * READS * ROUNDS
    slow = sorted(x for x in latencies if x >= STALL_S)
    assert not slow, f"{len(slow)} of {len(latencies)} reads stalled: {slow}"

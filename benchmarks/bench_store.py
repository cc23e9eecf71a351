"""Lake write costs, and catalog stalls in reads from several threads of one attachment.

Writes: the CPU of one ingest commit of 1, 300 and 10k rows (what a commit costs whatever its
rows: the reason for group commit, `pipelines/store/group.py`), of a 10k-row ingest with
DuckDB's default threads against one thread (`DRIFTLAB_API_DB_THREADS`), and 4 threads
ingesting 10k-row batches at once: commits made and CPU per batch.

Stalls:
    python -m benchmarks --only store [--quick]

The SQLite inside DuckDB's sqlite extension sleeps in whole seconds when it finds the catalog
busy (see `lake.SQLITE_BUSY_TIMEOUT_MS`). With the busy timeout under 1 s, `_retry` takes over
and such stalls are rare, not impossible: under load a WAL read retry can still sleep a whole
second. This counts the reads of ``STALL_S`` or more among 4 threads × 20 reads per round,
against the median read as the baseline. It measures, it does not gate: how often a stall
happens depends on the machine's load, not only on the code.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipelines.loop.ingestion import ingest
from pipelines.settings import Settings
from pipelines.store import Store

THREADS, READS, ROUNDS = 4, 20, 3
STALL_S = 0.95  # SQLite's busy sleep is 1.0 s; nothing else in a catalog read comes close


def measure(data_dir: Path, rounds: int) -> list[float]:
    """Read latencies of THREADS threads × READS reads × `rounds` on one attachment."""
    settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
    store = Store.open(settings)  # read-write, as the API's
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
        for _ in range(rounds):  # each round starts from no open catalog connection
            threads = [threading.Thread(target=reads) for _ in range(THREADS)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        store.close()
    if errors:
        raise errors[0]
    return latencies


def _cpu_ms(fn: Callable[[], object], reps: int) -> float:
    """Median process CPU ms of `fn` (all threads: DuckDB's included)."""
    times = []
    for _ in range(reps):
        started = time.process_time()
        fn()
        times.append((time.process_time() - started) * 1000)
    return statistics.median(times)


def measure_writes(data_dir: Path, reps: int) -> list[str]:
    out = []
    for threads in (None, 1):
        settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]
        store = Store.open(settings, threads=threads)
        try:
            out += _writes(store, threads, reps)
        finally:
            store.close()
    return out


def _writes(store: Store, threads: int | None, reps: int) -> list[str]:
    rows = [[float(i % 97), float(i % 13)] for i in range(10_000)]
    labels = [i % 2 for i in range(10_000)]

    def batch(n: int) -> None:
        ingest(store, features=rows[:n], labels=labels[:n])

    batch(5)  # fixes the schema on the first pass
    name = "DuckDB's default threads" if threads is None else "one DuckDB thread"
    costs = {n: _cpu_ms(lambda n=n: batch(n), reps) for n in (1, 300, 10_000)}
    out = [
        f"    ingest commit CPU, {name}: "
        + ", ".join(f"{n:,} rows {ms:.1f} ms" for n, ms in costs.items())
    ]
    if threads == 1:  # the API's setting: 4 threads ingesting at once share commits
        before = store.ingest_group.commits
        started = time.process_time()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(batch, [10_000] * 16))
        cpu = (time.process_time() - started) * 1000 / 16
        commits = store.ingest_group.commits - before
        out.append(
            f"    4 threads, 16 batches of 10,000 rows, one DuckDB thread: {commits} commits, "
            f"CPU {cpu:.1f} ms per batch"
        )
    return out


def main(quick: bool = False) -> None:
    rounds = ROUNDS if quick else 5 * ROUNDS
    with tempfile.TemporaryDirectory(prefix="driftlab-bench-store-") as tmp:
        writes = measure_writes(Path(tmp) / "writes", 3 if quick else 9)
        latencies = measure(Path(tmp) / "data", rounds)
    slow = sorted(x for x in latencies if x >= STALL_S)
    median = statistics.median(latencies)
    sys.stdout.write("\nlake writes (process CPU, median)\n" + "\n".join(writes) + "\n")
    sys.stdout.write(
        f"\n{THREADS} threads × {READS} reads × {rounds} rounds on one read-write attachment\n"
        f"    median read {median * 1000:.1f} ms, max {max(latencies) * 1000:.0f} ms\n"
        f"    reads of >= {STALL_S:.2f} s (SQLite's whole-second sleep): {len(slow)} of "
        f"{len(latencies)} ({len(slow) / len(latencies):.1%}); max / median "
        f"{max(latencies) / median:.0f}x\n"
    )


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

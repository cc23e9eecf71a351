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

PostgreSQL + S3 (the layout of `driftlab up --cluster N`: `pipelines/ops/cluster.py`, Debian's
PostgreSQL and moto's S3 server on free ports, stopped at the end whatever happens), against the
SQLite default in the same run; skipped with a message where PostgreSQL is not installed:

* Commit latency: wall time of one store ingest of 1, 300 and 10,000 rows on one DuckDB thread,
  SQLite and PG+S3 commits interleaved (the machine's speed swings hit both alike); median and
  p95, and the CPU per commit of this process, PostgreSQL and moto (where the time goes).
* Ingest through the HTTP API: `POST /ingest/batch` of 200 demo rows with labels from 4 client
  threads, for a fixed time, on 1 replica over SQLite (the baseline), 1 replica over PG+S3 and
  2 replicas over PG+S3 (the clients spread over both), in rounds that rotate the order; rows/s
  and the ratio to SQLite. Every server runs on this machine's cores, the clients too: 2
  replicas on 2 cores share them, so they can't be 2x one replica here.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import httpx
import orjson

from pipelines.loop.ingestion import ingest
from pipelines.settings import Settings
from pipelines.store import Store

if TYPE_CHECKING:
    from pipelines.ops.cluster import ClusterLayout
    from pipelines.ops.local_services import LocalPostgres, LocalS3

THREADS, READS, ROUNDS = 4, 20, 3
STALL_S = 0.95  # SQLite's busy sleep is 1.0 s; nothing else in a catalog read comes close
ROOT = Path(__file__).resolve().parent.parent
LATENCY_ROWS = (1, 300, 10_000)  # rows per commit of the latency lines
HTTP_CLIENTS, HTTP_BATCH_ROWS = 4, 200  # client threads, rows per /ingest/batch
HTTP_CONFIGS = ("1 replica, SQLite", "1 replica, PG+S3", "2 replicas, PG+S3")
SQLITE_HTTP = HTTP_CONFIGS[0]  # the baseline
JSON = {"content-type": "application/json"}


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
    costs = {n: _cpu_ms(functools.partial(batch, n), reps) for n in (1, 300, 10_000)}
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


# -- PostgreSQL + S3 against the SQLite default ----------------------------------------------


@dataclass(frozen=True)
class ClusterPlan:
    latency_reps: int  # timed commits per size and backend
    http_rounds: int  # rounds over the three HTTP configurations, in rotating order
    http_run_s: float  # each configuration's run in each round
    http_warmup_s: float  # each configuration, once before the first round

    @classmethod
    def of(cls, quick: bool) -> ClusterPlan:
        return cls(12, 1, 4.0, 1.0) if quick else cls(60, 3, 5.0, 2.0)


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread while this runs, so the
    `finally` blocks that stop the servers run on `kill` too, not only on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _stat_cpu(pid: int, *, reaped: bool = False) -> float:
    """CPU seconds (user + system) of `pid`; with `reaped`, also its waited-for children's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_cpu_s(pid: int | None, *, reaped: bool = False) -> float:
    """CPU seconds of `pid` and its live descendants (0 once it is gone). `reaped` adds what
    exited children used (PostgreSQL's postmaster reaps its backends)."""
    if pid is None:
        return 0.0
    try:
        own = _stat_cpu(pid, reaped=reaped)
    except (OSError, IndexError, ValueError):
        return 0.0
    return own + sum(tree_cpu_s(c) for c in _children(pid))


@dataclass
class Servers:
    """The processes whose CPU the PG+S3 lines split the time into."""

    pg: LocalPostgres
    s3: LocalS3
    apis: dict[str, int] = field(default_factory=dict)  # name → pid

    def cpu(self) -> dict[str, float]:
        out = {
            "machine": machine_busy_s(),
            "this process": time.process_time(),
            "PostgreSQL": tree_cpu_s(self.pg.pid, reaped=True),
            "moto (S3)": tree_cpu_s(self.s3.pid),
        }
        for name, pid in self.apis.items():
            out[name] = tree_cpu_s(pid)
        return out


def machine_busy_s() -> float:
    """CPU seconds every core of the machine has been busy (all processes: /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _fold_apis(cpu: dict[str, float], used: list[str]) -> dict[str, float]:
    """`api-*` entries summed into "API" (the replicas the run used) and "idle API"."""
    out = {k: v for k, v in cpu.items() if not k.startswith("api-")}
    out["API"] = sum(v for k, v in cpu.items() if k in used)
    out["idle API"] = sum(v for k, v in cpu.items() if k.startswith("api-") and k not in used)
    return out


def _delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after}


def p95(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=20, method="inclusive")[-1]


def commit_latency(
    layout: ClusterLayout, servers: Servers, tmp: Path, plan: ClusterPlan
) -> list[str]:
    """Wall ms of one store ingest on SQLite and on PG+S3, interleaved commit by commit."""
    servers.pg.create_database("bench_latency")  # a lake of its own: its schema is not the API's
    pg_settings = layout.settings(
        "latency",
        _env_file=None,
        catalog_uri=f"postgres:{servers.pg.conninfo('bench_latency')}",
        data_path="s3://driftlab/latency/",
    )
    sqlite_settings = Settings(data_dir=tmp / "latency-sqlite", _env_file=None)  # type: ignore[call-arg]
    rows = [[float(i % 97), float(i % 13)] for i in range(10_000)]
    labels = [i % 2 for i in range(10_000)]
    stores: dict[str, Store] = {}
    try:
        stores["SQLite"] = Store.open(sqlite_settings, threads=1)
        stores["PG+S3"] = Store.open(pg_settings, threads=1)
        wall: dict[tuple[str, int], list[float]] = {}
        cpu: dict[tuple[str, int], list[float]] = {}
        servers_cpu: dict[int, dict[str, float]] = {}
        for store in stores.values():
            ingest(store, features=rows[:5], labels=labels[:5])  # fixes the schema
        for n in LATENCY_ROWS:
            for store in stores.values():  # untimed: the first commits of a size warm caches
                for _ in range(2):
                    ingest(store, features=rows[:n], labels=labels[:n])
            before = servers.cpu()
            for rep in range(plan.latency_reps):
                order = list(stores) if rep % 2 == 0 else list(reversed(stores))
                for name in order:
                    started, cpu_started = time.perf_counter(), time.process_time()
                    ingest(stores[name], features=rows[:n], labels=labels[:n])
                    wall.setdefault((name, n), []).append(time.perf_counter() - started)
                    cpu.setdefault((name, n), []).append(time.process_time() - cpu_started)
            servers_cpu[n] = _delta(servers.cpu(), before)
    finally:
        for store in stores.values():
            store.close()

    def ms(xs: list[float]) -> str:
        return f"{statistics.median(xs) * 1000:5.1f} / {p95(xs) * 1000:5.1f}"

    out = [
        f"    {'rows':>7}  {'SQLite':>13}  {'PG+S3':>13}  {'PG+S3 / SQLite':>15}"
        "   CPU ms per commit: SQLite; PG+S3 = this process + PostgreSQL + moto"
    ]
    for n in LATENCY_ROWS:
        lite, pg = wall[("SQLite", n)], wall[("PG+S3", n)]
        med = statistics.median(pg) / statistics.median(lite)
        tail = p95(pg) / p95(lite)
        reps = len(pg)
        spent = servers_cpu[n]
        out.append(
            f"    {n:>7,}  {ms(lite):>13}  {ms(pg):>13}  {med:6.2f}x /{tail:5.2f}x"
            f"   {statistics.median(cpu[('SQLite', n)]) * 1000:5.1f}; "
            f"{statistics.median(cpu[('PG+S3', n)]) * 1000:5.1f} + "
            f"{spent['PostgreSQL'] / reps * 1000:4.1f} + {spent['moto (S3)'] / reps * 1000:4.1f}"
        )
    return out


@dataclass
class HttpRun:
    rows: int = 0
    requests: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    commits: int = 0  # lake commits the replicas made (group commit shares them)
    latencies: list[float] = field(default_factory=list)  # s, of each answered batch
    rates: list[float] = field(default_factory=list)  # rows/s of each round

    def add(self, other: HttpRun) -> None:
        self.rows += other.rows
        self.requests += other.requests
        self.seconds += other.seconds
        self.errors += other.errors
        self.commits += other.commits
        self.latencies += other.latencies
        for k, v in other.cpu.items():
            self.cpu[k] = self.cpu.get(k, 0.0) + v
        self.rates.append(other.rows / other.seconds if other.seconds else 0.0)


def ingest_bodies() -> list[bytes]:
    """`/ingest/batch` bodies of HTTP_BATCH_ROWS survey demo rows with labels."""
    from pipelines.demo.datasets import LABEL, demo_split, records

    split = demo_split(name="survey")
    recs = records(split.live) + records(split.shifted)
    labels = split.live[LABEL].astype(int).tolist() + split.shifted[LABEL].astype(int).tolist()
    return [
        orjson.dumps(
            {"records": recs[i : i + HTTP_BATCH_ROWS], "labels": labels[i : i + HTTP_BATCH_ROWS]}
        )
        for i in range(0, len(recs) - HTTP_BATCH_ROWS + 1, HTTP_BATCH_ROWS)
    ]


def commits_of(urls: list[str]) -> int:
    total = 0
    for url in urls:
        total += int(httpx.get(f"{url}/health", timeout=30).json()["ingest_commits"]["commits"])
    return total


def drive(urls: list[str], bodies: list[bytes], seconds: float) -> HttpRun:
    """HTTP_CLIENTS threads posting batches for `seconds`, thread i to urls[i % len(urls)]."""
    deadline = time.monotonic() + seconds
    run = HttpRun()
    lock = threading.Lock()

    def client(i: int) -> None:
        done = errors = 0
        first_error = ""
        took = []
        with httpx.Client(base_url=urls[i % len(urls)], timeout=120, headers=JSON) as http:
            k = i
            while time.monotonic() < deadline:
                try:
                    started = time.perf_counter()
                    r = http.post("/ingest/batch", content=bodies[k % len(bodies)])
                    took.append(time.perf_counter() - started)
                    ok, why = r.status_code == 200, f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as exc:
                    ok, why = False, repr(exc)
                k += HTTP_CLIENTS
                if ok:
                    done += 1
                else:
                    errors += 1
                    first_error = first_error or why
                    time.sleep(0.1)
        with lock:
            run.requests += done
            run.rows += done * HTTP_BATCH_ROWS
            run.errors += [first_error] * errors
            run.latencies += took

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(HTTP_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run.seconds = time.perf_counter() - started
    return run


@contextlib.contextmanager
def api_server(name: str, env: dict[str, str], port: int, log: Path) -> Iterator[tuple[str, int]]:
    """`driftlab api` on `port`, in a session of its own; (url, pid) once /health answers
    with the store reachable; stopped (SIGTERM, then SIGKILL) on the way out."""
    url = f"http://127.0.0.1:{port}"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLAB_")}
    full_env.update(env, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "pipelines.cli", "api", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = httpx.get(f"{url}/health", timeout=2)
                if r.status_code == 200 and r.json()["store"]["status"] == "ok":
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not up after 120 s:\n{_tail(log)}")
            time.sleep(0.25)
        yield url, proc.pid
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the group is just this server
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _tail(log: Path, n: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def http_ingest(
    layout: ClusterLayout, servers: Servers, tmp: Path, plan: ClusterPlan
) -> tuple[dict[str, HttpRun], dict[str, int]]:
    """Rows/s of the three configurations, and the rows each lake holds afterwards."""
    from pipelines.ops.local_services import free_port

    bodies = ingest_bodies()
    sqlite_env = {"DRIFTLAB_DATA_DIR": str(tmp / "api-sqlite")}
    replicas = layout.api_ports()  # api-1, api-2
    results = {config: HttpRun() for config in HTTP_CONFIGS}
    with contextlib.ExitStack() as stack:
        url: dict[str, str] = {}
        for name, env, port in [
            ("api-sqlite", sqlite_env, free_port()),
            *[(n, layout.node_env(n), p) for n, p in replicas.items()],
        ]:
            url[name], pid = stack.enter_context(api_server(name, env, port, tmp / f"{name}.log"))
            servers.apis[name] = pid
        names = {
            HTTP_CONFIGS[0]: ["api-sqlite"],
            HTTP_CONFIGS[1]: ["api-1"],
            HTTP_CONFIGS[2]: ["api-1", "api-2"],
        }
        urls = {config: [url[n] for n in used] for config, used in names.items()}
        posted = {"SQLite": 0, "PG+S3": 0}

        def count(config: str, run: HttpRun) -> None:
            posted["SQLite" if config == SQLITE_HTTP else "PG+S3"] += run.rows

        for name in url:  # the first batch fixes the schema: one at a time
            r = httpx.post(
                f"{url[name]}/ingest/batch", content=bodies[0], headers=JSON, timeout=120
            )
            r.raise_for_status()
            posted["SQLite" if name == "api-sqlite" else "PG+S3"] += HTTP_BATCH_ROWS
        for config in HTTP_CONFIGS:
            count(config, drive(urls[config], bodies, plan.http_warmup_s))
        for rnd in range(plan.http_rounds):
            k = rnd % len(HTTP_CONFIGS)
            for config in HTTP_CONFIGS[k:] + HTTP_CONFIGS[:k]:
                commits_before = commits_of(urls[config])
                before = servers.cpu()
                run = drive(urls[config], bodies, plan.http_run_s)
                run.cpu = _fold_apis(_delta(servers.cpu(), before), names[config])
                run.commits = commits_of(urls[config]) - commits_before
                results[config].add(run)
                count(config, run)
                sys.stdout.write(
                    f"    round {rnd + 1}, {config}: {run.rows / run.seconds:,.0f} rows/s\n"
                )
                sys.stdout.flush()
    servers.apis.clear()
    held = {}
    for lake, settings in [
        ("SQLite", Settings(data_dir=tmp / "api-sqlite", _env_file=None)),  # type: ignore[call-arg]
        ("PG+S3", layout.settings("count", _env_file=None)),
    ]:
        store = Store.open(settings, read_only=True)
        try:
            held[lake] = int(store.lake.scalar("SELECT count(*) FROM lake.ingested_rows"))
        finally:
            store.close()
    return results, {lake: held[lake] - posted[lake] for lake in held}


def http_lines(results: dict[str, HttpRun]) -> list[str]:
    base = results[SQLITE_HTTP]
    base_rate = base.rows / base.seconds
    out = []
    for config, run in results.items():
        rate = run.rows / run.seconds
        ratio = "(baseline)" if config == SQLITE_HTTP else f"{rate / base_rate:5.2f}x"
        rounds = ""
        if config != SQLITE_HTTP and len(run.rates) > 1:
            each = [r / b for r, b in zip(run.rates, base.rates, strict=True)]
            rounds = "  each round: " + " ".join(f"{x:.2f}x" for x in each)
        out.append(
            f"    {config:<18} {rate:8,.0f} rows/s {ratio:>10}  "
            f"(p50 {statistics.median(run.latencies) * 1000:.0f} ms, "
            f"p95 {p95(run.latencies) * 1000:.0f} ms; {run.requests:,} batches in "
            f"{run.commits:,} lake commits){rounds}"
        )
    out.append("    CPU ms per 1,000 rows (the whole machine: busy, of what its cores had):")
    for config, run in results.items():
        per = {k: v * 1000 / (run.rows / 1000) for k, v in run.cpu.items() if run.rows}
        had = (os.cpu_count() or 1) * run.seconds * 1000 / (run.rows / 1000)
        out.append(
            f"    {config:<18} API {per.get('API', 0):5.1f}, "
            f"PostgreSQL {per.get('PostgreSQL', 0):4.1f}, "
            f"moto {per.get('moto (S3)', 0):4.1f}, clients {per.get('this process', 0):4.1f}, "
            f"idle API processes {per.get('idle API', 0):4.1f} "
            f"(machine: {per.get('machine', 0):5.1f} of {had:5.1f})"
        )
    errors = [e for run in results.values() for e in run.errors]
    if errors:
        out.append(f"    FAILED requests: {len(errors)}, the first: {errors[0]}")
    return out


def cluster_main(quick: bool) -> None:
    """The PG+S3 lines: skipped, with a message, where PostgreSQL is not installed."""
    from pipelines.ops.cluster import BUCKET, LAKE_DB, MLFLOW_DB, ClusterLayout
    from pipelines.ops.local_services import postgres_bin

    try:
        for program in ("initdb", "pg_ctl"):
            postgres_bin(program)
    except RuntimeError as exc:
        sys.stdout.write(f"\nPostgreSQL + S3: skipped, {exc}\n")
        return
    plan = ClusterPlan.of(quick)
    with (
        terminate_as_interrupt(),
        tempfile.TemporaryDirectory(prefix="driftlab-bench-cluster-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        layout = ClusterLayout.on_free_ports(tmp / "cluster")
        with contextlib.ExitStack() as stack:
            # `layout.start_services()`, with each server's stop registered before its start
            pg, s3 = layout.postgres, layout.object_store
            stack.callback(pg.stop)
            pg.start()
            for db in (LAKE_DB, MLFLOW_DB):
                pg.create_database(db)
            stack.callback(s3.stop)
            s3.start()
            s3.create_bucket(BUCKET)
            servers = Servers(pg, s3)
            sys.stdout.write(
                f"\nPostgreSQL {pg.port} + moto's S3 {s3.port} (both on this machine) against "
                f"the SQLite default\ncommit latency: one store ingest, one DuckDB thread, "
                f"{plan.latency_reps} commits per line and backend, interleaved; wall ms, "
                f"median / p95\n"
            )
            sys.stdout.flush()
            sys.stdout.write("\n".join(commit_latency(layout, servers, tmp, plan)) + "\n")
            sys.stdout.write(
                f"\nPOST /ingest/batch, {HTTP_CLIENTS} client threads, {HTTP_BATCH_ROWS} rows "
                f"with labels per batch, {plan.http_rounds} round(s) of {plan.http_run_s:.0f} s "
                f"per line (order rotated), after a {plan.http_warmup_s:.0f}-s warm-up; "
                f"servers, clients, PostgreSQL and moto share this machine's "
                f"{os.cpu_count()} cores, so 2 replicas can't be 2x 1 replica here\n"
            )
            sys.stdout.flush()
            results, missing = http_ingest(layout, servers, tmp, plan)
            sys.stdout.write("\n".join(http_lines(results)) + "\n")
            for lake, extra in missing.items():
                if extra:
                    sys.stdout.write(
                        f"    LAKE MISMATCH: {lake} holds {extra:+,} rows against the answers\n"
                    )
            sys.stdout.write(
                "    the lakes hold exactly the rows the clients were answered for: "
                + ("yes" if not any(missing.values()) else "NO")
                + "\n"
            )


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
    sys.stdout.flush()
    cluster_main(quick)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)

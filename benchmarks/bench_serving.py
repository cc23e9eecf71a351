"""Serving speed: driftlab's `/predict` against a trivial endpoint (the ceiling) and a naive
scikit-learn server (the baseline), all on 127.0.0.1 in one run, plus batch throughput.

    python -m benchmarks --only serving [--quick]

Each server is a subprocess with its own environment, started, waited for (/health) and killed in
turn, so only one serves at a time; `wrk` (-t2 -c32, after a short warm-up) measures requests/s and
latency percentiles with single-row bodies cycling over real demo rows, in three 6-s runs whose
median is the line's figure (each run's p99 is printed too: on a shared machine one run's
p99 can be several times the next one's). driftlab runs as
`driftlab api` on a fresh data dir where `driftlab train` trained and promoted the demo forest, with
prediction logging on. Batch figures come from httpx clients: one alone, then four at once,
with the server's CPU time per batch; first on that server (one API process, the default), then
on one started with DRIFTLAB_API_WORKERS = the machine's cores. The trained champion's
runtimes are also timed alone on one 10k-row batch (scikit-learn, ONNX Runtime, the compiled
forest).

Shadow rollout: a second version trained like the champion (another seed, not promoted) runs as a
100% shadow (`POST /api/models/shadow`) on the same server, in wrk runs that alternate with runs
without a rollout (none/shadow, shadow/none, ...: the machine's speed swings hit both alike); the
line is the median of each pair's ratio. /health is sampled during each run (the prediction
log's and the shadow log's pending rows) and after it (how long both take to drain), and the
shadow's answers are counted (/health, then `lake.shadow_predictions`).

Targets: driftlab >= 25x the naive server and >= 50% of the ceiling in requests/s, p99 <= 20 ms
at 32 connections; batch /predict and /ingest/batch >= 200k rows/s; with a 100% shadow,
requests/s >= 60% and p99 <= 1.5x of the same server without one, and no growing log backlog.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

if TYPE_CHECKING:
    from pipelines.schema import FeatureSchema

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS, THREADS = 32, 2
BATCH_ROWS = 10_000
BATCH_CLIENTS = (1, 4)  # connections sending batches at once
BATCH_PATHS = {"d": "/predict", "d2": "/predict", "e": "/ingest/batch"}  # the batch lines
CORES = os.cpu_count() or 1
BATCH_WORKERS = (1, CORES) if CORES > 1 else (1,)
"""API processes (DRIFTLAB_API_WORKERS) the batch lines are measured with: the default one, and
one per core (one process's batches share one GIL: its parsing and validation are serial)."""
SERVING_DEMO = "survey"
TARGET_VS_NAIVE, TARGET_VS_CEILING, TARGET_P99_MS, TARGET_ROWS_S = 25.0, 0.5, 20.0, 200_000
TARGET_SHADOW_RPS, TARGET_SHADOW_P99 = 0.60, 1.5  # with a 100% shadow / without a rollout
SHADOW_WARMUP_S = 1  # wrk after each switch (a rollout's first calls), unmeasured
HEALTH_EVERY_S = 0.37  # /health samples during a shadow-section run
BACKLOG_MAX_S = 2.0  # most pending log rows, in seconds of requests (4 flushes of 0.5 s)


@dataclass(frozen=True)
class Plan:
    duration_s: int  # each measured wrk run
    warmup_s: int
    batch_reps: int
    wrk_runs: int  # measured wrk runs per line; their median is the line's figure
    shadow_pairs: int  # (no rollout, 100% shadow) pairs of wrk runs, in alternating order

    @classmethod
    def of(cls, quick: bool) -> Plan:
        return cls(3, 1, 3, 1, 1) if quick else cls(6, 2, 7, 3, 4)


@dataclass(frozen=True)
class WrkResult:
    requests_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers + socket errors


# -- servers ---------------------------------------------------------------------------------


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(
            "bench_serving needs wrk (the HTTP load generator): `apt-get install -y wrk`, "
            "or run `make bench`, which installs it"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLAB_")}
    env.update(
        DRIFTLAB_DATA_DIR=str(data_dir),
        DRIFTLAB_API_PORT=str(port),
        # The survey demo (8 features, 2 of them categorical): the figures that
        # benchmarks/README.md records are the survey's.
        DRIFTLAB_DEMO=SERVING_DEMO,
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        PYTHONPATH=str(ROOT),
    )
    return env


def uvicorn_cmd(factory: str, port: int) -> list[str]:
    """The reference apps run under the same server settings as `driftlab api`."""
    return [
        sys.executable, "-m", "uvicorn", factory, "--factory",
        "--host", "127.0.0.1", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools",
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


@dataclass(frozen=True)
class Served:
    url: str
    pid: int


@contextmanager
def server(
    name: str, cmd: list[str], env: dict[str, str], port: int, log: Path
) -> Iterator[Served]:
    """Start a server, wait until /health answers 200 with a model (if it serves one), and kill
    it (and anything it started) on the way out, whatever happened."""
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; log:\n{_tail(log)}")
            try:
                r = httpx.get(f"{url}/health", timeout=2)
                if r.status_code == 200 and r.json().get("status") == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not healthy after 120 s; log:\n{_tail(log)}")
            time.sleep(0.25)
        yield Served(url, proc.pid)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the group is just this server
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process and its live children (uvicorn's
    worker processes) have used so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        children = [
            int(c)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()
        ]
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(c) or 0.0 for c in children)


def _tail(log: Path, n: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def model_call_ms(
    data_dir: Path, rows: list[dict[str, Any]], reps: int
) -> tuple[dict[str, float], FeatureSchema]:
    """Median ms of one call on `rows` by each runtime of the champion in `data_dir`, each on one
    thread: what the serving model costs apart from HTTP, validation and logging; and the
    champion's feature schema."""
    from pipelines.models.registry import CHAMPION, FOREST_FILE, Registry
    from pipelines.schema import FeatureSchema
    from pipelines.serving.forest import CompiledForest
    from pipelines.serving.model import onnx_session
    from pipelines.settings import Settings

    registry = Registry.from_settings(Settings(data_dir=data_dir))
    version = registry.alias_version(CHAMPION)
    if version is None:
        raise RuntimeError(f"no champion in {data_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = registry.serving_files(version, Path(tmp))
        schema = FeatureSchema.from_dict(json.loads((folder / "schema.json").read_text()))
        forest = CompiledForest.load(folder / FOREST_FILE)
        session = onnx_session((folder / "model.onnx").read_bytes())
    estimator = registry.load_estimator(version)
    x = schema.encode(schema.columns(records=rows))
    inp, out = session.get_inputs()[0].name, session.get_outputs()[1].name
    runs = {
        "scikit-learn": lambda: estimator.predict_proba(x),
        "ONNX Runtime": lambda: session.run([out], {inp: x}),
        "compiled forest": lambda: forest.predict_proba(x),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(reps + 1):  # alternated, the first round unmeasured
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(t[1:]) for name, t in times.items()}, schema


def reading_ms(schema: FeatureSchema, bodies: dict[str, bytes], reps: int) -> dict[str, tuple]:
    """Per batch body, median ms to turn it into validated columns, in this process: orjson +
    `FeatureSchema.columns` (the ordinary path) against `pipelines.serving.bulkjson.read_bulk`."""
    from pipelines.serving.bulkjson import read_bulk, warm_up

    warm_up()
    out = {}
    for key, body in bodies.items():
        times: dict[str, list[float]] = {"orjson": [], "bulk": []}
        for _ in range(reps + 1):  # alternated, the first round unmeasured
            started = time.perf_counter()
            payload = orjson.loads(body)
            schema.columns(payload.get("features"), payload.get("records"))
            times["orjson"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            if read_bulk(body, schema, ["labels"]) is None:
                raise RuntimeError(f"the bulk reader handed the {key!r} batch body on")
            times["bulk"].append((time.perf_counter() - started) * 1000)
        out[key] = (statistics.median(times["orjson"][1:]), statistics.median(times["bulk"][1:]))
    return out


def train(data_dir: Path, log: Path, *args: str) -> None:
    """`driftlab train` on an empty store: seeds the demo data, trains and promotes the forest
    (`args`: more of its options, e.g. `--no-promote` for a second version)."""
    cmd = [sys.executable, "-m", "pipelines.cli", "train", *args]
    with open(log, "wb") as out:
        done = subprocess.run(
            cmd, cwd=ROOT, env=base_env(data_dir, 0), stdout=out, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        raise RuntimeError(f"driftlab train failed; log:\n{_tail(log)}")


# -- load generation -------------------------------------------------------------------------


_LUA = """
local bodies = {%s}
local reqs = {}
local i = 0
function init(args)
  local headers = {["Content-Type"] = "application/json"}
  for k, b in ipairs(bodies) do reqs[k] = wrk.format("POST", "%s", headers, b) end
end
function request()
  i = i %% #reqs + 1
  return reqs[i]
end
"""


def wrk_script(bodies: list[bytes], path: str, dest: Path) -> Path:
    """A Lua script that cycles over prebuilt requests (building them costs wrk nothing)."""
    literals = ",\n".join(f"[==[{b.decode()}]==]" for b in bodies)
    dest.write_text(_LUA % (literals, path))
    return dest


def wrk_cmd(url: str, script: Path, duration_s: int) -> list[str]:
    return [
        "wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration_s}s", "--timeout", "10s",
        "--latency", "-s", str(script), url,
    ]  # fmt: skip


def wrk(url: str, script: Path, duration_s: int) -> WrkResult:
    out = subprocess.run(
        wrk_cmd(url, script, duration_s), capture_output=True, text=True, check=True
    ).stdout
    return parse_wrk(out)


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(out: str) -> WrkResult:
    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        if m is None:
            raise RuntimeError(f"no {pct}% latency in wrk's output:\n{out}")
        return float(m.group(1)) * _UNITS_MS[m.group(2)]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(int(g) for g in sock.groups()) if sock else 0
    return WrkResult(float(rps.group(1)), latency("50"), latency("99"), int(total.group(1)), errors)


def measure(url: str, script: Path, plan: Plan) -> list[WrkResult]:
    """A warm-up run, then `plan.wrk_runs` measured runs."""
    wrk(url, script, plan.warmup_s)
    return [wrk(url, script, plan.duration_s) for _ in range(plan.wrk_runs)]


def median_run(runs: list[WrkResult]) -> WrkResult:
    """Each figure's median over the runs (a slow stretch of the machine then moves one
    run, not the line); requests and errors are summed."""
    return WrkResult(
        statistics.median(r.requests_s for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        sum(r.requests for r in runs),
        sum(r.errors for r in runs),
    )


def rows_per_s(url: str, body: bytes, rows: int, reps: int, clients: int = 1) -> list[float]:
    """Rows/s of `reps` rounds (after one unmeasured round): in a round, each of `clients`
    connections sends one batch at the same time, and the round's figure is all its rows over
    its wall time. One client measures a lone bulk loader; several, the server's throughput
    (its parsing and validation hold the GIL while another request's lake write or model call
    runs without it)."""
    headers = {"Content-Type": "application/json"}
    conns = [httpx.Client(timeout=60) for _ in range(clients)]

    def post(client: httpx.Client) -> None:
        r = client.post(url, content=body, headers=headers)
        if r.status_code != 200:
            raise RuntimeError(f"POST {url} answered {r.status_code}: {r.text[:500]}")

    speeds = []
    try:
        with ThreadPoolExecutor(clients) as pool:
            for rep in range(reps + 1):
                started = time.perf_counter()
                list(pool.map(post, conns))
                elapsed = time.perf_counter() - started
                if rep:
                    speeds.append(rows * clients / elapsed)
    finally:
        for client in conns:
            client.close()
    return speeds


# -- the run ---------------------------------------------------------------------------------


def demo_rows() -> tuple[list[dict[str, Any]], list[int]]:
    from pipelines.demo.datasets import LABEL, demo_split, records

    live = demo_split(name=SERVING_DEMO).live
    return records(live), live[LABEL].astype(int).tolist()


def tiled(items: list[Any], n: int) -> list[Any]:
    return (items * (n // len(items) + 1))[:n]


def main(quick: bool = False) -> None:
    require_wrk()
    plan = Plan.of(quick)
    recs, labels = demo_rows()
    names = list(recs[0])
    single_features = [orjson.dumps({"features": [[r[k] for k in names]]}) for r in recs[:200]]
    single_records = [orjson.dumps({"records": [r]}) for r in recs[:200]]
    batch_recs = tiled(recs, BATCH_ROWS)
    batch_features = orjson.dumps({"features": [[r[k] for k in names] for r in batch_recs]})
    batch_records = orjson.dumps({"records": batch_recs})
    ingest_body = orjson.dumps({"records": batch_recs, "labels": tiled(labels, BATCH_ROWS)})

    results: dict[str, list[WrkResult]] = {}
    batch: dict[str, list[float] | str] = {}  # rows/s per request, or what went wrong
    cpu_ms: dict[str, float] = {}  # the server's CPU ms per batch
    health: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="driftlab-bench-") as tmp:
        root = Path(tmp)
        features_lua = wrk_script(single_features, "/predict", root / "features.lua")
        records_lua = wrk_script(single_records, "/predict", root / "records.lua")
        dirs = {k: root / k for k in ("ceiling", "driftlab")}
        for d in dirs.values():
            d.mkdir()

        say(f"training the demo forest (driftlab train) in {dirs['driftlab']} …")
        train(dirs["driftlab"], root / "train.log")
        say("training a second version (another seed, not promoted) for the shadow …")
        train(dirs["driftlab"], root / "train2.log", "--no-promote", "--random-state", "7")
        shadow_version = newest_version(dirs["driftlab"])
        calls, schema = model_call_ms(dirs["driftlab"], batch_recs, plan.batch_reps)

        port = free_port()
        cmd = uvicorn_cmd("benchmarks._serving_apps:ceiling_app", port)
        with server("ceiling", cmd, base_env(dirs["ceiling"], port), port, root / "a.log") as s:
            say("(a) ceiling …")
            results["a"] = measure(f"{s.url}/predict", features_lua, plan)

        # The naive server reads the same champion from driftlab's registry, and writes nothing.
        port = free_port()
        cmd = uvicorn_cmd("benchmarks._serving_apps:naive_app", port)
        with server("naive", cmd, base_env(dirs["driftlab"], port), port, root / "b.log") as s:
            say("(b) naive …")
            results["b"] = measure(f"{s.url}/predict", features_lua, plan)

        bodies = {"d": batch_features, "d2": batch_records, "e": ingest_body}
        reads = reading_ms(schema, bodies, plan.batch_reps)
        port = free_port()
        with server(
            "driftlab", cmd_api(port), base_env(dirs["driftlab"], port), port, root / "c.log"
        ) as s:
            url = s.url
            say("(c) driftlab /predict …")
            results["c"] = measure(f"{url}/predict", features_lua, plan)
            results["c2"] = measure(f"{url}/predict", records_lua, plan)
            say(f"(s) /predict without a rollout and with a 100% shadow of v{shadow_version} …")
            shadow = measure_shadow(url, features_lua, plan, shadow_version)
            say("(d) batch /predict, (e) /ingest/batch …")
            measure_batches(s, bodies, plan, 1, batch, cpu_ms)
            time.sleep(1.5)  # let the prediction log flush, to report it
            health = httpx.get(f"{url}/health", timeout=10).json()
        for workers in BATCH_WORKERS[1:]:
            port = free_port()
            env = base_env(dirs["driftlab"], port) | {"DRIFTLAB_API_WORKERS": str(workers)}
            with server("driftlab", cmd_api(port), env, port, root / f"w{workers}.log") as s:
                say(f"(d), (e) again with {workers} API processes …")
                for key, body in bodies.items():  # each process's first batches: warm-up
                    rows_per_s(f"{s.url}{BATCH_PATHS[key]}", body, BATCH_ROWS, 1, 2 * workers)
                measure_batches(s, bodies, plan, workers, batch, cpu_ms)
        shadow.lake_rows = lake_shadow_rows(dirs["driftlab"])

    report(results, batch, cpu_ms, calls, reads, health, plan, shadow)


# -- the shadow rollout ----------------------------------------------------------------------


@dataclass
class ShadowRun:
    """One measured wrk run of the shadow section, and the logs around it."""

    shadow: bool  # a 100% shadow ran beside the champion
    wrk: WrkResult
    pending: list[tuple[int, int]]  # /health during the run: (prediction log, shadow log) rows
    drain_s: float | None  # after the run, until both logs had no pending rows (None: not)
    logged: int  # rows the prediction log flushed to the lake, run to drained
    shadow_answered: int  # rows the shadow answered, run to drained
    shadow_flushed: int  # and flushed to lake.shadow_predictions


@dataclass
class ShadowSection:
    version: str
    runs: list[ShadowRun]
    lake_rows: int | None = None  # lake.shadow_predictions after the server stopped

    def pairs(self) -> list[tuple[ShadowRun, ShadowRun]]:
        """(no rollout, shadow) per pair of neighbouring runs."""
        out = []
        for first, second in zip(self.runs[::2], self.runs[1::2], strict=True):
            none, shadow = (second, first) if first.shadow else (first, second)
            out.append((none, shadow))
        return out


def newest_version(data_dir: Path) -> str:
    """The newest registered version of the tabular model in `data_dir`."""
    from pipelines.models.registry import Registry
    from pipelines.settings import Settings

    registry = Registry.from_settings(Settings(data_dir=data_dir))
    return max((v.version for v in registry.versions()), key=int)


def lake_shadow_rows(data_dir: Path) -> int | None:
    """Rows in `lake.shadow_predictions` (None if the lake could not be read)."""
    from pipelines.settings import Settings
    from pipelines.store import Store

    try:
        store = Store.open(Settings(data_dir=data_dir), read_only=True)
        try:
            return store.count_rows()["shadow_predictions"]
        finally:
            store.close()
    except Exception as exc:  # report the rest
        say(f"could not count lake.shadow_predictions: {exc}")
        return None


def log_state(url: str) -> dict[str, int]:
    """The prediction log's and the shadow log's counters, from /health."""
    health = httpx.get(f"{url}/health", timeout=10).json()
    log = health["prediction_log"]
    shadow = (health.get("rollout") or {}).get("shadow_log") or {}
    return {
        "pending": log["pending_rows"],
        "flushed": log["flushed_rows"],
        "shadow_pending": shadow.get("pending_rows", 0),
        "shadow_flushed": shadow.get("flushed_rows", 0),
        "shadow_answered": shadow.get("answered_rows", 0),
        "shadow_failed": shadow.get("failed_calls", 0),
    }


def wait_drained(url: str, timeout_s: float = 30.0) -> tuple[float | None, dict[str, int]]:
    """Seconds until neither log holds rows the lake lacks (None if not within `timeout_s`),
    and the counters then."""
    started = time.monotonic()
    while True:
        state = log_state(url)
        took = time.monotonic() - started
        if state["pending"] == 0 and state["shadow_pending"] == 0:
            return took, state
        if took > timeout_s:
            return None, state
        time.sleep(0.05)


def set_shadow(url: str, version: str | None) -> None:
    """Start a 100% shadow of `version` (None: stop the running rollout); the API applies it in
    its own process before answering."""
    if version is None:
        r = httpx.post(
            f"{url}/api/models/rollout/stop",
            json={"who": "bench_serving", "why": "the next run has no rollout"},
            timeout=60,
        )
    else:
        body = {"version": version, "share": 1.0, "who": "bench_serving", "why": "bench_serving"}
        r = httpx.post(f"{url}/api/models/shadow", json=body, timeout=60)
    if r.status_code != 200:
        raise RuntimeError(f"rollout move answered {r.status_code}: {r.text[:500]}")


def measure_shadow(url: str, script: Path, plan: Plan, version: str) -> ShadowSection:
    """`plan.shadow_pairs` pairs of wrk runs, one without a rollout and one with a 100% shadow,
    the order alternating from pair to pair; each run after a switch and a warm-up, with the
    logs drained before it, /health sampled during it and the drain timed after it."""
    runs = []
    running = False
    order = [pair % 2 == 1 for pair in range(plan.shadow_pairs)]  # does the pair start shadowed
    for first_shadowed in order:
        for shadowed in (first_shadowed, not first_shadowed):
            if shadowed != running:
                set_shadow(url, version if shadowed else None)
                running = shadowed
            wrk(url + "/predict", script, SHADOW_WARMUP_S)
            _, before = wait_drained(url)
            proc = subprocess.Popen(
                wrk_cmd(url + "/predict", script, plan.duration_s),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            pending = []
            while proc.poll() is None:
                time.sleep(HEALTH_EVERY_S)
                if proc.poll() is None:
                    state = log_state(url)
                    pending.append((state["pending"], state["shadow_pending"]))
            out, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"wrk failed ({proc.returncode}): {err[-500:]}")
            drain_s, after = wait_drained(url)
            runs.append(
                ShadowRun(
                    shadowed,
                    parse_wrk(out),
                    pending,
                    drain_s,
                    after["flushed"] - before["flushed"],
                    after["shadow_answered"] - before["shadow_answered"] if shadowed else 0,
                    after["shadow_flushed"] - before["shadow_flushed"] if shadowed else 0,
                )
            )
    if running:
        set_shadow(url, None)
    return ShadowSection(version, runs)


def peaks(run: ShadowRun, log: int) -> tuple[int, int]:
    """The most pending rows of a log (0: predictions, 1: the shadow's) /health showed in the
    first and in the second half of a run."""
    half = len(run.pending) // 2
    first = max((p[log] for p in run.pending[:half]), default=0)
    return first, max((p[log] for p in run.pending[half:]), default=0)


def backlog_s(run: ShadowRun) -> float:
    """A run's most pending rows in either log, in seconds of the run's requests."""
    most = max((max(p) for p in run.pending), default=0)
    return most / max(run.wrk.requests_s, 1.0)


def backlog_grew(run: ShadowRun) -> bool:
    """Whether a log fell behind during a run. One that keeps up is a sawtooth of about a flush
    interval of requests (0.5 s, plus its commit); it grew if either log's peak in the run's
    second half went 1 s of requests over its first half's, if a peak passed
    `BACKLOG_MAX_S` of requests, or if the logs took over 5 s to drain after the run."""
    for log in (0, 1):
        first, second = peaks(run, log)
        if second > first + run.wrk.requests_s * 1.0:
            return True
    return backlog_s(run) > BACKLOG_MAX_S or run.drain_s is None or run.drain_s > 5.0


def shadow_lines(section: ShadowSection, duration_s: int) -> list[str]:
    pairs = section.pairs()
    rps = [s.wrk.requests_s / n.wrk.requests_s for n, s in pairs]
    p99 = [s.wrk.p99_ms / n.wrk.p99_ms for n, s in pairs]
    rps_ratio, p99_ratio = statistics.median(rps), statistics.median(p99)
    lines = [
        "",
        f"shadow rollout on the same server: {len(pairs)} pair{'s' if len(pairs) > 1 else ''} "
        f"of {duration_s}-s wrk runs (features), one without a rollout and one with a 100% "
        f"shadow of v{section.version} (trained like the champion, another seed), the order "
        f"alternating; /health sampled every ~{HEALTH_EVERY_S:g} s during a run: the most "
        "pending rows in its first half -> its second half, of the prediction log and of the "
        "shadow log; then the time both took to drain",
        f"{'':42} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}   "
        f"{'log pending':>15} {'shadow pending':>15}  drained in",
    ]
    for i, run in enumerate(section.runs):
        r = run.wrk
        title = f"(s) pair {i // 2 + 1}: " + (
            f"100% shadow of v{section.version}" if run.shadow else "no rollout"
        )
        log = "{:,} -> {:,}".format(*peaks(run, 0))
        shadow = "{:,} -> {:,}".format(*peaks(run, 1)) if run.shadow else "-"
        drained = "not in 30 s" if run.drain_s is None else f"{run.drain_s:.1f} s"
        lines.append(
            f"{title:42} {r.requests_s:9,.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d}   "
            f"{log:>15} {shadow:>15}  {drained}"
        )
    shadowed = [run for run in section.runs if run.shadow]
    requests = sum(run.wrk.requests for run in shadowed)
    answered = sum(run.shadow_answered for run in shadowed)
    flushed = sum(run.shadow_flushed for run in shadowed)
    logged = sum(run.logged for run in section.runs)
    all_requests = sum(run.wrk.requests for run in section.runs)
    grew = [i for i, run in enumerate(section.runs) if backlog_grew(run)]
    lake = "?" if section.lake_rows is None else f"{section.lake_rows:,}"
    slowest = max((run.drain_s or 0.0) for run in section.runs)
    most = max(backlog_s(run) for run in section.runs)
    lines += [
        "",
        f"shadow / none req/s {rps_ratio:7.0%}    (target >= {TARGET_SHADOW_RPS:.0%})  "
        + f"{verdict(rps_ratio >= TARGET_SHADOW_RPS):6}   each pair: "
        + " ".join(f"{x:.0%}" for x in rps),
        f"shadow / none p99   {p99_ratio:7.2f}x   (target <= {TARGET_SHADOW_P99:.1f}x) "
        + f"{verdict(p99_ratio <= TARGET_SHADOW_P99):6}   each pair: "
        + " ".join(f"{x:.2f}x" for x in p99),
        f"log backlog         peak {most:.2f} s of requests (<= {BACKLOG_MAX_S:g} s), "
        + (
            f"no growth within a run, drained in <= {slowest:.1f} s after each   ok"
            if not grew
            else f"grew in run {', '.join(str(i + 1) for i in grew)}   MISSED"
        ),
        f"the shadow answered {answered:,} rows for the {requests:,} requests of its runs "
        f"({answered / max(requests, 1):.1%}), {flushed:,} flushed to the lake; "
        f"lake.shadow_predictions: {lake} rows (warm-ups included)   "
        + verdict(answered >= 0.99 * requests > 0),
        f"the prediction log flushed {logged:,} rows for the {all_requests:,} requests of the "
        "section's runs (more: requests still in flight when wrk stopped)",
    ]
    return lines


def drained(url: str, timeout_s: float = 30.0) -> None:
    """Wait until the server's prediction log holds no rows the lake lacks: a line starts
    without the previous one's flushing (the wrk runs leave up to a flush of single rows)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        log = httpx.get(f"{url}/health", timeout=10).json()["prediction_log"]
        if log["pending_rows"] == 0:
            return
        time.sleep(0.05)


def cmd_api(port: int) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "api", "--port", str(port)]


def measure_batches(
    served: Served,
    bodies: dict[str, bytes],
    plan: Plan,
    workers: int,
    batch: dict[str, list[float] | str],
    cpu_ms: dict[str, float],
) -> None:
    """Rows/s and the server's CPU ms per batch of each batch line, into `batch` and `cpu_ms`
    under "line/clients/workers"."""
    for key, body in bodies.items():
        for clients in BATCH_CLIENTS:
            name = f"{key}/{clients}/{workers}"
            drained(served.url)
            before = cpu_seconds(served.pid)
            try:
                batch[name] = rows_per_s(
                    f"{served.url}{BATCH_PATHS[key]}", body, BATCH_ROWS, plan.batch_reps, clients
                )
            except (httpx.HTTPError, RuntimeError) as exc:  # report, measure the rest
                batch[name] = f"{type(exc).__name__}: {exc}"[:200]
                continue
            time.sleep(1.0)  # the flush of these rows (every 0.5 s) is their cost too
            after = cpu_seconds(served.pid)
            if before is not None and after is not None:
                batches = (plan.batch_reps + 1) * clients  # the unmeasured round too
                cpu_ms[name] = (after - before) * 1000 / batches


def report(
    results: dict[str, list[WrkResult]],
    batch: dict[str, list[float] | str],
    cpu_ms: dict[str, float],
    calls: dict[str, float],
    reads: dict[str, tuple],
    health: dict[str, Any],
    plan: Plan,
    shadow: ShadowSection | None = None,
) -> None:
    medians = {key: median_run(runs) for key, runs in results.items()}
    a, b, c = medians["a"], medians["b"], medians["c"]
    runs = f"median of {plan.wrk_runs} runs" if plan.wrk_runs > 1 else "one run"
    lines = [
        "",
        f"serving on 127.0.0.1: wrk -t{THREADS} -c{CONNECTIONS} -d{plan.duration_s}s, {runs} "
        f"after a {plan.warmup_s} s warm-up, single-row bodies, one server process at a time",
        "",
        f"{'':42} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}   p99 of each run",
    ]
    titles = {
        "a": "(a) ceiling: trivial async FastAPI",
        "b": "(b) naive: FastAPI + sklearn predict_proba",
        "c": "(c) driftlab /predict, features, logged",
        "c2": "    driftlab /predict, records, logged",
    }
    for key, title in titles.items():
        r = medians[key]
        each = " ".join(f"{run.p99_ms:.1f}" for run in results[key])
        lines.append(
            f"{title:42} {r.requests_s:9,.0f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d}   "
            + each
        )
    vs_naive, vs_ceiling = c.requests_s / b.requests_s, c.requests_s / a.requests_s
    lines += [
        "",
        f"driftlab / naive    {vs_naive:7.1f}x   (target >= {TARGET_VS_NAIVE:.0f}x)   "
        + verdict(vs_naive >= TARGET_VS_NAIVE),
        f"driftlab / ceiling  {vs_ceiling:7.0%}    (target >= {TARGET_VS_CEILING:.0%})  "
        + verdict(vs_ceiling >= TARGET_VS_CEILING),
        f"driftlab p99        {c.p99_ms:7.1f} ms (target <= {TARGET_P99_MS:.0f} ms) "
        + verdict(c.p99_ms <= TARGET_P99_MS),
    ]
    if shadow is not None:
        lines += shadow_lines(shadow, plan.duration_s)
    lines += [
        "",
        f"batches of {BATCH_ROWS:,} rows: rows/s, median of {plan.batch_reps} rounds "
        f"(min … max), with 1 client and with {BATCH_CLIENTS[-1]} sending at once; "
        f"target >= {TARGET_ROWS_S:,}; then the server's CPU time per batch (all its threads, "
        "the flush of the batch's log included)",
    ]
    batch_titles = {
        "d": "(d) /predict, features, logged",
        "d2": "    /predict, records, logged",
        "e": "(e) /ingest/batch, records + labels",
    }
    for workers in BATCH_WORKERS:
        lines.append(
            f"{workers} API process{'es' if workers > 1 else ''}"
            + (" (the default)" if workers == 1 else " (DRIFTLAB_API_WORKERS: one per core)")
        )
        for key, title in batch_titles.items():
            for clients in BATCH_CLIENTS:
                speeds = batch.get(f"{key}/{clients}/{workers}", "not measured")
                label = f"{title if clients == BATCH_CLIENTS[0] else ''}"
                label = f"{label:36} {clients} cl."
                if isinstance(speeds, str):
                    lines.append(f"{label:42} FAILED: {speeds}")
                    continue
                med = statistics.median(speeds)
                cpu = cpu_ms.get(f"{key}/{clients}/{workers}")
                lines.append(
                    f"{label:42} {med:9,.0f}  ({min(speeds):,.0f} … {max(speeds):,.0f})  "
                    + f"{verdict(med >= TARGET_ROWS_S):6}  "
                    + (f"CPU {cpu:4.0f} ms" if cpu is not None else "CPU ?")
                )
    log = health.get("prediction_log", {})
    lines += [
        "",
        f"the model alone, one call on {BATCH_ROWS:,} rows, one thread, median of "
        f"{plan.batch_reps}: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in calls.items()),
        f"a batch body read into validated columns, in process, median of {plan.batch_reps}: "
        + ", ".join(
            f"{batch_titles[key].split(' ', 1)[-1].strip()}: {ordinary:.1f} ms by orjson + "
            f"checks, {bulk:.1f} ms by the bulk reader ({ordinary / bulk:.1f}x)"
            for key, (ordinary, bulk) in reads.items()
        ),
        "",
        f"driftlab prediction log: {log.get('flushed_rows', '?'):,} rows flushed to the lake, "
        f"last error: {log.get('last_error')}",
    ]
    batching = health.get("batching") or {}
    if batching.get("model_calls"):
        requests, calls = batching["requests"], batching["model_calls"]
        lines.append(
            f"driftlab micro-batching: {requests:,} /predict requests in {calls:,} model calls "
            f"({requests / calls:.1f} requests per call, over the whole run)"
        )
    grouped = health.get("ingest_commits") or {}
    if grouped.get("commits"):
        lines.append(
            f"driftlab group commit: {grouped['batches']:,} /ingest batches in "
            f"{grouped['commits']:,} lake commits"
        )
    say("\n".join(lines))


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s runs: a smoke test")
    main(parser.parse_args().quick)

"""Beyond one machine, for real: a PostgreSQL catalog and registry, files in an S3 bucket, two
API replicas with data dirs of their own, two workers and the dashboard; a replica and the
active worker are killed with -9 under load. Nothing acknowledged is lost, no client of the
surviving replica sees an error, the standby takes over, and the loop goes on: a drift check,
a retrain, a promotion and a rollback, served by both replicas."""

from __future__ import annotations

import itertools
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from pipelines import demo
from pipelines.models import training
from pipelines.models.registry import Registry
from pipelines.ops import supervisor
from pipelines.ops.cluster import LAKE_DB, ClusterLayout
from pipelines.ops.local_services import LocalPostgres
from pipelines.store import Store
from pipelines.store.leases import Lease, holder_pid
from tests.conftest import cluster_settings
from tests.helpers import ApiServer, CliProcess, children, free_port, kill_all, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
logger = logging.getLogger(__name__)

LOAD_S, THREADS = 60.0, 8
LEASE_INTERVAL = 2.0
SPLIT = demo.demo_split(name="survey")
LIVE = demo.records(SPLIT.live)
LIVE_LABELS = SPLIT.live[SPLIT.label].tolist()
SHIFTED = demo.records(SPLIT.shifted)

# Short intervals so the loop turns within the test; no automatic retrain (the test starts
# one) and direct promotion (no rollout), so each step is the test's to check.
LOOP_ENV = {
    "DRIFTLAB_RELOAD_INTERVAL": "1",
    "DRIFTLAB_FLUSH_INTERVAL": "1",
    "DRIFTLAB_LEASE_INTERVAL": str(LEASE_INTERVAL),
    "DRIFTLAB_CHECK_INTERVAL": "5",
    "DRIFTLAB_QUEUE_INTERVAL": "2",
    "DRIFTLAB_MIN_SAMPLES": "50",
    "DRIFTLAB_RETRAIN_AUTO": "false",
    "DRIFTLAB_ROLLOUT": "direct",
}


@dataclass
class Replica:
    name: str
    server: ApiServer
    down: list[tuple[float, float]] = field(default_factory=list)  # (killed, up again)


@dataclass
class Load:
    """What the clients were told: every acknowledged prediction and batch, every error."""

    predictions: list[str] = field(default_factory=list)
    batches: dict[str, int] = field(default_factory=dict)
    killed_replica_errors: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(replicas: list[Replica], thread: int, stop: threading.Event, load: Load) -> None:
    """Alternate predictions and ingest batches over the replicas, as a load balancer would:
    a request the dead replica drops is sent again to the other one."""
    counter = itertools.count()
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            n = next(counter)
            first = replicas[(thread + n) % len(replicas)]
            order = [first, *[r for r in replicas if r is not first]]
            if n % 2:
                k = (thread * 97 + n) % (len(SHIFTED) - 2)
                path, body = "/predict", {"records": SHIFTED[k : k + 2]}
            else:
                k = (thread * 89 + n) % (len(LIVE) - 5)
                batch = f"t{thread}-{n}"
                path = "/ingest/batch"
                body = {
                    "records": LIVE[k : k + 5],
                    "labels": LIVE_LABELS[k : k + 5],
                    "batch_id": batch,
                }
            for replica in order:
                try:
                    r = http.post(f"{replica.server.url}{path}", json=body)
                except httpx.HTTPError as exc:
                    with load.lock:
                        if _during_kill(replica):
                            load.killed_replica_errors += 1
                        else:
                            load.failures.append(f"{replica.name} {path}: {exc!r}")
                    continue
                with load.lock:
                    if r.status_code != 200:
                        load.failures.append(f"{replica.name} {path}: {r.status_code} {r.text}")
                    elif path == "/predict":
                        load.predictions.extend(r.json()["prediction_ids"])
                    else:
                        load.batches[r.json()["batch_id"]] = r.json()["rows"]
                break


def _during_kill(replica: Replica) -> bool:
    now = time.monotonic()
    return bool(replica.down) and replica.down[-1][0] <= now <= replica.down[-1][1] + 1.0


def worker_pid(lease: Lease) -> int | None:
    """The pid in the `worker` lease's holder name (`worker@host:pid:tail`)."""
    current = lease.current()
    return holder_pid(current["holder"]) if current else None


def serving(replica: Replica) -> str:
    r = httpx.post(f"{replica.server.url}/predict", json={"records": LIVE[:1]}, timeout=30)
    r.raise_for_status()
    return str(r.json()["model_version"])


def rollout(replica: Replica) -> object:
    return httpx.get(f"{replica.server.url}/health", timeout=30).json()["rollout"]


def test_two_replicas_two_workers_survive_kill_9_and_turn_the_loop(
    cluster: ClusterLayout, tmp_path: Path
) -> None:
    first = cluster_settings(cluster, "bootstrap")
    store = Store.open(first)
    demo.seed_store(store, name="survey")
    registry = Registry.from_settings(first)
    training.train(store, registry, training.TrainConfig(params={"n_estimators": 30}))

    def env(node: str) -> dict[str, str]:
        return {**cluster.node_env(node), **LOOP_ENV}

    replicas = [
        Replica(name, ApiServer(cluster.root / name, **env(name))) for name in ("api-1", "api-2")
    ]
    workers = {
        name: CliProcess(cluster.root / name, "worker", **env(name))
        for name in ("worker-1", "worker-2")
    }
    dash_port = free_port()
    dashboard = CliProcess(
        cluster.root / "dashboard",
        "dashboard",
        **env("dashboard"),
        DRIFTLAB_DASHBOARD_PORT=str(dash_port),
    )
    lease = Lease(f"postgres:{cluster.postgres.conninfo(LAKE_DB)}", "worker", "test", 1.0)
    stop, load = threading.Event(), Load()
    threads = [
        threading.Thread(target=client, args=(replicas, i, stop, load)) for i in range(THREADS)
    ]
    started: list[CliProcess] = []
    try:
        for proc in [*(r.server for r in replicas), *workers.values(), dashboard]:
            proc.start(timeout=120)
            started.append(proc)
        assert wait_until(lambda: worker_pid(lease) is not None, 10)
        assert {serving(r) for r in replicas} == {"1"}

        t0 = time.monotonic()
        for t in threads:
            t.start()
        retrain = httpx.post(
            f"{replicas[1].server.url}/api/retraining/trigger",
            json={"who": "cluster test", "reason": "under load"},
            timeout=30,
        )
        assert retrain.status_code == 202, retrain.text
        busy = httpx.post(f"{replicas[0].server.url}/api/retraining/trigger", timeout=30)
        assert busy.status_code == 409, busy.text  # one retrain at a time, across replicas

        time.sleep(10)
        killed = replicas[0]
        killed.down.append((time.monotonic(), float("inf")))
        killed.server.kill()
        time.sleep(3)
        killed.server.start(timeout=120)  # same data dir: replays its spool, then serves
        killed.down[-1] = (killed.down[-1][0], time.monotonic())

        time.sleep(max(0.0, t0 + 25 - time.monotonic()))
        active_pid = worker_pid(lease)
        active = next(w for w in workers.values() if w.proc and w.proc.pid == active_pid)
        standby = next(w for w in workers.values() if w is not active)
        assert standby.proc is not None
        active.kill()
        died = time.monotonic()
        assert wait_until(lambda: worker_pid(lease) == standby.proc.pid, 4 * LEASE_INTERVAL)
        takeover_s = time.monotonic() - died
        assert takeover_s <= 2 * LEASE_INTERVAL + 1.0, takeover_s

        time.sleep(max(0.0, t0 + LOAD_S - time.monotonic()))
    except BaseException:
        stop.set()
        for proc in reversed(started):
            proc.kill()  # nothing of a failed run outlives the test
        raise
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(60)

    try:
        logger.info(
            "acknowledged: %d predictions, %d batches; killed replica's dropped requests: %d; "
            "standby took over in %.1f s",
            len(load.predictions),
            len(load.batches),
            load.killed_replica_errors,
            takeover_s,
        )
        assert load.failures == []
        assert len(load.predictions) > 500 and len(load.batches) > 500
        event = retrain.json()["event_id"]
        from pipelines.loop import retraining_control

        done = retraining_control.wait(store, event, timeout_s=400)
        assert done["status"] in {"promoted", "rejected"}, done
        candidate = str(done["candidate_version"])

        # The standby, now active, checks drift on the replicas' predictions.
        assert wait_until(
            lambda: (
                store.lake.scalar(
                    "SELECT count(*) FROM lake.drift_results WHERE trigger = 'worker' "
                    "AND ts > now() - INTERVAL 20 SECOND"
                )
                > 0
            ),
            30,
        )

        if done["status"] != "promoted":
            promoted = httpx.post(
                f"{replicas[0].server.url}/api/models/promote",
                json={"version": candidate, "who": "cluster test"},
                timeout=30,
            )
            assert promoted.status_code == 200, promoted.text
        assert wait_until(lambda: {serving(r) for r in replicas} == {candidate}, 15)
        back = httpx.post(f"{replicas[1].server.url}/api/models/rollback", timeout=30)
        assert back.status_code == 200, back.text
        assert wait_until(lambda: {serving(r) for r in replicas} == {"1"}, 15)

        # A rollout started through one replica reaches the other within the reload interval.
        shadow = httpx.post(
            f"{replicas[0].server.url}/api/models/shadow", json={"version": candidate}, timeout=30
        )
        assert shadow.status_code == 200, shadow.text
        assert wait_until(lambda: all(rollout(r) is not None for r in replicas), 15)
        ended = httpx.post(f"{replicas[1].server.url}/api/models/rollout/stop", timeout=30)
        assert ended.status_code == 200, ended.text
        assert wait_until(lambda: all(rollout(r) is None for r in replicas), 15)

        page = httpx.get(f"http://127.0.0.1:{dash_port}/", timeout=30)
        assert page.status_code == 200
    finally:
        for proc in reversed(started):
            proc.stop()  # the replicas flush their spools
        lease.close()

    assert store.existing_prediction_ids(load.predictions) == set(load.predictions)
    stored = dict(
        store.lake.rows(
            "SELECT batch_id, count(*) FROM lake.ingested_rows WHERE batch_id LIKE 't%' GROUP BY 1"
        )
    )
    assert {b: stored.get(b) for b in load.batches} == load.batches
    events = store.lake.rows("SELECT event FROM lake.model_events ORDER BY ts")
    assert ("rolled_back",) in events
    store.close()


def test_with_postgresql_down_health_masks_the_password_and_reads_answer_503(
    cluster: ClusterLayout,
) -> None:
    """DuckDB quotes the whole catalog connection string in its errors; `/health`, which
    anyone may read, masks the password in it. A route that needs the store says it is
    unreachable (503, retry later), not that the server broke."""
    env = cluster.node_env("api-1")
    env["DRIFTLAB_CATALOG_URI"] += " password=hunter2"  # trust auth: accepted, unused
    server = ApiServer(cluster.root / "api-1", **env)
    server.start(timeout=120)
    try:
        assert httpx.get(f"{server.url}/health", timeout=30).json()["store"]["status"] == "ok"
        cluster.postgres.stop()
        r = httpx.get(f"{server.url}/health", timeout=60)
        assert r.json()["store"]["status"] == "error"
        assert "password=***" in r.json()["store"]["error"]  # the string was there, masked
        assert "hunter2" not in r.text
        reads = httpx.get(f"{server.url}/api/retraining/history", timeout=60)
        assert reads.status_code == 503, reads.text
        assert reads.headers["retry-after"] == "5"
        assert "unreachable" in reads.json()["detail"] and "hunter2" not in reads.text
    finally:
        server.stop()


def test_up_cluster_starts_the_layout_and_restarts_what_dies(tmp_path: Path) -> None:
    """`driftlab up --cluster 2`: PostgreSQL, S3, a first model, two replicas, two workers
    (the banner says which is active) and the dashboard; a killed replica comes back; Ctrl-C
    stops it all, PostgreSQL included."""
    api_port = _consecutive_free_ports()
    env = {
        **os.environ,
        "DRIFTLAB_DATA_DIR": str(tmp_path / "data"),
        "DRIFTLAB_API_PORT": str(api_port),
        "DRIFTLAB_DASHBOARD_PORT": str(free_port()),
        "DRIFTLAB_DEMO": "survey",
    }
    pg_port, s3_port = free_port(), free_port()
    log = tmp_path / "up.log"
    command = ["up", "--cluster", "2", "--pg-port", str(pg_port), "--s3-port", str(s3_port)]
    with open(log, "wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", *command], env=env, stdout=out, stderr=out
        )
    replicas = [f"http://127.0.0.1:{api_port + i}" for i in range(2)]
    try:
        assert wait_until(lambda: "Ctrl-C stops everything" in log.read_text(), 240), (
            log.read_text()[-3000:]
        )
        banner = log.read_text()
        roles = re.findall(r"worker-\d\s+(active|standby)", banner)
        assert sorted(roles) == ["active", "standby"], banner[-2000:]
        assert wait_until(lambda: all(_healthy(url) for url in replicas), 120)
        for url in replicas:
            health = httpx.get(f"{url}/health", timeout=30).json()
            assert health["store"]["catalog"] == "postgres"
            assert health["model"]["version"] == "1"
        time.sleep(supervisor.RESTART_AFTER_S)  # one that dies sooner could not start: no restart
        first = next(pid for pid in children(up.pid) if _listens(pid, api_port))
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: not _healthy(replicas[0]), 10)
        assert wait_until(lambda: _healthy(replicas[0]), 120), log.read_text()[-3000:]
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(60)
        except subprocess.TimeoutExpired:
            up.kill()
            kill_all(children(up.pid))
    assert up.returncode == 0, log.read_text()[-3000:]
    assert LocalPostgres(tmp_path / "data" / "cluster" / "postgres", pg_port).pid is None


def _consecutive_free_ports() -> int:
    """A port that is free, and so is the next one (the second replica's)."""
    while True:
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _listens(pid: int, port: int) -> bool:
    """Whether the command line of `pid` serves the API on `port` (its `--port` argument)."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    return b"--port" in argv and argv[argv.index(b"--port") + 1] == str(port).encode()

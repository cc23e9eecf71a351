"""Leases, the commit lock and the retrain lock on a real PostgreSQL: what several machines
use instead of one machine's file locks."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from pipelines.loop import retraining_control
from pipelines.loop.worker import Worker
from pipelines.ops.cluster import LAKE_DB, ClusterLayout
from pipelines.store import postgres
from pipelines.store.commit_lock import ADVISORY_KEY, AdvisoryCommitLock
from pipelines.store.leases import Lease, LeaseKeeper
from tests.conftest import cluster_settings

pytestmark = pytest.mark.e2e


@pytest.fixture
def catalog(cluster: ClusterLayout) -> str:
    return f"postgres:{cluster.postgres.conninfo(LAKE_DB)}"


def test_one_holder_at_a_time_and_expiry_hands_over(catalog: str) -> None:
    a, b = Lease(catalog, "job", "a", ttl_s=1.0), Lease(catalog, "job", "b", ttl_s=1.0)
    assert a.try_acquire() == 1
    assert b.try_acquire() is None
    assert a.try_acquire() == 1  # a renewal keeps the tenure
    assert (a.current() or {})["holder"] == "a"
    time.sleep(1.2)  # a stops renewing: dead
    assert a.current() is None
    assert b.try_acquire() == 2  # a new tenure, a new epoch
    assert a.try_acquire() is None
    b.release()
    assert a.try_acquire() == 3  # a release keeps counting epochs


def test_twenty_contenders_at_once_one_winner(catalog: str) -> None:
    wins: list[str] = []
    barrier = threading.Barrier(20)

    def contend(i: int) -> None:
        lease = Lease(catalog, "race", f"h{i}", ttl_s=30)
        barrier.wait()
        if lease.try_acquire() is not None:
            wins.append(lease.holder)
        lease.close()

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_a_standby_takes_over_within_two_intervals_of_the_holder_dying(catalog: str) -> None:
    interval = 0.5
    active = LeaseKeeper(Lease(catalog, "worker", "one", 1.5 * interval), interval / 2).start()
    standby = LeaseKeeper(Lease(catalog, "worker", "two", 1.5 * interval), interval / 2).start()
    try:
        time.sleep(interval)
        assert active.active and not standby.active
        # Death: renewals stop, nothing released (kill -9 leaves the row as it was).
        active.release_on_stop = False
        active.stop()
        died = time.monotonic()
        while not standby.active and time.monotonic() - died < 5:
            time.sleep(0.02)
        assert standby.active
        assert time.monotonic() - died <= 2 * interval + 0.2
        assert standby.epoch == 2
    finally:
        standby.stop()


def test_a_holder_whose_lease_was_taken_stops_acting(catalog: str) -> None:
    keeper = LeaseKeeper(Lease(catalog, "worker", "me", 30.0), 30.0).start()
    assert keeper.active
    with postgres.connect(catalog) as session:  # an operator hands the lease to another
        session.execute("UPDATE driftlab_leases SET holder = 'other' WHERE name = 'worker'")
    assert not keeper.attempt()
    assert not keeper.active
    keeper.stop()


def test_a_worker_without_the_lease_does_nothing(cluster: ClusterLayout, catalog: str) -> None:
    settings = cluster_settings(cluster, "worker")
    other = Lease(catalog, "worker", "someone-else", 60.0)
    assert other.try_acquire() is not None
    worker = Worker.open(settings)
    worker.lease = LeaseKeeper(Lease(catalog, "worker", "me", 60.0), 60.0).start()
    assert not worker.acting
    assert worker.tick() == {
        "queue": {"skipped": "standby"},
        "rollout": {"skipped": "standby"},
        "stopped": "lost the worker lease",
    }
    assert worker.maybe_retrain() == {"started": False, "skipped": "standby"}
    worker.lease.stop()
    worker.store.close()


def test_the_retrain_lock_is_a_lease_across_machines(cluster: ClusterLayout) -> None:
    settings = cluster_settings(cluster, "api-1", lease_interval=0.2)
    elsewhere = cluster_settings(cluster, "api-2", lease_interval=0.2)
    assert not retraining_control.is_running(elsewhere)
    held = retraining_control.acquire(settings)
    assert retraining_control.is_running(elsewhere)
    with pytest.raises(retraining_control.RetrainBusy):
        retraining_control.acquire(elsewhere)
    args, fds = held.handoff()
    assert fds == () and args[0].startswith("--lock-lease=")
    held.detach()  # handed to a child that has not started yet: the lease waits for it
    time.sleep(0.5)
    assert retraining_control.is_running(elsewhere)
    child = retraining_control.adopt(elsewhere, fd=None, lease=args[0].split("=", 1)[1])
    assert child is not None
    time.sleep(retraining_control.RETRAIN_LEASE_INTERVALS * 0.2 + 0.3)  # renewed all along
    assert retraining_control.is_running(settings)
    child.release()
    assert not retraining_control.is_running(settings)
    retraining_control.acquire(elsewhere).release()


def test_a_handed_lease_another_run_took_is_refused(cluster: ClusterLayout) -> None:
    settings = cluster_settings(cluster, "api-1", lease_interval=0.1)
    held = retraining_control.acquire(settings)
    holder = held.handoff()[0][0].split("=", 1)[1]
    held.detach()
    time.sleep(retraining_control.RETRAIN_LEASE_INTERVALS * 0.1 + 0.2)
    other = retraining_control.acquire(settings)  # the child was too slow: another run began
    with pytest.raises(retraining_control.RetrainBusy, match="expired"):
        retraining_control.adopt(settings, fd=None, lease=holder)
    other.release()


def test_commits_take_turns_on_an_advisory_lock(catalog: str) -> None:
    first, second = AdvisoryCommitLock(catalog), AdvisoryCommitLock(catalog)
    order: list[str] = []
    with first.held():
        waiter = threading.Thread(target=lambda: _hold(second, order))
        waiter.start()
        time.sleep(0.3)
        order.append("first done")
    waiter.join(10)
    assert order == ["first done", "second"]
    # The lock is a session's: a holder whose connection dies (kill -9) frees it at once.
    session = postgres.connect(catalog)
    session.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_KEY])
    pid = session.info.backend_pid
    with postgres.connect(catalog) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    with first.held():
        pass
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    first.close()
    second.close()


def _hold(lock: AdvisoryCommitLock, order: list[str]) -> None:
    with lock.held():
        order.append("second")

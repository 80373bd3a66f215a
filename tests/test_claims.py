"""Claims and leases in the store: compare-and-set claims, expiry, commits only by the owner."""

import time

import numpy as np
import pytest

from schedlab.store.records import Commit, PlannedRun
from schedlab.store.status import RunStatus, owner_is_dead, owner_name
from schedlab.store.store import Store

VERSIONS = {"schedlab": "test"}


def planned(run_id, label="a"):
    return PlannedRun(run_id, label, "moons", "cosine", {}, 0, {"train": {}}, "fleet")


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "s.sqlite") as db:
        db.register_plan("s", {"name": "s"}, [planned("r1"), planned("r2", "b")])
        yield db


def commit(value=1.0):
    return Commit(
        status=RunStatus.DONE,
        training_time=2.0,
        losses=np.ones(3),
        lrs=np.ones(3),
        heldout_curve=np.array([[3.0, 0.5]]),
        weights=(np.zeros(4, np.float32), np.ones(4, np.float32)),
        measurements={"kl_divergence": ("k1", value)},
        samples=None,
    )


def test_a_claim_that_loses_returns_false(store):
    assert store.claim("r1", "host:1:a", 60, "host", VERSIONS)
    assert not store.claim("r1", "host:2:b", 60, "host", VERSIONS)
    assert store.claim("r2", "host:2:b", 60, "host", VERSIONS)
    assert not store.claim("nope", "host:2:b", 60, "host", VERSIONS)


def test_an_expired_lease_makes_the_run_stale_and_claimable(store):
    assert store.claim("r1", "elsewhere:1:a", 0.05, "elsewhere", VERSIONS)
    assert store.status("r1") == RunStatus.RUNNING
    time.sleep(0.1)
    assert store.status("r1") == RunStatus.STALE
    assert store.claim("r1", "elsewhere:2:b", 60, "elsewhere", VERSIONS)
    # The first driver's late commit is refused and writes nothing.
    assert not store.finish("r1", "elsewhere:1:a", commit(9.0))
    assert store.measured_keys("r1") == set()
    assert store.finish("r1", "elsewhere:2:b", commit(1.0))
    (record,) = store.records_for([("a", "r1")], {"kl_divergence": "k1"})
    assert record.status == RunStatus.DONE and record.attempts == 2
    assert record.metrics == {"kl_divergence": 1.0} and record.training_time == 2.0
    raw, ema = store.weights("r1")
    assert np.array_equal(raw, np.zeros(4)) and np.array_equal(ema, np.ones(4))


def test_renewal_keeps_a_lease_alive(store):
    assert store.claim("r1", "elsewhere:1:a", 0.2, "elsewhere", VERSIONS)
    for _ in range(4):
        time.sleep(0.1)
        assert store.renew("elsewhere:1:a", 0.2) == 1
    assert store.status("r1") == RunStatus.RUNNING
    assert not store.claim("r1", "elsewhere:2:b", 60, "elsewhere", VERSIONS)


def test_only_the_owner_fails_or_releases_a_run(store):
    assert store.claim("r1", "elsewhere:1:a", 60, "elsewhere", VERSIONS)
    assert not store.mark_failed("r1", "elsewhere:2:b", "not mine")
    store.release("r1", "elsewhere:2:b", "interrupted")
    assert store.status("r1") == RunStatus.RUNNING
    store.release("r1", "elsewhere:1:a", "interrupted")
    assert store.status("r1") == RunStatus.PENDING


def test_a_dead_local_owner_is_recognised():
    assert not owner_is_dead(f"{owner_name()}:token")  # this process
    host = owner_name().partition(":")[0]
    assert owner_is_dead(f"{host}:999999999:token")
    assert not owner_is_dead("another-host:999999999:token")


def test_registration_appends_and_never_deletes_another_plan(store):
    store.register_plan("s", {"name": "s", "other": True}, [planned("r3", "c")])
    plan_id, spec = store.latest_plan("s")
    assert spec["other"] and [r for _, r in store.plan_pairs(plan_id)] == ["r3"]
    ids = {row[0] for row in store.conn.execute("SELECT plan_id FROM studies")}
    assert len(ids) == 2
    first = next(i for i in ids if i != plan_id)
    assert [r for _, r in store.plan_pairs(first)] == ["r1", "r2"]


def test_expiring_a_dead_owners_lease_never_expires_a_live_drivers(store, monkeypatch):
    """The race of two drivers started together after a kill -9: both read the dead owner's
    run as running; A expires it and claims it; B's expiry, from its stale read, must not end
    A's lease (before, B then claimed the run too and both trained it)."""
    import socket

    from schedlab.execute.driver import Driver

    dead = f"{socket.gethostname()}:999999999:dead"
    assert store.claim("r1", dead, 60, "host", VERSIONS)
    a, b = Driver(store), Driver(store)
    stale_read = store.running()  # what B read before A acted
    a._expire_dead_owners()
    assert store.claim("r1", a.owner, 60, "host", VERSIONS)
    monkeypatch.setattr(store, "running", lambda: stale_read)  # B acts on its stale read
    b._expire_dead_owners()
    assert store.status("r1") == RunStatus.RUNNING
    assert not store.claim("r1", b.owner, 60, "host", VERSIONS)
    monkeypatch.undo()
    assert store.running()[0][1] == a.owner

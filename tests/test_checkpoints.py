"""Fleet checkpoints: resuming from any of them gives bitwise the run trained straight through,
whatever the fleet, shard or position on resume; SIGTERM and SIGINT checkpoint and exit; kill -9
at random moments loses at most the steps since the last checkpoint."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from schedlab.config.settings import TrainSettings
from schedlab.schedules.registry import resolve
from schedlab.training.checkpoint import Checkpoint, CheckpointPolicy, Checkpoints
from schedlab.training.common import Member
from schedlab.training.fleet.shards import train_fleet
from schedlab.training.stopping import STOP, StopRequested

STUDY = Path(__file__).parent / "fixtures" / "chaos_study.toml"
TIMES = ("training_time", "inference_time", "seconds_to_target")  # wall-clock, not numbers


def fleet_members(steps: int) -> list[Member]:
    points = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    schedules = [
        resolve("cosine", {}, steps),
        resolve("plateau", {"watch": "heldout", "every": 2, "patience": 2, "window": 1}, steps),
        resolve("step", {"step_size": 4, "warmup_steps": 3}, steps),
        resolve("constant", {}, steps),
    ]
    lrs = [1e-3, 1e-3, 1e-3, 1e4]  # the last one diverges
    return [
        Member(points, s, seed, lr) for seed, (s, lr) in enumerate(zip(schedules, lrs, strict=True))
    ]


def heldout(k: int, model: torch.nn.Module) -> float:
    with torch.no_grad():
        return float(sum(p.double().square().sum() for p in model.parameters()))


def same(a, b) -> bool:
    weights = zip(
        [*a.model.parameters(), *a.ema_model.parameters()],
        [*b.model.parameters(), *b.ema_model.parameters()],
        strict=True,
    )
    return (
        all(torch.equal(x, y) for x, y in weights)
        and np.array_equal(a.losses, b.losses)
        and np.array_equal(a.lrs, b.lrs)
        and np.array_equal(a.heldout_curve, b.heldout_curve)
        and a.diverged_at == b.diverged_at
    )


def test_resuming_from_any_checkpoint_equals_training_straight_through():
    settings = TrainSettings(
        steps=23, batch_size=64, emb_size=8, hidden_size=16, hidden_layers=1, curve_every=5
    )
    members = fleet_members(settings.steps)
    straight = train_fleet(members, settings, heldout_loss=heldout, shards=2)
    assert straight[3].diverged_at is not None and straight[0].diverged_at is None
    saved: dict[int, dict[int, bytes]] = {}

    def save(k: int, checkpoint: Checkpoint) -> None:
        saved.setdefault(checkpoint.step, {})[k] = checkpoint.to_bytes()

    every = Checkpoints([None] * 4, save, CheckpointPolicy(every_steps=4))
    train_fleet(members, settings, heldout_loss=heldout, shards=1, checkpoints=every)
    # Every 4 steps (mid-epoch and at an epoch's end: 5 batches an epoch), and at the end.
    assert sorted(saved) == [4, 8, 12, 16, 20, 23]
    order = [2, 0, 3, 1]  # resumed in another order and other shards
    for step, states in saved.items():
        resume = Checkpoints([Checkpoint.from_bytes(states[i]) for i in order], lambda k, c: None)
        again = train_fleet(
            [members[i] for i in order],
            settings,
            heldout_loss=heldout,
            shards=2,
            checkpoints=resume,
        )
        for position, i in enumerate(order):
            assert same(straight[i], again[position]), (step, i)
            assert again[position].resumed_from == step


@pytest.mark.parametrize("stop_after", [5, 7])  # at an epoch's end (5 batches an epoch), within
def test_a_stop_request_checkpoints_every_member_and_resuming_equals_straight_through(stop_after):
    settings = TrainSettings(
        steps=12, batch_size=64, emb_size=8, hidden_size=16, hidden_layers=1, curve_every=1
    )
    members = fleet_members(settings.steps)
    straight = train_fleet(members, settings, heldout_loss=heldout, shards=2)
    saved: dict[int, Checkpoint] = {}

    looked: list[int] = []  # one held-out look per member and step (curve_every = 1)

    def asking_to_stop(k: int, model: torch.nn.Module) -> float:
        if len(looked) >= stop_after * 4:
            STOP.set()  # as SIGINT does: honoured at the next step boundary
        looked.append(k)
        return heldout(k, model)

    on_request = Checkpoints([None] * 4, lambda k, c: saved.__setitem__(k, c), CheckpointPolicy())
    try:
        with pytest.raises(StopRequested):
            train_fleet(members, settings, heldout_loss=asking_to_stop, checkpoints=on_request)
    finally:
        STOP.clear()
    assert len(saved) == 4 and len({c.step for c in saved.values()}) <= 2
    for step in {c.step for c in saved.values()}:
        ks = [k for k, c in saved.items() if c.step == step]
        resume = Checkpoints([saved[k] for k in ks], lambda k, c: None)
        again = train_fleet(
            [members[k] for k in ks], settings, heldout_loss=heldout, checkpoints=resume
        )
        assert all(same(straight[k], r) for k, r in zip(ks, again, strict=True)), step


def test_a_fleet_resumes_its_members_at_one_step():
    settings = TrainSettings(steps=6, batch_size=64, emb_size=8, hidden_size=16, hidden_layers=1)
    members = [fleet_members(6)[i] for i in (0, 2)]
    states = {}
    train_fleet(
        members,
        settings,
        checkpoints=Checkpoints(
            [None, None], lambda k, c: states.setdefault(k, c), CheckpointPolicy(every_steps=2)
        ),
    )
    with pytest.raises(ValueError, match=r"must resume at one step, got \[0, 2\]"):
        train_fleet(members, settings, checkpoints=Checkpoints([states[0], None], print))


def run_command(store: Path) -> list[str]:
    return [
        sys.executable, "-m", "schedlab", "run", str(STUDY), "--store", str(store),
        "--fleet-size", "4", "--checkpoint-every", "10",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def straight_through(tmp_path_factory):
    store = tmp_path_factory.mktemp("straight") / "chaos.sqlite"
    subprocess.run(run_command(store), check=True, capture_output=True, timeout=600)
    return store


def contents(store: Path) -> dict[tuple, object]:
    """Every number a run produced (curves, weights, post-hoc EMA snapshots, samples,
    measurements but times)."""
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as c:
        out: dict[tuple, object] = {}
        for run_id, *blobs in c.execute("SELECT run_id, loss, lr, heldout FROM curves"):
            out["curves", run_id] = blobs
        for run_id, *blobs in c.execute("SELECT run_id, raw, ema FROM weights"):
            out["weights", run_id] = blobs
        for run_id, skey, points in c.execute("SELECT run_id, skey, points FROM samples"):
            out["samples", run_id, skey] = points
        for run_id, std, step, weights in c.execute("SELECT * FROM snapshots"):
            out["snapshot", run_id, std, step] = weights
        marks = ",".join("?" * len(TIMES))
        query = (
            f"SELECT run_id, metric, mkey, value FROM measurements WHERE metric NOT IN ({marks})"
        )
        for run_id, metric, mkey, value in c.execute(query, TIMES):
            out["measure", run_id, metric, mkey] = value
        return out


def checkpoints_in(store: Path) -> dict[str, int]:
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30) as c:
            return dict(c.execute("SELECT run_id, step FROM checkpoints"))
    except sqlite3.OperationalError:  # not created yet
        return {}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
)
def test_a_signal_checkpoints_the_fleet_and_the_resumed_study_is_bitwise_the_same(
    tmp_path, straight_through, sig, code, word
):
    store = tmp_path / "chaos.sqlite"
    proc = subprocess.Popen(run_command(store), stderr=subprocess.PIPE, text=True)
    # Every member of the fleet checkpointed once: its two shards, which step apart on a busy
    # machine, are both past step 10 (before, one shard could be signalled at step 8).
    deadline = time.monotonic() + 120
    while len(checkpoints_in(store)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"{word}: finished runs are saved in ")
    assert "the fleet in flight checkpointed at its last step" in last
    with sqlite3.connect(store) as c:
        statuses = {s for (s,) in c.execute("SELECT status FROM runs")}
    assert "running" not in statuses  # put back to pending
    checkpointed = checkpoints_in(store)
    assert len(checkpointed) == 4  # the fleet in flight
    subprocess.run(run_command(store), check=True, capture_output=True, timeout=600)
    assert contents(store) == contents(straight_through)
    # 12 runs x 2 tracked EMAs x 8 snapshots, those before the signal written at checkpoints
    assert sum(key[0] == "snapshot" for key in contents(store)) == 12 * 2 * 8
    with sqlite3.connect(store) as c:
        resumed = [s for (s,) in c.execute("SELECT resumed_from FROM runs")]
        assert c.execute("SELECT count(*) FROM checkpoints").fetchone() == (0,)
        # The dropped checkpoints' pages are given back to the file system.
        pages, free = (
            c.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count")
        )
        assert free * 4 <= pages
    assert sorted(resumed) == [0] * 8 + sorted(checkpointed.values())
    assert all(step >= 10 for step in checkpointed.values())


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_is_bitwise_the_same(tmp_path, straight_through):
    store = tmp_path / "chaos.sqlite"
    # The first kill once a checkpoint is stored (on a busy machine the random moments may all
    # come before one), then at random moments.
    proc = subprocess.Popen(run_command(store), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not checkpoints_in(store) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    moments = random.Random(20261129)
    for _ in range(10):
        proc = subprocess.Popen(run_command(store), stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=moments.uniform(2.0, 6.0))
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    subprocess.run(run_command(store), check=True, capture_output=True, timeout=600)
    assert contents(store) == contents(straight_through)
    with sqlite3.connect(store) as c:
        assert {s for (s,) in c.execute("SELECT status FROM runs")} == {"done"}
        assert sum(step > 0 for (step,) in c.execute("SELECT resumed_from FROM runs")) > 0


@pytest.mark.slow
def test_ctrl_c_early_in_training_is_an_interrupt_not_a_failure(tmp_path):
    store = tmp_path / "chaos.sqlite"
    moments = random.Random(7)
    for _ in range(5):
        proc = subprocess.Popen(run_command(store), stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if "runs: started (" in line:
                break
        time.sleep(moments.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGINT)
        _, rest = proc.communicate(timeout=120)
        assert proc.returncode == 130, rest
        assert rest.strip().splitlines()[-1].startswith("interrupted: finished runs are saved")
    with sqlite3.connect(store) as c:
        statuses = {s for (s,) in c.execute("SELECT status FROM runs")}
    assert statuses <= {"pending", "done"}  # never failed, never left running


def test_a_store_gives_back_the_space_of_dropped_checkpoints(tmp_path):
    from schedlab.store.store import Store

    with Store(tmp_path / "s.sqlite") as db:
        filler = b"\0" * 4_000_000
        db.conn.execute("CREATE TABLE scratch (blob BLOB)")
        db.conn.execute("INSERT INTO scratch VALUES (?)", (filler,))
        db.conn.execute("DELETE FROM scratch")  # as a dropped checkpoint leaves free pages
        assert db.conn.execute("PRAGMA freelist_count").fetchone()[0] > 900
        db.conn.execute(
            "INSERT INTO checkpoints VALUES ('held', 1, x'00', 0)"
        )  # a run still holding one: nothing is vacuumed
        assert not db.reclaim_space()
        db.conn.execute("DELETE FROM checkpoints")
        assert db.reclaim_space()
        assert db.conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        assert not db.reclaim_space()  # nothing left to give back

"""The Ray executor: each fleet is a Ray task that trains and measures it on some node.

The driver (``schedlab.execute.driver``) claims runs, hands their fleets over, and commits
each outcome as its task returns; the store stays one SQLite file on the driver's host and
workers never open it. A task asks for the CPUs of one node (one fleet per node, trained as
that many single-threaded shards), or for one GPU.

Fleets checkpoint as local ones do: a task resumes from the checkpoints the driver hands it
and sends new ones to a ``CheckpointBox`` actor on the driver's node, which the driver drains
into the store every half second. A task lost with its node is retried by Ray and resumes from
the latest checkpoints in the box (position-independent, so the same numbers); a task that
raises fails its own runs only; Ctrl-C cancels the tasks in flight, the driver stores their
last checkpoints and puts their runs back to pending.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psutil
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from schedlab import usercode
from schedlab.config.engines import DEFAULT_FLEET_SIZE, RUNS_PER_SHARD
from schedlab.config.study import StudySpec
from schedlab.execute.base import RunOutcome
from schedlab.execute.checkpoints import HandedCheckpoints, StoreCheckpoints, by_step
from schedlab.execute.driver import LEASE_S, Driver, Events, StudyOutcome, TuneStudy
from schedlab.execute.work import Worker, error_line
from schedlab.plan import RunSpec
from schedlab.store.store import Store
from schedlab.training.checkpoint import Checkpoint, CheckpointPolicy

# Ray retries a task this many times when its worker or node dies (not when it raises).
TASK_RETRIES = 3
WAIT_S = 0.5  # the longest a Ctrl-C waits to be seen
SHUTDOWN_S = 5.0  # what Ray's own processes get to exit after ray.shutdown


@dataclass
class NodeThroughput:
    runs: int = 0
    member_steps: int = 0
    seconds: float = 0.0  # summed wall time of this node's tasks

    @property
    def steps_per_second(self) -> float:
        return self.member_steps / self.seconds if self.seconds > 0 else math.nan


@dataclass
class FleetResult:
    node: str
    seconds: float
    outcomes: list[RunOutcome]


class CheckpointBox:
    """An actor on the driver's node: each run's latest checkpoint sent by a fleet task (a
    retried task resumes from it), and every one the driver has not stored yet (a trunk's
    checkpoint at a branch step must reach the store even when a later one follows it)."""

    def __init__(self) -> None:
        self.latest: dict[str, Checkpoint] = {}
        self.unstored: dict[str, list[Checkpoint]] = {}

    def put(self, run_id: str, checkpoint: Checkpoint) -> None:
        held = self.latest.get(run_id)
        if held is None or checkpoint.step >= held.step:  # a lost attempt's late word is older
            self.latest[run_id] = checkpoint
            self.unstored.setdefault(run_id, []).append(checkpoint)

    def get(self, run_ids: list[str]) -> dict[str, Checkpoint]:
        return {r: self.latest[r] for r in run_ids if r in self.latest}

    def take(self) -> list[tuple[str, Checkpoint]]:
        """The checkpoints not stored yet, each run's in the order sent (the driver stores
        them)."""
        out = [(r, c) for r, sent in self.unstored.items() for c in sent]
        self.unstored.clear()
        return out

    def forget(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            self.latest.pop(run_id, None)
            self.unstored.pop(run_id, None)


@dataclass
class TaskCheckpoints:
    """What a fleet task needs to checkpoint: the box, the store's checkpoints of its runs
    when it was handed over, and when to save."""

    box: Any  # a CheckpointBox actor handle
    stored: dict[str, Checkpoint]
    policy: CheckpointPolicy

    def handed(self, fleet: list[RunSpec]) -> HandedCheckpoints:
        """The fleet's latest checkpoints (the box's, from an earlier attempt of this task,
        else the store's), saving into the box."""
        latest = dict(self.stored)
        for run_id, checkpoint in ray.get(self.box.get.remote([r.run_id for r in fleet])).items():
            if run_id not in latest or checkpoint.step >= latest[run_id].step:
                latest[run_id] = checkpoint

        def send(run_id: str, checkpoint: Checkpoint) -> None:
            ray.get(self.box.put.remote(run_id, checkpoint))  # kept before training goes on

        return HandedCheckpoints(latest, send, self.policy)


def _train_fleet(
    fleet: list[RunSpec],
    device: str,
    threads: int,
    search_dirs: list[str],
    checkpoints: TaskCheckpoints | None,
) -> FleetResult:
    """The task: train and measure one fleet on whichever node Ray chose, resuming from its
    latest checkpoints (its members grouped by the step they resume at). User modules
    (schedules, datasets, models) are found where the driver finds them: ``search_dirs``
    (the study's folder and the driver's directory; on a cluster of several machines, a
    shared file system or the modules installed on every node)."""
    import torch

    for folder in search_dirs:
        usercode.add_study_dir(folder)
    torch.set_num_threads(threads)  # the shards: one per CPU the task holds
    start = time.perf_counter()
    if checkpoints is None:
        outcomes = list(Worker(device).train_fleet(fleet))
    else:
        handed = checkpoints.handed(fleet)
        worker = Worker(device, checkpoints=handed)
        outcomes = [o for group in by_step(fleet, handed.latest) for o in worker.train_fleet(group)]
    node = ray.get_runtime_context().get_node_id()
    return FleetResult(node, time.perf_counter() - start, outcomes)


@dataclass
class Slots:
    """How fleet tasks fit the cluster: resources per task, tasks that run at once."""

    cpus: int
    gpus: int
    count: int

    @staticmethod
    def of_cluster(device: str) -> Slots:
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        if device == "cuda":
            gpus = sum(int(r.get("GPU", 0)) for r in nodes)
            if gpus == 0:
                raise ValueError("--device cuda asked for, but the Ray cluster has no GPU")
            return Slots(cpus=1, gpus=1, count=gpus)
        cpus = [int(r.get("CPU", 0)) for r in nodes if r.get("CPU", 0) >= 1]
        if not cpus:
            raise ValueError("the Ray cluster has no node with a CPU to train on")
        per_task = min(cpus)  # one fleet per node of the smallest size; more on larger ones
        return Slots(cpus=per_task, gpus=0, count=sum(c // per_task for c in cpus))


@dataclass
class RayExecutor:
    """Runs fleets as Ray tasks on the cluster ``ray.init`` connected to."""

    device: str = "cpu"
    checkpoints: StoreCheckpoints | None = None  # None: fleets do not checkpoint
    slots: Slots = field(init=False)
    nodes: dict[str, NodeThroughput] = field(default_factory=dict)
    # Every fleet is claimed and handed over at once: Ray queues what does not fit yet.
    capacity = sys.maxsize

    def __post_init__(self) -> None:
        self.slots = Slots.of_cluster(self.device)
        self.task = ray.remote(_train_fleet).options(
            num_cpus=self.slots.cpus, num_gpus=self.slots.gpus, max_retries=TASK_RETRIES
        )
        self.box = None
        if self.checkpoints is not None:  # on the driver's node: it outlives any other node
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), False)
            box = ray.remote(CheckpointBox).options(num_cpus=0, scheduling_strategy=here)
            self.box = box.remote()

    def handed_over(self, fleet: list[RunSpec]) -> TaskCheckpoints | None:
        if self.checkpoints is None:
            return None
        stored = {r.run_id: c for r in fleet if (c := self.checkpoints.stored(r)) is not None}
        return TaskCheckpoints(self.box, stored, self.checkpoints.policy)

    def store_checkpoints(self) -> None:
        """Store the checkpoints the tasks sent since the last call."""
        if self.checkpoints is None:
            return
        for run_id, checkpoint in ray.get(self.box.take.remote()):
            self.checkpoints.save(run_id, checkpoint)

    def fleet_size(self, runs: int, largest: int) -> int:
        """Runs per fleet so that the fleets fill the slots in equal rounds: as many fleets as
        a whole number of rounds needs, each at most ``largest``, none left for a lone tail."""
        rounds = max(1, math.ceil(runs / (self.slots.count * largest)))
        return max(1, math.ceil(runs / (rounds * self.slots.count)))

    def run(self, fleets: list[list[RunSpec]]) -> Iterator[RunOutcome]:
        folders = usercode.search_dirs()
        pending: dict[Any, list[RunSpec]] = {
            self.task.remote(
                fleet, self.device, self.slots.cpus, folders, self.handed_over(fleet)
            ): fleet
            for fleet in fleets
        }
        try:
            while pending:
                # A bounded wait: Ctrl-C reaches Python only between calls into Ray.
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                self.store_checkpoints()  # before a ready fleet's runs commit (and drop theirs)
                for ref in ready:
                    fleet = pending.pop(ref)
                    yield from self._outcomes(ref, fleet)
                    if self.box is not None:
                        self.box.forget.remote([r.run_id for r in fleet])
        finally:  # Ctrl-C, or the driver stopped listening: nothing keeps training
            for ref in pending:
                ray.cancel(ref, force=True)
            self.store_checkpoints()  # what the cancelled fleets last sent

    def _outcomes(self, ref: Any, fleet: list[RunSpec]) -> list[RunOutcome]:
        try:
            result: FleetResult = ray.get(ref)
        except (ray.exceptions.RayError, OSError) as err:  # retries spent, or the task raised
            cause = getattr(err, "cause", None) or err
            return [RunOutcome(run, None, error_line(cause)) for run in fleet]
        node = self.nodes.setdefault(result.node, NodeThroughput())
        node.runs += len(fleet)
        node.member_steps += len(fleet) * fleet[0].settings.train.steps
        node.seconds += result.seconds
        return result.outcomes

    def summary(self) -> list[str]:
        """Per-node throughput, one line each."""
        return [
            f"node {node[:12]}: {t.runs} runs, {t.steps_per_second:.0f} run-steps/s "
            f"({t.seconds:.1f} s of fleet tasks)"
            for node, t in sorted(self.nodes.items())
        ]


@contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Inside: joined to the cluster at ``address``, or to a local Ray instance started here
    (unless Ray is connected already). On leaving, whatever Ray started in this process is
    stopped, its agents too: ``ray.shutdown`` stops the raylet, whose agents otherwise linger
    as orphans for a minute or more after an early Ctrl-C."""
    if ray.is_initialized():
        yield
        return
    before = _descendants()
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,  # schedlab's own lines say what happens
        )
    except (ConnectionError, RuntimeError, ValueError) as err:
        _shut_down(before)
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ValueError(f"could not connect to {where}: {error_line(err)}") from err
    except BaseException:  # Ctrl-C while starting
        _shut_down(before)
        raise
    try:
        yield
    finally:
        _shut_down(before)


def _descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _shut_down(before: set[int]) -> None:
    """``ray.shutdown``, then stop the processes started since ``before`` that outlive it."""
    started = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    ray.shutdown()
    _, alive = psutil.wait_procs(started, timeout=SHUTDOWN_S)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def run_study_on_ray(
    study: StudySpec,
    store: Store,
    events: Events | None = None,
    engine: str = "fleet",
    fleet_size: int | None = None,
    device: str = "cpu",
    address: str | None = None,
    lease_s: float = LEASE_S,
    tune: TuneStudy | None = None,
    checkpoint_every: int | None = None,
) -> StudyOutcome:
    """Train every run of ``study`` not finished yet as Ray tasks; measure what is missing
    (on the driver, from stored weights); a study with [tune] is tuned by ``tune``.
    Fleets checkpoint into the store every ``checkpoint_every`` steps (default: about once a
    minute of training) and resume from there. Per-node throughput is added to the notes."""
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be a positive int, got {checkpoint_every}")
    with connected(address):
        policy = CheckpointPolicy(every_steps=checkpoint_every)
        executor = RayExecutor(device, StoreCheckpoints(store, policy))
        largest = fleet_size or (
            DEFAULT_FLEET_SIZE["cuda"] if device == "cuda" else RUNS_PER_SHARD * executor.slots.cpus
        )
        driver = Driver(store, lease_s, events)
        outcome = driver.run_study(study, executor, Worker(), engine, largest, tune)
        outcome.notes += executor.summary()
        return outcome

"""The Ray executor: each fleet is a Ray task that trains and measures it on some node.

The driver (``schedlab.execute.driver``) claims runs, hands their fleets over, and commits
each outcome as its task returns; the store stays one SQLite file on the driver's host and
workers never open it. A task asks for the CPUs of one node (one fleet per node, trained as
that many single-threaded shards), or for one GPU. A task lost with its node is retried by
Ray (the same fleet trains again from its seeds: position-independent, so the same numbers);
a task that raises fails its own runs only; Ctrl-C cancels the tasks in flight, and the driver
puts their runs back to pending.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ray

from schedlab import usercode
from schedlab.config.engines import DEFAULT_FLEET_SIZE, RUNS_PER_SHARD
from schedlab.config.study import StudySpec
from schedlab.execute.base import RunOutcome
from schedlab.execute.driver import LEASE_S, Driver, Events, StudyOutcome, TuneStudy
from schedlab.execute.work import Worker, error_line
from schedlab.plan import RunSpec
from schedlab.store.store import Store

# Ray retries a task this many times when its worker or node dies (not when it raises).
TASK_RETRIES = 3
WAIT_S = 0.5  # the longest a Ctrl-C waits to be seen


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


def _train_fleet(
    fleet: list[RunSpec], device: str, threads: int, search_dirs: list[str]
) -> FleetResult:
    """The task: train and measure one fleet on whichever node Ray chose. User modules
    (schedules, datasets, models) are found where the driver finds them: ``search_dirs``
    (the study's folder and the driver's directory; on a cluster of several machines, a
    shared file system or the modules installed on every node)."""
    import torch

    for folder in search_dirs:
        usercode.add_study_dir(folder)
    torch.set_num_threads(threads)  # the shards: one per CPU the task holds
    start = time.perf_counter()
    outcomes = list(Worker(device).train_fleet(fleet))
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
    slots: Slots = field(init=False)
    nodes: dict[str, NodeThroughput] = field(default_factory=dict)
    # Every fleet is claimed and handed over at once: Ray queues what does not fit yet.
    capacity = sys.maxsize

    def __post_init__(self) -> None:
        self.slots = Slots.of_cluster(self.device)
        self.task = ray.remote(_train_fleet).options(
            num_cpus=self.slots.cpus, num_gpus=self.slots.gpus, max_retries=TASK_RETRIES
        )

    def fleet_size(self, runs: int, largest: int) -> int:
        """Runs per fleet so that the fleets fill the slots in equal rounds: as many fleets as
        a whole number of rounds needs, each at most ``largest``, none left for a lone tail."""
        rounds = max(1, math.ceil(runs / (self.slots.count * largest)))
        return max(1, math.ceil(runs / (rounds * self.slots.count)))

    def run(self, fleets: list[list[RunSpec]]) -> Iterator[RunOutcome]:
        pending: dict[Any, list[RunSpec]] = {
            self.task.remote(fleet, self.device, self.slots.cpus, usercode.search_dirs()): fleet
            for fleet in fleets
        }
        try:
            while pending:
                # A bounded wait: Ctrl-C reaches Python only between calls into Ray.
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
                for ref in ready:
                    yield from self._outcomes(ref, pending.pop(ref))
        finally:  # Ctrl-C, or the driver stopped listening: nothing keeps training
            for ref in pending:
                ray.cancel(ref, force=True)

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


def connect(address: str | None) -> bool:
    """Join the cluster at ``address``, or start a local Ray instance; True when this call
    started or joined it (and should shut it down after)."""
    if ray.is_initialized():
        return False
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,  # schedlab's own lines say what happens
        )
    except (ConnectionError, RuntimeError, ValueError) as err:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ValueError(f"could not connect to {where}: {error_line(err)}") from err
    return True


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
) -> StudyOutcome:
    """Train every run of ``study`` not finished yet as Ray tasks; measure what is missing
    (on the driver, from stored weights); a study with [tune] is tuned by ``tune``.
    Per-node throughput is added to the notes."""
    started = connect(address)
    try:
        executor = RayExecutor(device)
        largest = fleet_size or (
            DEFAULT_FLEET_SIZE["cuda"] if device == "cuda" else RUNS_PER_SHARD * executor.slots.cpus
        )
        driver = Driver(store, lease_s, events)
        outcome = driver.run_study(study, executor, Worker(), engine, largest, tune)
        outcome.notes += executor.summary()
        return outcome
    finally:
        if started:
            ray.shutdown()

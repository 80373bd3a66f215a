"""The driver: claim -> train -> measure -> commit, for one study on one store, once.

Any number of drivers (processes, hosts) may work on one study. Each claims the runs of a
fleet with a compare-and-set in the store before training them (runs another driver claimed
first are simply not in its fleet), renews its leases from a heartbeat thread while it trains,
and commits each run in one transaction while it still owns it. When it has nothing left to
claim it waits for the runs other live drivers hold, and takes over any whose lease runs out
(or whose driver, on this host, is gone). Failures are recorded and the study goes on; Ctrl-C
puts the runs in flight back to pending.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import secrets
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import schedlab
from schedlab import plan
from schedlab.config.study import StudySpec
from schedlab.execute.base import Executor, RunOutcome
from schedlab.execute.work import Worker
from schedlab.metrics import Metric, enabled, sample_key
from schedlab.plan import RunSpec
from schedlab.store.records import PlannedRun
from schedlab.store.status import FINISHED, RunStatus, owner_is_dead, owner_name
from schedlab.store.store import DiskFullError, Store

LEASE_S = 120.0  # a claim lives this long unless renewed; renewed every quarter of it
POLL_S = 2.0  # how often a driver with nothing to claim looks at the runs others hold


@dataclass
class Events:
    """Callbacks for progress display; every one optional."""

    started: Callable[[str, int, int], None] = lambda description, done, total: None
    finished: Callable[[RunSpec, str], None] = lambda run, status: None
    length: Callable[[int], None] = lambda steps: None  # the steps of the fleets starting


@dataclass
class StudyOutcome:
    planned: int = 0
    skipped: int = 0  # finished before this driver started
    outcomes: Counter[str] = field(default_factory=Counter)  # what this driver trained
    measured: int = 0  # finished runs measured again from their stored weights
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def software_versions() -> dict[str, str]:
    return {
        "schedlab": schedlab.__version__,
        "torch": importlib.metadata.version("torch"),
        "numpy": importlib.metadata.version("numpy"),
        "python": platform.python_version(),
    }


def planned(run: RunSpec) -> PlannedRun:
    identity = run.identity()
    settings = {key: identity[key] for key in ("data", "train", "posthoc") if key in identity}
    return PlannedRun(
        run.run_id,
        run.label,
        run.dataset,
        run.schedule.name,
        identity["params"],
        run.seed,
        settings,
        run.engine,
    )


class Heartbeat:
    """Renews a driver's leases every quarter lease, on its own connection and thread."""

    def __init__(self, store: Store, owner: str, lease_s: float) -> None:
        self.path, self.owner, self.lease_s = store.path, owner, lease_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="schedlab-heartbeat", daemon=True)

    def _beat(self) -> None:
        with Store(self.path) as store:
            while not self.stop.wait(self.lease_s / 4):
                store.renew(self.owner, self.lease_s)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


# How a study with [tune] is run: (driver, study, executor, worker, engine, fleet size).
TuneStudy = Callable[["Driver", StudySpec, Executor, Worker, str, int], StudyOutcome]


class Driver:
    def __init__(self, store: Store, lease_s: float = LEASE_S, events: Events | None = None):
        self.store, self.lease_s = store, lease_s
        self.events = events or Events()
        self.owner = f"{owner_name()}:{secrets.token_hex(4)}"
        self.host, self.versions = socket.gethostname(), software_versions()
        self.finished = 0  # runs of the study known finished, for progress display

    def register(self, study: StudySpec, runs: list[RunSpec]) -> None:
        # [compare] shapes the report only: editing it registers no new plan.
        spec = study.model_dump(mode="json", exclude={"compare"})
        self.store.register_plan(study.name, spec, map(planned, runs))
        branches = [(r.run_id, r.branch.parent, r.branch.step) for r in runs if r.branch]
        if branches:
            self.store.register_branches(branches)

    def run_study(
        self,
        study: StudySpec,
        executor: Executor,
        worker: Worker,
        engine: str,
        size: int,
        tune: TuneStudy | None = None,
    ) -> StudyOutcome:
        """Train every run of the study not finished yet, then measure what is missing. A
        study with `[tune]` is handed to ``tune`` (``schedlab.tuning.search.tune_study``,
        which sits above the driver and calls back into it), which tunes, then trains the
        finals. User code (schedules, datasets, models) is tried first: what cannot run stops
        the study here, before anything is claimed."""
        check_user_schedules(study)
        check_workloads(study)
        if study.tune is not None:
            if tune is None:
                raise ValueError(
                    f"study {study.name} has [tune]: run it with `schedlab run` or "
                    "schedlab.run_study, which tune it"
                )
            outcome = tune(self, study, executor, worker, engine, size)
        else:
            outcome = self.train_study(study, executor, worker, engine, size)
        self.store.reclaim_space()
        return outcome

    def train_study(
        self, study: StudySpec, executor: Executor, worker: Worker, engine: str, size: int
    ) -> StudyOutcome:
        """Train and measure the study's grid (a study without [tune])."""
        start = time.perf_counter()
        grid = plan.expand(study, engine)
        self.register(study, grid)  # every label: two labels may name one run
        runs = plan.unique(grid)
        finished = sum(self.store.status(r.run_id) in FINISHED for r in runs)
        outcome = StudyOutcome(planned=len(runs), skipped=finished)
        self.train_runs(runs, executor, size, outcome)
        self.measure_missing(runs, worker, outcome)
        outcome.seconds = time.perf_counter() - start
        return outcome

    def train_runs(
        self, runs: list[RunSpec], executor: Executor, size: int, outcome: StudyOutcome
    ) -> None:
        """Train every one of ``runs`` (unique) not finished yet; wait for those other
        drivers hold."""
        self.finished = sum(self.store.status(r.run_id) in FINISHED for r in runs)
        tried: set[str] = set()  # runs this driver claimed: a failure is not retried here
        with Heartbeat(self.store, self.owner, self.lease_s):
            while True:
                todo = self._claimable(runs, tried)
                starts = self._starts(todo)
                fleets = plan.fleets(todo, executor.fleet_size(len(todo), size), starts)
                if todo and self._train(fleets, executor, tried, outcome, len(runs)):
                    continue
                if todo or any(self.store.status(r.run_id) == RunStatus.RUNNING for r in runs):
                    time.sleep(POLL_S)  # other drivers hold these; wait, or take them over
                else:
                    break

    def _claimable(self, runs: list[RunSpec], tried: set[str]) -> list[RunSpec]:
        """Runs to claim now: not finished nor held by a live driver, not failed here, and (a
        branch) not waiting for its trunk to reach the branch step."""
        self._expire_dead_owners()
        claimable = (RunStatus.PENDING, RunStatus.STALE, RunStatus.FAILED)
        return [
            r
            for r in runs
            if r.run_id not in tried
            and self.store.status(r.run_id) in claimable
            and not self._waits(r)
        ]

    def _waits(self, run: RunSpec) -> bool:
        """A branch waits while its trunk may still save the checkpoint it starts from. Once
        the trunk has finished or failed without one, the branch trains from step 0: the same
        numbers (before the branch step, its LR is the trunk's), more steps."""
        if run.branch is None or self.store.checkpoint_steps([run.run_id]):
            return False
        if self.store.branch_point_saved(run.branch.parent, run.branch.step):
            return False
        return self.store.status(run.branch.parent) not in (*FINISHED, RunStatus.FAILED)

    def _starts(self, runs: list[RunSpec]) -> dict[str, int]:
        """run id -> the step it resumes at: its own checkpoint's, else a branch's start."""
        starts = self.store.checkpoint_steps(r.run_id for r in runs)
        for run in runs:
            branch = run.branch
            if (
                branch is not None
                and run.run_id not in starts
                and self.store.branch_point_saved(branch.parent, branch.step)
            ):
                starts[run.run_id] = branch.step
        return starts

    def _expire_dead_owners(self) -> None:
        for run_id, owner, _ in self.store.running():
            if owner is not None and owner_is_dead(owner):
                self.store.expire_lease(run_id, owner)

    def _train(
        self,
        fleets: list[list[RunSpec]],
        executor: Executor,
        tried: set[str],
        outcome: StudyOutcome,
        total: int,
    ) -> int:
        """Claim and train ``fleets``; returns how many runs this driver claimed."""
        claims = 0
        for lo in range(0, len(fleets), executor.capacity):
            claimed = []
            for fleet in fleets[lo : lo + executor.capacity]:
                mine = [r for r in fleet if self._claim(r)]
                tried.update(r.run_id for r in mine)
                if mine:
                    claimed.append(mine)
            if not claimed:
                continue
            in_flight = {r.run_id: r for fleet in claimed for r in fleet}
            claims += len(in_flight)
            if len(claimed) > 1:
                what = f"{len(claimed)} fleets, {len(in_flight)} runs"
            elif len(claimed[0]) > 1:
                what = f"fleet of {len(claimed[0])} runs"
            else:
                what = describe(claimed[0][0])
            self.events.length(max(r.budget for fleet in claimed for r in fleet))
            self.events.started(what, self.finished, total)
            try:
                for result in executor.run(claimed):
                    self._commit(result, outcome)
                    in_flight.pop(result.run.run_id, None)
            except KeyboardInterrupt:
                for run_id in in_flight:
                    self.store.release(run_id, self.owner, "interrupted")
                raise
            except DiskFullError:  # back to pending where the store still takes a write
                for run_id in in_flight:
                    with contextlib.suppress(DiskFullError):
                        self.store.release(run_id, self.owner, "the disk under the store is full")
                raise
            for run in in_flight.values():  # an executor that lost a run says nothing of it
                self.store.mark_failed(run.run_id, self.owner, "the executor returned no result")
                outcome.outcomes[RunStatus.FAILED] += 1
        return claims

    def _claim(self, run: RunSpec) -> bool:
        return self.store.claim(run.run_id, self.owner, self.lease_s, self.host, self.versions)

    def _commit(self, result: RunOutcome, outcome: StudyOutcome) -> None:
        run = result.run
        if result.commit is not None:
            kept = self.store.finish(run.run_id, self.owner, result.commit)
            status = str(result.commit.status)
        else:
            kept = self.store.mark_failed(run.run_id, self.owner, result.error or "unknown error")
            status = str(RunStatus.FAILED)
        if not kept:  # the lease ran out and another driver took the run: its result stands
            outcome.notes.append(f"{describe(run)}: lease lost to another driver, result dropped")
            status = "lost"
        outcome.outcomes[status] += 1
        self.finished += 1
        self.events.finished(run, status)

    def measure_missing(self, runs: list[RunSpec], worker: Worker, outcome: StudyOutcome) -> None:
        """Measure, from stored weights and samples, every metric a finished run lacks under
        the study's eval settings (a new metric, or new `[eval]` settings)."""
        for run in runs:
            missing = missing_metrics(self.store, run)
            if not missing:
                continue
            (record,) = self.store.records_for([(run.label, run.run_id)], {})
            measurements, samples, notes = worker.measure_stored(
                run,
                record.training_time if record.training_time is not None else float("nan"),
                self.store.weights(run.run_id),
                self.store.samples(run.run_id, sample_key(run.settings.eval)),
                missing,
            )
            self.store.add_measurements(run.run_id, measurements, samples)
            outcome.measured += 1
            outcome.notes += [f"{describe(run)}: {note}" for note in notes]


def missing_metrics(store: Store, run: RunSpec) -> list[Metric]:
    """The enabled metrics a finished (done) run has no measurement of under its eval
    settings; none for a run not done."""
    if store.status(run.run_id) != RunStatus.DONE:
        return []
    have = store.measured_keys(run.run_id)
    return [
        m for m in enabled(run.settings.eval) if (m.key, m.key_for(run.settings.eval)) not in have
    ]


def check_user_schedules(study: StudySpec) -> None:
    """Step every user-defined schedule of the study as given over the study's steps."""
    from schedlab.schedules.curves import check_user_schedule
    from schedlab.schedules.registry import lookup, resolve

    for entry in study.schedules:
        if lookup(entry.name).open_params:
            for steps in study.lengths:
                check_user_schedule(resolve(entry.name, entry.params, steps), steps)


def check_workloads(study: StudySpec) -> None:
    """Generate each user dataset's training and held-out sets (its shape and values checked)
    and try the model on each dataset: one ValueError naming what failed."""
    from schedlab import data
    from schedlab.config.study import model_spec
    from schedlab.model.check import check_model

    for dataset in study.datasets:
        if data.get(dataset).source_hash is not None:
            data.load(dataset, study.data.n, dimension=study.data.dim)
            data.load_heldout(dataset, study.eval.heldout, study.data.dim)
        spec = model_spec(study.model, study.train, dataset, study.data.dim)
        check_model(spec, dataset, study.train.timesteps)


def describe(run: RunSpec) -> str:
    return f"{run.dataset}/{run.label}/seed {run.seed}"

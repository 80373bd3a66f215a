"""The local executor: fleets train one after another in this process."""

from __future__ import annotations

from collections.abc import Iterator

from schedlab import plan
from schedlab.config.engines import DEFAULT_FLEET_SIZE, check_engine_options
from schedlab.config.study import StudySpec
from schedlab.execute.base import RunOutcome
from schedlab.execute.checkpoints import StoreCheckpoints
from schedlab.execute.driver import LEASE_S, Driver, Events, StudyOutcome, TuneStudy
from schedlab.execute.work import RunCurves, Worker
from schedlab.plan import RunSpec
from schedlab.store.store import Store
from schedlab.training.checkpoint import CheckpointPolicy
from schedlab.training.common import Progress
from schedlab.trials import planned_runs


class LocalExecutor:
    capacity = 1

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def fleet_size(self, runs: int, largest: int) -> int:
        return largest

    def run(self, fleets: list[list[RunSpec]]) -> Iterator[RunOutcome]:
        for fleet in fleets:
            yield from self.worker.train_fleet(fleet)


def run_study(
    study: StudySpec,
    store: Store,
    events: Events | None = None,
    engine: str = "fleet",
    fleet_size: int | None = None,
    device: str = "cpu",
    use_compile: bool | None = None,
    progress: Progress | None = None,
    lease_s: float = LEASE_S,
    checkpoint_every: int | None = None,
    tune: TuneStudy | None = None,
    curves: RunCurves | None = None,
) -> StudyOutcome:
    """Train (in this process) every run of ``study`` not finished yet, measure what is missing;
    a study with [tune] is tuned by ``tune`` (``schedlab.tuning.search.tune_study``);
    ``curves(run, first_step, losses, lrs)`` is told each run's curves while it trains.

    Fleets checkpoint their runs into the store every ``checkpoint_every`` steps (default:
    about once a minute of training) and resume from there."""
    check_engine_options(engine, fleet_size, device)
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be a positive int, got {checkpoint_every}")
    checkpoints = StoreCheckpoints(store, CheckpointPolicy(every_steps=checkpoint_every))
    worker = Worker(device, use_compile, progress, checkpoints, curves)
    size = fleet_size or DEFAULT_FLEET_SIZE[device]
    driver = Driver(store, lease_s, events)
    return driver.run_study(study, LocalExecutor(worker), worker, engine, size, tune)


def measure_study(study: StudySpec, store: Store, engine: str = "fleet") -> StudyOutcome:
    """Measure every finished run of ``study`` from its stored weights; train nothing."""
    runs = planned_runs(study, engine, store)
    driver = Driver(store)
    driver.register(study, runs)
    runs = plan.unique(runs)
    outcome = StudyOutcome(planned=len(runs))
    driver.measure_missing(runs, Worker(), outcome)
    return outcome

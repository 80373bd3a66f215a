"""Tuning a study: Optuna asks, schedlab trains each batch as fleets, Optuna is told; then the
best configuration of every schedule x dataset trains on the study's seeds.

Optuna keeps each search in an SQLite file beside the store (``<store>.optuna.sqlite``), one
Optuna study per search key. A search advances in rounds of ``[tune] batch`` trials: the round's
end is written to the Optuna study before its first ask, every trial of the round is asked,
trained (the driver's claims: any number of processes may share the work) and told before the
next round starts. Each parameter of each trial is drawn by a sampler seeded for exactly that
draw (``samplers``), so a search killed anywhere and resumed asks the same trials, reuses the
ones asked already (trials left running) and trains none twice (their runs are in the store).
Asks and tells hold an exclusive lock on the Optuna file, so two processes never ask one
round twice.
"""

from __future__ import annotations

import fcntl
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import Trial, TrialState

from schedlab import plan
from schedlab.execute.driver import Driver, StudyOutcome, planned
from schedlab.store.reads import StoreReads
from schedlab.store.status import FINISHED
from schedlab.trials import Search, planned_runs, search_result, searches
from schedlab.tuning.samplers import make_sampler

if TYPE_CHECKING:
    from schedlab.config.study import StudySpec
    from schedlab.execute.base import Executor
    from schedlab.execute.work import Worker
    from schedlab.plan import RunSpec

ROUND_END = "schedlab_round_end"  # Optuna user attribute: the trial number the round ends at
# A trial of a round: its search, its number, its runs.
RoundTrial = tuple[Search, int, list["RunSpec"]]


def optuna_path(store_path: Path) -> Path:
    """Where a store's Optuna searches live: beside it."""
    return store_path.with_name(f"{store_path.stem}.optuna.sqlite")


@contextmanager
def locked(path: Path) -> Iterator[None]:
    with Path(f"{path}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Tuner:
    """The Optuna side of a tuned study's searches."""

    def __init__(self, study: StudySpec, engine: str, store_path: Path) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.path = optuna_path(store_path)
        self.searches = searches(study, engine)
        with locked(self.path):
            storage = optuna.storages.RDBStorage(
                f"sqlite:///{self.path}", engine_kwargs={"connect_args": {"timeout": 60}}
            )
            self.studies = {
                s.key: optuna.create_study(
                    storage=storage,
                    study_name=s.key,
                    direction="minimize" if s.minimize else "maximize",
                    load_if_exists=True,
                )
                for s in self.searches
            }

    def next_round(self) -> list[RoundTrial]:
        """(search, trial number, its runs) for every trial of every search's current round:
        the round in progress, else a new one; empty when every budget is spent."""
        out = []
        with locked(self.path):
            for search in self.searches:
                study = self.studies[search.key]
                for trial in self._round(search, study):
                    values = self._filled(search, study, trial)
                    out.append((search, trial.number, search.runs(values)))
        return out

    def _round(self, search: Search, study: optuna.Study) -> list[Trial]:
        trials = study.get_trials(deepcopy=False)
        end = study.user_attrs.get(ROUND_END, 0)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if not running and len(trials) >= end:  # the last round is over: start the next
            if len(trials) >= search.budget:
                return []
            end = min(search.budget, len(trials) + search.tune.batch)
            study.set_user_attr(ROUND_END, end)
        out = [Trial(study, t._trial_id) for t in running]
        for number in range(len(trials), end):
            self._use_sampler(search, study, number, "")
            trial = study.ask()
            if trial.number != number:
                raise RuntimeError(
                    f"Optuna search {search.key} asked trial {trial.number}, expected {number}"
                )
            out.append(trial)
        return out

    def _use_sampler(self, search: Search, study: optuna.Study, number: int, param: str) -> None:
        tune = search.tune
        dims = list(search.dims)
        study.sampler = make_sampler(
            tune.sampler, tune.seed, search.key, number, param, dims, tune.batch
        )

    def _filled(self, search: Search, study: optuna.Study, trial: Trial) -> dict[str, float]:
        """Every dimension's value for ``trial``: stored ones as they are, the others drawn."""
        values: dict[str, float] = {}
        for dim in search.dims:
            self._use_sampler(search, study, trial.number, dim.name)
            if dim.integer:
                values[dim.name] = trial.suggest_int(
                    dim.name, int(dim.low), int(dim.high), log=dim.log
                )
            else:
                values[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high, log=dim.log)
        return values

    def tell(self, store: StoreReads, round_trials: list[RoundTrial]) -> bool:
        """Tell Optuna the score of every trial of the round; False when some trial has no
        result yet (its runs were lost to an interrupted driver)."""
        told = True
        with locked(self.path):
            for search in {s.key: s for s, _, _ in round_trials}.values():
                numbers = {n for s, n, _ in round_trials if s.key == search.key}
                study = self.studies[search.key]
                for trial in search_result(store, search).trials:
                    if trial.number not in numbers:
                        continue
                    if trial.state == "pending":
                        told = False
                    elif trial.state == "failed":
                        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                    else:
                        study.tell(trial.number, trial.value, skip_if_finished=True)
        return told


def confirm(
    driver: Driver, searches: list[Search], executor: Executor, size: int, outcome: StudyOutcome
) -> None:
    """Train the best ``[tune] confirm`` trials of every finished search again at the final
    length, on the tuning seeds (the study's seeds stay unseen), kept under the search's
    confirmation key by trial number."""
    wanted = [
        (search, trial.number, search.runs(trial.values, search.final_steps))
        for search in searches
        for trial in search_result(driver.store, search).to_confirm()
    ]
    if not wanted:
        return
    driver.store.register_trials(
        (search.confirm_key, number, planned(run))
        for search, number, runs in wanted
        for run in runs
    )
    driver.train_runs(
        plan.unique([run for *_, runs in wanted for run in runs]), executor, size, outcome
    )


def tune_study(
    driver: Driver,
    study: StudySpec,
    executor: Executor,
    worker: Worker,
    engine: str,
    size: int,
) -> StudyOutcome:
    """Tune every search to its budget, then train and measure the study's ranked runs."""
    start = time.perf_counter()
    outcome = StudyOutcome()
    driver.register(study, plan.expand(study, engine))  # the schedules trained as given
    tuner = Tuner(study, engine, driver.store.path)
    while round_trials := tuner.next_round():
        driver.store.register_trials(
            (search.key, number, planned(run))
            for search, number, runs in round_trials
            for run in runs
        )
        runs = plan.unique([run for *_, runs in round_trials for run in runs])
        driver.train_runs(runs, executor, size, outcome)
        if not tuner.tell(driver.store, round_trials):
            break  # a trial without a result: leave its round to a later `run`
    confirm(driver, tuner.searches, executor, size, outcome)
    ranked = planned_runs(study, engine, driver.store)
    driver.register(study, ranked)  # every label: two labels may name one run
    finals = plan.unique(ranked)
    driver.train_runs(finals, executor, size, outcome)
    driver.measure_missing(finals, worker, outcome)
    trial_runs = {
        run_id
        for search in tuner.searches
        for key in (search.key, search.confirm_key)
        for trial, _, run_id in driver.store.trial_runs(key)
        if trial < search.budget
    }
    every = trial_runs | {run.run_id for run in finals}
    unfinished = sum(driver.store.status(run_id) not in FINISHED for run_id in every)
    outcome.planned = len(every)
    outcome.skipped = len(every) - sum(outcome.outcomes.values()) - unfinished
    outcome.seconds = time.perf_counter() - start
    return outcome

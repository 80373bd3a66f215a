"""The searches of a tuned study, their trials' runs, and what the store says of them.

One *search* per tuned schedule x dataset: its space, its budget, the settings its trials
train with. A search's key hashes everything that decides which configurations it tries
(not the trial budget: raising it continues the search). A trial is one configuration trained
on every tuning seed; its score is the objective's mean over them. Everything here reads
schedlab's store only (no Optuna, no torch), so `status`, `export` and `report` find the
chosen configurations as `run` does.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from schedlab.config.engines import engine_for
from schedlab.config.entries import ScheduleEntry
from schedlab.config.settings import PosthocSettings, Settings
from schedlab.config.space import Dim, search_space
from schedlab.config.study import StudySpec
from schedlab.config.tune import TuneSettings
from schedlab.metrics import METRICS
from schedlab.plan import NUMERIC_VERSION, Chosen, RunSpec, expand
from schedlab.schedules.registry import resolve
from schedlab.store.reads import StoreReads
from schedlab.store.status import RunStatus


@dataclass(frozen=True)
class Search:
    dataset: str
    entry: ScheduleEntry
    dims: tuple[Dim, ...]
    tune: TuneSettings
    settings: Settings  # the trials' (train.steps = the tuning steps)
    engine: str
    key: str

    @property
    def label(self) -> str:
        return self.entry.display

    @property
    def minimize(self) -> bool:
        return METRICS[self.tune.objective].direction == "lower"

    def runs(self, values: Mapping[str, Any]) -> list[RunSpec]:
        """The runs of one trial (one per tuning seed); ``values`` has a value per dim."""
        lr = values.get("lr", self.settings.train.lr)
        params = {**self.entry.params, **{k: v for k, v in values.items() if k != "lr"}}
        spec = resolve(self.entry.name, params, self.settings.train.steps)
        train = self.settings.train.model_copy(update={"lr": lr})
        settings = self.settings.model_copy(update={"train": train})
        return [
            RunSpec(
                self.dataset,
                spec,
                self.label,
                seed,
                settings,
                engine_for(self.engine, spec),
                metrics=(self.tune.objective,),
            )
            for seed in self.tune.tune_seeds
        ]


def searches(study: StudySpec, engine: str) -> list[Search]:
    """One search per tuned schedule x dataset, in the study's order."""
    tune = study.tune
    if tune is None:
        return []
    out = []
    objective_key = METRICS[tune.objective].key_for(study.eval)
    for dataset in study.datasets:
        for entry in study.tuned_entries():
            dims = tuple(search_space(entry, tune, study.tune_steps))
            base = study.settings_for(entry)
            train = base.train.model_copy(update={"steps": study.tune_steps})
            # A trial is scored by its objective alone: it tracks no post-hoc EMA.
            settings = base.model_copy(update={"train": train, "ema": PosthocSettings()})
            identity = {
                "dataset": dataset,
                "schedule": entry.name,
                "params": entry.params,
                "dims": [asdict(d) for d in dims],
                "tune": tune.model_dump(mode="json", exclude={"trials", "space"}),
                "objective": objective_key,
                "data": settings.data.model_dump(mode="json", exclude_none=True),
                "train": settings.train.model_dump(mode="json", exclude_none=True),
                "engine": engine,
                "numeric_version": NUMERIC_VERSION,
            }
            canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
            key = hashlib.sha256(canonical.encode()).hexdigest()[:20]
            out.append(Search(dataset, entry, dims, tune, settings, engine, key))
    return out


@dataclass(frozen=True)
class TrialResult:
    number: int
    values: dict[str, Any]  # lr and the tuned parameters
    params: dict[str, Any]  # every schedule parameter of its runs
    state: str  # done | diverged | failed | pending
    value: float  # the objective's mean over the tuning seeds; the worst possible if diverged
    seconds: float  # training time of its runs
    steps: int  # optimizer steps of its runs


@dataclass(frozen=True)
class SearchResult:
    search: Search
    trials: list[TrialResult] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return len(self.trials) >= self.search.tune.trials and all(
            t.state != "pending" for t in self.trials
        )

    @property
    def best(self) -> TrialResult | None:
        """The trial with the best objective (lowest number among equals), once all are in."""
        scored = [t for t in self.trials if t.state == "done" and math.isfinite(t.value)]
        if not self.complete or not scored:
            return None
        sign = 1 if self.search.minimize else -1
        return min(scored, key=lambda t: (sign * t.value, t.number))


def search_result(store: StoreReads, search: Search) -> SearchResult:
    """The trials of ``search`` the store holds, within its budget, in trial order."""
    by_trial: dict[int, list[str]] = {}
    for trial, _, run_id in store.trial_runs(search.key):
        if trial < search.tune.trials:
            by_trial.setdefault(trial, []).append(run_id)
    mkey = {search.tune.objective: METRICS[search.tune.objective].key_for(search.settings.eval)}
    trials = []
    for number, run_ids in sorted(by_trial.items()):
        records = store.records_for([(search.label, r) for r in run_ids], mkey)
        if len(records) < len(search.tune.tune_seeds):
            continue
        first = records[0]
        # The LR always (tuned or held), then the tuned schedule parameters.
        values = {"lr": first.settings["train"]["lr"]} | {
            d.name: first.params.get(d.name) for d in search.dims if d.name != "lr"
        }
        statuses = {r.status for r in records}
        scores = [r.metrics[search.tune.objective] for r in records]
        if RunStatus.DIVERGED in statuses:
            state, value = "diverged", math.inf if search.minimize else -math.inf
        elif statuses == {RunStatus.DONE} and all(math.isfinite(v) for v in scores):
            state, value = "done", math.fsum(scores) / len(scores)
        elif RunStatus.FAILED in statuses or statuses == {RunStatus.DONE}:
            state, value = "failed", math.nan  # a done run without its objective: unscored
        else:
            state, value = "pending", math.nan
        seconds = math.fsum(r.training_time or 0.0 for r in records)
        steps = int(first.settings["train"]["steps"]) * len(records)
        trials.append(TrialResult(number, values, first.params, state, value, seconds, steps))
    return SearchResult(search, trials)


def chosen_configs(
    study: StudySpec, engine: str, store: StoreReads
) -> dict[tuple[str, str], Chosen]:
    """(dataset, label) -> the best trial's (lr, schedule parameters), for finished searches."""
    out = {}
    for search in searches(study, engine):
        best = search_result(store, search).best
        if best is not None:
            out[search.dataset, search.label] = (best.values["lr"], best.params)
    return out


def planned_runs(study: StudySpec, engine: str, store: StoreReads) -> list[RunSpec]:
    """The runs a study ranks: its grid, with each tuned schedule at its chosen configuration
    (left out where tuning is not finished)."""
    chosen = chosen_configs(study, engine, store) if study.tune is not None else None
    return expand(study, engine, chosen)

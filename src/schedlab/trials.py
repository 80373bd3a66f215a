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
from schedlab.config.space import Dim, carried, search_space
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
    final_steps: int  # the study's length: what confirmation trains at

    @property
    def label(self) -> str:
        return self.entry.display

    @property
    def minimize(self) -> bool:
        return METRICS[self.tune.objective].direction == "lower"

    @property
    def budget(self) -> int:
        """Trials this search asks: ``trials``, or ``trials_per_parameter`` per dimension."""
        per = self.tune.trials_per_parameter
        return self.tune.trials if per is None else per * max(1, len(self.dims))

    @property
    def confirm_key(self) -> str:
        """Where the confirmation of its best trials at the final length is kept."""
        return f"{self.key}:confirm"

    def carried(self, params: Mapping[str, Any], steps: int | None = None) -> dict[str, Any]:
        """Schedule parameters tuned at the tuning length, for a run of ``steps`` (default
        the study's length)."""
        tuned = [d.name for d in self.dims]
        to = steps or self.final_steps
        return carried(self.entry, params, tuned, self.settings.train.steps, to)

    def runs(self, values: Mapping[str, Any], steps: int | None = None) -> list[RunSpec]:
        """The runs of one trial (one per tuning seed); ``values`` has a value per dim;
        ``steps``: train this long instead of the tuning length (confirmation)."""
        lr = values.get("lr", self.settings.train.lr)
        params = {**self.entry.params, **{k: v for k, v in values.items() if k != "lr"}}
        if steps is not None and steps != self.settings.train.steps:
            params = self.carried(params, steps)
        steps = steps or self.settings.train.steps
        spec = resolve(self.entry.name, params, steps)
        train = self.settings.train.model_copy(update={"lr": lr, "steps": steps})
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
                "tune": tune.model_dump(
                    mode="json", exclude={"trials", "trials_per_parameter", "confirm", "space"}
                ),
                "objective": objective_key,
                "data": settings.data.model_dump(mode="json", exclude_none=True),
                "train": settings.train.model_dump(mode="json", exclude_none=True),
                "engine": engine,
                "numeric_version": NUMERIC_VERSION,
            }
            canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
            key = hashlib.sha256(canonical.encode()).hexdigest()[:20]
            search = Search(dataset, entry, dims, tune, settings, engine, key, study.train.steps)
            out.append(search)
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
    confirmed: list[TrialResult] = field(default_factory=list)  # its best, at the final length

    @property
    def complete(self) -> bool:
        return len(self.trials) >= self.search.budget and all(
            t.state != "pending" for t in self.trials
        )

    def ranked(self) -> list[TrialResult]:
        """The scored trials, best first (lower number among equals), once all are in."""
        scored = [t for t in self.trials if t.state == "done" and math.isfinite(t.value)]
        if not self.complete:
            return []
        sign = 1 if self.search.minimize else -1
        return sorted(scored, key=lambda t: (sign * t.value, t.number))

    @property
    def best(self) -> TrialResult | None:
        """The trial with the best objective at the tuning length, once all are in."""
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def to_confirm(self) -> list[TrialResult]:
        """The trials ``[tune] confirm`` retrains at the final length (the best ones)."""
        return self.ranked()[: self.search.tune.confirm]

    @property
    def chosen(self) -> TrialResult | None:
        """The configuration the study trains on its seeds: the best at the tuning length, or
        (with confirmation) the best of the confirmed trials at the final length, once every
        one is in (the tuning-length best when all of them diverged or failed)."""
        if self.search.tune.confirm == 0:
            return self.best
        wanted = self.to_confirm()
        confirmed = {t.number: t for t in self.confirmed}
        if not wanted or any(
            t.number not in confirmed or confirmed[t.number].state == "pending" for t in wanted
        ):
            return None
        scored = [
            confirmed[t.number]
            for t in wanted
            if confirmed[t.number].state == "done" and math.isfinite(confirmed[t.number].value)
        ]
        if not scored:
            return self.best
        sign = 1 if self.search.minimize else -1
        winner = min(scored, key=lambda t: (sign * t.value, t.number))
        return next(t for t in wanted if t.number == winner.number)


def search_result(store: StoreReads, search: Search) -> SearchResult:
    """The trials of ``search`` the store holds, within its budget, in trial order, and
    the confirmation of its best at the final length."""
    return SearchResult(
        search,
        scored_trials(store, search, search.key),
        scored_trials(store, search, search.confirm_key),
    )


def scored_trials(store: StoreReads, search: Search, key: str) -> list[TrialResult]:
    """The trials kept under ``key`` (a search's, or its confirmation's), scored."""
    by_trial: dict[int, list[str]] = {}
    for trial, _, run_id in store.trial_runs(key):
        if trial < search.budget:
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
    return trials


def chosen_configs(
    study: StudySpec, engine: str, store: StoreReads
) -> dict[tuple[str, str], Chosen]:
    """(dataset, label) -> the best trial's (lr, schedule parameters), for finished searches."""
    out = {}
    for search in searches(study, engine):
        best = search_result(store, search).chosen
        if best is not None:
            out[search.dataset, search.label] = (best.values["lr"], search.carried(best.params))
    return out


def planned_runs(study: StudySpec, engine: str, store: StoreReads) -> list[RunSpec]:
    """The runs a study ranks: its grid, with each tuned schedule at its chosen configuration
    (left out where tuning is not finished)."""
    chosen = chosen_configs(study, engine, store) if study.tune is not None else None
    return expand(study, engine, chosen)

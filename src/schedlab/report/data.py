"""A study as the report sees it: the store's records, grouped, in the study's order."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from schedlab import data
from schedlab.config.budgets import budget_label, split_budget_label
from schedlab.config.settings import EvalSettings, TargetSettings
from schedlab.config.study import default_baseline
from schedlab.measure.targets import dataset_targets, with_time_to_target
from schedlab.metrics import METRICS, measurement_keys, sample_key
from schedlab.model import registry as models
from schedlab.store.records import RunRecord
from schedlab.store.status import FINISHED, RunStatus
from schedlab.store.store import Store
from schedlab.trials import SearchResult

# The metrics with a table of their own: key -> (title with unit, decimals), registry order.
TABLE_METRICS = {m.key: (m.label, m.digits) for m in METRICS.values() if m.table}
PAIRED_METRICS = tuple(m.key for m in METRICS.values() if m.paired)


@dataclass
class StudyView:
    name: str
    spec: dict[str, Any]
    records: list[RunRecord]
    labels: list[str]
    datasets: list[str]
    baseline: str
    sample_key: str  # the key of the samples the study's eval settings draw
    targets: dict[str, float]  # dataset -> the held-out EMA loss time-to-target aims at
    not_in_store: int = 0  # planned runs the store has never seen (not run yet)
    other_plans: int = 0  # other configurations registered under this study's name
    tuning: list[SearchResult] = field(default_factory=list)  # a tuned study's searches
    # label -> the other labels of its very runs (the paper's baseline is cosine): shown once
    aliases: dict[str, list[str]] = field(default_factory=dict)

    @property
    def budgets(self) -> list[int]:
        """The study's training budgets (empty: it has none)."""
        return list((self.spec.get("budgets") or {}).get("steps", []))

    def baseline_for(self, label: str) -> str:
        """The label ``label`` is compared with: the baseline, at its budget in a budgets study."""
        budget = split_budget_label(label)[1]
        if budget is None or not self.budgets:
            return self.baseline
        return budget_label(split_budget_label(self.baseline)[0], budget)

    def at_largest_budget(self, label: str) -> bool:
        """True for every label of a study without budgets."""
        return not self.budgets or split_budget_label(label)[1] == self.budgets[-1]

    def display(self, label: str) -> str:
        """A label as tables and figures show it: with the other names of its runs."""
        others = self.aliases.get(label)
        return f"{label} (= {', '.join(others)})" if others else label

    def label_of(self, name: str) -> str:
        """The label shown for ``name``, which may be another name of a shown label's runs."""
        return next((label for label, others in self.aliases.items() if name in others), name)

    def finished(self) -> list[RunRecord]:
        return [r for r in self.records if r.status == RunStatus.DONE]

    def sample_shape(self, dataset: str) -> tuple[int, ...]:
        """One sample's shape as the study's model sees it (what a metric applies to)."""
        name = (self.spec.get("model") or {}).get("name", models.DEFAULT)
        dim = (self.spec.get("data") or {}).get("dim")
        return models.lookup(name).sample_shape(data.shape(dataset, dim), dataset)

    def values(self, label: str, dataset: str, metric: str) -> dict[int, float]:
        """seed -> metric for the finished runs of one cell."""
        return {
            r.seed: r.metrics.get(metric, math.nan)
            for r in self.records
            if r.label == label and r.dataset == dataset and r.status == RunStatus.DONE
        }

    def same_runs_as_baseline(self, label: str) -> bool:
        """True when a label names its baseline's very runs (the paper's baseline and cosine)."""

        def ids(name: str) -> set[str]:
            return {r.run_id for r in self.records if r.label == name}

        baseline = self.baseline_for(label)
        return label != baseline and ids(label) == ids(baseline)

    def floor(self, metric: str, dataset: str) -> float:
        """What a perfect model scores on ``metric`` here (its registered floor), or NaN."""
        key = METRICS[metric].floor
        floors = [
            r.metrics.get(key, math.nan)
            for r in self.records
            if key and r.dataset == dataset and r.status in FINISHED
        ]
        return next((f for f in floors if math.isfinite(f)), math.nan)

    def missing(self) -> list[RunRecord]:
        return [r for r in self.records if r.status not in FINISHED]

    def problems(self) -> list[RunRecord]:
        return [r for r in self.records if r.status in (RunStatus.FAILED, RunStatus.DIVERGED)]


@dataclass(frozen=True)
class PlannedStudy:
    """A study as its file plans it: the validated spec and its runs."""

    spec: dict[str, Any]
    pairs: list[tuple[str, str]]  # (label, run id), in plan order
    tuning: list[SearchResult] = field(default_factory=list)


def study_records(store: Store, study: str) -> tuple[dict[str, Any], list[RunRecord]]:
    """(spec, records) of the study's plan as last registered, measured under its eval settings."""
    latest = store.latest_plan(study)
    if latest is None:
        raise ValueError(f"study {study!r} is not in {store.path}; run `schedlab run` on it first")
    plan_id, spec = latest
    settings = EvalSettings.model_validate(spec.get("eval", {}))
    return spec, store.records_for(store.plan_pairs(plan_id), measurement_keys(settings))


def planned_records(store: Store, planned: PlannedStudy) -> list[RunRecord]:
    """The records of exactly the runs a study file plans, under its eval settings."""
    settings = EvalSettings.model_validate(planned.spec.get("eval", {}))
    return store.records_for(planned.pairs, measurement_keys(settings))


def with_targets(
    store: Store, spec: dict[str, Any], records: list[RunRecord], baseline: str
) -> tuple[list[RunRecord], dict[str, float]]:
    """The records with time-to-target filled in, and each dataset's target."""
    targets = dataset_targets(
        records, baseline, TargetSettings.model_validate(spec.get("target", {}))
    )
    curves = store.heldout_curves(r.run_id for r in records)
    return with_time_to_target(records, curves, targets), targets


def load_study_view(
    store: Store, study: str, baseline: str | None = None, planned: PlannedStudy | None = None
) -> StudyView:
    """The runs ``planned`` (a study file's plan), or else the study's plan as last registered,
    measured under that plan's eval settings."""
    if planned is None:
        spec, records = study_records(store, study)
    else:
        spec, records = planned.spec, planned_records(store, planned)
        if not records:
            raise ValueError(
                f"no run of this {study!r} file is in {store.path}; run `schedlab run` on it first"
            )
    settings = EvalSettings.model_validate(spec.get("eval", {}))
    labels = list(dict.fromkeys(r.label for r in records))
    datasets = list(dict.fromkeys(r.dataset for r in records))
    if baseline is None:
        baseline = default_baseline(labels)
    elif baseline not in labels:
        raise ValueError(f"unknown baseline {baseline!r}; schedules: {', '.join(labels)}")
    records, targets = with_targets(store, spec, records, baseline)
    stored = {r.run_id for r in records}
    unstored = {r for _, r in planned.pairs} - stored if planned else set()
    records, labels, aliases = one_label_per_run(records, labels)
    if baseline not in labels:  # asked for by another name of a label's runs
        baseline = next(label for label, others in aliases.items() if baseline in others)
    run_ids = {r.run_id for r in records}
    return StudyView(
        study,
        spec,
        records,
        labels,
        datasets,
        baseline,
        sample_key(settings),
        targets,
        not_in_store=len(unstored),
        other_plans=sum(
            not run_ids.issuperset(r for _, r in store.plan_pairs(plan_id))
            for plan_id in store.plans(study)
        ),
        tuning=planned.tuning if planned else [],
        aliases=aliases,
    )


def one_label_per_run(
    records: list[RunRecord], labels: list[str]
) -> tuple[list[RunRecord], list[str], dict[str, list[str]]]:
    """Labels that name the very same runs as an earlier label are folded into it: (records
    of the kept labels, kept labels, kept label -> its other names)."""
    ids: dict[str, frozenset[str]] = {}
    for label in labels:
        ids[label] = frozenset(r.run_id for r in records if r.label == label)
    kept: list[str] = []
    aliases: dict[str, list[str]] = {}
    for label in labels:
        same = next((k for k in kept if ids[k] == ids[label] and ids[k]), None)
        if same is None:
            kept.append(label)
        else:
            aliases.setdefault(same, []).append(label)
    return [r for r in records if r.label in kept], kept, aliases

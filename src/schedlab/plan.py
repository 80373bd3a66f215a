"""Planning a study: its grid of runs, their training identity, and the fleets they train in.

A run's *training identity* hashes everything that determines its weights: the dataset and its
dimension, the data and training settings, the schedule with its resolved parameters, the
seed, the engine and schedlab's numeric version, and (when a study turns it on) the post-hoc
EMA snapshots it keeps. The label does not count (two labels for one
configuration are one run), and neither does any eval setting: measurements are keyed apart
(``schedlab.metrics``), so changing how a run is measured never retrains it.
Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schedlab import data
from schedlab.config.budgets import branch_step, budget_label
from schedlab.config.engines import Engine, engine_for
from schedlab.config.entries import ScheduleEntry
from schedlab.config.settings import PosthocSettings, Settings
from schedlab.config.study import StudySpec, model_spec
from schedlab.model.registry import ModelSpec
from schedlab.schedules.registry import ScheduleSpec, resolve

# Bump when a change alters the numbers a run produces: old results then get new ids.
# 2: fleets pad every member to 64-byte boundaries (position-independent round-off).
NUMERIC_VERSION = 2


@dataclass(frozen=True)
class Branch:
    """Where a run starts: its trunk's checkpoint at ``step``."""

    parent: str  # the trunk's run id
    step: int


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    schedule: ScheduleSpec
    label: str
    seed: int
    settings: Settings
    engine: Engine
    # The metrics to measure when it is trained (not part of its identity); empty: every one
    # enabled. A tuning trial measures only its objective.
    metrics: tuple[str, ...] = ()
    # A branch starts from its trunk's checkpoint (part of its identity; the numbers are those
    # of the same schedule trained straight through).
    branch: Branch | None = None
    # A trunk keeps its checkpoints at these steps until its branches have committed.
    keep_at: tuple[int, ...] = ()

    @property
    def budget(self) -> int:
        return self.settings.train.steps

    @property
    def dim(self) -> int:
        return data.dim(self.dataset, self.settings.data.dim)

    @property
    def model(self) -> ModelSpec:
        """The model it trains, built for the shape its samples have for that model."""
        s = self.settings
        return model_spec(s.model, s.train, self.dataset, s.data.dim)

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape as its model sees it ([d] for the mlp, [1, 8, 8] digits for
        the unet)."""
        return self.model.shape

    def identity(self) -> dict[str, Any]:
        """Everything that determines the run's weights (not the label, not eval settings)."""
        data_settings = self.settings.data.model_dump(mode="json", exclude_none=True)
        if data.get(self.dataset).dim is not None:
            # A dataset of fixed dimension ignores `[data] dim`: digits in a study that sets
            # it for a mixture are the same runs as digits alone.
            data_settings.pop("dim", None)
        source = self.schedule.definition.source_hash
        data_source = data.get(self.dataset).source_hash
        posthoc = self.settings.ema
        model = self.model
        return {
            # The model when it is not the mlp (whose sizes [train] holds: ids from before
            # models were an axis stay), and a user dataset's module source.
            **({"model": model.identity()} if model.name != "mlp" else {}),
            **({"dataset_source": data_source} if data_source is not None else {}),
            # Post-hoc EMA's snapshots are part of what training leaves (absent when off).
            **({"posthoc": posthoc.model_dump(mode="json")} if posthoc.posthoc else {}),
            # A user schedule's module source (absent for schedlab's own: their ids stay).
            **({"branch": dataclasses.asdict(self.branch)} if self.branch is not None else {}),
            **({"schedule_source": source} if source is not None else {}),
            "dataset": self.dataset,
            "dim": self.dim,
            "schedule": self.schedule.name,
            "params": self.schedule.params,
            "seed": self.seed,
            # A setting left at None is not written: adding an optional setting to schedlab
            # changes no existing run's id.
            "data": data_settings,
            "train": self.settings.train.model_dump(mode="json", exclude_none=True),
            "engine": self.engine,
            "numeric_version": NUMERIC_VERSION,
        }

    @property
    def run_id(self) -> str:
        return run_id_of(self.identity())


def run_id_of(identity: dict[str, Any]) -> str:
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


# A tuned schedule's configuration on one dataset: its base LR and schedule parameters.
Chosen = tuple[float, dict[str, Any]]


def expand(
    study: StudySpec, engine: str = "fleet", chosen: Mapping[tuple[str, str], Chosen] | None = None
) -> list[RunSpec]:
    """The grid, datasets x schedules x seeds, in file order; ``engine`` as asked for.

    A schedule the study tunes runs with its configuration ``chosen`` for (dataset, label),
    and is left out where none is chosen yet (its tuning is not finished). A study with
    [budgets] has a run per budget (``expand_budgets``)."""
    if study.budgets is not None:
        return expand_budgets(study, engine)
    out = []
    tuned = {entry.display for entry in study.tuned_entries()}
    for dataset in study.datasets:
        for entry in study.schedules:
            settings = study.settings_for(entry)
            params: Mapping[str, Any] = entry.params
            if entry.display in tuned:
                config = (chosen or {}).get((dataset, entry.display))
                if config is None:
                    continue
                lr, params = config
                settings = settings.model_copy(
                    update={"train": settings.train.model_copy(update={"lr": lr})}
                )
            spec = resolve(entry.name, params, study.train.steps)
            runs_on = engine_for(engine, spec)
            for seed in study.seed_list:
                out.append(RunSpec(dataset, spec, entry.display, seed, settings, runs_on))
    return out


def expand_budgets(study: StudySpec, engine: str = "fleet") -> list[RunSpec]:
    """A budgets study's grid: each ordinary schedule once per budget, labelled "label @
    budget"; a trunk once, to the largest budget, keeping its checkpoints at every branch step
    and budget; at each smaller budget, the trunk as it was then (a branch that trains no step);
    each branch entry at each budget, from the trunk's checkpoint at its branch step."""
    assert study.budgets is not None
    budgets = study.budgets.steps
    trunks = study.trunks()
    by_label = {entry.display: entry for entry in study.schedules}
    out = []
    for dataset in study.datasets:
        for entry in study.schedules:
            for seed in study.seed_list:
                if entry.branch is not None:
                    trunk_entry = by_label[entry.branch.trunk]
                    branches = trunks[trunk_entry.display]
                    trunk = trunk_run(study, trunk_entry, branches, dataset, seed)
                    out += [cooldown(entry, trunk, budget, engine) for budget in budgets]
                elif entry.display in trunks:
                    trunk = trunk_run(study, entry, trunks[entry.display], dataset, seed, engine)
                    out += [as_of(entry, trunk, budget) for budget in budgets[:-1]] + [trunk]
                else:
                    out += [
                        at_budget(study, entry, dataset, seed, budget, engine) for budget in budgets
                    ]
    return out


def with_steps(settings: Settings, steps: int, posthoc: bool = True) -> Settings:
    """``settings`` with a run length of ``steps`` (and no post-hoc tracking unless
    ``posthoc``: a branch or a trunk's earlier state tracks none)."""
    update: dict[str, Any] = {"train": settings.train.model_copy(update={"steps": steps})}
    if not posthoc:
        update["ema"] = PosthocSettings()
    return settings.model_copy(update=update)


def at_budget(
    study: StudySpec, entry: ScheduleEntry, dataset: str, seed: int, budget: int, engine: str
) -> RunSpec:
    spec = resolve(entry.name, entry.params, budget)
    settings = with_steps(study.settings_for(entry), budget)
    label = budget_label(entry.display, budget)
    return RunSpec(dataset, spec, label, seed, settings, engine_for(engine, spec))


def trunk_run(
    study: StudySpec,
    entry: ScheduleEntry,
    branches: list[ScheduleEntry],
    dataset: str,
    seed: int,
    engine: str = "fleet",
) -> RunSpec:
    """The trunk at the largest budget, keeping its checkpoints where anything branches."""
    assert study.budgets is not None
    run = at_budget(study, entry, dataset, seed, study.budgets.largest, engine)
    warmup = run.schedule.warmup_steps
    keep = set(study.budgets.steps[:-1])
    for branch in branches:
        assert branch.branch is not None
        keep |= {branch_step(b, branch.branch.cooldown, warmup) for b in study.budgets.steps}
    return dataclasses.replace(run, keep_at=tuple(sorted(keep)))


def from_trunk(
    entry: ScheduleEntry, trunk: RunSpec, spec: ScheduleSpec, budget: int, step: int, engine: str
) -> RunSpec:
    """``entry`` at ``budget``: ``spec`` with the trunk's data, seed and settings (no post-hoc
    tracking), starting from the trunk's checkpoint at ``step``."""
    return RunSpec(
        trunk.dataset,
        spec,
        budget_label(entry.display, budget),
        trunk.seed,
        with_steps(trunk.settings, budget, posthoc=False),
        engine_for(engine, spec),
        branch=Branch(trunk.run_id, step),
    )


def as_of(entry: ScheduleEntry, trunk: RunSpec, budget: int) -> RunSpec:
    """The trunk as it was at ``budget`` steps: its checkpoint there, measured (no step left)."""
    spec = resolve(trunk.schedule.name, trunk.schedule.params, budget)
    return from_trunk(entry, trunk, spec, budget, budget, trunk.engine)


def cooldown(entry: ScheduleEntry, trunk: RunSpec, budget: int, engine: str) -> RunSpec:
    """A branch entry at ``budget``: wsd with the trunk's LR and warm-up, from the trunk's
    checkpoint where wsd stops being flat."""
    assert entry.branch is not None
    warmup = {k: v for k, v in trunk.schedule.params.items() if k.startswith("warmup_")}
    params = {
        "decay_fraction": entry.branch.cooldown,
        "decay_shape": entry.branch.shape,
        "end_factor": 0.0,
        **warmup,
    }
    spec = resolve("wsd", params, budget)
    step = branch_step(budget, entry.branch.cooldown, spec.warmup_steps)
    return from_trunk(entry, trunk, spec, budget, step, engine)


def unique(runs: list[RunSpec]) -> list[RunSpec]:
    """One entry per run id (two labels for one configuration train once), first kept."""
    seen: dict[str, RunSpec] = {}
    for run in runs:
        seen.setdefault(run.run_id, run)
    return list(seen.values())


def fleet_key(run: RunSpec) -> tuple:
    """Runs that agree on this can train as one fleet: the same engine, data dimension and
    size, training settings (the base LR may differ per member) and post-hoc EMA tracking."""
    train = run.settings.train.model_dump(exclude={"lr"})
    posthoc = run.settings.ema.model_dump_json()
    model = json.dumps(run.model.identity(), sort_keys=True)
    return (
        run.engine,
        run.dim,
        run.shape,
        model,
        run.settings.data.n,
        tuple(sorted(train.items())),
        posthoc,
    )


def fleets(
    runs: list[RunSpec], size: int, starts: Mapping[str, int] | None = None
) -> list[list[RunSpec]]:
    """Groups of runs that train together, of near-equal sizes up to ``size`` (48 runs at
    20: 16, 16, 16). Loop runs train one by one, so each is a group of its own. ``starts``
    (run id -> the step its checkpoint resumes at) keeps runs at different steps apart: a
    fleet's members step together."""
    groups: dict[tuple, list[RunSpec]] = {}
    for run in unique(runs):
        start = (starts or {}).get(run.run_id, 0)
        groups.setdefault((*fleet_key(run), start), []).append(run)
    out = []
    for key, group in groups.items():
        per_fleet = 1 if key[0] == "loop" else math.ceil(len(group) / math.ceil(len(group) / size))
        out += [group[i : i + per_fleet] for i in range(0, len(group), per_fleet)]
    return out

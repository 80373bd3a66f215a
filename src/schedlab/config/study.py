"""Study files: load a TOML study (a file or a preset) and validate it (no torch)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schedlab import data, usercode
from schedlab.config.budgets import BudgetSettings, branch_step
from schedlab.config.compare import CompareSettings
from schedlab.config.entries import ScheduleEntry
from schedlab.config.errors import first_error
from schedlab.config.presets import study_source
from schedlab.config.settings import (
    MLP_SIZES,
    DataSettings,
    EvalSettings,
    ModelSettings,
    PosthocSettings,
    Settings,
    TargetSettings,
    TrainSettings,
)
from schedlab.config.space import search_space
from schedlab.config.tune import TuneSettings
from schedlab.metrics import METRICS
from schedlab.model import registry as models
from schedlab.schedules import registry

# A study's name names its store and report files: a safe slug, no leading dot.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
MAX_SEEDS = 10_000
MAX_SEED = 2**63 - 1


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(pattern=NAME_PATTERN)
    datasets: list[str] = Field(min_length=1)
    seeds: int | list[int] = 1
    data: DataSettings = DataSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    eval: EvalSettings = EvalSettings()
    ema: PosthocSettings = PosthocSettings()
    target: TargetSettings = TargetSettings()
    compare: CompareSettings = CompareSettings()  # the report's; not part of the plan

    @model_validator(mode="before")
    @classmethod
    def _mlp_sizes_in_train(cls, value: object) -> object:
        """The MLP's sizes given under [model] are kept under [train], where run ids read them
        (so a study that moves them keeps its runs)."""
        if not isinstance(value, dict) or not isinstance(value.get("model"), dict):
            return value
        model = dict(value["model"])
        if model.get("name", "mlp") != "mlp":
            return value
        train = dict(value.get("train") or {})
        for key in MLP_SIZES:
            if key in model:
                size = model.pop(key)
                if key in train and train[key] != size:
                    raise ValueError(f"{key} is given twice: [model] and [train] differ")
                train[key] = size
        return {**value, "model": model, "train": train}

    tune: TuneSettings | None = None
    budgets: BudgetSettings | None = None
    schedules: list[ScheduleEntry] = Field(min_length=1)

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, value: list[str]) -> list[str]:
        for name in value:
            data.check_name(name)
        if len(set(value)) != len(value):
            raise ValueError("datasets are listed twice")
        return value

    @field_validator("seeds")
    @classmethod
    def _valid_seeds(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int) and not 1 <= value <= MAX_SEEDS:
            raise ValueError(
                f"seeds must be a count in [1, {MAX_SEEDS}] or a list of seeds, got {value}"
            )
        if isinstance(value, list):
            if len(value) > MAX_SEEDS:
                raise ValueError(f"seeds lists at most {MAX_SEEDS} seeds, got {len(value)}")
            if not value:
                raise ValueError("seeds must not be an empty list")
            if any(not 0 <= s <= MAX_SEED for s in value) or len(set(value)) != len(value):
                raise ValueError(
                    f"seeds must be distinct ints in [0, 2**63 - 1] (the store's integers), "
                    f"got {value}"
                )
        return value

    @model_validator(mode="after")
    def _targets_of_datasets(self) -> StudySpec:
        unknown = sorted(set(self.target.loss) - set(self.datasets))
        if unknown:
            raise ValueError(
                f"target.loss names {', '.join(unknown)}, not a dataset of this study; "
                f"datasets: {', '.join(self.datasets)}"
            )
        return self

    @model_validator(mode="after")
    def _valid_dim(self) -> StudySpec:
        data.check_dim_setting(self.datasets, self.data.dim)
        return self

    @model_validator(mode="after")
    def _valid_model(self) -> StudySpec:
        if self.model.name != "mlp":
            stray = [k for k in MLP_SIZES if k in self.train.model_fields_set]
            if stray:
                raise ValueError(
                    f"[train] {stray[0]} sizes the mlp, but the model is {self.model.name!r}; "
                    "give its settings under [model]"
                )
        for dataset in self.datasets:
            model_spec(self.model, self.train, dataset, self.data.dim)
        return self

    @model_validator(mode="after")
    def _valid_schedules(self) -> StudySpec:
        labels = [entry.display for entry in self.schedules]
        duplicate = next((x for x in labels if labels.count(x) > 1), None)
        if duplicate:
            raise ValueError(f"schedule label {duplicate!r} is used twice; give each a label")
        for entry in self.schedules:
            for steps in self.lengths:
                registry.resolve(entry.name, entry.params, steps)
        return self

    @model_validator(mode="after")
    def _valid_budgets(self) -> StudySpec:
        branches = [e for e in self.schedules if e.branch is not None]
        if self.budgets is None:
            if branches:
                raise ValueError(
                    f"schedule {branches[0].display!r} branches from a trunk, which needs "
                    "[budgets] steps = [...]"
                )
            return self
        if "steps" in self.train.model_fields_set:
            raise ValueError("[budgets] sets every run's steps: leave steps out of [train]")
        if self.tune is not None:
            raise ValueError("a study with [budgets] cannot have [tune] (not built yet)")
        labels = {e.display: e for e in self.schedules}
        for entry in branches:
            assert entry.branch is not None
            if entry.name != "wsd" or entry.params:
                raise ValueError(
                    f"schedule {entry.display!r} is a branch: it trains wsd with the cooldown "
                    'and shape under branch; write name = "wsd" and no params'
                )
            trunk = labels.get(entry.branch.trunk)
            if trunk is None or trunk.branch is not None:
                trunks = [e.display for e in self.schedules if e.branch is None]
                raise ValueError(
                    f"schedule {entry.display!r} branches from {entry.branch.trunk!r}, not a "
                    f"schedule of this study; schedules: {', '.join(trunks)}"
                )
            if trunk.name != "constant":
                raise ValueError(
                    f"schedule {entry.display!r} branches from {trunk.display!r}, a "
                    f"{trunk.name} schedule; a trunk must be constant (its LR flat after any "
                    "warm-up)"
                )
            warmup = registry.resolve(trunk.name, trunk.params).warmup_steps
            for budget in self.budgets.steps:
                if branch_step(budget, entry.branch.cooldown, warmup) <= warmup:
                    raise ValueError(
                        f"schedule {entry.display!r}: a cooldown of {entry.branch.cooldown:g} "
                        f"of {budget} steps leaves no flat step after the warm-up to branch at"
                    )
        return self

    @property
    def lengths(self) -> list[int]:
        """The training lengths of the study's runs: its budgets, else [train] steps."""
        return self.budgets.steps if self.budgets is not None else [self.train.steps]

    def trunks(self) -> dict[str, list[ScheduleEntry]]:
        """Each trunk's label -> the branch entries from it."""
        out: dict[str, list[ScheduleEntry]] = {}
        for entry in self.schedules:
            if entry.branch is not None:
                out.setdefault(entry.branch.trunk, []).append(entry)
        return out

    @model_validator(mode="after")
    def _valid_tuning(self) -> StudySpec:
        if self.tune is None:
            named = next((e.display for e in self.schedules if isinstance(e.tune, dict)), None)
            if named:
                raise ValueError(f"schedule {named!r} sets tune ranges but there is no [tune]")
            return self
        shared = sorted(set(self.tune.tune_seeds) & set(self.seed_list))
        if shared:
            raise ValueError(
                f"tune_seeds {shared} are also final seeds; final runs never reuse a tuning seed"
            )
        if not METRICS[self.tune.objective].enabled(self.eval):
            raise ValueError(f"objective {self.tune.objective!r} is disabled by [eval]")
        tuned = self.tuned_entries()
        if not tuned:
            raise ValueError("[tune] has nothing to tune: every schedule says tune = false")
        for entry in tuned:
            search_space(entry, self.tune, self.tune_steps)
        known = {"lr"} | {
            name
            for definition in map(registry.lookup, (entry.name for entry in tuned))
            for name in (
                *definition.params,
                *(registry.WARMUP_PARAMS if definition.allows_warmup else ()),
            )
        }
        stray = sorted(set(self.tune.space) - known)
        if stray and not any(registry.lookup(e.name).open_params for e in tuned):
            raise ValueError(
                f"[tune.space] names {', '.join(stray)}, a parameter of no tuned schedule; "
                f"tunable: {', '.join(sorted(known))}"
            )
        return self

    def tuned_entries(self) -> list[ScheduleEntry]:
        """The schedules a [tune] section tunes (every one not marked ``tune = false``)."""
        if self.tune is None:
            return []
        return [entry for entry in self.schedules if entry.tune is not False]

    @property
    def tune_steps(self) -> int:
        return self.tune.steps if self.tune and self.tune.steps else self.train.steps

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def settings_for(self, entry: ScheduleEntry) -> Settings:
        train = self.train if entry.lr is None else self.train.model_copy(update={"lr": entry.lr})
        return Settings(data=self.data, model=self.model, train=train, eval=self.eval, ema=self.ema)


def model_spec(
    model: ModelSettings, train: TrainSettings, dataset: str, dim: int | None
) -> models.ModelSpec:
    """The model a run of ``dataset`` trains, resolved for its samples' shape (the mlp's sizes
    come from [train])."""
    options = model.options
    if model.name == "mlp":
        options = {key: getattr(train, key) for key in MLP_SIZES}
    return models.resolve(model.name, options, data.shape(dataset, dim), dataset)


def default_baseline(labels: list[str]) -> str:
    """The schedule others are compared with: the one labelled "baseline", else the first."""
    return "baseline" if "baseline" in labels else labels[0]


def parse_study(text: str, source: str) -> StudySpec:
    """A validated StudySpec, or a one-line ValueError naming the file and the problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{source}: not valid TOML: {err}") from err
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as err:
        raise ValueError(f"{source}: {first_error(err)}") from err


def load_study(ref: str) -> StudySpec:
    """A study from a TOML file path or a preset name (paper, quick). User modules it names
    are looked for beside the file."""
    text, source = study_source(ref)
    if not source.startswith("preset "):
        usercode.add_study_dir(Path(source).parent)
    return parse_study(text, source)

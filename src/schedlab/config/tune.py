"""The `[tune]` section of a study file: an equal tuning budget for every schedule (no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SAMPLERS = ("tpe", "random", "qmc")
MAX_TRIALS = 10_000


class SearchRange(BaseModel):
    """One dimension of a search space: ``low`` to ``high``, sampled uniformly or in log."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if not self.low < self.high:
            raise ValueError(f"a search range needs low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log search range needs low > 0, got {self.low}")
        return self


# A schedule's `tune` entry: a range per parameter, or false to keep a parameter at its value.
SpaceOverride = dict[str, SearchRange | Literal[False]]


class TuneSettings(BaseModel):
    """Every schedule x dataset gets ``trials`` configurations, asked in batches of ``batch``
    (one fleet), scored by ``objective`` on ``tune_seeds``; the best is trained again on the
    study's seeds."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    trials: int = Field(16, ge=1, le=MAX_TRIALS, description="configurations per schedule x data")
    trials_per_parameter: int | None = Field(
        None,
        ge=1,
        le=MAX_TRIALS,
        description="if set, the budget is this many trials per tuned parameter (replaces trials)",
    )
    confirm: int = Field(
        0,
        ge=0,
        le=MAX_TRIALS,
        description="the best trials retrained at the final length on the tuning seeds; the "
        "best of them is chosen (0: choose at the tuning length)",
    )
    batch: int = Field(8, ge=1, le=MAX_TRIALS, description="trials asked at once (one fleet)")
    objective: str = Field("eval_loss_heldout_ema", description="a registered metric")
    sampler: Literal["tpe", "random", "qmc"] = "tpe"
    seed: int = Field(0, ge=0, description="the sampler's seed")
    tune_seeds: list[int] = Field([100], min_length=1, max_length=100)
    steps: int | None = Field(None, gt=0, le=100_000_000, description="train.steps if unset")
    space: SpaceOverride = Field(
        default_factory=dict, description="ranges for every schedule (lr, or a parameter name)"
    )

    @field_validator("tune_seeds")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if any(s < 0 for s in value) or len(set(value)) != len(value):
            raise ValueError(f"tune_seeds must be distinct non-negative ints, got {value}")
        return value

    @field_validator("objective")
    @classmethod
    def _registered(cls, value: str) -> str:
        from schedlab.metrics import METRICS

        scores = [k for k, m in METRICS.items() if m.direction is not None and not m.derived]
        if value not in scores:
            raise ValueError(f"unknown objective {value!r}; valid objectives: {', '.join(scores)}")
        return value

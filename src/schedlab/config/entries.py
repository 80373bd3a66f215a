"""A study's schedule entries: a schedule by name, its parameters, label, LR and tuning."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schedlab.config.budgets import BranchSettings
from schedlab.config.tune import SpaceOverride
from schedlab.schedules import registry


class ScheduleEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str
    label: str | None = Field(None, min_length=1, description="display name; defaults to name")
    params: dict[str, Any] = Field(default_factory=dict)
    lr: float | None = Field(None, gt=0, allow_inf_nan=False, description="overrides train.lr")
    # With a [tune] section: true (tuned over the default space), ranges that override it,
    # or false (trained as given: the as-published configuration).
    tune: SpaceOverride | bool = True
    # A cooldown branch from a constant-LR trunk at every budget ([budgets]); it trains `wsd`.
    branch: BranchSettings | None = None

    @model_validator(mode="before")
    @classmethod
    def _inline_params(cls, value: object) -> object:
        """name = "step:gamma=0.5" is name "step" with params {gamma = 0.5}, labelled as
        written unless a label is given."""
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return value
        name, inline = registry.split_schedule(value["name"])
        if not inline:
            return value
        params = value.get("params", {})
        if isinstance(params, dict):
            twice = sorted(set(inline) & set(params))
            if twice:
                raise ValueError(f"{twice[0]} is given twice: in name and in params")
            params = {**params, **inline}
        return {**value, "name": name, "params": params, "label": value.get("label", value["name"])}

    @field_validator("tune", mode="before")
    @classmethod
    def _tune_kind(cls, value: object) -> object:
        if not isinstance(value, bool | dict):
            raise ValueError(f"tune must be true, false or a table of search ranges, got {value!r}")
        return value

    @property
    def display(self) -> str:
        return self.label or self.name

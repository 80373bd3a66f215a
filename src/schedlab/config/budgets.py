"""Training budgets as an axis, and cooldown branches from a constant-LR trunk (no torch).

`[budgets] steps = [2500, 5000, 10000]`: every ordinary schedule trains once per budget, from
scratch, its length set to the budget. A schedule entry with ``branch = { from = "constant",
cooldown = 0.2, shape = "1-sqrt" }`` trains no run of its own from scratch: for each budget B it
starts from the trunk's checkpoint at the branch step and decays the LR to 0 over the rest
(warmup-stable-decay, Hägele et al. 2024). The trunk (the entry ``from`` names, a constant LR)
trains once, to the largest budget.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_BUDGETS = 32
SHAPES = ("linear", "1-sqrt", "cosine")


class BudgetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    steps: list[int] = Field(min_length=1, max_length=MAX_BUDGETS)

    @field_validator("steps")
    @classmethod
    def _distinct_positive(cls, value: list[int]) -> list[int]:
        if any(b < 1 or b > 100_000_000 for b in value) or len(set(value)) != len(value):
            raise ValueError(f"budgets must be distinct step counts in [1, 1e8], got {value}")
        return sorted(value)

    @property
    def largest(self) -> int:
        return self.steps[-1]


class BranchSettings(BaseModel):
    """Where a cooldown branch starts (the trunk's label) and how it decays."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    trunk: str = Field(alias="from", min_length=1, description="the label of a constant schedule")
    cooldown: float = Field(gt=0, lt=1, description="fraction of each budget spent decaying")
    shape: Literal["linear", "1-sqrt", "cosine"] = "1-sqrt"


def branch_step(budget: int, cooldown: float, warmup: int = 0) -> int:
    """The step a branch of ``budget`` leaves its trunk: where the `wsd` schedule of that length
    (its decay a ``cooldown`` fraction of the steps after ``warmup``) stops being flat, so the
    branch's LR equals the trunk's at every step before it."""
    return budget - max(1, round(cooldown * (budget - warmup)))


def budget_label(label: str, budget: int) -> str:
    """A schedule's label at one budget."""
    return f"{label} @ {budget}"


def split_budget_label(label: str) -> tuple[str, int | None]:
    """(schedule label, budget) of a label ``budget_label`` made; (label, None) otherwise."""
    name, sep, budget = label.rpartition(" @ ")
    return (name, int(budget)) if sep and budget.isdigit() else (label, None)

"""The `[compare]` section of a study file: how its report decides (no torch).

``primary``: the metric the verdict uses; ``margins``: per metric, the difference that matters
(a number in the metric's unit, or a string "2%" of the baseline's mean); ``alpha``: the
family-wise error rate of each metric's family of comparisons; ``power``: what the seed plan
aims for; ``ema_max_error``: the largest relative L2 error of a reconstructed post-hoc EMA
profile that may be chosen as a schedule's best length. The section shapes the report
only: it is not part of the registered plan, so editing it never retrains or re-registers.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_PRIMARY = "eval_loss_heldout_ema"
DEFAULT_MARGIN = "2%"  # of the baseline's mean, for a metric the study gives no margin


def scored_metrics() -> list[str]:
    """Metrics a verdict can use: those with a better direction."""
    from schedlab.metrics import METRICS

    return [k for k, m in METRICS.items() if m.direction is not None]


class Margin(BaseModel):
    """An equivalence margin: ``value`` in the metric's unit, or a fraction of the baseline's
    mean when ``relative``."""

    model_config = ConfigDict(frozen=True)

    value: float
    relative: bool

    @staticmethod
    def parse(given: float | int | str, metric: str) -> Margin:
        if isinstance(given, bool):
            raise ValueError(f"margin of {metric} must be a number or a percentage, got {given}")
        if isinstance(given, str):
            text = given.strip()
            if not text.endswith("%"):
                raise ValueError(
                    f"margin of {metric} must be a number or a percentage like '2%', got {given!r}"
                )
            try:
                value = float(text[:-1]) / 100
            except ValueError:
                raise ValueError(
                    f"margin of {metric} must be a number or a percentage like '2%', got {given!r}"
                ) from None
            relative = True
        else:
            value, relative = float(given), False
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"margin of {metric} must be positive and finite, got {given!r}")
        return Margin(value=value, relative=relative)

    def of(self, baseline_mean: float) -> float:
        """The margin in the metric's unit, for a baseline whose mean is ``baseline_mean``."""
        return self.value * abs(baseline_mean) if self.relative else self.value

    def __str__(self) -> str:
        return (
            f"{self.value * 100:g}% of the baseline's mean" if self.relative else f"{self.value:g}"
        )


class CompareSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    primary: str = Field(DEFAULT_PRIMARY, description="the metric the verdict uses")
    margins: dict[str, float | str] = Field(
        default_factory=dict, description="metric -> margin (a number, or '2%' of the baseline)"
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="family-wise error rate per metric")
    power: float = Field(0.8, ge=0.5, lt=1, description="the seed plan's target power")
    ema_max_error: float = Field(
        0.1, gt=0, le=1, description="post-hoc EMA lengths built worse than this are not chosen"
    )

    @field_validator("primary")
    @classmethod
    def _scored(cls, value: str) -> str:
        valid = scored_metrics()
        if value not in valid:
            raise ValueError(f"unknown primary metric {value!r}; valid metrics: {', '.join(valid)}")
        return value

    @field_validator("margins")
    @classmethod
    def _valid_margins(cls, value: dict[str, float | str]) -> dict[str, float | str]:
        valid = scored_metrics()
        for metric, given in value.items():
            if metric not in valid:
                raise ValueError(
                    f"margins names {metric!r}, not a metric with a direction; valid metrics: "
                    f"{', '.join(valid)}"
                )
            Margin.parse(given, metric)
        return value

    def margin(self, metric: str) -> Margin:
        return Margin.parse(self.margins.get(metric, DEFAULT_MARGIN), metric)

"""Search spaces: what tuning varies for each schedule, and over which ranges (no torch).

Every tuned schedule searches its base LR (log-uniform over [1e-5, 1e-2] unless `[tune.space]`
says otherwise) and the parameters listed in ``DEFAULT_RANGES``. Ranges of parameters that
count steps (a StepLR step size, a plateau patience) are fractions of the tuning run's steps,
and ExponentialLR's gamma is searched through the LR factor left at the last step, so one
default space fits a run of any length. `[tune.space]` and a schedule's own ``tune`` table
override a range (absolute values) or, with ``false``, hold a parameter at its given value.
A configuration tuned at a shorter length is carried to the study's length in proportion
(``carried``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from schedlab.config.entries import ScheduleEntry
from schedlab.config.tune import SearchRange, TuneSettings
from schedlab.params import Param
from schedlab.schedules.registry import WARMUP_PARAMS, lookup

LR_RANGE = (1e-5, 1e-2)


@dataclass(frozen=True)
class Dim:
    """One searched quantity: the LR (``name == "lr"``) or a schedule parameter."""

    name: str
    low: float
    high: float
    log: bool
    integer: bool


@dataclass(frozen=True)
class DefaultRange:
    low: float
    high: float
    log: bool = False
    # steps: the bounds are fractions of the run's steps; final_factor: the bounds are the
    # LR factor left after all steps (gamma = bound ** (1 / steps)).
    scale: Literal["none", "steps", "final_factor"] = "none"

    def bounds(self, steps: int) -> tuple[float, float]:
        if self.scale == "steps":
            return max(1.0, round(self.low * steps)), max(1.0, round(self.high * steps))
        if self.scale == "final_factor":
            return self.low ** (1 / steps), self.high ** (1 / steps)
        return self.low, self.high


DEFAULT_RANGES: dict[str, dict[str, DefaultRange]] = {
    "step": {
        "step_size": DefaultRange(0.01, 0.5, log=True, scale="steps"),
        "gamma": DefaultRange(0.05, 0.9),
    },
    "multistep": {"gamma": DefaultRange(0.05, 0.9)},
    "exponential": {"gamma": DefaultRange(1e-5, 0.9, scale="final_factor")},
    "plateau": {
        "factor": DefaultRange(0.1, 0.9),
        "patience": DefaultRange(0.001, 0.2, log=True, scale="steps"),
    },
    "linear": {"end_factor": DefaultRange(0.0, 0.5)},
    "polynomial": {"power": DefaultRange(0.5, 3.0, log=True)},
    "cosine_restarts": {"t_0": DefaultRange(0.05, 1.0, log=True, scale="steps")},
    "inverse_sqrt": {"t_ref": DefaultRange(0.01, 0.5, log=True, scale="steps")},
}


def carried(
    entry: ScheduleEntry, values: Mapping[str, Any], tuned: Iterable[str], tuned_at: int, steps: int
) -> dict[str, Any]:
    """A configuration tuned in runs of ``tuned_at`` steps, for a run of ``steps``: the tuned
    parameters that count steps (a StepLR step size, a plateau patience) keep their fraction
    of the run and ExponentialLR's gamma keeps the LR factor left at the last step, as cosine
    and every length-relative schedule do by construction. Without this, a StepLR tuned at
    1,000 steps and trained for 10,000 drops 10 times as often. Parameters held at the file's
    value and those with no unit of steps are kept as they are."""
    scales = DEFAULT_RANGES.get(lookup(entry.name).name, {})
    ratio = steps / tuned_at
    out = dict(values)
    for name in set(tuned) & set(values) & set(scales):
        value = values[name]
        if scales[name].scale == "steps":
            out[name] = type(value)(max(1, round(value * ratio)))
        elif scales[name].scale == "final_factor":
            out[name] = value ** (1 / ratio)
    return out


def search_space(entry: ScheduleEntry, tune: TuneSettings, steps: int) -> list[Dim]:
    """The dimensions tuning searches for ``entry`` (LR first, then its parameters), or a
    ValueError naming a parameter that cannot be searched or a range outside its valid one."""
    definition = lookup(entry.name)
    params: dict[str, Param] = dict(definition.params)
    if definition.allows_warmup:
        params.update(WARMUP_PARAMS)
    owner = f"schedule {entry.display!r}"
    ranges: dict[str, tuple[float, float, bool]] = {"lr": (*LR_RANGE, True)}
    for name, default in DEFAULT_RANGES.get(definition.name, {}).items():
        ranges[name] = (*default.bounds(steps), default.log)
    overrides = {
        **{k: v for k, v in tune.space.items() if k == "lr" or k in params},
        **(entry.tune if isinstance(entry.tune, dict) else {}),
    }
    for name, override in overrides.items():
        if name != "lr" and name not in params and not definition.open_params:
            raise ValueError(
                f"{owner}: cannot tune {name!r}; its parameters: "
                f"{', '.join(['lr', *sorted(params)])}"
            )
        if override is False:
            ranges.pop(name, None)
        else:
            ranges[name] = _checked(owner, name, params.get(name), override)
    if not ranges:
        raise ValueError(f"{owner}: nothing left to tune")
    return [
        Dim(name, low, high, log, params[name].kind == "int" if name in params else False)
        for name, (low, high, log) in sorted(ranges.items(), key=lambda kv: kv[0] != "lr")
    ]


def _checked(
    owner: str, name: str, param: Param | None, override: SearchRange
) -> tuple[float, float, bool]:
    if param is not None:
        if param.kind not in ("int", "float"):
            raise ValueError(f"{owner}: {name} is a {param.kind} parameter; only numbers are tuned")
        for bound in (override.low, override.high):
            param.check(owner, f"{name}'s search range", bound)
    elif name == "lr" and not override.low > 0:
        raise ValueError(f"{owner}: an lr search range needs low > 0, got {override.low}")
    return override.low, override.high, override.log


def draw(dim: Dim, u: float) -> float:
    """The value at fraction ``u`` in [0, 1) of a dimension (uniform, or uniform in log)."""
    if dim.log:
        value = math.exp(math.log(dim.low) + u * (math.log(dim.high) - math.log(dim.low)))
    else:
        value = dim.low + u * (dim.high - dim.low)
    return float(min(dim.high, max(dim.low, round(value)))) if dim.integer else value

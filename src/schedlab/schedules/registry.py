"""Learning-rate schedules by name: the registry (names, parameters, ranges; no torch).

A schedule is a registry entry: a name, a one-line description and typed parameters with
defaults and valid ranges. ``builders`` turns an entry into a torch scheduler, ``driver`` steps
it (feeding ReduceLROnPlateau its watched loss), ``curves`` draws the LR it gives. Every entry
but onecycle and cyclic accepts ``warmup_steps``: a LinearLR ramp put in front, after which the
schedule runs over the remaining steps. This module stays free of torch so that validating a
study, `status`, `export` and `report` never pay for importing it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from schedlab import usercode
from schedlab.params import Param, check_params, parse_assignment, split_top_level


@dataclass(frozen=True)
class ScheduleDef:
    name: str
    description: str
    params: dict[str, Param]
    # Schedules with a warm-up phase of their own do not take a LinearLR ramp in front.
    allows_warmup: bool = True
    optimizer: Literal["adamw", "schedule_free"] = "adamw"
    # A user-defined schedule: function(optimizer, steps, **params) -> torch scheduler, taking
    # whatever parameters the function does; its module's source hashed into run identities.
    user_function: Callable[..., Any] | None = None
    source_hash: str | None = None
    # torch's names for parameters that schedlab spells otherwise (T_0 -> t_0), accepted too.
    torch_names: dict[str, str] = field(default_factory=dict)

    @property
    def open_params(self) -> bool:
        return self.user_function is not None


WARMUP_PARAMS = {
    "warmup_steps": Param("int", 0, "steps of LinearLR ramp put in front (SequentialLR)", low=0),
    "warmup_start_factor": Param(
        "float", 0.01, "LR factor at the first warm-up step", low=0.0, low_open=True, high=1.0
    ),
}


GAMMA = {"low": 0.0, "low_open": True, "high": 1.0}
ETA_MIN = Param("float", 0.0, "LR floor (absolute)", low=0.0)

SCHEDULES: dict[str, ScheduleDef] = {}


def register(definition: ScheduleDef) -> ScheduleDef:
    SCHEDULES[definition.name] = definition
    return definition


register(ScheduleDef("constant", "the base LR at every step (the missing true baseline)", {}))
register(
    ScheduleDef(
        "step",
        "StepLR: multiply the LR by gamma every step_size steps",
        {
            "step_size": Param("int", 2500, "steps between drops", low=1),
            "gamma": Param("float", 0.5, "factor per drop", **GAMMA),
        },
    )
)
register(
    ScheduleDef(
        "multistep",
        "MultiStepLR: multiply the LR by gamma at each milestone step",
        {
            "milestones": Param("ints", (5000, 7500), "steps at which the LR drops", low=1),
            "gamma": Param("float", 0.1, "factor per drop", **GAMMA),
        },
    )
)
register(
    ScheduleDef(
        "exponential",
        "ExponentialLR: multiply the LR by gamma every step",
        {"gamma": Param("float", 0.9997, "factor per step", **GAMMA)},
    )
)
register(
    ScheduleDef(
        "cosine",
        "CosineAnnealingLR with T_max = the steps after warm-up",
        {"eta_min": ETA_MIN},
    )
)
register(
    ScheduleDef(
        "cosine_restarts",
        "CosineAnnealingWarmRestarts: cosine cycles of t_0, t_0 t_mult, ... steps",
        {
            "t_0": Param("int", 2500, "steps of the first cycle", low=1),
            "t_mult": Param("int", 1, "cycle length multiplier", low=1),
            "eta_min": ETA_MIN,
        },
        torch_names={"T_0": "t_0", "T_mult": "t_mult"},
    )
)
register(
    ScheduleDef(
        "linear",
        "LinearLR: linear decay from the base LR to end_factor x base at the last step",
        {
            "end_factor": Param(
                "float", 0.0, "final LR as a fraction of the base LR", low=0.0, high=1.0
            )
        },
    )
)
register(
    ScheduleDef(
        "polynomial",
        "PolynomialLR: (1 - step / steps) ** power times the base LR",
        {"power": Param("float", 1.0, "exponent of the decay", low=0.0, low_open=True)},
    )
)
register(
    ScheduleDef(
        "onecycle",
        "OneCycleLR: ramp up to the base LR, then anneal far below it (own warm-up)",
        {
            "pct_start": Param(
                "float",
                0.3,
                "fraction of steps spent ramping up",
                low=0.0,
                low_open=True,
                high=1.0,
                high_open=True,
            ),
            "anneal_strategy": Param(
                "str", "cos", "shape of both phases", choices=("cos", "linear")
            ),
            "div_factor": Param("float", 25.0, "initial LR = base / div_factor", low=1.0),
            "final_div_factor": Param(
                "float", 1e4, "final LR = initial / final_div_factor", low=1.0
            ),
            "three_phase": Param(
                "bool", False, "add a third phase that anneals the initial LR away"
            ),
        },
        allows_warmup=False,
    )
)
register(
    ScheduleDef(
        "cyclic",
        "CyclicLR: triangular cycles between min_factor x base and the base LR",
        {
            "min_factor": Param(
                "float",
                0.1,
                "lower bound as a fraction of the base LR",
                low=0.0,
                high=1.0,
                high_open=True,
            ),
            "step_size_up": Param(
                "int", 1000, "steps from the bottom to the top of a cycle", low=1
            ),
            "step_size_down": Param("int", 0, "steps from top to bottom (0: same as up)", low=0),
            "mode": Param(
                "str",
                "triangular",
                "cycle amplitude policy",
                choices=("triangular", "triangular2", "exp_range"),
            ),
            "gamma": Param("float", 1.0, "per-step amplitude factor in exp_range mode", **GAMMA),
        },
        allows_warmup=False,
    )
)
register(
    ScheduleDef(
        "wsd",
        "warm-up / stable / decay: flat, then a final decay (linear, cosine or 1-sqrt)",
        {
            "decay_fraction": Param(
                "float",
                0.2,
                "fraction of the steps after warm-up spent decaying",
                low=0.0,
                low_open=True,
                high=1.0,
            ),
            "decay_shape": Param(
                "str", "1-sqrt", "shape of the decay", choices=("linear", "cosine", "1-sqrt")
            ),
            "end_factor": Param(
                "float", 0.0, "final LR as a fraction of the base LR", low=0.0, high=1.0
            ),
        },
    )
)
register(
    ScheduleDef(
        "inverse_sqrt",
        "EDM2: linear ramp over `ramp` steps, then base / sqrt(step / t_ref)",
        {
            "t_ref": Param("int", 1000, "step after which the LR decays as 1/sqrt(step)", low=1),
            "ramp": Param("int", 0, "steps of EDM2's multiplicative ramp", low=0),
        },
    )
)
register(
    ScheduleDef(
        "plateau",
        "ReduceLROnPlateau: multiply the LR by factor when the watched loss stops improving",
        {
            "watch": Param(
                "str",
                "train",
                "train: training loss averaged over `window` steps; heldout: held-out loss",
                choices=("train", "heldout"),
            ),
            "window": Param("int", 100, "steps averaged when watching the training loss", low=1),
            "every": Param("int", 100, "steps between two looks at the watched loss", low=1),
            "patience": Param("int", 1000, "steps without improvement before a drop", low=0),
            "cooldown": Param("int", 0, "steps after a drop before counting again", low=0),
            "factor": Param(
                "float", 0.5, "factor per drop", low=0.0, low_open=True, high=1.0, high_open=True
            ),
            "threshold": Param("float", 1e-4, "relative improvement that counts", low=0.0),
            "min_lr": Param("float", 0.0, "LR floor (absolute)", low=0.0),
        },
    )
)

register(
    ScheduleDef(
        "schedule_free",
        "AdamWScheduleFree (Defazio et al. 2024) at a constant LR: no schedule, averaged weights",
        {
            "r": Param("float", 0.0, "polynomial weighting power of the average", low=0.0),
            "weight_lr_power": Param("float", 2.0, "LR power in the average's weights", low=0.0),
        },
        optimizer="schedule_free",
    )
)

# The reference study's baseline is the cosine schedule (SPEC.md).
ALIASES = {"baseline": "cosine"}

# The reference study does not publish its StepLR, ExponentialLR and ReduceLROnPlateau settings.
# These are the textbook values a script written for epochs would carry over (the StepLR example
# of the torch docs, a 0.99 decay, ReduceLROnPlateau's defaults on the raw loss of every step):
# stepped every optimizer step they collapse the LR within ~100 steps, which reproduces the
# paper's eval losses and its KL of up to 7 bits. See the README's LR-curve figure.
PAPER_PARAMS: dict[str, dict[str, Any]] = {
    "step": {"step_size": 30, "gamma": 0.1},
    "exponential": {"gamma": 0.99},
    "plateau": {"watch": "train", "window": 1, "every": 1, "patience": 10, "factor": 0.1},
}


def names() -> list[str]:
    return sorted(SCHEDULES) + sorted(ALIASES)


def lookup(name: str) -> ScheduleDef:
    """The registry entry for ``name``, or a user-defined schedule given as ``module:function``."""
    if ":" in name:
        return user_defined(name)
    key = ALIASES.get(name, name)
    if key not in SCHEDULES:
        raise ValueError(
            f"unknown schedule {name!r}; valid schedules: {', '.join(names())}, or module:function"
        )
    return SCHEDULES[key]


@functools.cache  # one import and one source hash per process
def user_defined(path: str) -> ScheduleDef:
    """A schedule from ``module:function``; function(optimizer, steps, **params) -> scheduler.

    Found as ``schedlab.usercode`` says: installed packages, then beside the study file."""
    function, module = usercode.load(path, "schedule")
    doc = usercode.first_line(function, "user-defined schedule")
    return ScheduleDef(
        path, doc, {}, user_function=function, source_hash=usercode.source_hash(module)
    )


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule with every parameter resolved (defaults filled in, types checked)."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def definition(self) -> ScheduleDef:
        return lookup(self.name)

    @property
    def warmup_steps(self) -> int:
        return int(self.params.get("warmup_steps", 0))


def split_schedule(text: str) -> tuple[str, dict[str, Any]]:
    """'step:step_size=1000,gamma=0.1' -> ('step', {...}); 'pkg.mod:fn:a=1' works too; a name
    without parameters (or 'pkg.mod:fn') comes back with none."""
    head, sep, rest = text.partition(":")
    if sep and head in names():
        name, param_text = head, rest
    elif "=" in text:
        colon = text.rfind(":", 0, text.find("="))
        if colon < 0:
            raise ValueError(f"malformed schedule {text!r}; expected name:key=value,key=value")
        name, param_text = text[:colon], text[colon + 1 :]
    else:
        return text, {}
    return name, dict(parse_assignment(a) for a in split_top_level(param_text))


def resolve(
    name: str, params: Mapping[str, Any] | None = None, steps: int | None = None
) -> ScheduleSpec:
    """Check ``params`` against the schedule's parameters and fill in the defaults.

    With ``steps``, also check what depends on the run length (a warm-up shorter than the run).
    """
    name, inline = split_schedule(name)
    definition = lookup(name)
    given = dict(params or {})
    twice = sorted(set(inline) & set(given))
    if twice:
        raise ValueError(f"schedule {name!r}: {twice[0]} given twice, in the name and apart")
    given.update(inline)
    for torch_name, own in definition.torch_names.items():
        if torch_name in given:
            if own in given:
                raise ValueError(f"schedule {name!r}: give {own} or {torch_name}, not both")
            given[own] = given.pop(torch_name)
    allowed = dict(definition.params)
    if definition.allows_warmup:
        allowed.update(WARMUP_PARAMS)
    if definition.open_params:
        extra = {k: v for k, v in given.items() if k not in WARMUP_PARAMS}
        given = {k: v for k, v in given.items() if k in WARMUP_PARAMS}
    else:
        extra = {}
    resolved = {**check_params(f"schedule {definition.name!r}", allowed, given), **extra}
    if steps is not None:
        warmup = resolved.get("warmup_steps", 0)
        if warmup >= steps:
            raise ValueError(
                f"warmup_steps must be an int in [0, {steps - 1}] (shorter than the run of "
                f"{steps} steps), got {warmup}"
            )
    return ScheduleSpec(definition.name, resolved)


def check_base_lr(lr: float) -> float:
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite float > 0, got {lr}")
    return lr

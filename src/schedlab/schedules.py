"""Learning-rate schedules by name, built on torch.optim.lr_scheduler.

A schedule is a registry entry: a name, a one-line description, typed parameters with defaults and
valid ranges, and a builder that returns a torch scheduler for an optimizer and a step count.
Every entry accepts ``warmup_steps``: a LinearLR ramp put in front with SequentialLR, after which
the schedule runs over the remaining steps.

``LRDriver`` steps a schedule once per optimizer step and feeds ReduceLROnPlateau the metric it
watches, so engines never special-case a schedule. ``lr_curve`` gives the learning rate the
optimizer uses at each step, for plots and tests.
"""

from __future__ import annotations

import importlib
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from schedlab.params import Param, check_params

Builder = Callable[[Optimizer, int, Mapping[str, Any]], sched.LRScheduler]


@dataclass(frozen=True)
class ScheduleDef:
    name: str
    description: str
    params: dict[str, Param]
    build: Builder
    # Schedules with a warm-up phase of their own do not take a LinearLR ramp in front.
    allows_warmup: bool = True
    optimizer: Literal["adamw", "schedule_free"] = "adamw"
    # User-defined schedules take whatever parameters their function does.
    open_params: bool = False


WARMUP_PARAMS = {
    "warmup_steps": Param("int", 0, "steps of LinearLR ramp put in front (SequentialLR)", low=0),
    "warmup_start_factor": Param(
        "float", 0.01, "LR factor at the first warm-up step", low=0.0, low_open=True, high=1.0
    ),
}


def _constant(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    return sched.LambdaLR(opt, lambda _: 1.0)


def _step(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    return sched.StepLR(opt, step_size=p["step_size"], gamma=p["gamma"])


def _multistep(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    return sched.MultiStepLR(opt, milestones=list(p["milestones"]), gamma=p["gamma"])


def _exponential(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    return sched.ExponentialLR(opt, gamma=p["gamma"])


def _cosine(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    return sched.CosineAnnealingLR(opt, T_max=steps, eta_min=p["eta_min"])


def _cosine_restarts(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    return sched.CosineAnnealingWarmRestarts(
        opt, T_0=p["t_0"], T_mult=p["t_mult"], eta_min=p["eta_min"]
    )


def _linear(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    return sched.LinearLR(opt, start_factor=1.0, end_factor=p["end_factor"], total_iters=steps)


def _polynomial(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    return sched.PolynomialLR(opt, total_iters=steps, power=p["power"])


def _onecycle(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    return sched.OneCycleLR(
        opt,
        max_lr=opt.param_groups[0]["lr"],
        total_steps=steps,
        pct_start=p["pct_start"],
        anneal_strategy=p["anneal_strategy"],
        div_factor=p["div_factor"],
        final_div_factor=p["final_div_factor"],
        three_phase=p["three_phase"],
        cycle_momentum=False,
    )


def _cyclic(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    top = opt.param_groups[0]["lr"]
    return sched.CyclicLR(
        opt,
        base_lr=top * p["min_factor"],
        max_lr=top,
        step_size_up=p["step_size_up"],
        step_size_down=p["step_size_down"] or None,
        mode=p["mode"],
        gamma=p["gamma"],
        cycle_momentum=False,
    )


def wsd_factor(step: int, steps: int, decay_fraction: float, shape: str, floor: float) -> float:
    """Warm-up/stable/decay after the warm-up: flat at 1, then decays to ``floor`` at the end."""
    decay_steps = max(1, round(decay_fraction * steps))
    stable_steps = steps - decay_steps
    if step < stable_steps:
        return 1.0
    progress = min(1.0, (step - stable_steps) / decay_steps)
    if shape == "linear":
        drop = progress
    elif shape == "cosine":
        drop = 0.5 * (1 - math.cos(math.pi * progress))
    else:  # "1-sqrt" (Hägele et al. 2024)
        drop = math.sqrt(progress)
    return floor + (1 - floor) * (1 - drop)


def _wsd(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    args = (steps, p["decay_fraction"], p["decay_shape"], p["end_factor"])
    return sched.LambdaLR(opt, lambda s: wsd_factor(s, *args))


def inverse_sqrt_factor(step: int, ramp: int, t_ref: int) -> float:
    """EDM2's schedule: a linear ramp over ``ramp`` steps times 1 / sqrt(max(step / t_ref, 1))."""
    ramp_factor = min(step / ramp, 1.0) if ramp > 0 else 1.0
    return ramp_factor / math.sqrt(max(step / t_ref, 1.0))


def _inverse_sqrt(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    return sched.LambdaLR(opt, lambda s: inverse_sqrt_factor(s, p["ramp"], p["t_ref"]))


def _plateau(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.ReduceLROnPlateau:
    every = p["every"]
    return sched.ReduceLROnPlateau(
        opt,
        mode="min",
        factor=p["factor"],
        patience=math.ceil(p["patience"] / every),
        threshold=p["threshold"],
        cooldown=math.ceil(p["cooldown"] / every),
        min_lr=p["min_lr"],
    )


GAMMA = {"low": 0.0, "low_open": True, "high": 1.0}
ETA_MIN = Param("float", 0.0, "LR floor (absolute)", low=0.0)

SCHEDULES: dict[str, ScheduleDef] = {}


def register(definition: ScheduleDef) -> ScheduleDef:
    SCHEDULES[definition.name] = definition
    return definition


register(
    ScheduleDef("constant", "the base LR at every step (the missing true baseline)", {}, _constant)
)
register(
    ScheduleDef(
        "step",
        "StepLR: multiply the LR by gamma every step_size steps",
        {
            "step_size": Param("int", 2500, "steps between drops", low=1),
            "gamma": Param("float", 0.5, "factor per drop", **GAMMA),
        },
        _step,
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
        _multistep,
    )
)
register(
    ScheduleDef(
        "exponential",
        "ExponentialLR: multiply the LR by gamma every step",
        {"gamma": Param("float", 0.9997, "factor per step", **GAMMA)},
        _exponential,
    )
)
register(
    ScheduleDef(
        "cosine",
        "CosineAnnealingLR with T_max = the steps after warm-up",
        {"eta_min": ETA_MIN},
        _cosine,
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
        _cosine_restarts,
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
        _linear,
    )
)
register(
    ScheduleDef(
        "polynomial",
        "PolynomialLR: (1 - step / steps) ** power times the base LR",
        {"power": Param("float", 1.0, "exponent of the decay", low=0.0, low_open=True)},
        _polynomial,
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
        _onecycle,
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
        _cyclic,
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
        _wsd,
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
        _inverse_sqrt,
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
        _plateau,
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
        _constant,
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


def user_defined(path: str) -> ScheduleDef:
    """A schedule from ``module:function``; function(optimizer, steps, **params) -> scheduler."""
    module_name, _, attr = path.partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import schedule {path!r}: {err}") from err
    if not callable(function):
        raise ValueError(f"schedule {path!r} is not callable")

    def build(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
        user = {k: v for k, v in p.items() if k not in WARMUP_PARAMS}
        scheduler = function(opt, steps, **user)
        if not isinstance(scheduler, sched.LRScheduler):
            raise ValueError(
                f"schedule {path!r} returned {type(scheduler).__name__}, not a torch LR scheduler"
            )
        return scheduler

    doc = (function.__doc__ or "user-defined schedule").strip().splitlines()[0]
    return ScheduleDef(path, doc, {}, build, open_params=True)


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


def resolve(
    name: str, params: Mapping[str, Any] | None = None, steps: int | None = None
) -> ScheduleSpec:
    """Check ``params`` against the schedule's parameters and fill in the defaults.

    With ``steps``, also check what depends on the run length (a warm-up shorter than the run).
    """
    definition = lookup(name)
    given = dict(params or {})
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


def _warmup_ramp(optimizer: Optimizer, spec: ScheduleSpec) -> sched.LinearLR:
    return sched.LinearLR(
        optimizer,
        start_factor=spec.params["warmup_start_factor"],
        end_factor=1.0,
        total_iters=spec.warmup_steps,
    )


def build_scheduler(optimizer: Optimizer, spec: ScheduleSpec, steps: int) -> sched.LRScheduler:
    """The torch scheduler for ``spec`` over ``steps`` optimizer steps, warm-up included.

    For ``plateau`` this is the ReduceLROnPlateau alone; ``LRDriver`` adds its warm-up and feeds it.
    """
    warmup = spec.warmup_steps
    main = spec.definition.build(optimizer, steps - warmup, spec.params)
    if warmup == 0 or isinstance(main, sched.ReduceLROnPlateau):
        return main
    return sched.SequentialLR(optimizer, [_warmup_ramp(optimizer, spec), main], milestones=[warmup])


Metric = Callable[[], float]


class LRDriver:
    """Steps a schedule after every optimizer step; feeds ReduceLROnPlateau its watched loss.

    SequentialLR cannot pass a metric on to ReduceLROnPlateau, so the plateau's warm-up is
    driven here: the ramp for the first ``warmup_steps`` steps, the plateau after it.
    """

    def __init__(self, optimizer: Optimizer, spec: ScheduleSpec, steps: int) -> None:
        self.optimizer = optimizer
        self.warmup = spec.warmup_steps
        self.step_count = 0
        self.scheduler = build_scheduler(optimizer, spec, steps)
        self.ramp: sched.LRScheduler | None = None
        if isinstance(self.scheduler, sched.ReduceLROnPlateau):
            self.every = int(spec.params["every"])
            self.watch = str(spec.params["watch"])
            self.window: deque[float] = deque(maxlen=int(spec.params["window"]))
            if self.warmup:
                self.ramp = _warmup_ramp(optimizer, spec)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def is_plateau(self) -> bool:
        return isinstance(self.scheduler, sched.ReduceLROnPlateau)

    @property
    def watches_heldout(self) -> bool:
        return self.is_plateau and self.watch == "heldout"

    def step(self, train_loss: float, heldout_loss: Metric | None = None) -> None:
        """Advance one optimizer step; ``heldout_loss`` is called only when the plateau looks."""
        self.step_count += 1
        if not isinstance(self.scheduler, sched.ReduceLROnPlateau):
            self.scheduler.step()
            return
        if self.step_count <= self.warmup:
            assert self.ramp is not None
            self.ramp.step()
            return
        if self.watch == "train":
            self.window.append(train_loss)
        if (self.step_count - self.warmup) % self.every:
            return
        if self.watch == "train":
            metric = sum(self.window) / len(self.window)
        elif heldout_loss is None:
            raise ValueError("plateau watching the held-out loss needs a held-out metric")
        else:
            metric = heldout_loss()
        self.scheduler.step(metric)


def lr_curve(
    name: str,
    steps: int,
    base_lr: float = 3e-4,
    metrics: Sequence[float] | None = None,
    **params: Any,
) -> np.ndarray:
    """The LR the optimizer uses at each step 0..steps-1, as a float64 numpy array.

    For ``plateau``, ``metrics`` is the watched signal: one training loss per step (watch=train)
    or one held-out loss per look (watch=heldout). Without it the loss never improves.
    """
    if steps <= 0:
        raise ValueError(f"steps must be a positive int, got {steps}")
    check_base_lr(base_lr)
    spec = resolve(name, params, steps)
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=base_lr)
    driver = LRDriver(optimizer, spec, steps)
    values: Iterator[float] = iter(metrics) if metrics is not None else _constant_metric()
    heldout = (lambda: next(values)) if driver.watches_heldout else None
    out = np.empty(steps, dtype=np.float64)
    for i in range(steps):
        out[i] = driver.lr
        optimizer.step()
        driver.step(0.0 if heldout else next(values), heldout)
    return out


def _constant_metric() -> Iterator[float]:
    while True:
        yield 1.0


def check_base_lr(lr: float) -> float:
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite float > 0, got {lr}")
    return lr

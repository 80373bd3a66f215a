"""Torch schedulers for the registry's entries (torch.optim.lr_scheduler)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

from schedlab.schedules.registry import WARMUP_PARAMS, ScheduleDef, ScheduleSpec

Builder = Callable[[Optimizer, int, Mapping[str, Any]], sched.LRScheduler]


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
        max_lr=[group["lr"] for group in opt.param_groups],  # each group peaks at its own LR
        total_steps=steps,
        pct_start=p["pct_start"],
        anneal_strategy=p["anneal_strategy"],
        div_factor=p["div_factor"],
        final_div_factor=p["final_div_factor"],
        three_phase=p["three_phase"],
        cycle_momentum=False,
    )


def _cyclic(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
    top = [group["lr"] for group in opt.param_groups]  # each group cycles below its own LR
    return sched.CyclicLR(
        opt,
        base_lr=[lr * p["min_factor"] for lr in top],
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


BUILDERS: dict[str, Builder] = {
    "constant": _constant,
    "step": _step,
    "multistep": _multistep,
    "exponential": _exponential,
    "cosine": _cosine,
    "cosine_restarts": _cosine_restarts,
    "linear": _linear,
    "polynomial": _polynomial,
    "onecycle": _onecycle,
    "cyclic": _cyclic,
    "wsd": _wsd,
    "inverse_sqrt": _inverse_sqrt,
    "plateau": _plateau,
    "schedule_free": _constant,  # a constant LR: the optimizer does the rest
}


def _user(definition: ScheduleDef) -> Builder:
    function = definition.user_function

    def build(opt: Optimizer, steps: int, p: Mapping[str, Any]) -> sched.LRScheduler:
        user = {k: v for k, v in p.items() if k not in WARMUP_PARAMS}
        scheduler = function(opt, steps, **user)  # type: ignore[misc]
        if not isinstance(scheduler, sched.LRScheduler):
            raise ValueError(
                f"schedule {definition.name!r} returned {type(scheduler).__name__}, "
                "not a torch LR scheduler"
            )
        return scheduler

    return build


def warmup_ramp(optimizer: Optimizer, spec: ScheduleSpec) -> sched.LinearLR:
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
    definition = spec.definition
    build = _user(definition) if definition.open_params else BUILDERS[definition.name]
    main = build(optimizer, steps - warmup, spec.params)
    if warmup == 0 or isinstance(main, sched.ReduceLROnPlateau):
        return main
    return sched.SequentialLR(optimizer, [warmup_ramp(optimizer, spec), main], milestones=[warmup])

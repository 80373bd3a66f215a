"""Which engine trains a run, declared once (no torch): the planner, the executors and the
CLI all ask here.

``fleet`` trains runs of one model shape as one vectorized computation; ``loop`` is the
reference loop, one run at a time. A schedule whose optimizer the fleet does not vectorize
(schedule-free) trains in the loop whatever was asked, and its run records ``loop``.
"""

from __future__ import annotations

from typing import Literal

from schedlab.schedules.registry import ScheduleSpec

Engine = Literal["fleet", "loop"]
ENGINES: tuple[Engine, ...] = ("fleet", "loop")
DEVICES = ("cpu", "cuda")
# Fleet sizes that ran fastest per model-step (benchmarks/engine.py): on 2 CPU cores K = 20
# (two shards of 10) edged out K = 60; a GPU wants as many runs as there are.
DEFAULT_FLEET_SIZE = {"cpu": 20, "cuda": 256}
# On a node of any size: runs per single-threaded shard, the 2-core default's 10.
RUNS_PER_SHARD = 10


def engine_for(requested: str, schedule: ScheduleSpec) -> Engine:
    """The engine that actually trains a run of ``schedule`` when ``requested`` is asked for."""
    check_engine(requested)
    if requested == "fleet" and schedule.definition.optimizer == "adamw":
        return "fleet"
    return "loop"


def check_engine(engine: str) -> Engine:
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; valid engines: {', '.join(ENGINES)}")
    return engine  # type: ignore[return-value]


def check_engine_options(
    engine: str, fleet_size: int | None, device: str, local: bool = True
) -> None:
    """One-line errors for the execution options of `schedlab run` and `schedlab train`.
    A ``local`` CUDA request needs a GPU here; on a cluster, the executor checks."""
    check_engine(engine)
    if fleet_size is not None and fleet_size < 1:
        raise ValueError(f"--fleet-size must be a positive int, got {fleet_size}")
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)}")
    if device == "cuda" and local:
        import torch  # only a CUDA request needs to ask torch

        if not torch.cuda.is_available():
            raise ValueError("device cuda requested but torch sees no CUDA GPU; use --device cpu")

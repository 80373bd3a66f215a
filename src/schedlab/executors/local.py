"""The local executor: runs a study's pending runs in this process, fleet after fleet.

With the fleet engine, runs that can train together (same settings but the LR) are split into
fleets of K and trained as one vectorized computation; each member is then evaluated and
committed on its own. With the loop engine (and for schedule-free runs, whose optimizer the
fleet does not vectorize) each run trains alone in the reference loop.
"""

from __future__ import annotations

import functools
import math
import platform
import socket
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

import schedlab
from schedlab.engine import Member, fleet_key, supports, train_fleet
from schedlab.pipeline import RunOutcome, Workload, evaluate, run_one
from schedlab.spec import RunSpec, StudySpec
from schedlab.store import FINISHED, PlannedRun, Store
from schedlab.train import Progress

Engine = Literal["loop", "fleet"]
# Fleet sizes that ran fastest per model-step (benchmarks/engine.py): on 2 CPU cores K = 20
# (two shards of 10) edged out K = 60; a GPU wants as many runs as there are.
DEFAULT_FLEET_SIZE = {"cpu": 20, "cuda": 256}


def software_versions() -> dict[str, str]:
    return {
        "schedlab": schedlab.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def planned(run: RunSpec) -> PlannedRun:
    identity = run.identity()
    return PlannedRun(
        run.run_id,
        run.label,
        run.dataset,
        run.schedule.name,
        identity["params"],
        run.seed,
        identity["settings"],
    )


@dataclass
class Events:
    """Callbacks for progress display; every one optional."""

    started: Callable[[str, int, int], None] = lambda description, done, total: None
    step: Progress = lambda step, loss, lr: None
    finished: Callable[[RunSpec, str], None] = lambda run, status: None


@dataclass
class Summary:
    planned: int
    skipped: int
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def unique_runs(study: StudySpec) -> list[RunSpec]:
    """The study's runs with one entry per run id (two labels for one config train once)."""
    seen: dict[str, RunSpec] = {}
    for run in study.runs():
        seen.setdefault(run.run_id, run)
    return list(seen.values())


def split_into_fleets(runs: list[RunSpec], engine: Engine, size: int) -> list[list[RunSpec]]:
    """Groups of runs that train together; every group of the loop engine has one run."""
    if engine == "loop":
        return [[run] for run in runs]
    groups: dict[tuple, list[RunSpec]] = {}
    alone = []
    for run in runs:
        if supports(run.schedule):
            key = (fleet_key(run.settings.train), run.settings.data.n)
            groups.setdefault(key, []).append(run)
        else:
            alone.append([run])
    fleets = []
    for group in groups.values():
        # As many fleets as ``size`` requires, of near-equal sizes (48 runs: 16, 16, 16).
        per_fleet = math.ceil(len(group) / math.ceil(len(group) / size))
        fleets += [group[i : i + per_fleet] for i in range(0, len(group), per_fleet)]
    return fleets + alone


class _Runner:
    def __init__(
        self, store: Store, events: Events, summary: Summary, device: str, use_compile: bool | None
    ) -> None:
        self.store, self.events, self.summary, self.device = store, events, summary, device
        self.use_compile = use_compile
        self.host, self.versions = socket.gethostname(), software_versions()
        self.workloads: dict[tuple, Workload] = {}

    def workload(self, run: RunSpec) -> Workload:
        key = Workload.key(run.dataset, run.settings)
        if key not in self.workloads:
            self.workloads[key] = Workload(run.dataset, run.settings)
        return self.workloads[key]

    def train(self, fleet: list[RunSpec], engine: Engine) -> list[Callable[[], RunOutcome]]:
        """Train the fleet; returns, per run, the evaluation still to do."""
        if engine == "loop" or not supports(fleet[0].schedule):
            run = fleet[0]  # the loop engine's fleets have one run each
            outcome = run_one(
                self.workload(run), run.schedule, run.seed, run.settings, self.events.step
            )
            return [lambda: outcome]
        workloads = [self.workload(run) for run in fleet]
        members = [
            Member(w.points, r.schedule, r.seed, r.settings.train.lr)
            for w, r in zip(workloads, fleet, strict=True)
        ]
        results = train_fleet(
            members,
            fleet[0].settings.train,
            self.device,
            lambda k, model: workloads[k].heldout(model),
            self.events.step,
            self.use_compile,
        )
        return [
            functools.partial(evaluate, w, result, run.seed, run.settings)
            for w, result, run in zip(workloads, results, fleet, strict=True)
        ]

    def fail(self, runs: list[RunSpec], err: Exception) -> None:
        detail = traceback.format_exception_only(type(err), err)[-1].strip()
        for run in runs:
            self.store.mark_failed(run.run_id, detail)
            self.summary.outcomes["failed"] += 1
            self.events.finished(run, "failed")

    def run_fleet(self, fleet: list[RunSpec], engine: Engine) -> None:
        """Train a fleet, then evaluate and commit each run on its own.

        A failure while training fails the fleet; a failure while evaluating fails that run.
        """
        for run in fleet:
            self.store.mark_running(run.run_id, self.host, self.versions)
        pending = list(fleet)
        try:
            evaluations = self.train(fleet, engine)
            for run, evaluation in zip(fleet, evaluations, strict=True):
                try:
                    outcome = evaluation()
                except Exception as err:  # recorded; the study goes on
                    self.fail([run], err)
                else:
                    self.store.finish(
                        run.run_id,
                        outcome.status,
                        outcome.metrics,
                        outcome.losses,
                        outcome.lrs,
                        outcome.samples,
                        outcome.diverged_at,
                        "; ".join(outcome.notes) or None,
                    )
                    self.summary.outcomes[outcome.status] += 1
                    self.events.finished(run, outcome.status)
                pending.remove(run)
        except KeyboardInterrupt:
            for run in pending:
                self.store.mark_pending(run.run_id, "interrupted")
            raise
        except Exception as err:  # a failed fleet is recorded; the study goes on
            self.fail(pending, err)


def check_engine_options(engine: str, fleet_size: int | None, device: str) -> None:
    if engine not in ("fleet", "loop"):
        raise ValueError(f"unknown engine {engine!r}; valid engines: fleet, loop")
    if fleet_size is not None and fleet_size < 1:
        raise ValueError(f"--fleet-size must be a positive int, got {fleet_size}")
    if device not in DEFAULT_FLEET_SIZE:
        raise ValueError(f"unknown device {device!r}; valid devices: cpu, cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no CUDA GPU; use --device cpu")


def run_study(
    study: StudySpec,
    store: Store,
    events: Events | None = None,
    engine: Engine = "fleet",
    fleet_size: int | None = None,
    device: str = "cpu",
    use_compile: bool | None = None,
) -> Summary:
    """Train every run not yet done or diverged; failed and interrupted runs are run again.

    A run (or fleet) that raises is recorded as failed and the study goes on; Ctrl-C puts the
    runs in flight back to pending, then re-raises.
    """
    check_engine_options(engine, fleet_size, device)
    events = events or Events()
    store.register_study(
        study.name, study.model_dump(mode="json"), [planned(r) for r in study.runs()]
    )
    runs = unique_runs(study)
    todo = [r for r in runs if store.status(r.run_id) not in FINISHED]
    summary = Summary(planned=len(runs), skipped=len(runs) - len(todo))
    runner = _Runner(store, events, summary, device, use_compile)
    size = fleet_size or DEFAULT_FLEET_SIZE[device]
    start = time.perf_counter()
    done = 0
    for fleet in split_into_fleets(todo, engine, size):
        what = (
            f"{fleet[0].dataset}/{fleet[0].label}/seed {fleet[0].seed}"
            if len(fleet) == 1
            else f"fleet of {len(fleet)} runs"
        )
        events.started(what, done, len(todo))
        runner.run_fleet(fleet, engine)
        done += len(fleet)
    summary.seconds = time.perf_counter() - start
    return summary

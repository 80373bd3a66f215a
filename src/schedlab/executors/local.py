"""The local executor: runs a study's pending runs in this process, one after another."""

from __future__ import annotations

import platform
import socket
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

import schedlab
from schedlab.pipeline import Workload, run_one
from schedlab.spec import RunSpec, StudySpec
from schedlab.store import FINISHED, PlannedRun, Store
from schedlab.train import Progress


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

    run_started: Callable[[RunSpec, int, int], None] = lambda run, index, total: None
    step: Progress = lambda step, loss, lr: None
    run_finished: Callable[[RunSpec, str], None] = lambda run, status: None


@dataclass
class Summary:
    planned: int
    skipped: int
    outcomes: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    interrupted: bool = False


def unique_runs(study: StudySpec) -> list[RunSpec]:
    """The study's runs with one entry per run id (two labels for one config train once)."""
    seen: dict[str, RunSpec] = {}
    for run in study.runs():
        seen.setdefault(run.run_id, run)
    return list(seen.values())


def run_study(study: StudySpec, store: Store, events: Events | None = None) -> Summary:
    """Train every run not yet done or diverged; failed and interrupted runs are run again.

    A run that raises is recorded as failed and the study goes on; Ctrl-C puts the run in
    flight back to pending, then re-raises.
    """
    events = events or Events()
    plan = study.runs()
    store.register_study(study.name, study.model_dump(mode="json"), [planned(r) for r in plan])
    runs = unique_runs(study)
    todo = [r for r in runs if store.status(r.run_id) not in FINISHED]
    summary = Summary(planned=len(runs), skipped=len(runs) - len(todo))
    host, versions = socket.gethostname(), software_versions()
    workloads: dict[tuple, Workload] = {}
    start = time.perf_counter()
    for index, run in enumerate(todo):
        events.run_started(run, index, len(todo))
        store.mark_running(run.run_id, host, versions)
        try:
            key = Workload.key(run.dataset, run.settings)
            if key not in workloads:
                workloads[key] = Workload(run.dataset, run.settings)
            outcome = run_one(workloads[key], run.schedule, run.seed, run.settings, events.step)
        except KeyboardInterrupt:
            store.mark_pending(run.run_id, "interrupted")
            summary.interrupted = True
            summary.seconds = time.perf_counter() - start
            raise
        except Exception as err:  # a failed run is recorded; the study goes on
            detail = traceback.format_exception_only(type(err), err)[-1].strip()
            store.mark_failed(run.run_id, detail)
            summary.outcomes["failed"] += 1
            events.run_finished(run, "failed")
            continue
        store.finish(
            run.run_id,
            outcome.status,
            outcome.metrics,
            outcome.losses,
            outcome.lrs,
            outcome.samples,
            outcome.diverged_at,
            "; ".join(outcome.notes) or None,
        )
        summary.outcomes[outcome.status] += 1
        events.run_finished(run, outcome.status)
    summary.seconds = time.perf_counter() - start
    return summary

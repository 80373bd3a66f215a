"""`schedlab measure --ema-sweep`: each finished run's post-hoc EMAs of the asked lengths, formed
from its stored snapshots and measured; trains nothing.

Every EMA of a run samples from the run's own sampling stream (the same noise for every length:
the lengths are compared paired), its samples drawn together as one batched computation. The
values go to the store's ``ema_sweep`` table under the EMA's relative std and the metric's
measurement key, so a sweep that is interrupted, or widened later, measures only what is missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from schedlab import plan
from schedlab.averaging.profiles import gamma_of
from schedlab.config.study import StudySpec
from schedlab.metrics import METRICS, Metric, averaged
from schedlab.plan import RunSpec
from schedlab.store.status import RunStatus
from schedlab.store.store import Store
from schedlab.trials import planned_runs


@dataclass
class SweepOutcome:
    runs: int = 0  # runs measured by this sweep
    values: int = 0  # values stored
    notes: list[str] = field(default_factory=list)


def parse_stds(text: str) -> list[float]:
    """ "0.05,0.1" -> [0.05, 0.1], each a relative std a power-function EMA can have."""
    try:
        stds = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"--ema-sweep takes comma-separated relative stds like 0.05,0.1, got {text!r}"
        ) from None
    if not stds:
        raise ValueError("--ema-sweep needs at least one relative std, like 0.05,0.1")
    for std in stds:
        if not math.isfinite(std):
            raise ValueError(f"--ema-sweep takes finite relative stds, got {std}")
        gamma_of(std)
    return sorted(set(stds))


def parse_metrics(text: str) -> list[Metric]:
    """ "kl_divergence,mmd" -> those metrics, each one that scores the EMA weights."""
    valid = {m.key: m for m in averaged()}
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names or [""]:
        if name not in valid:
            raise ValueError(
                f"--ema-metrics: {name!r} is not a metric of the EMA weights; valid: "
                f"{', '.join(valid)}"
            )
    return [valid[name] for name in dict.fromkeys(names)]


def snapshot_source(run: RunSpec) -> tuple[str, int | None]:
    """(run id, step): whose snapshots a run's post-hoc EMAs are formed from, and after how
    many steps. A trunk read at a smaller budget (a branch that trains no step) has its trunk's
    EMAs at that budget: a power-function EMA's length is relative to the step it is read at,
    so the trunk's EMA at B is the EMA a run of B steps would have had. Any other run: its own,
    at its end."""
    if run.branch is not None and run.branch.step == run.budget:
        return run.branch.parent, run.budget
    return run.run_id, None


def sweep_todo(
    study: StudySpec, store: Store, engine: str, stds: list[float], metrics: list[Metric]
) -> list[tuple[RunSpec, list[tuple[float, Metric]]]]:
    """Each finished run with snapshots and the (std, metric) pairs it has no value for.
    Raises when no finished run of the study has snapshots."""
    runs = [
        run
        for run in plan.unique(planned_runs(study, engine, store))
        if store.status(run.run_id) == RunStatus.DONE
    ]
    counts = store.snapshot_counts(snapshot_source(r)[0] for r in runs)
    if not counts:
        raise ValueError(
            f"no finished run of study {study.name!r} has post-hoc EMA snapshots: set "
            "[ema] posthoc = true in the study and run it (its runs train again, with them)"
        )
    have = {
        (run_id, std, metric, mkey)
        for run_id, std, metric, mkey, _ in store.sweep(r.run_id for r in runs)
    }
    todo = []
    for run in runs:
        if snapshot_source(run)[0] not in counts:
            continue
        missing = [
            (std, m)
            for std in stds
            for m in metrics
            if m.applies(run.dataset, run.shape)
            and (run.run_id, std, m.key, m.key_for(run.settings.eval)) not in have
        ]
        if missing:
            todo.append((run, missing))
    return todo


def sweep_study(
    study: StudySpec,
    store: Store,
    stds: list[float],
    metrics: list[Metric],
    engine: str = "fleet",
    progress: Callable[[int, int], None] | None = None,
) -> SweepOutcome:
    """Measure every finished run's post-hoc EMAs of relative stds ``stds`` at the end of its
    training (a trunk read at a budget: its trunk's, at that budget); ``progress(done,
    total)`` after each run."""
    from schedlab.averaging.reconstruct import averaged_weights
    from schedlab.execute.work import Worker
    from schedlab.measure.evaluate import Trained, evaluate
    from schedlab.measure.sampling import timed_samples

    todo = sweep_todo(study, store, engine, stds, metrics)
    worker, outcome = Worker(), SweepOutcome()
    for done, (run, missing) in enumerate(todo, 1):
        source, at = snapshot_source(run)
        snapshots = store.snapshots(source, at)
        lengths = sorted({std for std, _ in missing})
        models = [worker.model(run, averaged_weights(snapshots, std, at)[0]) for std in lengths]
        workload = worker.workload(run)
        drawn: list[tuple[np.ndarray, float] | None] = [None] * len(models)
        if any("samples" in m.needs for _, m in missing):
            points, seconds = timed_samples(
                models,
                [run.seed] * len(models),
                workload.noise,
                run.settings.eval.samples,
                workload.dtype,
                run.settings.eval.sample_chunk,
                workload.shape,
            )
            drawn = [(p, seconds) for p in points]
        rows = []
        for std, model, samples in zip(lengths, models, drawn, strict=True):
            asked = [m for s, m in missing if s == std]
            trained = Trained(math.nan, ema_model=model, drawn=samples)
            measured = evaluate(workload, trained, run.seed, run.settings, asked)
            outcome.notes += [
                f"{run.dataset}/{run.label}/seed {run.seed}: {n}" for n in measured.notes
            ]
            rows += [
                (std, key, METRICS[key].key_for(run.settings.eval), value)
                for key, value in measured.values.items()
            ]
        store.add_sweep(run.run_id, rows)
        outcome.runs += 1
        outcome.values += len(rows)
        if progress is not None:
            progress(done, len(todo))
    return outcome

"""The work of an executor, in whatever process it runs: train a fleet, measure its runs.

It talks to the engines and the measurements and returns plain data (``Commit``) for the
driver to store; it never touches the store itself.
"""

from __future__ import annotations

import dataclasses
import math
import traceback
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from schedlab.averaging.plan import PosthocPlan
from schedlab.config.settings import DIVERGE_FACTOR, Settings, TrainSettings
from schedlab.execute.base import RunOutcome
from schedlab.execute.checkpoints import FleetCheckpoints
from schedlab.measure.evaluate import Measured, Trained, evaluate
from schedlab.measure.losses import reference_eval_losses
from schedlab.measure.sampling import timed_samples
from schedlab.measure.workload import Workload
from schedlab.metrics import METRICS, Metric, enabled, sample_key
from schedlab.model.denoiser import load_weights_vector, weights_vector
from schedlab.model.registry import ModelSpec
from schedlab.plan import RunSpec
from schedlab.schedules.curves import check_user_schedule
from schedlab.store.records import Commit
from schedlab.store.status import RunStatus
from schedlab.store.store import DiskFullError
from schedlab.training import engines
from schedlab.training.common import Member, Progress, TrainResult, build_model

# (run, first step, losses, LRs of the steps from there): a run's curves while it trains.
RunCurves = Callable[[RunSpec, int, np.ndarray, np.ndarray], None]


def error_line(err: BaseException) -> str:
    return traceback.format_exception_only(type(err), err)[-1].strip()


class Worker:
    """Trains fleets and measures runs, keeping each dataset's Workload for reuse."""

    def __init__(
        self,
        device: str = "cpu",
        use_compile: bool | None = None,
        progress: Progress | None = None,
        checkpoints: FleetCheckpoints | None = None,
        curves: RunCurves | None = None,
    ) -> None:
        """``checkpoints``: where fleets resume from and save to (None: they do not).
        ``curves(run, first_step, losses, lrs)``: told each run's curves while it trains."""
        self.device, self.use_compile, self.progress = device, use_compile, progress
        self.checkpoints = checkpoints
        self.curves = curves
        self.workloads: dict[tuple, Workload] = {}

    def workload(self, run: RunSpec) -> Workload:
        key = Workload.key(run.dataset, run.settings, run.shape)
        if key not in self.workloads:
            self.workloads[key] = Workload(run.dataset, run.settings, run.shape)
        return self.workloads[key]

    def train_fleet(self, fleet: list[RunSpec]) -> Iterator[RunOutcome]:
        """Train one fleet, then measure each run. A failure while training fails the fleet;
        a failure while measuring fails that run. A run whose user-defined schedule raises
        fails alone, before the fleet trains without it."""
        runnable = []
        for run in fleet:
            try:
                check_user_schedule(run.schedule, run.settings.train.steps, whole_run=True)
            except ValueError as err:
                yield RunOutcome(run, None, str(err))
            else:
                runnable.append(run)
        if not runnable:
            return
        fleet = runnable
        workloads = [self.workload(run) for run in fleet]
        members = [
            Member(w.points, r.schedule, r.seed, r.settings.train.lr, model_of(r))
            for w, r in zip(workloads, fleet, strict=True)
        ]
        checkpoints, restart = None, None
        if self.checkpoints is not None and fleet[0].engine == "fleet":
            checkpoints, restart = self.checkpoints.for_fleet(fleet)
        try:
            results = engines.train(
                members,
                fleet[0].settings.train,
                fleet[0].engine,
                self.device,
                lambda k, model: workloads[k].heldout(model),
                self.progress,
                self.use_compile,
                checkpoints,
                posthoc_plan(fleet[0].settings),
                self.member_curves(fleet),
            )
        except DiskFullError:  # the store cannot take more: the study stops
            raise
        except Exception as err:  # recorded for each run of the fleet; the study goes on
            for run in fleet:
                yield RunOutcome(run, None, error_line(err))
            return
        try:
            drawn = self.draw_samples(fleet, workloads, results)
            eval_losses = self.eval_losses(fleet, workloads, results)
        except DiskFullError:  # the store cannot take more: the study stops
            raise
        except Exception as err:  # recorded for each run of the fleet; the study goes on
            for run in fleet:
                yield RunOutcome(run, None, error_line(err))
            return
        for run, workload, result in zip(fleet, workloads, results, strict=True):
            try:
                commit = self.measure_fresh(
                    run, workload, result, drawn.get(run.run_id), eval_losses.get(run.run_id)
                )
                if restart is not None:
                    commit = dataclasses.replace(commit, notes=(*commit.notes, restart))
            except DiskFullError:
                raise
            except Exception as err:  # recorded; the study goes on
                yield RunOutcome(run, None, error_line(err))
            else:
                yield RunOutcome(run, commit)

    def member_curves(
        self, fleet: list[RunSpec]
    ) -> Callable[[int, int, np.ndarray, np.ndarray], None] | None:
        """The fleet's live curves, member k told as its run."""
        if self.curves is None:
            return None
        tell = self.curves

        def member(k: int, first: int, losses: np.ndarray, lrs: np.ndarray) -> None:
            tell(fleet[k], first, losses, lrs)

        return member

    def draw_samples(
        self, fleet: list[RunSpec], workloads: list[Workload], results: list[TrainResult]
    ) -> dict[str, tuple[np.ndarray, float]]:
        """run id -> (samples, seconds per run) for the fleet's runs that did not diverge and
        measure a metric of samples, drawn as one batched computation."""
        wanted = [
            (run, workload, result)
            for run, workload, result in zip(fleet, workloads, results, strict=True)
            if result.diverged_at is None
            and any("samples" in m.needs for m in measured_metrics(run))
        ]
        if not wanted:
            return {}
        first, workload, _ = wanted[0]  # a fleet shares its eval settings and noise schedule
        points, seconds = timed_samples(
            [result.ema_model for *_, result in wanted],
            [run.seed for run, *_ in wanted],
            workload.noise,
            first.settings.eval.samples,
            workload.dtype,
            first.settings.eval.sample_chunk,
            workload.shape,
        )
        return {run.run_id: (p, seconds) for (run, *_), p in zip(wanted, points, strict=True)}

    def eval_losses(
        self, fleet: list[RunSpec], workloads: list[Workload], results: list[TrainResult]
    ) -> dict[str, float]:
        """run id -> reference eval loss for the fleet's runs that did not diverge and
        measure it, as one batched computation."""
        wanted = [
            (run, workload, result)
            for run, workload, result in zip(fleet, workloads, results, strict=True)
            if result.diverged_at is None
            and any(m.key == "eval_loss" for m in measured_metrics(run))
        ]
        if not wanted:
            return {}
        values = reference_eval_losses(
            [result.model for *_, result in wanted],
            [torch.as_tensor(w.points, dtype=w.dtype) for _, w, _ in wanted],
            [run.seed for run, *_ in wanted],
            wanted[0][1].noise,  # a fleet shares its noise schedule
            wanted[0][0].settings.train.batch_size,
        )
        return {run.run_id: value for (run, *_), value in zip(wanted, values, strict=True)}

    def measure_fresh(
        self,
        run: RunSpec,
        workload: Workload,
        result: TrainResult,
        drawn: tuple[np.ndarray, float] | None = None,
        eval_loss: float | None = None,
    ) -> Commit:
        """Every enabled metric of a freshly trained run (``drawn``: its samples, drawn with
        its fleet; ``eval_loss``: its reference eval loss, measured with its fleet), with
        everything to store."""
        trained = Trained(
            result.training_time, result.model, result.ema_model, drawn=drawn, eval_loss=eval_loss
        )
        diverged = result.diverged_at is not None
        measured = evaluate(
            workload, trained, run.seed, run.settings, measured_metrics(run), diverged
        )
        notes = measured.notes
        kept = (result.model, result.ema_model)
        if diverged:
            notes = [divergence_note(result, run.settings.train), *notes]
        return Commit(
            status=RunStatus.DIVERGED if diverged else RunStatus.DONE,
            training_time=result.training_time,
            losses=result.losses,
            lrs=result.lrs,
            heldout_curve=result.heldout_curve,
            weights=None if diverged else tuple(weights_vector(m) for m in kept),
            measurements=keyed(measured, run.settings),
            samples=sampled(measured, run.settings),
            diverged_at=result.diverged_at,
            notes=tuple(notes),
            resumed_from=result.resumed_from,
            snapshots=() if diverged else tuple(result.snapshots),
        )

    def measure_stored(
        self,
        run: RunSpec,
        training_time: float,
        weights: tuple[np.ndarray, np.ndarray] | None,
        samples: tuple[np.ndarray, float] | None,
        metrics: list[Metric],
    ) -> tuple[dict[str, tuple[str, float]], tuple[str, np.ndarray, float] | None, list[str]]:
        """``metrics`` of a finished run from what the store kept of it: (measurements keyed,
        newly drawn samples keyed, notes)."""
        workload = self.workload(run)
        trained = Trained(training_time, samples=samples)
        if weights is not None:
            trained.model, trained.ema_model = (self.model(run, w) for w in weights)
        measured = evaluate(workload, trained, run.seed, run.settings, metrics)
        return keyed(measured, run.settings), sampled(measured, run.settings), measured.notes

    def model(self, run: RunSpec, vector: np.ndarray) -> nn.Module:
        """The run's model with the stored weights ``vector``."""
        model = build_model(run.settings.train, run.seed, run.dim, model_of(run))
        return load_weights_vector(model, vector)


def model_of(run: RunSpec) -> ModelSpec | None:
    """The model a run trains (None: the mlp of its [train] sizes, the engines' fast path)."""
    return None if run.settings.model.name == "mlp" else run.model


def posthoc_plan(settings: Settings) -> PosthocPlan | None:
    """What post-hoc EMA tracking a run's settings ask for (None: none)."""
    ema = settings.ema
    return PosthocPlan.of(ema.stds, ema.snapshots, settings.train.steps) if ema.posthoc else None


def measured_metrics(run: RunSpec) -> list[Metric]:
    """The metrics a freshly trained run measures: its own list, else every one enabled."""
    return [METRICS[key] for key in run.metrics] or enabled(run.settings.eval)


def divergence_note(result: TrainResult, settings: TrainSettings) -> str:
    last, step = result.losses[-1], result.diverged_at
    if not math.isfinite(last):
        return f"loss became {last} at step {step}"
    factor = settings.diverge_factor or DIVERGE_FACTOR
    return (
        f"loss {last:.3g} at step {step} exceeded {factor:g}x the first step's "
        f"({result.losses[0]:.3g})"
    )


def keyed(measured: Measured, settings: Settings) -> dict[str, tuple[str, float]]:
    """Each measured value under its measurement key."""
    metrics = {m.key: m for m in enabled(settings.eval)}
    return {k: (metrics[k].key_for(settings.eval), v) for k, v in measured.values.items()}


def sampled(measured: Measured, settings: Settings) -> tuple[str, np.ndarray, float] | None:
    if measured.samples is None:
        return None
    points, seconds = measured.samples
    return sample_key(settings.eval), points, seconds

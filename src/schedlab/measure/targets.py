"""Time-to-target (AlgoPerf's measure of speed): how soon a run's held-out curve reaches a target.

A run records its held-out EMA loss every ``curve_every`` steps while it trains. The target of
a dataset is the study's ``[target] loss`` for it, or else the baseline schedule's final
held-out EMA loss (the mean over its finished seeds) times ``[target] factor`` (1.01). A run's
``steps_to_target`` is the first recorded step at which its curve is at or below the target;
``seconds_to_target`` converts it at the run's own measured step rate (its training time over
the steps it trained). Both are NaN when the curve never gets there, and when the run recorded
no curve (trained before schedlab recorded them). No torch here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from schedlab.config.settings import TargetSettings
from schedlab.metrics import derived
from schedlab.store.records import RunRecord
from schedlab.store.status import RunStatus

FINAL_LOSS = "eval_loss_heldout_ema"


@dataclass(frozen=True)
class TargetContext:
    """What the time-to-target metrics of one run read."""

    curve: np.ndarray | None  # [m, 2]: (steps done, held-out EMA loss); None when not recorded
    target: float  # NaN when the dataset has none (no finished baseline run)
    training_time: float  # seconds
    steps_trained: int

    def steps_to_target(self) -> float:
        return float(first_reached(self.curve, self.target))

    def seconds_to_target(self) -> float:
        steps = self.steps_to_target()
        if not math.isfinite(steps) or self.steps_trained <= 0:
            return math.nan
        return steps * self.training_time / self.steps_trained


def first_reached(curve: np.ndarray | None, target: float) -> float:
    """The first step of ``curve`` whose loss is at or below ``target``; NaN if none."""
    if curve is None or len(curve) == 0 or not math.isfinite(target):
        return math.nan
    reached = np.flatnonzero(curve[:, 1] <= target)
    return float(curve[reached[0], 0]) if len(reached) else math.nan


def dataset_targets(
    records: Sequence[RunRecord], baseline: str, settings: TargetSettings
) -> dict[str, float]:
    """dataset -> its target loss: the study's own, or the baseline's final loss x factor."""
    out = {}
    for dataset in dict.fromkeys(r.dataset for r in records):
        if dataset in settings.loss:
            out[dataset] = settings.loss[dataset]
            continue
        finals = [
            r.metrics.get(FINAL_LOSS, math.nan)
            for r in records
            if r.dataset == dataset and r.label == baseline and r.status == RunStatus.DONE
        ]
        finals = [v for v in finals if math.isfinite(v)]
        out[dataset] = float(np.mean(finals)) * settings.factor if finals else math.nan
    return out


def target_context(
    record: RunRecord, curves: Mapping[str, np.ndarray], targets: Mapping[str, float]
) -> TargetContext:
    """A finished run's context; its steps come from its settings, as stored."""
    steps = int(record.settings["train"]["steps"])
    return TargetContext(
        curves.get(record.run_id),
        targets.get(record.dataset, math.nan),
        record.training_time if record.training_time is not None else math.nan,
        steps if record.diverged_at is None else record.diverged_at + 1,
    )


def derived_values(context: TargetContext) -> dict[str, float]:
    """Every derived metric of one run."""
    return {m.key: float(m.compute(context)) for m in derived()}


def with_time_to_target(
    records: Sequence[RunRecord],
    curves: Mapping[str, np.ndarray],
    targets: Mapping[str, float],
) -> list[RunRecord]:
    """The records with every derived metric filled in (NaN for runs not finished)."""
    out = []
    for record in records:
        if record.status in (RunStatus.DONE, RunStatus.DIVERGED):
            values = derived_values(target_context(record, curves, targets))
        else:
            values = {m.key: math.nan for m in derived()}
        out.append(dataclasses.replace(record, metrics={**record.metrics, **values}))
    return out

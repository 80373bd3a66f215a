"""A study as the report sees it: the store's records, grouped, in the study's order."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from schedlab.store import FINISHED, RunRecord, Store

METRICS = {
    "kl_divergence": ("KL divergence (bits)", 3),
    "eval_loss": ("Eval loss (reference: training set)", 3),
    "eval_loss_heldout": ("Held-out eval loss", 3),
    "eval_loss_heldout_ema": ("Held-out eval loss, EMA weights", 3),
    "training_time": ("Training time (s)", 2),
    "inference_time": ("Inference time (s)", 2),
}


@dataclass
class StudyView:
    name: str
    spec: dict[str, Any]
    records: list[RunRecord]
    labels: list[str]
    datasets: list[str]
    baseline: str

    def finished(self) -> list[RunRecord]:
        return [r for r in self.records if r.status == "done"]

    def values(self, label: str, dataset: str, metric: str) -> dict[int, float]:
        """seed -> metric for the finished runs of one cell."""
        return {
            r.seed: r.metrics.get(metric, math.nan)
            for r in self.records
            if r.label == label and r.dataset == dataset and r.status == "done"
        }

    def same_runs_as_baseline(self, label: str) -> bool:
        """True when a label names the baseline's very runs (the paper's baseline and cosine)."""

        def ids(name: str) -> set[str]:
            return {r.run_id for r in self.records if r.label == name}

        return label != self.baseline and ids(label) == ids(self.baseline)

    def kl_floor(self, dataset: str) -> float:
        floors = [
            r.metrics.get("kl_floor", math.nan)
            for r in self.records
            if r.dataset == dataset and r.status in FINISHED
        ]
        return next((f for f in floors if math.isfinite(f)), math.nan)

    def missing(self) -> list[RunRecord]:
        return [r for r in self.records if r.status not in FINISHED]

    def problems(self) -> list[RunRecord]:
        return [r for r in self.records if r.status in ("failed", "diverged")]


def load_study_view(store: Store, study: str, baseline: str | None = None) -> StudyView:
    spec = store.study_spec(study)
    if spec is None:
        raise ValueError(f"study {study!r} is not in {store.path}; run `schedlab run` on it first")
    records = store.records(study)
    labels = list(dict.fromkeys(r.label for r in records))
    datasets = list(dict.fromkeys(r.dataset for r in records))
    if baseline is None:
        baseline = "baseline" if "baseline" in labels else labels[0]
    elif baseline not in labels:
        raise ValueError(f"unknown baseline {baseline!r}; schedules: {', '.join(labels)}")
    return StudyView(study, spec, records, labels, datasets, baseline)

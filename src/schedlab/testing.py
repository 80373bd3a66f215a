"""Synthetic stores for tests and benchmarks: many finished runs in seconds, no training."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from schedlab.config.settings import EvalSettings
from schedlab.metrics import METRICS, sample_key
from schedlab.store.records import Commit, PlannedRun
from schedlab.store.status import RunStatus
from schedlab.store.store import Store

LABELS = ("baseline", "step", "exponential", "plateau", "cosine")
DATASETS = ("circle", "dino", "line", "moons")
KL_FLOOR = {"circle": 0.02, "dino": -0.07, "line": 0.015, "moons": -0.03}
# The image metrics, which do not apply to 2-D points: stored as NaN.
IMAGE_METRICS = [
    *(
        f"{k}{end}"
        for k in ("frechet_distance", "precision", "recall", "class_kl")
        for end in ("", "_floor")
    ),
    "feature_accuracy",
]


def synthetic_store(
    path: Path,
    study: str = "synthetic",
    seeds: int = 3,
    steps: int = 10_000,
    samples: int = 10_000,
    diverged: tuple[str, str, int] | None = ("plateau", "line", 2),
    failed: tuple[str, str, int] | None = ("step", "moons", 1),
    rng_seed: int = 0,
) -> Path:
    """A store shaped like the paper study: 5 labels x 4 datasets x ``seeds`` runs."""
    rng = np.random.default_rng(rng_seed)
    plan = []
    for dataset in DATASETS:
        for label in LABELS:
            for seed in range(seeds):
                # As in the paper preset, cosine is the baseline's very runs under a second label.
                config = "baseline" if label == "cosine" else label
                run_id = hashlib.sha256(f"{study}/{dataset}/{config}/{seed}".encode()).hexdigest()
                settings = {"train": {"steps": steps}}
                plan.append(
                    PlannedRun(run_id[:20], label, dataset, label, {}, seed, settings, "fleet")
                )
    spec = {"name": study, "datasets": list(DATASETS), "seeds": seeds, "synthetic": True}
    measured = EvalSettings()  # the spec has no [eval]: the defaults
    with Store(path) as db:
        db.register_plan(study, spec, plan)
        steps_axis = np.arange(steps)
        for i, run in enumerate(plan):
            if run.label == "cosine":
                continue  # trained once, under the baseline label
            owner = "synthetic-host:0"
            db.claim(run.run_id, owner, 60.0, "synthetic-host", {"schedlab": "synthetic"})
            key = (run.label, run.dataset, run.seed)
            if key == failed:
                db.mark_failed(run.run_id, owner, "RuntimeError: synthetic failure")
                continue
            quality = LABELS.index(run.label) + 1
            loss = 0.4 + 0.6 * np.exp(-steps_axis / (300 * quality)) + 0.05 * rng.random(steps)
            lr = 3e-4 * 0.5 * (1 + np.cos(np.pi * steps_axis / steps)) / quality
            metrics = {
                "training_time": 50 + rng.normal(0, 2),
                "eval_loss": 0.5 + 0.1 * quality + rng.normal(0, 0.01),
                "eval_loss_heldout": 0.5 + 0.1 * quality + rng.normal(0, 0.01),
                "eval_loss_heldout_ema": 0.5 + 0.1 * quality + rng.normal(0, 0.01),
                "inference_time": 3 + rng.normal(0, 0.1),
                "kl_divergence": 0.1 * quality**2 + rng.normal(0, 0.02) + i * 1e-6,
                "kl_floor": KL_FLOOR[run.dataset],
                "sliced_wasserstein": 0.05 * quality + rng.normal(0, 0.005),
                "sliced_wasserstein_floor": 0.01,
                "mmd": 0.002 * quality**2 + rng.normal(0, 0.0002),
                "mmd_floor": 0.0001,
                "log_density": float("nan"),  # no known density for these datasets
                "log_density_floor": float("nan"),
                # Image metrics: these are 2-D points (they do not apply).
                **{key: float("nan") for key in IMAGE_METRICS},
            }
            stored = {k for k, m in METRICS.items() if not m.derived}
            assert set(metrics) == stored, "the synthetic store covers every stored metric"
            # The held-out curve every 50 steps, decaying to the run's final held-out loss.
            at = np.arange(50, steps + 1, 50, dtype=np.float64)
            final = metrics["eval_loss_heldout_ema"]
            heldout = np.stack(
                [
                    at,
                    final
                    + 0.3 * np.exp(-at / (100 * quality))
                    - 0.3 * np.exp(-steps / (100 * quality)),
                ],
                axis=1,
            )
            points = rng.normal(size=(samples, 2)) * (1 + quality / 4)
            status = RunStatus.DIVERGED if key == diverged else RunStatus.DONE
            drawn = (sample_key(measured), points, 3.0)
            if status == RunStatus.DIVERGED:
                metrics = dict.fromkeys(metrics, float("nan"))
            commit = Commit(
                status=status,
                training_time=metrics["training_time"],
                losses=loss[:50] if status == RunStatus.DIVERGED else loss,
                lrs=lr[:50] if status == RunStatus.DIVERGED else lr,
                heldout_curve=heldout[:0] if status == RunStatus.DIVERGED else heldout,
                weights=None,
                measurements={k: (METRICS[k].key_for(measured), v) for k, v in metrics.items()},
                samples=None if status == RunStatus.DIVERGED else drawn,
                diverged_at=49 if status == RunStatus.DIVERGED else None,
                notes=("loss became nan at step 49",) if status == RunStatus.DIVERGED else (),
            )
            db.finish(run.run_id, owner, commit)
    return path

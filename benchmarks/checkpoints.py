"""Checkpointing's cost: a fleet of the reference model trained with and without checkpoints
into a real store, as a ratio measured in one run.

    python benchmarks/checkpoints.py [--quick] [--json FILE]

The fleet (K = 16 by default, the paper study's fleet size) trains the same steps three ways:
without checkpoints, saving every `--every` steps (to time one save), and at the default
cadence (about once a minute, so the fraction of time it costs is per-save seconds / 60).
Also reported: the size of one run's checkpoint in the store.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from schedlab import data
from schedlab.config.settings import TrainSettings
from schedlab.schedules import registry as schedules
from schedlab.store.store import Store
from schedlab.training.checkpoint import Checkpoint, CheckpointPolicy, Checkpoints
from schedlab.training.common import Member
from schedlab.training.fleet.shards import train_fleet


def fleet_seconds(
    members: list[Member], settings: TrainSettings, saves: Checkpoints | None
) -> float:
    """The best of two trainings (the machine's noise is one-sided)."""
    times = []
    for _ in range(2):
        start = time.perf_counter()
        train_fleet(members, settings, checkpoints=saves)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 4, 60 steps")
    parser.add_argument("--every", type=int, default=25, help="steps between saves")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    k, steps = (4, 60) if args.quick else (16, 300)
    settings = TrainSettings(steps=steps)
    points = data.load("moons", 100_000 if not args.quick else 5_000)
    spec = schedules.resolve("cosine", {}, steps)
    members = [Member(points, spec, seed, settings.lr) for seed in range(k)]
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.sqlite") as store:
        sizes: list[int] = []

        def save(index: int, checkpoint: Checkpoint) -> None:
            blob = checkpoint.to_bytes()
            sizes.append(len(blob))
            store.conn.execute(  # a run row is not needed to time the write itself
                "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?)",
                (f"run-{index}", checkpoint.step, blob, time.time()),
            )

        resume: list[Checkpoint | None] = [None] * k
        train_fleet(members, settings)  # warm-up: first allocations, lazy imports
        plain = fleet_seconds(members, settings, None)
        every = Checkpoints(resume, save, CheckpointPolicy(every_steps=args.every))
        frequent = fleet_seconds(members, settings, every)
        saves = (steps - 1) // args.every + 1  # and one at the end
        default = fleet_seconds(members, settings, Checkpoints(resume, save, CheckpointPolicy()))
    per_save = max(frequent - plain, 0.0) / saves
    numbers = {
        "K": k,
        "steps": steps,
        "plain_steps_per_s": steps / plain,
        "every_steps": args.every,
        "every_steps_per_s": steps / frequent,
        "default_steps_per_s": steps / default,
        "seconds_per_save": per_save,
        "default_overhead": per_save / 60.0,
        "checkpoint_bytes_per_run": int(np.median(sizes)),
    }
    print(
        f"fleet K={k}, {steps} steps: {numbers['plain_steps_per_s']:.1f} steps/s without "
        f"checkpoints, {numbers['every_steps_per_s']:.1f} saving every {args.every} steps "
        f"({saves} saves: {per_save:.3f} s each), {numbers['default_steps_per_s']:.1f} at the "
        f"default cadence (once a minute: {100 * numbers['default_overhead']:.2f}% of the time); "
        f"{numbers['checkpoint_bytes_per_run'] / 1e6:.2f} MB per run per checkpoint"
    )
    if args.json:
        args.json.write_text(json.dumps(numbers))


if __name__ == "__main__":
    main()

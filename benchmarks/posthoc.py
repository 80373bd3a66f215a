"""Post-hoc EMA's cost: a fleet of the reference model trained with and without tracking, as
ratios measured in one run, the snapshots' size in the store, and the time to form one EMA.

    python benchmarks/posthoc.py [--quick] [--json FILE]

The fleet (K = 16, the paper study's fleet size) trains the same steps three ways: without
tracking; tracking two EMAs (stds 0.05, 0.10) with one snapshot at the end (the per-step
cost: two lerps over the fleet's weights); and with 16 snapshots (each snapshot's cost). From
these, the overhead of a 10,000-step run with 16 snapshots per EMA is projected.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from schedlab import data
from schedlab.averaging.plan import PosthocPlan
from schedlab.averaging.reconstruct import averaged_weights
from schedlab.config.settings import TrainSettings
from schedlab.schedules import registry as schedules
from schedlab.store.arrays import encode_array
from schedlab.training.common import Member, TrainResult
from schedlab.training.fleet.shards import train_fleet

STDS = [0.05, 0.10]
PAPER_STEPS, PAPER_SNAPSHOTS = 10_000, 16


def fleet_seconds(
    members: list[Member], settings: TrainSettings, plan: PosthocPlan | None
) -> tuple[float, list[TrainResult]]:
    """The best of two trainings (the machine's noise is one-sided), and the results."""
    times = []
    for _ in range(2):
        start = time.perf_counter()
        results = train_fleet(members, settings, posthoc=plan)
        times.append(time.perf_counter() - start)
    return min(times), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 4, 60 steps, a small model")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    k, steps = (4, 60) if args.quick else (16, 300)
    settings = TrainSettings(steps=steps)
    if args.quick:
        settings = TrainSettings(steps=steps, emb_size=16, hidden_size=32, hidden_layers=2)
    points = data.load("moons", 100_000 if not args.quick else 5_000)
    spec = schedules.resolve("cosine", {}, steps)
    members = [Member(points, spec, seed, settings.lr) for seed in range(k)]
    train_fleet(members, settings)  # warm-up: first allocations, lazy imports
    plain, _ = fleet_seconds(members, settings, None)
    tracked, _ = fleet_seconds(members, settings, PosthocPlan.of(STDS, 1, steps))
    many, results = fleet_seconds(members, settings, PosthocPlan.of(STDS, PAPER_SNAPSHOTS, steps))
    snapshots = results[0].snapshots
    per_step = max(tracked - plain, 0.0) / steps  # the fleet's, all K runs
    per_snapshot = max(many - tracked, 0.0) / (PAPER_SNAPSHOTS - 1)
    projected = (per_step * PAPER_STEPS + per_snapshot * PAPER_SNAPSHOTS) / (
        plain / steps * PAPER_STEPS
    )
    start = time.perf_counter()
    for std in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3):
        averaged_weights(snapshots, std)
    forming = (time.perf_counter() - start) / 6
    stored = sum(len(encode_array(s.weights, level=1)) for s in snapshots)
    numbers = {
        "K": k,
        "steps": steps,
        "plain_steps_per_s": steps / plain,
        "tracked_steps_per_s": steps / tracked,
        "snapshots_steps_per_s": steps / many,
        "tracking_cost_ratio": tracked / plain,
        "seconds_per_snapshot": per_snapshot,
        "projected_overhead_10k_steps": projected,
        "snapshot_bytes_per_run": stored,
        "snapshots_per_run": len(snapshots),
        "seconds_to_form_one_ema": forming,
    }
    print(
        f"fleet K={k}, {steps} steps: {numbers['plain_steps_per_s']:.1f} steps/s without "
        f"tracking, {numbers['tracked_steps_per_s']:.1f} tracking 2 EMAs "
        f"(x{tracked / plain:.3f} the time), {numbers['snapshots_steps_per_s']:.1f} with "
        f"{PAPER_SNAPSHOTS} snapshots each ({per_snapshot:.3f} s per snapshot of the fleet); "
        f"projected for {PAPER_STEPS:,} steps with {PAPER_SNAPSHOTS} snapshots: "
        f"+{100 * projected:.1f}% training time. Store: {stored / 1e6:.1f} MB per run "
        f"({len(snapshots)} snapshots). Forming one EMA from them: {forming:.3f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(numbers))


if __name__ == "__main__":
    main()

"""Scale-out on Ray: one study on a local cluster of 1 node and of 2 nodes, wall time ratio.

    python benchmarks/scaleout.py [--quick] [--json FILE]

Starts a local ``ray.cluster_utils.Cluster`` on 127.0.0.1 (1 CPU per node), runs the same
study with the Ray executor on 1 node, then on 2, each into a fresh store, and reports:
- Ray's start-up: seconds to bring each cluster up and connect;
- each study's wall time (driver: plan, claim, ship, train and measure on the nodes, commit),
  and the summed seconds of the fleet tasks on the nodes;
- the speed-up of 2 nodes over 1 (the scale-out claim), and where the rest of the wall time
  went (wall time minus the longest node's task seconds: shipping, waiting, committing).
The study: moons and line x cosine and step x 2 seeds (8 runs), 2,000 steps, the reference
model, 2,000 samples; ``--quick`` shrinks it to a smoke test.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # stay on 127.0.0.1

import ray
from ray.cluster_utils import Cluster

from schedlab.config.study import parse_study
from schedlab.execute.ray_executor import run_study_on_ray
from schedlab.store.store import Store

STUDY = """name = "scaleout"
datasets = ["moons", "line"]
seeds = 2
[train]
steps = {steps}
{model}
[eval]
samples = {samples}
[[schedules]]
name = "cosine"
[[schedules]]
name = "step"
params = {{ step_size = 1000, gamma = 0.5 }}
"""
QUICK_MODEL = "emb_size = 8\nhidden_size = 16\nhidden_layers = 1"


def on_cluster(nodes: int, study_text: str, workdir: Path) -> dict[str, float]:
    start = time.perf_counter()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    startup = time.perf_counter() - start
    try:
        study = parse_study(study_text, "scaleout.toml")
        with Store(workdir / f"nodes{nodes}.sqlite") as db:
            begin = time.perf_counter()
            outcome = run_study_on_ray(study, db)
            wall = time.perf_counter() - begin
    finally:
        ray.shutdown()
        cluster.shutdown()
    task_seconds = [float(n.split("(")[1].split(" s")[0]) for n in outcome.notes if "(" in n]
    return {
        "nodes": nodes,
        "startup_s": startup,
        "wall_s": wall,
        "runs_done": outcome.outcomes.get("done", 0),
        "task_s_per_node": task_seconds,
        "overhead_s": wall - max(task_seconds, default=0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: a tiny model")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    text = STUDY.format(
        steps=200 if args.quick else 2000,
        model=QUICK_MODEL if args.quick else "",
        samples=200 if args.quick else 2000,
    )
    with tempfile.TemporaryDirectory() as tmp:
        one = on_cluster(1, text, Path(tmp))
        two = on_cluster(2, text, Path(tmp))
    numbers = {"one_node": one, "two_nodes": two, "speedup": one["wall_s"] / two["wall_s"]}
    for row in (one, two):
        print(
            f"{row['nodes']} node(s): start-up {row['startup_s']:.1f} s, "
            f"study {row['wall_s']:.1f} s ({row['runs_done']} runs), "
            f"fleet tasks {row['task_s_per_node']} s per node, "
            f"rest {row['overhead_s']:.1f} s"
        )
    print(f"2 nodes over 1: {numbers['speedup']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()

"""Threads: one `schedlab train` run with the default threads vs `--threads 1`, on an idle
machine and beside a competing process (one busy core), as ratios measured in one run.

    python benchmarks/threads.py [--quick] [--json FILE]

The run is the reference model (or a small one with --quick) trained for a few hundred steps
and measured (sampling, KL): what a researcher's `train` does. Each configuration is timed
twice (once with --quick); the faster time counts. The competing process is a pure-Python
busy loop, as another user's job would be on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from schedlab.threads import default_threads

SCHEDLAB = [sys.executable, "-m", "schedlab"]


def train_seconds(threads: int | None, quick: bool) -> float:
    steps = "60" if quick else "400"
    sizes = ["--set", "n=2000", "--set", "samples=1000", "--set", "heldout=1000"]
    if quick:
        sizes += ["--set", "hidden_size=32", "--set", "hidden_layers=1"]
    args = [*SCHEDLAB, "train", "--steps", steps, "--json", *sizes]
    if threads is not None:
        args += ["--threads", str(threads)]
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - start


@contextmanager
def busy_core() -> Iterator[None]:
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        spin.kill()
        spin.wait()


def measure(quick: bool) -> dict[str, float]:
    best = {}
    repeats = 1 if quick else 2
    for load in ("idle", "competing"):
        for threads, name in ((None, "default"), (1, "one")):
            if load == "competing":
                with busy_core():
                    times = [train_seconds(threads, quick) for _ in range(repeats)]
            else:
                times = [train_seconds(threads, quick) for _ in range(repeats)]
            best[f"{load}_{name}_s"] = min(times)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model, 60 steps")
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    numbers: dict[str, float | int] = {"default_threads": default_threads(), **measure(args.quick)}
    for load in ("idle", "competing"):
        ratio = numbers[f"{load}_default_s"] / numbers[f"{load}_one_s"]
        numbers[f"{load}_default_over_one"] = ratio
        print(
            f"{load:9s}: default ({numbers['default_threads']} threads) "
            f"{numbers[f'{load}_default_s']:.2f} s, 1 thread {numbers[f'{load}_one_s']:.2f} s: "
            f"default / one = {ratio:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(numbers))


if __name__ == "__main__":
    main()

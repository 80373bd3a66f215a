"""Each benchmark runs (--quick) and writes the numbers its JSON promises."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quick_numbers(tmp_path: Path, name: str, *args: str) -> dict:
    """Run ``benchmarks/<name>.py --quick`` and read back the JSON it wrote."""
    out = tmp_path / f"{name}.json"
    script = str(ROOT / "benchmarks" / f"{name}.py")
    subprocess.run(
        [sys.executable, script, "--quick", *args, "--json", str(out)],
        check=True,
        capture_output=True,
    )
    return json.loads(out.read_text())


@pytest.mark.slow
def test_engine_benchmark_quick_writes_its_json(tmp_path):
    numbers = quick_numbers(tmp_path, "engine", "--sizes", "1,3")
    assert set(numbers["fleet_steps_per_s"]) == {"1", "3"}
    assert numbers["fleet_bf16_mixed_steps_per_s"]["3"] > 0
    assert all(v > 0 for v in numbers["fleet_steps_per_s"].values())
    assert numbers["loop_steps_per_s"] > 0 and numbers["peak_gflops"] > 0
    assert numbers["sampling_k"] == 16
    assert (
        numbers["sampling_loop_samples_per_s"] > 0 and numbers["sampling_fleet_samples_per_s"] > 0
    )
    breakdown = numbers["fleet_step_breakdown_ms"]
    assert breakdown["K"] == 3
    assert 0 < breakdown["gemm_ms"] + breakdown["adamw_ms"] < breakdown["total_ms"]


@pytest.mark.slow
def test_scaleout_benchmark_quick_writes_its_json(tmp_path):
    numbers = quick_numbers(tmp_path, "scaleout")
    for key, nodes in (("one_node", 1), ("two_nodes", 2)):
        row = numbers[key]
        assert row["nodes"] == nodes and row["runs_done"] == 8
        assert len(row["task_s_per_node"]) == nodes  # every node trained a fleet
        assert row["startup_s"] > 0 and row["wall_s"] > max(row["task_s_per_node"])
    assert numbers["speedup"] == pytest.approx(
        numbers["one_node"]["wall_s"] / numbers["two_nodes"]["wall_s"]
    )


@pytest.mark.slow
def test_threads_benchmark_quick_writes_its_json(tmp_path):
    numbers = quick_numbers(tmp_path, "threads")
    assert numbers["default_threads"] >= 1
    for load in ("idle", "competing"):
        assert numbers[f"{load}_default_s"] > 0 and numbers[f"{load}_one_s"] > 0
        assert numbers[f"{load}_default_over_one"] == pytest.approx(
            numbers[f"{load}_default_s"] / numbers[f"{load}_one_s"]
        )


@pytest.mark.slow
def test_checkpoints_benchmark_quick_writes_its_json(tmp_path):
    numbers = quick_numbers(tmp_path, "checkpoints")
    assert numbers["K"] == 4 and numbers["steps"] == 60
    assert numbers["plain_steps_per_s"] > 0 and numbers["every_steps_per_s"] > 0
    # One run's checkpoint: weights, two AdamW moments and the EMA, float32, and its curves.
    weights = 4 * 4 * 296_450
    assert weights < numbers["checkpoint_bytes_per_run"] < weights * 1.05


@pytest.mark.slow
def test_posthoc_benchmark_quick_writes_its_json(tmp_path):
    numbers = quick_numbers(tmp_path, "posthoc")
    assert numbers["K"] == 4 and numbers["steps"] == 60
    assert numbers["snapshots_per_run"] == 2 * 16
    assert min(numbers["plain_steps_per_s"], numbers["tracked_steps_per_s"]) > 0
    # 32 float32 snapshots of the small model (16-wide embeddings, 2 blocks of 32), barely
    # compressed.
    weights = 32 * 4 * 3_746
    assert weights * 0.85 < numbers["snapshot_bytes_per_run"] < weights * 1.05

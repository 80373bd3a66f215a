import json

import numpy as np
import pytest
from typer.testing import CliRunner

from schedlab.cli import app

runner = CliRunner()
SMALL = ["--set", "n=2000", "--set", "samples=300", "--set", "heldout=500"]
KEYS = {
    "training_time",
    "eval_loss",
    "eval_loss_heldout",
    "eval_loss_heldout_ema",
    "inference_time",
    "kl_divergence",
    "kl_floor",
    "settings",
}


def test_train_json_has_every_key(tmp_path):
    result = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            "moons",
            "--schedule",
            "cosine",
            "--steps",
            "50",
            "--seed",
            "0",
            "--json",
            "--out",
            str(tmp_path),
            *SMALL,
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload) >= KEYS
    for key in KEYS - {"settings"}:
        assert isinstance(payload[key], float), key
    assert payload["settings"]["train"]["steps"] == 50
    assert payload["settings"]["data"]["n"] == 2000
    curves = np.load(tmp_path / "curves.npz")
    assert curves["loss"].shape == (50,) and curves["lr"].shape == (50,)
    assert curves["lr"][0] == pytest.approx(3e-4)
    assert np.load(tmp_path / "samples.npz")["samples"].shape == (300, 2)
    assert json.loads((tmp_path / "metrics.json").read_text())["eval_loss"] == payload["eval_loss"]


def test_train_table_output():
    result = runner.invoke(
        app, ["train", "--steps", "20", "--schedule", "step", "--param", "step_size=5", *SMALL]
    )
    assert result.exit_code == 0, result.output
    assert "kl_divergence" in result.stdout and "moons / step / seed 0: done" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "spiral"], "error: unknown dataset 'spiral'; valid datasets: circle, dino"),
        (["--schedule", "warp"], "error: unknown schedule 'warp'; valid schedules: constant"),
        (["--steps", "0"], "error: --steps must be a positive int, got 0"),
        (["--steps", "-5"], "error: --steps must be a positive int, got -5"),
        (["--param", "gamma"], "error: malformed parameter 'gamma'; expected key=value"),
        (["--param", "=3"], "error: malformed parameter '=3'"),
        (
            ["--schedule", "step", "--param", "gamma=-1"],
            "error: schedule 'step': gamma must be a float in (0, 1], got -1",
        ),
        (
            ["--schedule", "step", "--param", "stepsize=3"],
            "error: schedule 'step': unknown parameter 'stepsize'; valid parameters: gamma, step_",
        ),
        (["--set", "lr=-0.1"], "error: train.lr: Input should be greater than 0 (got -0.1)"),
        (["--set", "color=red"], "error: unknown setting 'color'; valid settings: batch_size"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(message)

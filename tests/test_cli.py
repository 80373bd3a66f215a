import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from schedlab.cli import app
from schedlab.schedules import registry as schedules

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
    "sliced_wasserstein",
    "sliced_wasserstein_floor",
    "mmd",
    "mmd_floor",
    "steps_to_target",
    "seconds_to_target",
    "target_loss",
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
    # 50 steps with a point every 250: the curve is its final point, which reaches the default
    # target (its own final held-out EMA loss x 1.01) at step 50.
    assert curves["heldout"].shape == (1, 2) and curves["heldout"][0, 0] == 50
    assert curves["heldout"][0, 1] == pytest.approx(payload["eval_loss_heldout_ema"], rel=1e-5)
    assert payload["steps_to_target"] == 50
    assert payload["target_loss"] == pytest.approx(1.01 * payload["eval_loss_heldout_ema"])
    assert np.load(tmp_path / "samples.npz")["samples"].shape == (300, 2)
    assert json.loads((tmp_path / "metrics.json").read_text())["eval_loss"] == payload["eval_loss"]


def test_train_engines_agree_in_float64(tmp_path):
    payloads, losses = [], []
    for engine in ("fleet", "loop"):
        out = tmp_path / engine
        args = ["train", "--steps", "40", "--engine", engine, "--json", "--out", str(out)]
        result = runner.invoke(app, [*args, *SMALL, "--set", "dtype=float64"])
        assert result.exit_code == 0, result.output
        payloads.append(json.loads(result.stdout))
        losses.append(np.load(out / "curves.npz")["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=0, atol=1e-9)
    assert payloads[0]["eval_loss"] == pytest.approx(payloads[1]["eval_loss"], abs=1e-9)


def test_train_table_output():
    result = runner.invoke(
        app, ["train", "--steps", "20", "--schedule", "step", "--param", "step_size=5", *SMALL]
    )
    assert result.exit_code == 0, result.output
    assert "kl_divergence" in result.stdout and "moons / step / seed 0: done" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dataset", "spiral"],
            "error: unknown dataset 'spiral'; valid datasets: circle, digits, dino",
        ),
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
        (["--engine", "warp"], "error: unknown engine 'warp'; valid engines: fleet, loop"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(message)


@pytest.mark.parametrize("name", [*sorted(schedules.SCHEDULES), "baseline"])
def test_every_schedule_trains_through_the_cli(name):
    result = runner.invoke(
        app,
        [
            "train",
            "--schedule",
            name,
            "--steps",
            "6",
            "--json",
            *SMALL,
            "--set",
            "hidden_size=32",
            "--set",
            "emb_size=16",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "done"
    assert payload["schedule"] == schedules.lookup(name).name


def test_schedules_lists_every_name_and_parameter():
    result = runner.invoke(app, ["schedules"], terminal_width=200)
    assert result.exit_code == 0
    for name, definition in schedules.SCHEDULES.items():
        assert name in result.stdout
        for key in definition.params:
            assert key in result.stdout


def test_schedules_plot_writes_an_image(tmp_path):
    import matplotlib.image

    out = tmp_path / "lr.png"
    result = runner.invoke(
        app,
        [
            "schedules",
            "plot",
            "cosine",
            "step:step_size=100,gamma=0.1",
            "multistep:milestones=[300,600],gamma=0.5",
            "--steps",
            "1000",
            "--out",
            str(out),
            "--log",
        ],
    )
    assert result.exit_code == 0, result.output
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 100 and image.shape[1] > 100


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["warp"], "error: unknown schedule 'warp'"),
        (["step:gamma=2"], "error: schedule 'step': gamma must be a float in (0, 1], got 2"),
        (["step:gamma"], "error: malformed parameter 'gamma'"),
        (["cosine", "--steps", "0"], "error: --steps must be a positive int, got 0"),
        (["cosine", "--lr", "-1"], "error: lr must be a finite float > 0, got -1.0"),
    ],
)
def test_schedules_plot_bad_input(args, message, tmp_path):
    result = runner.invoke(app, ["schedules", "plot", *args, "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert not (tmp_path / "x.png").exists()


def test_run_off_a_terminal_writes_one_line_per_fleet_and_per_run(tmp_path):
    study = Path(__file__).parent / "fixtures" / "tiny_study.toml"
    result = runner.invoke(app, ["run", str(study), "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # messages go to stderr; `run` has no data to print
    trained = int(re.search(r"this run: (\d+) done", result.stderr).group(1))
    lines = result.stderr.splitlines()
    started = [line for line in lines if "runs: started (" in line]
    finished = [line for line in lines if line.endswith(": done")]
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d fleet of \d+ runs: started \(0 of \d+ runs done\)", started[0]
    )
    assert len(finished) == trained > 0  # one line per run, as it finishes
    pattern = r"\d\d:\d\d:\d\d moons/[\w ()-]+/seed \d+ \(lr [\d.e-]+\): done"
    assert all(re.fullmatch(pattern, line) for line in finished), finished


def test_drawing_keeps_the_programs_matplotlib_backend(tmp_path):
    script = f"""
import matplotlib
matplotlib.use("pdf")
import numpy as np
from pathlib import Path
from schedlab.cli import app
from schedlab.report.build import build_report
from schedlab.report.plots import plot_lr_curves
plot_lr_curves({{"a": np.linspace(1.0, 0.0, 50)}}, Path({str(tmp_path / "lr.png")!r}))
print(matplotlib.get_backend())
"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pdf"
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"


def test_schedules_and_datasets_as_json():
    from schedlab import data

    listed = json.loads(runner.invoke(app, ["schedules", "--json"]).stdout)
    assert set(listed["schedules"]) == set(schedules.SCHEDULES)
    assert listed["aliases"] == schedules.ALIASES
    for name, entry in listed["schedules"].items():
        params = schedules.SCHEDULES[name].params
        assert set(entry["params"]) == set(params)
        for key, param in entry["params"].items():
            default = params[key].default
            assert param["default"] == (list(default) if isinstance(default, tuple) else default)
    shown = json.loads(runner.invoke(app, ["datasets", "--json"]).stdout)
    assert list(shown["datasets"]) == data.names()
    assert shown["datasets"]["digits"]["dim"] == 64 and shown["datasets"]["mixture"]["dim"] is None


def test_help_shows_choices_and_flags_take_no_value():
    run_help = runner.invoke(app, ["run", "--help"], terminal_width=200).stdout
    for shown in ("--engine [fleet|loop]", "--device [cpu|cuda]", "--executor [local|ray]"):
        assert shown in run_help
    assert "--threads <int>" in run_help
    export_help = runner.invoke(app, ["export", "--help"], terminal_width=200).stdout
    assert "--format [csv|parquet|tensorboard|mlflow]" in export_help
    plot_help = runner.invoke(app, ["schedules", "plot", "--help"], terminal_width=200).stdout
    assert re.search(r"^  --log\s+log-scale LR axis$", plot_help, re.M), plot_help


def test_shell_completion_completes_commands_and_options():
    import os
    import subprocess
    import sys

    def complete(words: str) -> list[str]:
        env = {
            **os.environ,
            "_SCHEDLAB_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        script = str(Path(sys.executable).with_name("schedlab"))
        done = subprocess.run([script], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("schedlab ru") == ["run"]
    assert complete("schedlab run --exe") == ["--executor"]
    assert "--format" in complete("schedlab export quick --")


def test_threads_option(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        bad = runner.invoke(app, ["train", "--steps", "5", "--threads", "0", *SMALL])
        assert bad.exit_code == 2
        assert bad.stderr.strip() == "error: --threads must be a positive int, got 0"
        one = runner.invoke(app, ["train", "--steps", "5", "--threads", "1", "--json", *SMALL])
        assert one.exit_code == 0, one.output
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_train_names_a_schedule_with_its_parameters():
    result = runner.invoke(
        app,
        ["train", "--steps", "6", "--schedule", "cosine_restarts:T_0=2,T_mult=2", "--json", *SMALL],
    )
    assert result.exit_code == 0, result.output
    params = json.loads(result.stdout)["params"]
    assert (params["t_0"], params["t_mult"]) == (2, 2)


def test_a_log_gets_a_progress_line_with_the_time_left(tmp_path, monkeypatch):
    monkeypatch.setattr("schedlab.cli.progress.PROGRESS_LINE_S", 0.0)
    study = tmp_path / "longer.toml"
    tiny = (Path(__file__).parent / "fixtures" / "tiny_study.toml").read_text()
    study.write_text(tiny.replace("steps = 5", "steps = 150"))
    result = runner.invoke(app, ["run", str(study), "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 0, result.output
    steps = [line for line in result.stderr.splitlines() if ": step " in line]
    pattern = (
        r"\d\d:\d\d:\d\d fleet of 4 runs: step (100|150) of 150, loss [\d.]+, "
        r"max lr [\d.e+-]+, \d+ s left in training"
    )
    assert steps and all(re.fullmatch(pattern, line) for line in steps), steps

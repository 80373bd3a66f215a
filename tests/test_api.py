"""The Python API: the same runs and rows as the command line, curves as stored, schedules as
torch steps them."""

import csv
import io
import math
import sqlite3

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import schedlab
from schedlab.cli import app
from schedlab.schedules.curves import lr_curve
from schedlab.store.arrays import decode_array

runner = CliRunner()


def test_the_api_is_importable_from_schedlab_lazily():
    import subprocess
    import sys

    code = (
        "import sys, schedlab; assert 'torch' not in sys.modules and 'pandas' not in sys.modules;"
        "print(schedlab.load_results.__module__)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "schedlab.api", result.stderr
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        schedlab.nope  # noqa: B018


def test_load_results_equals_the_cli_export(tiny_trained):
    study, store = tiny_trained
    frame = schedlab.load_results(store, study)
    exported = runner.invoke(app, ["export", str(study), "--store", str(store), "--out", "-"])
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert list(frame.columns) == list(rows[0])
    assert len(frame) == len(rows) == 4
    for (_, got), want in zip(frame.iterrows(), rows, strict=True):
        assert got["run_id"] == want["run_id"] and got["status"] == want["status"] == "done"
        assert got["kl_divergence"] == pytest.approx(float(want["kl_divergence"]), rel=1e-12)
        assert got["seed"] == int(want["seed"])


def test_load_results_from_the_store_alone_reads_its_plan(tiny_trained, tmp_path):
    study, store = tiny_trained
    pd.testing.assert_frame_equal(schedlab.load_results(store), schedlab.load_results(store, study))
    with pytest.raises(ValueError, match="give the study, the store, or both"):
        schedlab.load_results()
    with pytest.raises(ValueError, match="no store at"):
        schedlab.load_results(tmp_path / "none.sqlite")


def test_load_curves_are_the_stored_curves_in_long_format(tiny_trained):
    study, store = tiny_trained
    curves = schedlab.load_curves(store, study)
    assert list(curves.columns) == [
        "run_id", "phase", "trial", "dataset", "schedule", "seed", "status",
        "step", "loss", "lr", "heldout",
    ]  # fmt: skip
    assert len(curves) == 4 * 5 and curves["run_id"].nunique() == 4
    with sqlite3.connect(store) as conn:
        for run_id, loss, lr, heldout in conn.execute(
            "SELECT run_id, loss, lr, heldout FROM curves"
        ):
            run = curves[curves["run_id"] == run_id].sort_values("step")
            assert run["step"].tolist() == [1, 2, 3, 4, 5]
            np.testing.assert_array_equal(run["loss"], decode_array(loss).astype(np.float64))
            np.testing.assert_array_equal(run["lr"], decode_array(lr).astype(np.float64))
            measured = decode_array(heldout)  # [m, 2]: step, loss
            at = run.set_index("step")["heldout"]
            for step, value in measured:
                assert at[int(step)] == value
            assert at.isna().sum() == 5 - len(measured)


def test_get_scheduler_steps_as_schedlab_trains(tmp_path):
    param = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([param], lr=0.1)
    driver = schedlab.get_scheduler("step:gamma=0.5", optimizer, 20, step_size=4, warmup_steps=2)
    seen = []
    for _ in range(20):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        driver.step(1.0)
    want = lr_curve("step", 20, 0.1, step_size=4, gamma=0.5, warmup_steps=2)
    np.testing.assert_allclose(seen, want, rtol=1e-15)
    assert seen[-1] == pytest.approx(0.1 * 0.5 ** math.floor((20 - 1 - 2) / 4))
    with pytest.raises(ValueError, match="unknown parameter 'gama'"):
        schedlab.get_scheduler("step", optimizer, 20, gama=0.5)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        schedlab.get_scheduler("cosine", optimizer, 0)


def test_run_study_takes_a_parsed_document_and_names_bad_input(tmp_path):
    doc = {"name": "doc", "datasets": ["moons"], "schedules": [{"name": "nosuch"}]}
    with pytest.raises(ValueError, match="unknown schedule 'nosuch'"):
        schedlab.run_study(doc, store=tmp_path / "doc.sqlite")
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        schedlab.run_study(doc, store=tmp_path / "doc.sqlite", executor="dask")
    assert not (tmp_path / "doc.sqlite").exists()


def test_a_store_of_two_studies_asks_which(tiny_trained, tmp_path):
    import shutil

    _, store = tiny_trained
    both = tmp_path / "both.sqlite"
    shutil.copy(store, both)
    doc = {"name": "other", "datasets": ["moons"], "seeds": 1, "data": {"n": 300},
           "train": {"steps": 3, "emb_size": 8, "hidden_size": 16, "hidden_layers": 1},
           "eval": {"samples": 20, "heldout": 50}, "schedules": [{"name": "constant"}]}  # fmt: skip
    schedlab.run_study(doc, store=both)
    with pytest.raises(ValueError, match=r"holds 2 studies \(other, tiny\); give study="):
        schedlab.load_results(both)
    assert len(schedlab.load_results(both, doc)) == 1


def two_groups(first: float = 1e-3, second: float = 1e-5) -> torch.optim.Optimizer:
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    return torch.optim.AdamW([{"params": [a], "lr": first}, {"params": [b], "lr": second}])


@pytest.mark.parametrize(
    ("name", "params", "torch_scheduler"),
    [
        ("cosine", {}, lambda o, n: torch.optim.lr_scheduler.CosineAnnealingLR(o, n)),
        (
            "onecycle",
            {},
            lambda o, n: torch.optim.lr_scheduler.OneCycleLR(
                o, max_lr=[1e-3, 1e-5], total_steps=n, cycle_momentum=False
            ),
        ),
        (
            "cyclic",
            {"step_size_up": 10, "min_factor": 0.1},
            lambda o, n: torch.optim.lr_scheduler.CyclicLR(
                o, base_lr=[1e-4, 1e-6], max_lr=[1e-3, 1e-5], step_size_up=10, cycle_momentum=False
            ),
        ),
        (
            "step",
            {"step_size": 7, "gamma": 0.5},
            lambda o, n: torch.optim.lr_scheduler.StepLR(o, 7, 0.5),
        ),
    ],
)
def test_get_scheduler_is_a_drop_in_for_torchs_own(name, params, torch_scheduler):
    """Every group at its own LR (before, onecycle and cyclic gave every group the first
    group's), step() without a loss, get_last_lr, and a bitwise state_dict round trip."""
    steps = 60
    ours_opt, theirs_opt = two_groups(), two_groups()
    ours = schedlab.get_scheduler(name, ours_opt, num_training_steps=steps, **params)
    theirs = torch_scheduler(theirs_opt, steps)
    assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)
    saved = None
    for step in range(steps - 1):
        ours_opt.step(), theirs_opt.step()
        ours.step()
        theirs.step()
        assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12), step
        if step == 20:
            saved = ours.state_dict()
    assert saved is not None
    resumed_opt = two_groups()
    resumed = schedlab.get_scheduler(name, resumed_opt, num_training_steps=steps, **params)
    resumed.load_state_dict(saved)
    again = two_groups()
    straight = schedlab.get_scheduler(name, again, num_training_steps=steps, **params)
    for _ in range(21):
        again.step()
        straight.step()
    assert resumed.get_last_lr() == straight.get_last_lr()
    for _ in range(steps - 22):
        resumed_opt.step(), again.step()
        resumed.step()
        straight.step()
        assert resumed.get_last_lr() == straight.get_last_lr()  # bitwise


def test_get_scheduler_refuses_what_would_silently_differ():
    optimizer = two_groups()
    with pytest.raises(ValueError, match="AdamWScheduleFree optimizer at a constant LR"):
        schedlab.get_scheduler("schedule_free", optimizer, num_training_steps=10)
    plateau = schedlab.get_scheduler("plateau", optimizer, num_training_steps=10)
    with pytest.raises(ValueError, match=r"watches the training loss: call step\(loss\)"):
        plateau.step()
    plateau.step(1.0)
    warm = schedlab.get_scheduler("cosine", two_groups(), 100, num_warmup_steps=10)
    assert warm.get_last_lr() == pytest.approx([1e-5, 1e-7])  # the ramp's 0.01 start

"""User-defined schedules (module:function): found beside the study, checked before anything
trains, hashed into their runs' identity, and failing only their own runs."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from schedlab import plan
from schedlab.config.study import parse_study
from schedlab.schedules import registry

STUDY = """
name = "mine"
datasets = ["moons"]
seeds = 2
[data]
n = 400
[train]
steps = 8
emb_size = 8
hidden_size = 16
hidden_layers = 1
[eval]
samples = 50
heldout = 100
[[schedules]]
name = "cosine"
[[schedules]]
name = "{user}"
params = {params}
"""

# The fixture's schedules (``late`` raises at its fourth step), and one that works.
FIXTURE = Path(__file__).parent / "fixtures" / "user_schedules" / "broken_schedule.py"
SCHEDULES = FIXTURE.read_text()
SCHEDULES += '''

def halve(optimizer, steps, at=0.5):
    """Halve the LR at a fraction of the run."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 if s < at * steps else 0.5)
'''

SCHEDLAB = str(Path(sys.executable).with_name("schedlab"))  # the console script


def write(folder: Path, module: str, user: str, params: str = "{}") -> Path:
    (folder / f"{module}.py").write_text(SCHEDULES)
    study = folder / "mine.toml"
    study.write_text(STUDY.format(user=f"{module}:{user}", params=params))
    return study


def schedlab(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCHEDLAB, *args], cwd=folder, capture_output=True, text=True, timeout=300
    )


def test_the_console_script_finds_a_schedule_beside_the_study(tmp_path):
    write(tmp_path, "beside_a", "halve")
    small = ["--set", "n=400", "--set", "samples=50", "--set", "heldout=50"]
    result = schedlab(
        tmp_path, "train", "--steps", "6", "--schedule", "beside_a:halve:at=0.3", *small
    )
    assert result.returncode == 0, result.stderr
    assert "beside_a:halve / seed 0: done" in result.stdout


def test_a_bad_keyword_is_one_line_before_anything_trains(tmp_path):
    write(tmp_path, "beside_b", "halve", "{ att = 0.3 }")
    result = schedlab(tmp_path, "run", "mine.toml")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: schedule 'beside_b:halve' (att=0.3) failed: TypeError: "
        "halve() got an unexpected keyword argument 'att'"
    ]
    status = schedlab(tmp_path, "status", "mine.toml")  # nothing trained, nothing claimed
    assert "done" not in status.stdout and "running" not in status.stdout


def test_a_schedule_that_raises_mid_run_fails_its_own_runs_only(tmp_path):
    write(tmp_path, "beside_c", "late")
    result = schedlab(tmp_path, "run", "mine.toml")
    assert result.returncode == 1
    assert "4 runs planned, 0 already finished; this run: 2 done, 2 failed" in result.stderr
    status = schedlab(tmp_path, "status", "mine.toml")
    failures = [line for line in status.stdout.splitlines() if line.startswith("failed:")]
    assert len(failures) == 2
    assert all("RuntimeError: this schedule breaks at step 4" in line for line in failures)


def test_editing_a_user_schedule_makes_its_runs_new(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    study_file = write(tmp_path, "beside_d", "halve")

    def user_ids() -> set[str]:
        study = parse_study(study_file.read_text(), "mine.toml")
        return {r.run_id for r in plan.expand(study) if r.schedule.name == "beside_d:halve"}

    before = user_ids()
    (tmp_path / "beside_d.py").write_text(SCHEDULES.replace("0.5)", "0.25)"))
    registry.user_defined.cache_clear()
    sys.modules.pop("beside_d", None)
    importlib.invalidate_caches()
    after = user_ids()
    assert len(before) == len(after) == 2 and not before & after
    cosine = parse_study(study_file.read_text(), "mine.toml")
    own = [r for r in plan.expand(cosine) if r.schedule.name == "cosine"]
    assert "schedule_source" not in own[0].identity()  # schedlab's own keep their ids
    registry.user_defined.cache_clear()
    sys.modules.pop("beside_d", None)


@pytest.mark.parametrize(
    ("text", "name", "params"),
    [
        ("step:step_size=50,gamma=0.5", "step", {"step_size": 50, "gamma": 0.5}),
        ("multistep:milestones=[2,4]", "multistep", {"milestones": (2, 4)}),
        ("cosine_restarts:T_0=5,T_mult=2", "cosine_restarts", {"t_0": 5, "t_mult": 2}),
        ("cosine", "cosine", {}),
    ],
)
def test_a_schedule_named_with_its_parameters(text, name, params):
    spec = registry.resolve(text, None, 100)
    assert spec.name == name
    assert {k: spec.params[k] for k in params} == params


def test_torch_names_and_inline_parameters_are_checked():
    with pytest.raises(ValueError, match="give t_0 or T_0, not both"):
        registry.resolve("cosine_restarts", {"T_0": 5, "t_0": 5})
    with pytest.raises(ValueError, match="step_size given twice"):
        registry.resolve("step:step_size=5", {"step_size": 4})
    with pytest.raises(ValueError, match="malformed schedule 'cosine=3'"):
        registry.resolve("cosine=3")


def test_a_study_file_names_a_schedule_with_its_parameters():
    text = STUDY.format(user="step:step_size=4", params="{ gamma = 0.25 }")
    study = parse_study(text, "inline.toml")
    entry = study.schedules[1]
    assert (entry.name, entry.params, entry.display) == (
        "step",
        {"gamma": 0.25, "step_size": 4},
        "step:step_size=4",
    )
    twice = STUDY.format(user="step:gamma=0.5", params="{ gamma = 0.25 }")
    with pytest.raises(ValueError, match="gamma is given twice: in name and in params"):
        parse_study(twice, "twice.toml")

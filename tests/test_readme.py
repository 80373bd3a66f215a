"""The README's study example runs as written, and every command it shows exists."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schedlab.cli import app

README = (Path(__file__).parents[1] / "README.md").read_text()


@pytest.mark.slow
def test_the_tiny_study_of_the_readme_runs_small_and_reaches_its_target(tmp_path):
    """Before: its store was 339 MB for 8 runs of 60 steps, curve_every was above steps and
    the moons target was out of reach."""
    (block,) = re.findall(r'```toml\n(name = "tiny".*?)```', README, re.S)
    study = tmp_path / "tiny.toml"
    study.write_text(block)
    store = tmp_path / "tiny.sqlite"
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(study), "--store", str(store)])
    assert result.exit_code == 0 and "8 done" in result.output, result.output
    assert store.stat().st_size < 20 * 2**20
    exported = runner.invoke(app, ["export", str(study), "--store", str(store), "--out", "-"])
    rows = [line.split(",") for line in exported.stdout.splitlines()]
    column = rows[0].index("steps_to_target")
    moons = [row[column] for row in rows[1:] if row[0] == "moons"]
    assert len(moons) == 4 and all(value not in ("", "nan") for value in moons)


def test_every_command_the_readme_shows_exists():
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", README, re.S))
    shown = set(re.findall(r"^(?:\.venv/bin/)?schedlab ([a-z]+)", blocks, re.M))
    assert {"run", "report", "export", "status", "measure", "train", "models"} <= shown
    for command in sorted(shown):
        done = subprocess.run(
            [sys.executable, "-m", "schedlab", command, "--help"], capture_output=True, text=True
        )
        assert done.returncode == 0, (command, done.stderr)

"""The built wheel, installed (not editable), runs a study and finds its presets."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny_study.toml"


@pytest.mark.slow
def test_the_installed_wheel_runs_a_study_and_reads_its_presets(tmp_path):
    built = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(built),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = built.glob("schedlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    presets = [f"presets/{name}.toml" for name in ("paper", "quick", "tuned-quick", "tuned")]
    for resource in (*presets, "dino.csv", "paper_tables.csv"):
        assert f"schedlab/resources/{resource}" in names
    assert any(n.endswith("licenses/LICENSE") for n in names)
    target = tmp_path / "installed"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    # The wheel's schedlab first; the dependencies from this environment, whose editable
    # schedlab is not importable without its .pth hook.
    env = {"PYTHONPATH": f"{target}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    where = subprocess.run(
        [sys.executable, "-c", "import schedlab; print(schedlab.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(target))
    (tmp_path / "tiny.toml").write_text(TINY.read_text())
    for args in (["run", "tiny.toml"], ["report", "tiny.toml"], ["status", "quick"]):
        result = subprocess.run(
            [sys.executable, "-m", "schedlab", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        if args[-1] == "quick":  # the preset is found; its store is not there
            assert result.returncode == 2 and "error: no store at" in result.stderr, result
        else:
            assert result.returncode == 0, result.stderr
    assert (tmp_path / "reports" / "tiny" / "index.html").exists()
